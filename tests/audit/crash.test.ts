/**
 * Durability across processes: a writer killed with SIGKILL loses none of the rows whose durable() resolved, and a
 * read-only reader (the CLI) sees committed rows while another process writes.
 */
import { afterEach, beforeEach, expect, test } from "bun:test";
import { AuditLog } from "../../src/audit/index.ts";
import { scratchDir } from "./helpers.ts";

const WRITER = `${import.meta.dir}/durable-writer.ts`;

let scratch: ReturnType<typeof scratchDir>;
beforeEach(() => {
  scratch = scratchDir();
});
afterEach(() => scratch.remove());

/** Reads "id seq" lines from the writer as they arrive. */
function ackReader(stdout: ReadableStream<Uint8Array>): { acked: Map<number, number>; done: Promise<void> } {
  const acked = new Map<number, number>();
  const done = (async () => {
    const decoder = new TextDecoder();
    let pending = "";
    for await (const chunk of stdout) {
      pending += decoder.decode(chunk, { stream: true });
      const lines = pending.split("\n");
      pending = lines.pop() ?? "";
      for (const line of lines) {
        const [id, seq] = line.split(" ").map(Number);
        if (id !== undefined && seq !== undefined) acked.set(id, seq);
      }
    }
  })();
  return { acked, done };
}

async function until(condition: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await Bun.sleep(5);
  }
}

test("SIGKILL mid-stream loses none of the rows acknowledged as durable", async () => {
  for (const round of [1, 2, 3]) {
    const path = scratch.file(`killed-${round}.db`);
    const child = Bun.spawn([process.execPath, WRITER, path], { stdout: "pipe", stderr: "inherit" });
    const { acked, done } = ackReader(child.stdout);
    await until(() => acked.size >= 200 * round, 20_000);
    child.kill("SIGKILL");
    await child.exited;
    await done;
    expect(child.signalCode).toBe("SIGKILL");

    // The writer died with its WAL un-checkpointed; opening recovers it.
    const log = AuditLog.open(path, { readonly: true });
    const rows = new Map(log.query().map((r) => [r.id, r]));
    for (const [id, seq] of acked) {
      const row = rows.get(id);
      expect(row?.target).toBe(`durable-${seq}`);
      expect(row?.protocol).toBe("smtp");
    }
    await log.close();
  }
}, 60_000);

test("a read-only reader in this process sees committed rows while another process writes", async () => {
  const path = scratch.file("shared.db");
  const total = 1500;
  const child = Bun.spawn([process.execPath, WRITER, path, String(total)], { stdout: "pipe", stderr: "inherit" });
  const { acked, done } = ackReader(child.stdout);
  await until(() => acked.size > 0, 20_000);

  const reader = AuditLog.open(path, { readonly: true });
  let reads = 0;
  let lastSeen = 0;
  while (acked.size < total) {
    // Every id acknowledged before this query started must be visible to it.
    const ackedBefore = Math.max(...acked.keys());
    const newest = reader.query({ limit: 1 })[0]?.id ?? 0;
    expect(newest).toBeGreaterThanOrEqual(ackedBefore);
    expect(newest).toBeGreaterThanOrEqual(lastSeen);
    lastSeen = newest;
    reads++;
    await Bun.sleep(1);
  }
  expect(await child.exited).toBe(0);
  await done;
  expect(reads).toBeGreaterThan(10);
  // durable rows plus the record() rows written alongside them
  expect(reader.query({ protocol: "smtp" })).toHaveLength(total);
  expect(reader.query()).toHaveLength(2 * total);
  await reader.close();
}, 60_000);
