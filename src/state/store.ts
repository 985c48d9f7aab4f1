/**
 * Sealed records: small secrets (OAuth2 tokens; held messages later) kept in the state database, each encrypted with
 * AES-256-GCM under the secrets key (src/state/key.ts) with a fresh random 96-bit nonce, and its kind and id as
 * additional authenticated data, so a record moved to another id or kind fails to open instead of being believed.
 * The database file and its -wal/-shm are 0600 whatever the umask. docs/accounts.md "What is stored where".
 *
 * Other modules may keep plain (non-secret) tables in the same database through `db` and `transaction`, so that a
 * sealed record and the status that goes with it change in one transaction.
 */

import { Database } from "bun:sqlite";
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { checkDatabaseFiles, preparePrivateDatabase, restrictDatabaseFiles } from "../private-files.ts";
import { KEY_BYTES, loadSecretsKey, SecretsKeyError, SecretsKeyMissing } from "./key.ts";

/** GCM's recommended nonce size (NIST SP 800-38D section 8.2). */
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
/** Bound into every record's authenticated data: a format change cannot be confused with this one. */
const AAD_VERSION = "mailgator-sealed-v1";
/** A record sealed at creation: if it does not open, the key is not the one the database was sealed with. */
const KEY_CHECK_KIND = "key-check";
const KEY_CHECK_TEXT = "the secrets key that sealed this database";
/** The proxy and the CLI wait this long for each other's locks. */
const BUSY_TIMEOUT_MS = 5000;

const MIGRATIONS: readonly string[] = [
  `CREATE TABLE sealed (
     kind    TEXT NOT NULL,
     id      TEXT NOT NULL,
     nonce   BLOB NOT NULL,
     box     BLOB NOT NULL,
     updated INTEGER NOT NULL,
     PRIMARY KEY (kind, id)
   ) WITHOUT ROWID;`,
];

/** A record that does not open under the key: tampered with, moved, or sealed with another key. */
export class SealedRecordError extends Error {
  override name = "SealedRecordError";
}

export interface StateOpenOptions {
  readonly secretsFile: string;
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Create the database and the key when missing (serve, `account login`); false for uses of one in place. */
  readonly create: boolean;
  /**
   * For a command that only reads (`approvals list` and `show`, `account status`): the database is opened read-only,
   * never created, migrated, given a key check or a mode, and null when there is none or nothing is sealed in it
   * (docs/operations.md "Commands that only read the state database"). Writes through it fail.
   */
  readonly readOnly?: boolean;
}

function aad(kind: string, id: string): Buffer {
  return Buffer.from(`${AAD_VERSION}\0${kind}\0${id}`, "utf8");
}

export class SealedStore {
  readonly path: string;
  readonly db: Database;
  /** Opened with `readOnly`: the tables other modules keep may be missing, and nothing may be written. */
  readonly readOnly: boolean;
  readonly #key: Buffer;

  private constructor(path: string, db: Database, key: Buffer, readOnly = false) {
    this.path = path;
    this.db = db;
    this.readOnly = readOnly;
    this.#key = key;
  }

