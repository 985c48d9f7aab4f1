/**
 * Upstream responses (RFC 9051 §7) parsed into structured values. FETCH body items
 * keep their literal bytes as views. Unknown response codes, untagged responses and
 * FETCH items are reported as unknown so the proxy can drop them (docs/protocol.md §2).
 */
import { Decoder, type ImapDateTime, type Section, type Value } from "./decoder.ts";
import { type Parsed, WireError } from "./errors.ts";
import type { Frame } from "./framer.ts";
import { decodeMutf7, isInbox } from "./mutf7.ts";
import type { SeqSet } from "./seqset.ts";
import { latin1 } from "./text.ts";

export type StatusKind = "OK" | "NO" | "BAD" | "BYE" | "PREAUTH";

const ATOM_CODES = new Set<string>([
  "ALERT",
  "PARSE",
  "READ-ONLY",
  "READ-WRITE",
  "TRYCREATE",
  "UIDNOTSTICKY",
  "CLOSED",
  "NOMODSEQ",
  "TOOBIG",
  // RFC 5530
  "UNAVAILABLE",
  "AUTHENTICATIONFAILED",
  "AUTHORIZATIONFAILED",
  "EXPIRED",
  "PRIVACYREQUIRED",
  "CONTACTADMIN",
  "NOPERM",
  "INUSE",
  "EXPUNGEISSUED",
  "CORRUPTION",
  "SERVERBUG",
  "CLIENTBUG",
  "CANNOT",
  "LIMIT",
  "OVERQUOTA",
  "ALREADYEXISTS",
  "NONEXISTENT",
  // RFC 3516 §4.2
  "UNKNOWN-CTE",
]);

export type AtomCodeName =
  | "ALERT"
  | "PARSE"
  | "READ-ONLY"
  | "READ-WRITE"
  | "TRYCREATE"
  | "UIDNOTSTICKY"
  | "CLOSED"
  | "NOMODSEQ"
  | "TOOBIG"
  | "UNAVAILABLE"
  | "AUTHENTICATIONFAILED"
  | "AUTHORIZATIONFAILED"
  | "EXPIRED"
  | "PRIVACYREQUIRED"
  | "CONTACTADMIN"
  | "NOPERM"
  | "INUSE"
  | "EXPUNGEISSUED"
  | "CORRUPTION"
  | "SERVERBUG"
  | "CLIENTBUG"
  | "CANNOT"
  | "LIMIT"
  | "OVERQUOTA"
  | "ALREADYEXISTS"
  | "NONEXISTENT"
  | "UNKNOWN-CTE";

/** A response code (RFC 9051 §7.1); `known: false` codes are to be dropped. */
export type ResponseCode =
  | { readonly known: true; readonly name: AtomCodeName }
  | {
      readonly known: true;
      readonly name: "UIDNEXT" | "UIDVALIDITY" | "UNSEEN" | "HIGHESTMODSEQ";
      readonly value: number;
    }
  | { readonly known: true; readonly name: "PERMANENTFLAGS"; readonly flags: readonly string[] }
  | { readonly known: true; readonly name: "CAPABILITY"; readonly capabilities: readonly string[] }
  | { readonly known: true; readonly name: "BADCHARSET"; readonly charsets: readonly string[] }
  | { readonly known: true; readonly name: "APPENDUID"; readonly uidValidity: number; readonly uids: SeqSet }
  /** CONDSTORE (RFC 7162 §3.1.3): the messages a conditional STORE left unchanged. */
  | { readonly known: true; readonly name: "MODIFIED"; readonly set: SeqSet }
  | {
      readonly known: true;
      readonly name: "COPYUID";
      readonly uidValidity: number;
      readonly source: SeqSet;
      readonly destination: SeqSet;
    }
  | { readonly known: false; readonly name: string; readonly text: string };

