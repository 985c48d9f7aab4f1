/**
 * Approving a held message under rules edited since it was held (docs/approvals.md "Deciding", step 1): the rules in
 * force at the approval decide it as the SMTP proxy would decide a send of the stored envelope and message now
 * (docs/smtp.md "Send semantics"). `mailgator serve` runs as a child process in front of the real Postfix, the agent
 * sends with nodemailer (pass-through), the config file is edited and reloaded (`mailgator reload`), and the messages
 * are approved on serve's approval page (real HTTP) and with `mailgator approvals approve` (another process):
 *
 * - a recipient domain the edited rules deny, a subject they deny, and a message with one recipient still held and
 *   one now denied (all or nothing, docs/smtp.md): nothing reaches Postfix, the message stays held, an `APPROVE` row
 *   of decision `error` says `not sent, still held: the rules now deny this send: ...`, the page answers 503 and
 *   gives its link back;
 * - a message the edited rules still hold is sent, once, from the page and from the command.
 */

import { Database } from "bun:sqlite";
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import nodemailer from "nodemailer";
import { freePort } from "../../scripts/upstreams/ports.ts";
import { ApprovalStore } from "../../src/approvals/store.ts";
import { SealedStore } from "../../src/state/store.ts";
import { createMailbox, heldId, sinkMessages, type TestMailbox, uniqueToken } from "../fixtures/index.ts";
import { serveConfig } from "./config.ts";
import { runCli, type Served, serveChild } from "./serve-child.ts";

setDefaultTimeout(120_000);

/** Long enough for a copy that should not arrive to have arrived. */
const SETTLE_MS = 3000;

const HELD_RULES = `
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
`;

/** The rules after the edit: two denials put first; every other send is still held. */
const EDITED_RULES = `
[[rules]]
name = "no more mail to outside.example"
action = "deny"
operations = ["send"]
to = "*@outside.example"

[[rules]]
name = "nothing confidential"
action = "deny"
operations = ["send"]
subject = "*confidential*"
${HELD_RULES}`;

let dir: string;
let file: string;
let sender: TestMailbox;
let served: Served;
let admin: string;
let smtpPort: number;

function configToml(adminPort: number, rules: string): string {
  return serveConfig({ dir, adminPort, approvals: { timeout: "1h" } }, rules);
}

let adminPort: number;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "mg-approve-rules-"));
  file = join(dir, "mailgator.toml");
  adminPort = await freePort();
  writeFileSync(file, configToml(adminPort, HELD_RULES));
  sender = await createMailbox({ name: "approve-rules-now" });
  served = serveChild(file);
  smtpPort = await served.port("SMTP");
  const line = await served.waitForLog(/admin listening on http:\/\/127\.0\.0\.1:\d+/);
  admin = `http://127.0.0.1:${/127\.0\.0\.1:(\d+)/.exec(line)![1]}`;
});

afterAll(async () => {
  if (served !== undefined && served.proc.exitCode === null && served.proc.signalCode === null) {
    served.proc.kill("SIGTERM");
    await served.proc.exited;
  }
  rmSync(dir, { recursive: true, force: true });
});

/** Sends one message through serve's SMTP proxy as the agent; it must be held: its id. */
async function hold(recipients: readonly string[], subject: string, token: string): Promise<string> {
  const raw = Buffer.from(
    `From: ${sender.address}\r\nTo: ${recipients.join(", ")}\r\nSubject: ${subject}\r\n` +
      `Message-ID: <${token}@mailgator.test>\r\n\r\nHello, body-${token}\r\n`,
    "latin1",
  );
  const transport = nodemailer.createTransport({
    host: "127.0.0.1",
    port: smtpPort,
    secure: false,
    ignoreTLS: true,
    auth: { user: sender.user, pass: sender.password },
  });
  try {
    const info = await transport.sendMail({ envelope: { from: sender.address, to: [...recipients] }, raw });
    return heldId(info.response);
  } finally {
    transport.close();
  }
}

function withStore<T>(f: (store: ApprovalStore) => T): T {
  const state = SealedStore.open(join(dir, "state.db"), {
    secretsFile: join(dir, "secrets.key"),
    env: {},
    create: false,
  })!;
  try {
    return f(new ApprovalStore(state));
  } finally {
    state.close();
  }
}

function post(id: string, action: "approve" | "deny"): Promise<Response> {
  const token = withStore((store) => store.token(store.row(id)!));
  return fetch(`${admin}/approvals/${id}`, {
    method: "POST",
    body: `t=${encodeURIComponent(token)}&action=${action}&confirm=${action}`,
    headers: { "content-type": "application/x-www-form-urlencoded", origin: admin },
  });
}

type Row = { command: string; decision: string; reason: string; protocol: string };

