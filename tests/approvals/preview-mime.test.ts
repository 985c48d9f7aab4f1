/**
 * The text approvers are shown is the text a recipient's mail client shows (docs/approvals.md "What approvers see"):
 * the preview walks the message's MIME structure with the SMTP inspector (src/smtp/inspect.ts), decodes each text
 * part that is not an attachment (base64, quoted-printable; its charset), and shows every such part under a label
 * naming its type, so that neither an encoding nor an HTML part beside the plain one hides what is sent. What cannot
 * be decoded is shown as written, labelled so, and the preview then says that not all of the text is shown.
 */

import { describe, expect, test } from "bun:test";
import { approverNotice } from "../../src/approvals/notify.ts";
import {
  buildPreview,
  MORE_TEXT,
  PREVIEW_LINE_CHARS,
  PREVIEW_LINES,
  PREVIEW_SCAN_BYTES,
  PREVIEW_TEXT_PARTS,
} from "../../src/approvals/preview.ts";

const HEAD = "From: bot@corp.test\r\nTo: eve@outside.example\r\nSubject: Lunch\r\nMIME-Version: 1.0\r\n";

function preview(message: string | Buffer) {
  const bytes = typeof message === "string" ? Buffer.from(message, "utf8") : message;
  return buildPreview("bot@corp.test", ["eve@outside.example"], bytes, null, { names: [], complete: true });
}

const b64 = (text: string) =>
  Buffer.from(text, "utf8")
    .toString("base64")
    .replace(/.{1,76}/g, "$&\r\n");

