/** Unit tests of ESORT's reply (RFC 5267 §3.2), THREAD's header reading and REFERENCES step 1.C (RFC 5256 §4). */
import { describe, expect, test } from "bun:test";
import { esortResponse } from "../../src/imap/commands/sort.ts";
import { headerFields } from "../../src/imap/commands/thread.ts";
import { type ThreadMessage, threadReferences, threadResponse } from "../../src/imap/ext/thread.ts";

describe("ESORT reply", () => {
  // Each expected line is Dovecot's answer to the same command over the same result.
  test("MIN and MAX are the first and last in sort order; ALL keeps sort order, ascending runs as ranges", () => {
    const sorted = [6, 5, 4, 3, 2, 1];
    expect(esortResponse("t", false, sorted, ["MIN", "MAX", "COUNT", "ALL"])).toBe(
      '* ESEARCH (TAG "t") MIN 6 MAX 1 ALL 6,5,4,3,2,1 COUNT 6',
    );
    expect(esortResponse("t", false, [2, 4, 1, 6, 3, 5], ["ALL"])).toBe('* ESEARCH (TAG "t") ALL 2,4,1,6,3,5');
    expect(esortResponse("t", false, [1, 2, 4, 5, 6], ["ALL"])).toBe('* ESEARCH (TAG "t") ALL 1:2,4:6');
    expect(esortResponse("t", true, [2, 5], ["MIN", "MAX"])).toBe('* ESEARCH (TAG "t") UID MIN 2 MAX 5');
  });

  test("nothing matched: only COUNT 0 when asked for", () => {
    expect(esortResponse("t", false, [], ["COUNT"])).toBe('* ESEARCH (TAG "t") COUNT 0');
    expect(esortResponse("t", false, [], ["MIN", "MAX", "ALL"])).toBe('* ESEARCH (TAG "t")');
    expect(esortResponse("t", true, [], ["ALL"])).toBe('* ESEARCH (TAG "t") UID');
  });
});

describe("THREAD header fields", () => {
  test("unfolded, first occurrence wins, leading blanks removed, names in any case", () => {
    const h = headerFields("Subject:  Re: a\r\n\tfolded\r\nMESSAGE-ID: <x@y>\r\nSubject: second\r\nbroken line\r\n");
    expect(h.get("subject")).toBe("Re: a\tfolded");
    expect(h.get("message-id")).toBe("<x@y>");
    expect(h.has("broken line")).toBe(false);
  });
});

describe("REFERENCES step 1.C", () => {
  const msg = (id: number, messageId: string, references: string | null, hour: number): ThreadMessage => ({
    id,
    internalDate: Date.UTC(2008, 1, 22, hour),
    date: null,
    subject: null,
    messageId,
    inReplyTo: null,
    references,
  });

  test("a message's own References replace a presumed parent even when the new link would make a loop", () => {
    // 2 presumes <c> a child of <a>; 3 (<c>) names <b> as its parent, which is below it: <c> loses <a> as its
    // parent and the loop link is not made. Dovecot answers (3 2)(1).
    const t = threadReferences([
      msg(1, "<a@b>", null, 17),
      msg(2, "<b@b>", "<a@b> <c@b>", 15),
      msg(3, "<c@b>", "<b@b>", 16),
    ]);
    expect(threadResponse(t)).toBe("* THREAD (3 2)(1)");
  });
});