/** The audit rows about `id` once there are `count` (serve commits its rows in batches), oldest first. */
async function rowsAbout(id: string, count: number): Promise<Row[]> {
  const read = (): Row[] => {
    const db = new Database(join(dir, "audit.db"), { readonly: true });
    try {
      return db
        .query("SELECT command, decision, reason, protocol FROM audit WHERE target = ? ORDER BY id")
        .all(id) as Row[];
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

async function copies(token: string, count: number): Promise<number> {
  const deadline = Date.now() + 20_000;
  while (sinkMessages(token).length < count && Date.now() < deadline) await Bun.sleep(100);
  await Bun.sleep(SETTLE_MS);
  return sinkMessages(token).length;
}

const DENIED_DOMAIN = 'mail:send matched rule 1 "no more mail to outside.example" (to "*@outside.example")';
const DENIED_SUBJECT = 'mail:send matched rule 2 "nothing confidential" (subject "*confidential*")';

test("held, then rules that deny it: neither the page nor the command sends it; ones still held go", async () => {
  const t = {
    domain: uniqueToken("dom"),
    subject: uniqueToken("subj"),
    partial: uniqueToken("part"),
    page: uniqueToken("page"),
    cli: uniqueToken("cli"),
  };
  const ids = {
    domain: await hold([`out-${t.domain}@outside.example`], `report ${t.domain}`, t.domain),
    subject: await hold([`x-${t.subject}@fine.example`], `confidential ${t.subject}`, t.subject),
    partial: await hold(
      [`x-${t.partial}@fine.example`, `out-${t.partial}@outside.example`],
      `report ${t.partial}`,
      t.partial,
    ),
    page: await hold([`x-${t.page}@fine.example`], `report ${t.page}`, t.page),
    cli: await hold([`x-${t.cli}@fine.example`], `report ${t.cli}`, t.cli),
  };

  writeFileSync(file, configToml(adminPort, EDITED_RULES));
  const reloaded = runCli(["reload", "-c", file]);
  expect(reloaded.exitCode).toBe(0);

  // The page: refused (503), the message still held and its link given back.
  const refused = await post(ids.domain, "approve");
  expect(refused.status).toBe(503);
  const html = await refused.text();
  expect(html).toContain("The message was not sent and is still held: the rules now deny this send: not allowed for ");
  expect(html).toContain(`out-${t.domain}@outside.example`);
  expect(html).toContain("no more mail to outside.example");
  expect(withStore((store) => [store.row(ids.domain)!.state, store.tokenUsed(ids.domain)])).toEqual(["held", false]);

  // The command, for the same message and for the others the edited rules deny.
  const expected: [string, string][] = [
    [ids.domain, `not allowed for <out-${t.domain}@outside.example>: ${DENIED_DOMAIN}`],
    [ids.subject, `not allowed for <x-${t.subject}@fine.example>: ${DENIED_SUBJECT}`],
    // One recipient still held and one denied: the send would be refused whole, and so is its approval.
    [ids.partial, `not allowed for <out-${t.partial}@outside.example>: ${DENIED_DOMAIN}`],
  ];
  for (const [id, why] of expected) {
    const r = runCli(["approvals", "approve", id, "-c", file]);
    expect(r.stdout.trim()).toBe(`${id}: not sent, still held: the rules now deny this send: ${why}`);
    expect(r.exitCode).toBe(1);
    expect(withStore((store) => store.row(id)!.state)).toBe("held");
  }

  // Still held by the edited rules: the approval covers that, and it is sent, from the page and from the command.
  const sent = await post(ids.page, "approve");
  expect(sent.status).toBe(200);
  expect(await sent.text()).toContain("The message was sent.");
  const byCli = runCli(["approvals", "approve", ids.cli, "-c", file]);
  expect(byCli.stdout).toMatch(new RegExp(`^${ids.cli}: sent: upstream replied 250 `));
  expect(byCli.exitCode).toBe(0);
  expect(await copies(t.page, 1)).toBe(1);
  expect(await copies(t.cli, 1)).toBe(1);
  for (const token of [t.domain, t.subject, t.partial]) expect(sinkMessages(token)).toHaveLength(0);

  const domainRows = await rowsAbout(ids.domain, 3);
  expect(domainRows.map((r) => [r.command, r.decision, r.protocol])).toEqual([
    ["DATA", "ask", "smtp"],
    ["APPROVE", "error", "smtp"],
    ["APPROVE", "error", "cli"],
  ]);
  for (const r of domainRows.slice(1))
    expect(r.reason).toMatch(
      /^approved by .+; not sent, still held: the rules now deny this send: not allowed for <out-.+@outside\.example>/,
    );
  for (const id of [ids.subject, ids.partial]) {
    const rows = await rowsAbout(id, 2);
    expect(rows.map((r) => [r.command, r.decision])).toEqual([
      ["DATA", "ask"],
      ["APPROVE", "error"],
    ]);
  }
  // Still held: denying them works as for any held message.
  expect(runCli(["approvals", "deny", ids.domain, "-c", file]).exitCode).toBe(0);
});
