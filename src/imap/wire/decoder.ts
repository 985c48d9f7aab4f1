/**
 * Pull-style recursive-descent decoder over one framed message, after go-imap v2's
 * `internal/imapwire/decoder.go`. Methods are named after RFC 9051 §9 grammar rules.
 *
 * `try` methods (`atom()`, `sp()`, `number()`...) return null/false when the token is
 * absent; `expect` methods record an error instead. The first error is sticky: after
 * it every method fails fast, so a parser is a straight chain of calls checked once.
 * A token that starts but is malformed (`"abc` with no closing quote) is an error
 * even from a `try` method.
 */
import { WireError, type WireErrorCode } from "./errors.ts";
import type { Frame, Literal } from "./framer.ts";
import { MAX_LIST_DEPTH, MAX_LIST_ITEMS, MAX_NUMBER, MAX_NUMBER64 } from "./limits.ts";
import { decodeMutf7, isInbox } from "./mutf7.ts";
import { type SeqRange, type SeqSet, STAR } from "./seqset.ts";
import { latin1, token } from "./text.ts";

const SP = 0x20;
const DQUOTE = 0x22;
const BACKSLASH = 0x5c;
const LPAREN = 0x28;
const RPAREN = 0x29;
const LBRACE = 0x7b;
const TILDE = 0x7e;

// Character classes (RFC 9051 §9), one bit each.
const ATOM = 1; // ATOM-CHAR
const ASTRING = 2; // ASTRING-CHAR = ATOM-CHAR / resp-specials
const TAG = 4; // tag = 1*<any ASTRING-CHAR except "+">
const LIST = 8; // list-char = ATOM-CHAR / list-wildcards / resp-specials
const VALUE = 16; // lenient atom in upstream data: printable, not ( ) { " ] SP
const NAME = 32; // data item and response code names: letters, digits, "." and "-"
const CLASS = new Uint8Array(256);
for (let b = 0x21; b < 0x7f; b++) {
  const c = String.fromCharCode(b);
  if (/[A-Za-z0-9.-]/.test(c)) CLASS[b]! |= NAME;
  const atomSpecial = '(){%*"\\]'.includes(c);
  if (!atomSpecial) CLASS[b]! |= ATOM | ASTRING | LIST | (c === "+" ? 0 : TAG);
  if (c === "]") CLASS[b]! |= ASTRING | TAG | LIST;
  if (c === "%" || c === "*") CLASS[b]! |= LIST;
  if (!'(){"]'.includes(c)) CLASS[b]! |= VALUE;
}

const MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];

/** A calendar date as in SEARCH's `date` (RFC 9051 §9). */
export interface ImapDate {
  readonly year: number;
  readonly month: number; // 1..12
  readonly day: number;
}

/** `date-time` as in APPEND and INTERNALDATE; zone in minutes east of UTC. */
export interface ImapDateTime extends ImapDate {
  readonly hour: number;
  readonly minute: number;
  readonly second: number;
  readonly zone: number;
}

/** `section` of BODY[...] (RFC 9051 §9 `section-spec`). */
export interface Section {
  readonly part: readonly number[];
  readonly text: "" | "HEADER" | "HEADER.FIELDS" | "HEADER.FIELDS.NOT" | "TEXT" | "MIME";
  readonly fields: readonly string[];
}

/** The section `[]` (the whole message), shared by every value that names it: a Section is never changed. */
const WHOLE_MESSAGE: Section = Object.freeze({ part: Object.freeze([]), text: "", fields: Object.freeze([]) });

/**
 * A generic data item from upstream (ENVELOPE, BODYSTRUCTURE, unknown items), kept
 * faithful enough to be re-encoded: strings stay bytes.
 */
export type Value =
  | { readonly type: "nil" }
  | { readonly type: "number"; readonly value: number }
  | { readonly type: "atom"; readonly value: string }
  | { readonly type: "string"; readonly value: Uint8Array }
  | { readonly type: "list"; readonly value: readonly Value[] };

