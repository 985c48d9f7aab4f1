/**
 * SORT (RFC 5256 §3) over a given list of messages, with the DISPLAYFROM and DISPLAYTO keys of RFC 5957. Pure: the
 * caller fetches per message its INTERNALDATE, RFC822.SIZE and ENVELOPE, and passes them in mailbox order; the
 * result is the messages' ids (sequence numbers or UIDs, whichever the caller chose) in sorted order.
 *
 * Strings compare with i;unicode-casemap (RFC 5051), the comparator of I18NLEVEL=1 (RFC 5255 §4.5) that Dovecot
 * uses: the same order as i;ascii-casemap for ASCII, and `Étienne` between `Eve` and `Frank`. Messages that
 * compare equal on every key keep their mailbox order (§3: "sorted according to the order in which they appear
 * in the mailbox"); REVERSE applies to the key after it only, never to that final order.
 */

import { baseSubject, compareOctets, decodedName, type EnvelopeAddress, sentDate, unicodeCasemap } from "./keys.ts";

export type { EnvelopeAddress } from "./keys.ts";

export type SortKey = "ARRIVAL" | "CC" | "DATE" | "FROM" | "SIZE" | "SUBJECT" | "TO" | "DISPLAYFROM" | "DISPLAYTO";

export const SORT_KEYS: ReadonlySet<string> = new Set<SortKey>([
  "ARRIVAL",
  "CC",
  "DATE",
  "FROM",
  "SIZE",
  "SUBJECT",
  "TO",
  "DISPLAYFROM",
  "DISPLAYTO",
]);

export interface SortCriterion {
  readonly key: SortKey;
  readonly reverse: boolean;
}

export interface SortMessage {
  /** What the result lists: a sequence number or a UID. */
  readonly id: number;
  /** INTERNALDATE, milliseconds since the epoch. */
  readonly internalDate: number;
  /** RFC822.SIZE. */
  readonly size: number;
  /** ENVELOPE date: the Date header as sent, or null. */
  readonly date: string | null;
  /** ENVELOPE subject: the Subject header as sent (encoded words not decoded), or null. */
  readonly subject: string | null;
  readonly from: readonly EnvelopeAddress[] | null;
  readonly to: readonly EnvelopeAddress[] | null;
  readonly cc: readonly EnvelopeAddress[] | null;
}

/**
 * Parses a sort program (`REVERSE DATE SUBJECT`, already split into words, any case). Null when a key is unknown,
 * REVERSE is not followed by a key, or the program is empty (RFC 5256 §5 `sort-criteria`).
 */
export function parseSortCriteria(words: readonly string[]): SortCriterion[] | null {
  const out: SortCriterion[] = [];
  let reverse = false;
  for (const w of words) {
    const u = w.toUpperCase();
    if (u === "REVERSE") {
      if (reverse) return null;
      reverse = true;
      continue;
    }
    if (!SORT_KEYS.has(u)) return null;
    out.push({ key: u as SortKey, reverse });
    reverse = false;
  }
  return reverse || out.length === 0 ? null : out;
}

/**
 * RFC 5256 §3 `addr-mailbox` of the first address: the local part, "" when there is none. The first address is the
 * first ENVELOPE entry, a group's start marker included (whose mailbox is the group's name), as Dovecot does.
 */
function mailboxKey(list: readonly EnvelopeAddress[] | null): string {
  return unicodeCasemap(list?.[0]?.mailbox ?? "");
}

/** RFC 5957 §3: the first address's decoded display name, or its addr-spec when the name is missing or empty. */
function displayKey(list: readonly EnvelopeAddress[] | null): string {
  const a = list?.[0];
  if (a === undefined) return "";
  const name = decodedName(a.name);
  if (name !== null && name !== "") return unicodeCasemap(name);
  return unicodeCasemap(a.host === null ? (a.mailbox ?? "") : `${a.mailbox ?? ""}@${a.host}`);
}

type KeyValue = string | number;

function keyOf(m: SortMessage, key: SortKey): KeyValue {
  switch (key) {
    case "ARRIVAL":
      return m.internalDate;
    case "DATE":
      return sentDate(m.date, m.internalDate);
    case "SIZE":
      return m.size;
    case "SUBJECT":
      return baseSubject(m.subject).key;
    case "FROM":
      return mailboxKey(m.from);
    case "TO":
      return mailboxKey(m.to);
    case "CC":
      return mailboxKey(m.cc);
    case "DISPLAYFROM":
      return displayKey(m.from);
    case "DISPLAYTO":
      return displayKey(m.to);
  }
}

function compareValues(a: KeyValue, b: KeyValue): number {
  if (typeof a === "number" && typeof b === "number") return a < b ? -1 : a > b ? 1 : 0;
  return compareOctets(String(a), String(b));
}

/** The ids of `messages` (given in mailbox order) sorted by `criteria`. */
export function sortMessages(messages: readonly SortMessage[], criteria: readonly SortCriterion[]): number[] {
  // Each key is computed once per message (base subjects and dates are not cheap).
  const rows = messages.map((m, index) => ({ id: m.id, index, keys: criteria.map((c) => keyOf(m, c.key)) }));
  rows.sort((x, y) => {
    for (let i = 0; i < criteria.length; i++) {
      const c = compareValues(x.keys[i]!, y.keys[i]!);
      if (c !== 0) return criteria[i]!.reverse ? -c : c;
    }
    return x.index - y.index;
  });
  return rows.map((r) => r.id);
}
