/**
 * CRLF line framing on bytes, for line-based protocols (SMTP commands and replies, IMAP outside literals).
 *
 * A line ends only at CRLF. A bare LF, or a CR not followed by LF, is reported instead of being taken as an end
 * of line: accepting either is how SMTP smuggling works (CVE-2023-51764). Lines are assembled without copying
 * when they lie within one chunk; a line spanning chunks is concatenated once. A line longer than the limit is
 * never held: its bytes are dropped up to the next LF and the caller gets `too-long`.
 */

const CR = 13;
const LF = 10;

export type LineEvent =
  /** A complete line, CRLF excluded; a view of the chunk when possible. */
  | { readonly kind: "line"; readonly line: Buffer }
  /** The line exceeded the limit; it was discarded through its LF. */
  | { readonly kind: "too-long" }
  /** A bare LF or a bare CR was found in the line. */
  | { readonly kind: "bare-newline" };

export class LineFramer {
  readonly maxLine: number;
  #parts: Buffer[] = [];
  #length = 0;
  #discarding = false;
  /** True when the held bytes end with CR (the LF may come in the next chunk). */
  #pendingCr = false;

  /** `maxLine` counts the octets before CRLF. */
  constructor(maxLine: number) {
    this.maxLine = maxLine;
  }

  /** Bytes held for an incomplete line. */
  get buffered(): number {
    return this.#length;
  }

  /** Forgets any partial line (after STARTTLS, or a reset of the stream). */
  clear(): void {
    this.#parts = [];
    this.#length = 0;
    this.#discarding = false;
    this.#pendingCr = false;
  }

  /**
   * Scans `chunk` from `start`. Returns the event and the offset just past what was consumed, or null with the
   * whole rest of the chunk held (the line is not complete yet).
   */
  next(chunk: Buffer, start: number): { event: LineEvent; end: number } | null {
    let from = start;
    if (this.#pendingCr && from < chunk.length) {
      // The previous chunk ended in CR.
      this.#pendingCr = false;
      if (chunk[from] === LF) return { event: this.#finishSpanning(null, 0, -1), end: from + 1 };
      return { event: this.#fail("bare-newline"), end: from };
    }
    const lf = chunk.indexOf(LF, from);
    const stop = lf === -1 ? chunk.length : lf;
    // A CR anywhere before the LF other than right before it is a bare CR.
    const cr = chunk.indexOf(CR, from);
    if (cr !== -1 && cr < stop - 1)
      return { event: this.#fail("bare-newline"), end: lf === -1 ? chunk.length : lf + 1 };
    if (lf === -1) {
      if (cr === chunk.length - 1) {
        this.#pendingCr = true;
        this.#hold(chunk, from, cr);
      } else {
        this.#hold(chunk, from, chunk.length);
      }
      return null;
    }
    if (lf === from || chunk[lf - 1] !== CR) {
      // LF without CR before it (or a chunk starting with LF after a chunk that did not end in CR).
      return { event: this.#fail("bare-newline"), end: lf + 1 };
    }
    const lineEnd = lf - 1;
    if (this.#length === 0 && !this.#discarding) {
      if (lineEnd - from > this.maxLine) return { event: { kind: "too-long" }, end: lf + 1 };
      return { event: { kind: "line", line: chunk.subarray(from, lineEnd) }, end: lf + 1 };
    }
    from = Math.max(from, 0);
    return { event: this.#finishSpanning(chunk, from, lineEnd), end: lf + 1 };
  }

  #hold(chunk: Buffer, from: number, to: number): void {
    if (this.#discarding) return;
    if (this.#length + (to - from) > this.maxLine) {
      this.#discarding = true;
      this.#parts = [];
      this.#length = 0;
      return;
    }
    if (to > from) {
      // Copy: the chunk may be reused by the caller once we return.
      this.#parts.push(Buffer.from(chunk.subarray(from, to)));
      this.#length += to - from;
    }
  }

  #finishSpanning(chunk: Buffer | null, from: number, to: number): LineEvent {
    if (this.#discarding) {
      this.clear();
      return { kind: "too-long" };
    }
    if (chunk !== null && to > from) {
      if (this.#length + (to - from) > this.maxLine) {
        this.clear();
        return { kind: "too-long" };
      }
      this.#parts.push(chunk.subarray(from, to));
    }
    const line = this.#parts.length === 1 ? this.#parts[0]! : Buffer.concat(this.#parts);
    this.#parts = [];
    this.#length = 0;
    return { kind: "line", line };
  }

  #fail(kind: "bare-newline"): LineEvent {
    this.clear();
    return { kind };
  }
}
