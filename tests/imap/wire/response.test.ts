import { describe, expect, test } from "bun:test";
import {
  Encoder,
  Framer,
  isIdleDone,
  parseAuthenticateLine,
  parseResponse,
  type Response,
  writeResponse,
} from "../../../src/imap/wire/index.ts";
import { MAX_LIST_DEPTH } from "../../../src/imap/wire/limits.ts";
import { bytes, run, splitAt, td } from "./helpers.ts";

function responses(input: string | Uint8Array, chunks?: number[]): Response[] {
  const data = typeof input === "string" ? bytes(input) : input;
  const events = run(new Framer({ role: "client" }), splitAt(data, ...(chunks ?? [])), "accept");
  return events.map((e) => {
    if (e.kind !== "frame") throw new Error(`unexpected ${e.kind}`);
    const r = parseResponse(e.frame);
    if (!r.ok) throw new Error(r.error.message);
    return r.value;
  });
}

function one(input: string): Response {
  const rs = responses(input.endsWith("\n") ? input : input + "\r\n");
  expect(rs.length).toBe(1);
  return rs[0]!;
}

describe("responses: Dovecot-shaped FETCH", () => {
  const body = "From: a@example.org\r\nSubject: hi\r\n\r\nline\r\n* 1 EXPUNGE\r\na1 OK fake\r\n";
  const wire =
    `* 3 FETCH (FLAGS (\\Seen) BODY[] {${body.length}}\r\n${body} UID 42)\r\n` +
    `a1 OK Fetch completed (0.001 + 0.000 secs).\r\n`;

  test("body literal is a byte view and UID after the body is read, at every split", () => {
    const data = bytes(wire);
    for (let i = 0; i <= data.length; i++) {
      const [fetch, ok] = responses(data, [i]);
      if (fetch?.type !== "FETCH") throw new Error("expected FETCH");
      expect(fetch.seq).toBe(3);
      expect(fetch.attrs.map((a) => a.name)).toEqual(["FLAGS", "BODY[]", "UID"]);
      const b = fetch.attrs[1]!;
      if (b.name !== "BODY[]") throw new Error("unreachable");
      expect(b.data).toBeInstanceOf(Uint8Array);
      expect(td.decode(b.data!)).toBe(body);
      expect(fetch.attrs[2]).toEqual({ name: "UID", value: 42 });
      expect(ok).toMatchObject({ type: "status", tag: "a1", status: "OK", code: null });
    }
  });

  test("ENVELOPE, BODYSTRUCTURE, INTERNALDATE, sections with origin, NIL bodies", () => {
    const r = one(
      '* 1 FETCH (UID 7 RFC822.SIZE 1234 INTERNALDATE " 4-Jul-2024 10:00:00 +0000" ' +
        'ENVELOPE ("Thu, 4 Jul 2024 10:00:00 +0000" {5}\r\nHello (("Al" NIL "al" "x.org")) NIL NIL NIL NIL NIL NIL ' +
        '"<id@x>") ' +
        'BODYSTRUCTURE ("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 12 1 NIL NIL NIL NIL) ' +
        'BODY[HEADER.FIELDS (FROM SUBJECT)] {4}\r\nab\r\n BODY[1]<10> NIL RFC822.HEADER "x" BINARY[1] ' +
        "~{2}\r\n\0\x01 BINARY.SIZE[1] 2)",
    );
    if (r.type !== "FETCH") throw new Error("expected FETCH");
    expect(r.attrs.map((a) => a.name)).toEqual([
      "UID",
      "RFC822.SIZE",
      "INTERNALDATE",
      "ENVELOPE",
      "BODYSTRUCTURE",
      "BODY[]",
      "BODY[]",
      "RFC822.HEADER",
      "BINARY[]",
      "BINARY.SIZE",
    ]);
    expect(r.attrs[2]).toMatchObject({ date: { day: 4, month: 7, year: 2024, zone: 0 } });
    const env = r.attrs[3]!;
    if (env.name !== "ENVELOPE" || env.value.type !== "list") throw new Error("bad envelope");
    expect(env.value.value[1]).toEqual({ type: "string", value: bytes("Hello") });
    expect(r.attrs[5]).toMatchObject({ section: { text: "HEADER.FIELDS", fields: ["FROM", "SUBJECT"] }, origin: null });
    expect(r.attrs[6]).toMatchObject({ section: { part: [1] }, origin: 10, data: null });
    expect(r.attrs[8]).toMatchObject({ part: [1], data: Uint8Array.of(0, 1) });
  });

  test("unknown FETCH items are reported for dropping", () => {
    const r = one('* 1 FETCH (UID 1 MODSEQ (12345) X-GM-LABELS ("\\\\Inbox" Work) X-GM-MSGID 123)');
    if (r.type !== "FETCH") throw new Error("expected FETCH");
    expect(r.attrs.map((a) => (a.name === "unknown" ? a.item : a.name))).toEqual([
      "UID",
      "MODSEQ",
      "X-GM-LABELS",
      "X-GM-MSGID",
    ]);
  });
});

