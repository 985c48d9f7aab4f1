/**
 * Notices about held messages end to end against Postfix (docs/approvals.md "Notices"): each approver gets one
 * after the agent's 250, with the preview and a link that opens the page; the subject cannot add header lines;
 * with notify_sender the agent's own address learns the result, without it nothing; a notice that cannot be sent
 * is an audit row and leaves the message held.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createServer, type Socket } from "node:net";
import { userMaildir } from "../../scripts/upstreams/layout.ts";
import { freePort } from "../../scripts/upstreams/ports.ts";
import { Notifier } from "../../src/approvals/notify.ts";
import { type ApprovalContext, approve, deny, expireDue } from "../../src/approvals/service.ts";
import { approvalPage } from "../../src/approvals/web.ts";
import type { AuditRow } from "../../src/audit/index.ts";
import { decodeEncodedWords } from "../../src/mail/encoded-words.ts";
import { generateToken } from "../../src/vault/token.ts";
import { heldId } from "../fixtures/index.ts";
import {
  dataPayload,
  loggedIn,
  marker,
  message,
  sinkCopies,
  startTestProxy,
  type TestProxy,
  upstreams,
  vaultClient,
  vaultConfig,
} from "./helpers.ts";
import { noticesIn, waitFor } from "./notice-reader.ts";

/** Retries in these tests: three attempts, 50 ms apart. */
const DELAYS = [50, 50];
/** The grace given to notices in flight when a Notifier closes, in these tests. */
const GRACE_MS = 500;

function config(baseUrl: string, approvers: string, notifySender: boolean, notifyAccount = true): string {
  const notifier = upstreams().users[1]!;
  return `
[approvals]
base_url = "${baseUrl}"
${notifyAccount ? `notify_account = "notices"` : ""}
notify_sender = ${notifySender}

[accounts.notices]
username = "${notifier.user}"
password = "${notifier.password}"

[approvals.groups.managers]
recipients = [${approvers}]

[approvals.groups.legal]
recipients = ["boss@corp.test"]

[[rules]]
name = "colleagues"
action = "allow"
operations = ["send"]
to = "*@mailgator.test"

[[rules]]
name = "outside needs a manager"
action = "ask"
operations = ["send"]
ask_groups = ["managers", "legal"]
`;
}

interface Setup {
  readonly proxy: TestProxy;
  readonly ctx: ApprovalContext;
  readonly notifier: Notifier;
}

async function setup(toml: string): Promise<Setup> {
  let notifier: Notifier | null = null;
  const proxy = await startTestProxy({ rules: toml, approvals: true, onHeld: (row) => notifier!.held(row) });
  const base: ApprovalContext = { config: proxy.config, store: proxy.approvals!, audit: proxy.audit, protocol: "smtp" };
  notifier = new Notifier(base, { retryDelaysMs: DELAYS });
  const n = notifier;
  return { proxy, notifier: n, ctx: { ...base, onDecided: (row, held) => n.decided(row, held) } };
}

let server: ReturnType<typeof Bun.serve>;
let origin: string;
let page: (req: Request) => Promise<Response> = async () => new Response("not yet", { status: 503 });
let main: Setup;
let failing: Setup;

beforeAll(async () => {
  server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: (req) => page(req) });
  origin = `http://127.0.0.1:${server.port}`;
  main = await setup(config(origin, `"boss@corp.test", "deputy@corp.test"`, true));
  page = approvalPage(main.ctx).handle;
  failing = await setup(config(origin, `"tempfail-boss@corp.test", "reject-boss@corp.test"`, false));
});
afterAll(async () => {
  await main?.notifier.close();
  await failing?.notifier.close();
  await main?.proxy.close();
  await failing?.proxy.close();
  server?.stop(true);
});

const ALICE = () => upstreams().users[0]!.user;

