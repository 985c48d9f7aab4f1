/**
 * What an approval's replay records when the upstream's answer is not a plain yes or no (docs/approvals.md "What is
 * guaranteed"), against the real Postfix through a relay that can hold or cut the replay:
 *
 * - the connection lost after the final dot went out, before the reply: only the upstream knows, so the message is
 *   "needs-check" at once (its APPROVAL NEEDS CHECK row on disk), never "failed" (whose notice tells the sender it
 *   was not sent) and never sent again;
 * - a temporary refusal (4xx) or the connection lost before the final dot: nothing was delivered, so the approved
 *   message is held again, its bytes kept, with an APPROVE error row saying so, and can be approved again;
 * - a permanent refusal (5xx) stays "failed";
 * - serve starting while another process (`mailgator approvals approve`) replays leaves that replay to finish and
 *   record its outcome: only a claim whose process is gone becomes "needs-check".
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import { chmodSync, copyFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type ApprovalContext, approve, recover } from "../../src/approvals/service.ts";
import { ownerAlive, thisProcess } from "../../src/approvals/store.ts";
import { SmtpRelay } from "../fixtures/smtp-relay.ts";
import {
  askManagersRules,
  holdMessage,
  marker,
  sinkCopies,
  startTestProxy,
  type TestProxy,
  upstreams,
  waitForSink,
} from "../smtp/helpers.ts";

const RULES = askManagersRules("http://127.0.0.1:1");

let relay: SmtpRelay;
let proxy: TestProxy;
let ctx: ApprovalContext;

beforeAll(async () => {
  const up = upstreams();
  relay = await SmtpRelay.start({ host: up.host, port: up.ports.smtp });
  proxy = await startTestProxy({
    rules: RULES,
    approvals: true,
    upstreamAddr: `127.0.0.1:${relay.port}`,
    upstreamTls: "none",
  });
  ctx = { config: proxy.config, store: proxy.approvals!, audit: proxy.audit, protocol: "cli" };
});

afterAll(async () => {
  await proxy.close();
  relay.close();
});

/** A send the rule holds; returns its id. */
/** Holds a message to `to` marked `m`: its id. */
function hold(to: string, m: string): Promise<string> {
  return holdMessage(proxy.port, to, `replay ${m}`, `Hello ${m}\n`);
}

/** The audit rows of held message `id`, as [command, decision, reason]. */
async function rowsOf(id: string): Promise<[string, string, string][]> {
  await proxy.audit.flush();
  return proxy.audit
    .query({ order: "asc" })
    .filter((r) => r.target === id && r.protocol === "cli")
    .map((r) => [r.command, r.decision, r.reason]);
}

test("the connection lost after the final dot: needs-check at once, never failed, never sent again", async () => {
  const m = marker();
  const id = await hold(`someone-${m}@outside.example`, m);
  // The dot reaches Postfix, which delivers; its answer is kept from Mailgator, then the link drops.
  const held = relay.holdNext("reply");
  const approving = approve(ctx, id, "review");
  await held;
  await waitForSink(`Hello ${m}`, 1);
  relay.dropLinks();
  const result = await approving;
  expect(result.outcome).toBe("needs-check");
  expect(result).toMatchObject({ recorded: true });
  expect((result as { reason: string }).reason).toStartWith("the reply to the end of data never came (upstream ");
  expect(ctx.store.row(id)!.state).toBe("needs-check");
  const rows = await rowsOf(id);
  expect(rows.at(-1)!.slice(0, 2)).toEqual(["APPROVAL NEEDS CHECK", "error"]);
  expect(rows.at(-1)![2]).toEndWith("; not sent again");
  expect(rows.filter(([c]) => c === "APPROVAL SENT")).toEqual([]);
  // Not sent again, by this or any later approval.
  expect(await approve(ctx, id, "review")).toEqual({ outcome: "refused", state: "needs-check" });
  await Bun.sleep(300);
  expect(sinkCopies(`Hello ${m}`)).toHaveLength(1);
});

