/**
 * COMPRESS=DEFLATE towards the agent (RFC 4978; docs/protocol.md §2 "COMPRESS"): raw deflate (RFC 1951) in both
 * directions once the tagged OK of `COMPRESS DEFLATE` is out, independent of the upstream connection.
 *
 * Output: every batch the session writes is deflated and ended with a sync flush (RFC 4978 §4), so the agent can
 * read each response as soon as it is sent. Input: what the agent sends is inflated by a zlib stream and handed to
 * the framer, which enforces every limit on the inflated bytes exactly as on plain ones (line, literal and command
 * sizes, read-ahead): the framer sees no difference. A deflate bomb cannot grow memory: inflating stops while the
 * framer holds more than READ_AHEAD_LIMIT unread octets (`pause`), and compressed input stops being read while the
 * inflater has a backlog, so what is held is bounded by the stream's buffers, not by the compression ratio.
 */

import { constants, createDeflateRaw, createInflateRaw, type DeflateRaw, type InflateRaw } from "node:zlib";

/**
 * The proxy's own deflate state: a 4 KiB window and memLevel 5 take about 32 KiB per session (zlib's
 * `2^(windowBits+2) + 2^(memLevel+9)`) instead of 256 KiB at the defaults, which matters with many idle sessions; any
 * inflater decodes a smaller window. The inflater must take the agent's window, up to 32 KiB (RFC 1951), so it
 * keeps zlib's defaults (about 40 KiB).
 */
export const DEFLATE_OPTIONS = { windowBits: 12, memLevel: 5 } as const;

export class Deflate {
  readonly #inflate: InflateRaw = createInflateRaw();
  readonly #deflate: DeflateRaw = createDeflateRaw(DEFLATE_OPTIONS);
  /** The agent's stream was not valid deflate data: input stops; the output (a BYE) still goes out. */
  #inputFailed = false;
  #outputFailed = false;
  #ended = false;

  /**
   * `onInput` gets inflated bytes, `onOutput` deflated ones for the socket; `onError` is called once, for an input
   * stream that is not valid deflate data (the session then ends); `onInputEnd` once the agent's stream has ended
   * (its final block, RFC 1951 §3.2.3 BFINAL), after the last of its bytes reached `onInput`: RFC 4978 has no way to
   * stop compressing, so nothing the agent sends after it can be read. The runtime's inflater reports the end when
   * input follows the final block, not when the block itself is read.
   */
  constructor(
    onInput: (chunk: Buffer) => void,
    onOutput: (chunk: Buffer) => void,
    onError: (e: Error) => void,
    onInputEnd: () => void,
  ) {
    this.#inflate.on("data", (c: Buffer) => {
      if (!this.#inputFailed) onInput(c);
    });
    this.#inflate.on("end", () => {
      if (!this.#inputFailed && !this.#ended) onInputEnd();
    });
    this.#deflate.on("data", onOutput);
    this.#inflate.on("error", (e: Error) => {
      if (this.#inputFailed) return;
      this.#inputFailed = true;
      onError(e);
    });
    this.#deflate.on("error", (e: Error) => {
      this.#outputFailed = true;
      onError(e);
    });
  }

  /** Compressed bytes from the agent; false when the inflater has a backlog (stop reading until `drained`). */
  input(chunk: Uint8Array): boolean {
    if (this.#inputFailed || this.#ended) return true;
    return this.#inflate.write(chunk);
  }

  /** Resolves when the inflater's backlog is gone. */
  drained(): Promise<void> {
    if (!this.#inflate.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve) => this.#inflate.once("drain", () => resolve()));
  }

  /** Stops inflating (the framer is full); `resume` goes on. */
  pause(): void {
    this.#inflate.pause();
  }

  resume(): void {
    this.#inflate.resume();
  }

  /**
   * Deflates one batch and flushes it (Z_SYNC_FLUSH). The parts are read as they are, not copied: `consumed` is
   * called once the deflater has read them all, and only then may their buffer be reused (never, if the stream is
   * destroyed first: the buffer is then simply not reused). Output
   * reaches `onOutput` in order, asynchronously. False when the deflater has a backlog: the caller stops producing
   * (pauses upstream) until `outputDrained`, else a fast upstream fills memory faster than deflate empties it.
   */
  output(parts: readonly Uint8Array[], consumed: () => void): boolean {
    if (this.#outputFailed || this.#ended) {
      consumed();
      return true;
    }
    for (const p of parts) this.#deflate.write(p);
    this.#deflate.flush(constants.Z_SYNC_FLUSH, consumed);
    return !this.#deflate.writableNeedDrain;
  }

  /** Resolves when the deflater's backlog is gone (or it ended). */
  outputDrained(): Promise<void> {
    if (!this.#deflate.writableNeedDrain || this.#ended || this.#outputFailed) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.#deflate.off("drain", done);
        this.#deflate.off("close", done);
        resolve();
      };
      this.#deflate.on("drain", done);
      this.#deflate.on("close", done);
    });
  }

  /** Calls `then` once everything given to `output` has reached `onOutput`; nothing is accepted after. */
  end(then: () => void): void {
    if (this.#ended) return;
    this.#ended = true;
    if (this.#outputFailed) {
      then();
    } else {
      this.#deflate.flush(constants.Z_SYNC_FLUSH, () => {
        this.#deflate.destroy();
        then();
      });
    }
    this.#inflate.destroy();
  }
}
