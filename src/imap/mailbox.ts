/**
 * The selected mailbox as the proxy models it (docs/protocol.md §3).
 *
 * - `U`: upstream sequence number → UID, every message included (hidden ones too). A `0` entry is a message
 *   announced by `* n EXISTS` whose UID is not known yet; they lie after every entry before `known`, because new
 *   messages only append (an arrival's UID may be learned before an earlier arrival's: `#advanceKnown`).
 * - `V`: the sorted UIDs the agent has been told about ("Vagent"). Agent sequence numbers are positions in V.
 *   An upstream EXPUNGE removes its entry from U at once but stays in V until the agent's command permits an
 *   EXPUNGE response (RFC 3501 §7.4.1), so agent sequence numbers never shift under a running FETCH.
 *
 * - `visible` (optional): Vtrue, the classified visible UIDs of a filtered folder (view.ts, docs/filtering.md).
 *   Without it every message is visible. With it, a UID enters V only once classified visible; hidden UIDs stay
 *   in U only (their EXPUNGEs are silent), and a UID not yet classified holds back every later arrival, so V
 *   stays sorted and agent sequence numbers never shift.
 */

import type { MessageFilter } from "./classify.ts";
import { MAX_KEYWORDS_TOLD, UPSTREAM_SET_RANGES } from "./limits.ts";
import type { VisibleSet } from "./view.ts";
import { type Response, type SeqRange, type SeqSet, STAR } from "./wire/index.ts";

/** A growable array of UIDs (uint32), with removal by index. */
class UidArray {
  data = new Uint32Array(64);
  length = 0;

  get(i: number): number {
    return this.data[i]!;
  }

  push(uid: number): void {
    if (this.length === this.data.length) {
      const next = new Uint32Array(this.data.length * 2);
      next.set(this.data);
      this.data = next;
    }
    this.data[this.length++] = uid;
  }

  removeAt(i: number): void {
    this.data.copyWithin(i, i + 1, this.length);
    this.length--;
  }

  /** Index of `uid` in a sorted array, or -1. */
  indexOf(uid: number, length = this.length): number {
    let lo = 0;
    let hi = length - 1;
    const d = this.data;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const v = d[mid]!;
      if (v === uid) return mid;
      if (v < uid) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }

