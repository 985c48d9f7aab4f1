/**
 * Agent commands: `tag SP [UID SP] name [SP arguments]` parsed into a structured
 * `Command` for the commands of docs/protocol.md §1. Allowlist: an unknown command (and any
 * known command with an extension argument we strip, e.g. SELECT's CONDSTORE) is a
 * parse error the session answers with BAD.
 */
import { Decoder, type ImapDateTime } from "./decoder.ts";
import { type Parsed, WireError } from "./errors.ts";
import { type FetchItem, type FetchMacro, fetchItems } from "./fetch.ts";
import type { Frame } from "./framer.ts";
import { MAX_CATENATE_URLS, MAX_LIST_PATTERNS } from "./limits.ts";
import {
  charset,
  hasModseq,
  type SearchKey,
  type SearchReturnOption,
  type SortCriterion,
  searchKeys,
  searchReturnOptions,
  sortCriteria,
} from "./search.ts";
import type { SeqSet } from "./seqset.ts";
import { latin1 } from "./text.ts";

/** RFC 5256 §4 threading algorithms. */
export type ThreadAlgorithm = "ORDEREDSUBJECT" | "REFERENCES";

export type SimpleCommandName =
  | "CAPABILITY"
  | "NOOP"
  | "LOGOUT"
  | "STARTTLS"
  | "IDLE"
  | "UNSELECT"
  | "CHECK"
  | "NAMESPACE"
  | "CLOSE";

export type MailboxCommandName = "SELECT" | "EXAMINE" | "CREATE" | "DELETE" | "SUBSCRIBE" | "UNSUBSCRIBE";

export type StatusItem =
  | "MESSAGES"
  | "RECENT"
  | "UIDNEXT"
  | "UIDVALIDITY"
  | "UNSEEN"
  | "DELETED"
  | "SIZE"
  /** CONDSTORE (RFC 7162 §3.1.7). */
  | "HIGHESTMODSEQ";

export type Command = { readonly tag: string } & (
  | { readonly name: SimpleCommandName }
  /** `uid` with `set` for UID EXPUNGE (RFC 4315). */
  | { readonly name: "EXPUNGE"; readonly uid: boolean; readonly set: SeqSet | null }
  /** ID NIL → null (RFC 2971). */
  | { readonly name: "ID"; readonly params: ReadonlyArray<readonly [string, string | null]> | null }
  | { readonly name: "ENABLE"; readonly capabilities: readonly string[] }
  /** RFC 4978: the mechanism, upper-cased. */
  | { readonly name: "COMPRESS"; readonly mechanism: string }
  | { readonly name: "LOGIN"; readonly username: string; readonly password: string }
  /** SASL-IR initial response, base64-decoded; `=` gives an empty array (RFC 4959). */
  | { readonly name: "AUTHENTICATE"; readonly mechanism: string; readonly initialResponse: Uint8Array | null }
  | {
      readonly name: "LIST" | "LSUB";
      readonly reference: string;
      /** The pattern, or the first of several (RFC 5258 §3). */
      readonly pattern: string;
      /** Every pattern, when the command gave more than one in parentheses (RFC 5258 §3). */
      readonly patterns?: readonly string[];
      /** LIST-EXTENDED selection options (RFC 5258), upper-cased; empty for LSUB. */
      readonly selectOptions: readonly string[];
      /** Return options, upper-cased; `STATUS` comes with `statusItems` (LIST-STATUS, RFC 5819). */
      readonly returnOptions: readonly string[];
      readonly statusItems?: readonly StatusItem[];
    }
  | {
      readonly name: MailboxCommandName;
      readonly mailbox: string;
      /** SELECT/EXAMINE `(CONDSTORE)` (RFC 7162 §3.1.8), a CONDSTORE-enabling parameter. */
      readonly condstore?: boolean;
    }
  | { readonly name: "STATUS"; readonly mailbox: string; readonly items: readonly StatusItem[] }
  | { readonly name: "RENAME"; readonly mailbox: string; readonly newName: string }
  | {
      readonly name: "FETCH";
      readonly uid: boolean;
      readonly set: SeqSet;
      readonly items: readonly FetchItem[];
      readonly macro: FetchMacro | null;
      /** The CHANGEDSINCE fetch modifier (RFC 7162 §3.1.4.1); absent when not given. */
      readonly changedSince?: number;
    }
  | {
      readonly name: "STORE";
      readonly uid: boolean;
      readonly set: SeqSet;
      readonly action: "set" | "add" | "remove";
      readonly silent: boolean;
      readonly flags: readonly string[];
      /** The UNCHANGEDSINCE store modifier (RFC 7162 §3.1.3); absent when not given. */
      readonly unchangedSince?: number;
    }
  | { readonly name: "COPY" | "MOVE"; readonly uid: boolean; readonly set: SeqSet; readonly mailbox: string }
  | {
      readonly name: "SEARCH";
      readonly uid: boolean;
      /** RETURN (...) given: the agent wants an ESEARCH reply (RFC 4731). */
      readonly returnOptions: readonly SearchReturnOption[] | null;
      readonly charset: string | null;
      readonly criteria: readonly SearchKey[];
    }
  | {
      readonly name: "SORT";
      readonly uid: boolean;
      /** RETURN (...) given: the agent wants an ESORT reply (RFC 5267 §3.2). */
      readonly returnOptions: readonly SearchReturnOption[] | null;
      readonly sortCriteria: readonly SortCriterion[];
      readonly charset: string;
      readonly criteria: readonly SearchKey[];
    }
  | {
      /** RFC 5256 §3 THREAD. */
      readonly name: "THREAD";
      readonly uid: boolean;
      readonly algorithm: ThreadAlgorithm;
      readonly charset: string;
      readonly criteria: readonly SearchKey[];
    }
  | ({
      readonly name: "APPEND";
      readonly mailbox: string;
      /**
       * Every message, in order (MULTIAPPEND, RFC 3502, gives more than one); the first one's fields are repeated
       * at the top level.
       */
      readonly messages: readonly AppendMessage[];
    } & AppendMessage)
);

