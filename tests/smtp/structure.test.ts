/**
 * has_attachment where a message's parts depend on how it is read (docs/smtp.md "What the message says"), through
 * the proxy against the real Postfix, with Dovecot's reading of the same bytes beside it (its BODYSTRUCTURE, read by
 * the IMAP filter's `hasAttachment`): a rule that denies `has_attachment = true` refuses
 * - a multipart/digest whose part has no Content-Type: a message (RFC 2046 §5.1.5), here one with a PDF attached,
 *   and an attachment itself, as an explicit message/rfc822 is; a digest of plain-text messages too, for the same
 *   reason;
 * - a multipart whose text part holds a line that begins with the boundary but is not a delimiter (`--yjunk`,
 *   `--y junk`, RFC 2046 §5.1.1): Dovecot shows the PDF after it as a part, a strict reader as text; the proxy
 *   cannot know which the recipient's reader does, so has_attachment is unknown and the rule undecided (denied).
 * - a boundary parameter followed by more than white space and comments before the next `;` (`boundary=a b`,
 *   `boundary="b" junk`, an unquoted backslash): Dovecot takes the token or quoted string and shows the PDF, a
 *   reader that kept the rest would see no part at all, so has_attachment is unknown.
 * - a multipart whose Content-Transfer-Encoding is base64 (RFC 2045 §6.4 allows 7bit, 8bit, binary): no part to
 *   Dovecot, the PDF to a reader that decodes the body first, so has_attachment is unknown.
 * - a text part whose Content-Disposition is a type no reader knows (`x-file`): an attachment (RFC 2183 §2.8), to
 *   both readers; one marked `inline` is not.
 * Nothing of them reaches Postfix; a digest whose parts say text/plain, a multipart marked 7bit, and a plain
 * message, sent last over the same session, do.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { AuditRow } from "../../src/audit/index.ts";
import { hasAttachment } from "../../src/imap/classify.ts";
import type { Value } from "../../src/imap/wire/index.ts";
import { dovecotStructures } from "../imap/helpers.ts";
import {
  dataPayload,
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
name = "no files out"
action = "deny"
operations = ["send"]
has_attachment = true

[[rules]]
name = "corp"
action = "allow"
operations = ["send"]
to = "*@corp.test"

[[rules]]
name = "nothing else"
action = "deny"
`;

const run = marker();
const sender = () => upstreams().users[0]!.address;

/** A message to `rcpt-<id>@corp.test` with the given top-level Content-Type and body (LF line ends). */
function message(id: string, contentType: string, body: string): string {
  return (
    `From: <${sender()}>\nTo: <rcpt-${id}@corp.test>\nSubject: ${id}\nMessage-ID: <${id}@structure.test>\n` +
    `MIME-Version: 1.0\nContent-Type: ${contentType}\n\n${body}`
  ).replace(/\r?\n/g, "\r\n");
}

const PDF_PART =
  'Content-Type: application/pdf; name="secret.pdf"\nContent-Disposition: attachment; filename="secret.pdf"\n' +
  "Content-Transfer-Encoding: base64\n\nJVBERi0xLjQK\n";

interface Case {
  readonly name: string;
  readonly id: string;
  readonly text: string;
  /** What the proxy's rows say: refused by the rule, refused as unknown, or delivered. */
  readonly outcome: "rule" | "unknown" | "delivered";
}

const id = (n: string) => `${run}-${n}`;

