/**
 * The two MCP email servers Mailgator's users run, driven over stdio with the MCP SDK's client as an agent
 * would, pointed at Mailgator's IMAP and SMTP proxies (pass-through; a rule hides Junk, everything else is
 * allowed): `@codefuturist/email-mcp` (imapflow + nodemailer) and `mcp-mail-server` (node-imap + nodemailer,
 * plaintext LOGIN, IDLE between commands, no LOGOUT). Each lists folders, lists recent mail, reads one message,
 * searches by sender and sends; the hidden folder never appears in their tool output.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { AuditLog } from "../../src/audit/index.ts";
import { type Config, parseConfig } from "../../src/config/index.ts";
import { type ImapProxy, startImapProxy } from "../../src/imap/index.ts";
import { compilePolicy } from "../../src/policy/index.ts";
import { type SmtpProxy, startSmtpProxy } from "../../src/smtp/index.ts";
import {
  createMailbox,
  imapListener,
  smtpListener,
  type TestMailbox,
  uniqueToken,
  waitForDelivery,
  waitForSink,
} from "../fixtures/index.ts";

let mailbox: TestMailbox;
let dir: string;
let audit: AuditLog;
let imap: ImapProxy;
let smtp: SmtpProxy;

beforeAll(async () => {
  mailbox = await createMailbox({ seed: { folders: { INBOX: 12, Archive: 3, Junk: 4 }, seed: 21 } });
  dir = mkdtempSync(join(tmpdir(), "mailgator-mcp-"));
  const toml = `${imapListener("127.0.0.1:0")}
${smtpListener("127.0.0.1:0")}
[audit]
path = "${join(dir, "audit.db")}"

[[rules]]
name = "hide junk"
action = "deny"
folders = ["Junk"]

[[rules]]
name = "everything else"
action = "allow"
`;
  const parsed = parseConfig(toml, join(dir, "mailgator.toml"));
  const config: Config = {
    ...parsed,
    imap: { ...parsed.imap!, listenAddr: { host: "127.0.0.1", port: 0 } },
    smtp: { ...parsed.smtp!, listenAddr: { host: "127.0.0.1", port: 0 } },
  };
  audit = AuditLog.open(config.audit.path, { batchMs: 5, sync: "normal" });
  const policy = compilePolicy(config.rules);
  imap = await startImapProxy({ config, policy, audit });
  smtp = await startSmtpProxy({ config, policy, audit });
});

afterAll(async () => {
  await imap?.close();
  await smtp?.close();
  await audit?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Starts an MCP server under Node over stdio and connects the SDK client to it. */
async function mcp(
  script: string,
  env: Record<string, string>,
): Promise<{ client: Client; stderr: () => string; close(): Promise<void> }> {
  const transport = new StdioClientTransport({
    command: "node",
    args: [join(import.meta.dir, "../../node_modules", script)],
    env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", HOME: dir, ...env },
    stderr: "pipe",
  });
  let log = "";
  transport.stderr?.on("data", (d: Buffer) => {
    log += d.toString("utf8");
  });
  const client = new Client({ name: "mailgator-test", version: "1.0.0" });
  await client.connect(transport);
  return { client, stderr: () => log, close: () => client.close() };
}

/** Calls a tool; returns its text output, failing the test with the server's log when the tool failed. */
async function call(
  server: { client: Client; stderr: () => string },
  name: string,
  args: Record<string, unknown> = {},
): Promise<string> {
  const result = await server.client.callTool({ name, arguments: args }, undefined, { timeout: 25_000 });
  const text = ((result.content ?? []) as { type: string; text?: string }[]).map((c) => c.text ?? "").join("\n");
  if (result.isError) throw new Error(`${name} failed: ${text}\n--- server log ---\n${server.stderr().slice(-3000)}`);
  return text;
}

