/**
 * What SORT and THREAD (RFC 5256) compare, computed from the data a server returns for a message: the base subject
 * (§2.1), the sent date (§2.2), the comparators i;ascii-casemap (RFC 4790 §9.2) and i;unicode-casemap (RFC 5051),
 * and envelope addresses.
 * Pure functions; the inputs are ENVELOPE fields as upstream sent them (raw, encoded words not yet decoded).
 */

import { decodeEncodedWords } from "../../mail/encoded-words.ts";
import { THREAD_SUBJECT_CHARS } from "../limits.ts";

/** An ENVELOPE address (RFC 3501 §7.4.2): a group marker has a null host. */
export interface EnvelopeAddress {
  readonly name: string | null;
  readonly mailbox: string | null;
  readonly host: string | null;
}

export interface BaseSubject {
  /** The base subject after i;unicode-casemap (`unicodeCasemap`), ready for comparison. */
  readonly key: string;
  /** True when extraction removed a `Re:`, `Fw:`, `Fwd:`, `(fwd)` or `[fwd: ...]` (§2.1, used by §4 step 5). */
  readonly replyOrForward: boolean;
}

/** subj-leader's subj-refwd after any subj-blobs (§5 ABNF); `*WSP` is at most one space after step 1. */
const LEADER = /^(?:\[[^[\]]*\] ?)*(?:re|fwd?) ?(?:\[[^[\]]*\] ?)?:/i;
const BLOB = /^\[[^[\]]*\] ?/;

/** RFC 5256 §2.1, steps 1 to 6. A subject whose encoded words cannot be decoded is used as it is. */
export function baseSubject(subject: string | null): BaseSubject {
  const raw = subject ?? "";
  // (1) Encoded words to UTF-8; tabs and continuations to space; runs of spaces to one.
  // Only the first THREAD_SUBJECT_CHARS of it are read: the steps below grow with the square of the length.
  let s = (decodeEncodedWords(raw) ?? raw)
    .replace(/\r?\n(?=[ \t])/g, "")
    .replace(/[ \t\r\n]+/g, " ")
    .slice(0, THREAD_SUBJECT_CHARS);
  let replyOrForward = false;
  for (;;) {
    // (2) Trailing subj-trailer: "(fwd)" or WSP.
    for (;;) {
      if (s.endsWith(" ")) s = s.slice(0, -1);
      else if (s.length >= 5 && s.slice(-5).toLowerCase() === "(fwd)") {
        s = s.slice(0, -5);
        replyOrForward = true;
      } else break;
    }
    // (3) to (5): leaders, then one blob when something is left after it, until neither applies.
    for (;;) {
      let changed = false;
      for (;;) {
        if (s.startsWith(" ")) {
          s = s.slice(1);
          changed = true;
          continue;
        }
        const m = LEADER.exec(s);
        if (m === null) break;
        s = s.slice(m[0].length);
        replyOrForward = true;
        changed = true;
      }
      const blob = BLOB.exec(s);
      if (blob !== null && blob[0].length < s.length) {
        s = s.slice(blob[0].length);
        changed = true;
      }
      if (!changed) break;
    }
    // (6) "[fwd:" ... "]" around the rest: remove and start again at (2).
    if (s.length >= 6 && s.slice(0, 5).toLowerCase() === "[fwd:" && s.endsWith("]")) {
      s = s.slice(5, -1);
      replyOrForward = true;
      continue;
    }
    break;
  }
  return { key: unicodeCasemap(s), replyOrForward };
}

/** i;ascii-casemap (RFC 4790 §9.2): a-z become A-Z, nothing else changes. */
export function asciiUpper(s: string): string {
  return s.replace(/[a-z]+/g, (m) => m.toUpperCase());
}

/** The Latin digraphs whose titlecase differs from their uppercase (UnicodeData simple titlecase mapping). */
const TITLECASE: Readonly<Record<string, string>> = {
  "\u01c4": "\u01c5",
  "\u01c5": "\u01c5",
  "\u01c6": "\u01c5",
  "\u01c7": "\u01c8",
  "\u01c8": "\u01c8",
  "\u01c9": "\u01c8",
  "\u01ca": "\u01cb",
  "\u01cb": "\u01cb",
  "\u01cc": "\u01cb",
  "\u01f1": "\u01f2",
  "\u01f2": "\u01f2",
  "\u01f3": "\u01f2",
};

