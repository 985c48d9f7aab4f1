/**
 * Approvers' notices survive a restart (docs/approvals.md "Notices"): `mailgator serve` as a child process in vault
 * mode, an agent sending through it with nodemailer, Postfix delivering the notices into its sink. While the
 * upstream cannot be reached (a closed port) the notices of held messages are owed; serve is stopped with SIGTERM
 * and with SIGKILL; once the upstream is back, the next start sends each owed notice, and each arrives exactly once.
 * A message already notified is not notified again, and one that expired meanwhile is not notified at all.
 */

import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import nodemailer from "nodemailer";
import { freePort } from "../../scripts/upstreams/ports.ts";
import { ApprovalStore } from "../../src/approvals/store.ts";
import { SealedStore } from "../../src/state/store.ts";
import { heldId, uniqueToken, upstreams } from "../fixtures/index.ts";
import { noticesIn, waitFor } from "../smtp/notice-reader.ts";
import { accountToml, agentToml, serveConfig, smtpTo } from "./config.ts";
import { type Served, serveChild, stopServed } from "./serve-child.ts";

setDefaultTimeout(120_000);

const dirs: string[] = [];
const children: Served[] = [];
afterAll(async () => {
  for (const c of children) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill("SIGKILL");
  await Promise.all(children.map((c) => c.proc.exited));
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A config directory, serve runs on it, an agent that sends held messages, and readers of what arrived. */
async function setup(approvers: readonly string[]) {
  const up = upstreams();
  const [alice, bob] = [up.users[0]!, up.users[1]!];
  const m = uniqueToken("resend");
  const agentToken = `mg_${uniqueToken("agent")}`;
  const dir = mkdtempSync(join(tmpdir(), "mg-notice-resend-"));
  dirs.push(dir);
  const file = join(dir, "mailgator.toml");
  // Nothing listens there: every notice attempt fails to connect, and is retried later.
  const closed = `127.0.0.1:${await freePort()}`;
  const postfix = `${up.host}:${up.ports.smtp}`;
  const writeConfig = (upstream: string, timeout: string) =>
    writeFileSync(
      file,
      serveConfig(
        { listeners: smtpTo(upstream), dir, approvals: { timeout, notifyAccount: "notices", managers: approvers } },
        `
${accountToml("notices", bob)}
${accountToml("mail", alice)}
${agentToml("bot", agentToken, "mail")}
[[rules]]
name = "every send needs a manager"
action = "ask"
operations = ["send"]
ask_groups = ["managers"]
`,
      ),
    );
  const start = async (): Promise<{ served: Served; port: number }> => {
    const served = serveChild(file);
    children.push(served);
    return { served, port: await served.port("SMTP") };
  };
  const send = async (port: number, tag: string): Promise<string> => {
    const transport = nodemailer.createTransport({
      host: "127.0.0.1",
      port,
      secure: false,
      ignoreTLS: true,
      auth: { user: "bot", pass: agentToken },
    });
    try {
      const info = await transport.sendMail({
        from: alice.user,
        to: `${tag}-${m}@outside.example`,
        subject: `${tag} ${m}`,
        text: `Hello ${tag} ${m}\n`,
      });
      return heldId(info.response);
    } finally {
      transport.close();
    }
  };
  /** An attempt of the notice for `id` to `to` failed (after log offset `from`). */
  const failedOnce = (served: Served, id: string, to: string, from = 0) =>
    served.waitForLog(new RegExp(`approval ${id}: notice to ${to.replace(/[.]/g, "\\.")} not sent`), from);
  const notices = (id: string) => noticesIn(up.sink, id);
  const rows = () => {
    const state = SealedStore.open(join(dir, "state.db"), {
      secretsFile: join(dir, "secrets.key"),
      env: {},
      create: false,
    })!;
    try {
      return new ApprovalStore(state).list();
    } finally {
      state.close();
    }
  };
  return { m, dir, closed, postfix, writeConfig, start, send, failedOnce, notices, rows };
}

test("owed notices arrive once after a restart (SIGTERM, SIGKILL); none twice, none expired", async () => {
  const boss = `boss-${uniqueToken("resend")}@corp.test`;
  const { m, dir, closed, postfix, writeConfig, start, send, notices, rows, ...t } = await setup([boss]);
  const failedOnce = (served: Served, id: string) => t.failedOnce(served, id, boss);

  // 1. The upstream works: the notice goes out, and the message is marked notified.
  writeConfig(postfix, "1h");
  let run = await start();
  const notified = await send(run.port, "notified");
  await waitFor("notices", () => notices(notified), 1);
  for (let i = 0; i < 100 && !rows().find((r) => r.id === notified)?.notified; i++) await Bun.sleep(50);
  expect(rows().find((r) => r.id === notified)?.notified).toBe(true);
  await stopServed(run.served);

  // 2. The upstream is unreachable; serve stops cleanly (SIGTERM) with the notice still owed.
  writeConfig(closed, "1h");
  run = await start();
  const afterTerm = await send(run.port, "term");
  await failedOnce(run.served, afterTerm);
  await stopServed(run.served);

  // 3. Still unreachable; the owed notice is tried again at start; a new one is held; serve is killed.
  run = await start();
  await failedOnce(run.served, afterTerm);
  const afterKill = await send(run.port, "kill");
  await failedOnce(run.served, afterKill);
  run.served.proc.kill("SIGKILL");
  await run.served.proc.exited;

  // 4. Still unreachable, with a 5 s timeout: this one expires while serve is down (held, its notice tried once and
  // serve killed well within the 5 s, even on a loaded machine).
  writeConfig(closed, "5s");
  run = await start();
  const expired = await send(run.port, "expired");
  await failedOnce(run.served, expired);
  run.served.proc.kill("SIGKILL");
  await run.served.proc.exited;
  await Bun.sleep(5_500);
  expect(rows().filter((r) => !r.notified && r.state === "held")).toHaveLength(3);

  // 5. The upstream is back: the owed notices go out once each; the notified and the expired ones get none.
  writeConfig(postfix, "1h");
  run = await start();
  await run.served.waitForLog(/sending the notices still owed for 2 held message/);
  await waitFor("notices", () => notices(afterTerm), 1);
  await waitFor("notices", () => notices(afterKill), 1);
  for (let i = 0; i < 100 && rows().some((r) => r.state === "held" && !r.notified); i++) await Bun.sleep(50);
  expect(rows().find((r) => r.id === expired)?.state).toBe("expired");
  expect(
    rows()
      .filter((r) => r.state === "held")
      .map((r) => [r.id, r.notified]),
  ).toEqual([
    [notified, true],
    [afterTerm, true],
    [afterKill, true],
  ]);
  const [notice] = notices(afterKill);
  expect(notice!.recipient).toBe(boss);
  expect(notice!.body).toContain(`kill-${m}@outside.example`);
  await stopServed(run.served);

  // 6. Another start owes nothing: no notice is sent twice.
  run = await start();
  const late = await send(run.port, "late");
  await waitFor("notices", () => notices(late), 1);
  expect(run.served.logs()).not.toContain("notices still owed");
  await stopServed(run.served);
  for (const id of [notified, afterTerm, afterKill]) expect(notices(id)).toHaveLength(1);
  expect(notices(expired)).toHaveLength(0);

  // What was recorded names no approver in clear: the database and its WAL hold neither the address nor the subject.
  for (const name of readdirSync(dir).filter((f) => f.startsWith("state.db"))) {
    const bytes = readFileSync(join(dir, name), "latin1");
    expect(bytes).not.toContain(boss);
    expect(bytes).not.toContain(`kill ${m}`);
  }
});

test("an approver already told is not told again when another's notice is owed at the restart", async () => {
  const token = uniqueToken("partial");
  const boss = `boss-${token}@corp.test`;
  // Postfix answers 451 at RCPT TO for this one (the test upstreams' tempfail hook): deferred, retried, never sent.
  const deferred = `tempfail-${token}@corp.test`;
  const { postfix, writeConfig, start, send, failedOnce, notices, rows } = await setup([boss, deferred]);
  const toBoss = (id: string) => notices(id).filter((n) => n.recipient === boss);
  writeConfig(postfix, "1h");
  let run = await start();
  const id = await send(run.port, "partial");
  await waitFor("notices", () => toBoss(id), 1);
  await failedOnce(run.served, id, deferred);
  run.served.proc.kill("SIGKILL");
  await run.served.proc.exited;
  expect(rows().find((r) => r.id === id)?.notified).toBe(false);

  // The restart owes the deferred approver a notice, and only that one.
  run = await start();
  await run.served.waitForLog(/sending the notices still owed for 1 held message/);
  await failedOnce(run.served, id, deferred);
  // A second notice to the boss would have been queued beside the deferred one; give Postfix time to deliver it.
  await Bun.sleep(2_000);
  expect(toBoss(id)).toHaveLength(1);
  expect(rows().find((r) => r.id === id)?.notified).toBe(false);
  await stopServed(run.served);
});