const NIL_VALUE: Value = { type: "nil" };
const EMPTY = new Uint8Array(0);
const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

export interface DecoderOptions {
  /** Agent input: NUL is refused in literals unless they are literal8 (CHAR8 = %x01-ff). */
  readonly strict?: boolean;
}

export class Decoder {
  private readonly frame: Frame;
  private readonly strict: boolean;
  private seg = 0;
  private buf: Uint8Array;
  private end: number;
  private marker: number;
  /** Byte offset in the current line segment. */
  pos = 0;
  private depth = 0;
  private err: WireError | null = null;

  constructor(frame: Frame, options: DecoderOptions = {}) {
    this.frame = frame;
    this.strict = options.strict ?? false;
    this.buf = frame.lines[0] ?? EMPTY;
    this.end = this.buf.length;
    this.marker = frame.markers[0] ?? -1;
  }

  get ok(): boolean {
    return this.err === null;
  }

  get error(): WireError | null {
    return this.err;
  }

  /** Records the first error; later ones are ignored. Always returns null for chaining. */
  fail(message: string, code: WireErrorCode = "syntax", responseCode: string | null = null): null {
    if (this.err === null) this.err = new WireError(code, message, { offset: this.pos, responseCode });
    return null;
  }

  /** Next byte of the current line segment, or -1 at its end or at a literal marker. */
  peek(): number {
    if (this.err !== null || this.pos >= this.end || this.pos === this.marker) return -1;
    return this.buf[this.pos]!;
  }

  /** True at the end of the whole message. */
  atEnd(): boolean {
    return this.pos >= this.end && this.seg === this.frame.lines.length - 1;
  }

  expectEnd(): boolean {
    if (this.err !== null) return false;
    if (!this.atEnd()) {
      this.fail("expected end of line");
      return false;
    }
    return true;
  }

  acceptByte(b: number): boolean {
    if (this.peek() !== b) return false;
    this.pos++;
    return true;
  }

  expectByte(b: number, what: string): boolean {
    if (this.acceptByte(b)) return true;
    this.fail(`expected ${what}`);
    return false;
  }

  sp(): boolean {
    return this.acceptByte(SP);
  }

  expectSP(): boolean {
    return this.expectByte(SP, "SP");
  }

  /** Bytes from `pos` while they are in `cls`; '' if none. */
  private run(cls: number): string {
    if (this.err !== null) return "";
    const buf = this.buf;
    const start = this.pos;
    let i = start;
    const limit = this.marker >= 0 ? this.marker : this.end;
    while (i < limit && (CLASS[buf[i]!]! & cls) !== 0) i++;
    this.pos = i;
    return token(buf, start, i);
  }

  /** `atom`: one or more ATOM-CHARs, case preserved. */
  atom(): string | null {
    const s = this.run(ATOM);
    return s === "" ? null : s;
  }

  expectAtom(what = "atom"): string {
    return this.atom() ?? (this.fail(`expected ${what}`), "");
  }

  /**
   * A data item or response code name (`BODY.PEEK`, `RFC822.SIZE`, `READ-ONLY`),
   * upper-cased; stops before `[`, `<`, `]` and SP. Null if absent.
   */
  name(): string | null {
    const s = this.run(NAME);
    return s === "" ? null : s.toUpperCase();
  }

  /** An atom compared case-insensitively, returned upper-cased. */
  keyword(): string | null {
    const s = this.atom();
    return s === null ? null : s.toUpperCase();
  }

  /** Accepts `word` (upper-case) as a whole atom, case-insensitively, or consumes nothing. */
  acceptKeyword(word: string): boolean {
    if (this.err !== null) return false;
    const save = this.pos;
    const s = this.run(ATOM);
    if (s.length === word.length && s.toUpperCase() === word) return true;
    this.pos = save;
    return false;
  }

