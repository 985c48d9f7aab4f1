/**
 * The classification cache waits BUSY_TIMEOUT_MS for a lock another process holds (docs/imap.md "Limits"): a writer
 * in another process that lets go within it only delays a write; one that holds on past it makes the write fail,
 * and the cache is off until restart (classification from scratch, never a guess). A real second process holds the
 * lock: the cache's SQLite calls block this one while they wait.
 */
import { afterEach, beforeEach, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type CachedVisibility, ClassificationCache } from "../../src/imap/cache.ts";
import { BUSY_TIMEOUT_MS } from "../../src/imap/limits.ts";

let dir: string;
let path: string;

const VALUE: CachedVisibility = {
  uidValidity: 9,
  classifiedThrough: 4,
  highestVisible: 3,
  visible: new Uint32Array([1, 3]),
  hidden: { uids: new Uint32Array([2, 4]), slots: new Uint16Array([0, 1]) },
};
const KEY = { account: "imap.test:993/me", folder: "INBOX", fingerprint: "f1" };

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "mailgator-cache-busy-"));
  path = join(dir, "mailgator-cache.db");
});

afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** Another process takes the cache file's write lock and holds it for `ms`; resolves once it holds it. */
async function holdLock(ms: number): Promise<{ readonly exited: Promise<number> }> {
  const script = `
    import { Database } from "bun:sqlite";
    const db = new Database(${JSON.stringify(path)});
    db.exec("BEGIN IMMEDIATE");
    console.log("locked");
    await Bun.sleep(${ms});
    db.exec("COMMIT");
    db.close();
  `;
  const child = Bun.spawn([process.execPath, "-e", script], { stdout: "pipe", stderr: "inherit" });
  const reader = child.stdout.getReader();
  let out = "";
  while (!out.includes("locked")) {
    const { value, done } = await reader.read();
    if (done) throw new Error("the lock holder ended before it held the lock");
    out += new TextDecoder().decode(value);
  }
  return { exited: child.exited };
}

test("a lock let go within BUSY_TIMEOUT_MS is waited for; one held past it turns the cache off", async () => {
  const logged: string[] = [];
  const cache = ClassificationCache.open(path, (m) => logged.push(m))!;
  try {
    // Let go well within the limit (process timing is not exact to the millisecond): the write waits, then lands.
    const within = await holdLock(BUSY_TIMEOUT_MS - 1000);
    let started = performance.now();
    expect(cache.put(KEY, VALUE)).toBe(true);
    expect(performance.now() - started).toBeGreaterThan(200);
    expect(await within.exited).toBe(0);
    expect(logged).toEqual([]);
    // Held well past it: the write fails after about BUSY_TIMEOUT_MS, and the cache stays off after the lock goes.
    // (4 s past, so that a host slow to run this process after the lock is taken still finds it held.)
    const past = await holdLock(BUSY_TIMEOUT_MS + 4000);
    started = performance.now();
    expect(cache.put(KEY, VALUE)).toBe(false);
    const waited = performance.now() - started;
    expect(waited).toBeGreaterThan(BUSY_TIMEOUT_MS - 100);
    expect(waited).toBeLessThan(BUSY_TIMEOUT_MS + 1400);
    expect(logged).toHaveLength(1);
    expect(logged[0]).toStartWith("imap: classification cache write failed, cache off until restart:");
    expect(await past.exited).toBe(0);
    expect(cache.get(KEY, 9)).toBeNull();
    expect(cache.put(KEY, VALUE)).toBe(false);
  } finally {
    cache.close();
  }
}, 30_000);
