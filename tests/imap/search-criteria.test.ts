/**
 * How SEARCH, SORT and THREAD turn the agent's sequence and UID sets into upstream criteria over its view
 * (commands/search.ts `upstreamCriteria`, SelectedMailbox spans): the same messages as a direct reading of the sets,
 * in filtered and unfiltered views; a cost that follows the sets' ranges, not the mailbox's size times their
 * number; and the limits MAX_SEARCH_SETS and MAX_SEARCH_NESTED_RANGES at the limit and one past it. The same over a
 * real Dovecot: search-limits.test.ts.
 */
import { describe, expect, test } from "bun:test";
import { upstreamCriteria, visibleMatches } from "../../src/imap/commands/search.ts";
import { MAX_SEARCH_NESTED_RANGES, MAX_SEARCH_SETS, UPSTREAM_SET_RANGES } from "../../src/imap/limits.ts";
import { SelectedMailbox } from "../../src/imap/mailbox.ts";
import { Refusal } from "../../src/imap/refusal.ts";
import { VisibleSet } from "../../src/imap/view.ts";
import { type SearchKey, type SeqSet, STAR } from "../../src/imap/wire/index.ts";

/** A seeded pseudo-random generator (mulberry32), so that a failure can be replayed. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Upstream UIDs 1..n with gaps; visible: every UID, or about a third of them (a filtered folder). */
function mailbox(n: number, filteredView: boolean, rnd: () => number): SelectedMailbox {
  const uids: number[] = [];
  for (let uid = 1; uids.length < n; uid += rnd() < 0.2 ? 3 : 1) uids.push(uid);
  if (!filteredView) return new SelectedMailbox("INBOX", "INBOX", true, uids);
  const visible = uids.filter(() => rnd() < 0.3);
  return new SelectedMailbox("INBOX", "INBOX", true, uids, new VisibleSet(visible, uids[uids.length - 1]!));
}

/** A set of 1-4 ranges, some with `*`, some reversed, some past the end. */
function randomSet(rnd: () => number, max: number): SeqSet {
  const set: { start: number; stop: number }[] = [];
  const count = 1 + Math.floor(rnd() * 4);
  const pick = () => (rnd() < 0.1 ? STAR : 1 + Math.floor(rnd() * max * 1.1));
  for (let i = 0; i < count; i++) set.push({ start: pick(), stop: rnd() < 0.3 ? pick() : pick() });
  return set;
}

/** The UIDs a sequence set names in a search, read directly off the view (RFC 3501 §6.4.4, search.ts clamp). */
function bySequence(box: SelectedMailbox, set: SeqSet): Set<number> {
  const all = box.allUids();
  const n = all.length;
  const out = new Set<number>();
  for (const r of set) {
    const numbers = [r.start, r.stop].filter((x) => x !== STAR);
    const lo = numbers.length === 0 ? n : Math.min(...numbers);
    const hi = numbers.length < 2 ? n : Math.min(Math.max(...numbers), n);
    if (lo >= 1 && lo <= n) for (let k = lo; k <= hi; k++) out.add(all[k - 1]!);
  }
  return out;
}

/** The UIDs a UID set names, read directly off the view (`*` is the highest UID the agent knows). */
function byUid(box: SelectedMailbox, set: SeqSet): Set<number> {
  const all = box.allUids();
  const max = all.length === 0 ? 0 : all[all.length - 1]!;
  const out = new Set<number>();
  for (const r of set) {
    const a = r.start === STAR ? max : r.start;
    const b = r.stop === STAR ? max : r.stop;
    for (const uid of all) if (uid >= Math.min(a, b) && uid <= Math.max(a, b)) out.add(uid);
  }
  return out;
}

/** What upstream would answer to `criteria` (only UID sets, NOT ALL and ALL occur here), then the local step. */
function evaluate(box: SelectedMailbox, keys: readonly SearchKey[]): number[] {
  const { criteria, local } = upstreamCriteria(box, keys);
  const upstream: number[] = [];
  for (let i = 0; i < box.upstreamCount; i++) upstream.push(box.uidOf(i + 1));
  // A UID set sent upstream is made of the view alone: each range from one of the agent's UIDs to another
  // (hidden messages between are covered; the matches are confined to the view below).
  for (const k of criteria)
    if (k.key === "UID") for (const r of k.set) expect(box.isVisible(r.start) && box.isVisible(r.stop)).toBe(true);
  const found = upstream.filter((uid) =>
    criteria.every((k) => {
      if (k.key === "ALL") return true;
      if (k.key === "NOT" && k.operand.key === "ALL") return false;
      if (k.key !== "UID") throw new Error(`unexpected key ${k.key}`);
      return k.set.some((r) => uid >= r.start && uid <= r.stop);
    }),
  );
  return visibleMatches(box, found, local);
}

