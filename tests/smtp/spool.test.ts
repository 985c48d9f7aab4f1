/**
 * The spool (src/smtp/spool.ts): a message within one block stays in the session's block and never touches the
 * file; a larger one goes to the file block by block and is read back block by block, identical.
 */
import { afterEach, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SPOOL_BLOCK, Spool } from "../../src/smtp/spool.ts";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function content(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

/** Appends `data` in uneven pieces, as socket chunks come, then ends the content. */
function spoolOf(spool: Spool, data: Buffer): void {
  spool.begin();
  for (let at = 0, step = 1; at < data.length; at += step, step = (step * 7 + 13) % 70_000 || 1) {
    spool.append(data.subarray(at, Math.min(data.length, at + step)));
  }
  spool.flush();
}

function readBack(spool: Spool): { data: Buffer; blocks: number; largest: number } {
  const parts: Buffer[] = [];
  let largest = 0;
  for (const block of spool.blocks()) {
    parts.push(Buffer.from(block)); // each block is a view of a reused buffer: copy before asking for the next
    largest = Math.max(largest, block.length);
  }
  return { data: Buffer.concat(parts), blocks: parts.length, largest };
}

test("a message within one block never opens the file: it works with a spool directory that does not exist", () => {
  const spool = new Spool(join(tmpdir(), "mailgator-no-such-spool-dir", "x"));
  for (const n of [1, 10_240, SPOOL_BLOCK - 1]) {
    const data = content(n, n);
    spoolOf(spool, data);
    expect(spool.spilled).toBe(false);
    expect(spool.length).toBe(n);
    const back = readBack(spool);
    expect(back.blocks).toBe(1);
    expect(back.data.equals(data)).toBe(true);
  }
  // One block exactly is the first message that needs the file, which cannot be created here.
  expect(() => spoolOf(spool, content(SPOOL_BLOCK, 1))).toThrow();
  spool.close();
});

test("a larger message goes through the file in blocks and comes back intact; the next small one stays in RAM", () => {
  const dir = mkdtempSync(join(tmpdir(), "mailgator-spool-"));
  dirs.push(dir);
  const spool = new Spool(dir);
  for (const n of [SPOOL_BLOCK, SPOOL_BLOCK + 1, Math.floor(SPOOL_BLOCK * 3.5)]) {
    const data = content(n, 7);
    spoolOf(spool, data);
    expect(spool.spilled).toBe(true);
    expect(spool.length).toBe(n);
    const back = readBack(spool);
    expect(back.data.equals(data)).toBe(true);
    expect(back.blocks).toBe(Math.ceil(n / SPOOL_BLOCK));
    expect(back.largest).toBeLessThanOrEqual(SPOOL_BLOCK);
  }
  const small = content(500, 3);
  spoolOf(spool, small);
  expect(spool.spilled).toBe(false);
  expect(readBack(spool).data.equals(small)).toBe(true);
  spool.close();
});