const TABLE: Array<[string, Record<string, unknown>]> = [
  ["+ Ready", { type: "continuation", text: "Ready" }],
  ["+", { type: "continuation", text: "" }],
  ["+ dGVzdA==", { type: "continuation", text: "dGVzdA==" }],
  [
    "a1 OK [READ-WRITE] Select completed.",
    { type: "status", tag: "a1", status: "OK", code: { known: true, name: "READ-WRITE" } },
  ],
  ["a1 NO [NONEXISTENT] Mailbox doesn't exist: x", { status: "NO", code: { name: "NONEXISTENT" } }],
  ["a1 BAD Error in IMAP command", { status: "BAD", code: null, text: "Error in IMAP command" }],
  ["a1 OK", { status: "OK", text: "" }],
  ["* BYE Server shutting down", { tag: null, status: "BYE" }],
  ["* PREAUTH ready", { status: "PREAUTH" }],
  ["* OK [UIDVALIDITY 1700000000] UIDs valid", { code: { name: "UIDVALIDITY", value: 1700000000 } }],
  ["* OK [UIDNEXT 43] Predicted next UID", { code: { name: "UIDNEXT", value: 43 } }],
  ["* OK [UNSEEN 3] First unseen.", { code: { name: "UNSEEN", value: 3 } }],
  ["* OK [HIGHESTMODSEQ 123456789012] Highest", { code: { known: true, name: "HIGHESTMODSEQ" } }],
  [
    "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded \\*)] Flags permitted.",
    {
      code: {
        name: "PERMANENTFLAGS",
        flags: ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "$Forwarded", "\\*"],
      },
    },
  ],
  [
    "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN] Dovecot ready.",
    {
      code: {
        name: "CAPABILITY",
        capabilities: ["IMAP4rev1", "SASL-IR", "LOGIN-REFERRALS", "ID", "ENABLE", "IDLE", "LITERAL+", "AUTH=PLAIN"],
      },
    },
  ],
  [
    "a1 OK [APPENDUID 1700000000 44] Append completed.",
    { code: { name: "APPENDUID", uidValidity: 1700000000, uids: [{ start: 44, stop: 44 }] } },
  ],
  [
    "a1 OK [COPYUID 17 1:3,5 10:13] Moved",
    {
      code: {
        name: "COPYUID",
        uidValidity: 17,
        source: [
          { start: 1, stop: 3 },
          { start: 5, stop: 5 },
        ],
        destination: [{ start: 10, stop: 13 }],
      },
    },
  ],
  ["a1 NO [BADCHARSET (UTF-8 US-ASCII)] no", { code: { name: "BADCHARSET", charsets: ["UTF-8", "US-ASCII"] } }],
  ['* OK [JMAPACCESS "https://x/jmap"] JMAP', { code: { known: false, name: "JMAPACCESS", text: '"https://x/jmap"' } }],
  ["* NO [X-UNKNOWN-CODE] hm", { code: { known: false, name: "X-UNKNOWN-CODE" } }],
  ["* 5 EXISTS", { type: "EXISTS", n: 5 }],
  ["* 0 RECENT", { type: "RECENT", n: 0 }],
  ["* 2 EXPUNGE", { type: "EXPUNGE", n: 2 }],
  [
    '* LIST (\\HasNoChildren \\Sent) "/" Sent',
    { type: "LIST", attributes: ["\\HasNoChildren", "\\Sent"], delimiter: "/", mailbox: "Sent", raw: "Sent" },
  ],
  ["* LIST () NIL inbox", { delimiter: null, mailbox: "INBOX" }],
  ['* LIST (\\Noselect) "." "&AEk-NBOX"', { mailbox: null, raw: "&AEk-NBOX" }],
  ['* LSUB () "/" {4}\r\nJunk', { type: "LSUB", mailbox: "Junk" }],
  ['* LIST () "/" "x" ("OLDNAME" ("y"))', { type: "LIST", mailbox: "x" }],
  [
    "* STATUS INBOX (MESSAGES 231 UIDNEXT 44032 UNSEEN 3 SIZE 123456)",
    {
      type: "STATUS",
      mailbox: "INBOX",
      items: [
        ["MESSAGES", 231],
        ["UIDNEXT", 44032],
        ["UNSEEN", 3],
        ["SIZE", 123456],
      ],
    },
  ],
  ["* SEARCH 2 3 6", { type: "SEARCH", numbers: [2, 3, 6] }],
  ["* SEARCH", { type: "SEARCH", numbers: [] }],
  ["* SEARCH 2 (MODSEQ 917162500)", { type: "SEARCH", numbers: [2], modseq: 917162500 }],
  [
    "a OK [MODIFIED 7,9:10] Conditional STORE failed",
    {
      code: {
        known: true,
        name: "MODIFIED",
        set: [
          { start: 7, stop: 7 },
          { start: 9, stop: 10 },
        ],
      },
    },
  ],
  [
    "* 3 FETCH (MODSEQ (624140003) UID 7)",
    { type: "FETCH", attrs: [{ name: "MODSEQ", value: 624140003 }, { name: "UID" }] },
  ],
  ["* SORT 5 3 4", { type: "SORT", numbers: [5, 3, 4] }],
  [
    '* ESEARCH (TAG "a1") UID MIN 2 MAX 9 COUNT 4 ALL 2,4:5,9',
    {
      type: "ESEARCH",
      tag: "a1",
      uid: true,
      min: 2,
      max: 9,
      count: 4,
      all: [
        { start: 2, stop: 2 },
        { start: 4, stop: 5 },
        { start: 9, stop: 9 },
      ],
    },
  ],
  ['* ESEARCH (TAG "a2") COUNT 0', { tag: "a2", uid: false, count: 0, all: null }],
  ["* ESEARCH", { type: "ESEARCH", tag: null }],
  ["* CAPABILITY IMAP4rev1 IDLE", { type: "CAPABILITY", capabilities: ["IMAP4rev1", "IDLE"] }],
  ["* ENABLED QRESYNC", { type: "ENABLED", capabilities: ["QRESYNC"] }],
  ["* FLAGS (\\Answered \\Flagged $Junk)", { type: "FLAGS", flags: ["\\Answered", "\\Flagged", "$Junk"] }],
  [
    "* VANISHED (EARLIER) 300:310,405",
    {
      type: "VANISHED",
      earlier: true,
      uids: [
        { start: 300, stop: 310 },
        { start: 405, stop: 405 },
      ],
    },
  ],
  ["* VANISHED 7", { type: "VANISHED", earlier: false }],
  ['* ID ("name" "Dovecot")', { type: "ID", params: [["name", "Dovecot"]] }],
  ["* ID NIL", { type: "ID", params: null }],
  [
    '* NAMESPACE (("" "/")) (("~" "/")) NIL',
    {
      type: "NAMESPACE",
      personal: [{ prefix: "", delimiter: "/" }],
      other: [{ prefix: "~", delimiter: "/" }],
      shared: null,
    },
  ],
  ['* NAMESPACE (("INBOX." "." "X-PARAM" ("FLAG1"))) NIL NIL', { personal: [{ prefix: "INBOX.", delimiter: "." }] }],
  ["* THREAD (2)(3 6 (4 23)(44 7 96))", { type: "unknown", name: "THREAD" }],
  ['* QUOTA "" (STORAGE 10 512)', { type: "unknown", name: "QUOTA" }],
  ["* 3 XFOO bar", { type: "unknown", name: "XFOO" }],
];

