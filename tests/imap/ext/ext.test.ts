/** Unit tests of src/imap/ext: base subjects and dates (RFC 5256 §2), SORT, THREAD and ESEARCH (RFC 4731). */
import { describe, expect, test } from "bun:test";
import { compressSet, esearchResponse, esearchResult, parseReturnOptions } from "../../../src/imap/ext/esearch.ts";
import { baseSubject, compareOctets, parseSentDate, sentDate, unicodeCasemap } from "../../../src/imap/ext/keys.ts";
import { parseSortCriteria, type SortMessage, sortMessages } from "../../../src/imap/ext/sort.ts";
import {
  messageIds,
  type ThreadMessage,
  threadOrderedSubject,
  threadReferences,
  threadResponse,
} from "../../../src/imap/ext/thread.ts";

describe("base subject (RFC 5256 §2.1)", () => {
  const cases: ReadonlyArray<[string | null, string, boolean]> = [
    ["Hello", "HELLO", false],
    ["Re: Hello", "HELLO", true],
    ["RE: re:Fwd: FW: hello", "HELLO", true],
    ["Re [list]: Hello", "HELLO", true],
    ["[list] Re: Hello", "HELLO", true],
    ["[list] [other] Hello", "HELLO", false],
    ["[PATCH]", "[PATCH]", false],
    ["[PATCH] ", "[PATCH]", false],
    ["Hello (fwd)", "HELLO", true],
    ["Hello (FWD) (fwd)  ", "HELLO", true],
    ["[fwd: Hello]", "HELLO", true],
    ["[Fwd: Re: [fwd: Hello] (fwd)]", "HELLO", true],
    ["Re: [fwd: Hello]", "HELLO", true],
    ["  hello \t  world  ", "HELLO WORLD", false],
    ["Hello\r\n world", "HELLO WORLD", false],
    ["Re: ", "", true],
    ["", "", false],
    [null, "", false],
    ["Reply needed", "REPLY NEEDED", false],
    ["Fwd:", "", true],
    ["=?UTF-8?B?UmU6IEhlbGxv?=", "HELLO", true],
    ["=?UTF-8?Q?=C3=89t=C3=A9?=", "E\u0301TE\u0301", false],
    ["=?bogus?X?abc?= text", "=?BOGUS?X?ABC?= TEXT", false],
  ];
  for (const [subject, key, reply] of cases) {
    test(JSON.stringify(subject), () => {
      expect(baseSubject(subject)).toEqual({ key, replyOrForward: reply });
    });
  }
});

describe("comparators", () => {
  test("i;unicode-casemap: titlecase then NFKD; ASCII as i;ascii-casemap", () => {
    expect(unicodeCasemap("abcXYZ[]_")).toBe("ABCXYZ[]_");
    expect(unicodeCasemap("é")).toBe("E\u0301");
    expect(unicodeCasemap("ǆ")).toBe("Dz\u030c");
    expect(unicodeCasemap("ß")).toBe("ß");
    expect(unicodeCasemap("ﬁ")).toBe("fi");
  });

  test("code point order, astral characters after the BMP", () => {
    expect(compareOctets("A", "B")).toBe(-1);
    expect(compareOctets("AB", "A")).toBe(1);
    expect(compareOctets("A", "A")).toBe(0);
    expect(compareOctets("\u{1f600}", "\uffff")).toBe(1);
    expect(["b", "a", "\u{1f600}", "\uffee"].sort(compareOctets)).toEqual(["a", "b", "\uffee", "\u{1f600}"]);
  });
});

