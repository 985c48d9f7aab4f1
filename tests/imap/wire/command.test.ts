import { describe, expect, test } from "bun:test";
import { type Command, Encoder, Framer, parseCommand, STAR, writeCommand } from "../../../src/imap/wire/index.ts";
import { MAX_CATENATE_URLS, MAX_SEARCH_DEPTH } from "../../../src/imap/wire/limits.ts";
import { bytes, frameOf, run, td } from "./helpers.ts";

function parse(s: string): ReturnType<typeof parseCommand> {
  return parseCommand(frameOf(s.endsWith("\n") ? s : s + "\r\n"));
}

const VALID: Array<[string, Record<string, unknown>]> = [
  ["a CAPABILITY", { tag: "a", name: "CAPABILITY" }],
  // CONDSTORE (RFC 7162 §3.1).
  ["a SELECT INBOX (condstore)", { name: "SELECT", mailbox: "INBOX", condstore: true }],
  ["a EXAMINE INBOX (CONDSTORE)", { name: "EXAMINE", mailbox: "INBOX", condstore: true }],
  ["a FETCH 1 (MODSEQ)", { name: "FETCH", items: [{ type: "MODSEQ" }] }],
  ["a FETCH 1:* FLAGS (CHANGEDSINCE 12)", { name: "FETCH", items: [{ type: "FLAGS" }], changedSince: 12 }],
  [
    "a UID STORE 1 (UNCHANGEDSINCE 0) +FLAGS.SILENT (\\Seen)",
    { name: "STORE", uid: true, action: "add", silent: true, flags: ["\\Seen"], unchangedSince: 0 },
  ],
  ["a SEARCH MODSEQ 5", { name: "SEARCH", criteria: [{ key: "MODSEQ", entry: null, modseq: 5 }] }],
  [
    'a SEARCH 1:3 MODSEQ "/flags/\\\\seen" all 1',
    { criteria: [{ key: "SEQ" }, { key: "MODSEQ", entry: { name: "/flags/\\seen", type: "ALL" }, modseq: 1 }] },
  ],
  ["a STATUS INBOX (HIGHESTMODSEQ)", { name: "STATUS", items: ["HIGHESTMODSEQ"] }],
  ['a LIST "" "*" RETURN (STATUS (HIGHESTMODSEQ))', { name: "LIST", statusItems: ["HIGHESTMODSEQ"] }],
  ["a1.2 noop", { tag: "a1.2", name: "NOOP" }],
  ["A LOGOUT", { name: "LOGOUT" }],
  ["a STARTTLS", { name: "STARTTLS" }],
  ["a IDLE", { name: "IDLE" }],
  ["a UNSELECT", { name: "UNSELECT" }],
  ["a CHECK", { name: "CHECK" }],
  ["a NAMESPACE", { name: "NAMESPACE" }],
  ["a CLOSE", { name: "CLOSE" }],
  ["a EXPUNGE", { name: "EXPUNGE", uid: false, set: null }],
  [
    "a UID EXPUNGE 3:5,9",
    {
      name: "EXPUNGE",
      uid: true,
      set: [
        { start: 3, stop: 5 },
        { start: 9, stop: 9 },
      ],
    },
  ],
  ["a ID NIL", { name: "ID", params: null }],
  [
    'a ID ("name" "agent" "version" NIL)',
    {
      name: "ID",
      params: [
        ["name", "agent"],
        ["version", null],
      ],
    },
  ],
  ["a ENABLE UTF8=ACCEPT condstore", { name: "ENABLE", capabilities: ["UTF8=ACCEPT", "CONDSTORE"] }],
  ['a LOGIN bob "p a\\"s\\\\s"', { name: "LOGIN", username: "bob", password: 'p a"s\\s' }],
  ["a LOGIN {3+}\r\nbob {5+}\r\np\u00e4ss\r\n", { name: "LOGIN", username: "bob", password: "päss" }],
  ["a AUTHENTICATE PLAIN", { name: "AUTHENTICATE", mechanism: "PLAIN", initialResponse: null }],
  ["a AUTHENTICATE plain =", { name: "AUTHENTICATE", mechanism: "PLAIN", initialResponse: new Uint8Array(0) }],
  ["a AUTHENTICATE PLAIN AGJvYgBwdw==", { name: "AUTHENTICATE", initialResponse: bytes("\0bob\0pw") }],
  ['a LIST "" "*"', { name: "LIST", reference: "", pattern: "*", selectOptions: [], returnOptions: [] }],
  ['a LIST "" %', { name: "LIST", pattern: "%" }],
  ['a LIST "" "Caf&AOk-/%"', { name: "LIST", pattern: "Café/%" }],
  [
    'a LIST (SUBSCRIBED) "" "*" RETURN (CHILDREN SPECIAL-USE)',
    { selectOptions: ["SUBSCRIBED"], returnOptions: ["CHILDREN", "SPECIAL-USE"] },
  ],
  ['a LSUB "" *', { name: "LSUB", pattern: "*" }],
  ["a SELECT inbox", { name: "SELECT", mailbox: "INBOX" }],
  ["a SELECT InBoX", { name: "SELECT", mailbox: "INBOX" }],
  ['a EXAMINE "Caf&AOk-"', { name: "EXAMINE", mailbox: "Café" }],
  ["a CREATE Archive/2024", { name: "CREATE", mailbox: "Archive/2024" }],
  ["a DELETE {4}\r\nJunk\r\n", { name: "DELETE", mailbox: "Junk" }],
  ["a SUBSCRIBE x", { name: "SUBSCRIBE", mailbox: "x" }],
  ["a UNSUBSCRIBE x", { name: "UNSUBSCRIBE", mailbox: "x" }],
  [
    "a STATUS INBOX (MESSAGES UNSEEN uidnext)",
    { name: "STATUS", mailbox: "INBOX", items: ["MESSAGES", "UNSEEN", "UIDNEXT"] },
  ],
  ["a RENAME a b", { name: "RENAME", mailbox: "a", newName: "b" }],
  ["a FETCH 1 FLAGS", { name: "FETCH", uid: false, items: [{ type: "FLAGS" }], macro: null }],
  [
    "a FETCH 1:* ALL",
    {
      macro: "ALL",
      items: [{ type: "FLAGS" }, { type: "INTERNALDATE" }, { type: "RFC822.SIZE" }, { type: "ENVELOPE" }],
    },
  ],
  ["a FETCH 1 fast", { macro: "FAST" }],
  ["a FETCH 1 FULL", { macro: "FULL" }],
  ["a UID FETCH 4294967295:* UID", { uid: true, set: [{ start: 4294967295, stop: STAR }], items: [{ type: "UID" }] }],
  [
    "a FETCH 2,4:6 (UID RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE BODY RFC822 RFC822.HEADER RFC822.TEXT)",
    {
      items: [
        "UID",
        "RFC822.SIZE",
        "INTERNALDATE",
        "ENVELOPE",
        "BODYSTRUCTURE",
        "BODY",
        "RFC822",
        "RFC822.HEADER",
        "RFC822.TEXT",
      ].map((type) => ({ type })),
    },
  ],
  [
    "a FETCH 1 BODY[]",
    { items: [{ type: "BODY[]", peek: false, section: { part: [], text: "", fields: [] }, partial: null }] },
  ],
  [
    "a FETCH 1 body.peek[1.2.mime]",
    { items: [{ type: "BODY[]", peek: true, section: { part: [1, 2], text: "MIME" } }] },
  ],
  [
    'a FETCH 1 BODY.PEEK[HEADER.FIELDS.NOT (Bcc "X-Secret")]<0.1024>',
    {
      items: [
        { section: { text: "HEADER.FIELDS.NOT", fields: ["Bcc", "X-Secret"] }, partial: { offset: 0, count: 1024 } },
      ],
    },
  ],
  [
    "a FETCH 1 BODY.PEEK[HEADER.FIELDS ({4+}\r\nFrom To)]",
    { items: [{ section: { text: "HEADER.FIELDS", fields: ["From", "To"] } }] },
  ],
  [
    "a FETCH 1 (BODY[TEXT] BODY[3.HEADER])",
    { items: [{ section: { text: "TEXT" } }, { section: { part: [3], text: "HEADER" } }] },
  ],
  [
    "a FETCH 1 (BINARY[1] BINARY.PEEK[]<5.10> BINARY.SIZE[2.1])",
    {
      items: [
        { type: "BINARY[]", peek: false, part: [1] },
        { type: "BINARY[]", peek: true, part: [], partial: { offset: 5, count: 10 } },
        { type: "BINARY.SIZE", part: [2, 1] },
      ],
    },
  ],
  ["a STORE 1:3 FLAGS (\\Seen)", { name: "STORE", action: "set", silent: false, flags: ["\\Seen"] }],
  ["a STORE 1 +FLAGS.SILENT (\\Deleted $Label)", { action: "add", silent: true, flags: ["\\Deleted", "$Label"] }],
  ["a UID STORE 1 -flags \\Flagged \\Draft", { uid: true, action: "remove", flags: ["\\Flagged", "\\Draft"] }],
  ["a STORE 1 +FLAGS (\\DELETED)", { flags: ["\\DELETED"] }],
  ["a STORE 1 FLAGS ()", { flags: [] }],
  ["a COPY 1:2 Trash", { name: "COPY", uid: false, mailbox: "Trash" }],
  ["a UID MOVE 1:* Archive", { name: "MOVE", uid: true, mailbox: "Archive" }],
  ["a SEARCH ALL", { name: "SEARCH", uid: false, returnOptions: null, charset: null, criteria: [{ key: "ALL" }] }],
  ["a SEARCH RETURN () ALL", { returnOptions: ["ALL"] }],
  ["a SEARCH RETURN (COUNT MIN MAX) ALL", { returnOptions: ["COUNT", "MIN", "MAX"] }],
  ["a UID SEARCH CHARSET utf-8 SUBJECT {5}\r\ncaf\u00e9\r\n", { uid: true, charset: "UTF-8" }],
  ["a SEARCH NOT FROM notifications", { criteria: [{ key: "NOT", operand: { key: "FROM", value: "notifications" } }] }],
  [
    "a SEARCH OR (SEEN FLAGGED) NOT (DELETED) 1:5,*",
    {
      criteria: [
        { key: "OR", left: { key: "AND" }, right: { key: "NOT" } },
        {
          key: "SEQ",
          set: [
            { start: 1, stop: 5 },
            { start: STAR, stop: STAR },
          ],
        },
      ],
    },
  ],
  [
    'a SEARCH UID 1:100 SINCE 1-Jan-2024 BEFORE "15-feb-2024" ON 01-Mar-2024',
    {
      criteria: [
        { key: "UID" },
        { key: "SINCE", date: { year: 2024, month: 1, day: 1 } },
        { key: "BEFORE", date: { day: 15, month: 2 } },
        { key: "ON" },
      ],
    },
  ],
  [
    'a SEARCH HEADER Message-ID "<x@y>" LARGER 100 SMALLER 9999999999 KEYWORD $Junk',
    {
      criteria: [
        { key: "HEADER", field: "Message-ID", value: "<x@y>" },
        { key: "LARGER", size: 100 },
        { key: "SMALLER", size: 9999999999 },
        { key: "KEYWORD", flag: "$Junk" },
      ],
    },
  ],
  [
    "a SEARCH YOUNGER 3600 ANSWERED UNANSWERED DRAFT UNDRAFT NEW OLD RECENT UNSEEN TEXT x BODY y CC z BCC w TO v " +
      "SENTSINCE 1-Jan-2000",
    { name: "SEARCH" },
  ],
  [
    "a SORT (REVERSE DATE SUBJECT) UTF-8 ALL",
    {
      name: "SORT",
      sortCriteria: [
        { key: "DATE", reverse: true },
        { key: "SUBJECT", reverse: false },
      ],
      charset: "UTF-8",
    },
  ],
  ["a UID SORT (ARRIVAL) US-ASCII SEEN", { uid: true, returnOptions: null }],
  ["a SORT RETURN (MIN COUNT) (DATE) UTF-8 ALL", { name: "SORT", returnOptions: ["MIN", "COUNT"] }],
  ["a SORT RETURN () (DATE) UTF-8 ALL", { name: "SORT", returnOptions: ["ALL"] }],
  ["a THREAD REFERENCES UTF-8 ALL", { name: "THREAD", uid: false, algorithm: "REFERENCES", charset: "UTF-8" }],
  ["a UID THREAD orderedsubject US-ASCII SEEN", { name: "THREAD", uid: true, algorithm: "ORDEREDSUBJECT" }],
  [
    "a APPEND Drafts {5}\r\nhello\r\n",
    { name: "APPEND", mailbox: "Drafts", flags: [], date: null, message: bytes("hello") },
  ],
  [
    'a APPEND Drafts (\\Seen \\Draft) "04-Jul-2024 10:00:00 -0130" {2+}\r\nhi\r\n',
    { flags: ["\\Seen", "\\Draft"], date: { day: 4, month: 7, year: 2024, hour: 10, zone: -90 } },
  ],
  ["a APPEND INBOX () {0}\r\n\r\n", { flags: [], message: new Uint8Array(0) }],
  ["a compress deflate", { name: "COMPRESS", mechanism: "DEFLATE" }],
  // MULTIAPPEND (RFC 3502): every message with its own options; the first one's are repeated at the top level.
  [
    "a APPEND Drafts {1}\r\nx (\\Seen) {1}\r\ny\r\n",
    {
      message: bytes("x"),
      messages: [
        { flags: [], date: null, message: bytes("x"), binary: false },
        { flags: ["\\Seen"], date: null, message: bytes("y"), binary: false },
      ],
    },
  ],
];

