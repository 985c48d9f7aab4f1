/**
 * Header lines longer than RFC 5322 §2.1.1 allows (998 octets before the CRLF; RFC 5321 §4.5.3.1.6: 1000 with it).
 * Postfix's LMTP and SMTP clients break such a line with CRLF and a space (`smtp_line_length_limit`): a To that
 * names a recipient across octet 998 reaches that recipient as `bo\r\n b@…`, a To that names no one there, so the
 * copy the rules classed as `to` arrives as a blind one (seen against the test Postfix and Dovecot). A server that
 * breaks with a bare CRLF would make the rest of the line a field of its own. The message is refused instead
 * (src/smtp/limits.ts MAX_HEADER_LINE_OCTETS, docs/smtp.md "What the message says"); body lines are not limited.
 */

import { describe, expect, test } from "bun:test";
import { MAX_HEADER_LINE_OCTETS } from "../../src/smtp/limits.ts";
import { marker, nothingReachedUpstream, sendHead, type TestProxy, useTestProxy, waitForSink } from "./helpers.ts";

const RULES = `
[[rules]]
name = "no blind copies"
action = "deny"
operations = ["send"]
bcc = "*"

[[rules]]
name = "no files"
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

let p: TestProxy;
useTestProxy({ rules: RULES }, (proxy) => (p = proxy));

const send = (recipients: readonly string[], head: string, body?: string) => sendHead(p.port, recipients, head, body);

/** A To line of `octets` octets before its CRLF whose last address is `last`, padded with a comment before it. */
function toLine(first: string, last: string, octets: number): string {
  const start = `To: ${first}, (`;
  const end = `) ${last}`;
  const line = `${start}${"x".repeat(octets - start.length - end.length)}${end}`;
  expect(line.length).toBe(octets);
  return line;
}

describe("a header line past 998 octets", () => {
  test("a To line of 998 octets is sent whole; of 999, naming a recipient across the cut, refused", async () => {
    const m = marker();
    const [a, b] = [`a-${m}@corp.test`, `b-${m}@corp.test`];
    const head = (octets: number) =>
      `From: alice@mailgator.test\r\n${toLine(a, b, octets)}\r\nSubject: line ${m} ${octets}\r\n`;
    expect(await send([a, b], head(MAX_HEADER_LINE_OCTETS))).toStartWith("250");
    const copies = await waitForSink(`line ${m} ${MAX_HEADER_LINE_OCTETS}`, 2);
    for (const copy of copies) expect(copy.text).toContain(` ${b}\n`);

    const refused = await send([a, b], head(MAX_HEADER_LINE_OCTETS + 1));
    expect(refused).toStartWith("554 5.6.0");
    expect(refused).toContain(`to (${MAX_HEADER_LINE_OCTETS + 1} octets, at most ${MAX_HEADER_LINE_OCTETS})`);
    expect(refused).toContain("nothing was sent");
    await nothingReachedUpstream(p.port, `${m} ${MAX_HEADER_LINE_OCTETS + 1}`);
    const row = (await p.rows()).find((r) => r.command === "DATA" && r.reason.includes("header line too long"));
    expect(row?.decision).toBe("deny");
    expect(row?.reason).toContain(`to (${MAX_HEADER_LINE_OCTETS + 1} octets`);
  });

  test("a Subject line with a Reply-To after octet 998, and a long folded line of To: refused", async () => {
    const m = marker();
    const a = `a-${m}@corp.test`;
    const subject = `Subject: s ${m} ${"y".repeat(1000)}Reply-To: evil-${m}@evil.test`;
    expect(await send([a], `From: alice@mailgator.test\r\nTo: ${a}\r\n${subject}\r\n`)).toStartWith("554 5.6.0");
    // The long line is a fold of To: the field it continues is named.
    const continuation = ` ${"(x)".repeat(400)} b-${m}@corp.test`;
    const folded = `To: ${a},\r\n${continuation}\r\nSubject: folded ${m}\r\n`;
    const refused = await send([a, `b-${m}@corp.test`], `From: alice@mailgator.test\r\n${folded}`);
    expect(refused).toStartWith("554 5.6.0");
    expect(refused).toContain(`to (${continuation.length} octets`);
    await nothingReachedUpstream(p.port, m);
  });

  test("in a MIME part's header: has_attachment unknown, refused by the rule that tests it", async () => {
    const m = marker();
    const a = `a-${m}@corp.test`;
    const head = (octets: number) =>
      `From: alice@mailgator.test\r\nTo: ${a}\r\nSubject: part ${m} ${octets}\r\n` +
      `MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n`;
    const part = (octets: number) => {
      const start = "Content-Type: text/plain; x-pad=";
      return `${start}${"p".repeat(octets - start.length)}`;
    };
    const body = (octets: number) => `--b\r\n${part(octets)}\r\n\r\ntext\r\n--b--\r\n`;
    expect(await send([a], head(MAX_HEADER_LINE_OCTETS), body(MAX_HEADER_LINE_OCTETS))).toStartWith("250");
    await waitForSink(`part ${m} ${MAX_HEADER_LINE_OCTETS}`, 1);
    const refused = await send([a], head(MAX_HEADER_LINE_OCTETS + 1), body(MAX_HEADER_LINE_OCTETS + 1));
    expect(refused).toStartWith("554 5.7.1");
    await nothingReachedUpstream(p.port, `${m} ${MAX_HEADER_LINE_OCTETS + 1}`);
  });

  test("body lines are not limited: a 5,000-octet line of text is sent", async () => {
    const m = marker();
    const a = `a-${m}@corp.test`;
    const line = "z".repeat(5000);
    expect(
      await send([a], `From: alice@mailgator.test\r\nTo: ${a}\r\nSubject: body ${m}\r\n`, `${line}\r\n`),
    ).toStartWith("250");
    const [copy] = await waitForSink(`body ${m}`, 1);
    expect(copy!.text.replace(/\r?\n/g, "")).toContain(line);
  });
});