describe("sent date (RFC 5256 §2.2)", () => {
  const utc = (s: string) => Date.parse(s);
  test("RFC 5322 dates in UTC, obsolete forms, comments", () => {
    expect(parseSentDate("Mon, 2 Nov 2026 11:30:00 +0200")).toBe(utc("2026-11-02T09:30:00Z"));
    expect(parseSentDate("2 Nov 2026 05:00 -0500")).toBe(utc("2026-11-02T10:00:00Z"));
    expect(parseSentDate("Tue, 10 Nov 26 09:00:00 EST")).toBe(utc("2026-11-10T14:00:00Z"));
    expect(parseSentDate("10 Nov 99 09:00:00 GMT")).toBe(utc("1999-11-10T09:00:00Z"));
    expect(parseSentDate("Tue, 10 Nov 2026 09:00:00 +0000 (UTC)")).toBe(utc("2026-11-10T09:00:00Z"));
    expect(parseSentDate("Tue , 10 Nov 2026 09 : 00 : 00 A")).toBe(utc("2026-11-10T09:00:00Z"));
    expect(parseSentDate("10 Nov 2026 09:00:00")).toBe(utc("2026-11-10T09:00:00Z"));
  });

  test("unparseable dates are null, and the internal date stands in", () => {
    for (const bad of ["sometime next week", "", "32 Nov 2026 09:00:00 +0000", "1 Foo 2026 09:00 +0000", null]) {
      expect(parseSentDate(bad)).toBeNull();
    }
    expect(sentDate("garbage", 1234)).toBe(1234);
    expect(sentDate(null, 99)).toBe(99);
  });
});

function sortMessage(id: number, fields: Partial<SortMessage> = {}): SortMessage {
  return {
    id,
    internalDate: id * 1000,
    size: 100,
    date: null,
    subject: null,
    from: null,
    to: null,
    cc: null,
    ...fields,
  };
}

const addr = (mailbox: string, host: string | null = "x.test", name: string | null = null) => ({ name, mailbox, host });

describe("SORT (RFC 5256 §3)", () => {
  test("sort criteria: REVERSE binds to the next key; unknown keys, a trailing REVERSE, no key refused", () => {
    expect(parseSortCriteria(["reverse", "Date", "SUBJECT"])).toEqual([
      { key: "DATE", reverse: true },
      { key: "SUBJECT", reverse: false },
    ]);
    expect(parseSortCriteria([])).toBeNull();
    expect(parseSortCriteria(["DATE", "REVERSE"])).toBeNull();
    expect(parseSortCriteria(["REVERSE", "REVERSE", "DATE"])).toBeNull();
    expect(parseSortCriteria(["MODSEQ"])).toBeNull();
  });

  test("ties keep mailbox order, also under REVERSE", () => {
    const m = [sortMessage(5, { size: 10 }), sortMessage(7, { size: 20 }), sortMessage(9, { size: 10 })];
    expect(sortMessages(m, [{ key: "SIZE", reverse: false }])).toEqual([5, 9, 7]);
    expect(sortMessages(m, [{ key: "SIZE", reverse: true }])).toEqual([7, 5, 9]);
  });

  test("DATE falls back to the internal date; ARRIVAL is the internal date", () => {
    const m = [
      sortMessage(1, { date: "1 Nov 2026 10:00:00 +0000", internalDate: Date.parse("2026-11-05T00:00:00Z") }),
      sortMessage(2, { date: null, internalDate: Date.parse("2026-11-02T00:00:00Z") }),
      sortMessage(3, { date: "bad", internalDate: Date.parse("2026-10-01T00:00:00Z") }),
    ];
    expect(sortMessages(m, parseSortCriteria(["DATE"])!)).toEqual([3, 1, 2]);
    expect(sortMessages(m, parseSortCriteria(["ARRIVAL"])!)).toEqual([3, 2, 1]);
  });

  test("FROM, TO, CC compare the first address's local part; DISPLAYFROM the decoded name or the addr-spec", () => {
    const m = [
      sortMessage(1, { from: [addr("zed", "a.test", "Alice")], to: [addr("b")], cc: null }),
      sortMessage(2, { from: [addr("Bob", "z.test")], to: [addr("Team", null), addr("a")], cc: [addr("c")] }),
      sortMessage(3, { from: [addr("carl", "b.test", "=?UTF-8?Q?=C3=89mile?=")], to: null, cc: [addr("a")] }),
      sortMessage(4, { from: null, to: [addr("a")], cc: null }),
    ];
    expect(sortMessages(m, parseSortCriteria(["FROM"])!)).toEqual([4, 2, 3, 1]);
    expect(sortMessages(m, parseSortCriteria(["TO"])!)).toEqual([3, 4, 1, 2]);
    expect(sortMessages(m, parseSortCriteria(["CC"])!)).toEqual([1, 4, 3, 2]);
    // "", ALICE, BOB@Z.TEST, ÉMILE (E + combining acute, after BOB@…).
    expect(sortMessages(m, parseSortCriteria(["DISPLAYFROM"])!)).toEqual([4, 1, 2, 3]);
    expect(sortMessages(m, parseSortCriteria(["DISPLAYTO"])!)).toEqual([3, 4, 1, 2]);
  });

  test("SUBJECT compares base subjects, then the next key", () => {
    const m = [
      sortMessage(1, { subject: "Re: beta", size: 3 }),
      sortMessage(2, { subject: "alpha", size: 2 }),
      sortMessage(3, { subject: "[fwd: BETA]", size: 1 }),
      sortMessage(4, { subject: "Fwd: Alpha", size: 1 }),
    ];
    expect(sortMessages(m, parseSortCriteria(["SUBJECT"])!)).toEqual([2, 4, 1, 3]);
    expect(sortMessages(m, parseSortCriteria(["SUBJECT", "SIZE"])!)).toEqual([4, 2, 3, 1]);
    expect(sortMessages(m, parseSortCriteria(["REVERSE", "SUBJECT", "REVERSE", "SIZE"])!)).toEqual([1, 3, 2, 4]);
  });
});

