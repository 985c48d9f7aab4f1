/**
 * `mailgator serve` in vault mode, its upstream an address that accepts TCP and never says anything: an 8-bit message
 * an `ask` rule holds is held once UPSTREAM_OPENING_WAIT_MS (10 s) is over, not after the upstream's timeouts (the
 * greeting's alone is 10 minutes). The end of DATA waits that long for the password account's connection, opened
 * while the message came in, to learn whether the upstream offers 8BITMIME; past it that is not known, and holding
 * needs no upstream (docs/approvals.md "Holding", docs/smtp.md "Replay"). The agent sends with nodemailer; the message
 * is in `mailgator approvals list`, the audit rows are those of any held message, and the connection still being
 * opened is dropped 10 s after the agent has left (the time it gets to finish opening, so that it could be quit).
 * The wait within and past a shorter value, and the connection then used or quit:
 * tests/smtp/eight-bit-upstream-wait.test.ts.
 */

import { Database } from "bun:sqlite";
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import nodemailer from "nodemailer";
import { freePort } from "../../scripts/upstreams/ports.ts";
import { createMailbox, heldId, type TestMailbox, uniqueToken } from "../fixtures/index.ts";
import { SilentUpstream } from "../fixtures/silent-upstream.ts";
import { accountToml, agentToml, serveConfig, smtpTo } from "./config.ts";
import { runCli, type Served, serveChild } from "./serve-child.ts";

setDefaultTimeout(60_000);

/** UPSTREAM_OPENING_WAIT_MS (src/smtp/limits.ts; pinned in tests/smtp/limits.test.ts). */
const WAIT_MS = 10_000;
/** How late past the wait the reply may come on a loaded machine (a hold writes to the state database). */
const SLACK_MS = 5000;

let dir: string;
let silent: SilentUpstream;
let served: Served;
let file: string;
let port: number;
let sender: TestMailbox;
const agentToken = `mg_${uniqueToken("agent")}`;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "mg-eight-bit-silent-"));
  silent = await SilentUpstream.start();
  sender = await createMailbox({ name: "eight-bit-silent" });
  file = join(dir, "mailgator.toml");
  writeFileSync(
    file,
    serveConfig(
      {
        listeners: smtpTo(`127.0.0.1:${silent.port}`),
        dir,
        adminPort: await freePort(),
        approvals: { timeout: "1h", baseUrl: false },
      },
      `
${accountToml("mail", sender)}
${agentToml("bot", agentToken, "mail")}
[[rules]]
name = "outside needs a manager"
action = "ask"
operations = ["send"]
ask_groups = ["managers"]
`,
    ),
  );
  served = serveChild(file);
  port = await served.port("SMTP");
});

afterAll(async () => {
  // The approvers' notice goes out through the same silent upstream: dropping its connections ends it at once.
  await silent?.close();
  if (served !== undefined && served.proc.exitCode === null && served.proc.signalCode === null) {
    served.proc.kill("SIGTERM");
  }
  await served?.proc.exited;
  rmSync(dir, { recursive: true, force: true });
});

type Row = { command: string; target: string; decision: string; rule: string | null; reason: string };

/** The audit rows (read as a second reader) whose target is one of `targets`, once there are `count`. */
async function auditRows(targets: readonly string[], count: number): Promise<Row[]> {
  const read = (): Row[] => {
    const db = new Database(join(dir, "audit.db"), { readonly: true });
    try {
      return db
        .query(
          `SELECT command, target, decision, rule, reason FROM audit
           WHERE target IN (${targets.map(() => "?").join(",")}) ORDER BY id`,
        )
        .all(...targets) as Row[];
    } finally {
      db.close();
    }
  };
  const deadline = Date.now() + 10_000;
  let rows = read();
  while (rows.length < count && Date.now() < deadline) {
    await Bun.sleep(100);
    rows = read();
  }
  return rows;
}

test("an 8-bit message an ask rule holds: held after 10 s, listed, audited; the connection dropped", async () => {
  const m = uniqueToken("silent8");
  const to = `out-${m}@outside.example`;
  const raw = Buffer.from(
    `From: ${sender.address}\r\nTo: ${to}\r\nSubject: eight-bit ${m}\r\nDate: Wed, 02 Dec 2026 12:00:00 +0000\r\n` +
      `Message-ID: <${m}@mailgator.test>\r\n\r\nGrüße aus Köln ${m}\r\n`,
    "utf8",
  );
  const transport = nodemailer.createTransport({
    host: "127.0.0.1",
    port,
    secure: false,
    ignoreTLS: true,
    auth: { user: "bot", pass: agentToken },
  });
  const started = performance.now();
  let reply: string;
  try {
    reply = (await transport.sendMail({ envelope: { from: sender.address, to: [to] }, raw })).response;
  } finally {
    transport.close();
  }
  const ms = performance.now() - started;
  const id = heldId(reply);
  // Not before the wait, nor long after it (before, the reply waited for the greeting's 10 minutes).
  expect(ms).toBeGreaterThanOrEqual(WAIT_MS);
  expect(ms).toBeLessThan(WAIT_MS + SLACK_MS);
  expect(served.logs()).toContain(
    "the upstream connection was not open 10000 ms after the end of DATA; whether the upstream offers 8BITMIME is " +
      "not known",
  );

  // The operator sees it held.
  const r = runCli(["approvals", "list", "-c", file, "--json"]);
  expect(r.exitCode).toBe(0);
  expect((JSON.parse(r.stdout) as { id: string; state: string }[]).map(({ id, state }) => ({ id, state }))).toEqual([
    { id, state: "held" },
  ]);
  // The rows of any held message: the rule (it has no conditions, so it decides at MAIL FROM already) asked for the
  // sender and the recipient, and the DATA row names the approval.
  const rows = await auditRows([sender.address, to, id], 3);
  expect(rows.map((x) => [x.command, x.target, x.decision, x.rule])).toEqual([
    ["MAIL FROM", sender.address, "ask", "outside needs a manager"],
    ["RCPT TO", to, "ask", "outside needs a manager"],
    ["DATA", id, "ask", "outside needs a manager"],
  ]);
  expect(rows[2]!.reason).toBe(`held for approval (managers): asked for ${to}`);

  // The session's connection, accepted while the message came in and never answered: once the agent has left
  // (nodemailer quits after its message) it gets the same 10 s to finish opening, so that it could be quit, and is
  // dropped then, not kept for the upstream's timeouts.
  const opened = silent.accepted[0]!;
  expect(await SilentUpstream.closesWithin(opened, 2000)).toBe(false);
  expect(await SilentUpstream.closesWithin(opened, WAIT_MS - 2000 + SLACK_MS)).toBe(true);
});
