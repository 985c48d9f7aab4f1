/**
 * The audit log: one SQLite file in WAL mode, written by a batched queue so that recording a decision never waits
 * for the disk, with `durable()` for the rows that must be on disk before an operation is forwarded upstream.
 *
 * Failure is loud and closed: when a commit fails (read-only file, full disk) the log turns unhealthy, keeps every
 * queued row in memory and retries, `record()` throws and `durable()` rejects with AuditUnavailableError, so the
 * proxy refuses what it cannot audit. No row is dropped without an error that says so.
 */
import { Database } from "bun:sqlite";
import { closeSync, existsSync, fdatasync, fstatSync, openSync, statSync } from "node:fs";
import { countDecision } from "../admin/metrics.ts";
import { errorMessage } from "../log.ts";
import { loginKey } from "../net/sessions.ts";
import { preparePrivateDatabase, restrictDatabaseFiles } from "../private-files.ts";
import {
  type AuditEvent,
  type AuditFilter,
  type AuditRow,
  AuditUnavailableError,
  DECISIONS,
  PROTOCOLS,
} from "./event.ts";
import { fromColumns, type StoredRow, textWithSuffix, toColumns } from "./row.ts";
import { COLUMNS, migrate, READABLE_SINCE, SCHEMA_VERSION, schemaVersion } from "./schema.ts";

/** Rows recorded with record() reach the disk within this; a crash loses at most this window of them. */
const DEFAULT_BATCH_MS = 25;
/** Rows per transaction; bounds how long one commit holds the event loop (about 4 ms measured, docs/audit.md). */
const DEFAULT_MAX_BATCH = 1000;
/** record() refuses beyond this many rows waiting for the disk, so a stalled disk cannot exhaust memory. */
export const MAX_QUEUED_ROWS = 2_000_000;
/**
 * Rows waiting in the audit log's queue past which a session, on either listener, waits for them to be committed
 * before it starts its next command (`waitForAuditBacklog`). Commands refused or denied by the rules are audited
 * without waiting (`record()`), so one session sending them as fast as it can would otherwise grow the one shared
 * queue without bound, and every other session's logins and writes, whose rows must be on disk first, would wait
 * behind it (seconds, tens of seconds). 10,000 rows are a few commits of the writer (docs/audit.md "Figures":
 * 100,000 rows/s and more), so a durable row never waits behind much more than that.
 */
export const AUDIT_BACKLOG_PAUSE_ROWS = 10_000;
/** After a failed commit, queued rows are retried this often. */
const RETRY_MS = 1000;
/** A reader (the CLI) and the writer (the proxy) wait this long for each other's locks before failing. */
const BUSY_TIMEOUT_MS = 5000;
const RETENTION_INTERVAL_MS = 60 * 60 * 1000;
const DAY_MS = 24 * 60 * 60 * 1000;
/**
 * How far past the newest row's time a prune may count back from (docs/audit.md "Retention"): the cutoff is the
 * retention before the clock or before the newest row's time plus this, whichever is earlier. A clock set ahead for
 * a moment (an NTP step, a wrong RTC at boot) would otherwise delete every row older than the retention by that
 * clock: the whole log, once it is ahead by more than the retention. One prune interval: a log in use (a row within
 * the last hour) prunes by the clock, as it would by a right clock.
 */
export const PRUNE_CLOCK_SLACK_MS = RETENTION_INTERVAL_MS;

/** What one prune did: rows deleted, and rows the clock alone would have deleted that were kept. */
interface PruneResult {
  readonly removed: number;
  readonly kept: number;
  /** The newest row's time, when it capped the cutoff. */
  readonly newest: number | null;
}

export interface AuditOpenOptions {
  /** flush queued rows this often (ms); default 25 */
  batchMs?: number;
  /** rows per transaction, and a queue this long is flushed at once; default 1000 */
  maxBatch?: number;
  /** open an existing log for queries only (the CLI); never creates or migrates */
  readonly?: boolean;
  /**
   * "full" (default): a row survives power loss once durable() resolves: the commit's WAL frames are fdatasync'd
   * off the event loop, one fdatasync shared by every commit made while the previous one ran (docs/audit.md).
   * "normal": survives a killed process but not power loss; no fdatasync.
   */
  sync?: "full" | "normal";
  /** Replaces the WAL's fdatasync (fault injection for tests); resolves when `fd`'s data is on disk. */
  syncFile?: (fd: number) => Promise<void>;
  /** refuse to grow the file past about this many bytes; a full log behaves like a full disk */
  maxBytes?: number;
  /** prune rows older than this many days at open and hourly */
  retentionDays?: number;
  /**
   * Where failures (`error`), recoveries and pruning (`info`) and a clock ahead of the rows (`warn`) are reported;
   * default console.error.
   */
  log?: (message: string, level: AuditLogLevel) => void;
}

