/**
 * Incremental framing of an IMAP byte stream into messages: one command or response,
 * i.e. a line plus the literals it announces (RFC 9051 §2.2, §4.3).
 *
 * Two states, as in imapflow's imap-stream: LINE (scan for LF) and LITERAL (count n
 * bytes). Lines and literals are `subarray` views of the fed chunks; bytes are copied
 * only when a line or literal spans chunks. The caller must not reuse a chunk after
 * feeding it (Bun's socket `data` chunks are owned by JS, so this holds).
 *
 * Pull style: `feed()` queues bytes, `next()` returns the next event or null when more
 * input is needed. On the server side (reading agent commands) a literal stops the
 * framer until the owner calls `acceptLiteral()` (and writes `+` for a synchronizing
 * literal) or `refuseLiteral()` (and writes `BAD`). On the client side (reading
 * upstream responses) literals are never synchronizing.
 */
import { WireError } from "./errors.ts";
import {
  MAX_APPEND_MESSAGE,
  MAX_ARGUMENT_LITERAL,
  MAX_BUFFERED_INPUT,
  MAX_COMMAND_BYTES,
  MAX_LINE,
  MAX_LITERALS_PER_COMMAND,
  MAX_LITERALS_PER_RESPONSE,
  MAX_NONSYNC_DRAIN,
  MAX_NUMBER,
  MAX_RESPONSE_BYTES,
  MAX_RESPONSE_LINE,
  MAX_RESPONSE_LITERAL,
} from "./limits.ts";
import { latin1, token } from "./text.ts";

/** Literal bytes of a message; `data` is a view, never decoded to a string. */
export interface Literal {
  readonly data: Uint8Array;
  /** Sent as `{n+}` (RFC 7888). */
  readonly nonSync: boolean;
  /** Sent as `~{n}` (RFC 3516 literal8). */
  readonly binary: boolean;
}

/**
 * One complete command or response. `lines[i]` excludes CRLF; for i < lines.length-1 it
 * ends with a literal marker starting at `markers[i]`, whose bytes are `literals[i]`.
 */
export interface Frame {
  readonly lines: readonly Uint8Array[];
  readonly markers: readonly number[];
  readonly literals: readonly Literal[];
  /** Octets on the wire, CRLFs and literals included. */
  readonly size: number;
  /**
   * Client only: the response announced more literals than `maxLiterals`, or had a line longer than `maxLine`. It was
   * read to its end, but nothing of it was kept from there: the frame holds the lines before (with the line that
   * announced the first literal past the limit, or the long line's first octets), and no literal from there on, so
   * that the response's start can still be read (`parseResponse`).
   */
  readonly truncated?: true;
}

/** A literal announced by an agent command, awaiting the owner's decision. */
export interface LiteralRequest {
  /** Tag of the command, if its first line started with one. */
  readonly tag: string | null;
  /** Upper-cased command name, `UID ` prefix kept (e.g. `APPEND`, `UID SEARCH`). */
  readonly command: string | null;
  readonly size: number;
  /** `{n+}`: bytes are already in flight; no `+` may be written either way. */
  readonly nonSync: boolean;
  readonly binary: boolean;
  /** 0 for the command's first literal. */
  readonly index: number;
}

export type FramerEvent =
  | { readonly kind: "frame"; readonly frame: Frame }
  /** A line read after `expectRawLine()` (AUTHENTICATE continuation, IDLE's DONE). */
  | { readonly kind: "line"; readonly line: Uint8Array }
  | { readonly kind: "literal"; readonly request: LiteralRequest }
  /**
   * Client only (`holdLinesFrom`): the response's lines are about to pass what was granted; `size` is how many more
   * octets of lines must be granted (`grantLineMemory`) before the next piece of a line is read.
   */
  | { readonly kind: "line-memory"; readonly size: number }
  | { readonly kind: "error"; readonly error: WireError };

export interface FramerLimits {
  readonly maxLine: number;
  /** Server: largest APPEND literal. Client: largest response literal. */
  readonly maxLiteral: number;
  /** Server: largest literal in non-APPEND commands. */
  readonly maxArgumentLiteral: number;
  /**
   * Server: octets of one command up to which a refused `{n+}` is read and dropped (then `BAD [TOOBIG]`);
   * past it the stream is fatal (`BYE [TOOBIG]`, RFC 7888 §4).
   */
  readonly maxNonSyncDrain: number;
  readonly maxLiterals: number;
  readonly maxFrameBytes: number;
  readonly maxBuffered: number;
}