/** One message of an APPEND: `append-opts SP append-data` (RFC 3502 §6.3.11, literal8 from RFC 3516 §4.4). */
export interface AppendMessage {
  readonly flags: readonly string[];
  readonly date: ImapDateTime | null;
  /** The message: a view of the literal bytes, never decoded; empty for a CATENATE message (`catenate` holds it). */
  readonly message: Uint8Array;
  /** Sent as literal8 (`~{n}`). */
  readonly binary: boolean;
  /**
   * `CATENATE (...)` (RFC 4469 §5): the parts the message is made of, in order; null for a literal message. The
   * proxy resolves each URL part into the octets it names (src/imap/commands/catenate.ts), and upstream is sent the
   * TEXT parts then left as one literal, never a URL.
   */
  readonly catenate: readonly CatenatePart[] | null;
}

/** Octets of an APPEND message: its literal, or the sum of its CATENATE TEXT parts (all of them, once assembled). */
export function appendMessageSize(m: AppendMessage): number {
  if (m.catenate === null) return m.message.length;
  let size = 0;
  for (const p of m.catenate) if (p.type === "TEXT") size += p.data.length;
  return size;
}

/** `cat-part` (RFC 4469 §5): `TEXT literal`, or `URL astring` naming a message or a part of one (RFC 5092). */
export type CatenatePart =
  | { readonly type: "TEXT"; readonly data: Uint8Array }
  | { readonly type: "URL"; readonly url: string };

export type CommandName = Command["name"];

const SIMPLE = new Set<string>([
  "CAPABILITY",
  "NOOP",
  "LOGOUT",
  "STARTTLS",
  "IDLE",
  "UNSELECT",
  "CHECK",
  "NAMESPACE",
  "CLOSE",
]);
const MAILBOX = new Set<string>(["SELECT", "EXAMINE", "CREATE", "DELETE", "SUBSCRIBE", "UNSUBSCRIBE"]);
const UID_COMMANDS = new Set<string>(["FETCH", "SEARCH", "SORT", "THREAD", "STORE", "COPY", "MOVE", "EXPUNGE"]);
const STATUS_ITEMS = new Set<string>([
  "MESSAGES",
  "RECENT",
  "UIDNEXT",
  "UIDVALIDITY",
  "UNSEEN",
  "DELETED",
  "SIZE",
  "HIGHESTMODSEQ",
]);

