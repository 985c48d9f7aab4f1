/**
 * THREAD against what a sender can mail, end to end against Dovecot (src/imap/limits.ts): References chains crafted
 * so that linking them walks the whole chain again and again get `NO [LIMIT]` after MAX_THREAD_LINK_STEPS steps,
 * with a deny row, and the session goes on; ORDEREDSUBJECT over the same messages answers.
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import type { ImapFlow } from "imapflow";
import { MAX_THREAD_LINK_STEPS } from "../../src/imap/limits.ts";
import { connectImap, createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { auditCursor, RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

/** Messages: half extend one chain of placeholders by 31 each, half walk it 15 times (some 0.3 s per 100M steps). */
const MESSAGES = 2400;

let mailbox: TestMailbox;
let human: ImapFlow;
let proxy: TestProxy;

beforeAll(async () => {
  mailbox = await createMailbox();
  human = await connectImap(mailbox);
  const half = MESSAGES / 2;
  const message = (id: string, references: string) =>
    `From: a@x.test\r\nSubject: s\r\nMessage-ID: ${id}\r\nReferences: ${references}\r\n\r\nbody\r\n`;
  for (let k = 0; k < half; k++) {
    const refs = Array.from({ length: 32 }, (_, j) => `<a${31 * k + j}@x.test>`).join("\r\n ");
    await human.append("INBOX", message(`<c${k}@x.test>`, refs));
  }
  const pairs = Array.from({ length: 15 }, () => `<a${31 * half}@x.test> <a0@x.test>`).join("\r\n ");
  for (let k = 0; k < half; k++) await human.append("INBOX", message(`<t${k}@x.test>`, `${pairs}\r\n <j${k}@x.test>`));
  // A Subject of 500 Q-encoded CJK characters (some 11 KB as written, 500 characters decoded), and its reply.
  await human.mailboxCreate("Subjects");
  const encoded = Array.from({ length: 500 }, () => "=?UTF-8?Q?=E4=B8=AD?=").join("\r\n ");
  await human.append("Subjects", `From: a@x.test\r\nSubject: ${encoded}\r\nMessage-ID: <o@x.test>\r\n\r\nbody\r\n`);
  await human.append("Subjects", `From: b@x.test\r\nSubject: Re: ${encoded}\r\nMessage-ID: <r@x.test>\r\n\r\nbody\r\n`);
  proxy = await startTestProxy({});
}, 120_000);

afterAll(async () => {
  await human?.logout();
  await proxy?.close();
});

test(`References past MAX_THREAD_LINK_STEPS (${MAX_THREAD_LINK_STEPS}): NO [LIMIT]; the session goes on`, async () => {
  const audit = auditCursor(proxy);
  await audit();
  const agent = await RawImap.login(proxy.port, mailbox);
  try {
    expect(statusOf(await agent.command("s", "SELECT INBOX"), "s")).toStartWith("s OK");
    const refused = await agent.command("t", "UID THREAD REFERENCES UTF-8 ALL");
    expect(statusOf(refused, "t")).toBe("t NO [LIMIT] Too much to thread; narrow the search");
    expect(refused).not.toContain("* THREAD");
    const rows = (await audit()).filter((r) => r.command === "UID THREAD");
    expect(rows.map((r) => r.decision)).toEqual(["deny"]);
    expect(rows[0]!.reason).toContain("MAX_THREAD_LINK_STEPS");
    // The same messages by subject only, and a narrower search by references, answer.
    const bySubject = await agent.command("o", "UID THREAD ORDEREDSUBJECT UTF-8 ALL");
    expect(statusOf(bySubject, "o")).toBe("o OK Thread completed");
    const narrow = await agent.command("n", "UID THREAD REFERENCES UTF-8 UID 1:100");
    expect(statusOf(narrow, "n")).toBe("n OK Thread completed");
  } finally {
    agent.close();
  }
});

test("a long encoded Subject and its reply are one subject", async () => {
  const agent = await RawImap.login(proxy.port, mailbox);
  try {
    expect(statusOf(await agent.command("s", "SELECT Subjects"), "s")).toStartWith("s OK");
    for (const algorithm of ["ORDEREDSUBJECT", "REFERENCES"]) {
      const threads = await agent.command("t", `THREAD ${algorithm} UTF-8 ALL`);
      expect(threads).toStartWith("* THREAD (1 2)\r\n");
    }
  } finally {
    agent.close();
  }
});