export interface FramerOptions {
  /** `server` reads agent commands; `client` reads upstream responses. */
  readonly role: "server" | "client";
  /** Accept `~{n}` (only once BINARY is enabled). Default: false on the server, true on the client. */
  readonly allowLiteral8?: boolean;
  /** Override limits (tests; the defaults come from limits.ts). */
  readonly limits?: Partial<FramerLimits>;
  /**
   * Client only: a response literal that takes its response past this many octets (the lines and literals before
   * it, and its own size) is announced with a `literal` event before any of its octets is read, and framing waits
   * for `acceptLiteral()`: the owner first reserves memory for it (src/imap/memory.ts). Unset: never.
   */
  readonly holdLiteralsFrom?: number;
  /**
   * Client only: before a piece of a line is read that takes the octets of the response's lines (line ends
   * included) past this plus what was granted so far, a `line-memory` event asks for the difference and framing
   * waits for `grantLineMemory()`. A line's length is not announced, so it is counted as its octets arrive, one
   * read chunk at a time. Unset: never.
   */
  readonly holdLinesFrom?: number;
}

export const SERVER_LIMITS: FramerLimits = {
  maxLine: MAX_LINE,
  maxLiteral: MAX_APPEND_MESSAGE,
  maxArgumentLiteral: MAX_ARGUMENT_LITERAL,
  maxNonSyncDrain: MAX_NONSYNC_DRAIN,
  maxLiterals: MAX_LITERALS_PER_COMMAND,
  maxFrameBytes: MAX_COMMAND_BYTES,
  maxBuffered: MAX_BUFFERED_INPUT,
};

export const CLIENT_LIMITS: FramerLimits = {
  maxLine: MAX_RESPONSE_LINE,
  maxLiteral: MAX_RESPONSE_LITERAL,
  maxArgumentLiteral: MAX_RESPONSE_LITERAL,
  maxNonSyncDrain: MAX_RESPONSE_BYTES,
  maxLiterals: MAX_LITERALS_PER_RESPONSE,
  maxFrameBytes: MAX_RESPONSE_BYTES,
  maxBuffered: MAX_BUFFERED_INPUT,
};

const LF = 0x0a;
const CR = 0x0d;
const SP = 0x20;
const DQUOTE = 0x22;
const BACKSLASH = 0x5c;
const LBRACE = 0x7b;
const RBRACE = 0x7d;
const PLUS = 0x2b;
const TILDE = 0x7e;

const EMPTY = new Uint8Array(0);
/** Octets kept of the start of a response line past `maxLine` (`Framer.startSkip`): enough for `* n FETCH`. */
const SKIP_HEAD = 64;
/** Octets kept of the end of such a line: enough for a literal marker (`~{4294967295+}`). */
const SKIP_TAIL = 16;
/** First buffer for a literal that spans chunks; it grows as its bytes arrive. */
const LITERAL_INITIAL = 64 * 1024;

/** A literal marker found at the end of a line. `size` is -1 when unparsable or > 2^32-1. */
export interface LiteralMarker {
  readonly start: number;
  readonly size: number;
  readonly nonSync: boolean;
  readonly binary: boolean;
}

/**
 * Finds `{n}`, `{n+}`, `~{n}` or `~{n+}` at the end of a line (CRLF already removed),
 * scanning bytes. Quote state is tracked from the start of the line so that an
 * unterminated `"abc {5}` is not mistaken for a literal (docs/protocol.md §4).
 */