interface Waiter {
  resolve(id: number): void;
  reject(error: Error): void;
}

/** A committed row whose waiter is told once the WAL holding it is on disk. */
interface Unsynced {
  waiter: Waiter;
  id: number;
  /** The row's columns when the operation waits for it (`gate`): a failed fdatasync then adds a follow-up row. */
  gated: StoredRow | null;
}

interface Pending {
  columns: StoredRow;
  waiter: Waiter | null;
  /** Whether an operation waits for this row and is refused when it cannot be written (DurableOptions.gate). */
  gate: boolean;
  /** The operation it belongs to (DurableOptions.group): rows of one group are never split between commits. */
  group: object | null;
}

/** How a durable() row relates to what the caller does next. */
export interface DurableOptions {
  /**
   * True (the default): the row allows an operation that is carried out only once the row is durable, and refused
   * when durable() rejects. Such a row that the log keeps for its retry is committed with NOT_CARRIED_OUT appended
   * to its reason; one already committed when the fdatasync after it failed gets a follow-up `error` row (its
   * `detail.row` the id). False: the row records a step already taken, and stays as it was.
   */
  readonly gate?: boolean;
  /**
   * The operation the row belongs to, when it has several rows (one per message of an APPEND, a send's RCPT and
   * DATA rows): any object, the same for each of its rows, queued one after the other. They are committed in one
   * transaction even past `maxBatch`, so that a failure keeps all of them (each marked NOT_CARRIED_OUT) or none.
   */
  readonly group?: object;
}

/**
 * Appended to the reason of a gating row whose durable() was rejected while the row was still queued: the log
 * commits it later (its retry), but the operation it allowed was refused (docs/audit.md "Failure").
 */
export const NOT_CARRIED_OUT = "; not carried out: the audit log could not be written";

const TIME = COLUMNS.indexOf("time");
const PROTOCOL = COLUMNS.indexOf("protocol");
const OPERATION = COLUMNS.indexOf("operation");
const DECISION = COLUMNS.indexOf("decision");
const REASON = COLUMNS.indexOf("reason");
const DETAIL = COLUMNS.indexOf("detail");

/** The SQL function of the agent filter, defined on each connection the log opens. */
const SAME_AGENT = "mailgator_same_agent";

type Timer = ReturnType<typeof setTimeout>;

/** How much a message of the log's own matters (serve logs each at its level, docs/audit.md "Failure"). */
export type AuditLogLevel = "error" | "warn" | "info";

export class AuditLog {
  readonly path: string;
  readonly readonly: boolean;
  #db: Database;
  #insertBatch: ((from: number, to: number) => number[]) | null = null;
  #batchMs: number;
  #maxBatch: number;
  #log: (message: string, level: AuditLogLevel) => void;

  /** Rows not yet committed are #queue[#head..]; committed slots are cleared and compacted away. */
  #queue: (Pending | undefined)[] = [];
  #head = 0;
  #enqueued = 0;
  #committed = 0;
  #draining: Promise<void> | null = null;
  #timer: Timer | null = null;
  #immediate: ReturnType<typeof setImmediate> | null = null;
  /** The latest commit of rows queued by durableWithin(), and when it is due (performance.now()). */
  #deferred: Timer | null = null;
  #deferredDue = 0;
  #retryTimer: Timer | null = null;
  #retentionTimer: ReturnType<typeof setInterval> | null = null;
  /**
   * The newest row's id at this log's last prune (null before the first): the next prune reads "the newest row" among
   * the rows up to it, never one written since, whose time a clock stepped ahead meanwhile may have set.
   */
  #prunedThrough: number | null = null;
  #error: AuditUnavailableError | null = null;
  #closed = false;
  /**
   * sync "full": a read-only descriptor of the -wal file, fdatasync'd after commits (null otherwise). SQLite runs
   * with `synchronous = NORMAL` (it writes the WAL at commit without an fsync); the rows of a commit are durable
   * once an fdatasync that began after that commit has returned (docs/audit.md "Writing: batches and durability").
   */
  #walFd: number | null = null;
  /**
   * sync "full": the device and inode of the database file, the -wal file and the -shm file (the WAL index) this
   * connection uses, as they were at open. SQLite keeps using those files whatever is done to their names, so each
   * commit and each fdatasync first checks that the paths still name them (#checkInPlace).
   */
  #opened: readonly OpenedFile[] | null = null;
  #syncFile: (fd: number) => Promise<void>;
  /** Committed rows whose durable() waits for the next fdatasync. */
  #unsynced: Unsynced[] = [];
  /** The fdatasync loop while it runs; `#syncWanted` asks it for one more round. */
  #syncing: Promise<void> | null = null;
  #syncWanted = false;
  /** Set while the last fdatasync failed, until one succeeds: the log is unhealthy (fail closed). */
  #syncError: AuditUnavailableError | null = null;