/** A FETCH response item. Body data are byte views (null for NIL). */
export type FetchAttr =
  | { readonly name: "FLAGS"; readonly flags: readonly string[] }
  | { readonly name: "UID" | "RFC822.SIZE"; readonly value: number }
  | { readonly name: "INTERNALDATE"; readonly date: ImapDateTime }
  | { readonly name: "ENVELOPE" | "BODYSTRUCTURE" | "BODY"; readonly value: Value }
  | {
      readonly name: "BODY[]";
      readonly section: Section;
      readonly origin: number | null;
      readonly data: Uint8Array | null;
    }
  | {
      readonly name: "BINARY[]";
      readonly part: readonly number[];
      readonly origin: number | null;
      readonly data: Uint8Array | null;
    }
  | { readonly name: "BINARY.SIZE"; readonly part: readonly number[]; readonly value: number }
  /** CONDSTORE (RFC 7162 §3.1.4): `MODSEQ (n)`. */
  | { readonly name: "MODSEQ"; readonly value: number }
  | { readonly name: "RFC822" | "RFC822.HEADER" | "RFC822.TEXT"; readonly data: Uint8Array | null }
  /** X-GM-*, EMAILID...: to be dropped. `item` is the upper-cased item name. */
  | { readonly name: "unknown"; readonly item: string; readonly value: Value | null };

export interface NamespaceDescr {
  readonly prefix: string;
  readonly delimiter: string | null;
}

export type Response =
  | { readonly type: "continuation"; readonly text: string }
  | {
      readonly type: "status";
      /** null for untagged (`*`). */
      readonly tag: string | null;
      readonly status: StatusKind;
      readonly code: ResponseCode | null;
      readonly text: string;
    }
  | { readonly type: "EXISTS" | "EXPUNGE" | "RECENT"; readonly n: number }
  | {
      readonly type: "FETCH";
      readonly seq: number;
      readonly attrs: readonly FetchAttr[];
      /** Past MAX_LIST_DEPTH, MAX_LITERALS_PER_RESPONSE or MAX_RESPONSE_LINE: not read, `attrs` empty. */
      readonly unreadable?: true;
    }
  | {
      readonly type: "LIST" | "LSUB";
      readonly attributes: readonly string[];
      readonly delimiter: string | null;
      /** The name as sent (modified UTF-7), to address it upstream. */
      readonly raw: string;
      /** Decoded name; null if upstream sent a non-canonical or invalid name. */
      readonly mailbox: string | null;
      /** CHILDINFO extended data (RFC 5258 §3.5), written by the proxy only; never parsed from upstream. */
      readonly childInfo?: readonly string[];
    }
  | {
      readonly type: "STATUS";
      readonly raw: string;
      readonly mailbox: string | null;
      readonly items: ReadonlyArray<readonly [string, number]>;
    }
  /** `modseq`: CONDSTORE's `(MODSEQ n)` after the numbers (RFC 7162 §3.1.5). */
  | { readonly type: "SEARCH" | "SORT"; readonly numbers: readonly number[]; readonly modseq?: number }
  | {
      readonly type: "ESEARCH";
      readonly tag: string | null;
      readonly uid: boolean;
      readonly min: number | null;
      readonly max: number | null;
      readonly count: number | null;
      readonly all: SeqSet | null;
    }
  | { readonly type: "CAPABILITY" | "ENABLED"; readonly capabilities: readonly string[] }
  | { readonly type: "FLAGS"; readonly flags: readonly string[] }
  | { readonly type: "VANISHED"; readonly earlier: boolean; readonly uids: SeqSet }
  | { readonly type: "ID"; readonly params: ReadonlyArray<readonly [string, string | null]> | null }
  | {
      readonly type: "NAMESPACE";
      readonly personal: readonly NamespaceDescr[] | null;
      readonly other: readonly NamespaceDescr[] | null;
      readonly shared: readonly NamespaceDescr[] | null;
    }
  /** Untagged data we do not know (THREAD, METADATA, QUOTA, XLIST...): drop it. */
  | { readonly type: "unknown"; readonly name: string };

const textDecoder = new TextDecoder("utf-8");