describe("sets among the keys that must all match: intersected over the view", () => {
  for (const filteredView of [false, true]) {
    test(`${filteredView ? "filtered" : "unfiltered"} view: the messages every set names, no more`, () => {
      const rnd = random(filteredView ? 7 : 11);
      for (let round = 0; round < 300; round++) {
        const box = mailbox(200 + Math.floor(rnd() * 3000), filteredView, rnd);
        const n = box.agentCount;
        const keys: SearchKey[] = [];
        let expected = null as Set<number> | null;
        const count = 1 + Math.floor(rnd() * 4);
        for (let i = 0; i < count; i++) {
          const uid = rnd() < 0.5;
          const set = randomSet(rnd, uid ? (box.allUids().at(-1) ?? 1) : n);
          const key: SearchKey = uid ? { key: "UID", set } : { key: "SEQ", set };
          // Some go inside a parenthesized list: it must all match as well.
          keys.push(rnd() < 0.2 ? { key: "AND", operands: [key] } : key);
          const named = uid ? byUid(box, set) : bySequence(box, set);
          expected = expected === null ? named : new Set([...expected].filter((u) => named.has(u)));
        }
        expect(evaluate(box, keys)).toEqual([...expected!].sort((a, b) => a - b));
      }
    });
  }

  test("filtered: up to UPSTREAM_SET_RANGES ranges go upstream, however many messages; more stay local", () => {
    const uids = Array.from({ length: 5000 }, (_, i) => i + 1);
    // A filter that happens to show every message: the folder is still filtered, its UIDs could be scattered.
    const box = new SelectedMailbox("INBOX", "INBOX", true, uids, new VisibleSet(uids, 5000));
    const long = upstreamCriteria(box, [
      { key: "SEQ", set: [{ start: 1, stop: STAR }] },
      { key: "UID", set: [{ start: 10, stop: 4010 }] },
      { key: "SEEN" },
    ]);
    // 4,001 messages, no hidden one between: one range upstream, no local intersection.
    expect(long).toEqual({
      criteria: [{ key: "UID", set: [{ start: 10, stop: 4010 }] }, { key: "SEEN" }],
      local: null,
    });
    // Nothing in common: nothing matches, and upstream is told so.
    const none = upstreamCriteria(box, [
      { key: "SEQ", set: [{ start: 1, stop: 2 }] },
      { key: "SEQ", set: [{ start: 4, stop: 5 }] },
    ]);
    expect(none.criteria).toEqual([{ key: "NOT", operand: { key: "ALL" } }]);
    // Every other message hidden: a span of the agent's is still one range upstream, hidden messages between
    // covered, so that the set says nothing of them (it was one range per visible message before 2026-12-04).
    const odd = uids.filter((u) => u % 2 === 1);
    const scattered = new SelectedMailbox("INBOX", "INBOX", true, uids, new VisibleSet(odd, 5000));
    const one = upstreamCriteria(scattered, [{ key: "SEQ", set: [{ start: 1, stop: UPSTREAM_SET_RANGES + 1 }] }]);
    expect(one).toEqual({
      criteria: [{ key: "UID", set: [{ start: 1, stop: odd[UPSTREAM_SET_RANGES]! }] }],
      local: null,
    });
    // The agent's own spans are what counts against UPSTREAM_SET_RANGES: at it, upstream; one more, local.
    const spans = (n: number): SeqSet => Array.from({ length: n }, (_, i) => ({ start: 2 * i + 1, stop: 2 * i + 1 }));
    const at = upstreamCriteria(scattered, [{ key: "SEQ", set: spans(UPSTREAM_SET_RANGES) }]);
    expect(at.local).toBeNull();
    expect(at.criteria).toEqual([
      {
        key: "UID",
        set: spans(UPSTREAM_SET_RANGES).map((r) => ({ start: odd[r.start - 1]!, stop: odd[r.start - 1]! })),
      },
    ]);
    const past = upstreamCriteria(scattered, [{ key: "SEQ", set: spans(UPSTREAM_SET_RANGES + 1) }, { key: "SEEN" }]);
    expect(past.criteria).toEqual([{ key: "SEEN" }]);
    expect(past.local).toHaveLength(2 * (UPSTREAM_SET_RANGES + 1));
  });

  test("unfiltered: up to UPSTREAM_SET_RANGES spans go upstream as UID ranges, whatever they hold", () => {
    const box = new SelectedMailbox(
      "INBOX",
      "INBOX",
      true,
      Array.from({ length: 5000 }, (_, i) => 2 * i + 1),
    );
    const long = upstreamCriteria(box, [
      { key: "SEQ", set: [{ start: 1, stop: STAR }] },
      { key: "UID", set: [{ start: 10, stop: 4010 }] },
      { key: "SEEN" },
    ]);
    // UIDs 11..4009 are the messages 6..2005: one range upstream, no local intersection.
    expect(long).toEqual({
      criteria: [{ key: "UID", set: [{ start: 11, stop: 4009 }] }, { key: "SEEN" }],
      local: null,
    });
    const spans = (n: number): SeqSet => Array.from({ length: n }, (_, i) => ({ start: 2 * i + 1, stop: 2 * i + 1 }));
    const at = upstreamCriteria(box, [{ key: "SEQ", set: spans(UPSTREAM_SET_RANGES) }]);
    expect(at.local).toBeNull();
    expect(at.criteria[0]).toMatchObject({ key: "UID" });
    const past = upstreamCriteria(box, [{ key: "SEQ", set: spans(UPSTREAM_SET_RANGES + 1) }, { key: "SEEN" }]);
    // One span more than a command may carry, and more messages too: local, with the other keys upstream.
    expect(past.criteria).toEqual([{ key: "SEEN" }]);
    expect(past.local).toHaveLength(2 * (UPSTREAM_SET_RANGES + 1));
  });
});

