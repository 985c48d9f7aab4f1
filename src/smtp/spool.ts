/**
 * Where a message waits between the agent's final dot and the upstream's reply: one reused block of SPOOL_BLOCK
 * octets per session, and, once a message outgrows it, one file per session in the spool directory (docs/smtp.md:
 * `mailgator-spool/` beside the audit database), mode 0600, unlinked as soon as it is opened so that no message
 * survives the process, even a crash. Written in blocks, read back in blocks: a message is never whole in memory
 * beyond that one block. A message that fits in the block never touches the file: the block is its only copy
 * either way, and writing it out to read it straight back in bought nothing (two system calls per message).
 *
 * The file calls are synchronous: a block of at most SPOOL_BLOCK octets goes to the page cache in tens of
 * microseconds, less than the thread-pool round trip of an asynchronous call (measured with
 * scripts/bench/smtp.ts); the event loop is never held longer than one block.
 */

import { randomBytes } from "node:crypto";
import { chmodSync, closeSync, mkdirSync, openSync, readSync, unlinkSync, writeSync } from "node:fs";
import { join } from "node:path";

/** Bytes gathered before a write; also the read block size for the replay. */
export const SPOOL_BLOCK = 256 * 1024;

/** Creates the spool directory (0700) if needed; throws with its path when that fails. */
export function prepareSpoolDir(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    chmodSync(dir, 0o700);
  } catch (e) {
    throw new Error(`smtp: cannot create the spool directory ${dir}: ${(e as Error).message}`);
  }
}

export class Spool {
  readonly #dir: string;
  #fd: number | null = null;
  /** Content not yet written: one reusable block, so a message costs no allocation per chunk. */
  #stage: Buffer | null = null;
  #staged = 0;
  #written = 0;
  /** The reusable block that `blocks()` reads into. */
  #readBuffer: Buffer | null = null;

  constructor(dir: string) {
    this.#dir = dir;
  }

  /** Octets of the current message so far. */
  get length(): number {
    return this.#written + this.#staged;
  }

  /** Starts a new message (the file is reused across the session's transactions). */
  begin(): void {
    this.#staged = 0;
    this.#written = 0;
  }

  /** Copies content into the stage, writing each full block to the file. */
  append(content: Uint8Array): void {
    const stage = (this.#stage ??= Buffer.allocUnsafe(SPOOL_BLOCK));
    let from = 0;
    while (from < content.length) {
      const n = Math.min(content.length - from, SPOOL_BLOCK - this.#staged);
      stage.set(content.subarray(from, from + n), this.#staged);
      this.#staged += n;
      from += n;
      if (this.#staged === SPOOL_BLOCK) this.#write();
    }
  }

  /** True once the current message has outgrown the block and is (partly) in the file. */
  get spilled(): boolean {
    return this.#written > 0;
  }

  /**
   * Writes what is staged, once the message is in the file: called at the end of the content so that the file
   * holds all of it. A message still within its first block stays there (see the module doc).
   */
  flush(): void {
    if (this.#staged === 0 || this.#written === 0) return;
    this.#write();
  }

  #write(): void {
    const fd = this.#open();
    let offset = 0;
    while (offset < this.#staged) {
      const n = writeSync(fd, this.#stage!, offset, this.#staged - offset, this.#written);
      offset += n;
      this.#written += n;
    }
    this.#staged = 0;
  }

  /**
   * Reads the message back (after `flush()`) in blocks that are views of one reused buffer: each block must be
   * consumed (written out and flushed) before the next is asked for.
   */
  *blocks(): Generator<Buffer> {
    if (this.#written === 0) {
      if (this.#staged > 0) yield this.#stage!.subarray(0, this.#staged);
      return;
    }
    const fd = this.#open();
    const buffer = (this.#readBuffer ??= Buffer.allocUnsafe(SPOOL_BLOCK));
    let position = 0;
    while (position < this.#written) {
      const n = readSync(fd, buffer, 0, Math.min(SPOOL_BLOCK, this.#written - position), position);
      if (n === 0) throw new Error("smtp: the spool file is shorter than what was written");
      position += n;
      yield buffer.subarray(0, n);
    }
  }

  #open(): number {
    if (this.#fd === null) {
      const path = join(this.#dir, `msg-${randomBytes(12).toString("hex")}`);
      const fd = openSync(path, "wx+", 0o600);
      unlinkSync(path);
      this.#fd = fd;
    }
    return this.#fd;
  }

  close(): void {
    this.#stage = null;
    this.#readBuffer = null;
    this.#staged = 0;
    const fd = this.#fd;
    this.#fd = null;
    if (fd !== null) closeSync(fd);
  }
}