/** Parses one framed upstream response. */
export function parseResponse(frame: Frame): Parsed<Response> {
  if (frame.truncated === true) return truncatedResponse(frame);
  const dec = new Decoder(frame);
  const r = response(dec);
  if (r?.type === "FETCH" && r.unreadable === true) return { ok: true, value: r };
  if (r !== null && dec.expectEnd()) return { ok: true, value: r };
  return { ok: false, error: dec.error ?? new WireError("syntax", "invalid response") };
}

/**
 * A response the framer read to its end without keeping it all (more than MAX_LITERALS_PER_RESPONSE literals, or a
 * line longer than MAX_RESPONSE_LINE): a FETCH is one with nothing read (`unreadable`, as one nested too deeply,
 * `untagged`); anything else is an error.
 */
function truncatedResponse(frame: Frame): Parsed<Response> {
  const dec = new Decoder(frame);
  if (dec.acceptByte(0x2a) && dec.sp()) {
    const seq = dec.number();
    if (seq !== null && dec.sp() && dec.keyword() === "FETCH" && dec.ok)
      return { ok: true, value: { type: "FETCH", seq, attrs: [], unreadable: true } };
  }
  return { ok: false, error: new WireError("response-too-big", "response past the framer's limits") };
}

function response(dec: Decoder): Response | null {
  if (dec.acceptByte(0x2b)) {
    // `+` [SP text]; some servers send a bare `+`.
    dec.sp();
    return { type: "continuation", text: text(dec) };
  }
  if (dec.acceptByte(0x2a)) {
    dec.expectSP();
    return untagged(dec);
  }
  const tag = dec.tag();
  if (tag === null) return dec.fail('expected tag, "*" or "+"');
  dec.expectSP();
  const status = dec.keyword();
  if (status !== "OK" && status !== "NO" && status !== "BAD") return dec.fail("expected OK, NO or BAD");
  return statusResponse(dec, tag, status);
}

function statusResponse(dec: Decoder, tag: string | null, status: StatusKind): Response | null {
  let code: ResponseCode | null = null;
  if (dec.sp() && dec.peek() === 0x5b) {
    dec.acceptByte(0x5b);
    code = responseCode(dec);
    dec.expectByte(0x5d, "']'");
    dec.sp();
  }
  if (!dec.ok) return null;
  return { type: "status", tag, status, code, text: text(dec) };
}

/** resp-text: the rest of the line; any literal it seems to announce is skipped. */
function text(dec: Decoder): string {
  const t = dec.restOfLine();
  dec.skipRest();
  return t;
}

function responseCode(dec: Decoder): ResponseCode | null {
  const name = dec.name();
  if (name === null) return dec.fail("expected response code");
  if (ATOM_CODES.has(name) && dec.peek() === 0x5d) return { known: true, name: name as AtomCodeName };
  switch (name) {
    case "UIDNEXT":
    case "UIDVALIDITY":
    case "UNSEEN": {
      dec.expectSP();
      return { known: true, name, value: dec.expectNumber() };
    }
    case "HIGHESTMODSEQ": {
      dec.expectSP();
      const value = dec.number64();
      return value === null ? dec.fail("expected mod-sequence") : { known: true, name, value };
    }
    case "PERMANENTFLAGS": {
      dec.expectSP();
      const flags = dec.flagList(true);
      return flags === null ? dec.fail("expected flag list") : { known: true, name, flags };
    }
    case "CAPABILITY": {
      const capabilities: string[] = [];
      while (dec.sp()) capabilities.push(dec.expectAtom("capability"));
      return { known: true, name, capabilities };
    }
    case "BADCHARSET": {
      const charsets: string[] = [];
      if (dec.sp()) {
        dec.expectList(() => charsets.push(dec.expectAstringText("charset")), "charsets");
      }
      return { known: true, name, charsets };
    }
    case "MODIFIED": {
      dec.expectSP();
      const set = dec.expectSeqSet();
      return dec.ok ? { known: true, name, set } : null;
    }
    case "APPENDUID": {
      dec.expectSP();
      const uidValidity = dec.expectNzNumber();
      dec.expectSP();
      const uids = dec.expectSeqSet();
      return dec.ok ? { known: true, name, uidValidity, uids } : null;
    }
    case "COPYUID": {
      dec.expectSP();
      const uidValidity = dec.expectNzNumber();
      dec.expectSP();
      const source = dec.expectSeqSet();
      dec.expectSP();
      const destination = dec.expectSeqSet();
      return dec.ok ? { known: true, name, uidValidity, source, destination } : null;
    }
  }
  // Unknown (or a known atom code with arguments): keep the text up to "]".
  const t = dec.sp() ? dec.until(0x5d) : "";
  return { known: false, name, text: t };
}

