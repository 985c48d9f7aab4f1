/** What the policy reads from a message: To/Cc, Subject (RFC 2047), Message-ID, has_attachment (docs/smtp.md). */

import { describe, expect, test } from "bun:test";
import { classify } from "../../src/smtp/decide.ts";
import { type MessageFacts, MessageInspector, unsendable } from "../../src/smtp/inspect.ts";
import { MAX_HEADER_BYTES, MAX_MIME_DEPTH, MAX_MIME_PARTS, MAX_PART_HEADER_BYTES } from "../../src/smtp/limits.ts";

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

  test("a malformed Content-Type or Content-Disposition is unknown, wherever it is", () => {
    const text = "Content-Type: text/plain\n\nhi";
    expect(facts(multipart([text, "Content-Type: text/plain x\n\nsecret"])).hasAttachment).toBeUndefined();
    expect(
      facts(multipart([text, 'Content-Type: text/plain\nContent-Disposition: "attachment"\n\nx'])).hasAttachment,
    ).toBeUndefined();
    expect(
      facts('Content-Type: "multipart/mixed"; boundary="b1"\n\n--b1\n\nx\n--b1--\n').hasAttachment,
    ).toBeUndefined();
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

  test("a line that begins with an open boundary but is not its delimiter is unknown (RFC 2046 §5.1.1)", () => {
    // Dovecot takes `--b1x` and `--b1 x` as delimiters of b1 and shows the PDF after them as a part; a strict
    // reader shows text. Either reading is a guess: unknown, which a has_attachment rule denies.
    const pdf = 'Content-Type: application/pdf; name="a.pdf"\nContent-Disposition: attachment\n\nJVBER';
    for (const junk of ["--b1x", "--b1 x", "--b1\tx", "--b1--x", "--b1-- x", "--b1x--"]) {
      const msg = multipart([`Content-Type: text/plain\n\nhi\n${junk}\n${pdf}`]);
      for (const chunk of [0, 1, 7]) expect(facts(msg, chunk).hasAttachment).toBeUndefined();
    }
    // In the preamble too: a reader that takes it as the first delimiter shows the PDF as a part.
    expect(
      facts(
        `Content-Type: multipart/mixed; boundary="b1"\n\n--b1x\n${pdf}\n--b1\nContent-Type: text/plain\n\nhi\n--b1--\n`,
      ).hasAttachment,
    ).toBeUndefined();
    // In a part's header section `--b1: x` is a field to src/mail, and a delimiter ending the section to Dovecot.
    expect(facts(multipart(["Content-Type: text/plain\n--b1: x\n\nhi"])).hasAttachment).toBeUndefined();
    // In a digest it hides a message: to src/mail one text/plain part whose body is the message; to Dovecot a text
    // part ends at `--b1: x` and the next part has no Content-Type, so it is the message (with its PDF).
    const fwd = `Subject: fwd\nContent-Type: multipart/mixed; boundary="I"\n\n--I\n${pdf}\n--I--`;
    expect(facts(multipart([`Content-Type: text/plain\n--b1: x\n\n${fwd}`], "digest")).hasAttachment).toBeUndefined();
  });

  test("lines that are exactly delimiters, or begin with no open boundary, are read as before", () => {
    // Whitespace after a delimiter is transport padding (RFC 2046 §5.1.1).
    expect(facts(multipart(["Content-Type: text/plain\n\nhi"]).replace("--b1\n", "--b1 \t \n")).hasAttachment).toBe(
      false,
    );
    expect(facts(multipart(["Content-Type: text/plain\n\nhi"]).replace("--b1--\n", "--b1-- \n")).hasAttachment).toBe(
      false,
    );
    // `--b2` and `--b` begin with no open boundary (b1): text, as for every reader.
    const text = "Content-Type: text/plain\n\n--b2\nContent-Disposition: attachment\n--b\n-- \nsignature";
    expect(facts(multipart([text])).hasAttachment).toBe(false);
    // After the close delimiter no multipart is open: the epilogue is text whatever it says.
    expect(facts(`${multipart(["Content-Type: text/plain\n\nhi"])}--b1x\n--b1\n`).hasAttachment).toBe(false);
  });

  test("a delimiter line longer than the inspector keeps is unknown: what it does not see could be junk", () => {
    // Outer b1, inner z. To a strict reader `--b1<1200 spaces>x` is text, so the `--z` after it opens a PDF part of
    // z; Dovecot and the inspector take it as a delimiter of b1 (closing z), after which `--z` is text.
    const pdf = 'Content-Type: application/pdf; name="a.pdf"\n\nJVBER';
    const msg = (rest: string) =>
      multipart([
        `Content-Type: multipart/mixed; boundary="z"\n\n--z\nContent-Type: text/plain\n\nhi\n` +
          `--b1${rest}\nContent-Type: text/plain\n\n--z\n${pdf}\n--z--`,
      ]);
    const long = `${" ".repeat(1200)}x`;
    // Only the line's first 1000 octets are kept, whether it arrives in one write or in many: they could be a
    // delimiter or not. Padding alone, cut in the same place, cannot be told from it. The verdict never depends on
    // how the client's data was split (whole, the junk line once read as junk let the scan find the PDF: true).
    for (const rest of [long, " ".repeat(1200)]) {
      for (const chunk of [0, 7, 512, 1000, 4096]) expect(facts(msg(rest), chunk).hasAttachment).toBeUndefined();
    }
    // At the limit (the line with its CRLF exactly 1000 octets) the line is whole: padding, a delimiter.
    const padded = " ".repeat(1000 - "--b1".length - 2);
    for (const chunk of [0, 7, 512]) expect(facts(msg(padded), chunk).hasAttachment).toBe(false);
    expect(facts(msg(`${padded} `)).hasAttachment).toBeUndefined();
  });

  test("nested boundaries: one a prefix of the other is unknown while both are open", () => {
    const leaf = "Content-Type: text/plain\n\nhi";
    const nested = (outer: string, inner: string, closeInner: boolean) =>
      multipart(
        [
          `Content-Type: multipart/mixed; boundary="${inner}"\n\n--${inner}\n${leaf}\n` +
            `--${inner}\n${leaf}\n${closeInner ? `--${inner}--\n` : ""}`,
          leaf,
        ],
        "mixed",
        outer,
      );
    // The inner boundary a prefix of the outer, the inner closed first: no line begins with both while both are
    // open; every reader splits it the same way.
    expect(facts(nested("ab", "a", true)).hasAttachment).toBe(false);
    // Not closed: `--ab` begins with the open `a` too. Dovecot takes the longest (ab), a reader that tries the
    // innermost first takes it as a delimiter of a.
    expect(facts(nested("ab", "a", false)).hasAttachment).toBeUndefined();
    // The outer a prefix of the inner: every inner delimiter begins with the outer boundary.
    expect(facts(nested("a", "ab", true)).hasAttachment).toBeUndefined();
    // The same boundary: innermost first or outermost first split it differently.
    expect(facts(nested("b1", "b1", true)).hasAttachment).toBeUndefined();
    expect(facts(nested("b1", "b2", false)).hasAttachment).toBe(false);
  });

  test("a part without Content-Type in a multipart/digest is a message (RFC 2046 §5.1.5): an attachment", () => {
    // A whole message with a PDF attached, as the digest's only part: Dovecot shows message/rfc822 holding the PDF.
    const forwarded =
      'From: x@corp.test\nSubject: inner\nContent-Type: multipart/mixed; boundary="I"\n\n' +
      "--I\nContent-Type: text/plain\n\nhello\n" +
      '--I\nContent-Type: application/pdf; name="secret.pdf"\nContent-Disposition: attachment\n\nJVBER\n--I--\n';
    const digest = multipart([`\n${forwarded}`], "digest");
    for (const chunk of [0, 1, 7]) expect(facts(digest, chunk).hasAttachment).toBe(true);
    // A digest of plain text messages: each part is still a message, which counts as an explicit one does.
    expect(facts(multipart(["\nSubject: one\n\nhello", "\nSubject: two\n\nworld"], "digest")).hasAttachment).toBe(true);
    expect(facts(multipart(["Subject: no blank line first\n\nhello"], "digest")).hasAttachment).toBe(true);
    // An empty Content-Type is none (RFC 2045 §5.2): the digest's default.
    expect(facts(multipart(["Content-Type:\n\nSubject: x\n\nhello"], "digest")).hasAttachment).toBe(true);
    // A digest part that says text/plain is text; outside a digest a part without Content-Type is text/plain.
    expect(facts(multipart(["Content-Type: text/plain\n\nhello"], "digest")).hasAttachment).toBe(false);
    expect(facts(multipart(["\nhello"], "mixed")).hasAttachment).toBe(false);
  });

  test("the default type follows the multipart a part is in", () => {
    const digest = (parts: string[]) =>
      `Content-Type: multipart/digest; boundary="d"\n\n${parts.map((p) => `--d\n${p}\n`).join("")}--d--\n`;
    // A digest inside a mixed: its part without Content-Type is a message.
    expect(facts(multipart(["Content-Type: text/plain\n\nhi", digest(["\nSubject: x\n\nhello"])])).hasAttachment).toBe(
      true,
    );
    // A mixed inside a digest, and a part of the mixed after the digest closed: text/plain.
    expect(facts(multipart([digest(["Content-Type: text/plain\n\nhello"]), "\nhello"])).hasAttachment).toBe(false);
    expect(
      facts(multipart([`Content-Type: multipart/mixed; boundary="m"\n\n--m\n\nhello\n--m--\n`], "digest"))
        .hasAttachment,
    ).toBe(false);
  });

  test("a multipart without a boundary is unknown", () => {
    expect(
      facts("Content-Type: multipart/mixed\n\n--x\nContent-Type: text/plain\n\nhi\n--x--\n").hasAttachment,
    ).toBeUndefined();
  });

  test("a boundary given twice is unknown, in either order: readers split on different ones", () => {
    // Split on "a", the PDF is a part; split on "b", there is only text.
    const body = "--a\nContent-Type: application/pdf\n\nJVBER\n--a--\n";
    for (const params of ['boundary="a"; boundary="b"', 'boundary="b"; boundary="a"']) {
      expect(facts(`Content-Type: multipart/mixed; ${params}\n\n${body}`).hasAttachment).toBeUndefined();
    }
    expect(facts(`Content-Type: multipart/mixed; boundary="a"\n\n${body}`).hasAttachment).toBe(true);
  });

  test(`MAX_MIME_PARTS (${MAX_MIME_PARTS}) parts are read; one more leaves it unknown`, () => {
    const part = "Content-Type: text/plain\n\nx";
    expect(facts(multipart(Array(MAX_MIME_PARTS).fill(part))).hasAttachment).toBe(false);
    expect(facts(multipart(Array(MAX_MIME_PARTS + 1).fill(part))).hasAttachment).toBeUndefined();
  });

  test(`a part header of MAX_PART_HEADER_BYTES (${MAX_PART_HEADER_BYTES}) is read; one more octet: unknown`, () => {
    // Lines of at most 900 octets with their CRLF (under MAX_HEADER_LINE_OCTETS), `n` octets in all.
    const header = (n: number): string => {
      const lines = ["Content-Type: text/plain\r\n"];
      let left = n - lines[0]!.length;
      while (left > 0) {
        const size = left > 1800 ? 900 : left > 900 ? Math.ceil(left / 2) : left;
        lines.push(`X-Pad: ${"a".repeat(size - 9)}\r\n`);
        left -= size;
      }
      const text = lines.join("");
      expect(Buffer.byteLength(text)).toBe(n);
      return text;
    };
    const message = (n: number) => multipart([`${header(n)}\r\nx`]);
    expect(facts(message(MAX_PART_HEADER_BYTES)).hasAttachment).toBe(false);
    expect(facts(message(MAX_PART_HEADER_BYTES + 1)).hasAttachment).toBeUndefined();
  });

  test(`MAX_MIME_DEPTH (${MAX_MIME_DEPTH}) nested multiparts are read; one more leaves it unknown`, () => {
    // `n1-`, `n10-`: no boundary begins with another (`n1` would begin `n10`: unknown, above).
    const nest = (depth: number): string => {
      let body = "Content-Type: text/plain\n\nleaf";
      for (let d = depth; d >= 1; d--)
        body = `Content-Type: multipart/mixed; boundary="n${d}-"\n\n--n${d}-\n${body}\n--n${d}---\n`;
      return body;
    };
    expect(facts(nest(MAX_MIME_DEPTH)).hasAttachment).toBe(false);
    expect(facts(nest(MAX_MIME_DEPTH + 1)).hasAttachment).toBeUndefined();
  });
});

