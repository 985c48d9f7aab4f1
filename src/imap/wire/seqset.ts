/**
 * Sequence sets (RFC 9051 §9 `sequence-set`): structured, with `*` kept symbolic because
 * its meaning depends on the mailbox (the largest number in use, RFC 3501 §6.4.8; docs/protocol.md §3).
 */

/** Stands for `*` in a range bound: 0 is never a valid sequence number or UID. */
export const STAR = 0;

/** `start:stop` as written (either may be STAR; `start` may exceed `stop`). A single number has start === stop. */
export interface SeqRange {
  readonly start: number;
  readonly stop: number;
}

export type SeqSet = readonly SeqRange[];

/** Serializes a set the way it was parsed (`1:3,7,9:*`). */
export function formatSeqSet(set: SeqSet): string {
  let out = "";
  for (let i = 0; i < set.length; i++) {
    const r = set[i]!;
    if (i > 0) out += ",";
    out += r.start === STAR ? "*" : String(r.start);
    if (r.stop !== r.start) out += ":" + (r.stop === STAR ? "*" : String(r.stop));
  }
  return out;
}

/**
 * Whether `n` is in the set when `*` means `largest` (RFC 9051 §6.4.8: `n:*` always
 * includes `largest`, even when n > largest).
 */
export function seqSetContains(set: SeqSet, n: number, largest: number): boolean {
  for (const r of set) {
    const a = r.start === STAR ? largest : r.start;
    const b = r.stop === STAR ? largest : r.stop;
    const lo = a < b ? a : b;
    const hi = a < b ? b : a;
    if (n >= lo && n <= hi) return true;
  }
  return false;
}

/** Builds a set of ranges from sorted, distinct numbers, compressing runs (`1,2,3,7` → `1:3,7`). */
export function seqSetFromSorted(numbers: ArrayLike<number>): SeqRange[] {
  const out: SeqRange[] = [];
  let i = 0;
  while (i < numbers.length) {
    const start = numbers[i]!;
    let stop = start;
    while (i + 1 < numbers.length && numbers[i + 1] === stop + 1) {
      stop++;
      i++;
    }
    out.push({ start, stop });
    i++;
  }
  return out;
}