describe("@codefuturist/email-mcp", () => {
  let server: Awaited<ReturnType<typeof mcp>>;
  beforeAll(async () => {
    server = await mcp("@codefuturist/email-mcp/dist/main.js", {
      MCP_EMAIL_ADDRESS: mailbox.address,
      MCP_EMAIL_USERNAME: mailbox.user,
      MCP_EMAIL_PASSWORD: mailbox.password,
      MCP_EMAIL_IMAP_HOST: "127.0.0.1",
      MCP_EMAIL_IMAP_PORT: String(imap.address.port),
      MCP_EMAIL_IMAP_TLS: "false",
      MCP_EMAIL_SMTP_HOST: "127.0.0.1",
      MCP_EMAIL_SMTP_PORT: String(smtp.address.port),
      MCP_EMAIL_SMTP_TLS: "false",
      MCP_EMAIL_SMTP_STARTTLS: "false",
      MCP_EMAIL_WATCHER_ENABLED: "false",
      MCP_EMAIL_ACCOUNT_NAME: "main",
    });
  });
  afterAll(async () => {
    await server?.close();
  });

  test("list folders: the hidden folder is not there", async () => {
    const out = await call(server, "list_mailboxes", { account: "main" });
    expect(out).toContain("INBOX");
    expect(out).toContain("Archive");
    expect(out).not.toContain("Junk");
  });

  test("list recent mail, read one, search by sender", async () => {
    const inbox = mailbox.manifest.folders["INBOX"]!;
    const list = await call(server, "list_emails", { account: "main", mailbox: "INBOX", pageSize: 20 });
    expect(list).toContain(inbox[inbox.length - 1]!.subject);
    const junk = mailbox.manifest.folders["Junk"]!;
    for (const m of junk) if (!inbox.some((i) => i.subject === m.subject)) expect(list).not.toContain(m.subject);
    const one = await call(server, "get_email", { account: "main", mailbox: "INBOX", emailId: String(inbox[0]!.uid) });
    expect(one).toContain(inbox[0]!.subject);
    const sender = inbox.find((m) => m.from === "boss@corp.test") ?? inbox[0]!;
    const found = await call(server, "list_emails", { account: "main", mailbox: "INBOX", from: sender.from });
    expect(found).toContain(sender.subject);
    const hidden = await call(server, "list_emails", { account: "main", mailbox: "Junk" }).then(
      (t) => t,
      (e: Error) => e.message,
    );
    for (const m of junk) if (!inbox.some((i) => i.subject === m.subject)) expect(hidden).not.toContain(m.subject);
  });

  test("send through the SMTP proxy", async () => {
    const token = uniqueToken("mcpa");
    await call(server, "send_email", {
      account: "main",
      to: [mailbox.address],
      subject: `hello ${token}`,
      body: "sent by email-mcp through Mailgator",
    });
    const delivered = await waitForDelivery(mailbox, token);
    expect(delivered.length).toBe(1);
  });
});

describe("mcp-mail-server", () => {
  let server: Awaited<ReturnType<typeof mcp>>;
  beforeAll(async () => {
    server = await mcp("mcp-mail-server/dist/index.js", {
      IMAP_HOST: "127.0.0.1",
      IMAP_PORT: String(imap.address.port),
      IMAP_SECURE: "false",
      SMTP_HOST: "127.0.0.1",
      SMTP_PORT: String(smtp.address.port),
      SMTP_SECURE: "false",
      EMAIL_USER: mailbox.user,
      EMAIL_PASS: mailbox.password,
    });
    await call(server, "connect_all");
  });
  afterAll(async () => {
    await server?.close();
  });

  test("list folders: the hidden folder is not there", async () => {
    const out = await call(server, "list_mailboxes");
    expect(out).toContain("INBOX");
    expect(out).toContain("Archive");
    expect(out).not.toContain("Junk");
  });

  test("list recent mail, read one, search by sender", async () => {
    const inbox = mailbox.manifest.folders["INBOX"]!;
    const recent = await call(server, "get_recent_messages", { limit: 5 });
    expect(recent).toContain(inbox[inbox.length - 1]!.subject);
    const one = await call(server, "get_message", { uid: inbox[2]!.uid });
    expect(one).toContain(inbox[2]!.subject);
    const sender = inbox.find((m) => m.from === "boss@corp.test") ?? inbox[0]!;
    const found = await call(server, "search_by_sender", { sender: sender.from, inboxOnly: true });
    expect(found).toContain(sender.subject);
    const opened = await call(server, "open_mailbox", { mailboxName: "Junk" }).then(
      (t) => t,
      (e: Error) => e.message,
    );
    expect(opened).not.toMatch(/"total":\s*[1-9]/);
  });

  test("send through the SMTP proxy", async () => {
    const token = uniqueToken("mcpb");
    await call(server, "send_email", {
      to: `${token}@sink.test`,
      subject: `hello ${token}`,
      text: "sent by mcp-mail-server through Mailgator",
    });
    const sunk = await waitForSink(token);
    expect(sunk.length).toBe(1);
  });
});
