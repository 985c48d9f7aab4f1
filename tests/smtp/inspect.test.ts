/** What the policy reads from a message: To/Cc, Subject (RFC 2047), Message-ID, has_attachment (docs/smtp.md). */

import { describe, expect, test } from "bun:test";
import { classify } from "../../src/smtp/decide.ts";
import { type MessageFacts, MessageInspector } from "../../src/smtp/inspect.ts";
import { MAX_HEADER_BYTES, MAX_MIME_DEPTH, MAX_MIME_PARTS } from "../../src/smtp/limits.ts";

function facts(text: string, chunk = 0): MessageFacts {
  const inspector = new MessageInspector();
  const bytes = Buffer.from(text.replace(/\r?\n/g, "\r\n"), "utf8");
  if (chunk === 0) inspector.write(bytes);
  else for (let i = 0; i < bytes.length; i += chunk) inspector.write(bytes.subarray(i, i + chunk));
  return inspector.finish();
}

describe("headers", () => {
  test("To and Cc addresses, folded and repeated, display names dropped", () => {
    const f = facts(
      `To: "Boss" <Boss@Corp.test>,\n  a@corp.test\nCc: c@corp.test\n` +
        `Cc: "x@evil.test" <d@corp.test>\nSubject: hi\n\nbody\n`,
    );
    expect(f.to).toEqual(["boss@corp.test", "a@corp.test"]);
    expect(f.cc).toEqual(["c@corp.test", "d@corp.test"]);
    expect(f.subject).toBe("hi");
  });

  test("recipients are classed to / cc / bcc; an unparseable header makes the class unknown", () => {
    const f = facts("To: a@corp.test\nCc: b@corp.test\n\nx\n");
    expect(classify("a@corp.test", f)).toBe("to");
    expect(classify("b@corp.test", f)).toBe("cc");
    expect(classify("e@evil.test", f)).toBe("bcc");
    const broken = facts("To: a@corp.test\nCc: <unterminated\n\nx\n");
    expect(classify("a@corp.test", broken)).toBe("to");
    expect(classify("e@evil.test", broken)).toBe("unknown");
  });

  test("encoded-word subjects are decoded; two Subject fields make it unknown; none is empty", () => {
    expect(facts("Subject: =?UTF-8?B?cGFzc3dvcmQgcmVzZXQ=?=\n\nx\n").subject).toBe("password reset");
    expect(facts("Subject: =?ISO-8859-1?Q?caf=E9?= =?UTF-8?Q?_ol=C3=A9?=\n\nx\n").subject).toBe("café olé");
    expect(facts("Subject: a\nSubject: b\n\nx\n").subject).toBeUndefined();
    expect(facts("To: a@b.test\n\nx\n").subject).toBe("");
  });

  test("Message-ID is kept for the audit log", () => {
    expect(facts("Message-ID: <abc@corp.test>\n\nx\n").messageId).toBe("<abc@corp.test>");
  });

  test("a message with no body still has its headers read", () => {
    expect(facts("To: a@corp.test\nSubject: s\n").to).toEqual(["a@corp.test"]);
  });

  test("header section at MAX_HEADER_BYTES passes; one octet more is too large", () => {
    const line = (n: number) => `X-Pad: ${"a".repeat(n - 9)}\r\n`;
    const exact = line(MAX_HEADER_BYTES);
    expect(Buffer.byteLength(exact)).toBe(MAX_HEADER_BYTES);
    expect(facts(`${exact}\r\nbody\r\n`).headerTooLarge).toBe(false);
    expect(facts(`${line(MAX_HEADER_BYTES + 1)}\r\nbody\r\n`).headerTooLarge).toBe(true);
  });
});

