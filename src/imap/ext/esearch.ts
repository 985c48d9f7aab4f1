/**
 * ESEARCH results (RFC 4731): the RETURN options MIN, MAX, COUNT and ALL over a result the caller computed (the
 * agent's visible messages only, in a filtered folder), written as the `* ESEARCH` response of §3.1 and RFC 4466
 * §2.6.2. Pure: no I/O.
 */

import { formatSeqSet, seqSetFromSorted } from "../wire/seqset.ts";

export type ReturnOption = "MIN" | "MAX" | "COUNT" | "ALL";

const OPTIONS: ReadonlySet<string> = new Set<ReturnOption>(["MIN", "MAX", "COUNT", "ALL"]);

/**
 * The RETURN options of a SEARCH (RFC 4731 §3.1), any case. `RETURN ()` means ALL. Null when an option is not one
 * of these (SAVE of RFC 5182 and PARTIAL of RFC 5267 are not handled here) or appears twice.
 */
export function parseReturnOptions(words: readonly string[]): ReturnOption[] | null {
  if (words.length === 0) return ["ALL"];
  const out: ReturnOption[] = [];
  for (const w of words) {
    const u = w.toUpperCase();
    if (!OPTIONS.has(u) || out.includes(u as ReturnOption)) return null;
    out.push(u as ReturnOption);
  }
  return out;
}

/** Sorted, distinct numbers as a compressed sequence set (`1,2,3,7` → `1:3,7`); "" for none. */
export function compressSet(numbers: Iterable<number>): string {
  const sorted = [...new Set(numbers)].sort((a, b) => a - b);
  return formatSeqSet(seqSetFromSorted(sorted));
}

export interface EsearchResult {
  readonly min: number | null;
  readonly max: number | null;
  readonly count: number;
  /** The compressed sequence set, "" when there is no match. */
  readonly all: string;
}

/** MIN, MAX, COUNT and ALL of a search result (sequence numbers or UIDs, any order, duplicates ignored). */
export function esearchResult(matches: Iterable<number>): EsearchResult {
  const set = new Set(matches);
  let min: number | null = null;
  let max: number | null = null;
  for (const n of set) {
    if (min === null || n < min) min = n;
    if (max === null || n > max) max = n;
  }
  return { min, max, count: set.size, all: compressSet(set) };
}

/**
 * The `* ESEARCH` response line (without CRLF): `(TAG "t")`, `UID` for a UID SEARCH, then the requested items in
 * the order MIN, MAX, ALL, COUNT. MIN, MAX and ALL are left out when nothing matched (RFC 4731 §3.1); COUNT is
 * always there when asked for.
 */
export function esearchResponse(
  tag: string | null,
  uid: boolean,
  matches: Iterable<number>,
  options: readonly ReturnOption[],
): string {
  const r = esearchResult(matches);
  const want = new Set(options.length === 0 ? ["ALL"] : options);
  let out = "* ESEARCH";
  if (tag !== null) out += ` (TAG "${tag.replace(/[\\"]/g, "\\$&")}")`;
  if (uid) out += " UID";
  if (want.has("MIN") && r.min !== null) out += ` MIN ${r.min}`;
  if (want.has("MAX") && r.max !== null) out += ` MAX ${r.max}`;
  if (want.has("ALL") && r.all !== "") out += ` ALL ${r.all}`;
  if (want.has("COUNT")) out += ` COUNT ${r.count}`;
  return out;
}