export function findLiteralMarker(line: Uint8Array): LiteralMarker | null {
  const len = line.length;
  if (len < 3 || line[len - 1] !== RBRACE) return null;
  let inQuote = false;
  for (let i = 0; i < len; i++) {
    const b = line[i];
    if (inQuote) {
      if (b === BACKSLASH) i++;
      else if (b === DQUOTE) inQuote = false;
    } else if (b === DQUOTE) {
      inQuote = true;
    }
  }
  if (inQuote) return null;
  let j = len - 2;
  let nonSync = false;
  if (line[j] === PLUS) {
    nonSync = true;
    j--;
  }
  const digitsEnd = j + 1;
  while (j >= 0) {
    const b = line[j]!;
    if (b < 0x30 || b > 0x39) break;
    j--;
  }
  const digits = digitsEnd - (j + 1);
  if (digits === 0 || j < 0 || line[j] !== LBRACE) return null;
  let start = j;
  let binary = false;
  if (j > 0 && line[j - 1] === TILDE) {
    binary = true;
    start = j - 1;
  }
  let size = -1;
  // Ten digits bound the value below 2^34 before the range check: no overflow.
  if (digits <= 10) {
    size = 0;
    for (let k = j + 1; k < digitsEnd; k++) size = size * 10 + (line[k]! - 0x30);
    if (size > MAX_NUMBER) size = -1;
  }
  return { start, size, nonSync, binary };
}

type State = "line" | "literal" | "decide" | "hold" | "closed";

export class Framer {
  private readonly server: boolean;
  private readonly allowLiteral8: boolean;
  private readonly holdLiteralsFrom: number;
  private readonly holdLinesFrom: number;
  readonly limits: FramerLimits;

  // Unframed input: chunks[0] is read from offset `head`.
  private chunks: Uint8Array[] = [];
  private head = 0;
  private bufferedBytes = 0;

  private state: State = "line";
  private fatal: WireError | null = null;
  private rawLine = false;

  // Pieces of a line that spans chunks.
  private parts: Uint8Array[] = [];
  private partsLen = 0;

  // The message being framed.
  private lines: Uint8Array[] = [];
  private markers: number[] = [];
  private literals: Literal[] = [];
  private literalCount = 0;
  private frameBytes = 0;
  /** Octets of the message's completed lines as read (line ends included), for `holdLinesFrom`. */
  private frameLineBytes = 0;
  /** Octets of lines granted beyond `holdLinesFrom` (`grantLineMemory`); `lineNeed` while a grant is asked. */
  private lineGranted = 0;
  private lineNeed = 0;
  private tag: string | null = null;
  private command: string | null = null;
  /** Refused command whose remaining bytes (`{n+}` literals, lines) are being skipped. */
  private discarding = false;
  /** Client only: a response past `maxLiterals` or `maxLine`, whose remaining bytes are skipped (`Frame.truncated`). */
  private truncated = false;
  /**
   * Client only: a response line past `maxLine` being read and dropped (`skipLine`): its first octets (what a
   * truncated frame keeps of it), its length so far, the quote state, and its last octets, where a literal marker
   * would be.
   */
  private skip: { head: Uint8Array; length: number; quoted: boolean; escaped: boolean; tail: number[] } | null = null;

  // The literal being read or awaiting a decision.
  private lit: LiteralMarker = { start: 0, size: 0, nonSync: false, binary: false };
  private litBuf: Uint8Array | null = null;
  private litView: Uint8Array | null = null;
  private litFilled = 0;
  /** The literal's memory is reserved (`acceptLiteral(true)`): its buffer is allocated whole, not grown. */
  private litWhole = false;

  constructor(options: FramerOptions) {
    this.server = options.role === "server";
    this.allowLiteral8 = options.allowLiteral8 ?? !this.server;
    this.holdLiteralsFrom = this.server
      ? Number.POSITIVE_INFINITY
      : (options.holdLiteralsFrom ?? Number.POSITIVE_INFINITY);
    this.holdLinesFrom = this.server ? Number.POSITIVE_INFINITY : (options.holdLinesFrom ?? Number.POSITIVE_INFINITY);
    this.limits = { ...(this.server ? SERVER_LIMITS : CLIENT_LIMITS), ...options.limits };
  }

  /** Octets fed but not yet framed. */
  get buffered(): number {
    return this.bufferedBytes;
  }

  /** True between a `literal` event and the owner's accept/refuse call. */
  get awaitingDecision(): boolean {
    return this.state === "decide";
  }

  /** Queues bytes. The chunk is kept by reference: do not modify it afterwards. */
  feed(chunk: Uint8Array): void {
    if (this.state === "closed" || chunk.length === 0) return;
    if (this.bufferedBytes > this.limits.maxBuffered) {
      this.fail("input-overflow", `more than ${this.limits.maxBuffered} octets buffered ahead of the reader`);
      return;
    }
    this.chunks.push(chunk);
    this.bufferedBytes += chunk.length;
  }

