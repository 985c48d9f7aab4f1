/**
 * Serializer for both directions, after go-imap v2's imapwire encoder and imapflow's
 * imap-compiler: tokens into a growable byte buffer; large byte views are passed on by
 * reference (no copy, never through a string).
 *
 * Output is a list of rounds: the owner writes round 0, and before each following round
 * waits for the peer's `+` (a synchronizing literal sent by the client side without
 * LITERAL+). Responses to agents always form a single round (server literals never wait).
 */
import type { ImapDate, ImapDateTime, Section, Value } from "./decoder.ts";
import { encodeMutf7, isInbox } from "./mutf7.ts";
import { type SeqSet, STAR } from "./seqset.ts";

export interface EncoderOptions {
  /**
   * `server`: literals to an agent, `{n}` without waiting. `client`: literals to upstream, always synchronizing:
   * each waits for the server's `+` (a round break), never `{n+}` (RFC 7888), so that a command the server refuses
   * before reading its literal never sends the literal's octets (docs/protocol.md §4, "Upstream literals").
   */
  readonly side: "server" | "client";
}

/** Views at least this long are passed through by reference instead of copied. */
const BY_REFERENCE = 16 * 1024;
/** Output buffers an encoder keeps for reuse (`giveBack`); each is as large as the largest batch so far. */
const SPARE_BUFFERS = 2;
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const textEncoder = new TextEncoder();

/** Bytes that force a literal: anything but printable ASCII, plus `"` and `\` (no escaping games). */
function quotable(b: number): boolean {
  return b >= 0x20 && b < 0x7f && b !== 0x22 && b !== 0x5c;
}

/** ASTRING-CHAR (RFC 9051 §9). */
function astringChar(b: number): boolean {
  return (
    b > 0x20 &&
    b < 0x7f &&
    b !== 0x28 &&
    b !== 0x29 &&
    b !== 0x7b &&
    b !== 0x25 &&
    b !== 0x2a &&
    b !== 0x22 &&
    b !== 0x5c
  );
}

export class Encoder {
  private readonly options: EncoderOptions;
  private buf = new Uint8Array(4096);
  private len = 0;
  /** Bytes of `buf` before this offset were handed out as views (`takeViews`) and must not change. */
  private start = 0;
  private chunks: Uint8Array[] = [];
  private rounds: Uint8Array[][] = [];
  /**
   * Buffers given back (`giveBack`) once the socket wrote their views, reused instead of new allocations: a batch
   * the socket queued (a slow agent, or a large FETCH) would otherwise cost a new buffer of the batch's size each
   * time, and the allocator returns and faults in such large blocks (docs/imap.md "Benchmarks"). At most
   * `SPARE_BUFFERS`.
   */
  private spare: Uint8Array<ArrayBuffer>[] = [];

  constructor(options: EncoderOptions) {
    this.options = options;
  }

  private ensure(n: number): void {
    if (this.len + n <= this.buf.length) return;
    // Bytes before `start` may be views held by the owner: they stay in the old buffer.
    const used = this.len - this.start;
    let size = this.buf.length;
    while (size < used + n) size *= 2;
    const spare = this.spare.pop();
    const next = spare !== undefined && spare.length >= size ? spare : new Uint8Array(size);
    next.set(this.buf.subarray(this.start, this.len));
    this.buf = next;
    this.start = 0;
    this.len = used;
  }

  /** Ends the current chunk as a view of the buffer; its bytes stay put until `recycle()` or `finish()`. */
  private flushView(): void {
    if (this.len === this.start) return;
    this.chunks.push(this.buf.subarray(this.start, this.len));
    this.start = this.len;
  }

  /** Appends ASCII text (callers guarantee it is ASCII). */
  raw(s: string): this {
    this.ensure(s.length);
    const buf = this.buf;
    let len = this.len;
    for (let i = 0; i < s.length; i++) buf[len++] = s.charCodeAt(i);
    this.len = len;
    return this;
  }