  /** `tag`: ASTRING-CHARs except `+`. */
  tag(): string | null {
    const s = this.run(TAG);
    return s === "" ? null : s;
  }

  /** Lenient atom for upstream data (flags, BODYSTRUCTURE tokens...). */
  valueAtom(): string | null {
    const s = this.run(VALUE);
    return s === "" ? null : s;
  }

  /** `number`: 1*DIGIT within 32 bits; null if absent, error if out of range. */
  number(): number | null {
    return this.digits(MAX_NUMBER);
  }

  /** `number64` (RFC 9051 §9), bounded to exact JS integers. */
  number64(): number | null {
    return this.digits(MAX_NUMBER64);
  }

  private digits(max: number): number | null {
    if (this.err !== null) return null;
    const buf = this.buf;
    const limit = this.marker >= 0 ? this.marker : this.end;
    let i = this.pos;
    let n = 0;
    while (i < limit) {
      const b = buf[i]!;
      if (b < 0x30 || b > 0x39) break;
      n = n * 10 + (b - 0x30);
      if (n > max) return this.fail("number out of range");
      i++;
    }
    if (i === this.pos) return null;
    this.pos = i;
    return n;
  }

  expectNumber(what = "number"): number {
    return this.number() ?? (this.fail(`expected ${what}`), 0);
  }

  /** `nz-number`. */
  expectNzNumber(what = "nz-number"): number {
    const n = this.number();
    if (n === null || n === 0) {
      this.fail(`expected ${what}`);
      return 0;
    }
    return n;
  }

  /**
   * `quoted`: the bytes between the quotes, unescaped (a view when there are no escapes).
   * Only `\"` and `\\` are escapes; CR, LF and NUL are refused (RFC 9051 §9, §4.3).
   */
  quoted(): Uint8Array | null {
    if (this.peek() !== DQUOTE) return null;
    const buf = this.buf;
    const start = this.pos + 1;
    let i = start;
    let escapes = 0;
    for (;;) {
      if (i >= this.end) return this.fail("unterminated quoted string");
      const b = buf[i]!;
      if (b === DQUOTE) break;
      if (b === 0 || b === 0x0d || b === 0x0a) return this.fail("CR, LF or NUL in quoted string");
      if (b === BACKSLASH) {
        const e = buf[i + 1];
        if (e !== DQUOTE && e !== BACKSLASH) return this.fail("invalid escape in quoted string");
        escapes++;
        i += 2;
        continue;
      }
      i++;
    }
    this.pos = i + 1;
    if (escapes === 0) return buf.subarray(start, i);
    const out = new Uint8Array(i - start - escapes);
    let o = 0;
    for (let k = start; k < i; k++) {
      let b = buf[k]!;
      if (b === BACKSLASH) b = buf[++k]!;
      out[o++] = b;
    }
    return out;
  }

  /** True if a literal starts here. */
  atLiteral(): boolean {
    if (this.err !== null || this.pos !== this.marker) return false;
    const b = this.buf[this.pos];
    return b === LBRACE || b === TILDE;
  }

  /** `literal` / `literal8`: returns the literal and moves to the next line segment. */
  literalToken(): Literal | null {
    if (!this.atLiteral()) return null;
    const lit = this.frame.literals[this.seg];
    if (lit === undefined) return this.fail("literal data missing");
    if (this.strict && !lit.binary && lit.data.indexOf(0) !== -1) {
      return this.fail("NUL in literal (CHAR8 excludes it)");
    }
    this.seg++;
    this.buf = this.frame.lines[this.seg] ?? EMPTY;
    this.end = this.buf.length;
    this.marker = this.frame.markers[this.seg] ?? -1;
    this.pos = 0;
    return lit;
  }

  /** `literal` (not literal8). */
  literal(): Uint8Array | null {
    if (this.atLiteral() && this.buf[this.pos] === TILDE) return this.fail("literal8 not allowed here");
    const lit = this.literalToken();
    return lit === null ? null : lit.data;
  }

