/**
 * What classification reads of a message, against Dovecot (src/imap/limits.ts): the From, To, Cc, Bcc and Subject
 * fields up to CLASSIFY_HEADER_OCTETS. Anyone who can mail the account chooses them, and their parsing runs on the
 * proxy's one thread in every session that classifies the message: a section of exactly that size is read, one
 * octet more is unreadable, and a message whose visibility depends on it stays hidden. Sections over
 * MEMO_KEY_OCTETS are not kept in the per-session memo.
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import type { ImapFlow } from "imapflow";
import { CLASSIFY_HEADER_OCTETS, MEMO_KEY_OCTETS } from "../../src/imap/limits.ts";
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
