/**
 * What classification reads of a message, against Dovecot (src/imap/limits.ts): the From, To, Cc, Bcc and Subject
 * fields up to CLASSIFY_HEADER_OCTETS. Anyone who can mail the account chooses them, and their parsing runs on the
 * proxy's one thread in every session that classifies the message: a section of exactly that size is read, one
 * octet more is unreadable, and a message whose visibility depends on it stays hidden. Sections over
 * MEMO_KEY_OCTETS are not kept in the per-session memo. A BODYSTRUCTURE past the wire layer's limits (MAX_LIST_DEPTH,
 * MAX_LITERALS_PER_RESPONSE) is unreadable too: its message stays hidden, and the session goes on.
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import type { ImapFlow } from "imapflow";
import {
  CLASSIFY_HEADER_OCTETS,
  MAX_LIST_DEPTH,
  MAX_LITERALS_PER_RESPONSE,
  MAX_RESPONSE_LINE,
  MEMO_KEY_OCTETS,
} from "../../src/imap/limits.ts";
import { connectImap, createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { SEED_RULES } from "./filtered-fixture.ts";
import { RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

let mailbox: TestMailbox;
let human: ImapFlow;
let proxy: TestProxy;

/**
 * A message from notifications@ (which SEED_RULES shows) whose From field, with its CRLF, makes the section
 * `BODY[HEADER.FIELDS (FROM)]` exactly `section` octets (the field, then the empty line that ends the section): a
 * comment folded over lines of 900 octets pads it.
 */
function fromOfSize(section: number, subject: string): string {
  const start = "From: notifications@mailgator.test (";
  const end = ")\r\n";
  let pad = section - 2 - start.length - end.length;
  const lines: string[] = [];
  while (pad > 0) {
    // Each continuation line costs its CRLF and leading space besides its text.
    const text = Math.min(900, pad - 3 > 0 ? pad - 3 : pad);
    if (lines.length === 0) {
      lines.push("x".repeat(Math.min(900, pad)));
      pad -= lines[0]!.length;
      continue;
    }
    lines.push(`\r\n ${"x".repeat(text)}`);
    pad -= text + 3;
  }
  const from = `${start}${lines.join("")}${end}`;
  expect(from.length + 2).toBe(section);
  const rest = `To: agent@mailgator.test\r\nSubject: ${subject}\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\n`;
  return `${from}${rest}\r\nbody\r\n`;
}

beforeAll(async () => {
  mailbox = await createMailbox();
  human = await connectImap(mailbox);
  for (const [size, subject] of [
    [200, "short"],
    [MEMO_KEY_OCTETS + 1, "longer than a memo key"],
    [CLASSIFY_HEADER_OCTETS, "at the limit"],
    [CLASSIFY_HEADER_OCTETS + 1, "one octet past"],
    [1024 * 1024, "a megabyte"],
  ] as const)
    await human.append("INBOX", fromOfSize(size, subject));
  proxy = await startTestProxy({ rules: SEED_RULES });
});

afterAll(async () => {
  await human?.logout();
  await proxy?.close();
});