  /** `string` = quoted / literal. */
  string(): Uint8Array | null {
    return this.quoted() ?? this.literal();
  }

  expectString(what = "string"): Uint8Array {
    return this.string() ?? (this.fail(`expected ${what}`), EMPTY);
  }

  /** `astring` = 1*ASTRING-CHAR / string. */
  astring(): Uint8Array | null {
    if (this.err !== null) return null;
    const s = this.string();
    if (s !== null || this.err !== null) return s;
    const start = this.pos;
    this.run(ASTRING);
    return this.pos === start ? null : this.buf.subarray(start, this.pos);
  }

  expectAstring(what = "astring"): Uint8Array {
    return this.astring() ?? (this.fail(`expected ${what}`), EMPTY);
  }

  /**
   * `astring` decoded as UTF-8 (invalid UTF-8 is an error). An atom is taken as the token it is (ASTRING-CHARs are
   * ASCII, so decoding would give the same string), without a copy; a `~` is left to `astring` (literal8).
   */
  expectAstringText(what = "astring"): string {
    if (this.err === null && this.buf[this.pos] !== TILDE) {
      const atom = this.run(ASTRING);
      if (atom !== "") return atom;
    }
    return this.utf8(this.expectAstring(what));
  }

  /** `nstring` = string / NIL. Returns undefined when absent (error recorded). */
  nstring(): Uint8Array | null | undefined {
    if (this.acceptKeyword("NIL")) return null;
    const s = this.string();
    if (s === null) {
      this.fail("expected nstring");
      return undefined;
    }
    return s;
  }

  utf8(bytes: Uint8Array): string {
    if (this.err !== null) return "";
    let ascii = true;
    for (let i = 0; i < bytes.length; i++) {
      if (bytes[i]! >= 0x80) {
        ascii = false;
        break;
      }
    }
    if (ascii) return latin1(bytes, 0, bytes.length);
    try {
      return utf8Decoder.decode(bytes);
    } catch {
      this.fail("invalid UTF-8");
      return "";
    }
  }

  /**
   * `list`: `(` [item *(SP item)] `)`. Returns false if no `(` is here; depth and item
   * counts are bounded (limits.ts).
   *
   * With `adjacentLists`, an item that ends with `)` may be followed by one that starts
   * with `(` and no SP between them: RFC 3501 §9 writes address lists, multipart bodies
   * and namespaces that way (`env-to = "(" 1*address ")"`, `body-type-mpart = 1*body SP
   * media-subtype`, `Namespace = "(" 1*Namespace-Descr ")"`), and Dovecot sends exactly
   * that. Nothing else may go without its SP.
   */
  list(item: () => void, maxItems = MAX_LIST_ITEMS, adjacentLists = false): boolean {
    // With no `out`, what `item` returns is never looked at.
    return this.listInto(null, item as unknown as (dec: Decoder) => null, maxItems, adjacentLists);
  }

  /**
   * `list`, each item read by `read(this)` and pushed onto `out` unless it is null: a reader
   * that is a plain function, not a closure made for each list, for the lists of every response (FETCH's items, flags).
   */
  listInto<T>(
    out: T[] | null,
    read: (dec: Decoder) => T | null,
    maxItems = MAX_LIST_ITEMS,
    adjacentLists = false,
  ): boolean {
    if (!this.acceptByte(LPAREN)) return false;
    if (++this.depth > MAX_LIST_DEPTH) {
      this.fail("lists nested too deeply", "nesting-too-deep");
      return true;
    }
    if (!this.acceptByte(RPAREN)) {
      let n = 0;
      do {
        if (++n > maxItems) {
          this.fail("too many list items", "too-many-items");
          break;
        }
        const v = read(this);
        if (out !== null && v !== null) out.push(v);
      } while (this.err === null && (this.sp() || (adjacentLists && this.atAdjacentList())));
      this.expectByte(RPAREN, "')'");
    }
    this.depth--;
    return true;
  }