/** Sends one message through the proxy as alice; returns the held id. */
async function sendHeld(
  port: number,
  recipients: string[],
  subject: string,
  body: string,
  headers: Record<string, string> = {},
): Promise<string> {
  const c = await loggedIn(port);
  try {
    expect((await c.command(`MAIL FROM:<${ALICE()}>`)).code).toBe(250);
    for (const r of recipients) expect((await c.command(`RCPT TO:<${r}>`)).code).toBe(250);
    expect((await c.command("DATA")).code).toBe(354);
    c.write(dataPayload(message({ From: ALICE(), To: recipients.join(", "), Subject: subject, ...headers }, body)));
    const r = await c.reply();
    expect(r.code).toBe(250);
    const m = /^2\.0\.0 Held for approval as ([0-9a-f]{32})$/.exec(r.lines.join(" "));
    if (m === null) throw new Error(`not held: ${r.raw}`);
    return m[1]!;
  } finally {
    await c.command("QUIT");
  }
}

const sinkNotices = (id: string) => noticesIn(upstreams().sink, id);
const aliceNotices = (id: string) => noticesIn(userMaildir(upstreams().maildirRoot, ALICE()), id);

async function rowsFor(proxy: TestProxy, id: string, command: string): Promise<AuditRow[]> {
  return (await proxy.rows()).filter((r) => r.target === id && r.command === command);
}

/** `rows` are the notices to the two unreachable managers, one each, both failed; `reason` checks each reason. */
function expectManagersFailed(rows: AuditRow[], reason: (text: string) => void): void {
  expect(rows.map((r) => r.reason.split(" ")[2]).sort()).toEqual(["reject-boss@corp.test", "tempfail-boss@corp.test"]);
  for (const r of rows) {
    expect(r.decision).toBe("error");
    reason(r.reason);
  }
}

async function waitRows(proxy: TestProxy, id: string, command: string, count: number): Promise<AuditRow[]> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const rows = await rowsFor(proxy, id, command);
    if (rows.length >= count) return rows;
    if (Date.now() > deadline) throw new Error(`only ${rows.length} of ${count} ${command} rows for ${id}`);
    await Bun.sleep(50);
  }
}

describe("approvers' notices", () => {
  test("each approver gets one: the preview, the outside recipient marked, a link that opens the page", async () => {
    const m = marker();
    const inside = `carol-${m}@mailgator.test`;
    const outside = `ext-${m}@outside.example`;
    const body =
      `--b\nContent-Type: text/plain\n\nHello ${m}\nsecond line\n--b\n` +
      `Content-Type: application/pdf\nContent-Disposition: attachment; filename="report-${m}.pdf"\n\nJVBERi0=\n--b--\n`;
    const id = await sendHeld(main.proxy.port, [inside, outside], `approval ${m}`, body, {
      "MIME-Version": "1.0",
      "Content-Type": "multipart/mixed; boundary=b",
    });
    const notices = await waitFor("notices", () => sinkNotices(id), 2);
    await Bun.sleep(1000);
    // boss is in both groups: one notice each, not two.
    const again = sinkNotices(id);
    expect(again.map((n) => n.recipient).sort()).toEqual(["boss@corp.test", "deputy@corp.test"]);

    const n = notices.find((x) => x.recipient === "boss@corp.test")!;
    const field = (name: string) => n.fields.find((f) => f.name === name)?.value;
    expect(field("from")).toBe(`Mailgator <${upstreams().users[1]!.user}>`);
    expect(field("to")).toBe("<boss@corp.test>");
    expect(field("subject")).toStartWith("=?UTF-8?B?");
    expect(decodeEncodedWords(field("subject")!)).toBe(`Approval needed: approval ${m}`);
    const lines = n.body.split("\n");
    expect(lines).toContain(`From:        ${ALICE()}`);
    expect(lines).toContain(`To:          ${inside}`);
    expect(lines).toContain(`To:          ${outside}  (OUTSIDE the sender's domain)`);
    expect(lines).toContain(`Subject:     approval ${m}`);
    expect(lines).toContain(`Size:        ${(await main.proxy.approvals!.readMessage(id))!.message.length} octets`);
    expect(lines).toContain(`Attachments: report-${m}.pdf`);
    expect(lines).toContain("Rule:        outside needs a manager");
    expect(lines).toContain(`| Hello ${m}`);

    const link = new RegExp(`^${origin}/approvals/${id}\\?t=[A-Za-z0-9_-]+$`);
    const url = lines.find((l) => link.test(l));
    expect(url).toBeDefined();
    const r = await fetch(url!);
    expect(r.status).toBe(200);
    const html = await r.text();
    expect(html).toContain(`approval ${m}`);
    expect(html).toContain(outside);
    expect(html).toContain("Approve");
    // Opening the link changed nothing; the held copy never left.
    expect(main.proxy.approvals!.row(id)!.state).toBe("held");
    expect(sinkCopies(`Hello ${m}`).filter((c) => !c.text.includes("Auto-Submitted"))).toHaveLength(0);

    const rows = await waitRows(main.proxy, id, "APPROVAL NOTIFIED", 2);
    expect(rows.map((x) => [x.decision, x.rule])).toEqual([
      ["ask", "outside needs a manager"],
      ["ask", "outside needs a manager"],
    ]);
    expect(rows.map((x) => x.reason.split(" ")[2]).sort()).toEqual(["boss@corp.test", "deputy@corp.test"]);
    await deny(main.ctx, id, "test", null);
  });

  test("a subject trying to add header lines adds none to the notice", async () => {
    const m = marker();
    const victim = `victim-${m}@outside.example`;
    const evil = `Hi ${m}\r\nBcc: ${victim}\r\nX-Injected: yes\r\n\r\nforged body`;
    const subject = `=?utf-8?B?${Buffer.from(evil).toString("base64")}?=`;
    const id = await sendHeld(main.proxy.port, [`ext-${m}@outside.example`], subject, `Hello ${m}\n`);
    const notices = await waitFor("notices", () => sinkNotices(id), 2);
    for (const n of notices) {
      const names = n.fields.map((f) => f.name);
      expect(names).not.toContain("bcc");
      expect(names).not.toContain("x-injected");
      expect(names.filter((x) => x === "subject")).toHaveLength(1);
      expect(n.body).not.toContain("\nBcc:");
    }
    await Bun.sleep(1000);
    expect(sinkCopies(victim)).toEqual([]);
    await deny(main.ctx, id, "test", null);
  });
});