  /** Index of the first entry >= uid (sorted array). */
  lowerBound(uid: number, length = this.length): number {
    let lo = 0;
    let hi = length;
    const d = this.data;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (d[mid]! < uid) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

/**
 * Positions in V (0-based) as flat inclusive pairs `[lo0, hi0, lo1, hi1, ...]`, ascending, disjoint and not
 * adjacent: what a sequence or UID set names, kept as ranges so that its cost follows the set's length, not the
 * mailbox's size.
 */
export type Spans = number[];

/** Flat pairs in any order, overlapping or not, as Spans. */
function mergeSpans(pairs: readonly number[]): Spans {
  const order: number[] = [];
  for (let i = 0; i < pairs.length; i += 2) order.push(i);
  order.sort((x, y) => pairs[x]! - pairs[y]!);
  const out: Spans = [];
  for (const i of order) {
    const lo = pairs[i]!;
    const hi = pairs[i + 1]!;
    const n = out.length;
    if (n > 0 && lo <= out[n - 1]! + 1) {
      if (hi > out[n - 1]!) out[n - 1] = hi;
    } else out.push(lo, hi);
  }
  return out;
}

/** The positions in both `a` and `b`. Cost: one pass over both. */
export function intersectSpans(a: Spans, b: Spans): Spans {
  const out: Spans = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    const lo = Math.max(a[i]!, b[j]!);
    const hi = Math.min(a[i + 1]!, b[j + 1]!);
    if (lo <= hi) out.push(lo, hi);
    if (a[i + 1]! < b[j + 1]!) i += 2;
    else j += 2;
  }
  return out;
}

export class SelectedMailbox {
  /** The folder as the agent named it (upstream spelling) and its policy name (`/`-separated). */
  readonly name: string;
  readonly policyName: string;
  /**
   * Read-only for the agent: opened upstream with EXAMINE or answered `[READ-ONLY]`, or made so since by an untagged
   * `* OK [READ-ONLY]` (RFC 3501 §7.1: the mailbox's access changed while selected; `readOnlyNotice`). Never made
   * writable again while selected: a new SELECT opens it afresh.
   */
  readOnly: boolean;
  /**
   * Made read-only by an untagged `* OK [READ-ONLY]` the agent has not been told of yet (one that came between two
   * commands): told before the next tagged reply (`ImapSession.tagged`), once.
   */
  readOnlyUntold = false;
  readonly u = new UidArray();
  readonly v = new UidArray();
  /** Entries of U before this index have known UIDs. */
  known = 0;
  /** UIDs expunged upstream, still in V until announced. */
  readonly pendingExpunges: number[] = [];
  /** Vtrue of a filtered folder; null when every message is visible. */
  readonly visible: VisibleSet | null;
  /** How a filtered folder's arrivals are classified (filtering.ts); null when unfiltered. */
  filter: MessageFilter | null = null;
  /**
   * The revision of the config whose rules gave `filter` (docs/audit.md): the rows of probes for hidden messages
   * name those rules (commands/shared.ts `auditProbe`); null when unfiltered.
   */
  filterRevision: string | null = null;
  /**
   * The reload generation (`SessionContext.generation`) whose rules this view was made with, or last checked
   * against; -1 until its opener sets it, so that an unmarked view is always checked. After a reload the session
   * keeps the view only if those rules still show the same messages (`ImapSession.followReload`).
   */
  generation = -1;
  /**
   * The folder's UIDVALIDITY, as SELECT reported it (0 if it did not): for STATUS and the classification cache of a
   * filtered folder, and the `;UIDVALIDITY=` of a CATENATE URL (commands/catenate.ts).
   */
  uidValidity = 0;
  /**
   * The last `* n RECENT` upstream sent that the agent has not heard of yet (RFC 3501 §7.3.2), or null. Unfiltered,
   * it is relayed as it is; filtered, it is not used (it counts hidden messages; `recentDue`).
   */
  upstreamRecent: number | null = null;
  /** The RECENT count the agent was last told of a filtered folder: over its visible messages only. */
  recent = 0;
  /**
   * A filtered folder's view grew or lost a message since `recent` was counted (`admitNew`, `takeExpunges`): the only
   * changes that can change it (a message's \Recent is fixed for the session), counted again at the next sync
   * (ImapSession).
   */
  recentDue = false;
  /**
   * True while SELECT or EXAMINE has not yet sent this folder's own responses: another session's flag change is then
   * not relayed (`relayFlagUpdate`), as a FETCH before EXISTS would name a message of a folder the agent has not
   * been told of; the agent learns the flags as they are when it fetches them.
   */
  opening = false;
  /** FLAGS and PERMANENTFLAGS upstream sent while `opening`: newer than SELECT's own, which they replace. */
  readonly openingUpdates: Response[] = [];
  /**
   * Whether the folder's keywords were shown at SELECT (`keywordsShown`): a reload that changes it ends the session,
   * as the FLAGS the agent was given would no longer match what it is told (ImapSession's view check).
   */
  keywordsShown = false;
  /**
   * Where keywords are not shown at SELECT (a filtered folder, whose FLAGS listed the system flags only): the
   * keywords a `* FLAGS` update has listed since, each sent before the first FETCH that showed it on a message the
   * agent sees (RFC 3501 §7.2.6; `tellKeywords`). At most MAX_KEYWORDS_TOLD.
   */
  readonly #keywordsTold = new Set<string>();

  /** The keywords listed so far, in the order they were first told (a Set keeps insertion order). */
  get keywordsTold(): ReadonlySet<string> {
    return this.#keywordsTold;
  }

