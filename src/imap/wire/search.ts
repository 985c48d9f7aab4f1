/**
 * SEARCH keys (RFC 3501 §6.4.4, RFC 9051 §6.4.4, WITHIN RFC 5032), ESEARCH return
 * options (RFC 4731) and SORT criteria (RFC 5256). MODSEQ (RFC 7162) is SEARCH's only. Allowlist: X-GM-RAW,
 * SAVE, FUZZY, EMAILID, THREADID... are parse errors (docs/protocol.md §2, §7.6, §7.12).
 */
import type { Decoder, ImapDate } from "./decoder.ts";
import { MAX_LIST_ITEMS, MAX_SEARCH_DEPTH } from "./limits.ts";
import type { SeqSet } from "./seqset.ts";

export type SearchFlagKey =
  | "ALL"
  | "ANSWERED"
  | "DELETED"
  | "DRAFT"
  | "FLAGGED"
  | "NEW"
  | "OLD"
  | "RECENT"
  | "SEEN"
  | "UNANSWERED"
  | "UNDELETED"
  | "UNDRAFT"
  | "UNFLAGGED"
  | "UNSEEN";
export type SearchTextKey = "BCC" | "BODY" | "CC" | "FROM" | "SUBJECT" | "TEXT" | "TO";
export type SearchDateKey = "BEFORE" | "ON" | "SINCE" | "SENTBEFORE" | "SENTON" | "SENTSINCE";

export type SearchKey =
  | { readonly key: SearchFlagKey }
  | { readonly key: SearchTextKey; readonly value: string }
  | { readonly key: SearchDateKey; readonly date: ImapDate }
  | { readonly key: "KEYWORD" | "UNKEYWORD"; readonly flag: string }
  | { readonly key: "HEADER"; readonly field: string; readonly value: string }
  | { readonly key: "LARGER" | "SMALLER"; readonly size: number }
  /**
   * CONDSTORE (RFC 7162 §3.1.5): messages whose mod-sequence is at least `modseq`; `entry` is the optional
   * entry-name and entry-type-req (`"/flags/\\seen" all`), kept as given.
   */
  | {
      readonly key: "MODSEQ";
      readonly entry: { readonly name: string; readonly type: string } | null;
      readonly modseq: number;
    }
  /** WITHIN (RFC 5032): seconds. */
  | { readonly key: "YOUNGER" | "OLDER"; readonly seconds: number }
  | { readonly key: "UID"; readonly set: SeqSet }
  /** A bare sequence set: message sequence numbers. */
  | { readonly key: "SEQ"; readonly set: SeqSet }
  | { readonly key: "NOT"; readonly operand: SearchKey }
  | { readonly key: "OR"; readonly left: SearchKey; readonly right: SearchKey }
  /** A parenthesized list: all must match. */
  | { readonly key: "AND"; readonly operands: readonly SearchKey[] };

export type SearchReturnOption = "MIN" | "MAX" | "COUNT" | "ALL";

const FLAG_KEYS = new Set<string>([
  "ALL",
  "ANSWERED",
  "DELETED",
  "DRAFT",
  "FLAGGED",
  "NEW",
  "OLD",
  "RECENT",
  "SEEN",
  "UNANSWERED",
  "UNDELETED",
  "UNDRAFT",
  "UNFLAGGED",
  "UNSEEN",
]);
const TEXT_KEYS = new Set<string>(["BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"]);
const DATE_KEYS = new Set<string>(["BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"]);

/** Charsets the proxy can evaluate; others get NO [BADCHARSET (...)] (RFC 9051 §6.4.4). */
export const SEARCH_CHARSETS: readonly string[] = ["US-ASCII", "UTF-8"];

