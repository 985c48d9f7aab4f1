/**
 * An agent's token given in the login-name position (fields swapped, or a client that sends a token as the
 * user name, as many API clients do) must not reach the audit log or the log. docs/audit.md: "What is never in it:
 * ... passwords, tokens or any other secret"; docs/config.md "Who connects": each failure is audited "without the
 * password or token, and with at most the first 200 characters of the name".
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import { moduleLogger } from "../../src/log.ts";
import { generateToken, hashToken } from "../../src/vault/token.ts";
import { createMailbox, type TestMailbox } from "../fixtures/index.ts";
import {
  RawClient as SmtpClient,
  type TestProxy as SmtpProxy,
  startTestProxy as startSmtpProxy,
} from "../smtp/helpers.ts";
import { RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

const b64 = (s: string): string => Buffer.from(s).toString("base64");

const token = generateToken();
const other = generateToken();
/** A token of the operator's own making, without the `mgt_` prefix: known by its hash alone. */
const custom = "operator-made-secret-7f3a9c1e";
let mailbox: TestMailbox;
let imap: TestProxy;
let smtp: SmtpProxy;
const logged: string[] = [];

beforeAll(async () => {
  mailbox = await createMailbox({ seed: { folders: { INBOX: 1 }, seed: 11 } });
  const agents = `
[accounts.main]
username = "${mailbox.user}"
password = "${mailbox.password}"

[[agents]]
name = "assistant"
token_hash = "${hashToken(token)}"
account = "main"

[[agents]]
name = "custom"
token_hash = "${hashToken(custom)}"
account = "main"
`;
  imap = await startTestProxy({ extra: agents });
  smtp = await startSmtpProxy({ rules: agents });
  for (const tag of ["imap", "smtp"]) {
    const log = moduleLogger(tag);
    const warn = log.warn.bind(log);
    log.warn = ((...args: unknown[]) => {
      logged.push(args.map((a) => (typeof a === "string" ? a : JSON.stringify(a))).join(" "));
      return (warn as (...a: unknown[]) => void)(...args);
    }) as typeof log.warn;
  }
});

afterAll(async () => {
  await imap?.close();
  await smtp?.close();
});

async function imapAttempt(command: string): Promise<string> {
  const raw = await RawImap.open(imap.port);
  try {
    return statusOf(await raw.command("a", command), "a").slice(2);
  } finally {
    raw.close();
  }
}

test("IMAP: a token in the name position is neither audited nor logged", async () => {
  // Swapped fields; a token as the name with no password; another token-shaped name (an agent's token of another
  // proxy, or a revoked one) in AUTHENTICATE PLAIN.
  expect(await imapAttempt(`LOGIN "${token}" "assistant"`)).toStartWith("NO [AUTHENTICATIONFAILED]");
  expect(await imapAttempt(`LOGIN "${token}" ""`)).toStartWith("NO [AUTHENTICATIONFAILED]");
  expect(await imapAttempt(`AUTHENTICATE PLAIN ${b64(`\0${other}\0x`)}`)).toStartWith("NO [AUTHENTICATIONFAILED]");
  // A configured token without the prefix is known by its hash.
  expect(await imapAttempt(`LOGIN "${custom}" "custom"`)).toStartWith("NO [AUTHENTICATIONFAILED]");
  const rows = await imap.rows();
  expect(rows.filter((r) => r.reason?.startsWith("login failed")).length).toBe(4);
  expect(logged.join("\n")).toContain("login failed");
  expectNoToken(rows);
}, 60_000);

/** Neither the rows nor the captured log lines hold any of the tokens tried. */
function expectNoToken(rows: readonly object[]): void {
  for (const text of [JSON.stringify(rows), logged.join("\n")])
    for (const secret of [token, other, custom]) expect(text).not.toContain(secret);
}

test("SMTP: a token in the name position is neither audited nor logged", async () => {
  const c = await SmtpClient.connect(smtp.port);
  try {
    await c.reply();
    await c.command("EHLO client.test");
    expect((await c.command(`AUTH PLAIN ${b64(`\0${token}\0assistant`)}`)).code).toBe(535);
    // AUTH LOGIN: the name step alone.
    expect((await c.command(`AUTH LOGIN ${b64(other)}`)).code).toBe(334);
    expect((await c.command(b64("x"))).code).toBe(535);
  } finally {
    c.close();
  }
  const rows = await smtp.rows();
  expect(rows.filter((r) => r.reason?.startsWith("login refused")).length).toBe(2);
  expectNoToken(rows);
}, 60_000);