  /**
   * Appends `s` as UTF-8, then CRLF, straight into the buffer (a line the proxy writes itself: no intermediate
   * byte array for the common ASCII line). The caller has made sure `s` holds no CR or LF.
   */
  line(s: string): this {
    this.ensure(s.length + 2);
    const buf = this.buf;
    let len = this.len;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x80) {
        this.len = len;
        return this.bytes(textEncoder.encode(s.slice(i))).crlf();
      }
      buf[len++] = c;
    }
    buf[len++] = 0x0d;
    buf[len++] = 0x0a;
    this.len = len;
    return this;
  }

  /** Appends bytes: copied if small, passed by reference if large. */
  bytes(data: Uint8Array): this {
    if (data.length >= BY_REFERENCE) {
      this.flushView();
      this.chunks.push(data);
      return this;
    }
    this.ensure(data.length);
    this.buf.set(data, this.len);
    this.len += data.length;
    return this;
  }

  sp(): this {
    return this.byte(0x20);
  }

  crlf(): this {
    return this.byte(0x0d).byte(0x0a);
  }

  byte(b: number): this {
    this.ensure(1);
    this.buf[this.len++] = b;
    return this;
  }

  atom(s: string): this {
    return this.raw(s);
  }

  /** A non-negative integer in decimal, written straight into the buffer (no string on the hot path). */
  number(n: number): this {
    if (!Number.isSafeInteger(n) || n < 0) return this.raw(String(n));
    let digits = 1;
    for (let p = 10; p <= n; p *= 10) digits++;
    this.ensure(digits);
    const buf = this.buf;
    let at = this.len + digits;
    this.len = at;
    do {
      buf[--at] = 0x30 + (n % 10);
      n = Math.floor(n / 10);
    } while (n > 0);
    return this;
  }

  nil(): this {
    return this.raw("NIL");
  }

  /** `string`: quoted if every byte is safe printable ASCII and it is short, else a literal. */
  string(s: string | Uint8Array): this {
    const data = typeof s === "string" ? utf8(s) : s;
    if (data.length <= 1024) {
      let safe = true;
      for (let i = 0; i < data.length; i++) {
        if (!quotable(data[i]!)) {
          safe = false;
          break;
        }
      }
      if (safe) return this.byte(0x22).bytes(data).byte(0x22);
    }
    return this.literal(data);
  }

  nstring(s: string | Uint8Array | null): this {
    return s === null ? this.nil() : this.string(s);
  }

  /** `astring`: an atom when possible (not NIL, which would read as nil), else a string. */
  astring(s: string | Uint8Array): this {
    const data = typeof s === "string" ? utf8(s) : s;
    let atomOk = data.length > 0 && data.length <= 1024;
    for (let i = 0; atomOk && i < data.length; i++) atomOk = astringChar(data[i]!);
    if (
      atomOk &&
      data.length === 3 &&
      (data[0]! | 0x20) === 0x6e &&
      (data[1]! | 0x20) === 0x69 &&
      (data[2]! | 0x20) === 0x6c
    ) {
      atomOk = false;
    }
    return atomOk ? this.bytes(data) : this.string(data);
  }

  /** A literal (`~{n}` if `binary`). Client side: a round break after its header, to wait for `+`. */
  literal(data: Uint8Array, binary = false): this {
    return this.literalHeader(data.length, binary).bytes(data);
  }

  /**
   * One literal made of `parts` in order (an assembled CATENATE message, src/imap/commands/catenate.ts), each part
   * written as `bytes` writes it (large ones by reference): the parts are never joined into one copy.
   */
  literalParts(parts: readonly Uint8Array[]): this {
    let size = 0;
    for (const p of parts) size += p.length;
    this.literalHeader(size, false);
    for (const p of parts) this.bytes(p);
    return this;
  }

  /** `{n}` or `~{n}` and its CRLF; on the client side the literal's octets start the next round (they wait for `+`). */
  private literalHeader(size: number, binary: boolean): this {
    if (binary) this.byte(0x7e);
    this.byte(0x7b).number(size).byte(0x7d).crlf();
    if (this.options.side === "client") {
      this.flushView();
      this.rounds.push(this.chunks);
      this.chunks = [];
    }
    return this;
  }

  /** A mailbox name, modified UTF-7 encoded (INBOX in canonical case). */
  mailbox(name: string): this {
    const n = isInbox(name) ? "INBOX" : name;
    return this.astring(encodeMutf7(n));
  }

  /** A LIST pattern: wildcards are written unquoted when possible. */
  listMailbox(pattern: string): this {
    const enc = encodeMutf7(pattern);
    let atomOk = enc.length > 0;
    for (let i = 0; atomOk && i < enc.length; i++) {
      const c = enc.charCodeAt(i);
      atomOk = astringChar(c) || c === 0x25 || c === 0x2a;
    }
    return atomOk ? this.raw(enc) : this.string(enc);
  }

  seqSet(set: SeqSet): this {
    for (let i = 0; i < set.length; i++) {
      const r = set[i]!;
      if (i > 0) this.byte(0x2c);
      this.seqNumber(r.start);
      if (r.stop !== r.start) this.byte(0x3a).seqNumber(r.stop);
    }
    return this;
  }

  private seqNumber(n: number): this {
    return n === STAR ? this.byte(0x2a) : this.number(n);
  }

  /**
   * `(` items `)`, items separated by SP. With `adjacent`, the items before `adjacent`
   * (a count) are written with no SP between them: the `1*address` of an address list,
   * the `1*body` of a multipart body and `1*Namespace-Descr` (RFC 3501 §9).
   */
  list<T>(items: readonly T[], write: (item: T) => void, adjacent = 0): this {
    return this.listWith(items, (_enc, item) => write(item), adjacent);
  }

  /**
   * `list` with a writer given the encoder: a plain function, not a closure made for each list (every response's
   * flags, FETCH's items, a BODYSTRUCTURE's lists).
   */
  listWith<T>(items: readonly T[], write: (enc: Encoder, item: T) => void, adjacent = 0): this {
    this.byte(0x28);
    for (let i = 0; i < items.length; i++) {
      if (i > 0 && i >= adjacent) this.sp();
      write(this, items[i]!);
    }
    return this.byte(0x29);
  }

  /** Flags are atoms or `\`atoms; anything else cannot be a flag and is refused. */
  flag(f: string): this {
    const start = f.charCodeAt(0) === 0x5c ? 1 : 0;
    let ok = f.length > start || f === "\\*";
    if (f !== "\\*") {
      for (let i = start; ok && i < f.length; i++) {
        const c = f.charCodeAt(i);
        // ATOM-CHAR (RFC 9051 §9): not atom-specials, not CTL, 7-bit.
        ok =
          c > 0x20 &&
          c < 0x7f &&
          c !== 0x28 &&
          c !== 0x29 &&
          c !== 0x7b &&
          c !== 0x25 &&
          c !== 0x2a &&
          c !== 0x22 &&
          c !== 0x5c &&
          c !== 0x5d;
      }
    }
    if (!ok) throw new Error(`imap-wire: cannot encode flag ${JSON.stringify(f)}`);
    return this.raw(f);
  }

  flagList(flags: readonly string[]): this {
    return this.listWith(flags, writeFlag);
  }

  /** `date-year` is 4DIGIT (RFC 3501 §9): year 20, read from `0020`, is written `0020`, never `20`. */
  date(d: ImapDate): this {
    return this.raw(`${d.day}-${MONTHS[d.month - 1] ?? "Jan"}-${year4(d.year)}`);
  }

  dateTime(d: ImapDateTime): this {
    const z = Math.abs(d.zone);
    return this.raw(
      `"${pad2(d.day)}-${MONTHS[d.month - 1] ?? "Jan"}-${year4(d.year)} ` +
        `${pad2(d.hour)}:${pad2(d.minute)}:${pad2(d.second)} ` +
        `${d.zone < 0 ? "-" : "+"}${pad2(Math.floor(z / 60))}${pad2(z % 60)}"`,
    );
  }

  /** `[section-spec]`. */
  section(s: Section): this {
    this.byte(0x5b);
    let first = true;
    for (const p of s.part) {
      if (!first) this.byte(0x2e);
      this.number(p);
      first = false;
    }
    if (s.text !== "") {
      if (!first) this.byte(0x2e);
      this.raw(s.text);
      if (s.text === "HEADER.FIELDS" || s.text === "HEADER.FIELDS.NOT") {
        this.sp().listWith(s.fields, writeAstring);
      }
    }
    return this.byte(0x5d);
  }

  /** `[section-part]` of BINARY. */
  sectionBinary(part: readonly number[]): this {
    return this.raw(`[${part.join(".")}]`);
  }

  /** A generic value, e.g. an ENVELOPE or BODYSTRUCTURE from upstream. */
  value(v: Value): this {
    switch (v.type) {
      case "nil":
        return this.nil();
      case "number":
        return this.number(v.value);
      case "atom":
        return this.raw(v.value);
      case "string":
        return this.string(v.value);
      case "list": {
        // The leading run of lists is `1*address` or `1*body`, written with no SP between
        // them; the grammar has SP everywhere else (e.g. an envelope before a body in
        // body-type-msg, body-fld-param before body-fld-dsp).
        let adjacent = 0;
        while (adjacent < v.value.length && v.value[adjacent]!.type === "list") adjacent++;
        return this.listWith(v.value, writeValue, adjacent);
      }
    }
  }

  /**
   * Text after a status or continuation: CR, LF and NUL cannot be sent and become
   * spaces; empty text (not allowed by the grammar) and a trailing `{n}` get a '.'.
   */
  text(s: string): this {
    let clean = s.replace(/[\r\n\0]/g, " ");
    // Text ending like a literal marker would make the peer wait for literal bytes.
    if (clean === "" || /\{[0-9]+\+?\}$/.test(clean)) clean += ".";
    const data = utf8(clean);
    return this.bytes(data);
  }

  /**
   * Ends a single-round output (responses to an agent) without copying: the parts are views of the encoder's
   * buffer and the large byte views passed by reference. The views stay valid until `recycle()`, which the owner
   * calls once nothing holds them any more (the socket has taken the bytes); until then new output goes after
   * them, or into a new buffer.
   */
  takeViews(): Uint8Array[] {
    this.flushView();
    const chunks = this.chunks;
    this.chunks = [];
    return chunks;
  }

  /**
   * Hands the current buffer (whose views were taken) to the caller and goes on in a spare or new one of the same
   * size; the caller gives it back with `giveBack` once the socket has written its views.
   */
  detach(): Uint8Array<ArrayBuffer> {
    const buf = this.buf;
    this.buf = this.spare.pop() ?? new Uint8Array(buf.length);
    this.len = this.start = 0;
    return buf;
  }

  giveBack(buf: Uint8Array<ArrayBuffer>): void {
    if (this.spare.length < SPARE_BUFFERS && buf.length >= this.buf.length) this.spare.push(buf);
  }

  /** Lets the encoder overwrite the bytes of views returned by `takeViews` (see there). */
  recycle(): void {
    if (this.len === this.start) this.len = this.start = 0;
  }

  /** Ends the message and returns its rounds (see module doc); the encoder is reset. */
  finish(): Uint8Array[][] {
    this.flushView();
    this.rounds.push(this.chunks);
    const rounds = this.rounds;
    this.chunks = [];
    this.rounds = [];
    // Views of the current buffer become copies, so the buffer can be reused at once.
    const own = this.buf.buffer;
    for (const round of rounds) {
      for (let i = 0; i < round.length; i++) if (round[i]!.buffer === own) round[i] = round[i]!.slice();
    }
    this.len = this.start = 0;
    return rounds;
  }

  /** Ends the message as one byte array (tests, small messages; ignores rounds). */
  finishBytes(): Uint8Array {
    const parts = this.finish().flat();
    if (parts.length === 1) return parts[0]!;
    let n = 0;
    for (const p of parts) n += p.length;
    const out = new Uint8Array(n);
    let o = 0;
    for (const p of parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  }
}

function year4(n: number): string {
  return String(n).padStart(4, "0");
}

function pad2(n: number): string {
  return n < 10 ? "0" + n : String(n);
}

function utf8(s: string): Uint8Array {
  let ascii = true;
  for (let i = 0; i < s.length; i++) {
    if (s.charCodeAt(i) >= 0x80) {
      ascii = false;
      break;
    }
  }
  if (!ascii) return textEncoder.encode(s);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

// Writers for `listWith`, one item each.

function writeFlag(enc: Encoder, f: string): void {
  enc.flag(f);
}

export function writeAstring(enc: Encoder, s: string): void {
  enc.astring(s);
}

function writeValue(enc: Encoder, v: Value): void {
  enc.value(v);
}

export function writeAtom(enc: Encoder, s: string): void {
  enc.atom(s);
}

export function writeString(enc: Encoder, s: string): void {
  enc.string(s);
}
