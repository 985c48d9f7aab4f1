/**
 * The DATA phase on bytes (RFC 5321 §4.1.1.4, §4.5.2): finds the end of the message and removes dot-stuffing,
 * without turning the stream into strings.
 *
 * Only CRLF "." CRLF ends a message. A bare LF or a bare CR anywhere in the message is refused outright
 * (§2.3.8): those are the sequences SMTP smuggling uses (`<LF>.<LF>`, `<CR>.<CR>`, CVE-2023-51764/5/6), and
 * no reading of them is safe when the upstream might read them differently.
 *
 * Unstuffing happens in place: a dropped dot closes the gap by moving the bytes after it down within the chunk
 * (which the caller owns), and the sink gets one view per `feed`, however many lines began with a dot. A view per
 * dotted line made a body of `..` lines cost some 16 times the CPU of ordinary text (docs/smtp.md "DATA on the
 * wire").
 */

const CR = 13;
const LF = 10;
const DOT = 46;

const enum State {
  /** At the start of a line. */
  LineStart,
  /** Inside a line. */
  Middle,
  /** Just after a CR inside a line. */
  Cr,
  /** A line that began with "." (the dot was dropped). */
  Dot,
  /** "." then CR: LF ends the message. */
  DotCr,
}

/**
 * Octets looked at or copied one by one before a native search or copy takes over, here and in the replay's
 * dot-stuffing (upstream.ts): short lines cost no native call each.
 */
export const SHORT_RUN = 16;

/**
 * Copies `src[from, to)` to `dst` at `at` and returns the octets copied: short runs octet by octet, long ones with one
 * native copy. Within one buffer only downwards (`at` < `from`), as unstuffing in place moves content.
 */
export function copyRun(src: Buffer, from: number, to: number, dst: Buffer, at: number): number {
  if (to - from > SHORT_RUN) {
    if (src === dst) src.copyWithin(at, from, to);
    else src.copy(dst, at, from, to);
    return to - from;
  }
  for (let k = from; k < to; k++) dst[at++] = src[k]!;
  return to - from;
}

export type DataResult =
  /** Every byte of the chunk from `start` was consumed; the message goes on. */
  | { readonly kind: "more" }
  /** The message ended; bytes from `next` on are the client's next commands (PIPELINING). */
  | { readonly kind: "end"; readonly next: number }
  /** A bare CR or LF: the connection must be closed. */
  | { readonly kind: "bare-newline" };

export class DataReader {
  #state = State.LineStart;
  readonly #sink: (content: Buffer) => void;

  /**
   * `sink` receives the message content, unstuffed, as views of the input chunks (no copy), at most once per
   * `feed`. The chunk's bytes before the returned `next` (or all of them) may have been moved: a dropped dot's gap
   * is closed in place.
   */
  constructor(sink: (content: Buffer) => void) {
    this.#sink = sink;
  }

  feed(chunk: Buffer, start: number): DataResult {
    // [start, out) is content already unstuffed; [run, i) is content still where it arrived (out <= run).
    let out = start;
    let run = start;
    let state = this.#state;
    for (let i = start; i < chunk.length; i++) {
      const b = chunk[i]!;
      switch (state) {
        case State.LineStart:
          if (b === DOT) {
            if (out !== run) copyRun(chunk, run, i, chunk, out);
            out += i - run;
            run = i + 1;
            state = State.Dot;
          } else if (b === CR) {
            state = State.Cr;
          } else if (b === LF) {
            return this.#bare();
          } else {
            state = State.Middle;
          }
          break;
        case State.Middle: {
          // A short line ends within SHORT_RUN octets: found here, without a native call per line.
          const stop = Math.min(chunk.length, i + SHORT_RUN);
          let j = i;
          while (j < stop && chunk[j] !== CR && chunk[j] !== LF) j++;
          if (j < stop) {
            if (chunk[j] === LF) return this.#bare();
            i = j;
            state = State.Cr;
            break;
          }
          // A long line: jump to the next CR; an LF before it is bare.
          const cr = chunk.indexOf(CR, j);
          const lf = chunk.indexOf(LF, j);
          if (lf !== -1 && (cr === -1 || lf < cr)) return this.#bare();
          if (cr === -1) {
            i = chunk.length - 1;
          } else {
            i = cr;
            state = State.Cr;
          }
          break;
        }
        case State.Cr:
          if (b !== LF) return this.#bare();
          state = State.LineStart;
          break;
        case State.Dot:
          if (b === CR) state = State.DotCr;
          else if (b === LF) return this.#bare();
          else state = State.Middle;
          // Re-examine b as the first content byte of the line (it may be another dot or a CR).
          if (state === State.Middle) i--;
          break;
        case State.DotCr:
          if (b !== LF) return this.#bare();
          // End of data: the content ends with the CRLF before the dot, already moved into place at the dot.
          this.#state = State.LineStart;
          if (out > start) this.#sink(chunk.subarray(start, out));
          return { kind: "end", next: i + 1 };
      }
    }
    // After a dropped dot (or a dot and CR) nothing of the line is content yet: the CR is either the end or an error.
    if (state !== State.Dot && state !== State.DotCr && chunk.length > run) {
      if (out !== run) copyRun(chunk, run, chunk.length, chunk, out);
      out += chunk.length - run;
    }
    if (out > start) this.#sink(chunk.subarray(start, out));
    this.#state = state;
    return { kind: "more" };
  }

  #bare(): DataResult {
    this.#state = State.LineStart;
    return { kind: "bare-newline" };
  }
}