/** Parses one framed agent command. Errors carry the tag when it was readable. */
export function parseCommand(frame: Frame): Parsed<Command> {
  const dec = new Decoder(frame, { strict: true });
  const tag = dec.tag();
  if (tag === null || !dec.sp()) {
    return { ok: false, error: new WireError("syntax", "expected tag SP command") };
  }
  let name = dec.keyword();
  let uid = false;
  if (name === "UID" && dec.sp()) {
    uid = true;
    name = dec.keyword();
    if (name === null || !UID_COMMANDS.has(name)) {
      return { ok: false, error: new WireError("unknown-command", `unknown command UID ${name ?? ""}`, { tag }) };
    }
  }
  if (name === null) return { ok: false, error: new WireError("syntax", "expected command name", { tag }) };
  const cmd = commandBody(dec, tag, name, uid);
  if (cmd !== null && dec.expectEnd()) return { ok: true, value: cmd };
  const error = dec.error ?? new WireError("unknown-command", `unknown command ${name}`);
  return { ok: false, error: error.withTag(tag, name) };
}

function commandBody(dec: Decoder, tag: string, name: string, uid: boolean): Command | null {
  if (SIMPLE.has(name)) return { tag, name: name as SimpleCommandName };
  if (MAILBOX.has(name)) {
    dec.expectSP();
    const mailbox = dec.expectMailbox();
    // SELECT/EXAMINE (CONDSTORE) only (RFC 7162 §3.1.8); QRESYNC and CREATE (USE ...) are stripped extensions.
    if (dec.sp()) {
      const selecting = name === "SELECT" || name === "EXAMINE";
      const condstore = selecting && dec.acceptByte(0x28) && dec.acceptKeyword("CONDSTORE") && dec.acceptByte(0x29);
      if (!condstore) {
        return dec.fail(`${name} parameters are not supported`, "unsupported");
      }
      return dec.ok ? { tag, name: name as MailboxCommandName, mailbox, condstore: true } : null;
    }
    return dec.ok ? { tag, name: name as MailboxCommandName, mailbox } : null;
  }
  switch (name) {
    case "EXPUNGE": {
      if (!uid) return { tag, name, uid, set: null };
      dec.expectSP();
      const set = dec.expectSeqSet();
      return dec.ok ? { tag, name, uid, set } : null;
    }
    case "ID":
      return id(dec, tag);
    case "ENABLE": {
      const capabilities: string[] = [];
      while (dec.sp()) capabilities.push(dec.expectAtom("capability").toUpperCase());
      if (capabilities.length === 0) return dec.fail("ENABLE needs a capability");
      return dec.ok ? { tag, name, capabilities } : null;
    }
    case "COMPRESS": {
      dec.expectSP();
      const mechanism = dec.expectAtom("compression mechanism").toUpperCase();
      return dec.ok ? { tag, name, mechanism } : null;
    }
    case "LOGIN": {
      dec.expectSP();
      const username = dec.expectAstringText("userid");
      dec.expectSP();
      const password = dec.expectAstringText("password");
      return dec.ok ? { tag, name, username, password } : null;
    }
    case "AUTHENTICATE": {
      dec.expectSP();
      const mechanism = dec.expectAtom("SASL mechanism").toUpperCase();
      let initialResponse: Uint8Array | null = null;
      if (dec.sp()) {
        const text = dec.expectAtom("initial response");
        initialResponse = text === "=" ? new Uint8Array(0) : decodeBase64(text);
        if (initialResponse === null) return dec.fail("invalid base64 initial response");
      }
      return dec.ok ? { tag, name, mechanism, initialResponse } : null;
    }
    case "LIST":
    case "LSUB":
      return list(dec, tag, name);
    case "STATUS": {
      dec.expectSP();
      const mailbox = dec.expectMailbox();
      const items = statusAtts(dec);
      return dec.ok ? { tag, name, mailbox, items } : null;
    }
    case "RENAME": {
      dec.expectSP();
      const mailbox = dec.expectMailbox();
      dec.expectSP();
      const newName = dec.expectMailbox();
      return dec.ok ? { tag, name, mailbox, newName } : null;
    }
    case "FETCH": {
      dec.expectSP();
      const set = dec.expectSeqSet();
      dec.expectSP();
      const { items, macro } = fetchItems(dec);
      // fetch-modifiers: CHANGEDSINCE only (RFC 7162 §3.1.4.1); QRESYNC's VANISHED is stripped.
      if (dec.sp()) {
        const changedSince = modifier(dec, "CHANGEDSINCE");
        return dec.ok && changedSince !== null ? { tag, name, uid, set, items, macro, changedSince } : null;
      }
      return dec.ok ? { tag, name, uid, set, items, macro } : null;
    }
    case "STORE":
      return store(dec, tag, uid);
    case "COPY":
    case "MOVE": {
      dec.expectSP();
      const set = dec.expectSeqSet();
      dec.expectSP();
      const mailbox = dec.expectMailbox();
      return dec.ok ? { tag, name, uid, set, mailbox } : null;
    }
    case "SEARCH": {
      dec.expectSP();
      let returnOptions: SearchReturnOption[] | null = null;
      if (dec.acceptKeyword("RETURN")) {
        dec.expectSP();
        returnOptions = searchReturnOptions(dec);
        dec.expectSP();
      }
      let cs: string | null = null;
      if (dec.acceptKeyword("CHARSET")) {
        dec.expectSP();
        cs = charset(dec);
        dec.expectSP();
      }
      const criteria = searchKeys(dec);
      return dec.ok ? { tag, name, uid, returnOptions, charset: cs, criteria } : null;
    }
    case "SORT": {
      dec.expectSP();
      let returnOptions: SearchReturnOption[] | null = null;
      if (dec.acceptKeyword("RETURN")) {
        dec.expectSP();
        returnOptions = searchReturnOptions(dec);
        dec.expectSP();
      }
      const criteria0 = sortCriteria(dec);
      dec.expectSP();
      const cs = charset(dec);
      dec.expectSP();
      const criteria = searchKeys(dec);
      // MODSEQ (RFC 7162 §3.1.5) is a SEARCH key here: SORT and THREAD do not relay mod-sequences.
      if (dec.ok && hasModseq(criteria)) return dec.fail("MODSEQ is supported in SEARCH only", "unsupported");
      return dec.ok ? { tag, name, uid, returnOptions, sortCriteria: criteria0, charset: cs, criteria } : null;
    }
    case "THREAD": {
      // RFC 5256 §5: "THREAD" SP thread-alg SP search-charset 1*(SP search-key)
      dec.expectSP();
      const alg = dec.keyword();
      if (alg !== "ORDEREDSUBJECT" && alg !== "REFERENCES") {
        return dec.fail(`unsupported thread algorithm ${alg ?? ""}`, "unsupported");
      }
      dec.expectSP();
      const cs = charset(dec);
      dec.expectSP();
      const criteria = searchKeys(dec);
      if (dec.ok && hasModseq(criteria)) return dec.fail("MODSEQ is supported in SEARCH only", "unsupported");
      return dec.ok ? { tag, name, uid, algorithm: alg, charset: cs, criteria } : null;
    }
    case "APPEND":
      return append(dec, tag);
  }
  return dec.fail(`unknown command ${name}`, "unknown-command");
}

