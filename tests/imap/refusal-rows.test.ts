/**
 * Every refusal is a row (docs/audit.md "What a row records"), those that need no rule included. A command refused for
 * the session's state (`BAD Log in first`, `BAD No mailbox selected`, `BAD Already logged in`) or refused by a
 * command's own checks without a rule (`COMPRESS LZW`) left no row,
 * and the state refusals did not count towards MAX_BAD_COMMANDS, so a client could send them without end before
 * login. Against Dovecot.
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import { MAX_BAD_COMMANDS } from "../../src/imap/limits.ts";
import { MAX_ARGUMENT_LITERAL } from "../../src/imap/wire/limits.ts";
import { createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { auditCursor, RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

let mailbox: TestMailbox;
let proxy: TestProxy;

beforeAll(async () => {
  mailbox = await createMailbox({ seed: { folders: { INBOX: 2 }, seed: 5 } });
  const hide = '[[rules]]\nname = "hide"\nfolders = ["Secret"]\naction = "deny"\n';
  proxy = await startTestProxy({ rules: `${hide}[[rules]]\nname = "all"\naction = "allow"\n` });
});

afterAll(async () => {
  await proxy?.close();
});

test("a command refused for the session's state or by its own checks has a deny row", async () => {
  const rows = auditCursor(proxy);
  await rows();
  const raw = await RawImap.open(proxy.port);
  try {
    expect(await raw.command("a", "SELECT INBOX")).toBe("a BAD Log in first\r\n");
    const login = await raw.command("L", `LOGIN "${mailbox.user}" "${mailbox.password}"`);
    expect(statusOf(login, "L")).toStartWith("L OK");
    expect(await raw.command("b", `LOGIN "${mailbox.user}" "${mailbox.password}"`)).toBe("b BAD Already logged in\r\n");
    expect(await raw.command("c", "FETCH 1 (FLAGS)")).toBe("c BAD No mailbox selected\r\n");
    expect(await raw.command("d", "COMPRESS LZW")).toBe("d BAD Unknown compression mechanism LZW\r\n");
    expect(statusOf(await raw.command("e", "SELECT INBOX (CONDSTORE QRESYNC (1 2))"), "e")).toStartWith("e BAD");
    const denied = (await rows()).filter((r) => r.decision === "deny");
    expect(denied.map((r) => [r.command, r.reason])).toEqual([
      ["SELECT", "Log in first"],
      ["LOGIN", "Already logged in"],
      ["FETCH", "No mailbox selected"],
      ["COMPRESS", "Unknown compression mechanism LZW"],
      // Refused as it is read: the parser's own row.
      ["(refused)", expect.stringContaining("SELECT parameters are not supported")],
    ]);
    // A refusal that has its own row gets no second one: a hidden folder's SELECT.
    expect(statusOf(await raw.command("f", "SELECT Secret"), "f")).toStartWith("f NO");
    expect((await rows()).map((r) => [r.command, r.decision, r.rule])).toEqual([["SELECT", "deny", "hide"]]);
  } finally {
    raw.close();
  }
});

test(`${MAX_BAD_COMMANDS} commands refused before login end the session (MAX_BAD_COMMANDS)`, async () => {
  const rows = auditCursor(proxy);
  await rows();
  const raw = await RawImap.open(proxy.port);
  for (let i = 1; i < MAX_BAD_COMMANDS; i++) expect(await raw.command(`s${i}`, 'LIST "" *')).toContain("BAD Log in");
  expect(raw.closed).toBe(false);
  raw.write("x SELECT INBOX\r\n");
  expect(await raw.readUntil((b) => b.includes("* BYE"))).toContain("* BYE Too many invalid commands");
  await raw.readUntil(() => false, 5000, "the session was not closed");
  expect(raw.closed).toBe(true);
  expect((await rows()).filter((r) => r.reason === "Log in first")).toHaveLength(MAX_BAD_COMMANDS);
});

test(`refused AUTHENTICATE and STARTTLS before login count too: ${MAX_BAD_COMMANDS} end the session`, async () => {
  // Each is refused by the command itself, with a deny row and no failed-login delay: before, none counted, and one
  // connection that never logged in wrote some 10,000 rows a second until its login_timeout.
  const refusals: [string, string, string][] = [
    ["AUTHENTICATE PLAIN", "*", "BAD AUTHENTICATE cancelled"],
    ["AUTHENTICATE PLAIN", "!!!!", "BAD Invalid SASL response"],
    ["AUTHENTICATE XOAUTH2", "", "NO [CANNOT] Only AUTHENTICATE PLAIN is supported"],
    ["STARTTLS", "", "BAD STARTTLS is not available"],
  ];
  const refuse = async (raw: RawImap, i: number): Promise<string> => {
    const [command, response] = refusals[i % refusals.length]!;
    raw.write(`r${i} ${command}\r\n`);
    if (response !== "") {
      expect(await raw.readUntil((b) => b.includes("+ "))).toStartWith("+ ");
      raw.take();
      raw.write(`${response}\r\n`);
    }
    return raw.waitTagged(`r${i}`);
  };
  const rows = auditCursor(proxy);
  await rows();
  const raw = await RawImap.open(proxy.port);
  for (let i = 1; i < MAX_BAD_COMMANDS; i++) {
    expect(await refuse(raw, i)).toBe(`r${i} ${refusals[i % refusals.length]![2]}\r\n`);
  }
  expect(raw.closed).toBe(false);
  // At the limit: a login is still taken, and does not count as a refusal.
  expect(statusOf(await raw.command("L", `LOGIN "${mailbox.user}" "${mailbox.password}"`), "L")).toStartWith("L OK");
  raw.close();
  const denied = (await rows()).filter((r) => r.decision === "deny");
  expect(denied).toHaveLength(MAX_BAD_COMMANDS - 1);

  // One past it: the session ends.
  const past = await RawImap.open(proxy.port);
  for (let i = 1; i < MAX_BAD_COMMANDS; i++) await refuse(past, i);
  expect(await refuse(past, MAX_BAD_COMMANDS)).toContain(`r${MAX_BAD_COMMANDS} `);
  expect(await past.readUntil((b) => b.includes("* BYE"))).toContain("* BYE Too many invalid commands");
  await past.readUntil(() => false, 5000, "the session was not closed");
  expect(past.closed).toBe(true);
  expect((await rows()).filter((r) => r.decision === "deny")).toHaveLength(MAX_BAD_COMMANDS);
});

test("a command refused at its literal or as it is read has a deny row, and no module prefix in its BAD", async () => {
  // Before, a literal refused for its size or kind, or before login, was answered with no row, and a parse error's
  // BAD and row began with the parser module's name.
  const rows = auditCursor(proxy);
  await rows();
  const raw = await RawImap.open(proxy.port);
  try {
    expect(await raw.command("a", "SEARCH {3}")).toBe("a BAD Literal refused before login\r\n");
    const login = await raw.command("L", `LOGIN "${mailbox.user}" "${mailbox.password}"`);
    expect(statusOf(login, "L")).toStartWith("L OK");
    expect(statusOf(await raw.command("s", "SELECT INBOX"), "s")).toStartWith("s OK");
    const tooBig = await raw.command("b", `SEARCH SUBJECT {${MAX_ARGUMENT_LITERAL + 1}}`);
    expect(tooBig).toBe(`b BAD [TOOBIG] literal of ${MAX_ARGUMENT_LITERAL + 1} octets\r\n`);
    expect(await raw.command("c", "SEARCH SUBJECT ~{3}")).toBe(
      "c BAD [CLIENTBUG] literal8 is allowed in APPEND only, with BINARY\r\n",
    );
    const sequence = Array.from({ length: 32_000 }, () => "1").join(",");
    const parse = await raw.command("d", `SEARCH ${sequence}`);
    expect(parse).toStartWith("d BAD ");
    expect(parse).not.toContain("imap-wire");
    const denied = (await rows()).filter((r) => r.decision === "deny");
    expect(denied.map((r) => [r.command, r.reason])).toEqual([
      ["SEARCH", "Literal refused before login"],
      ["SEARCH", `literal of ${MAX_ARGUMENT_LITERAL + 1} octets`],
      ["SEARCH", "literal8 is allowed in APPEND only, with BINARY"],
      ["(refused)", parse.slice("d BAD ".length, -2)],
    ]);
  } finally {
    raw.close();
  }
});
