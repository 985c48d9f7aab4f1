/**
 * The audit log's file removed, renamed or replaced while the log is open (docs/audit.md "Failure"): SQLite goes on
 * writing the file it opened, which no reader finds at the path any more, and a removed file's rows vanish when the
 * process ends. The log fails closed at the first commit after: durable() rejects, `healthy` is false and the
 * problem is reported once, so no operation is carried out on the word of a row that is not in the log.
 */

import { expect, test } from "bun:test";
import { copyFileSync, renameSync, rmSync } from "node:fs";
import { AuditLog, AuditUnavailableError } from "../../src/audit/index.ts";
import { sampleEvent, scratchDir } from "./helpers.ts";

const scratch = scratchDir();

const CASES: readonly [string, (path: string) => void][] = [
  ["the database file removed", (path) => rmSync(path)],
  ["the database file renamed (rotated away)", (path) => renameSync(path, `${path}.1`)],
  [
    "the database file replaced by a copy",
    (path) => {
      copyFileSync(path, `${path}.copy`);
      renameSync(`${path}.copy`, path);
    },
  ],
  [
    "the -wal file replaced by a copy",
    (path) => {
      copyFileSync(`${path}-wal`, `${path}-wal.copy`);
      renameSync(`${path}-wal.copy`, `${path}-wal`);
    },
  ],
];

for (const [what, change] of CASES) {
  test(`${what}: the next durable() rejects, the log is unhealthy and says so once`, async () => {
    const path = scratch.file(`${what.replace(/\W+/g, "-")}.db`);
    const messages: string[] = [];
    const log = AuditLog.open(path, { log: (m) => messages.push(m) });
    expect(await log.durable(sampleEvent({ session: "before" }))).toBe(1);
    change(path);
    const after = await log.durable(sampleEvent({ session: "after" })).catch((e: unknown) => e);
    expect(after).toBeInstanceOf(AuditUnavailableError);
    expect(String((after as Error).message)).toContain("is no longer the file this process opened");
    expect(log.healthy).toBe(false);
    expect(() => log.record(sampleEvent())).toThrow(AuditUnavailableError);
    // The retry finds the same: still refused, and said once.
    await Bun.sleep(1_200);
    expect(log.healthy).toBe(false);
    expect(messages.filter((m) => m.includes("no longer the file")).length).toBe(1);
    await expect(log.close()).rejects.toThrow(AuditUnavailableError);
  });
}

test("the files left in place: rows are acknowledged as usual (the check costs no failure)", async () => {
  const path = scratch.file("kept.db");
  const log = AuditLog.open(path, { log: () => {} });
  const ids = await Promise.all(Array.from({ length: 50 }, () => log.durable(sampleEvent())));
  expect(new Set(ids).size).toBe(50);
  expect(log.healthy).toBe(true);
  await log.close();
  scratch.remove();
});