  /**
   * The next line is returned raw as a `line` event, without literal detection: for
   * AUTHENTICATE continuations (RFC 9051 §6.2.2) and IDLE's DONE (§6.3.13). Call at a
   * message boundary, before pulling the line.
   */
  expectRawLine(): void {
    this.rawLine = true;
  }

  /**
   * Drops all unframed input and returns its length. After STARTTLS, bytes received
   * before the handshake must be discarded (RFC 9051 §6.2.1, docs/protocol.md §4).
   */
  discardBuffered(): number {
    const n = this.bufferedBytes;
    this.chunks = [];
    this.head = 0;
    this.bufferedBytes = 0;
    this.parts = [];
    this.partsLen = 0;
    return n;
  }

  /**
   * Removes and returns the unframed input, at a message boundary: after `COMPRESS DEFLATE` (RFC 4978 §3) what
   * follows the command is compressed and must go through the inflater before it is framed.
   */
  takeBuffered(): Uint8Array[] {
    const out = this.chunks.map((c, i) => (i === 0 ? c.subarray(this.head) : c));
    this.discardBuffered();
    return out.filter((c) => c.length > 0);
  }

  /**
   * Accepts the pending literal; for a synchronizing one the owner now writes `+`. `reserved`: the owner has
   * reserved memory for all of its octets (src/imap/memory.ts), so its buffer is allocated at its announced size
   * when its first octets arrive, instead of growing by doubling (which holds up to about twice the literal while
   * the old buffer is copied into the new one, and leaves the old ones to the garbage collector).
   */
  acceptLiteral(reserved = false): void {
    if (this.state !== "decide") throw new Error("imap-wire: acceptLiteral without a pending literal");
    this.startLiteral(false);
    this.litWhole = reserved;
  }

  /** Grants `octets` more of the response's lines after a `line-memory` event; framing goes on. */
  grantLineMemory(octets: number): void {
    if (this.state !== "hold") throw new Error("imap-wire: grantLineMemory without a pending request");
    this.lineGranted += octets;
    this.state = "line";
  }

  /**
   * Refuses the pending literal; the owner writes a tagged `BAD`. A synchronizing
   * literal ends the command (the client sends nothing more for it); a `{n+}` literal's
   * bytes and the rest of its command are consumed and dropped.
   */
  refuseLiteral(): void {
    if (this.state !== "decide") throw new Error("imap-wire: refuseLiteral without a pending literal");
    if (this.lit.nonSync) {
      this.discarding = true;
      this.startLiteral(true);
    } else {
      this.resetFrame();
    }
  }

  /** Returns the next event, or null when more input (or a literal decision) is needed. */
  next(): FramerEvent | null {
    for (;;) {
      if (this.fatal !== null) {
        const error = this.fatal;
        this.fatal = null;
        this.closeNow();
        return { kind: "error", error };
      }
      switch (this.state) {
        case "closed":
        case "decide":
        case "hold":
          return null;
        case "literal": {
          if (!this.readLiteral()) return null;
          this.state = "line";
          continue;
        }
        case "line": {
          if (this.skip !== null) {
            const event = this.skipLine();
            if (event === undefined) return null;
            if (event !== null) return event;
            continue;
          }
          const line = this.readLine();
          if (line === null) continue; // fatal set, or loop ends below
          if (line === undefined) {
            // readLine may have set it (TypeScript's narrowing of `state` does not see that).
            if ((this.state as State) !== "hold") return null;
            return { kind: "line-memory", size: this.lineNeed };
          }
          const event = this.onLine(line);
          if (event !== null) return event;
          continue;
        }
      }
    }
  }

