/**
 * What a filtered mailbox looks like to an agent (docs/protocol.md §3, docs/filtering.md).
 *
 * - `VisibleSet` is Vtrue: the sorted UIDs the agent may see, as far as they have been classified
 *   (`classifiedThrough`). Visibility depends only on immutable headers, so a UID is classified once and
 *   only ever leaves the set by being expunged.
 * - Vagent (what the agent has been told) and U (upstream sequence → UID) live in `SelectedMailbox`
 *   (mailbox.ts), which consults a VisibleSet before a UID enters Vagent.
 *
 * Counts are computed over visible messages only. UIDNEXT is synthesized as the highest visible UID ever
 * seen + 1: it changes when visible mail arrives and never when hidden mail does, and it never decreases
 * while the classification cache remembers the highest visible UID (docs/filtering.md, "UID gaps").
 *
 * The set also keeps the hidden UIDs it classified, each with the slot of the rule that hid it (its position
 * among the rules that can decide visibility there, `MessageFilter.rules` in classify.ts), so that a UID command
 * naming hidden messages can be audited with the rule that hides them (docs/filtering.md, "Probes").
 */

const EMPTY = new Uint32Array(0);

/** The slot of a message hidden by no rule: the default deny (no rule matched, or a field could not be read). */
export const NO_HIDING_RULE = 0xffff;

/** Hidden UIDs (ascending) and, for each, the slot of the rule that hid it (or NO_HIDING_RULE). */
export interface HiddenUids {
  readonly uids: ArrayLike<number>;
  readonly slots: ArrayLike<number>;
}

