/**
 * The audit log: one SQLite file in WAL mode. Rows are queued on the proxy's event loop and committed by a writer
 * thread (writer.ts), so that recording a decision never waits for the disk and a commit's fsync never holds a
 * session; `durable()` resolves once the writer has committed the row, for the rows that must be on disk before an
 * operation is forwarded upstream.
 *
 * Failure is loud and closed: when a commit fails (read-only file, full disk, a writer thread that stopped) the log
 * turns unhealthy, keeps every queued row in memory and retries, `record()` throws and `durable()` rejects with
 * AuditUnavailableError, so the proxy refuses what it cannot audit. No row is dropped without an error that says so.
 */
import { Database } from "bun:sqlite";
import { existsSync } from "node:fs";
import {
  type AuditEvent,
  type AuditFilter,
  type AuditRow,
  AuditUnavailableError,
  DECISIONS,
  PROTOCOLS,
} from "./event.ts";
import { COLUMNS, migrate, SCHEMA_VERSION, schemaVersion } from "./schema.ts";
import { fromColumns, type StoredRow, toColumns } from "./row.ts";
import { BUSY_TIMEOUT_MS, type FromWriter, type ToWriter } from "./writer-protocol.ts";

/** Rows recorded with record() reach the disk within this; a crash loses at most this window of them. */
const DEFAULT_BATCH_MS = 25;
/** Rows per transaction: bounds the size of one commit, and so of one message to the writer thread. */
const DEFAULT_MAX_BATCH = 1000;
/** record() refuses beyond this many rows waiting for the disk, so a stalled disk cannot exhaust memory. */
export const MAX_QUEUED_ROWS = 2_000_000;
/** After a failed commit, queued rows are retried this often. */
const RETRY_MS = 1000;
/** close() waits this long for the writer thread to close its connection before it terminates the thread. */
const WRITER_CLOSE_MS = 10_000;
const RETENTION_INTERVAL_MS = 60 * 60 * 1000;
const DAY_MS = 24 * 60 * 60 * 1000;

/**
 * Terminates the writer thread as if it had crashed. For tests of that failure only; not exported by index.ts.
 */
export const CRASH_WRITER_FOR_TESTS = Symbol("audit: crash the writer thread");

export interface AuditOpenOptions {
  /** flush queued rows this often (ms); default 25 */
  batchMs?: number;
  /** rows per transaction, and a queue this long is flushed at once; default 1000 */
  maxBatch?: number;
  /** open an existing log for queries only (the CLI); never creates or migrates */
  readonly?: boolean;
  /**
   * "full" (default): a committed row survives power loss (fsync per commit).
   * "normal": survives a killed process but not power loss; faster for durable() one at a time.
   */
  sync?: "full" | "normal";
  /** refuse to grow the file past about this many bytes; a full log behaves like a full disk */
  maxBytes?: number;
  /** prune rows older than this many days at open and hourly */
  retentionDays?: number;
  /** where failures and recoveries are reported; default console.error */
  log?: (message: string) => void;
}

interface Waiter {
  resolve(id: number): void;
  reject(error: Error): void;
}

interface Pending {
  columns: StoredRow;
  waiter: Waiter | null;
}

interface FlushWaiter {
  /** resolved once this many rows (counted from open) are committed */
  target: number;
  resolve(): void;
  reject(error: Error): void;
}

type Timer = ReturnType<typeof setTimeout>;

export class AuditLog {
  readonly path: string;
  readonly readonly: boolean;
  /** This thread's connection: queries, pruning, and the checks at open. Rows are inserted by the writer thread. */
  #db: Database;
  #sync: "full" | "normal";
  #maxBytes: number | null;
  #batchMs: number;
  #maxBatch: number;
  #log: (message: string) => void;

  #writer: Worker | null = null;
  /** The writer's answer to "close", or its exit. */
  #writerClosed: (() => void) | null = null;
  #batchNo = 0;
  /** Whether the writer is committing a batch: rows #queue[#head..#head + #inFlight]. */
  #busy = false;
  #inFlight = 0;

  /** Rows not yet committed are #queue[#head..]; committed slots are cleared and compacted away. */
  #queue: (Pending | undefined)[] = [];
  #head = 0;
  #enqueued = 0;
  #committed = 0;
  /** A commit has been asked for (by durable(), flush(), the timer or a full batch) of the rows enqueued up to here. */
  #wanted = 0;
  #flushWaiters: FlushWaiter[] = [];
  #timer: Timer | null = null;
  #immediate: ReturnType<typeof setImmediate> | null = null;
  #retryTimer: Timer | null = null;
  #retentionTimer: ReturnType<typeof setInterval> | null = null;
  #error: AuditUnavailableError | null = null;
  #closed = false;