function untagged(dec: Decoder): Response | null {
  const n = dec.number();
  if (n !== null) {
    dec.expectSP();
    const what = dec.keyword();
    switch (what) {
      case "EXISTS":
      case "EXPUNGE":
      case "RECENT":
        return { type: what, n };
      case "FETCH": {
        dec.expectSP();
        const r = fetch(dec, n);
        // A BODYSTRUCTURE (or BODY) nested past MAX_LIST_DEPTH: a message of that many MIME levels, which anyone who
        // can mail the account can send. The framer has already delimited the whole response, so it is passed on
        // with nothing read instead of failing the upstream session: a message the classification cannot read stays
        // hidden, where failing would end the agent's session whenever such a hidden message arrived, and its every
        // SELECT of that folder (docs/filtering.md "Deciding a message").
        if (r === null && dec.error?.code === "nesting-too-deep")
          return { type: "FETCH", seq: n, attrs: [], unreadable: true };
        return r;
      }
    }
    dec.skipRest();
    return dec.ok ? { type: "unknown", name: what ?? "" } : null;
  }
  const name = dec.keyword();
  if (name === null) return dec.fail("expected untagged response");
  switch (name) {
    case "OK":
    case "NO":
    case "BAD":
    case "BYE":
    case "PREAUTH":
      return statusResponse(dec, null, name);
    case "CAPABILITY":
    case "ENABLED": {
      const capabilities: string[] = [];
      while (dec.sp()) {
        if (dec.atEnd()) break; // tolerate a trailing space
        capabilities.push(dec.expectAtom("capability"));
      }
      return { type: name, capabilities };
    }
    case "FLAGS": {
      dec.expectSP();
      const flags = dec.flagList();
      return flags === null ? dec.fail("expected flag list") : { type: "FLAGS", flags };
    }
    case "LIST":
    case "LSUB":
      return list(dec, name);
    case "STATUS":
      return status(dec);
    case "SEARCH":
    case "SORT": {
      const numbers: number[] = [];
      while (dec.sp()) {
        if (dec.atEnd()) break;
        if (dec.acceptByte(0x28)) {
          // `"(" "MODSEQ" SP mod-sequence-value ")"` (RFC 7162 §7), last.
          if (!dec.acceptKeyword("MODSEQ")) return dec.fail("expected MODSEQ");
          dec.expectSP();
          const modseq = dec.number64();
          if (modseq === null) return dec.fail("expected mod-sequence");
          dec.expectByte(0x29, "')'");
          return dec.ok ? { type: name, numbers, modseq } : null;
        }
        numbers.push(dec.expectNzNumber());
      }
      return dec.ok ? { type: name, numbers } : null;
    }
    case "ESEARCH":
      return esearch(dec);
    case "VANISHED": {
      dec.expectSP();
      let earlier = false;
      if (dec.acceptByte(0x28)) {
        if (!dec.acceptKeyword("EARLIER")) return dec.fail("expected EARLIER");
        dec.expectByte(0x29, "')'");
        dec.expectSP();
        earlier = true;
      }
      const uids = dec.expectSeqSet();
      return dec.ok ? { type: "VANISHED", earlier, uids } : null;
    }
    case "ID":
      return id(dec);
    case "NAMESPACE":
      return namespace(dec);
  }
  dec.skipRest();
  return dec.ok ? { type: "unknown", name } : null;
}

function fetch(dec: Decoder, seq: number): Response | null {
  const attrs: FetchAttr[] = [];
  const found = dec.listInto(attrs, fetchAttr, Number.MAX_SAFE_INTEGER);
  if (!found) return dec.fail("expected FETCH attribute list");
  return dec.ok ? { type: "FETCH", seq, attrs } : null;
}