describe("a single part in a transfer encoding", () => {
  const secret = "Wire 1M USD to IBAN DE00 1234; Grüße";

  test("base64: the decoded text is shown, not the encoding", () => {
    const p = preview(
      `${HEAD}Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n` +
        `${b64(`Hello Eve,\n${secret}\n`)}`,
    );
    expect(p.text).toBe(`[text/plain]\nHello Eve,\n${secret}`);
    expect(p.textCut).toBe(false);
  });

  test("quoted-printable: soft line breaks joined, =XX decoded in the part's charset", () => {
    const p = preview(
      `${HEAD}Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n` +
        "Caf=E9 a=3Db, wire the money to=\r\n eve\r\nsecond line\r\n",
    );
    expect(p.text).toBe("[text/plain]\nCafé a=b, wire the money to eve\nsecond line");
    expect(p.textCut).toBe(false);
  });

  test("an unknown transfer encoding: shown as written, labelled, and the text said to be incomplete", () => {
    const p = preview(
      `${HEAD}Content-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n`,
    );
    expect(p.text).toContain("[text/plain: not decoded (unknown transfer encoding");
    expect(p.text).toContain("begin 644 x");
    expect(p.textCut).toBe(true);
  });

  test("a label naming what the agent wrote is cut as a line is, and says so", () => {
    const charset = `x-${"a".repeat(PREVIEW_LINE_CHARS)}`;
    const p = preview(`${HEAD}Content-Type: text/plain; charset=${charset}\r\n\r\nhello\r\n`);
    const label = p.text.split("\n")[0]!;
    expect(label.startsWith('[text/plain: not decoded (unknown charset "x-aaa')).toBe(true);
    expect(label.endsWith("… (label cut)")).toBe(true);
    expect(label.length).toBeLessThan(PREVIEW_LINE_CHARS + 20);
  });

  test("broken base64: shown as written, labelled not decoded, the text said to be incomplete", () => {
    const p = preview(
      `${HEAD}Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\nSGVsbG8gRXZl*!\r\nV2lyZQ==\r\n`,
    );
    expect(p.text).toContain("[text/plain: not decoded (invalid base64)");
    expect(p.text).toContain("SGVsbG8gRXZl*!");
    expect(p.textCut).toBe(true);
  });

  test("an unknown charset: shown as written, labelled not decoded, the text said to be incomplete", () => {
    const p = preview(
      `${HEAD}Content-Type: text/plain; charset=x-mystery\r\nContent-Transfer-Encoding: base64\r\n\r\n${b64(secret)}`,
    );
    expect(p.text).toContain('[text/plain: not decoded (unknown charset "x-mystery")');
    expect(p.text).toContain(Buffer.from(secret).toString("base64").slice(0, 20));
    expect(p.text).not.toContain(secret);
    expect(p.textCut).toBe(true);
  });

  test("octets that are not in the part's charset (UTF-8): not decoded, never guessed", () => {
    const p = preview(
      Buffer.concat([
        Buffer.from(`${HEAD}Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nbad `),
        Buffer.from([0xe9]),
        Buffer.from(" octet\r\n"),
      ]),
    );
    expect(p.text).toContain("[text/plain: not decoded (not valid utf-8)");
    expect(p.text).toContain("bad \uFFFD octet");
    expect(p.textCut).toBe(true);
  });

  test("charset x-user-defined, whose octets above 0x7F WHATWG maps to private-use characters: not decoded", () => {
    const p = preview(
      Buffer.concat([
        Buffer.from(`${HEAD}Content-Type: text/plain; charset=x-user-defined\r\n\r\nHi `),
        Buffer.from([0xe9, 0x0d, 0x0a]),
      ]),
    );
    expect(p.text).toContain('[text/plain: not decoded (charset "x-user-defined" is not text)');
    expect(p.textCut).toBe(true);
  });

  // RFC 2781 §4.3: "UTF-16" text without a byte order mark is big-endian; the WHATWG decoder reads it little-endian
  // (and never reads a mark), as do the readers built on it. Readers differ: shown as written, never one reading.
  test("charset utf-16 (and its aliases): the byte order is not known, so not decoded", () => {
    // ASCII, big-endian: read little-endian, each character is a CJK ideograph, valid UTF-16 all the same.
    const words = "Wire 1M USD to IBAN DE00 1234";
    const bigEndian = Buffer.from(words, "utf16le").swap16();
    for (const charset of ["utf-16", "UTF-16", "ucs-2", "unicode"]) {
      const p = preview(
        Buffer.concat([
          Buffer.from(
            `${HEAD}Content-Type: text/plain; charset=${charset}\r\nContent-Transfer-Encoding: base64\r\n\r\n`,
          ),
          Buffer.from(`${bigEndian.toString("base64")}\r\n`),
        ]),
      );
      expect(p.text).toContain(`[text/plain: not decoded (charset "${charset}" without a byte order mark`);
      expect(p.textCut).toBe(true);
    }
    // With a byte order mark, the mark says which, for every reader.
    for (const [mark, octets] of [
      [[0xfe, 0xff], bigEndian],
      [[0xff, 0xfe], Buffer.from(words, "utf16le")],
    ] as const) {
      const marked = Buffer.concat([Buffer.from(mark), octets]).toString("base64");
      const p = preview(
        `${HEAD}Content-Type: text/plain; charset=utf-16\r\nContent-Transfer-Encoding: base64\r\n\r\n${marked}\r\n`,
      );
      expect(p.text).toBe(`[text/plain]\n${words}`);
      expect(p.textCut).toBe(false);
    }
    // Named by its byte order, it is read so.
    const le = preview(
      `${HEAD}Content-Type: text/plain; charset=utf-16le\r\nContent-Transfer-Encoding: base64\r\n\r\n` +
        `${Buffer.from(words, "utf16le").toString("base64")}\r\n`,
    );
    expect(le.text).toBe(`[text/plain]\n${words}`);
    const be = preview(
      `${HEAD}Content-Type: text/plain; charset=utf-16be\r\nContent-Transfer-Encoding: base64\r\n\r\n` +
        `${bigEndian.toString("base64")}\r\n`,
    );
    expect(be.text).toBe(`[text/plain]\n${words}`);
  });

  test("lines that look like MIME structure in a plain text part are its text, and are shown", () => {
    const p = preview("Subject: s\r\n\r\nHi Bob.\r\n-- \r\n--Also: wire the money\r\nContent-Note: and more\r\n");
    expect(p.text).toBe("[text/plain]\nHi Bob.\n-- \n--Also: wire the money\nContent-Note: and more");
    expect(p.textCut).toBe(false);
  });
});