function msg(id: number, fields: Partial<ThreadMessage> = {}): ThreadMessage {
  return {
    id,
    internalDate: id * 60_000,
    date: null,
    subject: null,
    messageId: `<m${id}@x.test>`,
    inReplyTo: null,
    references: null,
    ...fields,
  };
}

describe("THREAD (RFC 5256 §4)", () => {
  test("msg-ids of a References header: brackets, folding, comments, ids without @ dropped", () => {
    expect(messageIds("<a@x> \r\n <b@y>(c <c@z>) <nope> < d @ w >")).toEqual(["a@x", "b@y", "d@w"]);
    expect(messageIds(null)).toEqual([]);
  });

  test("the THREAD response syntax (§5)", () => {
    expect(threadResponse([])).toBe("* THREAD");
    expect(
      threadResponse([
        { id: 1, children: [] },
        { id: 2, children: [{ id: 3, children: [{ id: 4, children: [] }] }] },
        {
          id: 5,
          children: [
            { id: 6, children: [] },
            { id: 7, children: [{ id: 8, children: [] }] },
          ],
        },
        {
          id: null,
          children: [
            { id: 9, children: [] },
            { id: 10, children: [] },
          ],
        },
      ]),
    ).toBe("* THREAD (1)(2 3 4)(5 (6)(7 8))((9)(10))");
  });

  test("ORDEREDSUBJECT: groups by base subject; first by date is the parent; threads by their first date", () => {
    const t = threadOrderedSubject([
      msg(1, { subject: "Re: b", internalDate: 5 }),
      msg(2, { subject: "a", internalDate: 3 }),
      msg(3, { subject: "B", internalDate: 4 }),
      msg(4, { subject: "re: A", internalDate: 1 }),
      msg(5, { subject: "b", internalDate: 4 }),
      msg(6, { subject: "c", internalDate: 2 }),
    ]);
    expect(threadResponse(t)).toBe("* THREAD (4 2)(6)(3 (5)(1))");
  });

  test("REFERENCES: chains, a missing parent becomes a placeholder root, In-Reply-To without References", () => {
    const t = threadReferences([
      msg(1, { subject: "topic" }),
      msg(2, { subject: "Re: topic", references: "<m1@x.test>" }),
      msg(3, { subject: "Re: topic", references: "<m1@x.test> <m2@x.test>" }),
      msg(4, { subject: "other", references: "<gone@x.test>" }),
      msg(5, { subject: "Re: other", references: "<gone@x.test>" }),
      msg(6, { subject: "third", inReplyTo: "<m3@x.test> <m1@x.test>" }),
    ]);
    // 6 answers 3 (the first id of In-Reply-To); 4 and 5 share the missing <gone>, kept as a placeholder.
    expect(threadResponse(t)).toBe("* THREAD (1 2 3 6)((4)(5))");
  });

  test("REFERENCES: a placeholder with one child at the root is replaced by it; inner placeholders vanish", () => {
    const t = threadReferences([
      msg(1, { subject: "x", references: "<gone@x.test>" }),
      msg(2, { subject: "y" }),
      msg(3, { subject: "z", references: "<m2@x.test> <gone2@x.test>" }),
    ]);
    expect(threadResponse(t)).toBe("* THREAD (1)(2 3)");
  });

  test("REFERENCES: subject merging (§4 step 5): reply under original, two originals under a placeholder", () => {
    const t = threadReferences([
      msg(1, { subject: "Lunch?" }),
      msg(2, { subject: "Re: Lunch?" }),
      msg(3, { subject: "lunch?" }),
      msg(4, { subject: "Other" }),
    ]);
    expect(threadResponse(t)).toBe("* THREAD ((1 2)(3))(4)");
    const u = threadReferences([msg(1, { subject: "Plan" }), msg(2, { subject: "Re: plan" })]);
    expect(threadResponse(u)).toBe("* THREAD (1 2)");
  });

  test("REFERENCES: duplicate Message-IDs, loops and self references do not break the tree", () => {
    const t = threadReferences([
      msg(1, { subject: "a", messageId: "<dup@x.test>" }),
      msg(2, { subject: "b", messageId: "<dup@x.test>" }),
      msg(3, { subject: "c", messageId: "<la@x.test>", references: "<lb@x.test>" }),
      msg(4, { subject: "d", messageId: "<lb@x.test>", references: "<la@x.test>" }),
      msg(5, { subject: "e", messageId: "<self@x.test>", references: "<self@x.test>" }),
      msg(6, { subject: "f", references: "<dup@x.test>" }),
    ]);
    expect(threadResponse(t)).toBe("* THREAD (1 6)(2)(4 3)(5)");
  });

  test("REFERENCES: siblings by sent date, equal dates by mailbox order, a placeholder by its first child", () => {
    const t = threadReferences([
      msg(1, { subject: "p", date: "1 Nov 2026 12:00 +0000" }),
      msg(2, { subject: "q", references: "<m1@x.test>", date: "1 Nov 2026 14:00 +0000" }),
      msg(3, { subject: "r", references: "<m1@x.test>", date: "1 Nov 2026 13:00 +0000" }),
      msg(4, { subject: "s", references: "<m1@x.test>", date: "1 Nov 2026 13:00 +0000" }),
      msg(5, { subject: "t", references: "<none@x.test>", date: "1 Nov 2026 11:00 +0000" }),
      msg(6, { subject: "u", references: "<none@x.test>", date: "1 Nov 2026 15:00 +0000" }),
    ]);
    expect(threadResponse(t)).toBe("* THREAD ((5)(6))(1 (3)(4)(2))");
  });
});