/**
 * i;unicode-casemap (RFC 5051 §2): each character to its simple titlecase mapping, then NFKD. This is the
 * comparator of I18NLEVEL=1 servers (RFC 5255 §4.5), which Dovecot is; for ASCII it equals i;ascii-casemap.
 * A character whose uppercase is more than one character (`ß`) has no simple mapping and stays.
 */
export function unicodeCasemap(s: string): string {
  if (/^[\x00-\x7f]*$/.test(s)) return asciiUpper(s);
  let out = "";
  for (const ch of s) {
    const t = TITLECASE[ch];
    if (t !== undefined) {
      out += t;
      continue;
    }
    const u = ch.toUpperCase();
    out += [...u].length === 1 ? u : ch;
  }
  return out.normalize("NFKD");
}

/** Compares by Unicode code point, which is the order of the UTF-8 octets (i;octet after the case map). */
export function compareOctets(a: string, b: string): number {
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.codePointAt(i)!;
    const y = b.codePointAt(i)!;
    if (x !== y) return x < y ? -1 : 1;
    if (x > 0xffff) i++;
  }
  return a.length < b.length ? -1 : a.length > b.length ? 1 : 0;
}

const MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
/** RFC 5322 §4.3 obsolete zones; military letters (other than Z) are unreliable and count as +0000, as §4.3 says. */
const ZONES: Readonly<Record<string, number>> = {
  UT: 0,
  GMT: 0,
  Z: 0,
  EST: -5 * 60,
  EDT: -4 * 60,
  CST: -6 * 60,
  CDT: -5 * 60,
  MST: -7 * 60,
  MDT: -6 * 60,
  PST: -8 * 60,
  PDT: -7 * 60,
};

/** `[day-of-week ","] day month year hour ":" minute [":" second] [zone]`, spaces around the punctuation allowed. */
const DATE = new RegExp(
  "^(?:[a-z]{3} ?, ?)?(\\d{1,2}) ([a-z]{3}) (\\d{2,4}) (\\d{1,2}) ?: ?(\\d{2})(?: ?: ?(\\d{2}))?" +
    "(?: ([+-]\\d{4}|[a-z]{1,5}))?$",
  "i",
);

/**
 * A Date header (RFC 5322 §3.3, with the obsolete forms of §4.3) as milliseconds since the epoch in UTC, or null
 * when it cannot be parsed. Comments are removed; a missing zone counts as +0000; a two-digit year below 70 is
 * 20xx, else 19xx (§4.3).
 */
export function parseSentDate(value: string | null): number | null {
  if (value === null) return null;
  const text = value
    .replace(/\([^()]*\)/g, " ")
    .replace(/\s+/g, " ")
    .trim();
  const m = DATE.exec(text);
  if (m === null) return null;
  const day = Number(m[1]);
  const month = MONTHS.indexOf(m[2]!.toLowerCase());
  let year = Number(m[3]);
  if (m[3]!.length === 2) year += year < 70 ? 2000 : 1900;
  else if (m[3]!.length === 3) year += 1900;
  const hour = Number(m[4]);
  const minute = Number(m[5]);
  const second = m[6] === undefined ? 0 : Number(m[6]);
  if (month < 0 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) return null;
  let offset = 0;
  const zone = m[7];
  if (zone !== undefined) {
    if (zone.startsWith("+") || zone.startsWith("-")) {
      const hh = Number(zone.slice(1, 3));
      const mm = Number(zone.slice(3, 5));
      if (mm > 59) return null;
      offset = (zone.startsWith("-") ? -1 : 1) * (hh * 60 + mm);
    } else {
      const named = ZONES[zone.toUpperCase()];
      if (named !== undefined) offset = named;
      else if (zone.length !== 1) return null;
    }
  }
  return Date.UTC(year, month, day, hour, minute, second) - offset * 60_000;
}

/**
 * The sent date for SORT and THREAD (RFC 5256 §2.2): the Date header in UTC, or the internal date when there is
 * none or it cannot be parsed.
 */
export function sentDate(date: string | null, internalDate: number): number {
  return parseSentDate(date) ?? internalDate;
}

/** A display name with its encoded words decoded (RFC 2047 §5), kept raw when they cannot be. */
export function decodedName(name: string | null): string | null {
  if (name === null) return null;
  return decodeEncodedWords(name) ?? name;
}
