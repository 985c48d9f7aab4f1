/** Unit tests of src/imap/ext/imap-url.ts: the IMAP URLs (RFC 5092) an APPEND with CATENATE may name. */
import { describe, expect, test } from "bun:test";
import { parseMessageUrl } from "../../../src/imap/ext/imap-url.ts";

const WHOLE = { part: [], text: "", fields: [] };

describe("URLs the proxy resolves", () => {
  const cases: ReadonlyArray<[string, object]> = [
    ["/INBOX/;UID=5", { mailbox: "INBOX", uidValidity: null, uid: 5, section: WHOLE, partial: null }],
    [
      "/imaptest;uidvalidity=12345/;uid=1/;section=header",
      { mailbox: "imaptest", uidValidity: 12345, uid: 1, section: { part: [], text: "HEADER", fields: [] } },
    ],
    [
      "/a%2Fb/;UID=2/;SECTION=1.MIME/;PARTIAL=100000.1",
      { mailbox: "a/b", uid: 2, section: { part: [1], text: "MIME" }, partial: { offset: 100000, length: 1 } },
    ],
    ["/Lists/Work/;UID=9", { mailbox: "Lists/Work", uid: 9 }],
    [
      "/x/;uid=1/;section=HEADER.FIELDS%20(FROM%20TO)",
      { section: { part: [], text: "HEADER.FIELDS", fields: ["FROM", "TO"] } },
    ],
    ["/x/;uid=1/;partial=0", { partial: { offset: 0, length: null } }],
    // RFC 5092 §3.3: a mailbox name in UTF-8, %-escaped (not modified UTF-7).
    ["/Entw%C3%BCrfe/;UID=3", { mailbox: "Entwürfe", uid: 3 }],
    ["/INBOX/;UID=4294967295", { uid: 4294967295 }],
  ];
  for (const [url, want] of cases) {
    test(url, () => expect(parseMessageUrl(url)).toMatchObject(want));
  }
});

describe("URLs refused", () => {
  const cases: ReadonlyArray<[string, string]> = [
    ["imap://user@host/INBOX/;UID=1", "an absolute URL (another server or user)"],
    ["INBOX/;UID=1", "a relative path"],
    ["/INBOX", "no message"],
    ["/INBOX?SUBJECT%20x", "a search"],
    ["/INBOX/;UID=0", "UID 0"],
    ["/INBOX/;UID=01", "a leading zero"],
    ["/INBOX/;UID=4294967296", "past 2^32 - 1"],
    ["/INBOX;UIDVALIDITY=0/;UID=1", "UIDVALIDITY 0"],
    ["/INBOX;URLAUTH=x/;UID=1", "another mailbox key"],
    ["/INBOX/;UID=1/;urlauth=anonymous:internal:abc", "URLAUTH"],
    ["/INBOX/;UID=1/;EXPIRE=2030-01-01T00:00:00Z", "EXPIRE"],
    ["/INBOX/;UID=1/;SECTION=5.FOO", "a section that is not a section-spec"],
    ["/INBOX/;UID=1/;SECTION=", "an empty section"],
    ["/INBOX/;UID=1/;PARTIAL=1.0", "a zero length"],
    ["/INBOX/;UID=1/;PARTIAL=1.2.3", "a malformed range"],
    ["/INBOX/;UID=1/;PARTIAL=1/;SECTION=TEXT", "steps out of order"],
    ["/INBOX/;UID=1/;UID=2", "a step twice"],
    ["/%FF/;UID=1", "a mailbox that is not UTF-8"],
    ["/IN%2/;UID=1", "a broken escape"],
    ['/IN"BOX/;UID=1', "a character outside bchar"],
    ["//;UID=1", "an empty mailbox"],
  ];
  for (const [url, why] of cases) {
    test(`${why}: ${url}`, () => expect(parseMessageUrl(url)).toBeNull());
  }
});