  /**
   * Adds a keyword of a message the agent is about to be shown to `keywordsTold`: true when it is new to the agent's
   * FLAGS, false when listed already or MAX_KEYWORDS_TOLD are (docs/protocol.md §3, "Keywords of a filtered
   * folder").
   */
  tellKeyword(keyword: string): boolean {
    if (this.#keywordsTold.has(keyword) || this.#keywordsTold.size >= MAX_KEYWORDS_TOLD) return false;
    this.#keywordsTold.add(keyword);
    return true;
  }

  /**
   * `uids`: every UID upstream, ascending (`UID SEARCH ALL`); `visible`: their classification, for a filtered
   * folder.
   */
  constructor(
    name: string,
    policyName: string,
    readOnly: boolean,
    uids: ArrayLike<number>,
    visible: VisibleSet | null = null,
  ) {
    this.name = name;
    this.policyName = policyName;
    this.readOnly = readOnly;
    this.visible = visible;
    for (let i = 0; i < uids.length; i++) {
      const uid = uids[i]!;
      this.u.push(uid);
      if (visible === null || visible.has(uid)) this.v.push(uid);
      else if (!visible.classified(uid)) break;
    }
    for (let i = this.u.length; i < uids.length; i++) this.u.push(uids[i]!);
    this.known = uids.length;
  }

  /** Messages upstream, as the last EXISTS said. */
  get upstreamCount(): number {
    return this.u.length;
  }

  get agentCount(): number {
    return this.v.length;
  }

  get hasUnknown(): boolean {
    return this.known < this.u.length;
  }

  get lastKnownUid(): number {
    return this.known === 0 ? 0 : this.u.get(this.known - 1);
  }

  /**
   * How many messages upstream's EXISTS responses have added so far: IDLE tells by it that upstream reported an
   * arrival while the proxy's own commands ran (commands/idle.ts).
   */
  arrivals = 0;

  /** `* n EXISTS` from upstream: grows U with unknown entries (EXISTS never shrinks, RFC 3501 §7.3.1). */
  onExists(n: number): void {
    while (this.u.length < n) {
      this.u.push(0);
      this.arrivals++;
    }
  }

  /** `* n EXPUNGE` from upstream. */
  onExpunge(n: number): void {
    if (n < 1 || n > this.u.length) return;
    const uid = this.u.get(n - 1);
    this.u.removeAt(n - 1);
    if (n - 1 < this.known) this.known--;
    // An unknown entry gone: later ones already learned (a flag change with its UID) are known now.
    this.#advanceKnown();
    if (uid !== 0) this.visible?.remove(uid);
    if (uid !== 0 && this.v.indexOf(uid) !== -1) this.pendingExpunges.push(uid);
  }

  /** A FETCH told us the UID of upstream message n. */
  learnUid(n: number, uid: number): void {
    if (n < 1 || n > this.u.length) return;
    if (this.u.get(n - 1) === 0) {
      this.u.data[n - 1] = uid;
      this.#advanceKnown();
    }
  }

  /**
   * Moves `known` past the learned entries that follow it. An arrival's UID may be learned before an earlier one's (a
   * flag change that carries it, RFC 3501 §7.4.2), so learned entries can sit behind an unknown one until it is
   * learned or expunged.
   */
  #advanceKnown(): void {
    while (this.known < this.u.length && this.u.get(this.known) !== 0) this.known++;
  }

  /** UID of upstream message n, or 0 when unknown. */
  uidOf(n: number): number {
    return n >= 1 && n <= this.u.length ? this.u.get(n - 1) : 0;
  }

  /** Agent sequence number of a UID, or 0 when the agent does not know it. */
  agentSeqOf(uid: number): number {
    return this.v.indexOf(uid) + 1;
  }

  /**
   * Moves newly learned visible UIDs into V and returns the new agent count when it grew, else null. In a
   * filtered folder it stops at the first UID not classified yet (classify `unclassified()` first). Call before a
   * tagged reply: size changes must be reported (RFC 3501 §5.2).
   */
  admitNew(): number | null {
    const before = this.v.length;
    const last = before === 0 ? 0 : this.v.get(before - 1);
    const start = this.u.lowerBound(last + 1, this.known);
    const visible = this.visible;
    for (let i = start; i < this.known; i++) {
      const uid = this.u.get(i);
      if (uid <= last) continue;
      if (visible === null || visible.has(uid)) this.v.push(uid);
      else if (!visible.classified(uid)) break;
    }
    if (this.v.length === before) return null;
    if (visible !== null) this.recentDue = true;
    return this.v.length;
  }

  /** Known UIDs upstream that a filtered folder has not classified yet, ascending (empty when unfiltered). */
  unclassified(): number[] {
    const visible = this.visible;
    if (visible === null) return [];
    const out: number[] = [];
    for (let i = this.u.lowerBound(visible.classifiedThrough + 1, this.known); i < this.known; i++)
      out.push(this.u.get(i));
    return out;
  }

  /** Whether `uid` is a known UID upstream (in U and not expunged since). */
  holds(uid: number): boolean {
    return this.u.indexOf(uid, this.known) !== -1;
  }

  /** Whether the agent may see `uid` (classified visible; every known UID when unfiltered). */
  isVisible(uid: number): boolean {
    return this.visible === null ? this.holds(uid) : this.visible.has(uid);
  }

