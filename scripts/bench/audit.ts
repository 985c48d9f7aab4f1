/**
 * Audit log throughput: rows per second through the batched writer (record() + the timer), the longest the event
 * loop is held by one batch commit, and durable() one at a time and in concurrent groups, for sync "full" and
 * "normal". Run: bun scripts/bench/audit.ts [rows]. Figures are kept in docs/audit.md.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type AuditEvent, AuditLog, type AuditOpenOptions } from "../../src/audit/index.ts";
import { benchOptions } from "./args.ts";

export interface AuditBenchResult {
  name: string;
  rows: number;
  seconds: number;
  rowsPerSecond: number;
  note?: string;
}

function event(i: number): AuditEvent {
  return {
    session: `s-${i % 64}`,
    agent: i % 3 === 0 ? "triage-bot" : "sender-bot",
    clientAddr: "127.0.0.1:50123",
    protocol: i % 2 === 0 ? "imap" : "smtp",
    command: i % 2 === 0 ? "UID FETCH" : "RCPT TO",
    operation: i % 2 === 0 ? "mail:read" : "mail:send",
    folder: i % 2 === 0 ? "INBOX" : null,
    target: i % 2 === 0 ? "12 messages" : "someone@example.com",
    decision: i % 5 === 0 ? "deny" : "allow",
    rule: `rule-${i % 8}`,
    ruleIndex: i % 8,
    reason: "matched rule allows this operation in this folder",
    configRevision: "sha256:4f2a9c",
    count: 12,
    hiddenCount: 3,
    detail: i % 10 === 0 ? { size: 18_234, code: "250" } : null,
  };
}

function withLog<T>(opts: AuditOpenOptions, run: (log: AuditLog) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), "mailgator-bench-audit-"));
  const log = AuditLog.open(join(dir, "audit.db"), opts);
  return run(log).finally(async () => {
    await log.close();
    rmSync(dir, { recursive: true, force: true });
  });
}

/** record() in bursts of 100 rows with the event loop free in between, as a busy proxy would call it. */
function batched(rows: number, sync: "full" | "normal"): Promise<AuditBenchResult> {
  return withLog({ sync }, async (log) => {
    const start = performance.now();
    for (let i = 0; i < rows; i++) {
      log.record(event(i));
      if (i % 100 === 99) await new Promise<void>((resolve) => setImmediate(resolve));
    }
    await log.flush();
    const seconds = (performance.now() - start) / 1000;
    return { name: `batched record(), sync=${sync}`, rows, seconds, rowsPerSecond: rows / seconds };
  });
}

/** How long one commit of a full batch (1000 rows) holds the event loop. */
function batchPause(sync: "full" | "normal"): Promise<AuditBenchResult> {
  return withLog({ sync, batchMs: 60_000 }, async (log) => {
    const pauses: number[] = [];
    for (let round = 0; round < 50; round++) {
      for (let i = 0; i < 999; i++) log.record(event(i));
      const start = performance.now();
      await log.flush();
      pauses.push(performance.now() - start);
    }
    pauses.sort((a, b) => a - b);
    const median = pauses[pauses.length >> 1] ?? 0;
    const max = pauses[pauses.length - 1] ?? 0;
    return {
      name: `one 999-row commit, sync=${sync}`,
      rows: 999 * 50,
      seconds: pauses.reduce((a, b) => a + b, 0) / 1000,
      rowsPerSecond: (999 * 50) / (pauses.reduce((a, b) => a + b, 0) / 1000),
      note: `event loop held ${median.toFixed(2)} ms median, ${max.toFixed(2)} ms max`,
    };
  });
}

/** durable() with `concurrency` calls in flight, each awaited before its caller sends the next. */
function durable(sync: "full" | "normal", concurrency: number, seconds: number): Promise<AuditBenchResult> {
  return withLog({ sync }, async (log) => {
    const start = performance.now();
    const deadline = start + seconds * 1000;
    let rows = 0;
    const latencies: number[] = [];
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (performance.now() < deadline) {
          const t = performance.now();
          await log.durable(event(rows++));
          latencies.push(performance.now() - t);
        }
      }),
    );
    const elapsed = (performance.now() - start) / 1000;
    latencies.sort((a, b) => a - b);
    const p50 = latencies[latencies.length >> 1] ?? 0;
    const p99 = latencies[Math.floor(latencies.length * 0.99)] ?? 0;
    return {
      name: `durable() x${concurrency} in flight, sync=${sync}`,
      rows,
      seconds: elapsed,
      rowsPerSecond: rows / elapsed,
      note: `latency p50 ${p50.toFixed(2)} ms, p99 ${p99.toFixed(2)} ms`,
    };
  });
}

export async function benchAudit(rows = 500_000): Promise<AuditBenchResult[]> {
  const results: AuditBenchResult[] = [];
  for (const sync of ["full", "normal"] as const) {
    results.push(await batched(rows, sync));
    results.push(await batchPause(sync));
    results.push(await durable(sync, 1, 2));
    results.push(await durable(sync, 16, 2));
  }
  return results;
}

if (import.meta.main) {
  const rows = benchOptions(process.argv.slice(2), "bun scripts/bench/audit.ts [rows]", {
    positional: "rows",
  }).positional(500_000);
  for (const r of await benchAudit(rows)) {
    const figure = Math.round(r.rowsPerSecond).toLocaleString("en-US").padStart(9);
    console.log(`${r.name.padEnd(40)} ${figure} rows/s${r.note ? `  (${r.note})` : ""}`);
  }
}