test("a 4xx at RCPT: nothing delivered, held again with its bytes; a second try is the same", async () => {
  const m = marker();
  const id = await hold(`tempfail-${m}@outside.example`, m);
  const result = await approve(ctx, id, "review");
  const deferred =
    `upstream replied 451 4.3.0 <tempfail-${m}@outside.example>: Recipient address rejected: ` +
    "Recipient deferred by test hook";
  expect(result).toEqual({ outcome: "not-sent", reason: deferred });
  expect(ctx.store.row(id)!.state).toBe("held");
  expect((await ctx.store.readMessage(id))?.message.toString()).toContain(`Hello ${m}`);
  const rows = await rowsOf(id);
  expect(rows.slice(-2)).toEqual([
    ["APPROVE", "allow", "approved by review"],
    ["APPROVE", "error", `approved by review; not sent, held again: ${deferred}`],
  ]);
  // Held again means it can be approved again (still deferred here); nothing ever reached the sink.
  expect((await approve(ctx, id, "review")).outcome).toBe("not-sent");
  expect(ctx.store.row(id)!.state).toBe("held");
  expect(sinkCopies(`Hello ${m}`)).toHaveLength(0);
});

test("the connection lost before the final dot: nothing delivered, held again; approved again, sent", async () => {
  const m = marker();
  const id = await hold(`someone-${m}@outside.example`, m);
  // Postfix's answers from DATA on are kept from Mailgator, which waits for the 354: no octet of the data goes out.
  const held = relay.holdNext("data");
  const approving = approve(ctx, id, "review");
  await held;
  relay.dropLinks();
  const result = await approving;
  expect(result.outcome).toBe("not-sent");
  expect((result as { reason: string }).reason).toStartWith("upstream failed: ");
  expect(ctx.store.row(id)!.state).toBe("held");
  const rows = await rowsOf(id);
  expect(rows.at(-1)!.slice(0, 2)).toEqual(["APPROVE", "error"]);
  expect(rows.at(-1)![2]).toStartWith("approved by review; not sent, held again: upstream failed: ");
  // The relay passes everything again: the same message is sent once.
  const again = await approve(ctx, id, "review");
  expect(again).toMatchObject({ outcome: "sent", recorded: true });
  expect(ctx.store.row(id)!.state).toBe("sent");
  await waitForSink(`Hello ${m}`, 1);
  expect(sinkCopies(`Hello ${m}`)).toHaveLength(1);
});

test("a 5xx at RCPT stays failed: refused for good, the bytes wiped", async () => {
  const m = marker();
  const id = await hold(`reject-${m}@outside.example`, m);
  const result = await approve(ctx, id, "review");
  expect(result).toMatchObject({ outcome: "failed", recorded: true });
  expect((result as { reply: string }).reply).toStartWith("550 ");
  expect(ctx.store.row(id)!.state).toBe("failed");
  expect(await ctx.store.readMessage(id)).toBeNull();
});

test("serve starting while a command replays leaves the replay to it: sent, with truthful rows", async () => {
  const m = marker();
  const id = await hold(`someone-${m}@outside.example`, m);
  // The command replays; its final dot is held a moment by the relay.
  const held = relay.holdNext("dot");
  const approving = approve(ctx, id, "cli:review");
  await held;
  // Meanwhile serve starts on the same state database: its start-up check finds the claim's process running.
  expect(recover({ ...ctx, protocol: "smtp" })).toEqual([]);
  expect(ctx.store.row(id)!.state).toBe("sending");
  relay.release();
  expect(await approving).toMatchObject({ outcome: "sent", recorded: true });
  expect(ctx.store.row(id)!.state).toBe("sent");
  await waitForSink(`Hello ${m}`, 1);
  expect(sinkCopies(`Hello ${m}`)).toHaveLength(1);
  await proxy.audit.flush();
  const commands = proxy.audit
    .query({ order: "asc" })
    .filter((r) => r.target === id)
    .map((r) => r.command);
  expect(commands).not.toContain("APPROVAL NEEDS CHECK");
  expect(commands.slice(-2)).toEqual(["APPROVE", "APPROVAL SENT"]);
});

test("a claim's process: this one and a running one are alive; a gone one, or none recorded, is not", async () => {
  expect(ownerAlive(thisProcess())).toBe(true);
  const child = Bun.spawn(["sleep", "30"]);
  const start = (await Bun.file(`/proc/${child.pid}/stat`).text()).split(") ")[1]!.split(" ")[19]!;
  expect(ownerAlive(`${child.pid}:${start}`)).toBe(true);
  // The same pid with another start time is another process: the claim's is gone.
  expect(ownerAlive(`${child.pid}:${Number(start) + 1}`)).toBe(false);
  child.kill();
  await child.exited;
  expect(ownerAlive(`${child.pid}:${start}`)).toBe(false);
  expect(ownerAlive(null)).toBe(false);
  expect(ownerAlive("4194305:1")).toBe(false); // above Linux's largest pid
});