  private constructor(path: string, db: Database, readonly: boolean, opts: AuditOpenOptions) {
    this.path = path;
    this.readonly = readonly;
    this.#db = db;
    this.#sync = opts.sync ?? "full";
    this.#maxBytes = opts.maxBytes ?? null;
    this.#batchMs = opts.batchMs ?? DEFAULT_BATCH_MS;
    this.#maxBatch = Math.max(1, opts.maxBatch ?? DEFAULT_MAX_BATCH);
    this.#log = opts.log ?? ((message) => console.error(message));
    if (!readonly) this.#startWriter();
  }

  /**
   * Opens the log, creating the file and schema if missing and applying migrations.
   * Throws AuditUnavailableError with the path and the cause if the file cannot be opened (or, unless readonly,
   * cannot be written). These checks run here, on the caller's thread; the writer thread starts afterwards.
   */
  static open(path: string, opts: AuditOpenOptions = {}): AuditLog {
    const readonly = opts.readonly ?? false;
    let db: Database | null = null;
    try {
      if (readonly) {
        if (!existsSync(path)) throw new Error("no such file");
        db = new Database(path, { readonly: true, strict: true });
        db.exec(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
        const version = schemaVersion(db);
        if (version !== SCHEMA_VERSION) {
          throw new Error(
            version > SCHEMA_VERSION
              ? `schema version ${version} is newer than this Mailgator understands (${SCHEMA_VERSION})`
              : `schema version ${version}, expected ${SCHEMA_VERSION}; the proxy migrates it when it next starts`,
          );
        }
      } else {
        db = new Database(path, { create: true, readwrite: true, strict: true });
        db.exec(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
        const mode = db.query<{ journal_mode: string }, []>("PRAGMA journal_mode = WAL").get();
        if (mode?.journal_mode !== "wal") throw new Error(`cannot switch to WAL (journal mode ${mode?.journal_mode})`);
        db.exec(`PRAGMA synchronous = ${opts.sync === "normal" ? "NORMAL" : "FULL"}`);
        migrate(db);
        // SQLite quietly opens a write-protected file read-only; a write here turns that into an error now
        // rather than at the first decision.
        db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`);
      }
    } catch (e) {
      db?.close();
      throw new AuditUnavailableError(
        `audit: cannot open ${path}${readonly ? "" : " for writing"}: ${message(e)}`,
        { cause: e },
      );
    }
    const log = new AuditLog(path, db, readonly, opts);
    if (!readonly && opts.retentionDays !== undefined) log.#startRetention(opts.retentionDays);
    return log;
  }

  /** False once a commit has failed, until a retry succeeds; also false after close(). */
  get healthy(): boolean {
    return !this.#closed && this.#error === null;
  }

  /** Rows recorded but not yet committed. */
  get queued(): number {
    return this.#enqueued - this.#committed;
  }

  /** Queues a row; never waits for the disk. Throws AuditUnavailableError if the log is known to be broken. */
  record(ev: AuditEvent): void {
    this.#enqueue(ev, null);
    if (this.queued >= this.#maxBatch) this.#commitSoon();
    else if (this.#timer === null) this.#timer = setTimeout(this.#onTimer, this.#batchMs);
  }

  /**
   * Queues a row and resolves with its id once it is committed; rows passed to durable() in the same turn of the
   * event loop, and rows queued while the writer is busy with an earlier commit, share one commit.
   * Rejects with AuditUnavailableError if the row cannot be written.
   */
  durable(ev: AuditEvent): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      this.#enqueue(ev, { resolve, reject });
      this.#commitSoon();
    });
  }

  /**
   * Commits everything queued so far. Rejects with AuditUnavailableError if that fails; on an unhealthy log it
   * retries at once.
   */
  flush(): Promise<void> {
    const target = this.#enqueued;
    if (this.#committed >= target && this.#error === null) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.#flushWaiters.push({ target, resolve, reject });
      if (this.#error !== null) this.#retry();
      else this.#want();
    });
  }

  /** Committed rows matching the filter, by id (newest first unless order is "asc"). Queued rows are not seen. */
  query(filter: AuditFilter = {}): AuditRow[] {
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
    add("agent = ?", filter.agent);
    add("rule = ?", filter.rule);
    add("session = ?", filter.session);
    add("protocol = ?", filter.protocol);
    add("id > ?", filter.afterId);
    add("id < ?", filter.beforeId);
    let sql = `SELECT id, ${COLUMNS.join(", ")} FROM audit`;
    if (where.length > 0) sql += ` WHERE ${where.join(" AND ")}`;
    sql += ` ORDER BY id ${filter.order === "asc" ? "ASC" : "DESC"}`;
    if (filter.limit !== undefined) {
      sql += " LIMIT ?";
      params.push(Math.max(0, Math.floor(filter.limit)));
    }
    this.#checkOpen();
    try {
      return this.#db.query<Record<string, string | number | null>, (string | number)[]>(sql).all(...params)
        .map(fromColumns);
    } catch (e) {
      throw new AuditUnavailableError(`audit: cannot read ${this.path}: ${message(e)}`, { cause: e });
    }
  }

  /**
   * Deletes rows older than retentionDays and returns how many. Runs on this thread's connection (it is rare:
   * hourly); if the writer is committing, it waits for that commit.
   */
  prune(retentionDays: number): number {
    this.#checkWritable();
    const cutoff = Date.now() - retentionDays * DAY_MS;
    try {
      return this.#db.run("DELETE FROM audit WHERE time < ?", [cutoff]).changes;
    } catch (e) {
      throw new AuditUnavailableError(`audit: cannot prune ${this.path}: ${message(e)}`, { cause: e });
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
    if (!this.readonly && this.queued > 0) {
      try {
        await this.flush();
      } catch (e) {
        failure = new AuditUnavailableError(
          `audit: closing ${this.path} with ${this.queued} rows that could not be written: ${message(e)}`,
          { cause: e },
        );
        this.#log(failure.message);
      }
    }
    if (this.#timer !== null) clearTimeout(this.#timer);
    if (this.#immediate !== null) clearImmediate(this.#immediate);
    await this.#stopWriter();
    this.#db.close();
    if (failure !== null) throw failure;
  }

  /** See CRASH_WRITER_FOR_TESTS. */
  [CRASH_WRITER_FOR_TESTS](): void {
    this.#writer?.terminate();
  }

  #checkOpen(): void {
    if (this.#closed) throw new AuditUnavailableError(`audit: ${this.path} is closed`);
  }

  #checkWritable(): void {
    this.#checkOpen();
    if (this.readonly) throw new AuditUnavailableError(`audit: ${this.path} is open read-only`);
  }

  #enqueue(ev: AuditEvent, waiter: Waiter | null): void {
    this.#checkWritable();
    if (this.#error !== null) throw this.#error;
    if (this.queued >= MAX_QUEUED_ROWS) {
      throw new AuditUnavailableError(`audit: ${MAX_QUEUED_ROWS} rows are waiting for ${this.path}; refusing more`);
    }
    if (!DECISIONS.includes(ev.decision)) throw new TypeError(`audit: unknown decision ${JSON.stringify(ev.decision)}`);
    if (!PROTOCOLS.includes(ev.protocol)) throw new TypeError(`audit: unknown protocol ${JSON.stringify(ev.protocol)}`);
    this.#queue.push({ columns: toColumns(ev), waiter });
    this.#enqueued++;
  }

  #onTimer = (): void => {
    this.#timer = null;
    this.#want();
  };

  #commitSoon(): void {
    this.#immediate ??= setImmediate(() => {
      this.#immediate = null;
      this.#want();
    });
  }

  /** Asks for a commit of everything queued so far; a failure is held in #error for the next caller. */
  #want(): void {
    this.#wanted = this.#enqueued;
    this.#send(false);
  }

  /**
   * Sends the next batch to the writer, unless one is in flight, nothing is asked for, or the log is broken.
   * A retry sends even an empty batch: after a writer thread stopped, that is what shows its successor works.
   */
  #send(retrying: boolean): void {
    if (this.#busy) return;
    if (!retrying && (this.#error !== null || this.#committed >= this.#wanted)) return;
    const writer = this.#writer ?? this.#startWriter();
    const count = Math.min(this.#queue.length - this.#head, this.#maxBatch);
    const rows: StoredRow[] = new Array(count);
    for (let i = 0; i < count; i++) rows[i] = (this.#queue[this.#head + i] as Pending).columns;
    this.#busy = true;
    this.#inFlight = count;
    writer.ref(); // an awaited durable() keeps the process alive until its answer comes
    // As JSON: one string crosses to the thread faster than a structured clone of the row arrays (about 2x here).
    this.#post(writer, { type: "commit", batch: ++this.#batchNo, rows: JSON.stringify(rows) });
  }

  #post(writer: Worker, message: ToWriter): void {
    writer.postMessage(message);
  }

  #onWriterMessage(message: FromWriter): void {
    if (message.type === "closed") {
      this.#writerClosed?.();
      return;
    }
    if (!this.#busy || message.batch !== this.#batchNo) return; // a batch already given up on
    this.#busy = false;
    if (message.type === "failed") {
      this.#fail(new Error(message.message));
      return;
    }
    this.#committedBatch(message.ids);
  }

  #committedBatch(ids: number[]): void {
    const from = this.#head;
    const to = from + this.#inFlight;
    for (let i = from; i < to; i++) {
      const waiter = this.#queue[i]?.waiter;
      if (waiter) waiter.resolve(ids[i - from] ?? 0);
      this.#queue[i] = undefined;
    }
    this.#head = to;
    this.#committed += to - from;
    if (this.#head === this.#queue.length) {
      this.#queue = [];
      this.#head = 0;
    } else if (this.#head > 65536 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
    if (this.#error !== null) {
      this.#error = null;
      this.#log(`audit: writing to ${this.path} again; rows kept in memory have been committed`);
    }
    if (this.#flushWaiters.length > 0) {
      const done = this.#flushWaiters.filter((w) => w.target <= this.#committed);
      this.#flushWaiters = this.#flushWaiters.filter((w) => w.target > this.#committed);
      for (const w of done) w.resolve();
    }
    if (this.queued === 0 && this.#timer !== null) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
    if (this.#committed < this.#wanted) this.#send(false);
    else this.#writer?.unref();
  }

  /** Marks the log unhealthy, rejects every waiting durable() and flush(), keeps the rows for a retry. */
  #fail(cause: unknown): void {
    const error = new AuditUnavailableError(
      `audit: cannot write to ${this.path}: ${message(cause)}; ${this.queued} rows kept in memory for a retry, ` +
        "operations that need the audit log are refused",
      { cause },
    );
    if (this.#error === null) this.#log(error.message);
    this.#error = error;
    for (let i = this.#head; i < this.#queue.length; i++) {
      const pending = this.#queue[i];
      if (pending?.waiter) {
        pending.waiter.reject(error);
        pending.waiter = null;
      }
    }
    const flushWaiters = this.#flushWaiters;
    this.#flushWaiters = [];
    for (const w of flushWaiters) w.reject(error);
    this.#writer?.unref();
    if (!this.#closed && this.#retryTimer === null) {
      this.#retryTimer = setTimeout(() => {
        this.#retryTimer = null;
        this.#retry();
      }, RETRY_MS);
      this.#retryTimer.unref();
    }
  }

  /** Sends the kept rows again (starting a new writer thread if the last one stopped). */
  #retry(): void {
    this.#wanted = this.#enqueued;
    this.#send(true);
  }

  #startWriter(): Worker {
    const writer = new Worker(writerUrl());
    writer.unref();
    writer.addEventListener("message", (event: MessageEvent<FromWriter>) => this.#onWriterMessage(event.data));
    writer.addEventListener("error", (event: ErrorEvent) => {
      this.#writerStopped(writer, `the writer thread failed: ${event.message}`);
      writer.terminate();
    });
    writer.addEventListener("close", () => this.#writerStopped(writer, "the writer thread stopped"));
    this.#post(writer, { type: "settings", settings: { path: this.path, sync: this.#sync, maxBytes: this.#maxBytes } });
    this.#writer = writer;
    return writer;
  }

  /**
   * A writer that exits or throws outside a commit is a failure of the log, as a failed commit is. The outcome of a
   * batch it was committing is unknown: its rows stay queued and are written again by the retry, so such a row may
   * be in the file twice, never zero times.
   */
  #writerStopped(writer: Worker, reason: string): void {
    if (this.#writer !== writer) return;
    this.#writer = null;
    this.#writerClosed?.();
    if (this.#writerClosed !== null) return; // close() stopped it
    this.#busy = false;
    this.#fail(new Error(reason));
  }

  async #stopWriter(): Promise<void> {
    const writer = this.#writer;
    if (writer === null) return;
    writer.ref();
    let timer: Timer | null = null;
    await new Promise<void>((resolve) => {
      this.#writerClosed = resolve;
      timer = setTimeout(resolve, WRITER_CLOSE_MS);
      this.#post(writer, { type: "close" });
    });
    if (timer !== null) clearTimeout(timer);
    this.#writer = null;
    writer.terminate();
  }

  #startRetention(days: number): void {
    const prune = (): void => {
      try {
        const removed = this.prune(days);
        if (removed > 0) this.#log(`audit: pruned ${removed} rows older than ${days} days`);
      } catch (e) {
        this.#log(message(e));
      }
    };
    prune();
    this.#retentionTimer = setInterval(prune, RETENTION_INTERVAL_MS);
    this.#retentionTimer.unref();
  }
}

/**
 * Where the writer thread's code is. From source, next to this file. In the executable, which `npm run build`
 * compiles with writer.ts as a second entrypoint and `--root src`, every bundled module has the executable's own
 * URL, and the writer is at audit/writer.ts under that root (Bun's docs: "Worker" in "Single-file executable").
 */
function writerUrl(): URL {
  return new URL(import.meta.file === "log.ts" ? "./writer.ts" : "./audit/writer.ts", import.meta.url);
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
