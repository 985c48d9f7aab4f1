/**
 * A log that cannot be written fails closed: a clear AuditUnavailableError, no crash, no row dropped silently.
 * Read-only is made with chmod, and with `chattr +i` when running as root (root ignores file modes); if neither
 * takes effect on this file system the tests fail and say so (CI runs as root, where chattr works). A full disk is
 * simulated with maxBytes (PRAGMA max_page_count), which fails exactly as a full disk does (SQLITE_FULL).
 */

import { Database } from "bun:sqlite";
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { chmodSync, closeSync, mkdirSync, openSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { AuditLog, AuditUnavailableError, NOT_CARRIED_OUT } from "../../src/audit/index.ts";
import { sampleEvent, scratchDir } from "./helpers.ts";

const asRoot = process.getuid?.() === 0;

function makeReadOnly(path: string, isDir: boolean): void {
  chmodSync(path, isDir ? 0o555 : 0o444);
  if (asRoot) spawnSync("chattr", ["+i", path]);
}

function makeWritable(path: string, isDir: boolean): void {
  if (asRoot) spawnSync("chattr", ["-i", path]);
  chmodSync(path, isDir ? 0o755 : 0o644);
}

/** Whether makeReadOnly actually stops this process from writing here. */
function readOnlyWorks(): boolean {
  const scratch = scratchDir();
  const probe = scratch.file("probe");
  writeFileSync(probe, "x");
  makeReadOnly(probe, false);
  let works = false;
  try {
    closeSync(openSync(probe, "r+"));
  } catch {
    works = true;
  }
  makeWritable(probe, false);
  scratch.remove();
  return works;
}

const canMakeReadOnly = readOnlyWorks();

let scratch: ReturnType<typeof scratchDir>;
beforeEach(() => {
  scratch = scratchDir();
});
afterEach(() => scratch.remove());

describe("read-only", () => {
  test("this machine can make a file read-only for this process (chmod, or chattr +i as root)", () => {
    expect(canMakeReadOnly).toBe(true);
  });

  test("a write-protected file: open says so, the CLI can still read it", async () => {
    const path = scratch.file("ro.db");
    const log = AuditLog.open(path);
    await log.durable(sampleEvent());
    await log.close();
    makeReadOnly(path, false);
    try {
      let error: unknown;
      try {
        AuditLog.open(path);
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(AuditUnavailableError);
      // SQLite's words, or (as root, where the file is made immutable) those of the mode check before it.
      expect(String(error)).toContain(`audit: cannot open ${path} for writing: `);
      expect(String(error)).toMatch(/attempt to write a readonly database|operation not permitted/);
      const reader = AuditLog.open(path, { readonly: true });
      expect(reader.query()).toHaveLength(1);
      await reader.close();
    } finally {
      makeWritable(path, false);
    }
  });

  test("a missing file in a write-protected directory: open says so", () => {
    const dir = join(scratch.dir, "locked");
    mkdirSync(dir);
    makeReadOnly(dir, true);
    try {
      // The file is created (0600) before SQLite opens it: the refusal is that creation's.
      expect(() => AuditLog.open(join(dir, "audit.db"))).toThrow(AuditUnavailableError);
      expect(() => AuditLog.open(join(dir, "audit.db"))).toThrow(
        new RegExp(
          `^audit: cannot open ${join(dir, "audit.db")} for writing: ` +
            `(EACCES: permission denied|EPERM: operation not permitted), open`,
        ),
      );
    } finally {
      makeWritable(dir, true);
    }
  });

  test("a missing file opened read-only (the CLI before the proxy ever ran)", () => {
    const path = scratch.file("missing.db");
    expect(() => AuditLog.open(path, { readonly: true })).toThrow(
      new AuditUnavailableError(`audit: cannot open ${path}: no such file`),
    );
  });
});

describe("not an audit log", () => {
  test("a file that is not SQLite", () => {
    const path = scratch.file("garbage.db");
    writeFileSync(path, "this is not a database, just some text that is long enough to have a header".repeat(20));
    expect(() => AuditLog.open(path)).toThrow(/^audit: cannot open .* for writing: file is not a database$/);
  });

  test("a log written by a newer schema is refused, not downgraded", () => {
    const path = scratch.file("newer.db");
    const db = new Database(path, { create: true });
    db.exec("PRAGMA user_version = 99");
    db.close();
    expect(() => AuditLog.open(path)).toThrow("schema version 99 is newer than this Mailgator understands");
    expect(() => AuditLog.open(path, { readonly: true })).toThrow("schema version 99 is newer");
  });
});

describe("full disk", () => {
  test("fails closed, keeps queued rows, and recovers when space is freed", async () => {
    const messages: string[] = [];
    const log = AuditLog.open(scratch.file("full.db"), { maxBytes: 64 * 1024, log: (m) => messages.push(m) });
    const old = Date.now() - 10 * 24 * 60 * 60 * 1000;
    // A row of now first: a prune counts back from the newest row's time at the latest (docs/audit.md "Retention").
    await log.durable(sampleEvent({ target: "now" }));
    let written = 0;
    let error: unknown;
    try {
      for (;;) {
        await log.durable(sampleEvent({ time: old, reason: "r".repeat(200) }));
        written++;
      }
    } catch (e) {
      error = e;
    }
    expect(written).toBeGreaterThan(10);
    expect(error).toBeInstanceOf(AuditUnavailableError);
    expect(String(error)).toContain("database or disk is full");
    expect(log.healthy).toBe(false);
    expect(log.queued).toBe(1);
    expect(messages).toHaveLength(1);
    expect(messages[0]).toMatch(/^audit: cannot write to .*full\.db: database or disk is full; 1 rows kept in memory/);

    // While broken: record() throws, durable() rejects, flush() rejects; nothing crashes.
    expect(() => log.record(sampleEvent())).toThrow(AuditUnavailableError);
    await expect(log.durable(sampleEvent())).rejects.toBeInstanceOf(AuditUnavailableError);
    await expect(log.flush()).rejects.toBeInstanceOf(AuditUnavailableError);
    expect(log.query()).toHaveLength(written + 1);

    // Freeing space (here by pruning) lets the retry commit the kept row.
    expect(log.prune(1)).toBe(written);
    await log.flush();
    expect(log.healthy).toBe(true);
    expect(log.queued).toBe(0);
    expect(log.query()).toHaveLength(2);
    expect(messages[1]).toMatch(/^audit: writing to .* again/);
    await log.close();
  });

  test("a rejected durable() row is committed by the retry marked not carried out, unless gate is false", async () => {
    const log = AuditLog.open(scratch.file("marked.db"), { maxBytes: 64 * 1024, log: () => {} });
    const old = Date.now() - 10 * 24 * 60 * 60 * 1000;
    // A row of now, so that prune(1) below deletes the old ones (docs/audit.md "Retention").
    await log.durable(sampleEvent({ target: "now", reason: "now" }));
    const reason = "r".repeat(200);
    // Each round queues, in one turn (one commit): a record() row, a durable() row of a step already taken
    // (gate: false), and a durable() row an operation waits for (the default). The round whose commit fails ends it.
    let round = 0;
    for (; ; round++) {
      log.record(sampleEvent({ time: old, target: `read ${round}`, reason }));
      const done = log.durable(sampleEvent({ time: old, target: `done ${round}`, reason }), { gate: false });
      const gated = log.durable(sampleEvent({ time: old, target: `gated ${round}`, reason }));
      const settled = await Promise.allSettled([done, gated]);
      if (settled.some((r) => r.status === "rejected")) {
        expect(settled.map((r) => r.status)).toEqual(["rejected", "rejected"]);
        break;
      }
    }
    expect(round).toBeGreaterThan(3);
    expect(log.queued).toBe(3);
    log.prune(1);
    await log.flush();
    const kept = new Map(log.query().map((r) => [r.target, r.reason]));
    expect(kept).toEqual(
      new Map([
        ["now", "now"],
        [`read ${round}`, reason],
        [`done ${round}`, reason],
        [`gated ${round}`, `${reason}${NOT_CARRIED_OUT}`],
      ]),
    );
    await log.close();
  });

  test("the retry timer recovers on its own", async () => {
    const log = AuditLog.open(scratch.file("retry.db"), { maxBytes: 64 * 1024, log: () => {} });
    const old = Date.now() - 10 * 24 * 60 * 60 * 1000;
    await log.durable(sampleEvent()); // a row of now, so that prune(1) deletes the old ones
    await expect(
      (async () => {
        for (;;) await log.durable(sampleEvent({ time: old, reason: "r".repeat(200) }));
      })(),
    ).rejects.toBeInstanceOf(AuditUnavailableError);
    log.prune(1);
    // No flush() here: only the log's own retry timer (every second) can make it healthy again.
    for (let i = 0; i < 100 && !log.healthy; i++) await Bun.sleep(100);
    expect(log.healthy).toBe(true);
    expect(log.queued).toBe(0);
    await log.close();
  });

  test("close() on a full log reports the rows it could not write", async () => {
    const log = AuditLog.open(scratch.file("lost.db"), { maxBytes: 64 * 1024, batchMs: 10_000, log: () => {} });
    for (let i = 0; i < 2000; i++) log.record(sampleEvent({ reason: "r".repeat(200) }));
    await expect(log.close()).rejects.toThrow(/^audit: closing .* with \d+ rows that could not be written/);
  });
});
