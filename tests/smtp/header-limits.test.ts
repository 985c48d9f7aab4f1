/**
 * What the rules read must be what Postfix passes on (src/smtp/inspect.ts, docs/smtp.md "What the message says"):
 * a NUL octet, at which Postfix cuts a header line, and a header field longer than Postfix keeps, would each let an
 * address the rules saw in To or Cc vanish from the delivered header, a blind copy the rules never judged as one.
 * Against real Postfix, with a rule that denies blind copies.
 */

import { describe, expect, test } from "bun:test";
import { MAX_ADDRESS_FIELD_OCTETS, MAX_HEADER_FIELD_OCTETS } from "../../src/smtp/limits.ts";
import { BLIND_COPY_RULES } from "./blind-copy-fixture.ts";
import { marker, nothingReachedUpstream, sendHead, type TestProxy, useTestProxy, waitForSink } from "./helpers.ts";

let p: TestProxy;
useTestProxy({ rules: BLIND_COPY_RULES }, (proxy) => (p = proxy));

const send = (recipients: readonly string[], head: string, body?: string) => sendHead(p.port, recipients, head, body);

/**
 * A header field of exactly `octets` octets (lines and CRLFs): `name: first`, then folded lines of comments, which
 * add nothing a reader shows, up to the size.
 */
function field(name: string, first: string, octets: number): string {
  const lines = [`${name}: ${first}`];
  let total = lines[0]!.length + 2;
  while (total < octets) {
    const room = octets - total - 2; // what the next line may hold besides its CRLF
    const pad = Math.min(72, room - 3); // ` (` + pad + `)`
    if (pad < 0) {
      // Too little room for a comment line: lengthen the last comment instead.
      const last = lines.pop()!;
      lines.push(`${last.slice(0, -1)}${"x".repeat(octets - total)})`);
      total = octets;
      break;
    }
    lines.push(` (${"x".repeat(pad)})`);
    total += pad + 5;
  }
  const text = `${lines.join("\r\n")}\r\n`;
  expect(text.length).toBe(octets);
  return text;
}

describe("a NUL octet", () => {
  test("in To, where Postfix would cut the field before the second address: refused, nothing sent", async () => {
    const m = marker();
    const [a, b] = [`a-${m}@corp.test`, `b-${m}@corp.test`];
    const head = `From: alice@mailgator.test\r\nTo: ${a}, (\0) ${b}\r\nSubject: nul ${m}\r\n`;
    expect(await send([a, b], head)).toStartWith("554 5.6.0");
    await nothingReachedUpstream(p.port, m);
    const row = (await p.rows()).find((r) => r.command === "DATA" && r.reason.includes("NUL"));
    expect(row?.decision).toBe("deny");
  });

  test("in the body too (no message may hold one without BINARYMIME, which is not offered)", async () => {
    const m = marker();
    const a = `a-${m}@corp.test`;
    expect(await send([a], `From: alice@mailgator.test\r\nTo: ${a}\r\nSubject: nul ${m}\r\n`, "x\0y\r\n")).toStartWith(
      "554 5.6.0",
    );
    await nothingReachedUpstream(p.port, m);
  });
});

describe("header fields longer than Postfix keeps", () => {
  test(`To of ${MAX_ADDRESS_FIELD_OCTETS} octets is sent whole; one octet more is refused`, async () => {
    const m = marker();
    const [a, b] = [`a-${m}@corp.test`, `b-${m}@corp.test`];
    const head = (octets: number) =>
      `From: alice@mailgator.test\r\n${field("To", `${a}, ${b}`, octets)}Subject: long to ${m} ${octets}\r\n`;
    expect(await send([a, b], head(MAX_ADDRESS_FIELD_OCTETS))).toStartWith("250");
    const copies = await waitForSink(`long to ${m} ${MAX_ADDRESS_FIELD_OCTETS}`, 2);
    for (const copy of copies) expect(copy.text).toContain(b);
    const refused = await send([a, b], head(MAX_ADDRESS_FIELD_OCTETS + 1));
    expect(refused).toStartWith("552 5.3.4");
    expect(refused).toContain(`to (${MAX_ADDRESS_FIELD_OCTETS + 1} octets, at most ${MAX_ADDRESS_FIELD_OCTETS})`);
    await waitForSink(m, 2);
    await nothingReachedUpstream(p.port, `${m} ${MAX_ADDRESS_FIELD_OCTETS + 1}`);
  });

  test(`List-Unsubscribe (RFC 2369) is an address field: ${MAX_ADDRESS_FIELD_OCTETS} octets`, async () => {
    const m = marker();
    const a = `a-${m}@corp.test`;
    // URLs filling the field, CRLF included, folded after each comma: a line is at most 998 octets (RFC 5322 §2.1.1,
    // tests/smtp/header-line-length.test.ts). A URL is its 28 octets of brackets and prefix and `n` more.
    const list = (octets: number) => {
      const url = (n: number) => `<https://lists.corp.test/u/${"u".repeat(n)}>`;
      let text = "List-Unsubscribe: ";
      while (octets - text.length - 2 > 964) text += `${url(900 - 28)},\r\n `;
      text += `${url(octets - text.length - 2 - 28)}\r\n`;
      expect(text.length).toBe(octets);
      return text;
    };
    const head = (octets: number) =>
      `From: alice@mailgator.test\r\nTo: ${a}\r\nSubject: list ${m} ${octets}\r\n${list(octets)}`;
    expect(await send([a], head(MAX_ADDRESS_FIELD_OCTETS))).toStartWith("250");
    await waitForSink(`list ${m} ${MAX_ADDRESS_FIELD_OCTETS}`, 1);
    const refused = await send([a], head(MAX_ADDRESS_FIELD_OCTETS + 1));
    expect(refused).toStartWith("552 5.3.4");
    expect(refused).toContain(
      `list-unsubscribe (${MAX_ADDRESS_FIELD_OCTETS + 1} octets, at most ${MAX_ADDRESS_FIELD_OCTETS})`,
    );
    await nothingReachedUpstream(p.port, `${m} ${MAX_ADDRESS_FIELD_OCTETS + 1}`);
  });

  test("a To folded over 60,000 lines, short once unfolded but long as written: refused", async () => {
    const m = marker();
    const [a, b] = [`a-${m}@corp.test`, `b-${m}@corp.test`];
    const head = `From: alice@mailgator.test\r\nTo: ${a},${"\r\n ".repeat(60_000)} ${b}\r\nSubject: folded ${m}\r\n`;
    expect(await send([a, b], head)).toStartWith("552 5.3.4");
    await nothingReachedUpstream(p.port, m);
  });

  test(`another field (Subject) of ${MAX_HEADER_FIELD_OCTETS} octets is sent; one octet more is refused`, async () => {
    const m = marker();
    const a = `a-${m}@corp.test`;
    const head = (octets: number) =>
      `From: alice@mailgator.test\r\nTo: ${a}\r\n${field("Subject", `s ${m} ${octets}`, octets)}`;
    expect(await send([a], head(MAX_HEADER_FIELD_OCTETS))).toStartWith("250");
    await waitForSink(`s ${m} ${MAX_HEADER_FIELD_OCTETS}`, 1);
    expect(await send([a], head(MAX_HEADER_FIELD_OCTETS + 1))).toStartWith("552 5.3.4");
    await nothingReachedUpstream(p.port, `s ${m} ${MAX_HEADER_FIELD_OCTETS + 1}`);
  });
});