describe("has_attachment", () => {
  const multipart = (parts: string[], type = "mixed", boundary = "b1") =>
    `Content-Type: multipart/${type}; boundary="${boundary}"\n\npreamble\n` +
    `${parts.map((p) => `--${boundary}\n${p}\n`).join("")}--${boundary}--\nepilogue\n`;

  test("plain text and multipart/alternative text+html have none", () => {
    expect(facts("Subject: x\n\nhello\n").hasAttachment).toBe(false);
    expect(
      facts(multipart(["Content-Type: text/plain\n\nhi", "Content-Type: text/html\n\n<p>hi</p>"], "alternative"))
        .hasAttachment,
    ).toBe(false);
  });

  test("Content-Disposition attachment, a filename, a name, or a non-text leaf is one", () => {
    const text = "Content-Type: text/plain\n\nhi";
    expect(
      facts(multipart([text, "Content-Type: text/plain\nContent-Disposition: attachment\n\nsecret"])).hasAttachment,
    ).toBe(true);
    expect(
      facts(multipart([text, 'Content-Type: text/plain\nContent-Disposition: inline; filename="a.txt"\n\nx']))
        .hasAttachment,
    ).toBe(true);
    expect(
      facts(
        multipart([text, "Content-Type: text/plain\nContent-Disposition: inline; filename*=UTF-8''%C3%A9.txt\n\nx"]),
      ).hasAttachment,
    ).toBe(true);
    expect(facts(multipart([text, 'Content-Type: application/octet-stream; name="x.bin"\n\nAAAA'])).hasAttachment).toBe(
      true,
    );
    expect(facts(multipart([text, "Content-Type: image/png\n\niVBOR"])).hasAttachment).toBe(true);
    expect(facts(multipart([text, "Content-Type: message/rfc822\n\nSubject: fwd\n\nx"])).hasAttachment).toBe(true);
    expect(
      facts('Content-Type: application/pdf\nContent-Disposition: attachment; filename="a.pdf"\n\nJVBER\n')
        .hasAttachment,
    ).toBe(true);
  });

  test("nested multiparts, read in small chunks", () => {
    const inner =
      `Content-Type: multipart/alternative; boundary="inner"\n\n` +
      `--inner\nContent-Type: text/plain\n\nhi\n--inner\nContent-Type: text/html\n\nhi\n--inner--\n`;
    const msg = multipart([
      inner,
      "Content-Type: application/zip\nContent-Disposition: attachment; filename=a.zip\n\nUEsDB",
    ]);
    for (const chunk of [0, 1, 7, 64]) expect(facts(msg, chunk).hasAttachment).toBe(true);
    expect(facts(multipart([inner])).hasAttachment).toBe(false);
  });

  test("a boundary-like line inside a part does not confuse the scanner", () => {
    const msg = multipart([
      "Content-Type: text/plain\n\n--b1x is not a boundary\n--b2\nContent-Disposition: attachment\n",
    ]);
    expect(facts(msg).hasAttachment).toBe(false);
  });

  test("a multipart without a boundary is unknown", () => {
    expect(
      facts("Content-Type: multipart/mixed\n\n--x\nContent-Type: text/plain\n\nhi\n--x--\n").hasAttachment,
    ).toBeUndefined();
  });

  test(`MAX_MIME_PARTS (${MAX_MIME_PARTS}) parts are read; one more leaves it unknown`, () => {
    const part = "Content-Type: text/plain\n\nx";
    expect(facts(multipart(Array(MAX_MIME_PARTS).fill(part))).hasAttachment).toBe(false);
    expect(facts(multipart(Array(MAX_MIME_PARTS + 1).fill(part))).hasAttachment).toBeUndefined();
  });

  test(`MAX_MIME_DEPTH (${MAX_MIME_DEPTH}) nested multiparts are read; one more leaves it unknown`, () => {
    const nest = (depth: number): string => {
      let body = "Content-Type: text/plain\n\nleaf";
      for (let d = depth; d >= 1; d--)
        body = `Content-Type: multipart/mixed; boundary="n${d}"\n\n--n${d}\n${body}\n--n${d}--\n`;
      return body;
    };
    expect(facts(nest(MAX_MIME_DEPTH)).hasAttachment).toBe(false);
    expect(facts(nest(MAX_MIME_DEPTH + 1)).hasAttachment).toBeUndefined();
  });
});
