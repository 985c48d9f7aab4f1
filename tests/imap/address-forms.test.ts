/**
 * A deny rule on one sender against the forms an address may be written in (docs/filtering.md "Deciding a
 * message"), through the proxy against the real Dovecot: what the rule reads must be the address readers read, or
 * the list is unknown and the message hidden. Shown: a colleague's messages; hidden: every message from the boss,
 * however its From is written.
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import { connectImap, createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { expectInboxShows } from "./filtered-fixture.ts";
import { startTestProxy, type TestProxy } from "./helpers.ts";

const RULES = `
[[rules]]
name = "not the boss's mail"
action = "deny"
folders = ["INBOX"]
operations = ["read"]
from = "boss@corp.test"

[[rules]]
name = "the rest of INBOX"
action = "allow"
folders = ["INBOX"]
operations = ["read"]
`;

let mailbox: TestMailbox;
let proxy: TestProxy;
const shown: number[] = [];
const hidden: number[] = [];
/** From values of hidden messages that Dovecot's own ENVELOPE reads as boss@corp.test. */
const bossToDovecot: string[] = [];

function message(from: string, id: string): Buffer {
  const header = `From: ${from}\r\nTo: <me@corp.test>\r\nSubject: hello\r\nMessage-ID: <${id}@forms.test>\r\n`;
  return Buffer.from(`${header}Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\nbody of ${id}\r\n`, "utf8");
}

beforeAll(async () => {
  mailbox = await createMailbox();
  const client = await connectImap(mailbox);
  const append = async (from: string, id: string) =>
    ((await client.append("INBOX", message(from, id), [])) as { uid: number }).uid;
  shown.push(await append("Alice <alice@corp.test>", "alice"));
  shown.push(await append("alice . smith @ corp . test", "alice-obsolete-spaces"));
  shown.push(await append('"boss here"@corp.test', "quoted-other"));
  hidden.push(await append("Boss <boss@corp.test>", "boss"));
  // Two words without a dot between them are no addr-spec (RFC 5322 §3.4.1): Dovecot reads boss@corp.test here,
  // and the rule must not read boss@corp.testx.
  hidden.push(await append("boss@corp.test x", "word-after"));
  bossToDovecot.push("boss@corp.test x");
  hidden.push(await append("Boss <boss@corp.test (x) x>", "word-after-angle"));
  hidden.push(await append("Boss <bo ss@corp.test>", "word-inside"));
  // A quoted local part is the address it quotes (RFC 5322 §3.4.1): Dovecot reads both as boss@corp.test.
  for (const [from, id] of [
    ['"boss"@corp.test', "quoted"],
    ['"b\\oss"@corp.test', "quoted-pair"],
  ] as const) {
    hidden.push(await append(from, id));
    bossToDovecot.push(from);
  }
  // The boss as one of several authors: the rule hiding the boss's mail must not be passed by a co-author.
  hidden.push(await append("alice@corp.test, Boss <boss@corp.test>", "co-authors"));
  hidden.push(await append("Boss <boss@corp.test>, alice@corp.test", "co-authors-boss-first"));
  // A domain does not end with a dot; corp.test. is corp.test to DNS.
  hidden.push(await append("boss@corp.test.", "trailing-dot"));
  await client.logout();
  proxy = await startTestProxy({ rules: RULES });
});

afterAll(async () => {
  await proxy?.close();
});

test("Dovecot reads these From fields as the boss's address", async () => {
  const client = await connectImap(mailbox);
  await client.mailboxOpen("INBOX", { readOnly: true });
  const seen = new Map<string, string>();
  for await (const m of client.fetch("1:*", { envelope: true, headers: ["from"] })) {
    const from = m
      .headers!.toString("utf8")
      .replace(/^From: /i, "")
      .trim();
    seen.set(from, m.envelope!.from!.map((a) => a.address).join(","));
  }
  await client.logout();
  for (const from of bossToDovecot) expect(seen.get(from)).toBe("boss@corp.test");
});

test("only the colleague's messages are there; the boss's are hidden in every form", async () => {
  await expectInboxShows(proxy.port, mailbox, shown, hidden);
});
