/**
 * The audit schema and its migrations. `PRAGMA user_version` holds the number of migrations applied;
 * each migration runs in its own transaction together with the version bump, so a crash leaves a whole version.
 * Add a migration by appending to MIGRATIONS; never edit one that has shipped.
 */
import type { Database } from "bun:sqlite";

/** The columns, in insert order. There is deliberately no column for a body, a password or a token. */
export const COLUMNS = [
  "time",
  "session",
  "agent",
  "client_addr",
  "protocol",
  "command",
  "operation",
  "folder",
  "target",
  "decision",
  "rule",
  "rule_index",
  "reason",
  "config_revision",
  "count",
  "hidden_count",
  "detail",
] as const;

const MIGRATIONS: readonly string[] = [
  // v1. AUTOINCREMENT so that ids are never reused, even after pruning every row: `audit --follow` relies on it.
  `CREATE TABLE audit (
     id              INTEGER PRIMARY KEY AUTOINCREMENT,
     time            INTEGER NOT NULL,
     session         TEXT NOT NULL,
     agent           TEXT,
     client_addr     TEXT,
     protocol        TEXT NOT NULL,
     command         TEXT NOT NULL,
     operation       TEXT,
     folder          TEXT,
     target          TEXT,
     decision        TEXT NOT NULL,
     rule            TEXT,
     rule_index      INTEGER,
     reason          TEXT NOT NULL,
     config_revision TEXT NOT NULL,
     count           INTEGER,
     hidden_count    INTEGER,
     detail          TEXT
   );
   CREATE INDEX audit_time ON audit (time);
   CREATE INDEX audit_decision ON audit (decision);
   CREATE INDEX audit_agent ON audit (agent);
   CREATE INDEX audit_rule ON audit (rule);`,
  // v2. Only the time index stays. Each index is one more page written to the WAL at every commit, and commits
  // are on the path of every send (docs/audit.md, "Schema"): without these three the SMTP proxy's CPU per message
  // fell by 10-20 % (scripts/bench/smtp.ts against a minimal upstream). Filters on decision, agent or rule now scan
  // the rows in the time range or id order they are given.
  `DROP INDEX audit_decision;
   DROP INDEX audit_agent;
   DROP INDEX audit_rule;`,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

/** The oldest version whose table has exactly COLUMNS: a read-only open (the CLI) accepts it without migrating. */
export const READABLE_SINCE = 1;

export function schemaVersion(db: Database): number {
  const row = db.query<{ user_version: number }, []>("PRAGMA user_version").get();
  return row?.user_version ?? 0;
}

/**
 * Applies the missing migrations and returns how many ran; throws if the file was written by a newer schema.
 * The version is read again inside each write transaction, so two processes opening a new file at once do not
 * both run a migration.
 */
export function migrate(db: Database): number {
  let applied = 0;
  for (;;) {
    const version = schemaVersion(db);
    if (version > SCHEMA_VERSION) {
      throw new Error(`schema version ${version} is newer than this Mailgator understands (${SCHEMA_VERSION})`);
    }
    if (version === SCHEMA_VERSION) return applied;
    db.transaction(() => {
      const v = schemaVersion(db);
      if (v !== version) return;
      db.exec(MIGRATIONS[v] ?? "");
      db.exec(`PRAGMA user_version = ${v + 1}`);
      applied++;
    }).immediate();
  }
}
