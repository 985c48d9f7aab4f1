import { describe, expect, test } from "bun:test";
import { probeTarget } from "../../src/imap/commands/shared.ts";
import { PROBE_TARGET_CHARS } from "../../src/imap/limits.ts";
import { SelectedMailbox } from "../../src/imap/mailbox.ts";
import { VisibleSet } from "../../src/imap/view.ts";
import { STAR } from "../../src/imap/wire/index.ts";

/** Upstream UIDs 1..10; visible: 2, 4, 5, 9. */
function filtered(): SelectedMailbox {
  const uids = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
  return new SelectedMailbox("INBOX", "INBOX", true, uids, new VisibleSet([2, 4, 5, 9], 10));
}

describe("VisibleSet (Vtrue)", () => {
  test("membership, extend only above the classified range, remove, retain", () => {
    const v = new VisibleSet([3, 7], 10);
    expect(v.has(3)).toBe(true);
    expect(v.has(4)).toBe(false);
    expect(v.classified(10)).toBe(true);
    expect(v.classified(11)).toBe(false);
    v.extend([5, 12, 15, 30], 20); // 5 is already classified (hidden): ignored; 30 is beyond `through`
    expect([...v.uids()]).toEqual([3, 7, 12, 15]);
    expect(v.classifiedThrough).toBe(20);
    v.remove(15);
    v.remove(99);
    expect([...v.uids()]).toEqual([3, 7, 12]);
    v.retain([1, 3, 12, 13]);
    expect([...v.uids()]).toEqual([3, 12]);
  });

  test("UIDNEXT is the highest visible UID ever + 1: hidden arrivals do not move it, expunges do not lower it", () => {
    const v = new VisibleSet([3, 7], 10);
    expect(v.uidNext).toBe(8);
    v.extend([], 50); // hidden mail arrived
    expect(v.uidNext).toBe(8);
    v.remove(7);
    expect(v.uidNext).toBe(8);
    expect(new VisibleSet([3], 10, 9).uidNext).toBe(10); // remembered from an earlier session
    expect(new VisibleSet().uidNext).toBe(1);
  });

  test("grows past its initial capacity; refuses unsorted input", () => {
    const v = new VisibleSet();
    const many = Array.from({ length: 1000 }, (_, i) => i * 2 + 1);
    v.extend(many, 5000);
    expect(v.size).toBe(1000);
    expect(v.has(1999)).toBe(true);
    expect(v.has(2000)).toBe(false);
    expect(() => new VisibleSet([5, 3], 10)).toThrow();
    expect(() => new VisibleSet([5, 30], 10)).toThrow();
  });

  test("countAmong counts only visible UIDs", () => {
    expect(new VisibleSet([2, 4, 6], 6).countAmong([1, 2, 3, 4])).toBe(2);
  });
});