/** One `search-key`. */
export function searchKey(dec: Decoder, depth = 0): SearchKey | null {
  if (depth > MAX_SEARCH_DEPTH) return dec.fail("search keys nested too deeply", "nesting-too-deep");
  const c = dec.peek();
  if (c === 0x28) {
    const operands: SearchKey[] = [];
    dec.list(() => {
      const k = searchKey(dec, depth + 1);
      if (k !== null) operands.push(k);
      else dec.fail("expected search key");
      // Inside parentheses keys are space-separated like at top level; list() handles SP.
    });
    if (operands.length === 0) return dec.fail("empty search key list");
    return dec.ok ? { key: "AND", operands } : null;
  }
  if ((c >= 0x30 && c <= 0x39) || c === 0x2a || c === 0x24) {
    const set = dec.seqSet();
    return set === null ? dec.fail("expected sequence set") : { key: "SEQ", set };
  }
  const name = dec.keyword();
  if (name === null) return null;
  if (FLAG_KEYS.has(name)) return { key: name as SearchFlagKey };
  if (TEXT_KEYS.has(name)) {
    dec.expectSP();
    const value = dec.expectAstringText("search string");
    return dec.ok ? { key: name as SearchTextKey, value } : null;
  }
  if (DATE_KEYS.has(name)) {
    dec.expectSP();
    const date = dec.date();
    if (date === null) return dec.fail("expected date");
    return { key: name as SearchDateKey, date };
  }
  switch (name) {
    case "KEYWORD":
    case "UNKEYWORD": {
      dec.expectSP();
      const flag = dec.expectAtom("flag-keyword");
      return dec.ok ? { key: name, flag } : null;
    }
    case "HEADER": {
      dec.expectSP();
      const field = dec.expectAstringText("header field name");
      dec.expectSP();
      const value = dec.expectAstringText("search string");
      if (dec.ok && (field === "" || /[\x00-\x20\x7f-\uffff:]/.test(field)))
        return dec.fail("invalid header field name");
      return dec.ok ? { key: "HEADER", field, value } : null;
    }
    case "LARGER":
    case "SMALLER": {
      dec.expectSP();
      const size = dec.number64();
      return size === null ? dec.fail("expected number") : { key: name, size };
    }
    case "MODSEQ": {
      // `"MODSEQ" [SP entry-name SP entry-type-req] SP mod-sequence-valzer` (RFC 7162 §7).
      dec.expectSP();
      let entry: { name: string; type: string } | null = null;
      if (dec.peek() === 0x22) {
        const entryName = dec.expectAstringText("entry-name");
        dec.expectSP();
        const type = dec.keyword();
        if (type !== "PRIV" && type !== "SHARED" && type !== "ALL") return dec.fail("expected entry-type-req");
        dec.expectSP();
        if (!/^\/flags\/\\?[!#-'*+\-.0-9;<=>?@A-Z^-z|~]+$/i.test(entryName)) return dec.fail("invalid entry-name");
        entry = { name: entryName, type };
      }
      const modseq = dec.number64();
      return modseq === null ? dec.fail("expected mod-sequence") : { key: "MODSEQ", entry, modseq };
    }
    case "YOUNGER":
    case "OLDER": {
      dec.expectSP();
      const seconds = dec.expectNzNumber("interval");
      return dec.ok ? { key: name, seconds } : null;
    }
    case "UID": {
      dec.expectSP();
      const set = dec.expectSeqSet();
      return dec.ok ? { key: "UID", set } : null;
    }
    case "NOT": {
      dec.expectSP();
      const operand = searchKey(dec, depth + 1);
      return operand === null ? dec.fail("expected search key after NOT") : { key: "NOT", operand };
    }
    case "OR": {
      dec.expectSP();
      const left = searchKey(dec, depth + 1);
      if (left === null) return dec.fail("expected search key after OR");
      dec.expectSP();
      const right = searchKey(dec, depth + 1);
      return right === null ? dec.fail("expected second search key after OR") : { key: "OR", left, right };
    }
  }
  return dec.fail(`unsupported search key ${name}`, "unsupported");
}

/** A MODSEQ key anywhere among `keys`, nested ones included. */
export function hasModseq(keys: readonly SearchKey[]): boolean {
  return keys.some((k): boolean => {
    switch (k.key) {
      case "MODSEQ":
        return true;
      case "NOT":
        return hasModseq([k.operand]);
      case "OR":
        return hasModseq([k.left, k.right]);
      case "AND":
        return hasModseq(k.operands);
      default:
        return false;
    }
  });
}

/** `search-key *(SP search-key)` up to the end of the command. */
export function searchKeys(dec: Decoder): SearchKey[] {
  const keys: SearchKey[] = [];
  do {
    if (keys.length >= MAX_LIST_ITEMS) {
      dec.fail("too many search keys", "too-many-items");
      break;
    }
    const k = searchKey(dec);
    if (k === null) {
      dec.fail("expected search key");
      break;
    }
    keys.push(k);
  } while (dec.sp());
  return keys;
}

/** `"CHARSET" SP astring`, checked against SEARCH_CHARSETS; the name upper-cased. */
export function charset(dec: Decoder): string {
  const cs = dec.expectAstringText("charset").toUpperCase();
  // RFC 9051 §6.4.4: BADCHARSET with the charsets that are supported.
  if (dec.ok && !SEARCH_CHARSETS.includes(cs))
    dec.fail(`unsupported charset ${cs}`, "bad-charset", `BADCHARSET (${SEARCH_CHARSETS.join(" ")})`);
  return cs;
}

/** ESEARCH `RETURN (...)` options (RFC 4731 §3.1); an empty list means ALL. SAVE is refused. */
export function searchReturnOptions(dec: Decoder): SearchReturnOption[] {
  const opts: SearchReturnOption[] = [];
  dec.expectList(() => {
    const o = dec.keyword();
    if (o === "MIN" || o === "MAX" || o === "COUNT" || o === "ALL") {
      if (!opts.includes(o)) opts.push(o);
    } else dec.fail(`unsupported RETURN option ${o ?? ""}`, "unsupported");
  }, "search return options");
  if (opts.length === 0) opts.push("ALL");
  return opts;
}

export type SortKey = "ARRIVAL" | "CC" | "DATE" | "FROM" | "SIZE" | "SUBJECT" | "TO" | "DISPLAYFROM" | "DISPLAYTO";
export interface SortCriterion {
  readonly key: SortKey;
  readonly reverse: boolean;
}
const SORT_KEYS = new Set<string>([
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

/** `sort-criteria` = "(" sort-criterion *(SP sort-criterion) ")" (RFC 5256, RFC 5957). */
export function sortCriteria(dec: Decoder): SortCriterion[] {
  const out: SortCriterion[] = [];
  dec.expectList(
    () => {
      let k = dec.keyword();
      const reverse = k === "REVERSE";
      if (reverse) {
        dec.expectSP();
        k = dec.keyword();
      }
      if (k !== null && SORT_KEYS.has(k)) out.push({ key: k as SortKey, reverse });
      else dec.fail(`unsupported sort key ${k ?? ""}`, "unsupported");
    },
    "sort criteria",
    16,
  );
  // RFC 5256 §3: sort-criteria = "(" sort-criterion *(SP sort-criterion) ")", at least one key.
  if (dec.ok && out.length === 0) dec.fail("a sort program needs at least one sort key");
  return out;
}
