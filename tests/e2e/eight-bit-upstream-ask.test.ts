/**
 * A message an `ask` rule would hold, holding 8-bit octets, to an upstream server that does not offer 8BITMIME
 * (docs/approvals.md "Holding", docs/smtp.md "Replay"): RFC 6152 §3 forbids sending it there and Mailgator never
 * converts, so no approval could ever send it. It is refused as a send of it is, before it is held: the agent gets the
 * same `554 5.6.3`, a `DATA` row says why, nothing is held (`mailgator approvals list`), no approver gets a notice,
 * and no quota is charged, for the held send as for the allowed one. `mailgator serve` in front of the real Postfix's
 * `smtp7bit` listener (docs/upstreams.md), in pass-through mode (the upstream connection kept from AUTH) and in vault
 * mode (the connection opened while the message comes in); the agent sends with nodemailer.
 */

import { Database } from "bun:sqlite";
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import nodemailer from "nodemailer";
import { freePort } from "../../scripts/upstreams/ports.ts";
import { createMailbox, heldId, sinkMessages, type TestMailbox, uniqueToken, upstreams } from "../fixtures/index.ts";
import { postfixLog } from "../smtp/helpers.ts";
import { noticesIn, waitFor } from "../smtp/notice-reader.ts";
import { accountToml, agentToml, serveConfig, smtpTo } from "./config.ts";
import { runCli, type Served, serveChild } from "./serve-child.ts";

setDefaultTimeout(60_000);

const REFUSAL =
  "554 5.6.3 The upstream server does not accept 8-bit messages (it does not offer 8BITMIME, RFC 6152) and this " +
  "message holds 8-bit octets; nothing was sent; send it as 7-bit (base64 or quoted-printable)";
const WHY =
  "the upstream server does not accept 8-bit messages (it does not offer 8BITMIME, RFC 6152) and this message holds " +
  "8-bit octets";
/** Long enough for a notice or a copy that should not arrive to have arrived. */
const SETTLE_MS = 2000;