describe("pass-through mode without notify_account", () => {
  test("no notice is sent (the agent's login is never used for one); the message stays held", async () => {
    const quiet = await setup(config(origin, `"boss@corp.test"`, true, false));
    try {
      expect(quiet.proxy.config.warnings.join("\n")).toContain("in pass-through mode no notice is sent");
      const m = marker();
      const id = await sendHeld(quiet.proxy.port, [`p-${m}@outside.example`], `pass ${m}`, `Hello ${m}\n`);
      await quiet.notifier.idle();
      expect(await deny(quiet.ctx, id, "test", null)).toEqual({ outcome: "denied", state: "held" });
      await quiet.notifier.idle();
      await Bun.sleep(1500);
      expect(sinkNotices(id)).toEqual([]);
      expect(aliceNotices(id)).toEqual([]);
      const rows = await quiet.proxy.rows();
      expect(rows.filter((r) => r.target === id).map((r) => r.command)).toEqual(["DATA", "DENY"]);
    } finally {
      await quiet.notifier.close();
      await quiet.proxy.close();
    }
  });
});

describe("vault mode without notify_account", () => {
  test("the notice goes as the agent's account, without the link (its Sent folder may keep a copy)", async () => {
    const token = generateToken();
    const vault = await setup(vaultConfig(config(origin, `"boss@corp.test"`, false, false), token));
    try {
      const m = marker();
      const c = await vaultClient(vault.proxy.port, token);
      expect((await c.command(`MAIL FROM:<${ALICE()}>`)).code).toBe(250);
      expect((await c.command(`RCPT TO:<v-${m}@outside.example>`)).code).toBe(250);
      expect((await c.command("DATA")).code).toBe(354);
      c.write(dataPayload(message({ From: ALICE(), To: `v-${m}@outside.example`, Subject: `vault ${m}` }, "Hi\n")));
      const r = await c.reply();
      await c.command("QUIT");
      const id = heldId(r.lines.join(" "));
      const [n] = await waitFor("the notice", () => sinkNotices(id), 1);
      expect(n!.fields.find((f) => f.name === "from")?.value).toBe(`Mailgator <${ALICE()}>`);
      expect(n!.body).not.toContain("?t=");
      expect(n!.body).not.toContain(`/approvals/${id}`);
      expect(n!.body).toContain("No link: this notice is sent as agent bot's account, whose Sent folder may keep a");
      expect(n!.body).toContain(`mailgator approvals show|approve|deny ${id}`);
      await deny(vault.ctx, id, "test", null);
    } finally {
      await vault.notifier.close();
      await vault.proxy.close();
    }
  });
});