  private onLine(line: Uint8Array): FramerEvent | null {
    if (this.rawLine && this.lines.length === 0 && !this.discarding) {
      this.rawLine = false;
      this.frameLineBytes = 0;
      return { kind: "line", line };
    }
    const first = this.lines.length === 0 && !this.discarding && this.literalCount === 0;
    if (first && this.server) this.readTagAndCommand(line);
    this.frameBytes += line.length + 2;
    if (this.frameBytes > (this.discarding ? this.limits.maxNonSyncDrain : this.limits.maxFrameBytes)) {
      return this.tooBig();
    }
    const marker = findLiteralMarker(line);
    if (marker === null) {
      if (this.truncated) return this.truncatedFrame();
      if (this.discarding) {
        this.resetFrame();
        return null;
      }
      this.lines.push(line);
      const frame: Frame = {
        lines: this.lines,
        markers: this.markers,
        literals: this.literals,
        size: this.frameBytes,
      };
      this.resetFrame();
      return { kind: "frame", frame };
    }
    if (!this.discarding) {
      this.lines.push(line);
      this.markers.push(marker.start);
    }
    this.lit = marker;
    return this.server ? this.onServerLiteral(marker) : this.onClientLiteral(marker);
  }

  private onClientLiteral(m: LiteralMarker): FramerEvent | null {
    const l = this.limits;
    if (m.size < 0) this.fail("literal-size-invalid", "invalid literal size in response");
    else if (m.binary && !this.allowLiteral8) this.fail("literal8-refused", "literal8 in response");
    else if (m.size > l.maxLiteral) this.fail("literal-too-big", `response literal of ${m.size} octets`);
    else if (this.frameBytes + m.size > l.maxFrameBytes) this.fail("response-too-big", "response too big");
    else if (this.truncated || this.literalCount >= l.maxLiterals) {
      // Too many to keep (a BODYSTRUCTURE of thousands of parts with 8-bit names, which anyone who can mail the
      // account can send): the rest of the response is read and dropped, as a refused command's is, and the frame
      // says so (`Frame.truncated`), instead of failing the whole upstream session.
      this.truncated = true;
      this.startLiteral(true);
    } else if (this.frameBytes + m.size > this.holdLiteralsFrom) {
      this.state = "decide";
      const index = this.literalCount;
      return {
        kind: "literal",
        request: { tag: null, command: null, size: m.size, nonSync: false, binary: m.binary, index },
      };
    } else this.startLiteral(false);
    return null;
  }

  private onServerLiteral(m: LiteralMarker): FramerEvent | null {
    const l = this.limits;
    if (this.discarding) {
      // Already answered BAD. A synchronizing literal ends the refused command (no `+`
      // will come); a `{n+}` one is in flight and must be consumed.
      if (!m.nonSync) this.resetFrame();
      else if (m.size < 0 || this.frameBytes + m.size + 2 > l.maxNonSyncDrain) {
        this.fail("command-too-big", "refused command keeps sending literals", "TOOBIG");
      } else this.startLiteral(true);
      return null;
    }
    let error: WireError | null = null;
    const cap = this.command === "APPEND" ? l.maxLiteral : l.maxArgumentLiteral;
    if (m.size < 0) {
      error = this.badLiteral("literal-size-invalid", "invalid literal size", null);
    } else if (m.binary && !this.allowLiteral8) {
      error = this.badLiteral("literal8-refused", "literal8 requires BINARY", "CLIENTBUG");
    } else if (this.literalCount >= l.maxLiterals) {
      error = this.badLiteral("too-many-literals", "too many literals in command", "LIMIT");
    } else if (m.size > cap) {
      error = this.badLiteral("literal-too-big", `literal of ${m.size} octets`, "TOOBIG");
    } else if (this.frameBytes + m.size > l.maxFrameBytes) {
      error = this.badLiteral("command-too-big", "command too big", "TOOBIG");
    }
    if (error === null) {
      this.state = "decide";
      return {
        kind: "literal",
        request: {
          tag: this.tag,
          command: this.command,
          size: m.size,
          nonSync: m.nonSync,
          binary: m.binary,
          index: this.literalCount,
        },
      };
    }
    if (!m.nonSync) {
      this.resetFrame();
      return { kind: "error", error };
    }
    // LITERAL+ (RFC 7888 §3, §4): the octets are in flight. Read exactly n of them and drop
    // them (never buffered), unless n cannot be known or would take the command past the drain
    // cap (counting the CRLF that must follow it): then the stream is unrecoverable and the
    // connection closes with BYE [TOOBIG].
    if (m.size < 0 || this.frameBytes + m.size + 2 > l.maxNonSyncDrain) {
      this.fail(error.code, "non-synchronizing literal cannot be skipped safely", m.size < 0 ? null : "TOOBIG");
      return null;
    }
    this.discarding = true;
    this.startLiteral(true);
    return { kind: "error", error };
  }

