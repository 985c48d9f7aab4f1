/**
 * The audit log's `-shm` file (SQLite's WAL index) removed or replaced while the log is open (docs/audit.md
 * "Failure"). The connection keeps the index it mapped; another process that opens the log then (`mailgator approvals
 * deny`, the MCP admin's config writes, `mailgator audit`) builds a new index at the path, and the two no longer
 * see each other's commits: each writes its frames where its own index says the WAL ends, over the other's. Before,
 * the log went on as if nothing had happened: the other process's acknowledged rows were overwritten, and the file
 * could end up unreadable. The log now fails closed before its next commit, as for the database and `-wal` files.
 */

import { afterAll, expect, test } from "bun:test";
import { copyFileSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { AuditLog, AuditUnavailableError } from "../../src/audit/index.ts";
import { sampleEvent, scratchDir } from "./helpers.ts";

const scratch = scratchDir();
afterAll(() => scratch.remove());

const WRITER = join(import.meta.dir, "durable-writer.ts");

/** Another process writing `count` durable rows (and as many queued ones) to `path`: the ids it was given. */
function otherWriter(path: string, count: number): number[] {
  const p = Bun.spawnSync([process.execPath, WRITER, path, String(count)]);
  expect(p.exitCode).toBe(0);
  return p.stdout
    .toString()
    .trim()
    .split("\n")
    .map((line) => Number(line.split(" ")[0]));
}

/** Prints the integrity check and every row of the log named by the last argument, as JSON. */
const CHECK = `
const { Database } = require("bun:sqlite");
const db = new Database(process.argv.at(-1), { readonly: true });
const integrity = db.query("PRAGMA integrity_check").get().integrity_check;
const rows = db.query("SELECT id, session, target FROM audit ORDER BY id").all();
console.log(JSON.stringify({ integrity, rows }));
`;

const CASES: readonly [string, (path: string) => void][] = [
  ["the -shm file removed", (path) => rmSync(`${path}-shm`)],
  [
    "the -shm file replaced by a copy",
    (path) => {
      copyFileSync(`${path}-shm`, `${path}-shm.copy`);
      renameSync(`${path}-shm.copy`, `${path}-shm`);
    },
  ],
];

for (const [what, change] of CASES) {
  test(`${what}: the log refuses before it writes; another process's rows are kept`, async () => {
    const path = scratch.file(`${what.replace(/\W+/g, "-")}.db`);
    const messages: string[] = [];
    const log = AuditLog.open(path, { log: (m) => messages.push(m) });
    for (let i = 0; i < 5; i++) await log.durable(sampleEvent({ session: "before" }));
    change(path);
    // Another process opens the log meanwhile and is told its rows are on disk.
    const theirs = otherWriter(path, 20);
    expect(theirs).toHaveLength(20);
    const after = await log.durable(sampleEvent({ session: "after" })).catch((e: unknown) => e);
    expect(after).toBeInstanceOf(AuditUnavailableError);
    expect(String((after as Error).message)).toContain(`${path}-shm is no longer the file this process opened`);
    expect(log.healthy).toBe(false);
    expect(() => log.record(sampleEvent())).toThrow(AuditUnavailableError);
    // Still refused on the retry, said once.
    await Bun.sleep(1_200);
    expect(log.healthy).toBe(false);
    expect(messages.filter((m) => m.includes("no longer the file")).length).toBe(1);
    await expect(log.close()).rejects.toThrow(AuditUnavailableError);

    // Every row the other process was told is on disk is there, as written, and the file is sound: read by a new
    // process, as by the proxy started again.
    const read = Bun.spawnSync([process.execPath, "-e", CHECK, path]);
    expect(read.stderr.toString()).toBe("");
    const found = JSON.parse(read.stdout.toString()) as {
      integrity: string;
      rows: { id: number; session: string; target: string }[];
    };
    expect(found.integrity).toBe("ok");
    const byId = new Map(found.rows.map((r) => [r.id, r.target]));
    for (const id of theirs) expect(byId.get(id)).toStartWith("durable-");
    expect(found.rows.filter((r) => r.session === "before")).toHaveLength(5);
    expect(found.rows.filter((r) => r.session === "after")).toHaveLength(0);
  });
}
