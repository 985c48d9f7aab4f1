/**
 * Retention against a clock set ahead (docs/audit.md "Retention"): a prune counts back from the clock or from
 * PRUNE_CLOCK_SLACK_MS after the newest row's time, whichever is earlier, so a clock days ahead for a moment (an NTP
 * step, a wrong RTC at boot) does not empty the log; a log in use prunes by the clock as before.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { AuditLog, PRUNE_CLOCK_SLACK_MS } from "../../src/audit/index.ts";
import { sampleEvent, scratchDir } from "./helpers.ts";

const DAY_MS = 24 * 60 * 60 * 1000;

let scratch: ReturnType<typeof scratchDir>;
beforeEach(() => {
  scratch = scratchDir();
});
afterEach(() => scratch.remove());

/** Writes a log with rows 40, 20 and 2 days before `newest` and one at `newest`; returns its path. */
async function logWithRows(name: string, newest: number): Promise<string> {
  const path = scratch.file(name);
  const first = AuditLog.open(path, { sync: "normal" });
  for (const age of [40, 20, 2]) first.record(sampleEvent({ time: newest - age * DAY_MS, target: `${age}d` }));
  first.record(sampleEvent({ time: newest, target: "newest" }));
  await first.close();
  return path;
}

describe("prune with a clock ahead of the newest row", () => {
  test("a clock stepped ahead in use: a row written since the last prune does not move the cutoff", async () => {
    const real = Date.now();
    const path = await logWithRows("step.db", real);
    const log = AuditLog.open(path, { sync: "normal" });
    expect(log.prune(30, real)).toBe(1);
    // The clock steps a year ahead; an agent's command is recorded at that time, and the hourly prune runs.
    log.record(sampleEvent({ time: real + 365 * DAY_MS, target: "ahead" }));
    await log.flush();
    expect(log.prune(30, real + 365 * DAY_MS + 120_000)).toBe(0);
    expect(log.query({ order: "asc" }).map((r) => r.target)).toEqual(["20d", "2d", "newest", "ahead"]);
    // The clock is right again: the next prune counts back from it, and the row dated ahead stays until it is old.
    expect(log.prune(30, real + 2 * 60 * 60 * 1000)).toBe(0);
    expect(log.prune(1, real + 2 * 60 * 60 * 1000)).toBe(2);
    expect(log.query({ order: "asc" }).map((r) => r.target)).toEqual(["newest", "ahead"]);
    await log.close();
  });

  test("a clock a year ahead prunes only what the newest row's time (plus the slack) makes old", async () => {
    const real = Date.now();
    const path = await logWithRows("year.db", real);
    const log = AuditLog.open(path, { sync: "normal" });
    // By the clock alone, every row is older than 30 days: the whole log would go.
    expect(log.prune(30, real + 365 * DAY_MS)).toBe(1);
    expect(log.query({ order: "asc" }).map((r) => r.target)).toEqual(["20d", "2d", "newest"]);
    await log.close();
  });

  test("at the limit: a clock exactly the slack past the newest row prunes by the clock", async () => {
    const newest = Date.now() - DAY_MS;
    const path = scratch.file("limit.db");
    const log = AuditLog.open(path, { sync: "normal" });
    const cutoffRow = newest + PRUNE_CLOCK_SLACK_MS - 5 * DAY_MS;
    // Just older than the clock's cutoff, and exactly at it (kept: only rows older than the cutoff go).
    log.record(sampleEvent({ time: cutoffRow - 1, target: "older" }));
    log.record(sampleEvent({ time: cutoffRow, target: "at" }));
    log.record(sampleEvent({ time: newest, target: "newest" }));
    await log.flush();
    expect(log.prune(5, newest + PRUNE_CLOCK_SLACK_MS)).toBe(1);
    expect(log.query({ order: "asc" }).map((r) => r.target)).toEqual(["at", "newest"]);
    await log.close();
  });

  test("one past the limit: a clock 1 ms further counts back from the newest row plus the slack", async () => {
    const newest = Date.now() - DAY_MS;
    const path = scratch.file("past.db");
    const log = AuditLog.open(path, { sync: "normal" });
    const cutoffRow = newest + PRUNE_CLOCK_SLACK_MS - 5 * DAY_MS;
    log.record(sampleEvent({ time: cutoffRow - 1, target: "older" }));
    log.record(sampleEvent({ time: cutoffRow, target: "at" }));
    log.record(sampleEvent({ time: newest, target: "newest" }));
    await log.flush();
    // By the clock, "at" would be 1 ms too old now; counted from the newest row plus the slack it is not.
    expect(log.prune(5, newest + PRUNE_CLOCK_SLACK_MS + 1)).toBe(1);
    expect(log.query({ order: "asc" }).map((r) => r.target)).toEqual(["at", "newest"]);
    await log.close();
  });

  test("a log in use (a row just written) prunes by the clock, to the millisecond", async () => {
    const now = Date.now();
    const log = AuditLog.open(scratch.file("use.db"), { sync: "normal" });
    log.record(sampleEvent({ time: now - 7 * DAY_MS - 1, target: "old" }));
    log.record(sampleEvent({ time: now - 7 * DAY_MS, target: "kept" }));
    log.record(sampleEvent({ time: now, target: "now" }));
    await log.flush();
    expect(log.prune(7, now)).toBe(1);
    expect(log.query({ order: "asc" }).map((r) => r.target)).toEqual(["kept", "now"]);
    await log.close();
  });

  test("rows dated ahead (the clock was ahead when they were written) let the right clock prune as usual", async () => {
    const now = Date.now();
    const log = AuditLog.open(scratch.file("future.db"), { sync: "normal" });
    log.record(sampleEvent({ time: now - 40 * DAY_MS, target: "old" }));
    log.record(sampleEvent({ time: now + 30 * DAY_MS, target: "ahead" }));
    await log.flush();
    expect(log.prune(30, now)).toBe(1);
    expect(log.query().map((r) => r.target)).toEqual(["ahead"]);
    await log.close();
  });

  test("retentionDays at open with the clock ahead keeps the log, and says so once", async () => {
    const real = Date.now() - 400 * DAY_MS;
    const path = await logWithRows("open.db", real);
    const messages: string[] = [];
    // The clock (Date.now()) is 400 days past the newest row: by the clock alone every row would be pruned.
    const log = AuditLog.open(path, {
      retentionDays: 30,
      sync: "normal",
      log: (m, level) => messages.push(`${level}: ${m}`),
    });
    expect(log.query({ order: "asc" }).map((r) => r.target)).toEqual(["20d", "2d", "newest"]);
    expect(messages).toHaveLength(2);
    expect(messages[0]).toBe("info: audit: pruned 1 rows older than 30 days");
    expect(messages[1]).toMatch(
      /^warn: audit: kept 3 rows older than 30 days by the clock: the newest row \(\S+Z\) is 400 days before the /,
    );
    await log.close();
  });
});