describe("body lines", () => {
  const cases: [string, string, boolean | undefined][] = [
    ["single part, lines like delimiters", "Content-Type: text/plain\n\n--b\n--b--\n-\n--\nx\n", false],
    [
      "a part after the close delimiter is epilogue",
      'Content-Type: multipart/mixed; boundary="b"\n\n--b\n\nx\n--b--\n--b\n' +
        "Content-Type: application/zip\nContent-Disposition: attachment\n\nUEsDB\n",
      false,
    ],
    [
      "a delimiter among dashes and short lines",
      'Content-Type: multipart/mixed; boundary="b"\n\n-\n--\n--b\n\n-\n--\n--b\n' +
        "Content-Type: application/zip\n\nUEsDB\n--b--\n",
      true,
    ],
    [
      "a delimiter that does not begin the line is text",
      'Content-Type: multipart/mixed; boundary="b"\n\n--b\n\n x--b\nContent-Type: application/zip\n\n--b--\n',
      false,
    ],
  ];
  for (const [name, text, expected] of cases) {
    test(`${name}: the same however the data is split`, () => {
      for (const chunk of [0, 1, 2, 3, 5, 11]) expect(facts(text, chunk).hasAttachment).toBe(expected);
    });
  }
});

describe("8-bit octets (RFC 6152: the replay refuses them to an upstream without 8BITMIME)", () => {
  const read = (chunks: readonly Buffer[]): MessageFacts => {
    const inspector = new MessageInspector();
    for (const chunk of chunks) inspector.write(chunk);
    return inspector.finish();
  };
  const ascii = Buffer.from("Subject: hi\r\n\r\nplain text\r\n".repeat(200));

  test("7-bit content is not 8-bit; one octet of 0x80 or above anywhere is, whatever the chunking", () => {
    expect(read([ascii]).eightBit).toBe(false);
    expect(read([]).eightBit).toBe(false);
    for (const octet of [0x80, 0xc3, 0xff]) {
      // In the header, deep in a single part's body (which the inspector does not read line by line), at the end.
      for (const at of [3, ascii.length - 5, ascii.length - 1]) {
        const bytes = Buffer.from(ascii);
        bytes[at] = octet;
        expect(read([bytes]).eightBit).toBe(true);
        expect(read([bytes.subarray(0, 10), bytes.subarray(10, at), bytes.subarray(at)]).eightBit).toBe(true);
        expect(read([bytes.subarray(0, at), bytes.subarray(at, at + 1), bytes.subarray(at + 1)]).eightBit).toBe(true);
      }
    }
  });
});