  expectList(item: () => void, what = "list", maxItems = MAX_LIST_ITEMS, adjacentLists = false): void {
    if (!this.list(item, maxItems, adjacentLists)) this.fail(`expected ${what}`);
  }

  /** True between a `)` just read and a `(` that follows with no SP (see `list`). */
  private atAdjacentList(): boolean {
    return this.pos > 0 && this.buf[this.pos - 1] === RPAREN && this.peek() === LPAREN;
  }

  /** `flag`: `\`atom (system or extension flag) or keyword atom. `\*` is allowed only if `star`. */
  flag(star = false): string | null {
    if (this.peek() === BACKSLASH) {
      this.pos++;
      if (star && this.acceptByte(0x2a)) return "\\*";
      const a = this.atom();
      return a === null ? this.fail("expected flag name") : "\\" + a;
    }
    return this.atom();
  }

  /** `flag-list` = "(" [flag *(SP flag)] ")". */
  flagList(star = false): string[] | null {
    const flags: string[] = [];
    return this.listInto(flags, star ? flagOrStar : flagOnly) ? flags : null;
  }

  /** `sequence-set` with `*` (STAR); `$` (SEARCHRES) is refused (docs/protocol.md §2). */
  seqSet(): SeqSet | null {
    if (this.peek() === 0x24) return this.fail("SEARCHRES ($) is not supported", "unsupported");
    const ranges: SeqRange[] = [];
    do {
      const start = this.seqNumber();
      if (start === null) return ranges.length === 0 ? null : this.fail("expected seq-number");
      let stop = start;
      if (this.acceptByte(0x3a)) {
        const s = this.seqNumber();
        if (s === null) return this.fail('expected seq-number after ":"');
        stop = s;
      }
      if (ranges.length >= MAX_LIST_ITEMS) return this.fail("sequence set too long", "too-many-items");
      ranges.push({ start, stop });
    } while (this.acceptByte(0x2c));
    return this.err === null ? ranges : null;
  }

  expectSeqSet(): SeqSet {
    return this.seqSet() ?? (this.fail("expected sequence set"), []);
  }

  private seqNumber(): number | null {
    if (this.acceptByte(0x2a)) return STAR;
    const n = this.number();
    if (n === 0) return this.fail("sequence number 0");
    return n;
  }

  /**
   * `mailbox`: astring, modified UTF-7 decoded, canonical only; `INBOX` in any case
   * becomes `INBOX` (RFC 9051 §5.1). 8-bit names are refused: UTF8=ACCEPT is not offered,
   * so a name has exactly one spelling. List wildcards are refused outside LIST.
   */
  mailbox(): string | null {
    const name = this.mailboxLike(false);
    if (name === "") return this.fail("empty mailbox name", "mailbox-name");
    return name;
  }

  expectMailbox(): string {
    return this.mailbox() ?? (this.fail("expected mailbox"), "");
  }

  /** `list-mailbox` (LIST pattern, wildcards allowed) or a LIST reference; may be empty. */
  listMailbox(): string | null {
    return this.mailboxLike(true);
  }

  private mailboxLike(wildcards: boolean): string | null {
    if (this.err !== null) return null;
    let raw: Uint8Array | null = this.string();
    if (raw === null && this.err === null) {
      const start = this.pos;
      this.run(wildcards ? LIST : ASTRING);
      raw = this.pos === start ? null : this.buf.subarray(start, this.pos);
    }
    if (raw === null) return null;
    for (let i = 0; i < raw.length; i++) {
      const b = raw[i]!;
      if (b < 0x20 || b > 0x7e) return this.fail("mailbox name must be 7-bit modified UTF-7", "mailbox-name");
      if (!wildcards && (b === 0x25 || b === 0x2a)) return this.fail("wildcard in mailbox name", "mailbox-name");
    }
    const name = decodeMutf7(latin1(raw, 0, raw.length));
    if (name === null) return this.fail("invalid or non-canonical modified UTF-7", "mailbox-name");
    for (let i = 0; i < name.length; i++) {
      const c = name.charCodeAt(i);
      if (c < 0x20 || (c >= 0x7f && c <= 0x9f)) return this.fail("control character in mailbox name", "mailbox-name");
    }
    return isInbox(name) ? "INBOX" : name;
  }