describe("ESEARCH (RFC 4731)", () => {
  test("sequence-set compression", () => {
    expect(compressSet([])).toBe("");
    expect(compressSet([7, 1, 2, 3, 3, 9, 10])).toBe("1:3,7,9:10");
    expect(compressSet([5])).toBe("5");
  });

  test("RETURN options: () is ALL; unknown or repeated options refused", () => {
    expect(parseReturnOptions([])).toEqual(["ALL"]);
    expect(parseReturnOptions(["min", "COUNT"])).toEqual(["MIN", "COUNT"]);
    expect(parseReturnOptions(["SAVE"])).toBeNull();
    expect(parseReturnOptions(["MIN", "min"])).toBeNull();
  });

  test("MIN, MAX, COUNT, ALL; empty results keep COUNT only", () => {
    expect(esearchResult([4, 2, 3, 9])).toEqual({ min: 2, max: 9, count: 4, all: "2:4,9" });
    expect(esearchResponse("A1", true, [4, 2, 3, 9], ["COUNT", "ALL", "MAX", "MIN"])).toBe(
      '* ESEARCH (TAG "A1") UID MIN 2 MAX 9 ALL 2:4,9 COUNT 4',
    );
    expect(esearchResponse("t", false, [], ["MIN", "MAX", "ALL", "COUNT"])).toBe('* ESEARCH (TAG "t") COUNT 0');
    expect(esearchResponse("t", false, [], ["ALL"])).toBe('* ESEARCH (TAG "t")');
    expect(esearchResponse(null, false, [1, 2], [])).toBe("* ESEARCH ALL 1:2");
  });
});