function id(dec: Decoder, tag: string): Command | null {
  dec.expectSP();
  if (dec.acceptKeyword("NIL")) return { tag, name: "ID", params: null };
  const params: Array<readonly [string, string | null]> = [];
  // RFC 2971 §3.3: at most 30 pairs, field names ≤ 30 octets, values ≤ 1024.
  dec.expectList(
    () => {
      const key = dec.string();
      if (key === null) {
        dec.fail("expected ID field name");
        return;
      }
      dec.expectSP();
      const value = dec.nstring();
      if (key.length > 30 || (value != null && value.length > 1024)) dec.fail("ID field too long");
      const k = dec.utf8(key);
      const v = value == null ? null : dec.utf8(value);
      params.push([k, v]);
      // list() separates items by SP; the pair's own SP was consumed above.
    },
    "ID parameter list",
    60,
  );
  return dec.ok ? { tag, name: "ID", params } : null;
}

function list(dec: Decoder, tag: string, name: "LIST" | "LSUB"): Command | null {
  dec.expectSP();
  const selectOptions: string[] = [];
  if (name === "LIST" && dec.peek() === 0x28) {
    // LIST-EXTENDED selection options (RFC 5258 §3, RFC 6154 §3); an unknown one is BAD (RFC 5258 §3).
    dec.list(() => {
      const o = dec.keyword();
      if (o === "SUBSCRIBED" || o === "REMOTE" || o === "RECURSIVEMATCH" || o === "SPECIAL-USE") selectOptions.push(o);
      else dec.fail(`unsupported LIST selection option ${o ?? ""}`, "unsupported");
    }, 16);
    // RECURSIVEMATCH alone, or with REMOTE only, is BAD (RFC 5258 §3).
    if (
      selectOptions.includes("RECURSIVEMATCH") &&
      !selectOptions.includes("SUBSCRIBED") &&
      !selectOptions.includes("SPECIAL-USE")
    )
      return dec.fail("RECURSIVEMATCH needs another selection option");
    dec.expectSP();
  }
  const reference = dec.listMailbox();
  if (reference === null) return dec.fail("expected LIST reference");
  dec.expectSP();
  // Several patterns in parentheses (RFC 5258 §3, `patterns`), at most MAX_LIST_PATTERNS.
  const patterns: string[] = [];
  if (name === "LIST" && dec.peek() === 0x28) {
    dec.list(() => {
      const p = dec.listMailbox();
      if (p === null) dec.fail("expected LIST pattern");
      else patterns.push(p);
    }, MAX_LIST_PATTERNS);
    if (dec.ok && patterns.length === 0) return dec.fail("expected LIST pattern");
  } else {
    const pattern = dec.listMailbox();
    if (pattern === null) return dec.fail("expected LIST pattern");
    patterns.push(pattern);
  }
  const returnOptions: string[] = [];
  let statusItems: StatusItem[] | null = null;
  if (name === "LIST" && dec.sp()) {
    if (!dec.acceptKeyword("RETURN")) return dec.fail("expected RETURN");
    dec.expectSP();
    dec.expectList(
      () => {
        const o = dec.keyword();
        if (o === "SUBSCRIBED" || o === "CHILDREN" || o === "SPECIAL-USE") returnOptions.push(o);
        else if (o === "STATUS" && statusItems === null) {
          // LIST-STATUS (RFC 5819 §2): `STATUS (status-att ...)`.
          returnOptions.push(o);
          statusItems = statusAtts(dec);
        } else dec.fail(`unsupported LIST return option ${o ?? ""}`, "unsupported");
      },
      "return options",
      16,
    );
  }
  const more = patterns.length === 1 ? {} : { patterns };
  const pattern = patterns[0] ?? "";
  const status = statusItems === null ? {} : { statusItems };
  return dec.ok ? { tag, name, reference, pattern, ...more, selectOptions, returnOptions, ...status } : null;
}