function nstringData(dec: Decoder): Uint8Array | null {
  const s = dec.nstring();
  return s === undefined ? null : s;
}

function origin(dec: Decoder): number | null {
  if (!dec.acceptByte(0x3c)) return null;
  const n = dec.expectNumber("origin octet");
  dec.expectByte(0x3e, "'>'");
  return n;
}

function fetchAttr(dec: Decoder): FetchAttr | null {
  const name = dec.name();
  if (name === null) return dec.fail("expected FETCH item name");
  switch (name) {
    case "UID":
    case "RFC822.SIZE": {
      dec.expectSP();
      const value = name === "UID" ? dec.expectNzNumber() : dec.number64();
      return value === null ? dec.fail("expected number") : { name, value };
    }
    case "FLAGS": {
      dec.expectSP();
      const flags = dec.flagList();
      return flags === null ? dec.fail("expected flag list") : { name, flags };
    }
    case "MODSEQ": {
      dec.expectSP();
      dec.expectByte(0x28, "'('");
      const value = dec.number64();
      if (value === null) return dec.fail("expected mod-sequence");
      dec.expectByte(0x29, "')'");
      return dec.ok ? { name, value } : null;
    }
    case "INTERNALDATE": {
      dec.expectSP();
      const date = dec.dateTime();
      return date === null ? dec.fail("expected date-time") : { name, date };
    }
    case "RFC822":
    case "RFC822.HEADER":
    case "RFC822.TEXT": {
      dec.expectSP();
      const data = nstringData(dec);
      return dec.ok ? { name, data } : null;
    }
    case "ENVELOPE":
    case "BODYSTRUCTURE":
    case "BODY": {
      if (name === "BODY" && dec.peek() === 0x5b) {
        const section = dec.section();
        if (section === null) return null;
        const o = origin(dec);
        dec.expectSP();
        const data = nstringData(dec);
        return dec.ok ? { name: "BODY[]", section, origin: o, data } : null;
      }
      dec.expectSP();
      const value = dec.value();
      return value === null ? dec.fail(`expected ${name} value`) : { name, value };
    }
    case "BINARY": {
      const part = dec.sectionBinary();
      if (part === null) return dec.fail("expected section-binary");
      const o = origin(dec);
      dec.expectSP();
      const data = dec.atLiteral() ? (dec.literalToken()?.data ?? null) : nstringData(dec);
      return dec.ok ? { name: "BINARY[]", part, origin: o, data } : null;
    }
    case "BINARY.SIZE": {
      const part = dec.sectionBinary();
      if (part === null) return dec.fail("expected section-binary");
      dec.expectSP();
      return { name: "BINARY.SIZE", part, value: dec.expectNumber() };
    }
  }
  // Unknown item: skip an optional [section] and <origin>, then one value.
  if (dec.peek() === 0x5b) {
    dec.until(0x5d);
    dec.expectByte(0x5d, "']'");
  }
  dec.expectSP();
  const value = dec.value();
  return dec.ok ? { name: "unknown", item: name, value } : null;
}

function mailboxName(dec: Decoder): { raw: string; mailbox: string | null } | null {
  const bytes = dec.astring();
  if (bytes === null) return dec.fail("expected mailbox");
  const raw = dec.utf8(bytes);
  const decoded = decodeMutf7(raw);
  const mailbox = decoded !== null && isInbox(decoded) ? "INBOX" : decoded;
  return { raw, mailbox };
}

function list(dec: Decoder, type: "LIST" | "LSUB"): Response | null {
  dec.expectSP();
  const attributes = dec.flagList();
  if (attributes === null) return dec.fail("expected mailbox attributes");
  dec.expectSP();
  let delimiter: string | null = null;
  if (!dec.acceptKeyword("NIL")) {
    const q = dec.quoted();
    if (q === null || q.length !== 1 || q[0]! < 0x20 || q[0]! >= 0x7f) return dec.fail("expected hierarchy delimiter");
    delimiter = latin1(q, 0, 1);
  }
  dec.expectSP();
  const name = mailboxName(dec);
  if (name === null) return null;
  // mbox-list-extended (RFC 5258 §6, e.g. OLDNAME): parsed and dropped.
  if (dec.sp()) dec.value();
  return dec.ok ? { type, attributes, delimiter, raw: name.raw, mailbox: name.mailbox } : null;
}

