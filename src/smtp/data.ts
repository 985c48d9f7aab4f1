/**
 * The DATA phase on bytes (RFC 5321 §4.1.1.4, §4.5.2): finds the end of the message and removes dot-stuffing,
 * without turning the stream into strings.
 *
 * Only CRLF "." CRLF ends a message. A bare LF or a bare CR anywhere in the message is refused outright
 * (§2.3.8): those are the sequences SMTP smuggling uses (`<LF>.<LF>`, `<CR>.<CR>`, CVE-2023-51764/5/6), and
 * no reading of them is safe when the upstream might read them differently.
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

  /** `sink` receives the message content, unstuffed, as views of the input chunks (no copy). */
  constructor(sink: (content: Buffer) => void) {
    this.#sink = sink;
  }

  feed(chunk: Buffer, start: number): DataResult {
    let run = start;
    let state = this.#state;
    const sink = this.#sink;
    for (let i = start; i < chunk.length; i++) {
      const b = chunk[i]!;
      switch (state) {
        case State.LineStart:
          if (b === DOT) {
            if (i > run) sink(chunk.subarray(run, i));
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
          // Fast path: jump to the next CR; an LF before it is bare.
          const cr = chunk.indexOf(CR, i);
          const lf = chunk.indexOf(LF, i);
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
          // End of data: the content ends with the CRLF before the dot, already passed to the sink.
          this.#state = State.LineStart;
          return { kind: "end", next: i + 1 };
      }
    }
    // After a dropped dot (or a dot and CR) nothing of the line is content yet: the CR is either the end or an error.
    if (state !== State.Dot && state !== State.DotCr && chunk.length > run) sink(chunk.subarray(run));
    this.#state = state;
    return { kind: "more" };
  }

  #bare(): DataResult {
    this.#state = State.LineStart;
    return { kind: "bare-newline" };
  }
}