test(`From fields to CLASSIFY_HEADER_OCTETS (${CLASSIFY_HEADER_OCTETS}) are read; longer hide it`, async () => {
  // Twice: the second SELECT decides from the classification cache what the first decided from the headers.
  for (let round = 0; round < 2; round++) {
    const agent = await RawImap.login(proxy.port, mailbox);
    try {
      expect(statusOf(await agent.command("s", "SELECT INBOX"), "s")).toStartWith("s OK");
      const listed = await agent.command("f", "FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
      expect(statusOf(listed, "f")).toStartWith("f OK");
      const subjects = [...listed.matchAll(/Subject: ([^\r\n]*)/g)].map((m) => m[1]);
      expect(subjects).toEqual(["short", "longer than a memo key", "at the limit"]);
    } finally {
      agent.close();
    }
  }
});

/** A message whose MIME parts nest `levels` deep (multiparts of one part each); its BODYSTRUCTURE nests deeper. */
function nested(from: string, levels: number): Buffer {
  let body = "Content-Type: text/plain\r\n\r\ninnermost\r\n";
  for (let i = levels; i > 0; i--)
    body = `Content-Type: multipart/mixed; boundary="b${i}"\r\n\r\n--b${i}\r\n${body}--b${i}--\r\n`;
  return Buffer.from(`From: ${from}\r\nTo: agent@mailgator.test\r\nSubject: nested\r\nMIME-Version: 1.0\r\n${body}`);
}

/** A message of `parts` parts, each named in raw UTF-8: Dovecot writes each name in its BODYSTRUCTURE as a literal. */
function named(from: string, parts: number): Buffer {
  let body = 'Content-Type: multipart/mixed; boundary="p"\r\n\r\n';
  for (let i = 0; i < parts; i++) body += `--p\r\nContent-Type: text/plain; name="\u00e9${i}"\r\n\r\np\r\n`;
  return Buffer.from(
    `From: ${from}\r\nTo: agent@mailgator.test\r\nSubject: named\r\nMIME-Version: 1.0\r\n${body}--p--\r\n`,
  );
}

/** Octets of each part name of `longNames`: Dovecot writes a name of 7-bit octets quoted, on the one line. */
const NAME_OCTETS = 1024 * 1024;

/** A message of `parts` parts, each named with NAME_OCTETS octets: its BODYSTRUCTURE is one line of all the names. */
function longNames(from: string, parts: number): Buffer {
  const name = "n".repeat(NAME_OCTETS);
  let body = 'Content-Type: multipart/mixed; boundary="l"\r\n\r\n';
  for (let i = 0; i < parts; i++) body += `--l\r\nContent-Type: text/plain; name="${name}"\r\n\r\np\r\n`;
  return Buffer.from(
    `From: ${from}\r\nTo: agent@mailgator.test\r\nSubject: long\r\nMIME-Version: 1.0\r\n${body}--l--\r\n`,
  );
}

// has_attachment makes the classification read every message's BODYSTRUCTURE.
const STRUCTURE_RULES = `[[rules]]
name = "plain notifications"
folders = ["INBOX"]
from = "notifications@*"
has_attachment = false
action = "allow"
operations = ["read"]

[[rules]]
name = "in full"
folders = ["Full"]
action = "allow"

[[rules]]
name = "nothing else"
action = "deny"
`;

for (const [what, message] of [
  [`nested past MAX_LIST_DEPTH (${MAX_LIST_DEPTH})`, (from: string) => nested(from, MAX_LIST_DEPTH)],
  [
    `of more than MAX_LITERALS_PER_RESPONSE (${MAX_LITERALS_PER_RESPONSE}) literals`,
    (from: string) => named(from, MAX_LITERALS_PER_RESPONSE + 1),
  ],
  [
    `of a line longer than MAX_RESPONSE_LINE (${MAX_RESPONSE_LINE})`,
    (from: string) => longNames(from, Math.floor(MAX_RESPONSE_LINE / NAME_OCTETS) + 1),
  ],
] as const) {
  test(`a BODYSTRUCTURE ${what}: a hidden arrival says nothing; a FETCH gets NO [LIMIT]`, async () => {
    const own = await createMailbox();
    const other = await connectImap(own);
    const structureProxy = await startTestProxy({ rules: STRUCTURE_RULES });
    try {
      const plain = "From: notifications@mailgator.test\r\nSubject: v\r\n\r\nv\r\n";
      const visible = (await other.append("INBOX", plain)) as { uid: number };
      const agent = await RawImap.login(structureProxy.port, own);
      expect(await agent.command("s", "EXAMINE INBOX")).toContain("* 1 EXISTS\r\n");
      // Hidden by its sender alone; before, its BODYSTRUCTURE failed the upstream session and the agent's with it.
      await other.append("INBOX", message("boss@corp.test"));
      expect(await agent.command("n", "NOOP")).toBe("n OK NOOP completed\r\n");
      expect(await agent.command("f", "UID FETCH 1:* (UID)")).toBe(
        `* 1 FETCH (UID ${visible.uid})\r\nf OK Fetch completed\r\n`,
      );
      agent.close();
      const again = await RawImap.login(structureProxy.port, own);
      expect(await again.command("s", "EXAMINE INBOX")).toContain("* 1 EXISTS\r\n");
      // A folder the agent reads in full: the message's structure cannot be read, and the session goes on.
      await other.mailboxCreate("Full");
      await other.append("Full", message("notifications@mailgator.test"));
      expect(statusOf(await again.command("d", "EXAMINE Full"), "d")).toStartWith("d OK");
      expect(statusOf(await again.command("b", "FETCH 1 (BODYSTRUCTURE)"), "b")).toBe(
        "b NO [LIMIT] A message's structure is too large to be read; its data was left out",
      );
      expect(await again.command("u", "FETCH 1 (UID)")).toBe("* 1 FETCH (UID 1)\r\nu OK Fetch completed\r\n");
      again.close();
    } finally {
      await other.logout();
      await structureProxy.close();
    }
  });
}