  private badLiteral(code: WireError["code"], message: string, responseCode: string | null): WireError {
    return new WireError(code, message, { tag: this.tag, responseCode, command: this.command });
  }

  private tooBig(): FramerEvent | null {
    if (this.server) this.fail("command-too-big", "message exceeds size limit", "TOOBIG");
    else this.fail("response-too-big", "message exceeds size limit");
    return null;
  }

  private startLiteral(discard: boolean): void {
    this.literalCount++;
    this.litBuf = null;
    this.litView = null;
    this.litFilled = 0;
    this.litWhole = false;
    this.discarding = this.discarding || discard;
    this.state = "literal";
  }

  /** Reads literal octets; true when the literal is complete. */
  private readLiteral(): boolean {
    const size = this.lit.size;
    while (this.litFilled < size) {
      const c = this.chunks[0];
      if (c === undefined) return false;
      const avail = c.length - this.head;
      const need = size - this.litFilled;
      const take = avail < need ? avail : need;
      if (!this.discarding) {
        if (this.litFilled === 0 && take === size) {
          this.litView = c.subarray(this.head, this.head + take);
        } else {
          // Spans chunks: grow with the bytes actually received (doubling, capped at the checked size), so
          // announcing a large literal and stalling costs no memory; one buffer of the whole size when that
          // memory is reserved already (`acceptLiteral(true)`).
          const filled = this.litFilled + take;
          const buf = this.litBuf;
          if (buf === null || buf.length < filled) {
            let cap = this.litWhole ? size : buf === null ? LITERAL_INITIAL : buf.length * 2;
            while (cap < filled) cap *= 2;
            const next = new Uint8Array(cap < size ? cap : size);
            if (buf !== null) next.set(buf.subarray(0, this.litFilled));
            this.litBuf = next;
          }
          this.litBuf!.set(c.subarray(this.head, this.head + take), this.litFilled);
        }
      }
      this.litFilled += take;
      this.consume(take);
    }
    this.frameBytes += size;
    if (!this.discarding) {
      this.literals.push({
        data: this.litView ?? this.litBuf ?? EMPTY,
        nonSync: this.lit.nonSync,
        binary: this.lit.binary,
      });
    }
    this.litBuf = null;
    this.litView = null;
    return true;
  }

  private consume(n: number): void {
    this.head += n;
    this.bufferedBytes -= n;
    const c = this.chunks[0];
    if (c !== undefined && this.head >= c.length) {
      this.chunks.shift();
      this.head = 0;
    }
  }

  /**
   * A complete line without CRLF; undefined when incomplete, or when the next piece needs a grant (state "hold");
   * null when a limit broke.
   */
  private readLine(): Uint8Array | null | undefined {
    const max = this.limits.maxLine;
    for (;;) {
      const c = this.chunks[0];
      if (c === undefined) return undefined;
      const start = this.head;
      const lf = c.indexOf(LF, start);
      if (lf === -1) {
        const piece = start === 0 ? c : c.subarray(start);
        // +1: the CR of the CRLF may be in this piece.
        if (this.partsLen + piece.length > max + 1) {
          if (!this.server) return this.startSkip();
          this.fail("line-too-long", `line longer than ${max} octets`, "TOOBIG");
          return null;
        }
        if (this.needsLineGrant(piece.length)) return undefined;
        this.parts.push(piece);
        this.partsLen += piece.length;
        this.consume(piece.length);
        continue;
      }
      const total = this.partsLen + (lf - start);
      if (total > max + 1) {
        if (!this.server) return this.startSkip();
        this.fail("line-too-long", `line longer than ${max} octets`, "TOOBIG");
        return null;
      }
      if (this.needsLineGrant(lf + 1 - start)) return undefined;
      this.frameLineBytes += total + 1;
      let line: Uint8Array;
      if (this.partsLen === 0) {
        // Bare LF is accepted as a line end, as go-imap's decoder and Dovecot do; the CR of a CRLF is left out here,
        // so that the line is one view of the chunk, not a view of a view.
        line = c.subarray(start, lf > start && c[lf - 1] === CR ? lf - 1 : lf);
      } else {
        line = new Uint8Array(total);
        let off = 0;
        for (const p of this.parts) {
          line.set(p, off);
          off += p.length;
        }
        line.set(c.subarray(start, lf), off);
        this.parts = [];
        this.partsLen = 0;
        if (line.length > 0 && line[line.length - 1] === CR) line = line.subarray(0, line.length - 1);
      }
      this.consume(lf + 1 - start);
      if (line.length > max) {
        this.fail("line-too-long", `line longer than ${max} octets`, this.server ? "TOOBIG" : null);
        return null;
      }
      return line;
    }
  }

