/**
 * The fdatasync after commits (sync "full", docs/audit.md "Writing: batches and durability"): durable() resolves
 * only after an fdatasync of the WAL that began after its commit, commits made meanwhile share the next one, and a
 * failed fdatasync fails closed until a retry succeeds. The fdatasync is replaced through `syncFile` so that the
 * test decides when it returns and whether it fails; one test uses the real one on the real file.
 */

import { expect, test } from "bun:test";
import { statSync } from "node:fs";
import { AuditLog, AuditUnavailableError } from "../../src/audit/index.ts";
import { sampleEvent, scratchDir } from "./helpers.ts";

const scratch = scratchDir();

/** A syncFile whose calls wait until the test settles them. */
function heldSync() {
  const calls: { fd: number; settle: (error?: Error) => void }[] = [];
  const syncFile = (fd: number) =>
    new Promise<void>((resolve, reject) => {
      calls.push({ fd, settle: (error) => (error ? reject(error) : resolve()) });
    });
  return { calls, syncFile };
}

const tick = () => new Promise<void>((r) => setTimeout(r, 5));

test("durable() waits for the fdatasync that follows its commit, not only for the commit", async () => {
  const held = heldSync();
  const path = scratch.file("held.db");
  const log = AuditLog.open(path, { syncFile: held.syncFile });
  let done = false;
  const p = log.durable(sampleEvent({ command: "STORE" })).then((id) => {
    done = true;
    return id;
  });
  await tick();
  // Committed (a reader sees it), but not yet acknowledged: the WAL is not known to be on disk.
  expect(log.count({ command: "STORE" })).toBe(1);
  expect(held.calls.length).toBe(1);
  expect(done).toBe(false);
  // The descriptor synced is the -wal file's.
  expect(held.calls[0]!.fd).toBeGreaterThan(2);
  held.calls[0]!.settle();
  expect(await p).toBeGreaterThan(0);
  expect(done).toBe(true);
  await log.close();
});

test("commits made while an fdatasync runs wait for the next one, and share it", async () => {
  const held = heldSync();
  const log = AuditLog.open(scratch.file("group.db"), { syncFile: held.syncFile });
  const first = log.durable(sampleEvent());
  await tick();
  expect(held.calls.length).toBe(1);
  // 50 rows from as many "sessions", committed while the first fdatasync is still running.
  const settled: number[] = [];
  const later = Array.from({ length: 50 }, (_, i) =>
    log.durable(sampleEvent({ session: `s-${i}` })).then(() => settled.push(i)),
  );
  await tick();
  expect(log.count()).toBe(51);
  expect(held.calls.length).toBe(1); // no second fdatasync while one runs
  held.calls[0]!.settle();
  await first;
  await tick();
  // The first fdatasync began before their commits: it does not acknowledge them.
  expect(settled.length).toBe(0);
  expect(held.calls.length).toBe(2);
  held.calls[1]!.settle();
  await Promise.all(later);
  expect(settled.length).toBe(50);
  expect(held.calls.length).toBe(2);
  await log.close();
});