const dirs: string[] = [];
const children: Served[] = [];
afterAll(async () => {
  for (const c of children) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill("SIGTERM");
  await Promise.all(children.map((c) => c.proc.exited));
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

interface Setup {
  readonly file: string;
  readonly auditPath: string;
  readonly sender: TestMailbox;
  readonly auth: { readonly user: string; readonly pass: string };
  readonly port: number;
}

/**
 * serve with one quota of one send an hour, colleagues (corp.test) allowed and everyone else held for `managers`
 * (boss@corp.test, notified as bob), in front of Postfix's `smtp7bit` listener over STARTTLS.
 */
async function start(mode: "pass-through" | "vault"): Promise<Setup> {
  const up = upstreams();
  const bob = up.users[1]!;
  const dir = mkdtempSync(join(tmpdir(), `mg-eight-bit-ask-${mode}-`));
  dirs.push(dir);
  const sender = await createMailbox({ name: `eight-bit-ask-${mode}` });
  const agentToken = `mg_${uniqueToken("agent")}`;
  const vault = `
${accountToml("mail", sender)}
${agentToml("bot", agentToken, "mail")}`;
  const file = join(dir, "mailgator.toml");
  writeFileSync(
    file,
    serveConfig(
      {
        listeners: smtpTo(`${up.host}:${up.ports.smtp7bit}`),
        dir,
        adminPort: await freePort(),
        approvals: { timeout: "1h", baseUrl: false, notifyAccount: "notices" },
      },
      `
${accountToml("notices", bob)}${mode === "vault" ? vault : ""}
[[quotas]]
name = "tight"
sends_per_hour = 1

[[rules]]
name = "colleagues"
action = "allow"
operations = ["send"]
to = "*@corp.test"

[[rules]]
name = "outside needs a manager"
action = "ask"
operations = ["send"]
ask_groups = ["managers"]
`,
    ),
  );
  const served = serveChild(file);
  children.push(served);
  const port = await served.port("SMTP");
  const auth = mode === "vault" ? { user: "bot", pass: agentToken } : { user: sender.user, pass: sender.password };
  return { file, auditPath: join(dir, "audit.db"), sender, auth, port };
}

/** The agent's message from `s`'s sender to `to`, with `token` in its Message-ID and Subject, and `body`. */
function agentMessage(s: Setup, to: string, token: string, body: string): Buffer {
  return Buffer.from(
    `From: ${s.sender.address}\r\nTo: ${to}\r\nSubject: eight-bit ${token}\r\n` +
      `Date: Wed, 02 Dec 2026 12:00:00 +0000\r\nMessage-ID: <${token}@mailgator.test>\r\n\r\n${body}\r\n`,
    "utf8",
  );
}

/** Sends `raw` to `to` with nodemailer (`BODY=8BITMIME` when asked): the final reply, accepted or refused. */
async function send(s: Setup, to: string, raw: Buffer): Promise<string> {
  const transport = nodemailer.createTransport({
    host: "127.0.0.1",
    port: s.port,
    secure: false,
    ignoreTLS: true,
    auth: s.auth,
  });
  try {
    return (await transport.sendMail({ envelope: { from: s.sender.address, to: [to] }, raw })).response;
  } catch (e) {
    const response = (e as { response?: string }).response;
    if (response === undefined) throw e;
    return response;
  } finally {
    transport.close();
  }
}

type Row = { command: string; target: string; decision: string; rule: string | null; reason: string };

/** The audit rows (read as a second reader) whose target is one of `targets`, oldest first. */
function auditRows(s: Setup, targets: readonly string[]): Row[] {
  const db = new Database(s.auditPath, { readonly: true });
  try {
    return db
      .query(
        `SELECT command, target, decision, rule, reason FROM audit WHERE target IN (${targets.map(() => "?").join(",")})
         ORDER BY id`,
      )
      .all(...targets) as Row[];
  } finally {
    db.close();
  }
}

/** The audit rows of `targets` once there are `count` (serve commits its rows in batches). */
async function auditRowsWhen(s: Setup, targets: readonly string[], count: number): Promise<Row[]> {
  const deadline = Date.now() + 10_000;
  let rows = auditRows(s, targets);
  while (rows.length < count && Date.now() < deadline) {
    await Bun.sleep(100);
    rows = auditRows(s, targets);
  }
  return rows;
}

/** What `mailgator approvals list --json` shows: the held messages' ids and states. */
function listed(s: Setup): { id: string; state: string }[] {
  const r = runCli(["approvals", "list", "-c", s.file, "--json"]);
  expect(r.exitCode).toBe(0);
  return (JSON.parse(r.stdout) as { id: string; state: string }[]).map(({ id, state }) => ({ id, state }));
}

for (const mode of ["pass-through", "vault"] as const) {
  describe(`${mode} mode, the upstream without 8BITMIME`, () => {
    let s: Setup;
    beforeAll(async () => {
      s = await start(mode);
    });

    test("an 8-bit message an ask rule would hold: 554 5.6.3, not held, no notice, no charge", async () => {
      const m = uniqueToken("ask8");
      const to = `out-${m}@outside.example`;
      expect(await send(s, to, agentMessage(s, to, m, `Grüße aus Köln ${m}`))).toBe(REFUSAL);

      // Nothing is held: the operator's list is empty.
      expect(listed(s)).toEqual([]);
      // The rule asked for the recipient; the DATA row says why nothing was held, and no row names an approval.
      const rows = await auditRowsWhen(s, [to, `<${m}@mailgator.test>`], 2);
      expect(rows.map((r) => [r.command, r.target, r.decision, r.rule])).toEqual([
        ["RCPT TO", to, "ask", "outside needs a manager"],
        ["DATA", `<${m}@mailgator.test>`, "deny", null],
      ]);
      expect(rows[1]!.reason).toBe(`not held for approval, no approver asked (nothing went upstream): ${WHY}`);

      // The same message to a colleague, which the rules allow: the same reply, and not charged either.
      const n = uniqueToken("live8");
      const colleague = `pat-${n}@corp.test`;
      expect(await send(s, colleague, agentMessage(s, colleague, n, `Grüße ${n}`))).toBe(REFUSAL);
      const live = await auditRowsWhen(s, [`<${n}@mailgator.test>`], 2);
      expect(live.map((r) => [r.command, r.decision, r.reason])).toEqual([
        ["DATA", "allow", "every recipient allowed"],
        ["DATA", "deny", `not sent (nothing went upstream): ${WHY}`],
      ]);

      // Neither refusal was charged: the one send of the hour is still there, and a 7-bit message is held with it.
      const k = uniqueToken("ask7");
      const seven = `out-${k}@outside.example`;
      const id = heldId(await send(s, seven, agentMessage(s, seven, k, `Hello ${k}`)));
      expect(listed(s)).toEqual([{ id, state: "held" }]);
      // Its notice reaches the approver through the same upstream, naming its subject: the refused message's never.
      const notices = await waitFor("notices", () => noticesIn(upstreams().sink, id), 1);
      expect(notices.map((x) => x.recipient)).toEqual(["boss@corp.test"]);
      expect(notices[0]!.body).toContain(k);
      await Bun.sleep(SETTLE_MS);
      expect(noticesIn(upstreams().sink, m)).toEqual([]);
      expect(auditRows(s, [to, `<${m}@mailgator.test>`]).length).toBe(2);
      // The quota is used now: the next send is over it.
      const over = uniqueToken("over");
      const next = `out-${over}@outside.example`;
      expect(await send(s, next, agentMessage(s, next, over, "Hello"))).toStartWith('452 4.7.1 Quota "tight" exceeded');

      // Nothing of the 8-bit messages reached Postfix.
      for (const token of [m, n]) {
        expect(sinkMessages(token)).toEqual([]);
        expect(postfixLog()).not.toContain(token);
      }
    });
  });
}