describe("commands: valid", () => {
  for (const [input, expected] of VALID) {
    test(JSON.stringify(input), () => {
      const r = parse(input);
      if (!r.ok) throw new Error(r.error.message);
      expect(r.value).toMatchObject(expected);
    });
  }
});

const INVALID: Array<[string, string]> = [
  ["", "syntax"],
  ["a", "syntax"],
  ["+ NOOP", "syntax"],
  ["a NOOP extra", "syntax"],
  ["a FOO", "unknown-command"],
  ['a XLIST "" *', "unknown-command"],
  ["a COMPRESS", "syntax"],
  ["a NOTIFY SET STATUS", "unknown-command"],
  ["a SETACL Secret evil lr", "unknown-command"],
  ['a SETMETADATA INBOX (/private/comment "x")', "unknown-command"],
  ["a URLFETCH x", "unknown-command"],
  ["a UID NOOP", "unknown-command"],
  ["a UID", "unknown-command"],
  ["a SELECT INBOX (QRESYNC (1 1))", "unsupported"],
  ["a SELECT INBOX (QRESYNC (1 1))", "unsupported"],
  ["a SELECT INBOX (CONDSTORE) (CONDSTORE)", "syntax"],
  ["a CREATE x (CONDSTORE)", "unsupported"],
  ['a SELECT "&AEk-NBOX"', "mailbox-name"],
  ['a SELECT "Caf\u00e9"', "mailbox-name"],
  ['a SELECT "a*"', "mailbox-name"],
  ['a SELECT "a%"', "mailbox-name"],
  ['a SELECT ""', "mailbox-name"],
  ['a SELECT "&AAA-"', "mailbox-name"],
  ["a FETCH 1 (X-GM-LABELS)", "unsupported"],
  ["a UID FETCH 1 (X-GM-MSGID)", "unsupported"],
  ["a FETCH 1:* FLAGS (CHANGEDSINCE 1 VANISHED)", "syntax"],
  ["a FETCH 1:* FLAGS (CHANGEDSINCE 0)", "syntax"],
  ["a FETCH 1:* FLAGS (CHANGEDSINCE 9007199254740992)", "syntax"],
  ["a FETCH 1:* FLAGS (PARTIAL 1:5)", "unsupported"],
  ["a FETCH 1 BODY[4.MIMEX]", "syntax"],
  ["a FETCH 1 BODY[MIME]", "syntax"],
  ["a FETCH 1 BODY[0]", "syntax"],
  ["a FETCH 1 BODY[HEADER.FIELDS ()]", "syntax"],
  ["a FETCH 1 BODY[]<1.0>", "syntax"],
  ["a FETCH 0 FLAGS", "syntax"],
  ["a FETCH 4294967296 FLAGS", "syntax"],
  ["a FETCH $ BODY[]", "unsupported"],
  ["a FETCH 1 ()", "syntax"],
  ["a SEARCH RETURN (SAVE) ALL", "unsupported"],
  ['a SEARCH X-GM-RAW "in:anywhere"', "unsupported"],
  ['a SEARCH MODSEQ "/flags/\\seen" some 5', "syntax"],
  ['a SEARCH MODSEQ "/other/x" all 5', "syntax"],
  ["a SORT (DATE) UTF-8 MODSEQ 5", "unsupported"],
  ["a THREAD REFERENCES UTF-8 OR SEEN MODSEQ 5", "unsupported"],
  ["a SEARCH FUZZY TEXT x", "unsupported"],
  ["a SEARCH CHARSET KOI8-R ALL", "bad-charset"],
  ["a SEARCH", "syntax"],
  ["a SEARCH ()", "syntax"],
  ["a SEARCH SINCE 32-Jan-2024", "syntax"],
  ["a SEARCH SINCE 1-Foo-2024", "syntax"],
  ["a SEARCH " + "NOT ".repeat(40) + "ALL", "nesting-too-deep"],
  ["a SEARCH " + "(".repeat(40) + "ALL" + ")".repeat(40), "nesting-too-deep"],
  ["a STORE 1 +X-GM-LABELS (\\Inbox)", "unsupported"],
  ["a STORE 1 -X-GM-LABELS (\\Inbox)", "unsupported"],
  ["a STORE 1 (UNCHANGEDSINCE) +FLAGS (\\Seen)", "syntax"],
  ["a STORE 1 (NOTCHANGED 5) +FLAGS (\\Seen)", "unsupported"],
  ["a STORE 1 +FLAGS (\\*)", "syntax"],
  // \Recent is the server's (RFC 3501 §2.3.2); an extension flag the proxy does not know is not relayed.
  ["a STORE 1 +FLAGS (\\Recent)", "unsupported"],
  ["a STORE 1 FLAGS \\Seen \\Foo", "unsupported"],
  ["a APPEND Drafts (\\Recent) {1}\r\nx\r\n", "unsupported"],
  ["a APPEND Drafts (\\Seen \\X-Bogus) {1}\r\nx\r\n", "unsupported"],
  ["a APPEND Drafts {1}\r\nx (\\recent) {1}\r\ny\r\n", "unsupported"],
  // CATENATE (RFC 4469 §5): at least one part, TEXT with a literal (not literal8), URL with a printable astring.
  ["a APPEND Drafts CATENATE ()", "syntax"],
  ['a APPEND Drafts CATENATE URL "/INBOX/;UID=1"', "syntax"],
  ['a APPEND Drafts CATENATE (URL "/INBOX/;UID=1" FOO x)', "syntax"],
  ['a APPEND Drafts CATENATE (TEXT "abc")', "syntax"],
  ['a APPEND Drafts CATENATE (URL "/IN BOX/;UID=1")', "syntax"],
  ["a APPEND Drafts CATENATE (URL {5}\r\n/\xe9/;U)", "syntax"],
  [
    `a APPEND Drafts CATENATE (${'URL "/INBOX/;UID=1" '.repeat(MAX_CATENATE_URLS)}URL "/INBOX/;UID=1")`,
    "too-many-items",
  ],
  [
    `a APPEND Drafts CATENATE (${Array(MAX_CATENATE_URLS / 2)
      .fill("URL x")
      .join(" ")}) CATENATE (${Array(MAX_CATENATE_URLS / 2)
      .fill("URL x")
      .join(" ")} URL x)`,
    "too-many-items",
  ],
  ["a APPEND Drafts {1}\r\nx (\\Seen)\r\n", "syntax"],
  ["a APPEND Drafts {3}\r\na\0b\r\n", "syntax"],
  ["a SORT RETURN (SAVE) (DATE) UTF-8 ALL", "unsupported"],
  ["a SORT RETURN (PARTIAL 1:10) (DATE) UTF-8 ALL", "unsupported"],
  ["a THREAD REFS UTF-8 ALL", "unsupported"],
  ["a THREAD REFERENCES KOI8-R ALL", "bad-charset"],
  ["a THREAD REFERENCES UTF-8", "syntax"],
  ["a SORT (DATE) KOI8-R ALL", "bad-charset"],
  ["a SORT (X-GM) UTF-8 ALL", "unsupported"],
  ["a SORT () UTF-8 ALL", "syntax"],
  ["a UID SORT RETURN (COUNT) () UTF-8 ALL", "syntax"],
  ['a LIST (RECURSIVEMATCH) "" "%"', "syntax"],
  ["a STATUS INBOX (MAILBOXID)", "unsupported"],
  ["a STATUS INBOX ()", "syntax"],
  ['a LOGIN "unterminated', "syntax"],
  ['a LOGIN "a\\x" b', "syntax"],
  ["a LOGIN {2}\r\n\xff\xfe b\r\n", "syntax"],
  ["a AUTHENTICATE PLAIN not*base64", "syntax"],
  ["a AUTHENTICATE PLAIN AGJvYgBwdw=", "syntax"],
  ["a ENABLE", "syntax"],
];

