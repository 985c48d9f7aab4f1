/**
 * `send` and `save_draft` take each entry of `to`, `cc` and `bcc` as exactly one address (docs/mcp.md "Agent tools"),
 * against a real `mailgator serve` in front of Dovecot and Postfix, driven by the MCP SDK's client. The mail composer
 * (nodemailer) reads an entry as an address list and drops what it cannot read as an address: `postmaster`, `<>`,
 * `""` or a bare name named no one, and the message went to the others, reported as sent, although a recipient the
 * agent named did not get it (docs/smtp.md "All or nothing": one recipient not taken, no message). Such an entry is
 * an invalid argument, and so is an entry of two addresses; nothing is sent or saved.
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { McpError } from "@modelcontextprotocol/sdk/types.js";
import { freePorts } from "../../scripts/upstreams/ports.ts";
import { type Served, serveChild } from "../e2e/serve-child.ts";
import {
  connectImap,
  createMailbox,
  sinkMessages,
  type TestMailbox,
  uniqueToken,
  upstreams,
  waitForSink,
} from "../fixtures/index.ts";

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");

let dir: string;
let serve: Served;
let client: Client;
let mailbox: TestMailbox;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "mailgator-mcp-recipients-"));
  mailbox = await createMailbox();
  const [imap, smtp] = await freePorts(2);
  const up = upstreams();
  mkdirSync(join(dir, "state"));
  const config = join(dir, "mailgator.toml");
  writeFileSync(
    config,
    `[imap]
listen_addr = "127.0.0.1:${imap}"
upstream_addr = "${up.host}:${up.ports.imaps}"
upstream_tls = "tls"
upstream_ca_file = ${JSON.stringify(up.caFile)}

[smtp]
listen_addr = "127.0.0.1:${smtp}"
upstream_addr = "${up.host}:${up.ports.smtp}"
upstream_tls = "starttls"
upstream_ca_file = ${JSON.stringify(up.caFile)}

[audit]
path = ${JSON.stringify(join(dir, "state", "audit.db"))}

[state]
path = ${JSON.stringify(join(dir, "state", "mailgator-state.db"))}

[[rules]]
name = "drafts"
folders = ["Drafts"]
action = "allow"

[[rules]]
name = "colleagues"
to = "*@corp.test"
operations = ["send"]
action = "allow"

[[rules]]
name = "nothing else"
action = "deny"
`,
  );
  serve = serveChild(config);
  await serve.port("IMAP");
  await serve.port("SMTP");
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: [MAIN, "mcp", "--agent", mailbox.user, "-c", config],
    env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", HOME: dir, MAILGATOR_PASSWORD: mailbox.password },
    stderr: "pipe",
  });
  client = new Client({ name: "mailgator-test", version: "1.0.0" });
  await client.connect(transport);
}, 60_000);

afterAll(async () => {
  await client?.close();
  serve?.proc.kill("SIGTERM");
  await serve?.proc.exited;
  rmSync(dir, { recursive: true, force: true });
});

/** A tool call's text and whether it is an error (the SDK may answer invalid arguments with a protocol error). */
async function callTool(name: string, args: Record<string, unknown>): Promise<{ text: string; isError: boolean }> {
  try {
    const result = await client.callTool({ name, arguments: args }, undefined, { timeout: 30_000 });
    const text = (result.content as { text?: string }[]).map((c) => c.text ?? "").join("\n");
    return { text, isError: result.isError === true };
  } catch (e) {
    if (e instanceof McpError) return { text: e.message, isError: true };
    throw e;
  }
}

test("a recipient entry that is not exactly one address is an invalid argument; nothing is sent", async () => {
  const token = uniqueToken("mcprcpt");
  const colleague = `colleague-${token}@corp.test`;
  const cases: Record<string, unknown>[] = [
    { to: [colleague, "postmaster"] },
    { to: [colleague], cc: ["<>"] },
    { to: [colleague], bcc: ['""'] },
    { to: [colleague], cc: ["The team"] },
    { to: [`${colleague}, other-${token}@corp.test`] },
    { to: [colleague], bcc: ["undisclosed-recipients:;"] },
  ];
  for (const [i, recipients] of cases.entries()) {
    const out = await callTool("send", { ...recipients, subject: `case ${i} ${token}`, text: "hello" });
    const label = JSON.stringify(recipients);
    expect(`${label}: ${out.isError}`).toBe(`${label}: true`);
    expect(out.text).toContain("not one recipient address");
  }
  await Bun.sleep(1000);
  expect(sinkMessages(token)).toEqual([]);
});

test("one address per entry, with or without a display name, is sent to each", async () => {
  const token = uniqueToken("mcprcptok");
  const out = await callTool("send", {
    to: [`Carol <carol-${token}@corp.test>`, `"Doe, Jane" <jane-${token}@corp.test>`],
    cc: [`dan-${token}@corp.test`],
    subject: `fine ${token}`,
    text: "hello",
  });
  expect(out.isError).toBe(false);
  const copies = await waitForSink(token, { count: 3 });
  expect(copies.map((c) => c.originalTo).sort()).toEqual(
    [`carol-${token}@corp.test`, `dan-${token}@corp.test`, `jane-${token}@corp.test`].sort(),
  );
});

test("save_draft: a recipient entry that is not one address is an invalid argument; no draft is saved", async () => {
  const token = uniqueToken("mcpdraft");
  const out = await callTool("save_draft", {
    to: [`carol-${token}@corp.test`, "Bob"],
    subject: `draft ${token}`,
    text: "later",
    folder: "Drafts",
  });
  expect(out.isError).toBe(true);
  expect(out.text).toContain("not one recipient address");
  const direct = await connectImap(mailbox);
  try {
    await direct.mailboxOpen("Drafts");
    expect(await direct.search({ subject: token }, { uid: true })).toEqual([]);
  } finally {
    await direct.logout();
  }
});