describe("responses: table", () => {
  for (const [input, expected] of TABLE) {
    test(JSON.stringify(input), () => expect(one(input)).toMatchObject(expected));
  }
});

const BAD: string[] = [
  "",
  "garbage",
  "* 1 FETCH UID 1",
  "* 1 FETCH (UID 0)",
  "* 1 FETCH (UID)",
  "* 1 FETCH (BODY[] x)",
  "* OK [UIDNEXT x] bad",
  "* OK [PERMANENTFLAGS] x",
  '* LIST () "//" x',
  "* 99999999999 EXISTS",
  "a1 MAYBE done",
  "* 1 FETCH " + "(".repeat(100) + ")".repeat(100),
  // A header field name is an astring: a literal8 is not one (the `~` must not be read as an atom).
  '* 1 FETCH (BODY[HEADER.FIELDS (~{4}\r\nFROM)] "x")',
];

describe("responses: malformed input gives a typed error", () => {
  for (const input of BAD) {
    test(JSON.stringify(input), () => {
      const events = run(new Framer({ role: "client" }), [bytes(input + "\r\n")], "accept");
      const f = events[0]!;
      if (f.kind !== "frame") throw new Error("expected frame");
      const r = parseResponse(f.frame);
      expect(r.ok).toBe(false);
    });
  }
});

