/**
 * Messages between the audit log (log.ts, on the proxy's event loop) and its writer thread (writer.ts).
 * One batch is in flight at a time; `batch` numbers it, so an answer is matched to the batch it is about.
 */
/** A reader (the CLI) and the writer (the proxy) wait this long for each other's locks before failing. */
export const BUSY_TIMEOUT_MS = 5000;

export interface WriterSettings {
  path: string;
  sync: "full" | "normal";
  maxBytes: number | null;
}

export type ToWriter =
  | { type: "settings"; settings: WriterSettings }
  /** Insert these rows (a JSON array of StoredRow) in one transaction. */
  | { type: "commit"; batch: number; rows: string }
  /** Close the connection (this checkpoints the WAL when it is the last one) and answer "closed". */
  | { type: "close" };

export type FromWriter =
  /** The transaction committed; ids[i] is the id of rows[i]. */
  | { type: "committed"; batch: number; ids: number[] }
  /** The transaction was rolled back, nothing of the batch is in the file. */
  | { type: "failed"; batch: number; message: string }
  | { type: "closed" };