describe("commands: SEARCH nesting at MAX_SEARCH_DEPTH and one past it", () => {
  // Each NOT, OR operand or parenthesized list is one level; the key inside the last is at its depth.
  const nested: Array<[string, (n: number) => string]> = [
    ["NOT", (n) => "NOT ".repeat(n) + "ALL"],
    ["OR", (n) => "OR SEEN ".repeat(n) + "ALL"],
    ["parentheses", (n) => "(".repeat(n) + "ALL" + ")".repeat(n)],
  ];
  for (const [name, criteria] of nested) {
    test(name, () => {
      const at = parse(`a SEARCH ${criteria(MAX_SEARCH_DEPTH)}`);
      if (!at.ok) throw new Error(at.error.message);
      const past = parse(`a SEARCH ${criteria(MAX_SEARCH_DEPTH + 1)}`);
      expect(past.ok).toBe(false);
      if (!past.ok) expect(past.error.code).toBe("nesting-too-deep");
    });
  }
});

describe("commands: invalid or refused", () => {
  for (const [input, code] of INVALID) {
    test(JSON.stringify(input), () => {
      const frameInput = input.endsWith("\n") ? input : input + "\r\n";
      // Bytes given as \xNN in the table are raw octets, not UTF-8.
      const data = Uint8Array.from(frameInput, (c) => c.charCodeAt(0) & 0xff);
      const events = run(new Framer({ role: "server" }), [data], "accept");
      const frame = events.find((e) => e.kind === "frame");
      if (frame === undefined || frame.kind !== "frame") throw new Error("no frame");
      const r = parseCommand(frame.frame);
      expect(r.ok).toBe(false);
      if (!r.ok) {
        expect(r.error.code).toBe(code as never);
        expect(r.error.fatal).toBe(false);
      }
    });
  }

  test("errors carry the tag for the BAD reply", () => {
    const r = parse("t17 FETCH 1 (X-GM-LABELS)");
    expect(r.ok ? null : r.error.tag).toBe("t17");
  });

  test("an unknown charset's BAD says which are supported (BADCHARSET, RFC 9051 §6.4.4)", () => {
    for (const input of ["a SEARCH CHARSET KOI8-R ALL", "a SORT (DATE) KOI8-R ALL", "a THREAD REFERENCES KOI8-R ALL"]) {
      const r = parse(input);
      expect(r.ok ? null : r.error.responseCode).toBe("BADCHARSET (US-ASCII UTF-8)");
    }
  });
});