  /**
   * Opens the state database at `path` with the key from the environment or the secrets file. Throws
   * SecretsKeyError when the key is missing, malformed or not the one the records were sealed with; returns null when
   * `create` is false and there is no database yet, or one without sealed records and no key (nothing to open).
   */
  static open(path: string, options: StateOpenOptions): SealedStore | null {
    if (options.readOnly) return SealedStore.#openReadOnly(path, options);
    const existed = existsSync(path);
    if (!existed && !options.create) return null;
    // Created 0600 before SQLite opens it, so that it is never briefly readable under a lax umask (and, made by root
    // in the service user's folder, that user's); one found in place is refused when it or a side file is a symbolic
    // link or not a regular file, as the audit log is (docs/audit.md "Files"): src/private-files.ts.
    preparePrivateDatabase(path);
    const db = new Database(path, { create: false, readwrite: true, strict: true });
    try {
      db.run(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
      db.run("PRAGMA journal_mode = WAL");
      // FULL: a committed record (a rotated refresh token) survives power loss, not only a killed process.
      db.run("PRAGMA synchronous = FULL");
      migrate(db);
      restrictDatabaseFiles(path);
      const sealed = (db.query("SELECT count(*) AS n FROM sealed").get() as { n: number }).n;
      let key: Buffer;
      try {
        key = loadSecretsKey({
          file: options.secretsFile,
          env: options.env,
          mayCreate: sealed === 0 && options.create,
        });
      } catch (e) {
        // A read-only use (`account status`, `approvals list`) of a database with nothing sealed in it yet (made
        // keyless for the quota counters, docs/quotas.md): nothing to read, and no key to make; as if none existed.
        if (e instanceof SecretsKeyMissing && sealed === 0 && !options.create) {
          db.close();
          return null;
        }
        throw e;
      }
      const store = new SealedStore(path, db, key);
      store.#checkKey(sealed > 0, options.secretsFile);
      restrictDatabaseFiles(path);
      return store;
    } catch (e) {
      db.close();
      // A key problem names its file already; SQLite's own errors ("file is not a database") name none, and the
      // audit log is opened too at start: the error says which file (as the audit log's does, docs/audit.md).
      if (e instanceof SecretsKeyError) throw e;
      throw new Error(`state database ${path}: ${(e as Error)?.message ?? String(e)}`, { cause: e });
    }
  }

  /**
   * `open` for a command that only reads: SQLite opens the file read-only (it may make the -wal and -shm files a
   * reader of a database in WAL mode needs, with the database's mode and owner); a database without the sealed table
   * (made keyless for the quota counters) or without a sealed record holds nothing to read, and needs no key.
   */
  static #openReadOnly(path: string, options: StateOpenOptions): SealedStore | null {
    if (!existsSync(path)) return null;
    // A link or a second name is refused as by every other open (src/private-files.ts); no mode is changed.
    checkDatabaseFiles(path);
    const db = new Database(path, { readonly: true, strict: true });
    try {
      db.run(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
      const version = (db.query("PRAGMA user_version").get() as { user_version: number }).user_version;
      checkVersion(version);
      const sealed = version === 0 ? 0 : (db.query("SELECT count(*) AS n FROM sealed").get() as { n: number }).n;
      if (sealed === 0) {
        db.close();
        return null;
      }
      const key = loadSecretsKey({ file: options.secretsFile, env: options.env, mayCreate: false });
      const store = new SealedStore(path, db, key, true);
      store.#checkKey(true, options.secretsFile);
      return store;
    } catch (e) {
      db.close();
      if (e instanceof SecretsKeyError) throw e;
      throw new Error(`state database ${path}: ${(e as Error)?.message ?? String(e)}`, { cause: e });
    }
  }

  #checkKey(hasRecords: boolean, secretsFile: string): void {
    let check: string | null;
    try {
      check = this.getText(KEY_CHECK_KIND, "");
    } catch (e) {
      if (!(e instanceof SealedRecordError)) throw e;
      throw new SecretsKeyError(
        `the secrets key (from ${secretsFile} or MAILGATOR_SECRETS_KEY) is not the one that sealed ${this.path}: ` +
          `restore the right key; logging in again with a new key would replace every stored token`,
      );
    }
    if (check === null) {
      if (hasRecords)
        throw new SecretsKeyError(`${this.path} holds sealed records but no key check: refusing to use it`);
      this.put(KEY_CHECK_KIND, "", KEY_CHECK_TEXT);
    } else if (check !== KEY_CHECK_TEXT) {
      throw new SecretsKeyError(`${this.path}: the key check record is not what this version wrote`);
    }
  }