describe("responses: nested past MAX_LIST_DEPTH", () => {
  const deep = `${"(".repeat(MAX_LIST_DEPTH + 1)}"text" "plain"${")".repeat(MAX_LIST_DEPTH + 1)}`;

  test("a FETCH is one with nothing read, its number kept (a message of many MIME levels)", () => {
    expect(one(`* 7 FETCH (UID 9 BODYSTRUCTURE ${deep})`)).toEqual({
      type: "FETCH",
      seq: 7,
      attrs: [],
      unreadable: true,
    });
  });

  test("anything else nested so, and a FETCH broken before, stay errors", () => {
    for (const input of [`* LIST () "/" INBOX ${deep}`, `* 7 FETCH (UID x BODYSTRUCTURE ${deep})`]) {
      const f = run(new Framer({ role: "client" }), [bytes(`${input}\r\n`)], "accept")[0]!;
      if (f.kind !== "frame") throw new Error("expected frame");
      expect(parseResponse(f.frame).ok).toBe(false);
    }
  });
});

describe("responses: read to their end past the framer's literal limit", () => {
  const framed = (input: string) => {
    const f = run(new Framer({ role: "client", limits: { maxLiterals: 1 } }), [bytes(input)], "accept")[0]!;
    if (f.kind !== "frame" || f.frame.truncated !== true) throw new Error("expected a truncated frame");
    return parseResponse(f.frame);
  };

  test("a FETCH is one with nothing read, its number kept", () => {
    const r = framed('* 4 FETCH (UID 2 BODYSTRUCTURE (("name" {1}\r\na) ("name" {1}\r\nb)))\r\n');
    expect(r).toEqual({ ok: true, value: { type: "FETCH", seq: 4, attrs: [], unreadable: true } });
  });

  test("anything else is an error", () => {
    expect(framed('* LIST () "/" {1}\r\na {1}\r\nb\r\n').ok).toBe(false);
    expect(framed("a1 OK {1}\r\na {1}\r\nb\r\n").ok).toBe(false);
  });
});