  private constructor(path: string, db: Database, readonly: boolean, opts: AuditOpenOptions) {
    this.path = path;
    this.readonly = readonly;
    this.#db = db;
    this.#batchMs = opts.batchMs ?? DEFAULT_BATCH_MS;
    this.#maxBatch = Math.max(1, opts.maxBatch ?? DEFAULT_MAX_BATCH);
    this.#log = opts.log ?? ((message) => console.error(message));
    this.#syncFile = opts.syncFile ?? fdatasyncAsync;
    // The agent filter (`conditions`): SQLite's NOCASE folds ASCII letters only. Only this connection's own queries
    // may call it (directOnly), never a view or trigger of the file.
    db.function(SAME_AGENT, { deterministic: true, directOnly: true }, sameAgent);
    if (!readonly && opts.sync !== "normal") {
      this.#walFd = openSync(walPath(path), "r");
      // Built once: the checks before each commit and fdatasync walk it without making anything.
      const lost = `the rows written since are not in ${path}`;
      this.#opened = [
        { file: path, id: fileId(statSync(path)), what: lost },
        { file: walPath(path), id: fileId(fstatSync(this.#walFd)), what: lost },
        {
          file: shmPath(path),
          id: fileId(statSync(shmPath(path))),
          what: "this process and any other that opens the log would write over each other's rows",
        },
      ];
    }
    if (!readonly) {
      const insert = db.prepare(
        `INSERT INTO audit (${COLUMNS.join(", ")}) VALUES (${COLUMNS.map(() => "?").join(", ")})`,
      );
      const batch = db.transaction((from: number, to: number): number[] => {
        const ids: number[] = [];
        for (let i = from; i < to; i++) {
          const pending = this.#queue[i];
          if (pending === undefined) continue;
          const { lastInsertRowid } = insert.run(...pending.columns);
          if (pending.waiter !== null) ids[i - from] = Number(lastInsertRowid);
        }
        return ids;
      });
      this.#insertBatch = batch.immediate;
    }
  }

  /**
   * Opens the log, creating the file and schema if missing and applying migrations.
   * Throws AuditUnavailableError with the path and the cause if the file cannot be opened (or, unless readonly,
   * cannot be written).
   */
  static open(path: string, opts: AuditOpenOptions = {}): AuditLog {
    const readonly = opts.readonly ?? false;
    let db: Database | null = null;
    try {
      if (readonly) {
        if (!existsSync(path)) throw new Error("no such file");
        // SQLite would wait for ever to read a FIFO there (a folder or a device is no log either).
        if (!statSync(path).isFile()) throw new Error(`${path} is not a regular file`);
        db = new Database(path, { readonly: true, strict: true });
        db.exec(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
        const version = schemaVersion(db);
        // Readers take any version with the same columns: the CLI of a new build reads a log the running (older)
        // proxy has not migrated yet, and index-only migrations change nothing a reader sees.
        if (version < READABLE_SINCE || version > SCHEMA_VERSION) {
          throw new Error(
            version > SCHEMA_VERSION
              ? `schema version ${version} is newer than this Mailgator understands (${SCHEMA_VERSION})`
              : `schema version ${version}, expected ${READABLE_SINCE} to ${SCHEMA_VERSION}; ` +
                  "the proxy migrates it when it next starts",
          );
        }
      } else {
        // Who mailed whom: the file and its -wal and -shm are the proxy user's alone, whatever the umask.
        preparePrivateDatabase(path);
        db = new Database(path, { create: true, readwrite: true, strict: true });
        db.exec(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
        const mode = db.query<{ journal_mode: string }, []>("PRAGMA journal_mode = WAL").get();
        if (mode?.journal_mode !== "wal") throw new Error(`cannot switch to WAL (journal mode ${mode?.journal_mode})`);
        // NORMAL: no fsync inside COMMIT, on the event loop. With sync "full" the WAL is fdatasync'd after the
        // commit on a worker thread of the runtime, and durable() resolves only then (#syncLoop).
        db.exec("PRAGMA synchronous = NORMAL");
        if (opts.maxBytes !== undefined) {
          const pageSize = db.query<{ page_size: number }, []>("PRAGMA page_size").get()?.page_size ?? 4096;
          db.exec(`PRAGMA max_page_count = ${Math.max(1, Math.floor(opts.maxBytes / pageSize))}`);
        }
        migrate(db);
        // SQLite quietly opens a write-protected file read-only; a write here turns that into an error now
        // rather than at the first decision.
        db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`);
        // The -wal and -shm files exist now: made with the database file's mode, or left wider by an older build.
        restrictDatabaseFiles(path);
      }
    } catch (e) {
      db?.close();
      const how = readonly ? "" : " for writing";
      throw new AuditUnavailableError(`audit: cannot open ${path}${how}: ${errorMessage(e)}`, { cause: e });
    }
    let log: AuditLog;
    try {
      log = new AuditLog(path, db, readonly, opts);
    } catch (e) {
      db.close();
      throw new AuditUnavailableError(`audit: cannot open ${walPath(path)}: ${errorMessage(e)}`, { cause: e });
    }
    if (!readonly && opts.retentionDays !== undefined) log.#startRetention(opts.retentionDays);
    return log;
  }

  /** False once a commit has failed, until a retry succeeds; also false after close(). */
  get healthy(): boolean {
    return !this.#closed && this.#error === null && this.#syncError === null;
  }

  /** Rows committed since this log was opened (the admin listener's `/metrics`). */
  get written(): number {
    return this.#committed;
  }

  /** Rows recorded but not yet committed. */
  get queued(): number {
    return this.#enqueued - this.#committed;
  }

  /** Queues a row; never waits for the disk. Throws AuditUnavailableError if the log is known to be broken. */
  record(ev: AuditEvent): void {
    this.#enqueue(ev, null);
    if (this.queued >= this.#maxBatch) this.#flushSoon();
    else if (this.#timer === null) this.#timer = setTimeout(this.#onTimer, this.#batchMs);
  }

  /**
   * Queues a row and resolves with its id once it is committed; rows passed to durable() in the same turn of the
   * event loop share one commit. Rejects with AuditUnavailableError if the row cannot be written.
   */
  durable(ev: AuditEvent, opts: DurableOptions = {}): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      this.#enqueue(ev, { resolve, reject }, opts.gate ?? true, opts.group ?? null);
      this.#flushSoon();
    });
  }

  /**
   * Like durable(), but the commit may wait up to `withinMs` for company, so that rows queued meanwhile (other
   * sessions' sends) share one commit and one fsync; `commitNow()` ends the wait. For a caller that needs the row
   * on disk only at a later step of its own (SMTP: before the end of data goes upstream, not before MAIL FROM).
   */
  durableWithin(ev: AuditEvent, withinMs: number, opts: DurableOptions = {}): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      this.#enqueue(ev, { resolve, reject }, opts.gate ?? true, opts.group ?? null);
      const due = performance.now() + withinMs;
      if (this.#deferred !== null && this.#deferredDue <= due) return;
      if (this.#deferred !== null) clearTimeout(this.#deferred);
      this.#deferredDue = due;
      this.#deferred = setTimeout(() => {
        this.#deferred = null;
        this.#flushSoon();
      }, withinMs);
    });
  }

  /**
   * Commits what is queued, now, before returning (the waiting rows of durableWithin() among them); their promises
   * settle once the fdatasync that follows has returned (sync "full"), else on the next microtask. At most one
   * batch (`maxBatch` rows) is committed here, so that the event loop is never held for a backlog (after a
   * recovery, say); the rest goes through the usual drain, a batch per turn.
   * Does nothing on a closed, read-only or unhealthy log (its waiters were rejected, or close() commits them). A
   * failure takes the usual path: waiters rejected, rows kept, a retry scheduled.
   */
  commitNow(): void {
    if (this.#closed || this.readonly || this.#error !== null || this.#head === this.#queue.length) return;
    try {
      this.#commitBatch();
    } catch (e) {
      if (!(e instanceof AuditUnavailableError)) throw e;
      return; // #fail has rejected the waiters and scheduled the retry.
    }
    if (this.#head < this.#queue.length) this.#flushSoon();
  }

  /** Commits everything queued so far, and (sync "full") puts it on disk. Rejects with AuditUnavailableError. */
  async flush(): Promise<void> {
    const target = this.#enqueued;
    while (this.#committed < target) await this.#drain();
    while (this.#syncing !== null) await this.#syncing;
    if (this.#syncError !== null) throw this.#syncError;
  }

  /** The id of the newest committed row, 0 for an empty log (the rowid's b-tree end: no scan). */
  newestId(): number {
    this.#checkOpen();
    return this.#db.query<{ id: number | null }, []>("SELECT max(id) AS id FROM audit").get()?.id ?? 0;
  }

  /** Committed rows matching the filter, by id (newest first unless order is "asc"). Queued rows are not seen. */
  query(filter: AuditFilter = {}): AuditRow[] {
    const { where, params } = conditions(filter);
    let sql = `SELECT id, ${COLUMNS.join(", ")} FROM audit`;
    if (where.length > 0) sql += ` WHERE ${where.join(" AND ")}`;
    sql += ` ORDER BY id ${filter.order === "asc" ? "ASC" : "DESC"}`;
    if (filter.limit !== undefined) {
      sql += " LIMIT ?";
      params.push(Math.max(0, Math.floor(filter.limit)));
    }
    this.#checkOpen();
    try {
      return this.#db
        .query<Record<string, string | number | null>, (string | number)[]>(sql)
        .all(...params)
        .map(fromColumns);
    } catch (e) {
      throw new AuditUnavailableError(`audit: cannot read ${this.path}: ${errorMessage(e)}`, { cause: e });
    }
  }

  /** How many rows match `filter` (its limit and order ignored). */
  count(filter: AuditFilter = {}): number {
    const { where, params } = conditions(filter);
    const sql = `SELECT count(*) AS n FROM audit${where.length > 0 ? ` WHERE ${where.join(" AND ")}` : ""}`;
    this.#checkOpen();
    try {
      return this.#db.query<{ n: number }, (string | number)[]>(sql).get(...params)?.n ?? 0;
    } catch (e) {
      throw new AuditUnavailableError(`audit: cannot read ${this.path}: ${errorMessage(e)}`, { cause: e });
    }
  }

  /**
   * Deletes rows older than retentionDays, counted back from `now` or from PRUNE_CLOCK_SLACK_MS after the newest
   * row's time, whichever is earlier, and returns how many. After this log's first prune, "the newest row" is the
   * newest of those written before its last prune.
   */
  prune(retentionDays: number, now: number = Date.now()): number {
    return this.#prune(retentionDays, now).removed;
  }

  #prune(retentionDays: number, now: number): PruneResult {
    this.#checkWritable();
    const retention = retentionDays * DAY_MS;
    try {
      // A DELETE writes to the WAL like a commit of rows (#commitBatch).
      if (this.#opened !== null) this.#checkInPlace();
      // The newest row before this log's last prune (the rowid's b-tree, no scan), or at the first prune any row: a
      // row written since may carry the time of a clock stepped ahead since, and counting back from it would prune
      // by that clock (docs/audit.md "Retention").
      const through = this.#prunedThrough;
      const newest =
        through === null
          ? (this.#db.query<{ t: number | null }, []>("SELECT MAX(time) AS t FROM audit").get()?.t ?? null)
          : (this.#db
              .query<{ t: number }, [number]>("SELECT time AS t FROM audit WHERE id <= ? ORDER BY id DESC LIMIT 1")
              .get(through)?.t ?? null);
      this.#prunedThrough = this.newestId();
      if (newest === null) return { removed: 0, kept: 0, newest: null };
      const capped = newest + PRUNE_CLOCK_SLACK_MS < now;
      const cutoff = (capped ? newest + PRUNE_CLOCK_SLACK_MS : now) - retention;
      const removed = this.#db.run("DELETE FROM audit WHERE time < ?", [cutoff]).changes;
      if (!capped) return { removed, kept: 0, newest: null };
      const kept =
        this.#db.query<{ n: number }, [number]>("SELECT count(*) AS n FROM audit WHERE time < ?").get(now - retention)
          ?.n ?? 0;
      return { removed, kept, newest };
    } catch (e) {
      throw new AuditUnavailableError(`audit: cannot prune ${this.path}: ${errorMessage(e)}`, { cause: e });
    }
  }

  /**
   * Commits what is queued and closes the file. If rows cannot be written, rejects with AuditUnavailableError
   * saying how many were lost; the file is closed either way.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#retentionTimer !== null) clearInterval(this.#retentionTimer);
    if (this.#retryTimer !== null) clearTimeout(this.#retryTimer);
    let failure: AuditUnavailableError | null = null;
    if (!this.readonly) {
      let cause: unknown = null;
      try {
        await this.flush();
      } catch (e) {
        cause = e;
      }
      // A failed fdatasync queues follow-up rows (#followUp) after the commits this flush made: commit them too,
      // once, when commits still work; a row already in the file is otherwise left without its follow-up. When
      // that flush succeeds, everything is in the file and synced: the close succeeds.
      if (cause !== null && this.queued > 0 && this.#error === null) {
        try {
          await this.flush();
          cause = null;
        } catch (e) {
          cause = e;
        }
      }
      if (cause !== null) {
        failure = new AuditUnavailableError(
          `audit: closing ${this.path} with ${this.queued} rows that could not be written: ${errorMessage(cause)}`,
          { cause },
        );
        this.#log(failure.message, "error");
      }
    }
    if (this.#timer !== null) clearTimeout(this.#timer);
    if (this.#deferred !== null) clearTimeout(this.#deferred);
    if (this.#immediate !== null) clearImmediate(this.#immediate);
    if (this.#walFd !== null) closeSync(this.#walFd);
    this.#walFd = null;
    this.#db.close();
    if (failure !== null) throw failure;
  }

  #checkOpen(): void {
    if (this.#closed) throw new AuditUnavailableError(`audit: ${this.path} is closed`);
  }

  #checkWritable(): void {
    this.#checkOpen();
    if (this.readonly) throw new AuditUnavailableError(`audit: ${this.path} is open read-only`);
  }

  #enqueue(ev: AuditEvent, waiter: Waiter | null, gate = false, group: object | null = null): void {
    this.#checkWritable();
    if (this.#error !== null) throw this.#error;
    if (this.#syncError !== null) throw this.#syncError;
    if (this.queued >= MAX_QUEUED_ROWS) {
      throw new AuditUnavailableError(`audit: ${MAX_QUEUED_ROWS} rows are waiting for ${this.path}; refusing more`);
    }
    if (!DECISIONS.includes(ev.decision)) throw new TypeError(`audit: unknown decision ${JSON.stringify(ev.decision)}`);
    if (!PROTOCOLS.includes(ev.protocol)) throw new TypeError(`audit: unknown protocol ${JSON.stringify(ev.protocol)}`);
    this.#queue.push({ columns: toColumns(ev), waiter, gate, group });
    this.#enqueued++;
    countDecision(ev.protocol, ev.operation, ev.decision);
  }

  #onTimer = (): void => {
    this.#timer = null;
    this.#drainQuietly();
  };

  #flushSoon(): void {
    this.#immediate ??= setImmediate(() => {
      this.#immediate = null;
      this.#drainQuietly();
    });
  }

  /** For timers: a failure has already been logged and is held in #error for the next caller. */
  #drainQuietly(): void {
    this.#drain().catch(() => {});
  }

  #drain(): Promise<void> {
    this.#draining ??= this.#runDrain().finally(() => {
      this.#draining = null;
    });
    return this.#draining;
  }

  async #runDrain(): Promise<void> {
    // Yield between transactions so that a long queue does not hold the event loop for more than one batch.
    while (this.#head < this.#queue.length) {
      this.#commitBatch();
      if (this.#head < this.#queue.length) await new Promise<void>((resolve) => setImmediate(resolve));
    }
    if (this.#timer !== null) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
  }

  #commitBatch(): void {
    const from = this.#head;
    let to = Math.min(this.#queue.length, from + this.#maxBatch);
    // The rows of one group go in one transaction, even past maxBatch: an operation that queued several rows (an
    // APPEND of several messages, a send's rows) has them all committed or all kept, never half of them.
    const group = this.#queue[to - 1]?.group ?? null;
    while (group !== null && to < this.#queue.length && this.#queue[to]!.group === group) to++;
    let ids: number[];
    try {
      // Nothing is written once a path names another file: with another -shm, this connection's frames would go
      // over those of any other process that opened the log since (#checkInPlace).
      if (this.#opened !== null) this.#checkInPlace();
      ids = this.#insertBatch?.(from, to) ?? [];
    } catch (e) {
      throw this.#fail(e);
    }
    const synced = this.#walFd === null;
    for (let i = from; i < to; i++) {
      const pending = this.#queue[i];
      const waiter = pending?.waiter;
      if (waiter) {
        if (synced) waiter.resolve(ids[i - from] ?? 0);
        else this.#unsynced.push({ waiter, id: ids[i - from] ?? 0, gated: pending.gate ? pending.columns : null });
      }
      this.#queue[i] = undefined;
    }
    // record() rows too: the power-loss window stays one batch, as with an fsync per commit.
    this.#requestSync();
    this.#head = to;
    this.#committed += to - from;
    if (this.#head === this.#queue.length) {
      this.#queue = [];
      this.#head = 0;
      if (this.#deferred !== null) {
        clearTimeout(this.#deferred);
        this.#deferred = null;
      }
    } else if (this.#head > 65536 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
    if (this.#error !== null) {
      this.#error = null;
      this.#log(`audit: writing to ${this.path} again; rows kept in memory have been committed`, "info");
    }
  }

  /**
   * Group commit of the fdatasync: one runs at a time; commits made while it runs wait for the next one, which
   * takes them all. Their waiters are resolved only by an fdatasync that began after their commit returned.
   */
  #requestSync(): void {
    if (this.#walFd === null) return;
    this.#syncWanted = true;
    this.#syncing ??= this.#syncLoop().finally(() => {
      this.#syncing = null;
    });
  }

  async #syncLoop(): Promise<void> {
    while (this.#syncWanted && this.#walFd !== null) {
      this.#syncWanted = false;
      const batch = this.#unsynced;
      this.#unsynced = [];
      try {
        await this.#syncFile(this.#currentWal());
      } catch (e) {
        this.#syncFailed(e, batch);
        return;
      }
      for (const u of batch) u.waiter.resolve(u.id);
      if (this.#syncError !== null) {
        this.#syncError = null;
        this.#log(`audit: ${this.path} is synced to disk again`, "info");
      }
    }
  }

  /** The -wal file's descriptor, once #checkInPlace has found the files in place. */
  #currentWal(): number {
    this.#checkInPlace();
    return this.#walFd!;
  }

  /**
   * Throws unless the database file, the -wal file and the -shm file at their paths are those this connection opened
   * (sync "full"). SQLite uses the files it opened until it closes them. When the database or -wal path names another
   * file (the log removed, rotated away by a rename, or replaced), the rows committed since are in no file a reader
   * finds, and a removed file's rows are gone when the process ends. When the -shm path does (the WAL index removed
   * or replaced), a process that opens the log builds a new index there: neither sees the other's commits, and each
   * writes its frames over the other's, rows it was told are on disk lost and the file possibly left unreadable.
   * The caller fails closed (#fail before a commit, #syncFailed before an fdatasync) until a restart opens the files
   * at the paths (docs/audit.md "Failure").
   */
  #checkInPlace(): void {
    for (const { file, id, what } of this.#opened!) {
      let now: FileId | null;
      try {
        now = fileId(statSync(file));
      } catch {
        now = null;
      }
      if (now === null || now.dev !== id.dev || now.ino !== id.ino)
        throw new Error(
          `${file} is no longer the file this process opened (${now === null ? "removed or renamed" : "replaced"}); ` +
            `${what}: restart to write to it again`,
        );
    }
  }

  /**
   * An fdatasync failed: the rows are committed but not known to be on disk. Their durable() rejects, the log is
   * unhealthy (audited operations are refused) until a retry's fdatasync succeeds.
   */
  #syncFailed(cause: unknown, batch: Unsynced[]): void {
    const error = new AuditUnavailableError(
      `audit: cannot sync ${this.path} to disk: ${errorMessage(cause)}; operations that need the audit log are refused`,
      { cause },
    );
    if (this.#syncError === null) this.#log(error.message, "error");
    this.#syncError = error;
    for (const u of [...batch, ...this.#unsynced]) {
      u.waiter.reject(error);
      if (u.gated !== null) this.#followUp(u.gated, u.id);
    }
    this.#unsynced = [];
    if (!this.#closed) {
      const retry = setTimeout(() => this.#requestSync(), RETRY_MS);
      retry.unref();
    }
  }

  /**
   * A gating row (DurableOptions) is in the file, but the fdatasync after its commit failed, so its durable() was
   * rejected and the operation refused: a follow-up `error` row, the same fields otherwise, says so. It is queued
   * like a record() row (committed with the next batch, retried like any other) without the checks of #enqueue,
   * which refuse rows while the fdatasync is failing.
   */
  #followUp(row: StoredRow, id: number): void {
    const columns = [...row];
    columns[TIME] = Date.now();
    columns[DECISION] = "error";
    columns[REASON] = `row ${id} is in the file but could not be synced to disk; not carried out`;
    columns[DETAIL] = JSON.stringify({ row: id });
    this.#queue.push({ columns, waiter: null, gate: false, group: null });
    this.#enqueued++;
    countDecision(String(columns[PROTOCOL]), (columns[OPERATION] as string | null) ?? null, "error");
    if (!this.#closed && this.#timer === null) this.#timer = setTimeout(this.#onTimer, this.#batchMs);
  }

  /** Marks the log unhealthy, rejects every waiting durable(), keeps the rows for a retry. */
  #fail(cause: unknown): AuditUnavailableError {
    const error = new AuditUnavailableError(
      `audit: cannot write to ${this.path}: ${errorMessage(cause)}; ${this.queued} rows kept in memory for a retry, ` +
        "operations that need the audit log are refused",
      { cause },
    );
    if (this.#error === null) this.#log(error.message, "error");
    this.#error = error;
    if (this.#deferred !== null) {
      // The retry below takes over; the waiting rows' promises are rejected here.
      clearTimeout(this.#deferred);
      this.#deferred = null;
    }
    for (let i = this.#head; i < this.#queue.length; i++) {
      const pending = this.#queue[i];
      if (pending?.waiter) {
        pending.waiter.reject(error);
        pending.waiter = null;
        // The caller refuses what this row allowed; the row is still committed by the retry (NOT_CARRIED_OUT).
        if (pending.gate)
          pending.columns[REASON] = textWithSuffix(String(pending.columns[REASON] ?? ""), NOT_CARRIED_OUT);
      }
    }
    if (!this.#closed && this.#retryTimer === null) {
      this.#retryTimer = setTimeout(() => {
        this.#retryTimer = null;
        this.#drainQuietly();
      }, RETRY_MS);
      this.#retryTimer.unref();
    }
    return error;
  }

  #startRetention(days: number): void {
    /** The number of rows kept past the retention last reported: said once, and again when it changes. */
    let reported = 0;
    const prune = (): void => {
      try {
        const now = Date.now();
        const { removed, kept, newest } = this.#prune(days, now);
        if (removed > 0) this.#log(`audit: pruned ${removed} rows older than ${days} days`, "info");
        if (kept > 0 && kept !== reported && newest !== null)
          this.#log(
            `audit: kept ${kept} rows older than ${days} days by the clock: the newest row ` +
              `(${new Date(newest).toISOString()}) is ${aheadBy(now - newest)} before the clock; rows are pruned ` +
              `counting back from an hour after it until a newer row is written, so that a clock set ahead cannot ` +
              `empty the log (docs/audit.md "Retention")`,
            "warn",
          );
        reported = kept;
      } catch (e) {
        this.#log(errorMessage(e), "error");
      }
    };
    prune();
    this.#retentionTimer = setInterval(prune, RETENTION_INTERVAL_MS);
    this.#retentionTimer.unref();
  }
}

/** What tells one file from another: its device and inode. */
interface FileId {
  readonly dev: number;
  readonly ino: number;
}

function fileId(stats: { dev: number; ino: number }): FileId {
  return { dev: stats.dev, ino: stats.ino };
}

function walPath(path: string): string {
  return `${path}-wal`;
}

/** A file of the log as this connection opened it, and what it means when its path names another file. */
interface OpenedFile {
  readonly file: string;
  readonly id: FileId;
  readonly what: string;
}

function shmPath(path: string): string {
  return `${path}-shm`;
}

function fdatasyncAsync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fdatasync(fd, (e) => (e ? reject(e) : resolve())));
}

/** The WHERE conditions of a filter, with their parameters. */
function conditions(filter: AuditFilter): { where: string[]; params: (string | number)[] } {
  const where: string[] = [];
  const params: (string | number)[] = [];
  const add = (sql: string, value: string | number | undefined): void => {
    if (value === undefined) return;
    where.push(sql);
    params.push(value);
  };
  add("time >= ?", filter.sinceMs);
  add("time < ?", filter.untilMs);
  add("decision = ?", filter.decision);
  add("rule = ?", filter.rule);
  add("session = ?", filter.session);
  add("protocol = ?", filter.protocol);
  add("command = ? COLLATE NOCASE", filter.command);
  add("id > ?", filter.afterId);
  add("id < ?", filter.beforeId);
  // Without case, in any letter's: a pass-through login is stored as the agent typed it (docs/audit.md "Reading the
  // log"). Last, so that the cheaper conditions leave it fewer rows to call into JavaScript for.
  add(`${SAME_AGENT}(agent, ?) = 1`, filter.agent === undefined ? undefined : loginKey(filter.agent));
  return { where, params };
}

/**
 * 1 when the stored agent `agent`, folded as quotas and session limits fold a login (`loginKey`, docs/quotas.md "Who
 * is counted"), is `key`, already folded; else 0 (a row without an agent too). One fold for every row, however it is
 * reached: each row of the range is compared, so `--follow` finds a spelling first written after it started.
 */
function sameAgent(agent: unknown, key: unknown): number {
  return typeof agent === "string" && typeof key === "string" && loginKey(agent) === key ? 1 : 0;
}

/**
 * Before a session's next command, on both listeners: when more than AUDIT_BACKLOG_PAUSE_ROWS rows are queued,
 * waits until they are committed (true when it waited). A failure is not thrown: the log logs it, and the commands
 * that need the log answer it (docs/audit.md "Failure").
 */
export async function waitForAuditBacklog(log: Pick<AuditLog, "queued" | "flush">): Promise<boolean> {
  if (log.queued <= AUDIT_BACKLOG_PAUSE_ROWS) return false;
  try {
    await log.flush();
  } catch {
    // Answered by the commands that need the log.
  }
  return true;
}

/** A time difference in whole days, or hours and minutes under two days. */
function aheadBy(ms: number): string {
  if (ms >= 2 * DAY_MS) return `${Math.floor(ms / DAY_MS)} days`;
  const minutes = Math.floor(ms / 60_000);
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}
