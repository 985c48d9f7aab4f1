/**
 * Files `serve` keeps beside the audit database (docs/operations.md "Reload"): `mailgator.pid`, the process id,
 * written once both proxies listen and removed on exit; `mailgator.reload.json`, the outcome of the last reload,
 * which `mailgator reload` waits for and prints.
 */

import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import type { Config } from "../config/index.ts";
import type { ReloadResult } from "./reload.ts";

export const PID_FILE_NAME = "mailgator.pid";
export const STATUS_FILE_NAME = "mailgator.reload.json";

export function pidFileFor(config: Config): string {
  return join(dirname(config.audit.path), PID_FILE_NAME);
}

export function statusFileFor(config: Config): string {
  return join(dirname(config.audit.path), STATUS_FILE_NAME);
}

/** Written whole under a temporary name, then renamed: a reader never sees half a file. */
function writeAtomic(file: string, text: string, mode: number): void {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, text, { mode });
  renameSync(tmp, file);
}

/**
 * When process `pid` started, in clock ticks since boot (proc(5), /proc/PID/stat field 22), or null where there is
 * no such process or no /proc. A pid is reused once its process has exited; the pair of pid and start time is not.
 */
function processStart(pid: number): string | null {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "latin1");
  } catch {
    return null;
  }
  // The command name (field 2) is in parentheses and may hold spaces and parentheses itself: count after the last.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return /^\d+$/.test(fields[19] ?? "") ? fields[19]! : null;
}

/** `PID START`: the process and when it started, so that a stale file never names another process (readPidFile). */
export function writePidFile(file: string, warn: (message: string) => void): void {
  const start = processStart(process.pid);
  try {
    writeAtomic(file, `${process.pid}${start === null ? "" : ` ${start}`}\n`, 0o644);
  } catch (e) {
    warn(`cannot write the pid file ${file} (mailgator reload will not find this process): ${(e as Error).message}`);
  }
}

export type PidFileEntry =
  | { readonly state: "running"; readonly pid: number }
  | { readonly state: "none" }
  | { readonly state: "stale"; readonly pid: number };

/**
 * The process a pid file names: "none" when there is no file or it holds no pid; "stale" when the file records a
 * start time and process `pid` does not have it (the mailgator that wrote it has exited without removing it, killed
 * or crashed, and the pid may since belong to another process, which must not be signalled). A file with a pid
 * alone (where /proc was not readable when it was written) is taken as it is.
 */
export function readPidFile(file: string): PidFileEntry {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return { state: "none" };
  }
  const m = /^(\d{1,10})(?: (\d{1,20}))?\s*$/.exec(text);
  if (m === null) return { state: "none" };
  const pid = Number(m[1]);
  if (m[2] !== undefined && processStart(pid) !== m[2]) return { state: "stale", pid };
  return { state: "running", pid };
}

/** One reload's outcome as the status file holds it; `seq` counts the reloads of the process `pid`. */
export interface ReloadStatus extends ReloadResult {
  readonly pid: number;
  readonly seq: number;
}

let seq = 0;

export function writeStatusFile(file: string, result: ReloadResult, error: (message: string) => void): void {
  const status: ReloadStatus = { pid: process.pid, seq: ++seq, ...result };
  try {
    writeAtomic(file, `${JSON.stringify(status, null, 2)}\n`, 0o644);
  } catch (e) {
    error(`cannot write the reload status file ${file}: ${(e as Error).message}`);
  }
}

/** The status file's contents, or null when absent or unreadable. */
export function readStatusFile(file: string): ReloadStatus | null {
  try {
    const parsed = JSON.parse(readFileSync(file, "utf8")) as ReloadStatus;
    return typeof parsed.pid === "number" && typeof parsed.seq === "number" ? parsed : null;
  } catch {
    return null;
  }
}