describe("cost follows the ranges, not the mailbox times their number", () => {
  // 100,000 messages. Reading each set into its messages, as a set of UIDs per key, cost about 1,000 x 100,000
  // steps for the keys below and kept 64 sets of 100,000 UIDs; intersecting ranges costs milliseconds.
  const box = new SelectedMailbox(
    "INBOX",
    "INBOX",
    true,
    Array.from({ length: 100_000 }, (_, i) => i + 1),
  );

  test("MAX_SEARCH_SETS top-level keys of 250 overlapping ranges each (a 64 KB line)", () => {
    const set: SeqSet = Array.from({ length: 250 }, () => ({ start: 1, stop: STAR }));
    const keys: SearchKey[] = Array.from({ length: MAX_SEARCH_SETS }, () => ({ key: "SEQ", set }));
    // What is kept is one span of UIDs, [first, last], not a set of 100,000 per key; in this unfiltered folder it
    // goes upstream as one range. The time it takes is not asserted here (no timed tests); the old reading took
    // 11-25 s and about 400 MB for this case.
    expect(upstreamCriteria(box, keys)).toEqual({
      criteria: [{ key: "UID", set: [{ start: 1, stop: 100_000 }] }],
      local: null,
    });
  });
});

describe("FETCH, STORE, COPY sets read as spans", () => {
  test("uidsFromSeqSet and uidsFromUidSet name what a direct reading names; out of range is null", () => {
    const rnd = random(3);
    for (let round = 0; round < 300; round++) {
      const box = mailbox(50 + Math.floor(rnd() * 500), rnd() < 0.5, rnd);
      const n = box.agentCount;
      const seq = randomSet(rnd, n);
      const inRange = seq.every((r) => [r.start, r.stop].every((x) => x === STAR || (x >= 1 && x <= n))) && n > 0;
      const sorted = (s: Set<number>) => [...s].sort((a, b) => a - b);
      expect(box.uidsFromSeqSet(seq)).toEqual(inRange ? sorted(bySequence(box, seq)) : null);
      const uid = randomSet(rnd, box.allUids().at(-1) ?? 1);
      expect(box.uidsFromUidSet(uid)).toEqual(sorted(byUid(box, uid)));
    }
  });
});