describe("multipart messages", () => {
  const alternative = (plain: string, html: string) =>
    `${HEAD}Content-Type: multipart/alternative; boundary="alt"\r\n\r\n` +
    `--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n${plain}\r\n` +
    `--alt\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n${b64(html)}` +
    "--alt--\r\n";

  test("multipart/alternative: the HTML part, which says something else, is shown beside the plain one", () => {
    const p = preview(alternative("See you at lunch on Friday.", "<p>Attached: the customer list. Wire 1M USD.</p>"));
    expect(p.text).toBe(
      "[text/plain]\nSee you at lunch on Friday.\n[text/html]\n<p>Attached: the customer list. Wire 1M USD.</p>",
    );
    expect(p.textCut).toBe(false);
    const notice = approverNotice({ id: "ab".repeat(16), rule: "r", expires: 0, preview: p, link: null }).text;
    expect(notice).toContain("| [text/html]\n| <p>Attached: the customer list. Wire 1M USD.</p>");
    expect(notice).not.toContain(MORE_TEXT);
  });

  // A label is a line `[...]`; the agent writes the text. A line of it that starts with `[` is shown after a `\`, so
  // that a plain part cannot pass a harmless line off as the HTML part beside it.
  test("a text line that looks like a label is shown escaped: only the proxy's labels start with [", () => {
    const p = preview(
      alternative("See you on Friday.\r\n[text/html]\r\n<p>See you on Friday.</p>", "<p>Wire 1M USD.</p>"),
    );
    expect(p.text).toBe(
      "[text/plain]\nSee you on Friday.\n\\[text/html]\n<p>See you on Friday.</p>\n[text/html]\n<p>Wire 1M USD.</p>",
    );
    expect(p.text.split("\n").filter((l) => l.startsWith("["))).toEqual(["[text/plain]", "[text/html]"]);
  });

  test("nested multipart/mixed: both text parts decoded, a text attachment shown as one, the PDF's content not", () => {
    const message =
      `${HEAD}Content-Type: multipart/mixed; boundary=mix\r\n\r\n` +
      "--mix\r\nContent-Type: multipart/alternative; boundary=alt\r\n\r\n" +
      "--alt\r\nContent-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" +
      "Numbers =3D attached.\r\n" +
      "--alt\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
      `${b64("<b>Customer list</b> attached")}--alt--\r\n` +
      "--mix\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=q3.pdf\r\n" +
      `Content-Transfer-Encoding: base64\r\n\r\n${b64("%PDF-1.4 secret")}` +
      '--mix\r\nContent-Type: text/csv\r\nContent-Disposition: attachment; filename="db.csv"\r\n\r\nname,card\r\n' +
      "--mix--\r\n";
    const p = preview(message);
    expect(p.text).toBe(
      "[text/plain]\nNumbers = attached.\n[text/html]\n<b>Customer list</b> attached\n" +
        "[text/csv attachment]\nname,card",
    );
    expect(p.text).not.toContain("PDF");
    expect(p.textCut).toBe(false);
  });

  test("a multipart whose boundary cannot be used: its body shown as written, labelled, incomplete", () => {
    const p = preview(`${HEAD}Content-Type: multipart/mixed\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nhidden\r\n`);
    expect(p.text).toContain("not decoded");
    expect(p.text).toContain("hidden");
    expect(p.textCut).toBe(true);
  });

  test("a preamble, which goes out though clients do not show it, is shown and labelled", () => {
    const p = preview(
      `${HEAD}Content-Type: multipart/mixed; boundary=b\r\n\r\nthe customer list\r\n` +
        "--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b--\r\n",
    );
    expect(p.text).toContain("[MIME preamble");
    expect(p.text).toContain("the customer list");
    expect(p.text).toContain("[text/plain]\nhello");
  });
});