describe("a filtered SelectedMailbox (Vagent over Vtrue)", () => {
  test("sequence numbers are positions among visible UIDs", () => {
    const box = filtered();
    expect(box.agentCount).toBe(4);
    expect(box.upstreamCount).toBe(10);
    expect(box.uidsFromSeqSet([{ start: 1, stop: STAR }])).toEqual([2, 4, 5, 9]);
    expect(box.uidsFromSeqSet([{ start: 2, stop: 3 }])).toEqual([4, 5]);
    expect(box.uidsFromSeqSet([{ start: 5, stop: 5 }])).toBeNull(); // beyond |V|: BAD, as from Dovecot
    expect(box.agentSeqOf(9)).toBe(4);
    expect(box.agentSeqOf(3)).toBe(0);
  });

  test("`*` is the highest visible UID; hidden UIDs are never selected, even inside a range", () => {
    const box = filtered();
    expect(box.uidsFromUidSet([{ start: 4294967295, stop: STAR }])).toEqual([9]); // §7 case 3
    expect(box.uidsFromUidSet([{ start: 1, stop: STAR }])).toEqual([2, 4, 5, 9]); // §7 case 1
    expect(box.uidsFromUidSet([{ start: 3, stop: 3 }])).toEqual([]); // §7 case 2: like a nonexistent UID
    expect(box.uidsFromUidSet([{ start: 10, stop: 10 }])).toEqual([]);
  });

  test("upstream UID sets never span a hidden UID", () => {
    const box = filtered();
    expect(box.upstreamSet([2, 4, 5, 9])).toEqual([
      { start: 2, stop: 2 },
      { start: 4, stop: 5 },
      { start: 9, stop: 9 },
    ]);
  });

  test("hidden expunges are silent; visible ones wait and are announced highest first", () => {
    const box = filtered();
    box.onExpunge(3); // UID 3, hidden
    expect(box.pendingExpunges).toEqual([]);
    expect(box.agentCount).toBe(4);
    box.onExpunge(1); // UID 1, hidden
    // upstream now: 2 4 5 6 7 8 9 10; expunge UID 4 (seq 2) then UID 9 (seq 6 after that)
    box.onExpunge(2);
    box.onExpunge(6);
    expect(box.visible!.has(4)).toBe(false);
    // Not announced yet: agent numbers do not shift under a running FETCH (§7 case 11).
    expect(box.uidsFromSeqSet([{ start: 4, stop: 4 }])).toEqual([9]);
    // Highest first, whatever order upstream told them in: UID 9 is 4, then UID 4 is still 2.
    expect(box.takeExpunges()).toEqual([4, 2]);
    expect(box.agentCount).toBe(2);
    expect(box.allUids()).toEqual([2, 5]);
  });

  test("arrivals: only visible ones enter V, and only once classified", () => {
    const box = filtered();
    box.onExists(13);
    box.learnUid(11, 11);
    box.learnUid(12, 12);
    box.learnUid(13, 14);
    expect(box.unclassified()).toEqual([11, 12, 14]);
    expect(box.admitNew()).toBeNull(); // nothing classified yet: nothing admitted
    box.visible!.extend([12, 14], 14);
    expect(box.unclassified()).toEqual([]);
    expect(box.admitNew()).toBe(6);
    expect(box.allUids()).toEqual([2, 4, 5, 9, 12, 14]);
    expect(box.uidNext(15)).toBe(15);
  });

  test("an unclassified UID holds back later visible ones, so V stays sorted", () => {
    const box = new SelectedMailbox("INBOX", "INBOX", true, [1, 2, 3, 4], new VisibleSet([1], 2));
    expect(box.allUids()).toEqual([1]);
    expect(box.unclassified()).toEqual([3, 4]);
    box.visible!.extend([3, 4], 4);
    expect(box.admitNew()).toBe(3);
    expect(box.allUids()).toEqual([1, 3, 4]);
  });

  test("hidden arrivals change nothing the agent sees (§7 case 10)", () => {
    const box = filtered();
    box.onExists(12);
    box.learnUid(11, 11);
    box.learnUid(12, 12);
    box.visible!.extend([], 12);
    expect(box.admitNew()).toBeNull();
    expect(box.uidNext(13)).toBe(10);
    expect(box.agentCount).toBe(4);
  });

  test("UNSEEN and RECENT over visible messages", () => {
    const box = filtered();
    expect(box.firstAgentSeqAmong([1, 3, 5, 9])).toBe(3); // UID 5
    expect(box.firstAgentSeqAmong([1, 3])).toBe(0);
    expect(box.countKnown([1, 2, 3, 9, 10])).toBe(2);
    expect(box.isVisible(3)).toBe(false);
    expect(box.isVisible(4)).toBe(true);
  });

  test("unfiltered boxes behave as before", () => {
    const box = new SelectedMailbox("INBOX", "INBOX", false, [3, 5, 8]);
    expect(box.visible).toBeNull();
    expect(box.agentCount).toBe(3);
    expect(box.unclassified()).toEqual([]);
    box.onExists(4);
    box.learnUid(4, 9);
    expect(box.admitNew()).toBe(4);
    expect(box.uidNext(10)).toBe(10);
    expect(box.isVisible(9)).toBe(true);
    expect(box.upstreamSet([3, 5, 8, 9])).toEqual([{ start: 3, stop: 9 }]);
  });
});

describe("upstream sets in parts", () => {
  test("scattered visible UIDs are cut into commands of at most N ranges, in order, none spanning a hidden UID", () => {
    const all = Array.from({ length: 100 }, (_, i) => i + 1);
    const visible = all.filter((u) => u % 3 !== 0);
    const box = new SelectedMailbox("INBOX", "INBOX", true, all, new VisibleSet(visible, 100));
    const sets = box.upstreamSets(box.allUids(), 10);
    expect(sets.every((set) => set.length <= 10)).toBe(true);
    const flat = sets.flat();
    expect(flat).toEqual(box.upstreamSet(box.allUids()));
    const covered = flat.flatMap((r) => Array.from({ length: r.stop - r.start + 1 }, (_, i) => r.start + i));
    expect(covered).toEqual(visible);
  });
});