describe("notify_sender", () => {
  test("on: the sender learns sent, denied and expired, and nothing about who decided", async () => {
    const ids: Record<string, string> = {};
    for (const what of ["sent", "denied", "expired"]) {
      const m = marker();
      ids[what] = await sendHeld(main.proxy.port, [`r-${m}@outside.example`], `result ${what} ${m}`, `Hello ${m}\n`);
    }
    expect((await approve(main.ctx, ids["sent"]!, "approver-alpha")).outcome).toBe("sent");
    expect(await deny(main.ctx, ids["denied"]!, "approver-beta", "reason-gamma")).toEqual({
      outcome: "denied",
      state: "held",
    });
    const expires = main.proxy.approvals!.row(ids["expired"]!)!.expires;
    expect(expireDue(main.ctx, expires).map((r) => r.id)).toContain(ids["expired"]!);
    for (const [what, id] of Object.entries(ids)) {
      const [n] = await waitFor(`${what} notices`, () => aliceNotices(id), 1);
      expect(n!.fields.find((f) => f.name === "to")?.value).toBe(`<${ALICE()}>`);
      expect(n!.body).toContain(`Your message ${id} (subject: result ${what} `);
      expect(n!.body).toContain(
        { sent: "was approved and sent", denied: "was denied", expired: "expired without a decision" }[what]!,
      );
      for (const secret of ["approver-alpha", "approver-beta", "reason-gamma", "boss@corp.test"])
        expect(n!.body).not.toContain(secret);
      const rows = await waitRows(main.proxy, id, "APPROVAL SENDER NOTIFIED", 1);
      expect(rows[0]!.decision).toBe("allow");
    }
  });

  test("on: a message an approval or a denial finds past its time expires, and the sender learns it", async () => {
    for (const decide of ["approve", "deny"] as const) {
      const m = marker();
      const id = await sendHeld(main.proxy.port, [`e-${m}@outside.example`], `late ${decide} ${m}`, `Hello ${m}\n`);
      // Past its time, before the expiry check swept it: the decision itself expires it.
      main.proxy.approvals!.state.db.query("UPDATE approvals SET expires = ? WHERE id = ?").run(Date.now() - 1, id);
      const result =
        decide === "approve" ? await approve(main.ctx, id, "test") : await deny(main.ctx, id, "test", null);
      expect(result).toEqual({ outcome: "refused", state: "expired" });
      expect(main.proxy.approvals!.row(id)!.state).toBe("expired");
      expect(await rowsFor(main.proxy, id, "APPROVAL EXPIRED")).toHaveLength(1);
      const [n] = await waitFor(`${decide} expiry notice`, () => aliceNotices(id), 1);
      expect(n!.body).toContain(`Your message ${id} (subject: late ${decide} `);
      expect(n!.body).toContain("expired without a decision");
      expect((await waitRows(main.proxy, id, "APPROVAL SENDER NOTIFIED", 1))[0]!.decision).toBe("allow");
    }
  });

  test("off: the sender gets nothing", async () => {
    const off: ApprovalContext = {
      ...main.ctx,
      config: { ...main.ctx.config, approvals: { ...main.ctx.config.approvals, notifySender: false } },
    };
    const quiet = new Notifier(off, { retryDelaysMs: DELAYS });
    const ctx: ApprovalContext = { ...off, onDecided: (row, held) => quiet.decided(row, held) };
    const m = marker();
    const id = await sendHeld(main.proxy.port, [`q-${m}@outside.example`], `quiet ${m}`, `Hello ${m}\n`);
    expect(await deny(ctx, id, "test", null)).toEqual({ outcome: "denied", state: "held" });
    await quiet.idle();
    await Bun.sleep(1500);
    expect(aliceNotices(id)).toEqual([]);
    expect(await rowsFor(main.proxy, id, "APPROVAL SENDER NOTIFIED")).toEqual([]);
  });
});