  /** UIDNEXT for the agent: upstream's when unfiltered, else the highest visible UID + 1 (view.ts). */
  uidNext(upstreamUidNext: number): number {
    return this.visible === null ? upstreamUidNext : this.visible.uidNext;
  }

  /**
   * The agent sequence number of the first message among `uids` that the agent knows (the `UNSEEN n` code at
   * SELECT, from an upstream `UID SEARCH UNSEEN`), or 0 when none.
   */
  firstAgentSeqAmong(uids: Iterable<number>): number {
    let best = 0;
    for (const uid of uids) {
      const k = this.agentSeqOf(uid);
      if (k > 0 && (best === 0 || k < best)) best = k;
    }
    return best;
  }

  /** How many of `uids` the agent knows (RECENT over an upstream `UID SEARCH RECENT`). */
  countKnown(uids: Iterable<number>): number {
    let n = 0;
    for (const uid of uids) if (this.agentSeqOf(uid) > 0) n++;
    return n;
  }

  /**
   * Agent sequence numbers of pending expunges, in the order to announce them: highest first, as Dovecot reports
   * the expunges of one command, whatever order upstream told them in; removes them from V. Upstream's order is
   * not kept: a MOVE or UID EXPUNGE carried out over several upstream commands (`UPSTREAM_SET_RANGES` ranges each,
   * and hidden messages between the agent's break the ranges) reports each part's expunges highest first, so the
   * seams in that order told the agent where the set had been cut, and so whether a hidden message between two of
   * its own still existed (docs/protocol.md §3).
   */
  takeExpunges(): number[] {
    const out: number[] = [];
    // V is sorted by UID: the highest UID first is the highest sequence number first, and each number announced is
    // then the message's number before the batch, as no message below it has gone yet (RFC 3501 §7.4.1).
    const uids = this.pendingExpunges.slice().sort((a, b) => b - a);
    for (const uid of uids) {
      const i = this.v.indexOf(uid);
      if (i === -1) continue;
      out.push(i + 1);
      this.v.removeAt(i);
    }
    this.pendingExpunges.length = 0;
    if (out.length > 0 && this.visible !== null) this.recentDue = true;
    return out;
  }

  /**
   * Agent sequence set → sorted UIDs the agent knows. Null when a number is out of range (the agent gets BAD, as
   * from Dovecot). `*` is the agent's last message.
   */
  uidsFromSeqSet(set: SeqSet): number[] | null {
    const spans = this.seqSpans(set);
    return spans === null ? null : this.uidsIn(spans);
  }

  /** Agent UID set → sorted UIDs the agent knows; `*` is the highest UID the agent knows (RFC 3501 §6.4.8). */
  uidsFromUidSet(set: SeqSet): number[] {
    return this.uidsIn(this.uidSpans(set));
  }

  /**
   * Agent sequence set → the positions in V it names, as spans (`Spans`). Null when a number is out of range.
   * Cost: a sort of the set's ranges, never a step per message they cover, however often they overlap.
   */
  seqSpans(set: SeqSet): Spans | null {
    const count = this.v.length;
    const pairs: number[] = [];
    for (const r of set) {
      const a = r.start === STAR ? count : r.start;
      const b = r.stop === STAR ? count : r.stop;
      const lo = Math.min(a, b);
      const hi = Math.max(a, b);
      if (lo < 1 || hi > count) return null;
      pairs.push(lo - 1, hi - 1);
    }
    return mergeSpans(pairs);
  }

  /**
   * A sequence set as SEARCH reads it (no BAD for numbers past the end): a range whose lower number is past the
   * last message matches nothing, `1000:*` included (as Dovecot answers), and one that reaches past it is cut at
   * the last message. Within range, the same positions as `seqSpans`.
   */
  searchSeqSpans(set: SeqSet): Spans {
    const n = this.v.length;
    const pairs: number[] = [];
    for (const r of set) {
      const numbers = [r.start, r.stop].filter((x) => x !== STAR);
      const lo = numbers.length === 0 ? n : Math.min(...numbers);
      const hi = numbers.length < 2 ? n : Math.min(Math.max(...numbers), n);
      if (lo >= 1 && lo <= n) pairs.push(lo - 1, hi - 1);
    }
    return mergeSpans(pairs);
  }