describe("APPEND with CATENATE (RFC 4469 §5)", () => {
  test("each message keeps its parts in order, TEXT as bytes and URL as text", () => {
    const r = parse(
      'a APPEND Drafts (\\Seen) CATENATE (TEXT {3}\r\nabc URL "/INBOX/;UID=1") catenate (url /INBOX/;UID=2)',
    );
    if (!r.ok) throw new Error(r.error.message);
    expect(r.value).toMatchObject({
      name: "APPEND",
      messages: [
        {
          flags: ["\\Seen"],
          catenate: [
            { type: "TEXT", data: bytes("abc") },
            { type: "URL", url: "/INBOX/;UID=1" },
          ],
        },
        { flags: [], catenate: [{ type: "URL", url: "/INBOX/;UID=2" }] },
      ],
    });
  });

  test(`MAX_CATENATE_URLS (${MAX_CATENATE_URLS}) URL parts in one command are read`, () => {
    const r = parse(`a APPEND Drafts CATENATE (${Array(MAX_CATENATE_URLS).fill('URL "/INBOX/;UID=1"').join(" ")})`);
    expect(r.ok).toBe(true);
  });

  test("literal8 in a TEXT part is refused", () => {
    const data = bytes("a APPEND Drafts CATENATE (TEXT ~{1}\r\nx)\r\n");
    const events = run(new Framer({ role: "server", allowLiteral8: true }), [data], "accept");
    const frame = events.find((e) => e.kind === "frame");
    if (frame === undefined || frame.kind !== "frame") throw new Error("no frame");
    const r = parseCommand(frame.frame);
    expect(r.ok ? null : r.error.code).toBe("unsupported");
  });

  test("an assembled message (TEXT parts only) goes upstream as one literal of its parts, in order", () => {
    const r = parse("a APPEND Drafts (\\Seen) CATENATE (TEXT {3}\r\nabc TEXT {0}\r\n TEXT {2}\r\nde)");
    if (!r.ok) throw new Error(r.error.message);
    const enc = new Encoder({ side: "client" });
    writeCommand(enc, r.value);
    expect(td.decode(enc.finishBytes())).toBe("a APPEND Drafts (\\Seen) {5}\r\nabcde\r\n");
  });

  test("a message that was not assembled is never written for upstream", () => {
    const r = parse('a APPEND Drafts CATENATE (URL "/INBOX/;UID=1")');
    if (!r.ok) throw new Error(r.error.message);
    expect(() => writeCommand(new Encoder({ side: "client" }), r.value)).toThrow("must be assembled");
  });
});