  /** Seals `plaintext` as record (kind, id), replacing any previous one. */
  put(kind: string, id: string, plaintext: string | Uint8Array): void {
    const nonce = randomBytes(NONCE_BYTES);
    const cipher = createCipheriv("aes-256-gcm", this.#key, nonce, { authTagLength: TAG_BYTES });
    cipher.setAAD(aad(kind, id));
    const data = typeof plaintext === "string" ? Buffer.from(plaintext, "utf8") : plaintext;
    const box = Buffer.concat([cipher.update(data), cipher.final(), cipher.getAuthTag()]);
    this.db
      .query("INSERT OR REPLACE INTO sealed (kind, id, nonce, box, updated) VALUES (?, ?, ?, ?, ?)")
      .run(kind, id, nonce, box, Date.now());
  }

  /** The record's plaintext, null when there is none; SealedRecordError when it does not open. */
  get(kind: string, id: string): Buffer | null {
    const row = this.db.query("SELECT nonce, box FROM sealed WHERE kind = ? AND id = ?").get(kind, id) as {
      nonce: Uint8Array;
      box: Uint8Array;
    } | null;
    if (row === null) return null;
    const box = Buffer.from(row.box);
    if (row.nonce.length !== NONCE_BYTES || box.length < TAG_BYTES)
      throw new SealedRecordError(`sealed record ${kind}/${id} is malformed`);
    try {
      const decipher = createDecipheriv("aes-256-gcm", this.#key, Buffer.from(row.nonce), {
        authTagLength: TAG_BYTES,
      });
      decipher.setAAD(aad(kind, id));
      decipher.setAuthTag(box.subarray(box.length - TAG_BYTES));
      return Buffer.concat([decipher.update(box.subarray(0, box.length - TAG_BYTES)), decipher.final()]);
    } catch {
      throw new SealedRecordError(`sealed record ${kind}/${id} does not open with this key (or was altered)`);
    }
  }

  getText(kind: string, id: string): string | null {
    return this.get(kind, id)?.toString("utf8") ?? null;
  }

  delete(kind: string, id: string): void {
    this.db.query("DELETE FROM sealed WHERE kind = ? AND id = ?").run(kind, id);
  }

  /** The ids of the records of one kind. */
  ids(kind: string): string[] {
    return (this.db.query("SELECT id FROM sealed WHERE kind = ? ORDER BY id").all(kind) as { id: string }[]).map(
      (r) => r.id,
    );
  }

  /**
   * A 32-byte key for another purpose (signing approval links, docs/approvals.md), derived from the secrets key
   * with HKDF-SHA256 (RFC 5869) and `label` as its info: the sealing key itself never leaves this class.
   */
  deriveKey(label: string): Buffer {
    return Buffer.from(hkdfSync("sha256", this.#key, Buffer.alloc(0), Buffer.from(label, "utf8"), KEY_BYTES));
  }

  /**
   * Creates the table `table` with `schema` (a `CREATE TABLE IF NOT EXISTS`) when missing. Opened `readOnly`, the
   * file is not written: a missing table reads as an empty one, a temporary table of the connection's own (SQLite
   * looks in temp before main), and true says so; false when the table is in the file (or was just made there).
   */
  ensureTable(table: string, schema: string): boolean {
    if (!this.readOnly) {
      this.db.run(schema);
      return false;
    }
    if (this.db.query("SELECT 1 FROM main.sqlite_master WHERE type = 'table' AND name = ?").get(table) !== null)
      return false;
    this.db.run(schema.replace("CREATE TABLE IF NOT EXISTS", "CREATE TEMP TABLE IF NOT EXISTS"));
    return true;
  }

  /** Runs `fn` in one transaction (BEGIN IMMEDIATE): all its writes commit together or not at all. */
  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn).immediate();
  }

  close(): void {
    this.db.close();
  }
}

/**
 * Brings the schema to the newest version. The version is read again inside the write transaction: another process
 * (serve and `account login` or `approvals` starting at once) may be migrating the same database, and the version read
 * before its commit would run its migrations a second time ("table sealed already exists"). A database already at the
 * newest version is not written.
 */
function migrate(db: Database): void {
  const version = (): number => (db.query("PRAGMA user_version").get() as { user_version: number }).user_version;
  const before = version();
  checkVersion(before);
  if (before === MIGRATIONS.length) return;
  db.transaction(() => {
    const from = version();
    checkVersion(from);
    for (let v = from; v < MIGRATIONS.length; v++) {
      db.run(MIGRATIONS[v]!);
      db.run(`PRAGMA user_version = ${v + 1}`);
    }
  }).immediate();
}

/** Throws when the schema is newer than this version of Mailgator knows. */
function checkVersion(v: number): void {
  if (v > MIGRATIONS.length)
    throw new Error(`state database schema version ${v} is newer than this mailgator (${MIGRATIONS.length})`);
}

export { KEY_BYTES };
