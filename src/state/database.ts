/**
 * The state database (`[state] path`, docs/accounts.md "What is stored where") opened for plain, non-secret tables
 * such as the quota counters (docs/quotas.md), without the secrets key: the file is created 0600 whatever the umask,
 * in WAL mode with synchronous = FULL, so that a committed write survives a crash and power loss.
 */

import { Database } from "bun:sqlite";
import { existsSync } from "node:fs";
import { checkDatabaseFiles, preparePrivateDatabase, restrictDatabaseFiles } from "../private-files.ts";

/** The proxy and the CLI wait this long for each other's locks. */
const BUSY_TIMEOUT_MS = 5000;

/** Opens (creating when missing) the state database for writing. */
export function openStateDatabase(path: string): Database {
  preparePrivateDatabase(path);
  const db = new Database(path, { create: false, readwrite: true, strict: true });
  try {
    db.run(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
    db.run("PRAGMA journal_mode = WAL");
    db.run("PRAGMA synchronous = FULL");
    restrictDatabaseFiles(path);
    return db;
  } catch (e) {
    db.close();
    throw e;
  }
}

/**
 * Opens the state database read-only (explain); null when there is none yet. Never creates or changes it. Its files
 * are checked first as every other opening checks them (`checkDatabaseFiles`): SQLite would wait for ever to read a
 * FIFO at the path.
 */
export function openStateDatabaseReadOnly(path: string): Database | null {
  if (!existsSync(path)) return null;
  checkDatabaseFiles(path);
  const db = new Database(path, { readonly: true, strict: true });
  db.run(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
  return db;
}