/** `"(" status-att *(SP status-att) ")"` (RFC 3501 §6.3.10), shared by STATUS and LIST-STATUS. */
function statusAtts(dec: Decoder): StatusItem[] {
  dec.expectSP();
  const items: StatusItem[] = [];
  dec.expectList(
    () => {
      const item = dec.keyword();
      if (item !== null && STATUS_ITEMS.has(item)) items.push(item as StatusItem);
      else dec.fail(`unsupported STATUS item ${item ?? ""}`, "unsupported");
    },
    "status items",
    16,
  );
  if (dec.ok && items.length === 0) dec.fail("empty STATUS item list");
  return items;
}

function store(dec: Decoder, tag: string, uid: boolean): Command | null {
  dec.expectSP();
  const set = dec.expectSeqSet();
  dec.expectSP();
  // store-modifiers: UNCHANGEDSINCE only (RFC 7162 §3.1.3).
  let unchangedSince: number | null = null;
  if (dec.peek() === 0x28) {
    unchangedSince = modifier(dec, "UNCHANGEDSINCE");
    if (unchangedSince === null) return null;
    dec.expectSP();
  }
  let action: "set" | "add" | "remove" = "set";
  if (dec.acceptByte(0x2b)) action = "add";
  else if (dec.acceptByte(0x2d)) action = "remove";
  const item = dec.name();
  let silent = false;
  if (item === "FLAGS.SILENT") silent = true;
  else if (item !== "FLAGS") return dec.fail(`unsupported STORE item ${item ?? ""}`, "unsupported");
  dec.expectSP();
  let flags = dec.flagList();
  if (flags === null) {
    flags = [];
    do {
      const f = dec.flag();
      if (f === null) return dec.fail("expected flag");
      flags.push(f);
    } while (dec.sp());
  }
  if (!dec.ok || !settableFlags(dec, flags)) return null;
  const cmd = { tag, name: "STORE", uid, set, action, silent, flags } as const;
  return unchangedSince === null ? cmd : { ...cmd, unchangedSince };
}

