/**
 * Where a message waits between the agent's final dot and the upstream's reply: one file per session, in the
 * spool directory (docs/smtp.md: `mailgator-spool/` beside the audit database), mode 0600, unlinked as soon as
 * it is opened so that no message survives the process, even a crash. Written in blocks, read back in blocks:
 * a message is never whole in memory.
 */

import { mkdirSync, chmodSync } from "node:fs";
import { open, unlink, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { randomBytes } from "node:crypto";

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
  #file: FileHandle | null = null;
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  #written = 0;

  constructor(dir: string) {
    this.#dir = dir;
  }

  /** Octets of the current message so far. */
  get length(): number {
    return this.#written + this.#pendingBytes;
  }

  /** Starts a new message (the file is reused across the session's transactions). */
  begin(): void {
    this.#pending = [];
    this.#pendingBytes = 0;
    this.#written = 0;
  }

  /** Takes a view of content; it must not be modified afterwards (socket chunks are not reused). */
  append(content: Buffer): void {
    this.#pending.push(content);
    this.#pendingBytes += content.length;
  }

  /** True when enough is gathered that the caller should `flush()` before reading more from the agent. */
  get full(): boolean {
    return this.#pendingBytes >= SPOOL_BLOCK;
  }

  async flush(): Promise<void> {
    if (this.#pendingBytes === 0) return;
    const block = this.#pending.length === 1 ? this.#pending[0]! : Buffer.concat(this.#pending, this.#pendingBytes);
    this.#pending = [];
    this.#pendingBytes = 0;
    const file = await this.#open();
    let offset = 0;
    while (offset < block.length) {
      const { bytesWritten } = await file.write(block, offset, block.length - offset, this.#written);
      offset += bytesWritten;
      this.#written += bytesWritten;
    }
  }

  /** Reads the message back in blocks (after `flush()`). */
  async *blocks(): AsyncGenerator<Buffer> {
    if (this.#written === 0) return;
    const file = await this.#open();
    let position = 0;
    while (position < this.#written) {
      const buffer = Buffer.allocUnsafe(Math.min(SPOOL_BLOCK, this.#written - position));
      const { bytesRead } = await file.read(buffer, 0, buffer.length, position);
      if (bytesRead === 0) throw new Error("smtp: the spool file is shorter than what was written");
      position += bytesRead;
      yield buffer.subarray(0, bytesRead);
    }
  }

  async #open(): Promise<FileHandle> {
    if (this.#file === null) {
      const path = join(this.#dir, `msg-${randomBytes(12).toString("hex")}`);
      const file = await open(path, "wx+", 0o600);
      await unlink(path);
      this.#file = file;
    }
    return this.#file;
  }

  async close(): Promise<void> {
    this.#pending = [];
    this.#pendingBytes = 0;
    const file = this.#file;
    this.#file = null;
    await file?.close();
  }
}
