/**
 * The classification cache (docs/filtering.md): which UIDs of a filtered folder an agent may see, so that
 * re-opening a large folder only classifies the messages that arrived since.
 *
 * One SQLite file (WAL) beside the audit log, `mailgator-cache.db` by default: it is disposable (deleting it costs
 * one full classification per folder), unlike the audit log, and its writes must never wait behind, nor be
 * mistaken for, audit rows. A row is keyed by (account, folder, rules fingerprint) and holds the UIDVALIDITY it
 * is valid for, the highest UID classified, the highest UID ever found visible (for a UIDNEXT that never goes
 * back), the visible UIDs as a blob of little-endian uint32, ascending, and the hidden UIDs likewise with, for
 * each, the slot of the rule that hid it (little-endian uint16; for the audit of probes, docs/filtering.md).
 *
 * A row is marked used when written, and when read if its mark is a day old (CACHE_TOUCH_MS); rows unused for
 * CACHE_ROW_IDLE_MS are removed (`prune`, at open and daily), so rows of folders that are gone or of replaced
 * rules do not stay for good.
 *
 * Fail closed: any error, or a row that does not check out (blob length, order, range), is a miss, and the
 * caller classifies from scratch. Nothing here ever makes a message visible that was not classified visible.
 */

import { Database } from "bun:sqlite";
import { existsSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { preparePrivateDatabase, restrictDatabaseFiles } from "../private-files.ts";
import { BUSY_TIMEOUT_MS, CACHE_ROW_IDLE_MS, CACHE_TOUCH_MS } from "./limits.ts";

/**
 * Bump when the meaning of a stored row changes (the classifier's own version is part of the fingerprint); a file
 * of another version is emptied and rebuilt. 2: hidden UIDs and their rule slots.
 */
const SCHEMA_VERSION = 2;
const DAY_MS = 24 * 3600 * 1000;
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

export interface CacheKey {
  /** Who the mailbox belongs to upstream: server and user name, never a secret. */
  readonly account: string;
  /** The folder's upstream name. */
  readonly folder: string;
  /** Fingerprint of the rules that decide visibility here (classify.ts `MessageFilter.fingerprint`). */
  readonly fingerprint: string;
}

export interface CachedVisibility {
  readonly uidValidity: number;
  /** Every UID up to this one was classified. */
  readonly classifiedThrough: number;
  /**
   * The highest UID ever classified visible (0 when none), by any session: it may lie above `classifiedThrough`
   * when the row's writer never learned of that message (`put`).
   */
  readonly highestVisible: number;
  /** Visible UIDs, ascending, none above classifiedThrough. */
  readonly visible: Uint32Array;
  /** Hidden UIDs, ascending, none above classifiedThrough nor visible, and the rule slot of each (view.ts). */
  readonly hidden: { readonly uids: Uint32Array; readonly slots: Uint16Array };
}

/** `mailgator-cache.db` in the audit log's folder. */
export function cachePathBeside(auditPath: string): string {
  return join(dirname(auditPath), "mailgator-cache.db");
}

/**
 * A folder opened without a UIDVALIDITY (upstream's SELECT or EXAMINE sent none, recorded as 0; RFC 3501 §6.3.1 makes
 * it required, and a valid one is a non-zero number, §9 `nz-number`): nothing says that its UIDs are those of the
 * folder a row was stored for. One deleted and created again under the same name numbers its messages from 1 again,
 * and a cached visible UID would show whatever message holds it now. Such a folder is neither read from nor stored in
 * the cache: it is classified afresh at each SELECT (docs/filtering.md "The cache").
 */
function unknownValidity(uidValidity: number): boolean {
  return !(Number.isInteger(uidValidity) && uidValidity >= 1 && uidValidity <= 0xffffffff);
}

interface Row {
  uid_validity: number;
  classified_through: number;
  highest_visible: number;
  visible: Uint8Array;
  hidden: Uint8Array;
  hidden_slots: Uint8Array;
  updated_at: number;
}

export class ClassificationCache {
  readonly #db: Database;
  readonly #log: (message: string) => void;
  readonly #now: () => number;
  #broken = false;

  private constructor(db: Database, log: (message: string) => void, now: () => number) {
    this.#db = db;
    this.#log = log;
    this.#now = now;
  }

  /**
   * Opens (creating if needed) the cache; null when it cannot be used, after logging why: the proxy then
   * classifies every folder from scratch on each SELECT.
   */
  static open(
    path: string,
    log: (message: string) => void = (m) => console.error(m),
    now: () => number = Date.now,
  ): ClassificationCache | null {
    if (!LITTLE_ENDIAN) {
      log("imap: classification cache disabled: big-endian host");
      return null;
    }
    const first = ClassificationCache.#tryOpen(path, log, now);
    if (first instanceof ClassificationCache) return first;
    if (/not a database|malformed|corrupt/i.test(first.message) && existsSync(path)) {
      // The cache is disposable: a damaged file is replaced rather than kept off for good.
      log(`imap: classification cache ${path} is damaged (${first.message}); starting a new one`);
      for (const suffix of ["", "-wal", "-shm"]) rmSync(path + suffix, { force: true });
      const second = ClassificationCache.#tryOpen(path, log, now);
      if (second instanceof ClassificationCache) return second;
      log(`imap: classification cache ${path} unavailable, classifying from scratch: ${second.message}`);
      return null;
    }
    log(`imap: classification cache ${path} unavailable, classifying from scratch: ${first.message}`);
    return null;
  }

  static #tryOpen(path: string, log: (message: string) => void, now: () => number): ClassificationCache | Error {
    let db: Database | null = null;
    try {
      // Which messages an agent may see, per account and folder: 0600 like the audit log, whatever the umask.
      preparePrivateDatabase(path);
      db = new Database(path, { create: true, readwrite: true, strict: true });
      db.exec(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
      db.exec("PRAGMA journal_mode = WAL");
      // A lost write costs one re-classification: no fsync per commit.
      db.exec("PRAGMA synchronous = NORMAL");
      const version = db.query<{ user_version: number }, []>("PRAGMA user_version").get()?.user_version ?? 0;
      if (version !== SCHEMA_VERSION) {
        db.exec("DROP TABLE IF EXISTS visibility");
        db.exec(`CREATE TABLE visibility (
          account TEXT NOT NULL,
          folder TEXT NOT NULL,
          fingerprint TEXT NOT NULL,
          uid_validity INTEGER NOT NULL,
          classified_through INTEGER NOT NULL,
          highest_visible INTEGER NOT NULL,
          visible BLOB NOT NULL,
          hidden BLOB NOT NULL,
          hidden_slots BLOB NOT NULL,
          updated_at INTEGER NOT NULL,
          PRIMARY KEY (account, folder, fingerprint)
        ) WITHOUT ROWID`);
        db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`);
      }
      restrictDatabaseFiles(path);
      const cache = new ClassificationCache(db, log, now);
      cache.prune();
      return cache;
    } catch (error) {
      db?.close();
      return error as Error;
    }
  }

  /**
   * The stored classification for `key` at this UIDVALIDITY, or null (none, another UIDVALIDITY, unreadable, or no
   * UIDVALIDITY: `unknownValidity`).
   */
  get(key: CacheKey, uidValidity: number): CachedVisibility | null {
    if (this.#broken || unknownValidity(uidValidity)) return null;
    let row: Row | null;
    try {
      row = this.#db
        .query<Row, [string, string, string]>(
          "SELECT uid_validity, classified_through, highest_visible, visible, hidden, hidden_slots, updated_at " +
            "FROM visibility WHERE account = ? AND folder = ? AND fingerprint = ?",
        )
        .get(key.account, key.folder, key.fingerprint);
    } catch (error) {
      this.#fail("read", error);
      return null;
    }
    if (row === null || row.uid_validity !== uidValidity) return null;
    // Still in use: its mark is renewed (at most once per CACHE_TOUCH_MS), or `prune` would take a row read daily.
    if (!(row.updated_at >= this.#now() - CACHE_TOUCH_MS)) this.#touch(key);
    const blob = row.visible;
    if (!(blob instanceof Uint8Array) || blob.byteLength % 4 !== 0) return this.#invalid(key);
    const visible = new Uint32Array(blob.byteLength / 4);
    new Uint8Array(visible.buffer).set(blob);
    const through = row.classified_through;
    const highest = row.highest_visible;
    if (
      !Number.isInteger(through) ||
      through < 0 ||
      through > 0xffffffff ||
      !Number.isInteger(highest) ||
      highest < 0 ||
      highest > 0xffffffff
    )
      return this.#invalid(key);
    let last = 0;
    for (let i = 0; i < visible.length; i++) {
      const uid = visible[i]!;
      if (uid <= last) return this.#invalid(key);
      last = uid;
    }
    if (last > through || last > highest) return this.#invalid(key);
    const hiddenBlob = row.hidden;
    const slotBlob = row.hidden_slots;
    if (
      !(hiddenBlob instanceof Uint8Array) ||
      !(slotBlob instanceof Uint8Array) ||
      hiddenBlob.byteLength % 4 !== 0 ||
      slotBlob.byteLength !== hiddenBlob.byteLength / 2
    )
      return this.#invalid(key);
    const hidden = new Uint32Array(hiddenBlob.byteLength / 4);
    new Uint8Array(hidden.buffer).set(hiddenBlob);
    const slots = new Uint16Array(hidden.length);
    new Uint8Array(slots.buffer).set(slotBlob);
    // Ascending, classified, and never a visible UID (a merge over both sorted lists).
    let j = 0;
    last = 0;
    for (let i = 0; i < hidden.length; i++) {
      const uid = hidden[i]!;
      if (uid <= last || uid > through) return this.#invalid(key);
      while (j < visible.length && visible[j]! < uid) j++;
      if (j < visible.length && visible[j] === uid) return this.#invalid(key);
      last = uid;
    }
    return {
      uidValidity,
      classifiedThrough: through,
      highestVisible: highest,
      visible,
      hidden: { uids: hidden, slots },
    };
  }

  /**
   * Stores a classification, replacing what `key` held (whatever its UIDVALIDITY). Returns false when it could not
   * be written; the proxy works on without the cache.
   *
   * At the same UIDVALIDITY the highest visible UID never goes down (docs/filtering.md "UID gaps"): a session that
   * selected the folder before another saw a visible arrival, which was expunged before this one learned of it,
   * knows a lower one, and its row (written when it classifies an arrival, a hidden one too) would lower the
   * UIDNEXT the next session is told. It is not cut to the new row's classified range: that session may have
   * classified only up to a hidden arrival below the visible UID another session stored, and the cut value would
   * be that hidden UID, told as UIDNEXT - 1 (docs/filtering.md "The cache"). So it may lie above
   * `classifiedThrough`: it only ever raises UIDNEXT, and shows nothing.
   */
  put(key: CacheKey, value: CachedVisibility): boolean {
    if (this.#broken || unknownValidity(value.uidValidity)) return false;
    const bytes = (v: Uint32Array | Uint16Array) => new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
    try {
      this.#db
        .query(
          "INSERT INTO visibility (account, folder, fingerprint, uid_validity, classified_through, " +
            "highest_visible, visible, hidden, hidden_slots, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) " +
            "ON CONFLICT (account, folder, fingerprint) DO UPDATE SET highest_visible = CASE " +
            "WHEN visibility.uid_validity = excluded.uid_validity THEN " +
            "max(visibility.highest_visible, excluded.highest_visible) " +
            "ELSE excluded.highest_visible END, uid_validity = excluded.uid_validity, " +
            "classified_through = excluded.classified_through, visible = excluded.visible, " +
            "hidden = excluded.hidden, hidden_slots = excluded.hidden_slots, updated_at = excluded.updated_at",
        )
        .run(
          key.account,
          key.folder,
          key.fingerprint,
          value.uidValidity,
          value.classifiedThrough,
          value.highestVisible,
          bytes(value.visible),
          bytes(value.hidden.uids),
          bytes(value.hidden.slots),
          this.#now(),
        );
      return true;
    } catch (error) {
      this.#fail("write", error);
      return false;
    }
  }

  /**
   * Removes the rows not read nor written for CACHE_ROW_IDLE_MS (a row exactly that old stays); returns how many.
   * A failure turns the cache off like any other.
   */
  prune(): number {
    if (this.#broken) return 0;
    try {
      const removed = this.#db
        .query("DELETE FROM visibility WHERE updated_at < ?")
        .run(this.#now() - CACHE_ROW_IDLE_MS).changes;
      if (removed > 0)
        this.#log(
          `imap: classification cache: ${removed} row(s) unused for ${CACHE_ROW_IDLE_MS / DAY_MS} days removed`,
        );
      return removed;
    } catch (error) {
      this.#fail("write", error);
      return 0;
    }
  }

  close(): void {
    try {
      this.#db.close();
    } catch {
      // Closing a broken database: nothing to save.
    }
  }

  #touch(key: CacheKey): void {
    try {
      this.#db
        .query("UPDATE visibility SET updated_at = ? WHERE account = ? AND folder = ? AND fingerprint = ?")
        .run(this.#now(), key.account, key.folder, key.fingerprint);
    } catch (error) {
      this.#fail("write", error);
    }
  }

  #invalid(key: CacheKey): null {
    this.#log(`imap: classification cache row for ${key.folder} is invalid; classifying from scratch`);
    return null;
  }

  #fail(what: string, error: unknown): void {
    // One failure turns the cache off for this process: a disk that fails once is not trusted again.
    this.#broken = true;
    this.#log(`imap: classification cache ${what} failed, cache off until restart: ${(error as Error).message}`);
  }
}