function status(dec: Decoder): Response | null {
  dec.expectSP();
  const name = mailboxName(dec);
  if (name === null) return null;
  dec.expectSP();
  const items: Array<readonly [string, number]> = [];
  dec.expectList(() => {
    const item = dec.name();
    dec.expectSP();
    const value = dec.number64();
    if (item === null || value === null) dec.fail("expected status item");
    else items.push([item, value]);
  }, "status list");
  return dec.ok ? { type: "STATUS", raw: name.raw, mailbox: name.mailbox, items } : null;
}

function esearch(dec: Decoder): Response | null {
  let tag: string | null = null;
  let uid = false;
  let min: number | null = null;
  let max: number | null = null;
  let count: number | null = null;
  let all: SeqSet | null = null;
  if (!dec.sp()) return { type: "ESEARCH", tag, uid, min, max, count, all };
  if (dec.acceptByte(0x28)) {
    if (!dec.acceptKeyword("TAG")) return dec.fail("expected TAG");
    dec.expectSP();
    tag = dec.utf8(dec.expectString("tag-string"));
    dec.expectByte(0x29, "')'");
    if (!dec.sp()) return dec.ok ? { type: "ESEARCH", tag, uid, min, max, count, all } : null;
  }
  if (dec.acceptKeyword("UID")) {
    uid = true;
    if (!dec.sp()) return dec.ok ? { type: "ESEARCH", tag, uid, min, max, count, all } : null;
  }
  do {
    const key = dec.name();
    if (key === null) return dec.fail("expected search return data");
    dec.expectSP();
    switch (key) {
      case "MIN":
        min = dec.expectNzNumber();
        break;
      case "MAX":
        max = dec.expectNzNumber();
        break;
      case "COUNT":
        count = dec.expectNumber();
        break;
      case "ALL":
        all = dec.expectSeqSet();
        break;
      default:
        dec.value(); // MODSEQ and others: dropped
    }
  } while (dec.ok && dec.sp());
  return dec.ok ? { type: "ESEARCH", tag, uid, min, max, count, all } : null;
}

function id(dec: Decoder): Response | null {
  dec.expectSP();
  if (dec.acceptKeyword("NIL")) return { type: "ID", params: null };
  const params: Array<readonly [string, string | null]> = [];
  dec.expectList(() => {
    const key = dec.expectString("ID field");
    dec.expectSP();
    const value = dec.nstring();
    params.push([dec.utf8(key), value == null ? null : textDecoder.decode(value)]);
  }, "ID parameters");
  return dec.ok ? { type: "ID", params } : null;
}

function namespace(dec: Decoder): Response | null {
  const one = (): NamespaceDescr[] | null => {
    dec.expectSP();
    if (dec.acceptKeyword("NIL")) return null;
    const out: NamespaceDescr[] = [];
    dec.expectList(
      () => {
        dec.expectByte(0x28, "'('");
        const prefix = dec.utf8(dec.expectString("namespace prefix"));
        dec.expectSP();
        let delimiter: string | null = null;
        if (!dec.acceptKeyword("NIL")) {
          const q = dec.quoted();
          if (q === null || q.length !== 1 || q[0]! < 0x20 || q[0]! >= 0x7f) dec.fail("expected delimiter");
          else delimiter = latin1(q, 0, 1);
        }
        // Namespace-Response-Extensions: parsed and dropped.
        while (dec.ok && dec.sp()) dec.value();
        dec.expectByte(0x29, "')'");
        out.push({ prefix, delimiter });
      },
      "namespace",
      undefined,
      true,
    );
    return out;
  };
  const personal = one();
  const other = one();
  const shared = one();
  return dec.ok ? { type: "NAMESPACE", personal, other, shared } : null;
}
