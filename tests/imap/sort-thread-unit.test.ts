/**
 * Unit tests of ESORT's reply (RFC 5267 §3.2), THREAD's header reading, REFERENCES step 1.C and its limit on
 * the ids linked per message (RFC 5256 §4).
 */
import { describe, expect, test } from "bun:test";
import { esortResponse } from "../../src/imap/commands/sort.ts";
import { headerFields } from "../../src/imap/commands/thread.ts";
import { baseSubject } from "../../src/imap/ext/keys.ts";
import {
  referencesOf,
  type ThreadMessage,
  ThreadTooLarge,
  thread,
  threadReferences,
  threadResponse,
} from "../../src/imap/ext/thread.ts";
import { MAX_THREAD_LINK_STEPS, MAX_THREAD_REFERENCES, THREAD_SUBJECT_CHARS } from "../../src/imap/limits.ts";

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

describe(`REFERENCES links the last MAX_THREAD_REFERENCES (${MAX_THREAD_REFERENCES}) ids of a message`, () => {
  const refs = (n: number) => Array.from({ length: n }, (_, i) => `<r${i}@x>`).join(" ");
  test("at the limit all of them; past it the last ones, so the parent is the same", () => {
    expect(referencesOf({ references: refs(MAX_THREAD_REFERENCES), inReplyTo: null })).toHaveLength(
      MAX_THREAD_REFERENCES,
    );
    const past = referencesOf({ references: refs(MAX_THREAD_REFERENCES + 1), inReplyTo: null });
    expect(past).toHaveLength(MAX_THREAD_REFERENCES);
    expect(past[0]).toBe("r1@x");
    expect(past.at(-1)).toBe(`r${MAX_THREAD_REFERENCES}@x`);
    // 640 ids, as 16 KiB of References holds: still 32 nodes, and the message still under its parent.
    const many = `${refs(640)} <parent@x>`;
    expect(referencesOf({ references: many, inReplyTo: null })).toHaveLength(MAX_THREAD_REFERENCES);
    const t = threadReferences([
      { id: 1, internalDate: 0, date: null, subject: "s", messageId: "<parent@x>", inReplyTo: null, references: null },
      { id: 2, internalDate: 1, date: null, subject: "s", messageId: "<child@x>", inReplyTo: null, references: many },
    ]);
    expect(threadResponse(t)).toBe("* THREAD (1 2)");
  });

  test("without References, the first msg-id of In-Reply-To", () => {
    expect(referencesOf({ references: null, inReplyTo: "<a@x> <b@x>" })).toEqual(["a@x"]);
  });
});

describe("THREAD over reply chains as deep as they are long (no recursion)", () => {
  /** Message `i` of a chain: <m{i}>, a reply to <m{i-1}> by References or In-Reply-To only. */
  const link = (id: number, i: number, by: "references" | "in-reply-to"): ThreadMessage => ({
    id,
    internalDate: Date.UTC(2026, 0, 1) + i * 1000,
    date: null,
    subject: i === 1 ? "chain" : "Re: chain",
    messageId: `<m${i}@chain.test>`,
    inReplyTo: by === "in-reply-to" && i > 1 ? `<m${i - 1}@chain.test>` : null,
    references: by === "references" && i > 1 ? `<m${i - 1}@chain.test>` : null,
  });
  const leaf = (id: number, i: number): ThreadMessage => ({
    id,
    internalDate: Date.UTC(2026, 0, 1) + i * 1000 + 500,
    date: null,
    subject: "Re: chain",
    messageId: `<leaf${i}@chain.test>`,
    inReplyTo: null,
    references: `<m${i}@chain.test>`,
  });
  /** `n` messages, each answering the one before: `(1 2 3 … n)` (§5: a single child follows its parent). */
  const flat = (n: number): string => `* THREAD (${Array.from({ length: n }, (_, k) => k + 1).join(" ")})`;
  /** The chain of `branchy(n)`: node 2i-1 has the leaf 2i and the next node as children, so every level nests. */
  const nested = (n: number): string => {
    const open: string[] = [];
    for (let i = 1; i < n; i++) open.push(`${2 * i - 1} (${2 * i})(`);
    return `* THREAD (${open.join("")}${2 * n - 1} ${2 * n}${")".repeat(n - 1)})`;
  };
  const branchy = (n: number): ThreadMessage[] => {
    const out: ThreadMessage[] = [];
    for (let i = 1; i <= n; i++) out.push(link(2 * i - 1, i, "references"), leaf(2 * i, i));
    return out;
  };

  test("small chains nest as RFC 5256 §5 writes them", () => {
    const chain = (n: number) => Array.from({ length: n }, (_, k) => link(k + 1, k + 1, "references"));
    expect(threadResponse(threadReferences(chain(1)))).toBe("* THREAD (1)");
    expect(threadResponse(threadReferences(chain(4)))).toBe("* THREAD (1 2 3 4)");
    expect(threadResponse(threadReferences(branchy(1)))).toBe("* THREAD (1 2)");
    expect(threadResponse(threadReferences(branchy(3)))).toBe("* THREAD (1 (2)(3 (4)(5 6)))");
    expect(nested(3)).toBe("* THREAD (1 (2)(3 (4)(5 6)))");
    // A second reply to 2, later than 3: 2 has two children.
    const fork = [...chain(3), { ...link(4, 3, "references"), messageId: "<fork@chain.test>" }];
    expect(threadResponse(threadReferences(fork))).toBe("* THREAD (1 2 (3)(4))");
    // A missing parent (placeholder) with two replies stays a placeholder at the root (§4 step 3.B).
    const orphans = [link(1, 2, "references"), { ...link(2, 2, "references"), messageId: "<other@chain.test>" }];
    expect(threadResponse(threadReferences(orphans))).toBe("* THREAD ((1)(2))");
    expect(threadResponse(thread("ORDEREDSUBJECT", chain(4)))).toBe("* THREAD (1 (2)(3)(4))");
  });

  // The recursive passes exhausted the call stack from about 20,000 links (a chain of 22,000, or 20,000 branching).
  const N = 50_000;

  test(`a chain of ${N} messages linked by References, in mailbox order and reversed`, () => {
    const chain = Array.from({ length: N }, (_, k) => link(k + 1, k + 1, "references"));
    expect(threadResponse(threadReferences(chain))).toBe(flat(N));
    // Replies before the messages they answer (the parents are placeholders first, filled later): the root is the
    // last message in mailbox order.
    const reversed = chain.map((m, k) => ({ ...m, id: N - k })).reverse();
    const down = Array.from({ length: N }, (_, k) => N - k).join(" ");
    expect(threadResponse(threadReferences(reversed))).toBe(`* THREAD (${down})`);
  });

  test(`a chain of ${N} messages linked by In-Reply-To only`, () => {
    const chain = Array.from({ length: N }, (_, k) => link(k + 1, k + 1, "in-reply-to"));
    expect(threadResponse(thread("REFERENCES", chain))).toBe(flat(N));
  });

  test(`a chain of ${N} messages, each with a second reply: ${N} levels of nested parentheses`, () => {
    expect(threadResponse(threadReferences(branchy(N)))).toBe(nested(N));
  });

  test(`a chain of ${N} whose first message is missing: one placeholder at the root, pruned`, () => {
    const chain = Array.from({ length: N }, (_, k) => link(k + 1, k + 2, "references"));
    expect(threadResponse(threadReferences(chain))).toBe(flat(N));
  });
});