  /** `date` = date-text / DQUOTE date-text DQUOTE; date-text = 1*2DIGIT "-" Mon "-" 4DIGIT. */
  date(): ImapDate | null {
    if (this.err !== null) return null;
    const quoted = this.acceptByte(DQUOTE);
    const day = this.fixedDigits(1, 2);
    if (day === null) return quoted ? this.fail("expected date") : null;
    if (!this.expectByte(0x2d, "'-'")) return null;
    const limit = this.marker >= 0 ? this.marker : this.end;
    if (this.pos + 3 > limit) return this.fail("invalid month");
    const month = MONTHS.indexOf(latin1(this.buf, this.pos, this.pos + 3).toUpperCase()) + 1;
    if (month === 0) return this.fail("invalid month");
    this.pos += 3;
    if (!this.expectByte(0x2d, "'-'")) return null;
    const year = this.fixedDigits(4, 4);
    if (year === null) return this.fail("invalid year");
    if (day < 1 || day > 31) return this.fail("invalid day of month");
    if (quoted && !this.expectByte(DQUOTE, "closing quote")) return null;
    return { year, month, day };
  }

  /** `date-time` = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE. */
  dateTime(): ImapDateTime | null {
    if (this.peek() !== DQUOTE) return null;
    const b = this.buf;
    const p = this.pos;
    // Fixed layout: "dd-Mon-yyyy hh:mm:ss +zzzz" is 28 bytes with the quotes.
    if (this.end - p < 28 || b[p + 27] !== DQUOTE) return this.fail("invalid date-time");
    const s = latin1(b, p + 1, p + 27);
    const m =
      /^([ 0-9][0-9])-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})$/.exec(s);
    if (m === null) return this.fail("invalid date-time");
    const month = MONTHS.indexOf(m[2]!.toUpperCase()) + 1;
    const day = Number(m[1]!.trim());
    const hour = Number(m[4]);
    const minute = Number(m[5]);
    const second = Number(m[6]);
    const zh = Number(m[8]);
    const zm = Number(m[9]);
    if (month === 0 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60 || zm > 59) {
      return this.fail("invalid date-time");
    }
    this.pos = p + 28;
    const zone = (m[7] === "-" ? -1 : 1) * (zh * 60 + zm);
    return { year: Number(m[3]), month, day, hour, minute, second, zone };
  }

  private fixedDigits(min: number, max: number): number | null {
    const limit = this.marker >= 0 ? this.marker : this.end;
    let i = this.pos;
    let n = 0;
    while (i < limit && i - this.pos < max) {
      const c = this.buf[i]!;
      if (c < 0x30 || c > 0x39) break;
      n = n * 10 + (c - 0x30);
      i++;
    }
    if (i - this.pos < min) return null;
    this.pos = i;
    return n;
  }

  /** `section` after `BODY`/`BODY.PEEK`: "[" [section-spec] "]". */
  section(): Section | null {
    if (!this.acceptByte(0x5b)) return null;
    // `[]`, the whole message: every FETCH of a body gives one, so it is one shared value.
    if (this.acceptByte(0x5d)) return this.err === null ? WHOLE_MESSAGE : null;
    const part: number[] = [];
    let text: Section["text"] = "";
    let fields: string[] = [];
    for (;;) {
      const n = this.number();
      if (n !== null) {
        if (n === 0) return this.fail("section part 0");
        if (part.length >= 64) return this.fail("section part too deep", "too-many-items");
        part.push(n);
        if (this.acceptByte(0x2e)) continue;
        break;
      }
      const word = this.run(ATOM).toUpperCase();
      if (word === "HEADER" || word === "TEXT" || word === "HEADER.FIELDS" || word === "HEADER.FIELDS.NOT") {
        text = word;
      } else if (word === "MIME" && part.length > 0) {
        text = "MIME";
      } else {
        return this.fail(`invalid section "${word}"`);
      }
      break;
    }
    if (text === "HEADER.FIELDS" || text === "HEADER.FIELDS.NOT") {
      this.expectSP();
      fields = [];
      const names = fields;
      this.expectList(() => {
        const f = this.expectAstringText("header field name");
        if (f === "" || /[\x00-\x20\x7f-\uffff:]/.test(f)) this.fail("invalid header field name");
        names.push(f);
      }, "header-list");
      if (fields.length === 0) this.fail("empty header-list");
    }
    this.expectByte(0x5d, "']'");
    return this.err === null ? { part, text, fields } : null;
  }

  /** `section-binary` = "[" [section-part] "]". */
  sectionBinary(): number[] | null {
    if (!this.acceptByte(0x5b)) return null;
    const part: number[] = [];
    if (!this.acceptByte(0x5d)) {
      do {
        if (part.length >= 64) return this.fail("section part too deep", "too-many-items");
        part.push(this.expectNzNumber("section part"));
      } while (this.err === null && this.acceptByte(0x2e));
      this.expectByte(0x5d, "']'");
    }
    return this.err === null ? part : null;
  }

  /** Bytes up to (not including) `stop` or the end of the segment, as Latin-1 text. */
  until(stop: number): string {
    if (this.err !== null) return "";
    const limit = this.marker >= 0 ? this.marker : this.end;
    let i = this.pos;
    while (i < limit && this.buf[i] !== stop) i++;
    const s = latin1(this.buf, this.pos, i);
    this.pos = i;
    return s;
  }

  /** Rest of the current line segment as text (resp-text); a literal marker is just text here. */
  restOfLine(): string {
    if (this.err !== null) return "";
    const s = latin1(this.buf, this.pos, this.end);
    this.pos = this.end;
    return s;
  }

  /** Rest of the line as bytes, through any literals it announces (for logging unknown data). */
  skipRest(): void {
    while (this.err === null) {
      if (this.atLiteral()) {
        this.literalToken();
        continue;
      }
      this.pos = this.marker >= 0 ? this.marker : this.end;
      if (!this.atLiteral()) return;
    }
  }

  /** A generic value (upstream data): NIL, number, atom, string or parenthesized list. */
  value(): Value | null {
    if (this.err !== null) return null;
    const b = this.peek();
    if (b === LPAREN) {
      const items: Value[] = [];
      this.list(
        () => {
          const v = this.value();
          if (v === null) this.fail("expected value");
          else items.push(v);
        },
        Number.MAX_SAFE_INTEGER,
        true,
      );
      return this.err === null ? { type: "list", value: items } : null;
    }
    if (b === DQUOTE) {
      const q = this.quoted();
      return q === null ? null : { type: "string", value: q };
    }
    if (this.atLiteral()) {
      const lit = this.literalToken();
      return lit === null ? null : { type: "string", value: lit.data };
    }
    const a = this.valueAtom();
    if (a === null) return null;
    if (a.length === 3 && a.toUpperCase() === "NIL") return NIL_VALUE;
    if (a.length <= 15 && /^[0-9]+$/.test(a)) return { type: "number", value: Number(a) };
    return { type: "atom", value: a };
  }
}

/** `flagList`'s readers: a flag, or an error. */
function flagOnly(dec: Decoder): string | null {
  const f = dec.flag(false);
  return f === null ? dec.fail("expected flag") : f;
}

function flagOrStar(dec: Decoder): string | null {
  const f = dec.flag(true);
  return f === null ? dec.fail("expected flag") : f;
}
