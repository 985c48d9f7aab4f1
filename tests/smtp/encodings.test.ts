/**
 * A send rule on the subject holds for every way of writing it (docs/smtp.md "What the message says"), through the
 * proxy against the real Postfix: a rule that denies subject "*secret*" refuses each subject of the encoding table
 * (tests/mail/encodings.ts) a mail client would show as "secret", by that rule, and refuses the ones the reader
 * cannot be sure of as unknown (undecided, denied). Nothing of them reaches Postfix; an allowed control message
 * sent last over the same session does.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { AuditRow } from "../../src/audit/index.ts";
import { CONTROL_SHOWN, CONTROL_SUBJECT, DECODED, type EncodingCase, subjectLine, UNKNOWN } from "../mail/encodings.ts";
import {
  loggedIn,
  marker,
  type RawClient,
  sinkCopies,
  type TestProxy,
  upstreams,
  useTestProxy,
  waitForSink,
} from "./helpers.ts";

const RULES = `
[[rules]]
name = "no secrets"
action = "deny"
operations = ["send"]
subject = "*secret*"

[[rules]]
name = "corp"
action = "allow"
operations = ["send"]
to = "*@corp.test"

[[rules]]
name = "nothing else"
action = "deny"
`;

let proxy: TestProxy;
useTestProxy({ rules: RULES }, (p) => (proxy = p));

let client: RawClient;
const run = marker();
/** Every marker of a message that must not arrive. */
const refusedMarkers: string[] = [];

beforeAll(async () => {
  client = await loggedIn(proxy.port);
});

afterAll(() => {
  client?.close();
});

/** One transaction to `rcpt-<id>@corp.test` with `subject` (octets, ending in CRLF); returns the final reply. */
async function send(id: string, subjectLines: Buffer, extra = ""): Promise<string> {
  const sender = upstreams().users[0]!.address;
  expect((await client.command(`MAIL FROM:<${sender}>`)).code).toBe(250);
  // At RCPT time the subject is not known yet: the recipient is accepted provisionally.
  expect((await client.command(`RCPT TO:<rcpt-${id}@corp.test>`)).code).toBe(250);
  expect((await client.command("DATA")).code).toBe(354);
  client.write(
    Buffer.concat([
      Buffer.from(`From: <${sender}>\r\nTo: <rcpt-${id}@corp.test>\r\nMessage-ID: <${id}@encodings.test>\r\n${extra}`),
      subjectLines,
      Buffer.from(`\r\nbody of ${id}\r\n.\r\n`),
    ]),
  );
  return (await client.reply()).raw;
}

async function finalRow(id: string): Promise<AuditRow> {
  const rows = await proxy.rows();
  const row = rows.findLast((r) => r.command === "RCPT TO" && r.target === `rcpt-${id}@corp.test`);
  if (row === undefined) throw new Error(`no RCPT TO row for ${id}`);
  return row;
}

async function dataRow(id: string): Promise<AuditRow | undefined> {
  return (await proxy.rows()).find((r) => r.command === "DATA" && r.target === `<${id}@encodings.test>`);
}

const ids = (cases: readonly EncodingCase[], prefix: string) =>
  cases.map((c, i) => [c, `${run}-${prefix}${i}`] as const);

describe("a subject rule against every encoding of the subject", () => {
  for (const [c, id] of ids(DECODED, "d")) {
    test(`${c.name}: refused by the rule`, async () => {
      refusedMarkers.push(id);
      expect(await send(id, subjectLine(c))).toStartWith("554 5.7.1");
      expect(await finalRow(id)).toMatchObject({ decision: "deny", rule: "no secrets" });
      expect((await dataRow(id))?.detail).toMatchObject({ subjectKnown: true });
    });
  }

  for (const [c, id] of ids(UNKNOWN, "u")) {
    // A NUL is refused before any rule, wherever it is in the message (docs/smtp.md "What the message says").
    if (c.raw.includes("\0")) {
      test(`${c.name}: refused before the rules, as any message with a NUL`, async () => {
        refusedMarkers.push(id);
        expect(await send(id, subjectLine(c))).toStartWith("554 5.6.0");
        expect(await dataRow(id)).toMatchObject({ decision: "deny", reason: "NUL octet in the message" });
      });
      continue;
    }
    test(`${c.name}: refused as unknown`, async () => {
      refusedMarkers.push(id);
      expect(await send(id, subjectLine(c))).toStartWith("554 5.7.1");
      const row = await finalRow(id);
      expect(row).toMatchObject({ decision: "deny", rule: null });
      expect(row.reason).toContain("undecided without subject");
      expect((await dataRow(id))?.detail).toMatchObject({ subjectKnown: false });
    });
  }

  test("two Subject fields, one of them harmless: unknown, refused", async () => {
    const id = `${run}-twice`;
    refusedMarkers.push(id);
    const lines = Buffer.from("Subject: hello\r\nSubject: =?utf-8?B?c2VjcmV0?=\r\n");
    expect(await send(id, lines)).toStartWith("554 5.7.1");
    expect((await finalRow(id)).reason).toContain("undecided without subject");
  });

  test("the control arrives: encoded words in a display name and in a field no rule reads change nothing", async () => {
    const id = `${run}-control`;
    // Reply-To names the login: the only addresses it may name are the session's identities (docs/smtp.md).
    const login = upstreams().users[0]!.address;
    const extra = `Reply-To: =?utf-8?Q?secret?= <${login}>\r\nX-Note: =?x-unknown?Q?secret?=\r\n`;
    const reply = await send(id, Buffer.from(`Subject: ${CONTROL_SUBJECT}\r\n`), extra);
    expect(reply).toStartWith("250");
    const [copy] = await waitForSink(id, 1);
    expect(copy!.recipient).toBe(`rcpt-${id}@corp.test`);
    expect(copy!.text).toContain(CONTROL_SUBJECT);
    expect(await finalRow(id)).toMatchObject({ decision: "allow", rule: "corp" });
    expect(CONTROL_SHOWN.toLowerCase()).not.toContain("secret");
    // The control went out after every refused message on the same session: none of them is at Postfix.
    expect(refusedMarkers.length).toBe(DECODED.length + UNKNOWN.length + 1);
    for (const m of refusedMarkers) expect(sinkCopies(m)).toEqual([]);
  });
});