describe("a notice that cannot be sent", () => {
  test("refused (550) or deferred (451) at every attempt: a failure row each; the message stays held", async () => {
    const m = marker();
    const id = await sendHeld(failing.proxy.port, [`f-${m}@outside.example`], `fail ${m}`, `Hello ${m}\n`);
    // boss@corp.test (group legal) is reachable; the two managers are not.
    const rows = await waitRows(failing.proxy, id, "APPROVAL NOTIFIED", 3);
    const byTo = (to: string) => rows.find((r) => r.reason.startsWith(`notice to ${to}`))!;
    expect(byTo("boss@corp.test").decision).toBe("ask");
    const rejected = byTo("reject-boss@corp.test");
    expect(rejected.decision).toBe("error");
    expect(rejected.reason).toContain("1 attempt: upstream replied 550");
    const deferred = byTo("tempfail-boss@corp.test");
    expect(deferred.decision).toBe("error");
    expect(deferred.reason).toContain(`${DELAYS.length + 1} attempts: upstream replied 451`);
    expect(failing.proxy.approvals!.row(id)!.state).toBe("held");
    expect(await failing.proxy.approvals!.readMessage(id)).not.toBeNull();
    // Still approvable: it reaches the upstream once approved.
    expect((await approve(failing.ctx, id, "test")).outcome).toBe("sent");
    await waitFor("copies", () => sinkCopies(`Hello ${m}`), 1);
  });

  test("upstream down: retried, then a failure row; the message stays held", async () => {
    const closed = await freePort();
    const m = marker();
    const id = await sendHeld(failing.proxy.port, [`d-${m}@outside.example`], `down ${m}`, `Hello ${m}\n`);
    await waitRows(failing.proxy, id, "APPROVAL NOTIFIED", 3); // the proxy's own notices, done
    const down = failing.ctx.config;
    const ctx: ApprovalContext = {
      ...failing.ctx,
      config: { ...down, smtp: { ...down.smtp!, upstreamAddr: { host: "127.0.0.1", port: closed } } },
    };
    const notifier = new Notifier(ctx, { retryDelaysMs: DELAYS });
    notifier.held(failing.proxy.approvals!.row(id)!);
    await notifier.idle();
    // boss@corp.test's notice was accepted (docs/approvals.md "Notices"): it is not sent again; the other two are.
    const rows = (await rowsFor(failing.proxy, id, "APPROVAL NOTIFIED")).slice(3);
    expectManagersFailed(rows, (reason) => expect(reason).toContain(`not sent: ${DELAYS.length + 1} attempts:`));
    expect(failing.proxy.approvals!.row(id)!.state).toBe("held");
    expect(await failing.proxy.approvals!.readMessage(id)).not.toBeNull();
    await deny(failing.ctx, id, "test", null);
  });

  test("close cuts the notices still unanswered after its grace: a failure row each; still held", async () => {
    // An upstream that takes every notice up to its final dot and never answers that (in process: Postfix answers).
    const dots: Socket[] = [];
    const dropped = new Set<Socket>();
    const silent = createServer((socket) => {
      socket.on("error", () => {});
      socket.on("close", () => dropped.add(socket));
      let inData = false;
      let text = "";
      socket.write("220 silent ESMTP\r\n");
      socket.on("data", (chunk: Buffer) => {
        text += chunk.toString("latin1");
        for (let end = text.indexOf("\r\n"); end !== -1; end = text.indexOf("\r\n")) {
          const line = text.slice(0, end);
          text = text.slice(end + 2);
          if (inData) {
            if (line === ".") dots.push(socket);
            continue;
          }
          const verb = line.split(" ")[0]!.toUpperCase();
          if (verb === "EHLO") socket.write("250-silent\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n");
          else if (verb === "AUTH") socket.write("235 2.7.0 ok\r\n");
          else if (verb === "DATA") {
            inData = true;
            socket.write("354 go on\r\n");
          } else socket.write("250 ok\r\n");
        }
      });
    });
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    try {
      const m = marker();
      const id = await sendHeld(failing.proxy.port, [`g-${m}@outside.example`], `grace ${m}`, `Hello ${m}\n`);
      await waitRows(failing.proxy, id, "APPROVAL NOTIFIED", 3); // the proxy's own notices, done
      const up = failing.ctx.config;
      const port = (silent.address() as { port: number }).port;
      const ctx: ApprovalContext = {
        ...failing.ctx,
        config: { ...up, smtp: { ...up.smtp!, upstreamAddr: { host: "127.0.0.1", port }, upstreamTls: "none" } },
      };
      const notifier = new Notifier(ctx, { retryDelaysMs: DELAYS });
      // boss@corp.test's notice was accepted: the two others go to the silent upstream.
      notifier.held(failing.proxy.approvals!.row(id)!);
      await waitFor("final dots", () => dots, 2);
      expect(await rowsFor(failing.proxy, id, "APPROVAL NOTIFIED")).toHaveLength(3);
      // Past the grace both are cut (not after the 10 minutes an upstream may take to answer a final dot).
      await notifier.close(GRACE_MS);
      const rows = (await rowsFor(failing.proxy, id, "APPROVAL NOTIFIED")).slice(3);
      expectManagersFailed(rows, (reason) =>
        expect(reason).toEndWith(
          "not sent: 1 attempt: the process stopped while it was being sent (it may have arrived)",
        ),
      );
      // Their connections were dropped, so the upstream does not keep them.
      await waitFor("dropped connections", () => dots.filter((d) => dropped.has(d)), 2);
      expect(failing.proxy.approvals!.row(id)!.state).toBe("held");
      await deny(failing.ctx, id, "test", null);
    } finally {
      for (const socket of dots) socket.destroy();
      silent.close();
    }
  });

  test("close gives up retries still waiting: a failure row, at once", async () => {
    // Not 600,000: that is the SMTP client's reply timeout (UPSTREAM_REPLY_TIMEOUT_MS), set for every command of the
    // attempt still under way, which the probe below would take for the retry's timer.
    const RETRY_MS = 654_321;
    const notifier = new Notifier(failing.ctx, { retryDelaysMs: [RETRY_MS] });
    const m = marker();
    const id = await sendHeld(failing.proxy.port, [`c-${m}@outside.example`], `close ${m}`, `Hello ${m}\n`);
    await waitRows(failing.proxy, id, "APPROVAL NOTIFIED", 3);
    // The deferred notice waits RETRY_MS (some 11 minutes) for its second attempt: seen when its timer is set (the two
    // notices are tried at once, so the refused one's row can come while the deferred one's first attempt is still
    // running).
    let waiting = false;
    const realSetTimeout = globalThis.setTimeout;
    globalThis.setTimeout = ((f: () => void, ms?: number, ...rest: unknown[]) => {
      if (ms === RETRY_MS) waiting = true;
      return realSetTimeout(f, ms, ...rest);
    }) as typeof setTimeout;
    try {
      notifier.held(failing.proxy.approvals!.row(id)!);
      // The refused one is done (the accepted one to boss@corp.test is not sent again), the deferred one waiting.
      await waitRows(failing.proxy, id, "APPROVAL NOTIFIED", 4);
      for (let i = 0; i < 300 && !waiting; i++) await Bun.sleep(50);
    } finally {
      globalThis.setTimeout = realSetTimeout;
    }
    expect(waiting).toBe(true);
    const started = Date.now();
    await notifier.close();
    expect(Date.now() - started).toBeLessThan(5000);
    const rows = (await rowsFor(failing.proxy, id, "APPROVAL NOTIFIED")).slice(3);
    expect(rows).toHaveLength(2);
    const deferred = rows.find((r) => r.reason.startsWith("notice to tempfail-boss@corp.test"))!;
    expect(deferred.decision).toBe("error");
    expect(deferred.reason).toContain("the process stopped");
    expect(failing.proxy.approvals!.row(id)!.state).toBe("held");
    await deny(failing.ctx, id, "test", null);
  });
});