describe("limits", () => {
  const box = new SelectedMailbox(
    "INBOX",
    "INBOX",
    true,
    Array.from({ length: 3000 }, (_, i) => i + 1),
  );
  const refusal = (keys: SearchKey[]) => {
    try {
      upstreamCriteria(box, keys);
    } catch (error) {
      if (error instanceof Refusal) return `${error.status} [${error.code}]`;
      throw error;
    }
    return "OK";
  };
  const all: SearchKey = { key: "SEQ", set: [{ start: 1, stop: STAR }] };

  test("MAX_SEARCH_SETS sets at any depth, and one more", () => {
    const top = (n: number): SearchKey[] => Array.from({ length: n }, () => all);
    expect(refusal(top(MAX_SEARCH_SETS))).toBe("OK");
    expect(refusal(top(MAX_SEARCH_SETS + 1))).toBe("NO [LIMIT]");
    // Nested ones count too.
    const nested = (n: number): SearchKey[] => [
      ...top(n - 3),
      { key: "NOT", operand: { key: "UID", set: [{ start: 5, stop: 5 }] } },
      { key: "OR", left: all, right: { key: "AND", operands: [all] } },
    ];
    expect(refusal(nested(MAX_SEARCH_SETS))).toBe("OK");
    expect(refusal(nested(MAX_SEARCH_SETS + 1))).toBe("NO [LIMIT]");
  });

  test("MAX_SEARCH_NESTED_RANGES upstream ranges from sets inside NOT or OR, and one more", () => {
    // UIDs 1, 3, 5, ...: each its own upstream range (2, 4, ... lie between them).
    const odd = (n: number): SeqSet => Array.from({ length: n }, (_, i) => ({ start: 2 * i + 1, stop: 2 * i + 1 }));
    const not = (n: number): SearchKey[] => [{ key: "NOT", operand: { key: "UID", set: odd(n) } }];
    expect(refusal(not(MAX_SEARCH_NESTED_RANGES))).toBe("OK");
    expect(upstreamCriteria(box, not(MAX_SEARCH_NESTED_RANGES)).criteria).toEqual([
      { key: "NOT", operand: { key: "UID", set: odd(MAX_SEARCH_NESTED_RANGES) } },
    ]);
    expect(refusal(not(MAX_SEARCH_NESTED_RANGES + 1))).toBe("NO [LIMIT]");
    // Split over two nested sets: counted together.
    const half = MAX_SEARCH_NESTED_RANGES / 2;
    const split = (extra: number): SearchKey[] => [
      {
        key: "OR",
        left: { key: "UID", set: odd(half) },
        right: { key: "UID", set: odd(half + extra).map((r) => ({ start: r.start + 1000, stop: r.stop + 1000 })) },
      },
    ];
    expect(refusal(split(0))).toBe("OK");
    expect(refusal(split(1))).toBe("NO [LIMIT]");
  });
});