/**
 * `"(" name SP mod-sequence ")"`, the one CONDSTORE modifier of FETCH (CHANGEDSINCE, 1 or more) or STORE
 * (UNCHANGEDSINCE, 0 allowed) (RFC 7162 §3.1.3, §3.1.4.1, §7); any other modifier is an unsupported extension.
 * Mod-sequences above 2^53-1 are a parse error (docs/imap-wire.md).
 */
function modifier(dec: Decoder, name: "CHANGEDSINCE" | "UNCHANGEDSINCE"): number | null {
  dec.expectByte(0x28, "'('");
  if (!dec.acceptKeyword(name)) return dec.fail(`only the ${name} modifier is supported`, "unsupported");
  dec.expectSP();
  const value = dec.number64();
  if (value === null) return dec.fail("expected mod-sequence");
  if (name === "CHANGEDSINCE" && value === 0) return dec.fail("CHANGEDSINCE needs a mod-sequence above 0");
  dec.expectByte(0x29, "')'");
  return dec.ok ? value : null;
}

function append(dec: Decoder, tag: string): Command | null {
  dec.expectSP();
  const mailbox = dec.expectMailbox();
  const messages: AppendMessage[] = [];
  // MULTIAPPEND (RFC 3502 §6.3.11): `*(SP append-message)`; the framer bounds their number and total size.
  dec.expectSP();
  const urls = { count: 0 };
  do {
    const m = appendMessage(dec, urls);
    if (m === null) return null;
    messages.push(m);
  } while (dec.ok && dec.sp());
  return dec.ok ? { tag, name: "APPEND", mailbox, messages, ...messages[0]! } : null;
}

/** The system flags a client may set (RFC 9051 §2.3.2); `\Recent` is the server's (RFC 3501 §2.3.2). */
export const SYSTEM_FLAGS = ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"] as const;
const SETTABLE_SYSTEM_FLAGS: ReadonlySet<string> = new Set(SYSTEM_FLAGS.map((f) => f.toUpperCase()));

/**
 * STORE and APPEND flags: keywords, and of the `\` flags only those a client may set. `\Recent` and an extension
 * flag this proxy does not know are refused here rather than relayed: the upstream would refuse them (Dovecot:
 * `BAD Invalid system flag`) or give them a meaning no rule was written for (docs/protocol.md §2).
 */
function settableFlags(dec: Decoder, flags: readonly string[]): boolean {
  for (const f of flags) {
    if (f.startsWith("\\") && !SETTABLE_SYSTEM_FLAGS.has(f.toUpperCase()))
      return (dec.fail(`flag ${f} cannot be set by a client`, "unsupported"), false);
  }
  return true;
}