/** Field 22 of /proc/PID/stat: the process's start time (proc(5)). */
async function startOf(pid: number): Promise<string> {
  const stat = await Bun.file(`/proc/${pid}/stat`).text();
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19]!;
}

test("a claim's process that exited but was not reaped (a zombie) is gone", async () => {
  // sh forks a child that exits at once, then execs sleep, which never reaps it.
  const parent = Bun.spawn(["sh", "-c", 'sh -c "echo \\$\\$" & exec sleep 30'], { stdout: "pipe" });
  const { value } = await parent.stdout.getReader().read();
  const zombie = Number(new TextDecoder().decode(value).trim());
  await Bun.sleep(300);
  const stat = await Bun.file(`/proc/${zombie}/stat`).text();
  expect(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0]).toBe("Z");
  const alive = ownerAlive(`${zombie}:${await startOf(zombie)}`);
  parent.kill();
  await parent.exited;
  expect(alive).toBe(false);
});

test("serve under the systemd unit (ProtectProc=invisible, own user) sees a root command alive", async () => {
  // The command (`mailgator approvals approve`, run as root) while it replays; serve cannot read its /proc entry.
  const command = Bun.spawn(["sleep", "60"]);
  const owner = `${command.pid}:${await startOf(command.pid)}`;
  // What serve runs, built into one file beside a copy of the runtime, in a folder any user can read.
  const dir = mkdtempSync(join(tmpdir(), "mg-owner-view-"));
  chmodSync(dir, 0o755);
  writeFileSync(
    join(dir, "entry.ts"),
    `import { ownerAlive } from ${JSON.stringify(`${import.meta.dir}/../../src/approvals/store.ts`)};\n` +
      `console.log(JSON.stringify(ownerAlive(${JSON.stringify(owner)})));\n`,
  );
  try {
    const built = await Bun.build({ entrypoints: [join(dir, "entry.ts")], target: "bun", outdir: dir });
    expect(built.success).toBe(true);
    copyFileSync(process.execPath, join(dir, "bun"));
    chmodSync(join(dir, "bun"), 0o755);
    chmodSync(join(dir, "entry.js"), 0o644);
    const view = Bun.spawnSync([
      "unshare",
      "-m",
      "sh",
      "-c",
      "mount -t proc -o hidepid=invisible proc /proc && exec setpriv --reuid=65534 --regid=65534 --clear-groups " +
        `env HOME=/tmp ${join(dir, "bun")} ${join(dir, "entry.js")}`,
    ]);
    expect(view.stderr.toString()).toBe("");
    expect(view.stdout.toString().trim()).toBe("true");
  } finally {
    command.kill();
    await command.exited;
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a 4xx whose 'held again' row cannot be written: it stays sending, its bytes kept, never failed", async () => {
  const m = marker();
  const id = await hold(`tempfail-${m}@outside.example`, m);
  let refused = false;
  const audit = new Proxy(proxy.audit, {
    get(target, key) {
      if (key === "durable")
        return (ev: Parameters<typeof target.durable>[0], opts?: Parameters<typeof target.durable>[1]) => {
          if (!refused && ev.command === "APPROVE" && ev.decision === "error") {
            refused = true;
            return Promise.reject(new Error("audit: cannot write (test)"));
          }
          return target.durable(ev, opts);
        };
      const value = Reflect.get(target, key, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  const result = await approve({ ...ctx, audit }, id, "review");
  expect(refused).toBe(true);
  expect(result).toMatchObject({ outcome: "failed", recorded: false });
  expect((result as { reply: string }).reply).toStartWith("451 ");
  expect(ctx.store.row(id)!.state).toBe("sending");
  expect((await ctx.store.readMessage(id))?.message.toString()).toContain(`Hello ${m}`);
  const rows = await rowsOf(id);
  expect(rows.at(-1)).toEqual(["APPROVE", "allow", "approved by review"]);
  expect(sinkCopies(`Hello ${m}`)).toHaveLength(0);
});
