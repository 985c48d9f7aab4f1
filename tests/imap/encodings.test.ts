/**
 * A read rule on the subject holds for every way of writing it (docs/filtering.md "Decoding headers"), through the
 * proxy against the real Dovecot: with a rule that hides subject "*secret*", each message of the encoding table
 * (tests/mail/encodings.ts) appended to INBOX, those a client shows as "secret" and those the reader cannot be
 * sure of, is hidden from the agent; only the plain control messages are there, to UID FETCH 1:*, SEARCH and
 * imapflow alike. Dovecot itself holds every message (the expected sets come from what was appended).
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connectImap, createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { CONTROL_SUBJECT, DECODED, subjectLine, UNKNOWN } from "../mail/encodings.ts";
import { fetchedUids } from "./filtered-fixture.ts";
import { proxyClient, RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

const RULES = `
[[rules]]
name = "hide secrets"
action = "deny"
folders = ["INBOX"]
operations = ["read"]
subject = "*secret*"

[[rules]]
name = "read the rest"
action = "allow"
folders = ["INBOX"]
operations = ["read"]

[[rules]]
name = "nothing else"
action = "deny"
`;

let mailbox: TestMailbox;
let proxy: TestProxy;
const hidden: { uid: number; messageId: string; name: string }[] = [];
const controls: { uid: number; messageId: string }[] = [];

function message(id: string, subjectLines: Buffer): Buffer {
  return Buffer.concat([
    Buffer.from(`From: <a@corp.test>\r\nTo: <me@corp.test>\r\nMessage-ID: <${id}@encodings.test>\r\n`),
    Buffer.from("Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"),
    subjectLines,
    Buffer.from(`\r\nbody of ${id}\r\n`),
  ]);
}

beforeAll(async () => {
  mailbox = await createMailbox();
  const client = await connectImap(mailbox);
  const append = async (id: string, subjectLines: Buffer): Promise<number> => {
    const r = await client.append("INBOX", message(id, subjectLines), []);
    return (r as { uid: number }).uid;
  };
  const control = async (id: string) => {
    // A display name and a field no rule reads may say anything.
    const lines = Buffer.from(`Subject: ${CONTROL_SUBJECT}\r\nX-Note: =?x-unknown?Q?secret?=\r\n`);
    controls.push({ uid: await append(id, lines), messageId: `<${id}@encodings.test>` });
  };
  await control("control-first");
  const cases = [...DECODED, ...UNKNOWN].filter((c) => !c.smtpOnly);
  for (const [i, c] of cases.entries()) {
    const id = `case-${i}`;
    hidden.push({ uid: await append(id, subjectLine(c)), messageId: `<${id}@encodings.test>`, name: c.name });
  }
  const twice = Buffer.from("Subject: hello\r\nSubject: =?utf-8?B?c2VjcmV0?=\r\n");
  hidden.push({ uid: await append("twice", twice), messageId: "<twice@encodings.test>", name: "two Subject fields" });
  await control("control-last");
  // Dovecot holds them all.
  await client.mailboxOpen("INBOX", { readOnly: true });
  const all = await client.search({ all: true }, { uid: true });
  expect(all).toEqual([...controls, ...hidden].map((m) => m.uid).sort((a, b) => a - b));
  await client.logout();
  proxy = await startTestProxy({ rules: RULES });
});

afterAll(async () => {
  await proxy?.close();
});

describe("a subject rule hides every encoding of the subject", () => {
  test("UID FETCH 1:*, SEARCH and UID SEARCH show only the controls; no hidden Message-ID leaks", async () => {
    const raw = await RawImap.login(proxy.port, mailbox);
    const select = await raw.command("s", "EXAMINE INBOX");
    expect(select).toContain(`* ${controls.length} EXISTS`);
    const fetch = await raw.command("f", "UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID SUBJECT)])");
    expect(statusOf(fetch, "f")).toStartWith("f OK");
    expect(fetchedUids(fetch)).toEqual(controls.map((c, i) => [i + 1, c.uid]));
    for (const c of controls) expect(fetch).toContain(c.messageId);
    const search = await raw.command("a", "SEARCH ALL");
    expect(search).toStartWith(`* SEARCH ${controls.map((_, i) => i + 1).join(" ")}\r\n`);
    const uidSearch = await raw.command("b", "UID SEARCH ALL");
    expect(uidSearch).toStartWith(`* SEARCH ${controls.map((c) => c.uid).join(" ")}\r\n`);
    // Dovecot's own SEARCH would find the hidden ones by their subject; through the proxy it finds none.
    expect(await raw.command("c", "UID SEARCH SUBJECT secret")).toStartWith("* SEARCH\r\n");
    const everything = select + fetch + search + uidSearch;
    for (const h of hidden) {
      expect(everything.includes(h.messageId)).toBe(false);
      expect(everything).not.toMatch(new RegExp(`\\bUID ${h.uid}\\b`));
    }
    raw.close();
  });

  test("imapflow sees the two controls and nothing else", async () => {
    const client = await proxyClient(proxy.port, mailbox.user, mailbox.password);
    try {
      const box = await client.mailboxOpen("INBOX", { readOnly: true });
      expect(box.exists).toBe(controls.length);
      const seen: number[] = [];
      for await (const m of client.fetch("1:*", { uid: true, envelope: true })) {
        seen.push(m.uid);
        expect(m.envelope?.subject).toBe("Quarterly plan – café");
      }
      expect(seen).toEqual(controls.map((c) => c.uid));
    } finally {
      await client.logout();
    }
  });
});
