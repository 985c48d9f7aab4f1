/**
 * Rows of the classification cache that no session read or wrote for CACHE_ROW_IDLE_MS are removed, at open and by
 * `prune` (docs/filtering.md "The cache"); a row in use is marked again when read, at most once per CACHE_TOUCH_MS.
 * The clock is the cache's own (`open`'s third argument), so the days pass without waiting; the last test runs the
 * IMAP proxy against Dovecot with the real clock.
 */
import { Database } from "bun:sqlite";
import { afterEach, beforeEach, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type CachedVisibility, ClassificationCache } from "../../src/imap/cache.ts";
import { CACHE_ROW_IDLE_MS, CACHE_TOUCH_MS } from "../../src/imap/limits.ts";
import { createMailbox } from "../fixtures/index.ts";
import { SEED_RULES } from "./filtered-fixture.ts";
import { RawImap, startTestProxy } from "./helpers.ts";

let dir: string;
let path: string;
let now: number;
const clock = () => now;
const DAY = 24 * 3600 * 1000;

const VALUE: CachedVisibility = {
  uidValidity: 9,
  classifiedThrough: 4,
  highestVisible: 3,
  visible: new Uint32Array([1, 3]),
  hidden: { uids: new Uint32Array([2, 4]), slots: new Uint16Array([0, 1]) },
};

const key = (folder: string, fingerprint = "f1") => ({ account: "imap.test:993/me", folder, fingerprint });

/** `updated_at` of each row, by folder and fingerprint, read beside the cache. */
function marks(): Record<string, number> {
  const db = new Database(path, { readonly: true });
  try {
    const rows = db
      .query<{ folder: string; fingerprint: string; updated_at: number }, []>(
        "SELECT folder, fingerprint, updated_at FROM visibility ORDER BY folder, fingerprint",
      )
      .all();
    return Object.fromEntries(rows.map((r) => [`${r.folder}/${r.fingerprint}`, r.updated_at]));
  } finally {
    db.close();
  }
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "mailgator-cache-expiry-"));
  path = join(dir, "mailgator-cache.db");
  now = Date.UTC(2026, 11, 6);
});

afterEach(() => rmSync(dir, { recursive: true, force: true }));

test("a row unused for exactly CACHE_ROW_IDLE_MS stays; one millisecond more and it is removed at open", () => {
  const logged: string[] = [];
  const cache = ClassificationCache.open(path, (m) => logged.push(m), clock)!;
  const written = now;
  expect(cache.put(key("Old"), VALUE)).toBe(true);
  now += 1;
  expect(cache.put(key("Newer"), VALUE)).toBe(true);
  cache.close();

  now = written + CACHE_ROW_IDLE_MS;
  ClassificationCache.open(path, (m) => logged.push(m), clock)!.close();
  expect(Object.keys(marks())).toEqual(["Newer/f1", "Old/f1"]);
  expect(logged).toEqual([]);

  now = written + CACHE_ROW_IDLE_MS + 1;
  const reopened = ClassificationCache.open(path, (m) => logged.push(m), clock)!;
  expect(Object.keys(marks())).toEqual(["Newer/f1"]);
  expect(logged).toEqual([`imap: classification cache: 1 row(s) unused for ${CACHE_ROW_IDLE_MS / DAY} days removed`]);
  expect(reopened.get(key("Old"), 9)).toBeNull();
  expect(reopened.get(key("Newer"), 9)?.visible).toEqual(new Uint32Array([1, 3]));
  reopened.close();
});

test("prune on a running cache: the replaced fingerprint's row goes, the one in use stays", () => {
  const cache = ClassificationCache.open(path, () => {}, clock)!;
  expect(cache.put(key("INBOX", "before-reload"), VALUE)).toBe(true);
  expect(cache.put(key("INBOX", "after-reload"), VALUE)).toBe(true);
  for (let day = 1; day <= 31; day++) {
    now += DAY;
    // A session selects the folder every day under the new rules: a read, no new message to write.
    expect(cache.get(key("INBOX", "after-reload"), 9)).not.toBeNull();
  }
  expect(cache.prune()).toBe(1);
  expect(Object.keys(marks())).toEqual(["INBOX/after-reload"]);
  expect(cache.get(key("INBOX", "after-reload"), 9)?.hidden.uids).toEqual(new Uint32Array([2, 4]));
  expect(cache.prune()).toBe(0);
  cache.close();
});

test("a read renews the mark only once it is CACHE_TOUCH_MS old", () => {
  const cache = ClassificationCache.open(path, () => {}, clock)!;
  const written = now;
  expect(cache.put(key("INBOX"), VALUE)).toBe(true);
  now = written + CACHE_TOUCH_MS;
  expect(cache.get(key("INBOX"), 9)).not.toBeNull();
  expect(marks()["INBOX/f1"]).toBe(written);
  now = written + CACHE_TOUCH_MS + 1;
  expect(cache.get(key("INBOX"), 9)).not.toBeNull();
  expect(marks()["INBOX/f1"]).toBe(now);
  // A row of another UIDVALIDITY is a miss and is not marked: the next write replaces it.
  now += CACHE_TOUCH_MS + 1;
  expect(cache.get(key("INBOX"), 10)).toBeNull();
  expect(marks()["INBOX/f1"]).toBe(written + CACHE_TOUCH_MS + 1);
  cache.close();
});

test("the IMAP proxy removes idle rows when it starts (Dovecot)", async () => {
  const mailbox = await createMailbox({ seed: { folders: { INBOX: 4 }, seed: 3 } });
  const first = await startTestProxy({ rules: SEED_RULES, dir });
  const raw = await RawImap.login(first.port, mailbox);
  await raw.command("s", "EXAMINE INBOX");
  raw.close();
  await first.close();
  const rows = marks();
  expect(Object.keys(rows)).toHaveLength(1);
  // The row was last used 30 days and a minute ago, as if no session had selected the folder since.
  const db = new Database(path);
  db.query("UPDATE visibility SET updated_at = ?").run(Date.now() - CACHE_ROW_IDLE_MS - 60_000);
  db.close();
  const second = await startTestProxy({ rules: SEED_RULES, dir });
  try {
    expect(marks()).toEqual({});
  } finally {
    await second.close();
  }
});