/** Index of the first entry >= uid in `data[0..length)` (sorted ascending). */
export function lowerBound(data: Uint32Array, uid: number, length = data.length): number {
  let lo = 0;
  let hi = length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (data[mid]! < uid) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Vtrue: sorted visible UIDs, appended in ascending order as messages are classified. */
export class VisibleSet {
  #data: Uint32Array;
  #length: number;
  /** Every UID up to this one has been classified; UIDs above it are unknown (not visible until classified). */
  #classifiedThrough: number;
  /** The highest UID ever found visible here, expunged or not (the synthesized UIDNEXT is this + 1). */
  #highestEver: number;
  /** Classified hidden UIDs still present (ascending), and the slot of the rule that hid each. */
  #hidden: Uint32Array;
  #hiddenSlots: Uint16Array;
  #hiddenLength: number;

  /**
   * `uids` must be sorted ascending and not above `classifiedThrough`; the array is copied.
   * `highestEver` may carry the highest visible UID remembered from an earlier session.
   * `hidden`: the classified hidden UIDs with their rule slots, ascending, none of them visible.
   */
  constructor(uids: ArrayLike<number> = EMPTY, classifiedThrough = 0, highestEver = 0, hidden?: HiddenUids) {
    this.#data = new Uint32Array(Math.max(64, uids.length));
    this.#data.set(uids);
    this.#length = uids.length;
    for (let i = 1; i < uids.length; i++) {
      if (uids[i]! <= uids[i - 1]!) throw new Error("imap: visible UIDs must ascend");
    }
    const last = uids.length === 0 ? 0 : uids[uids.length - 1]!;
    if (last > classifiedThrough) throw new Error("imap: a visible UID above the classified range");
    this.#classifiedThrough = classifiedThrough;
    this.#highestEver = Math.max(highestEver, last);
    const n = hidden?.uids.length ?? 0;
    if (hidden !== undefined && hidden.slots.length !== n) throw new Error("imap: one rule slot per hidden UID");
    this.#hidden = new Uint32Array(Math.max(64, n));
    this.#hiddenSlots = new Uint16Array(Math.max(64, n));
    this.#hiddenLength = n;
    if (hidden === undefined) return;
    this.#hidden.set(hidden.uids);
    this.#hiddenSlots.set(hidden.slots);
    // Ascending, classified, and never visible: one walk over both sorted lists.
    let j = 0;
    for (let i = 0; i < n; i++) {
      const uid = this.#hidden[i]!;
      while (j < this.#length && this.#data[j]! < uid) j++;
      if (
        uid > classifiedThrough ||
        (i > 0 && uid <= this.#hidden[i - 1]!) ||
        (j < this.#length && this.#data[j] === uid)
      )
        throw new Error("imap: hidden UIDs must ascend, be classified and not visible");
    }
  }

  get size(): number {
    return this.#length;
  }

  get classifiedThrough(): number {
    return this.#classifiedThrough;
  }

  /** The highest visible UID now present, or 0. */
  get highest(): number {
    return this.#length === 0 ? 0 : this.#data[this.#length - 1]!;
  }

  get highestEver(): number {
    return this.#highestEver;
  }

  /** UIDNEXT as the agent sees it (RFC 3501 §2.3.1.1 over the visible messages). */
  get uidNext(): number {
    return this.#highestEver + 1;
  }

  has(uid: number): boolean {
    const i = lowerBound(this.#data, uid, this.#length);
    return i < this.#length && this.#data[i] === uid;
  }

  /** Whether `uid` has been classified (visible or not). */
  classified(uid: number): boolean {
    return uid <= this.#classifiedThrough;
  }

  /**
   * Records the classification of every UID up to `through`: `visible` (ascending) are the visible ones among
   * them above the previous `classifiedThrough`; ones at or below it are ignored (classified once:
   * docs/protocol.md §3 "Visibility is decided once").
   * `hidden` (ascending) are hidden ones with the slot of the rule that hid each, ignored likewise.
   */
  extend(visible: ArrayLike<number>, through: number, hidden?: HiddenUids): void {
    for (let i = 0; i < visible.length; i++) {
      const uid = visible[i]!;
      if (uid <= this.#classifiedThrough || uid > through) continue;
      if (uid <= this.highest) throw new Error("imap: visible UIDs must ascend");
      this.#push(uid);
    }
    if (hidden !== undefined) {
      for (let i = 0; i < hidden.uids.length; i++) {
        const uid = hidden.uids[i]!;
        if (uid <= this.#classifiedThrough || uid > through) continue;
        if (uid <= this.#highestHidden() || this.has(uid)) throw new Error("imap: hidden UIDs must ascend");
        this.#pushHidden(uid, hidden.slots[i]!);
      }
    }
    if (through > this.#classifiedThrough) this.#classifiedThrough = through;
  }

  /** An expunge (from upstream): the UID is gone for good. */
  remove(uid: number): void {
    const i = lowerBound(this.#data, uid, this.#length);
    if (i < this.#length && this.#data[i] === uid) {
      this.#data.copyWithin(i, i + 1, this.#length);
      this.#length--;
      return;
    }
    const h = lowerBound(this.#hidden, uid, this.#hiddenLength);
    if (h >= this.#hiddenLength || this.#hidden[h] !== uid) return;
    this.#hidden.copyWithin(h, h + 1, this.#hiddenLength);
    this.#hiddenSlots.copyWithin(h, h + 1, this.#hiddenLength);
    this.#hiddenLength--;
  }

  /** Keeps only UIDs present in `uids` (sorted ascending): after a reopen, drops what was expunged meanwhile. */
  retain(uids: ArrayLike<number>): void {
    let w = 0;
    let j = 0;
    for (let i = 0; i < this.#length; i++) {
      const uid = this.#data[i]!;
      while (j < uids.length && uids[j]! < uid) j++;
      if (j < uids.length && uids[j] === uid) this.#data[w++] = uid;
    }
    this.#length = w;
    w = 0;
    j = 0;
    for (let i = 0; i < this.#hiddenLength; i++) {
      const uid = this.#hidden[i]!;
      while (j < uids.length && uids[j]! < uid) j++;
      if (j < uids.length && uids[j] === uid) {
        this.#hiddenSlots[w] = this.#hiddenSlots[i]!;
        this.#hidden[w++] = uid;
      }
    }
    this.#hiddenLength = w;
  }

  /** Whether some visible UID lies in `lo..hi`. */
  hasVisibleIn(lo: number, hi: number): boolean {
    const i = lowerBound(this.#data, lo, this.#length);
    return i < this.#length && this.#data[i]! <= hi;
  }

  /** Index range `[from, to)` of the hidden UIDs in `lo..hi`, for `hiddenAt`. */
  hiddenIn(lo: number, hi: number): [number, number] {
    return [lowerBound(this.#hidden, lo, this.#hiddenLength), lowerBound(this.#hidden, hi + 1, this.#hiddenLength)];
  }

  /** The i-th hidden UID and the slot of the rule that hid it. */
  hiddenAt(i: number): [number, number] {
    return [this.#hidden[i]!, this.#hiddenSlots[i]!];
  }

  /** The hidden UIDs (ascending) and their rule slots, as views: copy them before changing the set. */
  hidden(): { uids: Uint32Array; slots: Uint16Array } {
    return {
      uids: this.#hidden.subarray(0, this.#hiddenLength),
      slots: this.#hiddenSlots.subarray(0, this.#hiddenLength),
    };
  }

  /** How many of `uids` (any order) are visible: RECENT, STATUS UNSEEN and the like over upstream SEARCH results. */
  countAmong(uids: Iterable<number>): number {
    let n = 0;
    for (const uid of uids) if (this.has(uid)) n++;
    return n;
  }

  /** The visible UIDs, ascending (a view: copy it before changing the set). */
  uids(): Uint32Array {
    return this.#data.subarray(0, this.#length);
  }

  #push(uid: number): void {
    if (this.#length === this.#data.length) {
      const next = new Uint32Array(this.#data.length * 2);
      next.set(this.#data);
      this.#data = next;
    }
    this.#data[this.#length++] = uid;
    if (uid > this.#highestEver) this.#highestEver = uid;
  }

  #highestHidden(): number {
    return this.#hiddenLength === 0 ? 0 : this.#hidden[this.#hiddenLength - 1]!;
  }

  #pushHidden(uid: number, slot: number): void {
    if (this.#hiddenLength === this.#hidden.length) {
      const next = new Uint32Array(this.#hidden.length * 2);
      next.set(this.#hidden);
      this.#hidden = next;
      const slots = new Uint16Array(this.#hiddenSlots.length * 2);
      slots.set(this.#hiddenSlots);
      this.#hiddenSlots = slots;
    }
    this.#hidden[this.#hiddenLength] = uid;
    this.#hiddenSlots[this.#hiddenLength++] = slot;
  }
}
