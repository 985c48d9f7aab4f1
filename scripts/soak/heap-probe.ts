/**
 * Loaded into a soak's proxy process with `bun --preload` (scripts/soak/lib.ts, `heapProbe`), never part of
 * Mailgator itself: every HEAP_PROBE_INTERVAL_MS it appends one JSON line to MAILGATOR_SOAK_HEAP_FILE with the
 * process's memory (RSS, JS heap, external buffers) and the object types the JS heap holds most of, so a soak can
 * tell a growing JS heap (a leak in our code) from allocator pages kept after a peak. SIGUSR2 writes a full heap
 * snapshot beside it (`heap-<n>.json`, for a browser's memory tools).
 */

import { heapStats } from "bun:jsc";
import { appendFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";

const HEAP_PROBE_INTERVAL_MS = 5_000;
const TOP_TYPES = 12;

const file = process.env["MAILGATOR_SOAK_HEAP_FILE"];
if (file !== undefined && file !== "") {
  const started = performance.now();
  const probe = (): void => {
    const stats = heapStats();
    const memory = process.memoryUsage();
    const top = Object.entries(stats.objectTypeCounts)
      .sort((a, b) => b[1] - a[1])
      .slice(0, TOP_TYPES);
    appendFileSync(
      file,
      `${JSON.stringify({
        t: Math.round((performance.now() - started) / 1000),
        rssMiB: +(memory.rss / 2 ** 20).toFixed(1),
        heapMiB: +(stats.heapSize / 2 ** 20).toFixed(1),
        extraMiB: +(stats.extraMemorySize / 2 ** 20).toFixed(1),
        externalMiB: +(memory.external / 2 ** 20).toFixed(1),
        arrayBuffersMiB: +(memory.arrayBuffers / 2 ** 20).toFixed(1),
        objects: stats.objectCount,
        protected: stats.protectedObjectCount,
        top: Object.fromEntries(top),
      })}\n`,
    );
  };
  setInterval(probe, HEAP_PROBE_INTERVAL_MS).unref();
  let snapshots = 0;
  process.on("SIGUSR2", () => {
    Bun.gc(true);
    writeFileSync(join(dirname(file), `heap-${++snapshots}.json`), JSON.stringify(Bun.generateHeapSnapshot()));
    probe();
  });
}
