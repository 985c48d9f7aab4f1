/**
 * What an agent's large APPEND costs the proxy's memory, against Dovecot (docs/reliability.md "Command memory"): a
 * literal counted against COMMAND_MEMORY_BUDGET has its memory reserved before its first octet is read, so it is read
 * into one buffer of its announced size, not into buffers grown by doubling as its octets arrive (which held up to
 * about twice the literal at the last step, and left the smaller buffers behind for the garbage collector).
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { MAX_APPEND_MESSAGE } from "../../src/imap/wire/limits.ts";
import { createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

const MiB = 1024 * 1024;
/** Under MAX_APPEND_MESSAGE, well past the free octets of a command (COMMAND_MEMORY_FREE). */
const SIZE = 48 * MiB;

let mailbox: TestMailbox;
let proxy: TestProxy;

beforeAll(async () => {
  mailbox = await createMailbox();
  proxy = await startTestProxy({});
});

afterAll(async () => {
  await proxy.close();
});

/** This process's resident memory in MiB (`VmRSS`) and its peak (`VmHWM`). */
function rss(): { now: number; peak: number } {
  const status = readFileSync("/proc/self/status", "utf8");
  const mib = (field: string): number => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)![1]) / 1024;
  return { now: mib("VmRSS"), peak: mib("VmHWM") };
}

test("a 48 MiB APPEND read in pieces: the proxy's peak memory grows by about the message, not twice it", async () => {
  expect(SIZE).toBeLessThan(MAX_APPEND_MESSAGE);
  const piece = Buffer.alloc(256 * 1024, "m");
  const agent = await RawImap.login(proxy.port, mailbox);
  try {
    Bun.gc(true);
    await Bun.sleep(100);
    writeFileSync("/proc/self/clear_refs", "5");
    const before = rss();
    agent.write(`A APPEND INBOX {${SIZE}}\r\n`);
    await agent.readUntil((s) => s.includes("+ "));
    agent.take();
    for (let sent = 0; sent < SIZE; sent += piece.length) {
      const n = Math.min(piece.length, SIZE - sent);
      if (!agent.socket.write(n === piece.length ? piece : piece.subarray(0, n)))
        await new Promise<void>((resolve) => agent.socket.once("drain", () => resolve()));
    }
    agent.write("\r\n");
    const reply = await agent.readUntil((s) => /A (OK|NO|BAD)/.test(s), 60_000);
    expect(statusOf(reply, "A")).toStartWith("A OK");
    // Before, the peak grew by 119 to 126 MiB (the buffers grown by doubling to 32 and then 48 MiB, both alive at
    // the last copy, and the smaller ones left behind); now by 84 to 88: the message in one buffer, and the read
    // chunks it was copied from, which the garbage collector takes later.
    const growth = rss().peak - before.now;
    expect(growth).toBeGreaterThan(SIZE / MiB - 8);
    expect(growth).toBeLessThan((2 * SIZE) / MiB + 8);
    expect(statusOf(await agent.command("S", "SELECT INBOX"), "S")).toStartWith("S OK");
    const stored = await agent.command("F", "UID FETCH * (RFC822.SIZE)");
    expect(stored).toContain(`RFC822.SIZE ${SIZE}`);
  } finally {
    agent.close();
  }
});
