/**
 * The reader of messages (src/mail), the one both proxies use: the encoding table (tests/mail/encodings.ts) through
 * `readUnstructured` and through a whole header section, then the other fields and MIME parameters.
 */

import { describe, expect, test } from "bun:test";
import {
  decodeEncodedWords,
  entityOf,
  isAttachmentEntity,
  mailboxProblem,
  parseHeaderFields,
  parseParameterized,
  readMessageFields,
  readUnstructured,
} from "../../src/mail/index.ts";
import { CONTROL_SHOWN, CONTROL_SUBJECT, DECODED, subjectLine, UNKNOWN } from "./encodings.ts";

const section = (...lines: (string | Buffer)[]): Uint8Array =>
  Buffer.concat(lines.map((l) => (typeof l === "string" ? Buffer.from(`${l}\r\n`, "utf8") : l)));
const read = (...lines: (string | Buffer)[]) => readMessageFields(parseHeaderFields(section(...lines)));

describe("the encoding table", () => {
  test("the table is what it says: every decoded case contains secret, no case is listed twice", () => {
    for (const c of DECODED) expect(c.shown!.toLowerCase()).toContain("secret");
    const names = [...DECODED, ...UNKNOWN].map((c) => c.name);
    expect(new Set(names).size).toBe(names.length);
  });

  for (const c of [...DECODED, ...UNKNOWN]) {
    test(`${c.name}: ${c.shown === null ? "unknown" : JSON.stringify(c.shown.slice(0, 40))}`, () => {
      // As a Subject field in a header section (octets, folds): what both proxies read.
      expect(read("From: a@b.test", subjectLine(c), "To: c@d.test").subject).toBe(c.shown ?? undefined);
      // The unfolded value alone (RFC 5322 §2.2.3: a fold's CRLF is removed).
      if (c.octets === undefined) expect(readUnstructured(c.raw.replace(/\r\n/g, ""))).toBe(c.shown);
    });
  }

  test("the control subject decodes", () => {
    expect(readUnstructured(CONTROL_SUBJECT)).toBe(CONTROL_SHOWN);
  });
});

describe("unstructured text", () => {
  test("whitespace between encoded words goes, around plain text it stays", () => {
    expect(decodeEncodedWords("=?utf-8?Q?a?= =?utf-8?Q?b?= c =?utf-8?Q?d?=")).toBe("ab c d");
    expect(decodeEncodedWords("x =?utf-8?Q?a?=\t\t=?iso-8859-1?Q?=E9?=")).toBe("x aé");
    expect(decodeEncodedWords("=?utf-8?Q?a_?= =?utf-8?Q?_b?=")).toBe("a  b");
  });

  test("text that only looks a little like an encoded word is text", () => {
    expect(readUnstructured("what =? means")).toBe("what =? means");
    expect(readUnstructured("a ?= b =?")).toBe("a ?= b =?");
    expect(readUnstructured("=?utf-8?X?secret?=")).toBe("=?utf-8?X?secret?=");
    expect(readUnstructured("")).toBe("");
  });

  test("composed and decomposed accents compare equal (NFC); emoji sequences keep their pictures", () => {
    expect(readUnstructured("cafe\u0301")).toBe("café");
    expect(readUnstructured("=?utf-8?Q?cafe=CC=81?=")).toBe("café");
    expect(readUnstructured("done \u2714\ufe0f \u{1f468}\u200d\u{1f4bb}")).toBe("done \u2714 \u{1f468}\u{1f4bb}");
  });

  test("TAB is kept; other controls are unknown", () => {
    expect(readUnstructured("a\tb")).toBe("a\tb");
    expect(readUnstructured("a\x7fb")).toBeNull();
    expect(readUnstructured("=?utf-8?Q?a=09b?=")).toBe("a\tb");
  });

  test("look-alike characters are different text (documented limit)", () => {
    expect(readUnstructured("\uff53\uff45\uff43\uff52\uff45\uff54")).toBe("ｓｅｃｒｅｔ");
  });
});

