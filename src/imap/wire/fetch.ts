/**
 * FETCH data items an agent may request (RFC 9051 §6.4.5, RFC 3501 §6.4.5, RFC 3516).
 * CONDSTORE's MODSEQ (RFC 7162 §3.1.4). Allowlist: anything else (X-GM-*, EMAILID, PREVIEW...) is a parse error.
 */
import type { Decoder, Section } from "./decoder.ts";
import { MAX_NUMBER } from "./limits.ts";

/** `<offset.count>` of a partial fetch. */
export interface ByteRange {
  readonly offset: number;
  readonly count: number;
}

export type SimpleFetchItem =
  | "FLAGS"
  | "UID"
  | "INTERNALDATE"
  | "RFC822.SIZE"
  | "ENVELOPE"
  | "BODYSTRUCTURE"
  | "BODY"
  | "RFC822"
  | "RFC822.HEADER"
  | "RFC822.TEXT"
  /** CONDSTORE (RFC 7162 §3.1.4). */
  | "MODSEQ";

export type FetchItem =
  | { readonly type: SimpleFetchItem }
  /** BODY[section]<partial> or BODY.PEEK[...]. Without peek it sets \Seen (§6.4.5). */
  | { readonly type: "BODY[]"; readonly peek: boolean; readonly section: Section; readonly partial: ByteRange | null }
  | {
      readonly type: "BINARY[]";
      readonly peek: boolean;
      readonly part: readonly number[];
      readonly partial: ByteRange | null;
    }
  | { readonly type: "BINARY.SIZE"; readonly part: readonly number[] };

export type FetchMacro = "ALL" | "FAST" | "FULL";

const SIMPLE = new Set<string>([
  "FLAGS",
  "UID",
  "INTERNALDATE",
  "RFC822.SIZE",
  "ENVELOPE",
  "BODYSTRUCTURE",
  "BODY",
  "RFC822",
  "RFC822.HEADER",
  "RFC822.TEXT",
  "MODSEQ",
]);

/** Macro expansions (RFC 3501 §6.4.5). */
export const FETCH_MACROS: Readonly<Record<FetchMacro, readonly SimpleFetchItem[]>> = {
  ALL: ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"],
  FAST: ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
  FULL: ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"],
};

/** Reads `fetch-att` after its name has been read (upper-cased). */
export function fetchAtt(dec: Decoder, name: string): FetchItem | null {
  if (SIMPLE.has(name) && dec.peek() !== 0x5b) return { type: name as SimpleFetchItem };
  if (name === "BODY" || name === "BODY.PEEK") {
    const section = dec.section();
    if (section === null) return dec.fail("expected section after BODY.PEEK");
    return { type: "BODY[]", peek: name === "BODY.PEEK", section, partial: partial(dec) };
  }
  if (name === "BINARY" || name === "BINARY.PEEK") {
    const part = dec.sectionBinary();
    if (part === null) return dec.fail("expected section-binary");
    return { type: "BINARY[]", peek: name === "BINARY.PEEK", part, partial: partial(dec) };
  }
  if (name === "BINARY.SIZE") {
    const part = dec.sectionBinary();
    if (part === null) return dec.fail("expected section-binary");
    return { type: "BINARY.SIZE", part };
  }
  return dec.fail(`unsupported FETCH item ${name}`, "unsupported");
}

/** `"<" number "." nz-number ">"`. */
function partial(dec: Decoder): ByteRange | null {
  if (!dec.acceptByte(0x3c)) return null;
  const offset = dec.expectNumber("partial offset");
  dec.expectByte(0x2e, "'.'");
  const count = dec.expectNzNumber("partial length");
  dec.expectByte(0x3e, "'>'");
  return offset + count > MAX_NUMBER + 1 ? dec.fail("partial range out of range") : { offset, count };
}

/** FETCH's argument: a macro, one item, or a parenthesized list of items. */
export function fetchItems(dec: Decoder): { items: FetchItem[]; macro: FetchMacro | null } {
  const items: FetchItem[] = [];
  const one = (): void => {
    const name = dec.name();
    if (name === null) {
      dec.fail("expected FETCH item");
      return;
    }
    const item = fetchAtt(dec, name);
    if (item !== null) items.push(item);
  };
  if (dec.peek() === 0x28) {
    dec.list(one);
    if (items.length === 0) dec.fail("empty FETCH item list");
    return { items, macro: null };
  }
  const save = dec.pos;
  const name = dec.name();
  if ((name === "ALL" || name === "FAST" || name === "FULL") && dec.peek() !== 0x5b) {
    for (const type of FETCH_MACROS[name]) items.push({ type });
    return { items, macro: name };
  }
  dec.pos = save;
  one();
  return { items, macro: null };
}