  /**
   * A response line longer than `maxLine` (a BODYSTRUCTURE of many megabytes of quoted part names, which anyone who
   * can mail the account can send): from here the line is read and dropped, and so is the rest of its response, which
   * comes out truncated (`Frame.truncated`) instead of failing the upstream session. What was read of the line is
   * scanned once for its quote state, so that a literal marker at its end is still found as `findLiteralMarker`
   * would find it. Returns null: `next()` goes on with `skipLine`.
   */
  private startSkip(): null {
    const skip = { head: EMPTY, length: 0, quoted: false, escaped: false, tail: [] as number[] };
    for (const p of this.parts) this.skipScan(skip, p);
    this.parts = [];
    this.partsLen = 0;
    this.skip = skip;
    return null;
  }

  /** Follows a skipped line's octets: length, quote state (as findLiteralMarker tracks it) and last octets. */
  private skipScan(
    skip: { length: number; quoted: boolean; escaped: boolean; tail: number[]; head: Uint8Array },
    bytes: Uint8Array,
  ): void {
    if (skip.head.length < SKIP_HEAD && bytes.length > 0) {
      const more = bytes.subarray(0, SKIP_HEAD - skip.head.length);
      const head = new Uint8Array(skip.head.length + more.length);
      head.set(skip.head);
      head.set(more, skip.head.length);
      skip.head = head;
    }
    for (const b of bytes) {
      if (skip.escaped) skip.escaped = false;
      else if (skip.quoted) {
        if (b === BACKSLASH) skip.escaped = true;
        else if (b === DQUOTE) skip.quoted = false;
      } else if (b === DQUOTE) skip.quoted = true;
    }
    skip.length += bytes.length;
    for (let i = Math.max(0, bytes.length - SKIP_TAIL); i < bytes.length; i++) skip.tail.push(bytes[i]!);
    if (skip.tail.length > SKIP_TAIL) skip.tail.splice(0, skip.tail.length - SKIP_TAIL);
  }

  /**
   * Reads on through a skipped line (`startSkip`). Undefined when more input is needed; at its end, a literal it
   * announces is dropped as well, and a line that ends the response gives its truncated frame.
   */
  private skipLine(): FramerEvent | null | undefined {
    const skip = this.skip!;
    for (;;) {
      const c = this.chunks[0];
      if (c === undefined) return undefined;
      const lf = c.indexOf(LF, this.head);
      const end = lf === -1 ? c.length : lf;
      this.skipScan(skip, c.subarray(this.head, end));
      this.consume(end - this.head + (lf === -1 ? 0 : 1));
      if (this.frameBytes + skip.length > this.limits.maxFrameBytes) return this.tooBig();
      if (lf !== -1) break;
    }
    this.skip = null;
    const tail = skip.tail;
    if (tail[tail.length - 1] === CR) tail.pop();
    this.frameBytes += skip.length + 1;
    if (this.lines.length === 0) this.lines.push(skip.head);
    this.truncated = true;
    this.discarding = true;
    // Read from its `{` (and a `~` before it): what follows is digits, `+` and `}`, which leave the quote state as it
    // was at the line's end.
    const at = tail.lastIndexOf(LBRACE);
    const from = at > 0 && tail[at - 1] === TILDE ? at - 1 : at;
    const marker = skip.quoted || at === -1 ? null : findLiteralMarker(Uint8Array.from(tail.slice(from)));
    if (marker === null) return this.truncatedFrame();
    this.lit = marker;
    return this.onClientLiteral(marker);
  }