const CASES: readonly Case[] = [
  {
    name: "a digest whose part has no Content-Type: a message with a PDF attached",
    id: id("digest-pdf"),
    text: message(
      id("digest-pdf"),
      'multipart/digest; boundary="D"',
      '--D\n\nFrom: x@corp.test\nSubject: inner\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="I"\n\n' +
        `--I\nContent-Type: text/plain\n\nhello\n--I\n${PDF_PART}--I--\n\n--D--\n`,
    ),
    outcome: "rule",
  },
  {
    name: "a digest of plain-text messages: each is a message/rfc822 part",
    id: id("digest-text"),
    text: message(
      id("digest-text"),
      'multipart/digest; boundary="D"',
      "--D\n\nFrom: x@corp.test\nSubject: one\n\nhello\n\n--D\n\nFrom: y@corp.test\nSubject: two\n\nworld\n\n--D--\n",
    ),
    outcome: "rule",
  },
  {
    name: "--yjunk before a PDF part",
    id: id("junk"),
    text: message(
      id("junk"),
      'multipart/mixed; boundary="y"',
      `--y\nContent-Type: text/plain\n\nhi\n--yjunk\n${PDF_PART}--y--\n`,
    ),
    outcome: "unknown",
  },
  {
    name: "--y junk before a PDF part",
    id: id("space-junk"),
    text: message(
      id("space-junk"),
      'multipart/mixed; boundary="y"',
      `--y\nContent-Type: text/plain\n\nhi\n--y junk\n${PDF_PART}--y--\n`,
    ),
    outcome: "unknown",
  },
  // The boundary parameter read the way Dovecot reads it (a token stops at a space, a quote or a backslash; a quoted
  // string ends at its quote): anything after it before the next `;` makes the Content-Type malformed, not a
  // longer boundary whose delimiters never come (that reading saw no parts, so no attachment).
  ...[
    ["a space", "boundary=a b", "a"],
    ["a quoted string", 'boundary=a"b"', "a"],
    ["text after a quoted string", 'boundary="b" junk', "b"],
    ["a comment between two tokens", "boundary=x (c) y", "x"],
  ].map(
    ([what, parameter, boundary]): Case => ({
      name: `a boundary parameter with ${what} in it (${parameter})`,
      id: id(`param-${boundary}-${what!.replaceAll(" ", "-")}`),
      text: message(
        id(`param-${boundary}-${what!.replaceAll(" ", "-")}`),
        `multipart/mixed; ${parameter}`,
        `--${boundary}\nContent-Type: text/plain\n\nhello\n--${boundary}\n${PDF_PART}--${boundary}--\n`,
      ),
      outcome: "unknown",
    }),
  ),
  {
    name: "a backslash in an unquoted boundary (boundary=a\\b), delimiters --ab",
    id: id("param-backslash"),
    text: message(
      id("param-backslash"),
      "multipart/mixed; boundary=a\\b",
      `--ab\nContent-Type: text/plain\n\nhello\n--ab\n${PDF_PART}--ab--\n`,
    ),
    outcome: "unknown",
  },
  {
    // Dovecot cuts a boundary at 80 characters and splits on a line that begins with those; RFC 2046 allows 70.
    name: "an 81-character boundary, and a line with its first 80 before a PDF part",
    id: id("param-long"),
    text: message(
      id("param-long"),
      `multipart/mixed; boundary="${"A".repeat(81)}"`,
      `--${"A".repeat(81)}\nContent-Type: text/plain\n\nhello\n--${"A".repeat(80)}B\n${PDF_PART}` +
        `--${"A".repeat(81)}--\n`,
    ),
    outcome: "unknown",
  },
  {
    name: "a boundary with a comment and a trailing ; (allowed), two text parts",
    id: id("param-comment"),
    text: message(
      id("param-comment"),
      'multipart/alternative; boundary="y" (the parts);',
      "--y\nContent-Type: text/plain\n\nhi\n--y\nContent-Type: text/html\n\n<p>hi</p>\n--y--\n",
    ),
    outcome: "delivered",
  },
  {
    // RFC 2045 §6.4 allows a multipart 7bit, 8bit or binary.
    name: "a multipart whose Content-Transfer-Encoding is 7bit, two text parts",
    id: id("cte-7bit"),
    text: message(
      id("cte-7bit"),
      'multipart/alternative; boundary="y"\nContent-Transfer-Encoding: 7bit',
      "--y\nContent-Type: text/plain\n\nhi\n--y\nContent-Type: text/html\n\n<p>hi</p>\n--y--\n",
    ),
    outcome: "delivered",
  },
  // RFC 2183 §2.8: a disposition type the reader does not know is treated as `attachment`.
  {
    name: "a text part whose Content-Disposition is a type no reader knows (x-file), without a file name",
    id: id("dsp-unknown"),
    text: message(
      id("dsp-unknown"),
      'multipart/mixed; boundary="y"',
      "--y\nContent-Type: text/plain\n\nhi\n--y\nContent-Type: text/plain\nContent-Disposition: x-file\n\n" +
        "customer,iban\n--y--\n",
    ),
    outcome: "rule",
  },
  {
    name: "two text parts, the second with Content-Disposition: inline",
    id: id("dsp-inline"),
    text: message(
      id("dsp-inline"),
      'multipart/mixed; boundary="y"',
      "--y\nContent-Type: text/plain\n\nhi\n--y\nContent-Type: text/plain\nContent-Disposition: INLINE\n\n" +
        "more\n--y--\n",
    ),
    outcome: "delivered",
  },
  {
    name: "a digest whose parts say text/plain",
    id: id("digest-typed"),
    text: message(
      id("digest-typed"),
      'multipart/digest; boundary="D"',
      "--D\nContent-Type: text/plain\n\nhello\n--D\nContent-Type: text/plain\n\nworld\n--D--\n",
    ),
    outcome: "delivered",
  },
  {
    name: "a plain message whose text has lines beginning with -- (not the boundary)",
    id: id("plain"),
    text: message(
      id("plain"),
      'multipart/mixed; boundary="y"',
      "--y\nContent-Type: text/plain\n\nhi\n--z\n-- \nsignature\n--y--\n",
    ),
    outcome: "delivered",
  },
];

