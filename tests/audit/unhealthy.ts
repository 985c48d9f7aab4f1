/**
 * Real audit logs that cannot be written (docs/audit.md "Failure"), for the tests of what is refused then: one that
 * is full (a file limit, `maxBytes`, reached the way a full disk is), and one whose fdatasync fails while the test
 * says so (the log's own fault hook, `syncFile`). Both recover as the docs say: space freed, a retry that succeeds.
 */

import { expect } from "bun:test";
import { type AuditEvent, AuditLog } from "../../src/audit/index.ts";
import { sampleEvent } from "./helpers.ts";

const DAY_MS = 24 * 60 * 60 * 1000;

/** A log of at most 64 KiB filled with rows 10 days old until a commit failed: unhealthy, one row kept. */
export async function fullAuditLog(path: string): Promise<AuditLog> {
  const log = AuditLog.open(path, { maxBytes: 64 * 1024, sync: "normal", log: () => {} });
  await fillAgain(log);
  return log;
}

/**
 * Fills the log with rows 10 days old until a commit fails (again, after freeSpace), after a row of now: a prune
 * counts back from the newest row's time at the latest (docs/audit.md "Retention").
 */
export async function fillAgain(log: AuditLog): Promise<void> {
  const old = Date.now() - 10 * DAY_MS;
  try {
    await log.durable(sampleEvent({ target: "now" }));
    for (;;) await log.durable(sampleEvent({ time: old, reason: "r".repeat(200) }));
  } catch {
    // Full again.
  }
  expect(log.healthy).toBe(false);
}

/** Frees the full log's space (its old rows) and commits what it kept: healthy again. */
export async function freeSpace(log: AuditLog): Promise<void> {
  log.prune(1);
  await log.flush();
  expect(log.healthy).toBe(true);
}

/** A log whose fdatasync fails while `failing.on`: a commit then rejects its durable() and the log turns unhealthy. */
export function syncFailingLog(path: string): { log: AuditLog; failing: { on: boolean } } {
  const failing = { on: false };
  const log = AuditLog.open(path, {
    log: () => {},
    syncFile: async () => {
      if (failing.on) throw Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO" });
    },
  });
  return { log, failing };
}

/** Waits for the log's retry (every second) to make it healthy again. */
export async function healthyAgain(log: AuditLog): Promise<void> {
  for (let i = 0; i < 50 && !log.healthy; i++) await Bun.sleep(100);
  expect(log.healthy).toBe(true);
}

/** The rows about one target, oldest first, as [command, decision]. */
export async function rowsAbout(log: AuditLog, target: string): Promise<[string, AuditEvent["decision"]][]> {
  await log.flush();
  return log
    .query({ order: "asc" })
    .filter((r) => r.target === target)
    .map((r) => [r.command, r.decision]);
}