describe("control characters in a header (RFC 5322 §3.2.2, §4: obsolete syntax, never to be generated)", () => {
  const raw = (text: string, chunk = 0): MessageFacts => {
    const inspector = new MessageInspector();
    const bytes = Buffer.from(text, "utf8");
    if (chunk === 0) inspector.write(bytes);
    else for (let i = 0; i < bytes.length; i += chunk) inspector.write(bytes.subarray(i, i + chunk));
    return inspector.finish();
  };
  const controls = [...Array.from({ length: 32 }, (_, c) => c).filter((c) => c !== 9 && c !== 10), 0x7f];

  test("each C0 control but HTAB and LF, and DEL, in any field, named with its field, however it is chunked", () => {
    for (const c of controls) {
      const hex = `0x${c.toString(16).toUpperCase().padStart(2, "0")}`;
      const text = `From: a@corp.test\r\nMessage-ID: <a${String.fromCharCode(c)}b@corp.test>\r\n\r\nbody\r\n`;
      for (const chunk of [0, 1, 7])
        expect(raw(text, chunk).headerControl).toBe(`${hex} in the header field message-id`);
    }
  });

  test("a folded line is named by the field it continues; a part's header is named as such", () => {
    expect(raw("Subject: a\r\n\tb \x1b[2K c\r\n\r\nx\r\n").headerControl).toBe("0x1B in the header field subject");
    const part =
      'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n' +
      'Content-Disposition: attachment; filename="x\x07.pdf"\r\n\r\nAAAA\r\n--b--\r\n';
    expect(raw(part).headerControl).toBe("0x07 in a MIME part's header field content-disposition");
    // A line that is no field (no colon) is named by none.
    expect(raw("\x1bjunk\r\n\r\nx\r\n").headerControl).toBe("0x1B in the header");
  });

  test("HTAB, the CRLF, UTF-8 (RFC 6532) and controls in a body are not header controls", () => {
    const clean =
      'From: "Zoë" <a@corp.test>\r\nSubject: Grüße\t– café ☕\r\n\tfolded\r\nMessage-ID: <ü@corp.test>\r\n' +
      'Content-Type: multipart/mixed; boundary="b"\r\n\r\nbody \x1b[2K \x07 \x7f\r\n--b\r\n' +
      'Content-Disposition: attachment; filename="résumé.txt"\r\n\r\n\x0c text\r\n--b--\r\n';
    for (const chunk of [0, 1, 5]) expect(raw(clean, chunk).headerControl).toBeNull();
    // The code points around the C1 block, in UTF-8, are not controls: U+007E, U+00A0, U+0100, U+0C80.
    expect(raw("Subject: ~\u00a0\u0100\u0c80 \u00c2\r\n\r\nx\r\n").headerControl).toBeNull();
  });

  test("each C1 control in UTF-8 (U+0080-U+009F), however it is chunked, a pair split at the cut too", () => {
    for (let c = 0x80; c <= 0x9f; c++) {
      const name = `U+00${c.toString(16).toUpperCase()}`;
      const text = `Subject: ok\r\nMessage-ID: <a${String.fromCharCode(c)}b@corp.test>\r\n\r\nbody\r\n`;
      for (const chunk of [0, 1, 2, 3, 7])
        expect(raw(text, chunk).headerControl).toBe(`${name} in the header field message-id`);
    }
    // The pair's first octet is the last one the inspector keeps of a long line, its second the first it cuts.
    const prefix = "X-Pad: ";
    const long = `${prefix}${"a".repeat(MAX_HEADER_BYTES + 1 - prefix.length)}\u009b\r\n\r\nx\r\n`;
    for (const chunk of [0, 65536, MAX_HEADER_BYTES + 2])
      expect(raw(long, chunk).headerControl).toBe("U+009B in the header field x-pad");
  });

  test("a bare CR in a header line is one; a control past the part of a long line the inspector keeps, too", () => {
    expect(raw("Subject: a\rb\r\n\r\nx\r\n").headerControl).toBe("0x0D in the header field subject");
    // The header section is too large (and refused for that), but the control past the cut is still found.
    const long = `X-Pad: ${"a".repeat(MAX_HEADER_BYTES + 10)}\x1b\r\n\r\nx\r\n`;
    for (const chunk of [0, 65536]) expect(raw(long, chunk).headerControl).toBe("0x1B in the header field x-pad");
  });

  test("a NUL in a header is reported as the NUL it is", () => {
    const f = raw("Message-ID: <a\0b@corp.test>\r\n\r\nx\r\n");
    expect(f.hasNul).toBe(true);
    expect(unsendable(f)).toEqual({ code: 554, status: "5.6.0", reason: "NUL octet in the message" });
    expect(unsendable(raw("Message-ID: <a\x1bb@corp.test>\r\n\r\nx\r\n"))).toEqual({
      code: 554,
      status: "5.6.0",
      reason: "control character 0x1B in the header field message-id",
    });
  });
});