test("a failed fdatasync rejects the waiting rows and refuses more until a retry succeeds", async () => {
  const held = heldSync();
  const messages: string[] = [];
  const log = AuditLog.open(scratch.file("fail.db"), {
    syncFile: held.syncFile,
    log: (m, level) => messages.push(`${level}: ${m}`),
  });
  const p = log.durable(sampleEvent({ command: "EXPUNGE" }));
  await tick();
  held.calls[0]!.settle(Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO" }));
  const error = await p.catch((e) => e);
  expect(error).toBeInstanceOf(AuditUnavailableError);
  expect(String(error.message)).toContain("cannot sync");
  expect(log.healthy).toBe(false);
  expect(() => log.record(sampleEvent())).toThrow(AuditUnavailableError);
  await expect(log.durable(sampleEvent())).rejects.toBeInstanceOf(AuditUnavailableError);
  expect(messages.some((m) => m.startsWith("error: ") && m.includes("cannot sync"))).toBe(true);
  // The retry (about a second later) syncs again; when it succeeds the log is healthy.
  for (let i = 0; i < 300 && held.calls.length < 2; i++) await tick();
  expect(held.calls.length).toBe(2);
  held.calls[1]!.settle();
  await tick();
  expect(log.healthy).toBe(true);
  expect(messages.some((m) => m.startsWith("info: ") && m.includes("synced to disk again"))).toBe(true);
  const next = log.durable(sampleEvent({ command: "APPEND" }));
  await tick();
  held.calls[2]!.settle();
  expect(await next).toBeGreaterThan(0);
  await log.close();
});

test("a failed fdatasync: a gating row gets a follow-up row saying it was not carried out", async () => {
  const held = heldSync();
  const log = AuditLog.open(scratch.file("follow-up.db"), { syncFile: held.syncFile, log: () => {} });
  const gated = log.durable(sampleEvent({ command: "EXPUNGE", target: "7" })).catch((e) => e);
  const done = log.durable(sampleEvent({ command: "APPROVAL SENT", target: "a1" }), { gate: false }).catch((e) => e);
  await tick();
  held.calls[0]!.settle(Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO" }));
  expect(await gated).toBeInstanceOf(AuditUnavailableError);
  expect(await done).toBeInstanceOf(AuditUnavailableError);
  // Both rows are in the file; the follow-up is committed with the next batch, while fdatasync still fails.
  for (let i = 0; i < 100 && log.query().length < 3; i++) await tick();
  const rows = log.query({ order: "asc" });
  expect(rows.map((r) => [r.command, r.decision, r.target])).toEqual([
    ["EXPUNGE", "allow", "7"],
    ["APPROVAL SENT", "allow", "a1"],
    ["EXPUNGE", "error", "7"],
  ]);
  expect(rows[2]!.reason).toBe(`row ${rows[0]!.id} is in the file but could not be synced to disk; not carried out`);
  expect(rows[2]!.detail).toEqual({ row: rows[0]!.id });
  expect(rows[2]!.session).toBe(rows[0]!.session);
  for (const c of held.calls.slice(1)) c.settle();
  for (let i = 0; i < 300 && !log.healthy; i++) {
    for (const c of held.calls.slice(1)) c.settle();
    await tick();
  }
  expect(log.healthy).toBe(true);
  await log.close();
});

test("a failed fdatasync while the log closes: the follow-up row is committed before the file is closed", async () => {
  const held = heldSync();
  const path = scratch.file("closing.db");
  const log = AuditLog.open(path, { syncFile: held.syncFile, log: () => {} });
  const gated = log.durable(sampleEvent({ command: "EXPUNGE", target: "9" })).catch((e) => e);
  await tick();
  const closed = log.close().then(
    () => null,
    (e) => e,
  );
  held.calls[0]!.settle(Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO" }));
  expect(await gated).toBeInstanceOf(AuditUnavailableError);
  // The follow-up's commit asks for another fdatasync. It succeeds: every row is in the file and synced, so the
  // close succeeds too (it would reject, saying why, if that one failed as well).
  for (let i = 0; i < 100 && held.calls.length < 2; i++) await tick();
  held.calls[1]!.settle();
  expect(await closed).toBeNull();
  const reader = AuditLog.open(path, { readonly: true });
  const rows = reader.query({ order: "asc" });
  expect(rows.map((r) => [r.command, r.decision, r.target])).toEqual([
    ["EXPUNGE", "allow", "9"],
    ["EXPUNGE", "error", "9"],
  ]);
  expect(rows[1]!.detail).toEqual({ row: rows[0]!.id });
  await reader.close();
});

test("the real fdatasync: rows acknowledged, the -wal file kept in place, close() syncs what is left", async () => {
  const path = scratch.file("real.db");
  const log = AuditLog.open(path);
  const wal = statSync(`${path}-wal`).ino;
  const ids = await Promise.all(Array.from({ length: 20 }, (_, i) => log.durable(sampleEvent({ session: `r${i}` }))));
  expect(new Set(ids).size).toBe(20);
  for (let i = 0; i < 100; i++) log.record(sampleEvent({ session: "tail" }));
  expect(statSync(`${path}-wal`).ino).toBe(wal);
  await log.close();
  const reader = AuditLog.open(path, { readonly: true });
  expect(reader.count()).toBe(120);
  await reader.close();
  scratch.remove();
});