  /** Agent UID set → the positions in V of the UIDs it names, as spans; `*` is the highest UID the agent knows. */
  uidSpans(set: SeqSet): Spans {
    const count = this.v.length;
    if (count === 0) return [];
    const max = this.v.get(count - 1);
    const pairs: number[] = [];
    for (const r of set) {
      const a = r.start === STAR ? max : r.start;
      const b = r.stop === STAR ? max : r.stop;
      const first = this.v.lowerBound(Math.min(a, b));
      const last = this.v.lowerBound(Math.max(a, b) + 1) - 1;
      if (first <= last) pairs.push(first, last);
    }
    return mergeSpans(pairs);
  }

  /** The UIDs at the positions of `spans`, ascending. */
  uidsIn(spans: Spans): number[] {
    const out: number[] = [];
    for (let i = 0; i < spans.length; i += 2) for (let k = spans[i]!; k <= spans[i + 1]!; k++) out.push(this.v.get(k));
    return out;
  }

  /**
   * The UID ranges of `spans`: `[first UID, last UID]` of each span, flat. A UID of V lies in one of them exactly
   * when its position lies in the span, whatever V learns later (new UIDs are higher than any in V).
   */
  uidRangesOf(spans: Spans): number[] {
    const out: number[] = [];
    for (let i = 0; i < spans.length; i += 2) out.push(this.v.get(spans[i]!), this.v.get(spans[i + 1]!));
    return out;
  }

  /**
   * The hidden UIDs that an agent's UID set names, ascending, each with the slot of the rule that hid it
   * (`MessageFilter.rules`), for the audit of probes (docs/filtering.md "Probes"). Named are: a single UID (`n` or
   * `n:n`) that is hidden, and every hidden UID of a range `a:b` in which no UID is visible. A range holding a
   * visible UID names none (ranges span hidden UIDs by nature: `1:*`, `2:9` between two visible messages), nor does
   * one with `*`, which is the agent's own highest UID. A UID not classified yet, visible or absent is never named.
   * Empty in an unfiltered folder. Cost: two binary searches per set element, then one step per UID named.
   */
  hiddenNamed(set: SeqSet): { uids: number[]; slots: number[] } {
    const out = { uids: [] as number[], slots: [] as number[] };
    const visible = this.visible;
    if (visible === null) return out;
    const spans: Array<[number, number]> = [];
    for (const r of set) {
      if (r.start === STAR || r.stop === STAR) continue;
      const lo = Math.min(r.start, r.stop);
      const hi = Math.max(r.start, r.stop);
      if (lo !== hi && visible.hasVisibleIn(lo, hi)) continue;
      spans.push([lo, hi]);
    }
    spans.sort((a, b) => a[0] - b[0]);
    let done = 0;
    for (const [lo, hi] of spans) {
      if (hi <= done) continue;
      const [from, to] = visible.hiddenIn(Math.max(lo, done + 1), hi);
      for (let i = from; i < to; i++) {
        const [uid, slot] = visible.hiddenAt(i);
        out.uids.push(uid);
        out.slots.push(slot);
      }
      done = hi;
    }
    return out;
  }

  /** Every UID the agent knows, ascending. */
  allUids(): number[] {
    return Array.from(this.v.data.subarray(0, this.v.length));
  }

  /**
   * A UID set for upstream covering exactly `uids` (sorted): a range `a:b` only spans UIDs that are adjacent in U,
   * so it never covers a message the agent did not ask for (docs/protocol.md §3 "UID sets sent upstream").
   */
  upstreamSet(uids: readonly number[]): SeqRange[] {
    const out: SeqRange[] = [];
    let i = 0;
    while (i < uids.length) {
      const start = uids[i]!;
      let stop = start;
      let pos = this.u.indexOf(start, this.known);
      i++;
      while (pos !== -1 && i < uids.length && pos + 1 < this.known && this.u.get(pos + 1) === uids[i]) {
        stop = uids[i]!;
        pos++;
        i++;
      }
      out.push({ start, stop });
    }
    return out;
  }

  /** `upstreamSet(uids)` cut into sets of at most `ranges` ranges, one per upstream command, in UID order. */
  upstreamSets(uids: readonly number[], ranges = UPSTREAM_SET_RANGES): SeqRange[][] {
    const all = this.upstreamSet(uids);
    const out: SeqRange[][] = [];
    for (let i = 0; i < all.length; i += ranges) out.push(all.slice(i, i + ranges));
    return out;
  }
}