describe("sets inside NOT or OR: one upstream range per run of the agent's view", () => {
  /** Whether upstream would match `uid` (only UID sets, NOT, OR, AND and ALL occur here). */
  const matches = (k: SearchKey, uid: number): boolean => {
    switch (k.key) {
      case "ALL":
        return true;
      case "UID":
        return k.set.some((r) => uid >= r.start && uid <= r.stop);
      case "NOT":
        return !matches(k.operand, uid);
      case "OR":
        return matches(k.left, uid) || matches(k.right, uid);
      case "AND":
        return k.operands.every((o) => matches(o, uid));
      default:
        throw new Error(`unexpected key ${k.key}`);
    }
  };

  test("a filtered view sends what a folder of only its visible messages sends, and finds what it names", () => {
    const rnd = random(5);
    for (let round = 0; round < 200; round++) {
      const filtered = mailbox(50 + Math.floor(rnd() * 500), true, rnd);
      const visible = filtered.allUids();
      // The same messages with nothing hidden between them.
      const alone = new SelectedMailbox("INBOX", "INBOX", true, visible);
      const n = visible.length;
      const top = visible.at(-1) ?? 1;
      const named: Set<number>[] = [];
      const set = (): SearchKey => {
        const uid = rnd() < 0.5;
        const s = randomSet(rnd, uid ? top : n);
        named.push(uid ? byUid(filtered, s) : bySequence(filtered, s));
        return uid ? { key: "UID", set: s } : { key: "SEQ", set: s };
      };
      const keys: SearchKey[] = [
        { key: "NOT", operand: set() },
        { key: "OR", left: set(), right: set() },
      ];
      const sent = upstreamCriteria(filtered, keys);
      expect(sent).toEqual(upstreamCriteria(alone, keys));
      const upstream: number[] = [];
      for (let i = 0; i < filtered.upstreamCount; i++) upstream.push(filtered.uidOf(i + 1));
      const found = visibleMatches(
        filtered,
        upstream.filter((uid) => sent.criteria.every((k) => matches(k, uid))),
        sent.local,
      );
      const [not, left, right] = named as [Set<number>, Set<number>, Set<number>];
      expect(found).toEqual(visible.filter((u) => !not.has(u) && (left.has(u) || right.has(u))));
    }
  });

  test("a set that names none of the view is worked out here, never sent as NOT ALL inside NOT or OR", () => {
    // Four visible messages among eight: sets past the agent's fourth name nothing, whatever is hidden beyond.
    const uids = [1, 2, 3, 4, 5, 6, 7, 8];
    const box = new SelectedMailbox("INBOX", "INBOX", true, uids, new VisibleSet([2, 4, 6, 7], 8));
    const seq = (start: number, stop = start): SearchKey => ({ key: "SEQ", set: [{ start, stop }] });
    const none = seq(5, 6);
    const not = (operand: SearchKey): SearchKey => ({ key: "NOT", operand });
    const or = (left: SearchKey, right: SearchKey): SearchKey => ({ key: "OR", left, right });
    const and = (...operands: SearchKey[]): SearchKey => ({ key: "AND", operands });
    const criteria = (...keys: SearchKey[]) => upstreamCriteria(box, keys).criteria;
    const NONE: SearchKey = { key: "NOT", operand: { key: "ALL" } };
    expect(criteria(or(not(and(none)), seq(7)))).toEqual([{ key: "ALL" }]);
    expect(criteria(not(or(not(and(none)), seq(7))))).toEqual([NONE]);
    expect(criteria(or(and(none, { key: "SEEN" }), seq(2)), { key: "FLAGGED" })).toEqual([
      { key: "UID", set: [{ start: 4, stop: 4 }] },
      { key: "FLAGGED" },
    ]);
    expect(criteria(and(not(none), { key: "SEEN" }))).toEqual([{ key: "SEEN" }]);
    expect(criteria(not(and(not(none), { key: "SEEN" })))).toEqual([
      { key: "NOT", operand: { key: "AND", operands: [{ key: "SEEN" }] } },
    ]);
    expect(criteria(or(not(none), { key: "SEEN" }), seq(1, 2))).toEqual([{ key: "UID", set: [{ start: 2, stop: 4 }] }]);
    // Among the keys that must all match, a set of none still empties the search, the other keys kept.
    expect(criteria(none, or(seq(1), { key: "SEEN" }))).toEqual([
      NONE,
      { key: "OR", left: { key: "UID", set: [{ start: 2, stop: 2 }] }, right: { key: "SEEN" } },
    ]);
  });

  test("the limit counts the agent's runs: hidden messages between visible ones change nothing", () => {
    // 40 visible messages, a hidden one after each: counted in upstream runs, NOT 1:* would be 40 ranges.
    const uids = Array.from({ length: 80 }, (_, i) => i + 1);
    const visible = uids.filter((u) => u % 2 === 1);
    const box = new SelectedMailbox("INBOX", "INBOX", true, uids, new VisibleSet(visible, 80));
    const all: SearchKey = { key: "NOT", operand: { key: "SEQ", set: [{ start: 1, stop: STAR }] } };
    const keys = Array.from({ length: MAX_SEARCH_SETS }, () => all);
    expect(upstreamCriteria(box, keys).criteria).toEqual(
      Array.from({ length: MAX_SEARCH_SETS }, () => ({
        key: "NOT",
        operand: { key: "UID", set: [{ start: 1, stop: 79 }] },
      })),
    );
  });
});
