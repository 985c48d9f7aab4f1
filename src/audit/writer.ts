/**
 * The audit log's writer thread: it owns the SQLite connection that inserts rows, so that a commit and its fsync
 * never hold the proxy's event loop. It commits each batch it is sent in one `BEGIN IMMEDIATE` transaction and
 * answers with the rows' ids, or with the reason the batch was rolled back; it never decides what to retry.
 * The protocol is in writer-protocol.ts; the main-thread side is log.ts.
 */
import { Database } from "bun:sqlite";
import { parentPort } from "node:worker_threads";
import type { StoredRow } from "./row.ts";
import { COLUMNS } from "./schema.ts";
import { BUSY_TIMEOUT_MS, type FromWriter, type ToWriter, type WriterSettings } from "./writer-protocol.ts";

const port = parentPort;
if (port === null) throw new Error("audit: writer.ts runs as a worker thread only");

let settings: WriterSettings | null = null;
let db: Database | null = null;
let insertBatch: ((rows: StoredRow[]) => number[]) | null = null;

/** Opens the connection the way AuditLog.open checked it (WAL, synchronous, page cap); the schema is there. */
function connect(s: WriterSettings): (rows: StoredRow[]) => number[] {
  const conn = new Database(s.path, { readwrite: true, strict: true });
  try {
    conn.exec(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
    const mode = conn.query<{ journal_mode: string }, []>("PRAGMA journal_mode = WAL").get();
    if (mode?.journal_mode !== "wal") throw new Error(`cannot switch to WAL (journal mode ${mode?.journal_mode})`);
    conn.exec(`PRAGMA synchronous = ${s.sync === "normal" ? "NORMAL" : "FULL"}`);
    if (s.maxBytes !== null) {
      const pageSize = conn.query<{ page_size: number }, []>("PRAGMA page_size").get()?.page_size ?? 4096;
      conn.exec(`PRAGMA max_page_count = ${Math.max(1, Math.floor(s.maxBytes / pageSize))}`);
    }
    const insert = conn.prepare(
      `INSERT INTO audit (${COLUMNS.join(", ")}) VALUES (${COLUMNS.map(() => "?").join(", ")})`,
    );
    const batch = conn.transaction((rows: StoredRow[]): number[] => {
      const ids: number[] = new Array(rows.length);
      for (let i = 0; i < rows.length; i++) ids[i] = Number(insert.run(...(rows[i] as StoredRow)).lastInsertRowid);
      return ids;
    });
    db = conn;
    return batch.immediate;
  } catch (e) {
    conn.close();
    throw e;
  }
}

function reply(message: FromWriter): void {
  port?.postMessage(message);
}

port.on("message", (message: ToWriter) => {
  switch (message.type) {
    case "settings":
      settings = message.settings;
      return;
    case "commit":
      try {
        if (settings === null) throw new Error("the writer thread has no settings");
        // Opened on first use, and again after an open that failed (a retry after the file came back).
        insertBatch ??= connect(settings);
        reply({ type: "committed", batch: message.batch, ids: insertBatch(JSON.parse(message.rows) as StoredRow[]) });
      } catch (e) {
        reply({ type: "failed", batch: message.batch, message: e instanceof Error ? e.message : String(e) });
      }
      return;
    case "close":
      try {
        // close(true) finalizes the prepared statements; without it the connection lingers and the WAL is not
        // checkpointed and removed when the log closes.
        db?.close(true);
      } finally {
        db = null;
        insertBatch = null;
        reply({ type: "closed" });
      }
      return;
  }
});