describe("header sections and fields", () => {
  test("two Subject fields are unknown, whatever their case or spacing", () => {
    expect(read("Subject: secret", "Subject: hello").subject).toBeUndefined();
    expect(read("Subject: hello", "SUBJECT : hello").subject).toBeUndefined();
    expect(read("X-Subject: secret", "Subject: hello").subject).toBe("hello");
  });

  test("an encoded word in a field no rule reads changes nothing", () => {
    const f = read("X-Note: =?x-unknown?Q?secret?=", "Comments: =?utf-8?Q?bad=ZZ?=", "Subject: hello");
    expect(f.subject).toBe("hello");
  });

  test("addresses are addr-specs: display names, encoded or not, never count", () => {
    const f = read(
      "From: =?utf-8?Q?boss=40corp=2Etest?= <spam@evil.test>",
      'To: "=?utf-8?Q?secret?=" <a@b.test>, (=?utf-8?Q?c@d.test?=) e@f.test',
      "Cc: team: =?x-unknown?Q?x?= <g@h.test>;",
    );
    expect(f.from).toEqual(["spam@evil.test"]);
    expect(f.to).toEqual(["a@b.test", "e@f.test"]);
    expect(f.cc).toEqual(["g@h.test"]);
  });

  test("an encoded word in an addr-spec is not decoded (RFC 2047 §5)", () => {
    expect(read("From: =?utf-8?Q?boss?=@corp.test").from).toEqual(["=?utf-8?q?boss?=@corp.test"]);
  });

  test("an addr-spec with an octet that is not UTF-8 is unknown; in a display name it does not matter", () => {
    expect(read(Buffer.from("From: b\xf6ss@corp.test\r\n", "latin1")).from).toBeUndefined();
    expect(read(Buffer.from("From: J\xf6rg <j@corp.test>\r\n", "latin1")).from).toEqual(["j@corp.test"]);
    expect(read("From: Jörg <jörg@corp.test>").from).toEqual(["jörg@corp.test"]);
  });

  test("a line that is not a field makes every field unknown", () => {
    expect(read("Subject: hello", "not a field").subject).toBeUndefined();
    expect(read(" folded first", "Subject: hello").subject).toBeUndefined();
  });

  test("a header section without its blank line, with bare LF, and with a body after it", () => {
    expect(readMessageFields(parseHeaderFields(Buffer.from("Subject: a\n b\n"))).subject).toBe("a b");
    expect(readMessageFields(parseHeaderFields(Buffer.from("Subject: a\r\n\r\nSubject: b\r\n"))).subject).toBe("a");
  });
});

describe("envelope mailboxes", () => {
  test("plain local@domain only", () => {
    expect(mailboxProblem("Ok.Name+tag@Corp.Test")).toBeNull();
    for (const bad of ["@a:u@d.test", '"a"@d.test', "u@[1.2.3.4]", "a%b@c.test", "a@b.test.", "ä@b.test", "a@b@c"]) {
      expect(mailboxProblem(bad)).not.toBeNull();
    }
  });
});

describe("MIME parameters and attachments", () => {
  test("parameters: quoted strings, comments, RFC 2231 sections, first of a name wins", () => {
    const p = parseParameterized('Multipart/Mixed (c) ; boundary="a;b\\"c" (x); name*0*=utf-8\'\'a; Boundary=z');
    expect(p.value).toBe("multipart/mixed");
    expect(p.params.get("boundary")).toBe('a;b"c');
    expect(p.params.get("name*0*")).toBe("utf-8''a");
  });

  test("an entity from its header fields; Content-Type or Content-Disposition twice is unknown", () => {
    const entity = (...lines: string[]) => entityOf(parseHeaderFields(section(...lines))!);
    expect(entity("X: y")).toMatchObject({ type: "text/plain", disposition: "" });
    expect(isAttachmentEntity(entity("Content-Type: text/plain")!)).toBe(false);
    expect(isAttachmentEntity(entity("Content-Type: text/plain", "Content-Disposition: attachment")!)).toBe(true);
    expect(isAttachmentEntity(entity('Content-Type: text/plain; name="a.txt"')!)).toBe(true);
    expect(isAttachmentEntity(entity("Content-Type: image/png")!)).toBe(true);
    expect(entity("Content-Type: text/plain", "Content-Type: application/pdf")).toBeNull();
    expect(entity("Content-Disposition: inline", "Content-Disposition: attachment")).toBeNull();
  });
});