describe("commands: encode and re-parse give the same structure", () => {
  for (const [input] of VALID) {
    test(JSON.stringify(input), () => {
      const first = parse(input);
      if (!first.ok) throw new Error(first.error.message);
      const enc = new Encoder({ side: "client" });
      writeCommand(enc, first.value);
      const wire = enc.finishBytes();
      const again = parseCommand(frameOf(td.decode(wire)));
      if (!again.ok) throw new Error(`${again.error.message}: ${td.decode(wire)}`);
      const norm = (c: Command): unknown =>
        JSON.parse(JSON.stringify(c, (_k, v: unknown) => (v instanceof Uint8Array ? Array.from(v) : v)));
      const { macro: _m1, ...a } = norm(first.value) as Record<string, unknown>;
      const { macro: _m2, ...b } = norm(again.value) as Record<string, unknown>;
      expect(b).toEqual(a);
    });
  }

  test("synchronizing literals split the output into rounds", () => {
    const r = parse("a LOGIN bob {2}\r\nä\r\n");
    if (!r.ok) throw new Error(r.error.message);
    const enc = new Encoder({ side: "client" });
    writeCommand(enc, { ...r.value, tag: "P1" } as Command);
    const rounds = enc.finish().map((round) => round.map((c) => td.decode(c)).join(""));
    expect(rounds).toEqual(["P1 LOGIN bob {2}\r\n", "ä\r\n"]);
  });
});