/** `urls` counts the URL parts of the command's messages so far (MAX_CATENATE_URLS). */
function appendMessage(dec: Decoder, urls: { count: number }): AppendMessage | null {
  let flags: string[] = [];
  const fl = dec.flagList();
  if (fl !== null) {
    if (!settableFlags(dec, fl)) return null;
    flags = fl;
    dec.expectSP();
  }
  const date = dec.dateTime();
  if (date !== null) dec.expectSP();
  if (dec.acceptKeyword("CATENATE")) {
    const catenate = catenateParts(dec, urls);
    return catenate === null ? null : { flags, date, message: EMPTY_MESSAGE, binary: false, catenate };
  }
  if (!dec.atLiteral()) return dec.fail("APPEND needs a literal message or CATENATE");
  const lit = dec.literalToken();
  if (lit === null) return null;
  return dec.ok ? { flags, date, message: lit.data, binary: lit.binary, catenate: null } : null;
}

const EMPTY_MESSAGE = new Uint8Array(0);

/**
 * `SP "(" cat-part *(SP cat-part) ")"` after CATENATE (RFC 4469 §5). A TEXT part is a `literal`: literal8 there
 * belongs to no extension offered (BINARY's is APPEND's literal, RFC 3516 §4.4), so it is refused. A URL is kept as
 * its text, checked and resolved when the command runs; one with 8-bit or control octets is a syntax error here.
 */
function catenateParts(dec: Decoder, urls: { count: number }): CatenatePart[] | null {
  dec.expectSP();
  const parts: CatenatePart[] = [];
  dec.expectList(() => {
    const kind = dec.keyword();
    dec.expectSP();
    if (kind === "TEXT") {
      if (!dec.atLiteral()) return dec.fail("expected a literal after TEXT");
      const lit = dec.literalToken();
      if (lit === null) return null;
      if (lit.binary) return dec.fail("literal8 in a CATENATE TEXT part is not supported", "unsupported");
      parts.push({ type: "TEXT", data: lit.data });
    } else if (kind === "URL") {
      if (++urls.count > MAX_CATENATE_URLS)
        return dec.fail(`more than ${MAX_CATENATE_URLS} CATENATE URL parts in one command`, "too-many-items");
      const url = dec.expectAstring("URL");
      for (const b of url) if (b <= 0x20 || b >= 0x7f) return dec.fail("URL with a space, control or 8-bit octet");
      parts.push({ type: "URL", url: latin1(url, 0, url.length) });
    } else {
      return dec.fail("expected TEXT or URL");
    }
    return null;
  }, "CATENATE parts");
  if (parts.length === 0) dec.fail("CATENATE needs a part");
  return dec.ok ? parts : null;
}

const B64 = new Int16Array(256).fill(-1);
for (let i = 0; i < 64; i++) B64["ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".charCodeAt(i)] = i;

/** Strict base64 (RFC 4648 §4, padded): null on any other character or bad padding. */
export function decodeBase64(text: string): Uint8Array | null {
  const n = text.length;
  if (n % 4 !== 0) return null;
  let pad = 0;
  if (n > 0 && text.charCodeAt(n - 1) === 0x3d) pad = text.charCodeAt(n - 2) === 0x3d ? 2 : 1;
  const out = new Uint8Array((n / 4) * 3 - pad);
  let o = 0;
  for (let i = 0; i < n; i += 4) {
    const last = i + 4 === n;
    const a = b64(text, i);
    const b = b64(text, i + 1);
    const c = last && pad === 2 ? 0 : b64(text, i + 2);
    const d = last && pad >= 1 ? 0 : b64(text, i + 3);
    if ((a | b | c | d) < 0) return null;
    const v = (a << 18) | (b << 12) | (c << 6) | d;
    out[o++] = v >> 16;
    if (o < out.length) out[o++] = (v >> 8) & 0xff;
    if (o < out.length) out[o++] = v & 0xff;
    // Canonical: bits dropped by padding must be zero.
    if (last && ((pad === 1 && (v & 0xff) !== 0) || (pad === 2 && (v & 0xffff) !== 0))) return null;
  }
  return out;
}

function b64(text: string, i: number): number {
  const code = text.charCodeAt(i);
  return code < 256 ? B64[code]! : -1;
}