let proxy: TestProxy;
useTestProxy({ rules: RULES }, (p) => (proxy = p));

let client: RawClient;
/** Dovecot's BODYSTRUCTURE of each case, by id (the same bytes, appended to a fresh mailbox). */
let structures: Map<string, Value>;

beforeAll(async () => {
  client = await loggedIn(proxy.port);
  structures = await dovecotStructures(CASES);
});

afterAll(() => {
  client?.close();
});

/** One transaction with `text`; returns the final reply. */
async function send(c: Case): Promise<string> {
  expect((await client.command(`MAIL FROM:<${sender()}>`)).code).toBe(250);
  // At RCPT time has_attachment is not known yet: the recipient is accepted provisionally.
  expect((await client.command(`RCPT TO:<rcpt-${c.id}@corp.test>`)).code).toBe(250);
  expect((await client.command("DATA")).code).toBe(354);
  client.write(dataPayload(c.text));
  return (await client.reply()).raw;
}

async function rows(c: Case): Promise<{ rcpt: AuditRow | undefined; data: AuditRow | undefined }> {
  const all = await proxy.rows();
  return {
    rcpt: all.findLast((r) => r.command === "RCPT TO" && r.target === `rcpt-${c.id}@corp.test`),
    data: all.find((r) => r.command === "DATA" && r.target === `<${c.id}@structure.test>`),
  };
}

describe("has_attachment where readers could split a message differently", () => {
  for (const c of CASES.filter((c) => c.outcome !== "delivered")) {
    test(`${c.name}: an attachment to Dovecot, refused by the proxy`, async () => {
      // Dovecot's structure has an attachment (the IMAP filter would hide this message from such a rule).
      expect(structures.has(c.id)).toBe(true);
      expect(hasAttachment(structures.get(c.id)!)).toBe(true);
      expect(await send(c)).toStartWith("554 5.7.1");
      const { rcpt, data } = await rows(c);
      if (c.outcome === "rule") {
        expect(rcpt).toMatchObject({ decision: "deny", rule: "no files out" });
        expect(data?.detail).toMatchObject({ hasAttachment: true });
      } else {
        expect(rcpt).toMatchObject({ decision: "deny", rule: null });
        expect(rcpt?.reason).toContain("undecided without");
        expect(data?.detail).toMatchObject({ hasAttachment: null });
      }
    });
  }

  test("a multipart in base64 (RFC 2045 §6.4 forbids it): its parts unread, has_attachment unknown", async () => {
    // Dovecot reads no parts in it (no attachment to the IMAP filter); a reader that decodes the body first shows
    // the PDF. The proxy cannot know which the recipient's reader does.
    const pdf = PDF_PART.replace(/\n/g, "\r\n");
    const inner = `--y\r\nContent-Type: text/plain\r\n\r\nhi\r\n--y\r\n${pdf}--y--\r\n`;
    const c: Case = {
      name: "base64 multipart",
      id: id("cte-base64"),
      text: message(
        id("cte-base64"),
        'multipart/mixed; boundary="y"\nContent-Transfer-Encoding: base64',
        `${Buffer.from(inner).toString("base64")}\n`,
      ),
      outcome: "unknown",
    };
    expect(await send(c)).toStartWith("554 5.7.1");
    const { rcpt, data } = await rows(c);
    expect(rcpt).toMatchObject({ decision: "deny", rule: null });
    expect(rcpt?.reason).toContain("undecided without");
    expect(data?.detail).toMatchObject({ hasAttachment: null });
    expect(sinkCopies(c.id)).toEqual([]);
  });

  test("the controls arrive: no attachment to Dovecot nor to the proxy; nothing refused reached Postfix", async () => {
    for (const c of CASES.filter((c) => c.outcome === "delivered")) {
      expect(hasAttachment(structures.get(c.id)!)).toBe(false);
      expect(await send(c)).toStartWith("250");
      const [copy] = await waitForSink(c.id, 1);
      expect(copy!.recipient).toBe(`rcpt-${c.id}@corp.test`);
      const { rcpt, data } = await rows(c);
      expect(rcpt).toMatchObject({ decision: "allow", rule: "corp" });
      expect(data?.detail).toMatchObject({ hasAttachment: false });
    }
    // The controls went out after every refused message on the same session: none of those is at Postfix.
    for (const c of CASES.filter((c) => c.outcome !== "delivered")) expect(sinkCopies(c.id)).toEqual([]);
  });
});