describe("hidden UIDs and the rules that hid them (docs/filtering.md, Probes)", () => {
  /** Upstream UIDs 1..12; visible 2, 4, 5, 9; hidden: 1, 3, 6, 7, 8, 10 by slot 0, 11 by slot 1; 12 unclassified. */
  function probed(): SelectedMailbox {
    const v = new VisibleSet([2, 4, 5, 9], 10, 0, { uids: [1, 3, 6, 7, 8, 10], slots: [0, 0, 0, 0, 0, 0] });
    v.extend([], 11, { uids: [11], slots: [1] });
    return new SelectedMailbox(
      "INBOX",
      "INBOX",
      true,
      Array.from({ length: 12 }, (_, i) => i + 1),
      v,
    );
  }
  const set = (...ranges: Array<[number, number]>) => ranges.map(([start, stop]) => ({ start, stop }));

  test("VisibleSet keeps hidden UIDs with their slots through extend, remove and retain; refuses bad input", () => {
    const v = probed().visible!;
    expect([...v.hidden().uids]).toEqual([1, 3, 6, 7, 8, 10, 11]);
    expect([...v.hidden().slots]).toEqual([0, 0, 0, 0, 0, 0, 1]);
    v.extend([13], 14, { uids: [5, 14, 20], slots: [1, 1, 1] }); // 5: classified already; 20: beyond `through`
    expect([...v.hidden().uids]).toEqual([1, 3, 6, 7, 8, 10, 11, 14]);
    v.remove(3);
    v.remove(2);
    expect([...v.hidden().uids]).toEqual([1, 6, 7, 8, 10, 11, 14]);
    expect([...v.uids()]).toEqual([4, 5, 9, 13]);
    v.retain([1, 4, 7, 11, 13]);
    expect([...v.hidden().uids]).toEqual([1, 7, 11]);
    expect([...v.hidden().slots]).toEqual([0, 0, 1]);
    expect(() => new VisibleSet([2], 5, 0, { uids: [2], slots: [0] })).toThrow(); // visible and hidden
    expect(() => new VisibleSet([], 5, 0, { uids: [4, 3], slots: [0, 0] })).toThrow();
    expect(() => new VisibleSet([], 5, 0, { uids: [6], slots: [0] })).toThrow(); // not classified
    expect(() => new VisibleSet([], 5, 0, { uids: [1], slots: [] })).toThrow();
    // Growth past the initial capacity keeps the slots in step.
    const many = new VisibleSet();
    const uids = Array.from({ length: 300 }, (_, i) => i + 1);
    many.extend([], 300, { uids, slots: uids.map((u) => u % 7) });
    expect([...many.hidden().slots]).toEqual(uids.map((u) => u % 7));
  });

  test("named: hidden UIDs, ranges without a visible UID; never `*`, visible, absent or unclassified UIDs", () => {
    const box = probed();
    expect(box.hiddenNamed(set([3, 3]))).toEqual({ uids: [3], slots: [0] });
    expect(box.hiddenNamed(set([11, 11], [3, 3], [3, 3]))).toEqual({ uids: [3, 11], slots: [0, 1] });
    expect(box.hiddenNamed(set([8, 6]))).toEqual({ uids: [6, 7, 8], slots: [0, 0, 0] }); // reversed range
    expect(box.hiddenNamed(set([10, 11], [6, 7], [7, 8]))).toEqual({ uids: [6, 7, 8, 10, 11], slots: [0, 0, 0, 0, 1] });
    expect(box.hiddenNamed(set([6, 12]))).toEqual({ uids: [], slots: [] }); // 9 is visible
    expect(box.hiddenNamed(set([1, STAR]))).toEqual({ uids: [], slots: [] });
    expect(box.hiddenNamed(set([10, STAR], [STAR, 3]))).toEqual({ uids: [], slots: [] });
    expect(box.hiddenNamed(set([3, 6]))).toEqual({ uids: [], slots: [] }); // both ends hidden, 4 and 5 visible
    expect(box.hiddenNamed(set([2, 2], [9, 9], [12, 12], [99, 99], [13, 50]))).toEqual({ uids: [], slots: [] });
    expect(box.hiddenNamed(set([10, 4000000000]))).toEqual({ uids: [10, 11], slots: [0, 1] });
    // The same set on an unfiltered mailbox names nothing.
    expect(new SelectedMailbox("INBOX", "INBOX", true, [1, 2, 3]).hiddenNamed(set([2, 2]))).toEqual({
      uids: [],
      slots: [],
    });
  });
});

describe("a probe row's target (PROBE_TARGET_CHARS)", () => {
  test("consecutive UIDs as ranges; at the limit the whole list, one part past it cut with …", () => {
    expect(probeTarget([7])).toBe("UID 7");
    expect(probeTarget([4, 7, 8, 9, 11])).toBe("UIDs 4,7:9,11");
    // "UIDs 10" and 101 parts ",1000", ",1002", ... ",1200": 7 + 5 × 101 = 512 characters.
    const atLimit = [10, ...Array.from({ length: 101 }, (_, i) => 1000 + 2 * i)];
    const whole = `UIDs ${atLimit.join(",")}`;
    expect(whole.length).toBe(PROBE_TARGET_CHARS);
    expect(probeTarget(atLimit)).toBe(whole);
    expect(probeTarget([...atLimit, 1202])).toBe(`${whole}…`);
    expect(probeTarget([...atLimit, 1202, 1203, 1205])).toBe(`${whole}…`);
  });
});

describe("UID ranges of spans (the sets a SEARCH, SORT or THREAD sends upstream, commands/search.ts)", () => {
  test("one range per span, from its first UID to its last: the same whether hidden UIDs lie between or not", () => {
    const visible = [1, 3, 5, 7, 9, 11];
    const withHidden = new SelectedMailbox(
      "INBOX",
      "INBOX",
      true,
      [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
      new VisibleSet(visible, 11),
    );
    const expunged = new SelectedMailbox("INBOX", "INBOX", true, visible, new VisibleSet(visible, 11));
    for (const spans of [
      [0, 5],
      [0, 1, 3, 4],
      [2, 2],
    ]) {
      expect(withHidden.uidRangesOf(spans)).toEqual(expunged.uidRangesOf(spans));
    }
    expect(withHidden.uidRangesOf([0, 1, 3, 4])).toEqual([1, 3, 7, 9]);
  });
});