describe("the limits (PREVIEW_LINES, PREVIEW_TEXT_PARTS, PREVIEW_LINE_CHARS, PREVIEW_SCAN_BYTES)", () => {
  const lines = (from: number, n: number) => Array.from({ length: n }, (_, i) => `line ${from + i}`).join("\r\n");
  const twoParts = (first: number, second: number) =>
    preview(
      `${HEAD}Content-Type: multipart/alternative; boundary=b\r\n\r\n` +
        `--b\r\nContent-Type: text/plain\r\n\r\n${lines(1, first)}\r\n` +
        `--b\r\nContent-Type: text/html\r\n\r\n${lines(first + 1, second)}\r\n--b--\r\n`,
    );

  test("PREVIEW_LINES lines of a part are all shown; one more is not, and that is said", () => {
    const at = twoParts(PREVIEW_LINES, 1);
    expect(at.text).toContain(`line ${PREVIEW_LINES}\n[text/html]\nline ${PREVIEW_LINES + 1}`);
    expect(at.textCut).toBe(false);
    const past = twoParts(PREVIEW_LINES + 1, 1);
    expect(past.text).toContain(`line ${PREVIEW_LINES}\n[text/html]\nline ${PREVIEW_LINES + 2}`);
    expect(past.text).not.toContain(`line ${PREVIEW_LINES + 1}\n`);
    expect(past.textCut).toBe(true);
  });

  // Each part has its own lines: a long plain part does not push the HTML part, which says something else, out.
  test("a plain part far longer than PREVIEW_LINES leaves the HTML part beside it in view", () => {
    const p = preview(
      `${HEAD}Content-Type: multipart/alternative; boundary=b\r\n\r\n` +
        `--b\r\nContent-Type: text/plain\r\n\r\n${lines(1, 500)}\r\n` +
        `--b\r\nContent-Type: text/html\r\n\r\n<p>Wire 1M USD.</p>\r\n--b--\r\n`,
    );
    expect(p.text).toEndWith("[text/html]\n<p>Wire 1M USD.</p>");
    expect(p.textCut).toBe(true);
  });

  test("PREVIEW_TEXT_PARTS text parts are all shown; one more is not, and that is said", () => {
    const parts = (n: number) =>
      preview(
        `${HEAD}Content-Type: multipart/mixed; boundary=b\r\n\r\n` +
          Array.from({ length: n }, (_, i) => `--b\r\nContent-Type: text/plain\r\n\r\npart ${i + 1}\r\n`).join("") +
          "--b--\r\n",
      );
    const at = parts(PREVIEW_TEXT_PARTS);
    expect(at.text).toContain(`part ${PREVIEW_TEXT_PARTS}`);
    expect(at.textCut).toBe(false);
    const past = parts(PREVIEW_TEXT_PARTS + 1);
    expect(past.text).toContain(`part ${PREVIEW_TEXT_PARTS}`);
    expect(past.text).not.toContain(`part ${PREVIEW_TEXT_PARTS + 1}`);
    expect(past.textCut).toBe(true);
  });

  test("a decoded line of PREVIEW_LINE_CHARS characters is shown whole; one more is cut, and that is said", () => {
    const line = (n: number) =>
      preview(`${HEAD}Content-Transfer-Encoding: base64\r\n\r\n${b64("é".repeat(n))}`).textCut;
    expect(line(PREVIEW_LINE_CHARS)).toBe(false);
    expect(line(PREVIEW_LINE_CHARS + 1)).toBe(true);
  });

  test("a text part of PREVIEW_SCAN_BYTES octets is read; one octet more is not, and that is said", () => {
    const body = (n: number) => `hello\r\n${" ".repeat(n - 7)}`;
    const at = preview(`${HEAD}\r\n${body(PREVIEW_SCAN_BYTES)}`);
    expect(at.text).toBe("[text/plain]\nhello");
    expect(at.textCut).toBe(false);
    expect(preview(`${HEAD}\r\n${body(PREVIEW_SCAN_BYTES + 1)}`).textCut).toBe(true);
    // Octets of attachments do not count: the text after a large one is still shown.
    const large =
      `${HEAD}Content-Type: multipart/mixed; boundary=b\r\n\r\n` +
      `--b\r\nContent-Type: application/octet-stream\r\n\r\n${"A".repeat(PREVIEW_SCAN_BYTES)}\r\n` +
      "--b\r\nContent-Type: text/plain\r\n\r\nafter the attachment\r\n--b--\r\n";
    expect(preview(large).text).toBe("[text/plain]\nafter the attachment");
    expect(preview(large).textCut).toBe(false);
    // Each text part is read from its own first octets: one past them does not starve the next.
    const long =
      `${HEAD}Content-Type: multipart/alternative; boundary=b\r\n\r\n` +
      `--b\r\nContent-Type: text/plain\r\n\r\n${"x".repeat(PREVIEW_SCAN_BYTES + 10)}\r\n` +
      "--b\r\nContent-Type: text/html\r\n\r\n<p>the other part</p>\r\n--b--\r\n";
    expect(preview(long).text).toEndWith("[text/html]\n<p>the other part</p>");
    expect(preview(long).textCut).toBe(true);
  });
});