  /** The end of a response read past a limit (`Frame.truncated`): what was kept of it, as one frame. */
  private truncatedFrame(): FramerEvent {
    const frame: Frame = {
      lines: this.lines,
      markers: this.markers,
      literals: this.literals,
      size: this.frameBytes,
      truncated: true,
    };
    this.resetFrame();
    return { kind: "frame", frame };
  }

  /** True (and state "hold") when reading `octets` more of a line would pass what `holdLinesFrom` and grants allow. */
  private needsLineGrant(octets: number): boolean {
    const need = this.frameLineBytes + this.partsLen + octets - this.holdLinesFrom - this.lineGranted;
    if (need <= 0) return false;
    this.lineNeed = need;
    this.state = "hold";
    return true;
  }

  /** Reads `tag SP command [SP name]` from a command's first line, for limits and errors. */
  private readTagAndCommand(line: Uint8Array): void {
    const sp1 = line.indexOf(SP);
    const tagEnd = sp1 === -1 ? line.length : sp1;
    // Only a valid tag is echoed: `+ BAD ...` under a tag `+` would read as a continuation request.
    this.tag = tagEnd > 0 && tagEnd <= 64 && isTag(line, tagEnd) ? latin1(line, 0, tagEnd) : null;
    this.command = null;
    if (sp1 === -1) return;
    let sp2 = line.indexOf(SP, sp1 + 1);
    if (sp2 === -1) sp2 = line.length;
    if (sp2 - sp1 - 1 > 32) return;
    let name = upperCased(line, sp1 + 1, sp2);
    if (name === "UID" && sp2 < line.length) {
      let sp3 = line.indexOf(SP, sp2 + 1);
      if (sp3 === -1) sp3 = line.length;
      // `UID` SP name, upper-cased as one run: the SP between them is kept as it is.
      if (sp3 - sp2 - 1 <= 32) name = upperCased(line, sp1 + 1, sp3);
    }
    this.command = name;
  }

  private fail(code: WireError["code"], message: string, responseCode: string | null = null): void {
    this.fatal = new WireError(code, message, { fatal: true, tag: this.tag, responseCode });
  }

  private closeNow(): void {
    this.state = "closed";
    this.chunks = [];
    this.parts = [];
    this.partsLen = 0;
    this.bufferedBytes = 0;
    this.head = 0;
    this.lines = [];
    this.markers = [];
    this.literals = [];
    this.litBuf = null;
    this.litView = null;
  }

  private resetFrame(): void {
    this.lines = [];
    this.markers = [];
    this.literals = [];
    this.literalCount = 0;
    this.frameBytes = 0;
    this.frameLineBytes = 0;
    this.lineGranted = 0;
    this.tag = null;
    this.command = null;
    this.discarding = false;
    this.truncated = false;
    this.skip = null;
    this.state = "line";
  }
}

/** `tag` = 1*<any ASTRING-CHAR except "+"> (RFC 9051 §9): printable ASCII but SP ( ) { % * " \ and +. */
function isTag(buf: Uint8Array, end: number): boolean {
  for (let i = 0; i < end; i++) {
    const b = buf[i]!;
    if (b <= SP || b >= 0x7f || b === PLUS || b === DQUOTE || b === BACKSLASH || b === LBRACE) return false;
    if (b === 0x28 || b === 0x29 || b === 0x25 || b === 0x2a) return false;
  }
  return true;
}

/**
 * ASCII letters upper-cased, every other octet as it is (a byte to a code point): a run already in upper case (as
 * clients send command names) comes from the cache of recent tokens (text.ts), so a command's name is not built
 * again for every command. Not String.toUpperCase, which maps Latin-1 letters too (0xE9 to 0xC9, 0xDF to `SS`):
 * a command name is compared as ASCII (RFC 9051 §9).
 */
function upperCased(buf: Uint8Array, start: number, end: number): string {
  for (let i = start; i < end; i++) {
    const b = buf[i]!;
    if (b >= 0x61 && b <= 0x7a) return asciiUpper(buf, start, end);
  }
  return token(buf, start, end);
}

function asciiUpper(buf: Uint8Array, start: number, end: number): string {
  let s = "";
  for (let i = start; i < end; i++) {
    const b = buf[i]!;
    s += String.fromCharCode(b >= 0x61 && b <= 0x7a ? b - 0x20 : b);
  }
  return s;
}