describe("what a sender can make THREAD cost", () => {
  const base = { internalDate: 0, date: null, subject: "s", inReplyTo: null } as const;

  test(`the base subject reads THREAD_SUBJECT_CHARS (${THREAD_SUBJECT_CHARS}) characters of a Subject`, () => {
    // 16 KiB of blobs took some 90 ms per message when every character was read (one blob removed per pass).
    const blobs = "[a] ".repeat(4096);
    const started = performance.now();
    for (let i = 0; i < 50; i++)
      expect(baseSubject(blobs).key).toBe(baseSubject(blobs.slice(0, THREAD_SUBJECT_CHARS)).key);
    // Generous: 100 extractions of 1 KiB take milliseconds; the old 16 KiB ones took 5 s and more.
    expect(performance.now() - started).toBeLessThan(2000);
    // Subjects that differ only past the limit are one subject; within it, two.
    const long = "x".repeat(THREAD_SUBJECT_CHARS);
    expect(baseSubject(`${long}a`).key).toBe(baseSubject(`${long}b`).key);
    expect(baseSubject(`${long.slice(1)}a`).key).not.toBe(baseSubject(`${long.slice(1)}b`).key);
  });

  /** Chains of placeholders 31 x n/2 deep, and messages whose References walk them 15 times each. */
  function walks(n: number): ThreadMessage[] {
    const half = n / 2;
    const out: ThreadMessage[] = [];
    for (let k = 0; k < half; k++) {
      const refs = Array.from({ length: 32 }, (_, j) => `<a${31 * k + j}@x.test>`).join(" ");
      out.push({ ...base, id: out.length + 1, messageId: `<c${k}@x.test>`, references: refs });
    }
    const pairs = `<a${31 * half}@x.test> <a0@x.test> `.repeat(15);
    for (let k = 0; k < n - half; k++)
      out.push({ ...base, id: out.length + 1, messageId: `<t${k}@x.test>`, references: `${pairs}<j${k}@x.test>` });
    return out;
  }

  test(`REFERENCES stops at MAX_THREAD_LINK_STEPS (${MAX_THREAD_LINK_STEPS}) steps of linking`, () => {
    // 600 such messages are within it; 3,000 held the proxy's thread for some 5 s before, and are refused in
    // about 0.3 s now.
    expect(threadReferences(walks(600)).length).toBeGreaterThan(0);
    const started = performance.now();
    expect(() => threadReferences(walks(3000))).toThrow(ThreadTooLarge);
    // Generous: the refusal comes after MAX_THREAD_LINK_STEPS steps, a fraction of a second.
    expect(performance.now() - started).toBeLessThan(10_000);
  });

  test("real shapes thread within the steps: 5,000 threads of 10, one thread of 2,000 naming 32 ancestors each", () => {
    const messages: ThreadMessage[] = [];
    for (let t = 0; t < 5000; t++)
      for (let r = 0; r < 10; r++) {
        const refs = Array.from({ length: r }, (_, j) => `<m${t}.${j}@x.test>`).join(" ");
        const m = { ...base, subject: `s${t}`, messageId: `<m${t}.${r}@x.test>`, references: refs || null };
        messages.push({ ...m, id: messages.length + 1 });
      }
    expect(threadReferences(messages).length).toBe(5000);
    const deep: ThreadMessage[] = [];
    for (let r = 0; r < 2000; r++) {
      const refs = Array.from({ length: Math.min(r, 32) }, (_, j) => `<d${r - Math.min(r, 32) + j}@x.test>`);
      deep.push({ ...base, id: r + 1, messageId: `<d${r}@x.test>`, references: refs.join(" ") || null });
    }
    expect(threadReferences(deep).length).toBe(1);
    expect(threadReferences(deep.reverse()).length).toBe(1);
  });
});