describe("responses: encode and re-parse", () => {
  for (const [input, expected] of TABLE) {
    const r = one(input);
    if (r.type === "unknown") continue;
    if (r.type === "status" && r.code !== null && !r.code.known) continue;
    if ((r.type === "LIST" || r.type === "STATUS") && r.mailbox === null) continue;
    test(JSON.stringify(input), () => {
      const enc = new Encoder({ side: "server" });
      writeResponse(enc, r);
      const again = responses(enc.finishBytes());
      expect(again.length).toBe(1);
      // Text is sanitized and the raw mailbox spelling canonicalized on the way out.
      const { text: _t1, raw: _r1, ...a } = again[0]! as Record<string, unknown>;
      const { text: _t2, raw: _r2, ...b } = r as Record<string, unknown>;
      expect(a).toMatchObject(b);
      void expected;
    });
  }

  test("FETCH with a body and unknown items: unknown items cannot be written", () => {
    const r = one("* 1 FETCH (UID 1 X-GM-MSGID 5)");
    expect(() => writeResponse(new Encoder({ side: "server" }), r)).toThrow();
  });

  test("FETCH body round trip keeps bytes exactly; large bodies are passed by reference", () => {
    const body = new Uint8Array(100_000);
    for (let i = 0; i < body.length; i++) body[i] = (i * 7 + 1) & 0xff || 1;
    const enc = new Encoder({ side: "server" });
    writeResponse(enc, {
      type: "FETCH",
      seq: 9,
      attrs: [
        { name: "UID", value: 3 },
        { name: "BODY[]", section: { part: [], text: "", fields: [] }, origin: null, data: body },
      ],
    });
    const rounds = enc.finish();
    expect(rounds.length).toBe(1);
    expect(rounds[0]!.includes(body)).toBe(true);
    const parsed = responses(Buffer.concat(rounds[0]!));
    const f = parsed[0]!;
    if (f.type !== "FETCH" || f.attrs[1]?.name !== "BODY[]") throw new Error("expected FETCH");
    expect(f.attrs[1].data).toEqual(body);
  });

  test("status text cannot inject a line", () => {
    const enc = new Encoder({ side: "server" });
    writeResponse(enc, { type: "status", tag: "a", status: "NO", code: null, text: "x\r\nb OK injected" });
    expect(td.decode(enc.finishBytes())).toBe("a NO x  b OK injected\r\n");
  });

  test("strings with CR/LF/8-bit/quote/backslash become literals", () => {
    for (const s of ["a\r\nb", "caf\u00e9", 'say "hi"', "back\\slash", "nul\0"]) {
      const enc = new Encoder({ side: "server" });
      enc.string(s);
      expect(td.decode(enc.finishBytes()).startsWith("{")).toBe(true);
    }
    const enc = new Encoder({ side: "server" });
    enc.string("plain text").sp().astring("atom").sp().astring("NIL").sp().astring("");
    expect(td.decode(enc.finishBytes())).toBe('"plain text" atom "NIL" ""');
  });
});

describe("AUTHENTICATE and IDLE lines", () => {
  test("AUTHENTICATE continuation: base64, empty, cancel, invalid", () => {
    expect(parseAuthenticateLine(bytes("AGJvYgBwdw=="))).toEqual({
      ok: true,
      value: { cancel: false, data: bytes("\0bob\0pw") },
    });
    expect(parseAuthenticateLine(bytes(""))).toEqual({ ok: true, value: { cancel: false, data: new Uint8Array(0) } });
    expect(parseAuthenticateLine(bytes("*"))).toEqual({ ok: true, value: { cancel: true } });
    for (const bad of ["AGJvYgBwdw=", "a b", "AGJv\u00e9", "====", "AB=C"])
      expect(parseAuthenticateLine(bytes(bad)).ok).toBe(false);
  });

  test("IDLE: only DONE", () => {
    expect(isIdleDone(bytes("DONE"))).toBe(true);
    expect(isIdleDone(bytes("done"))).toBe(true);
    for (const bad of ["DONE ", "a NOOP", "DON", "DONEX", ""]) expect(isIdleDone(bytes(bad))).toBe(false);
  });
});

describe("short tokens come back exactly, whatever was parsed before (the decoder reuses recent token strings)", () => {
  test("600 distinct keywords, twice, in FLAGS lists: more than the cache holds, slots collide, are replaced", () => {
    const words = Array.from({ length: 600 }, (_, i) => `$K${i.toString(36)}x${(i * 7919) % 1000}`);
    for (let pass = 0; pass < 2; pass++) {
      for (let i = 0; i < words.length; i += 30) {
        const batch = words.slice(i, i + 30);
        const r = one(`* 1 FETCH (FLAGS (${batch.join(" ")}))`);
        if (r.type !== "FETCH") throw new Error("expected FETCH");
        const flags = r.attrs.find((a) => a.name === "FLAGS");
        expect(flags?.name === "FLAGS" ? flags.flags : null).toEqual(batch);
      }
    }
  });

  test("same length and case-folded twins stay distinct", () => {
    const r = one("* 1 FETCH (FLAGS ($abc $ABC $abd $Abc))");
    if (r.type !== "FETCH" || r.attrs[0]?.name !== "FLAGS") throw new Error("expected FLAGS");
    expect(r.attrs[0].flags).toEqual(["$abc", "$ABC", "$abd", "$Abc"]);
  });
});
