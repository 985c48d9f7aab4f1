/**
 * Files `serve` keeps beside the audit database (docs/operations.md "Reload"): `mailgator.pid`, the process id and
 * the config file it runs, created when serve starts (only one serve may hold a folder) and removed on exit;
 * `mailgator.reload.json`, the outcome of the last reload, which `mailgator reload` waits for and prints.
 */

import { linkSync, readFileSync, renameSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import type { Config } from "../config/index.ts";
import { removeLeftovers, type TemporaryName } from "./leftovers.ts";
import type { ReloadResult } from "./reload.ts";

export const PID_FILE_NAME = "mailgator.pid";
export const STATUS_FILE_NAME = "mailgator.reload.json";

export function pidFileFor(config: Config): string {
  return join(dirname(config.audit.path), PID_FILE_NAME);
}

export function statusFileFor(config: Config): string {
  return join(dirname(config.audit.path), STATUS_FILE_NAME);
}

/**
 * Removes what a process stopped inside `claimPidFile` (`<pid file>.<pid>.tmp`, and `<pid file>.<pid>.stale`, the
 * file it moved aside) or `writeStatusFile` (`<status file>.<pid>.tmp`) left beside these files, under the rules of
 * src/runtime/leftovers.ts: only a regular file of exactly such a name, written before this process started, by a
 * process that is gone. Never throws (docs/operations.md "Leftovers").
 */
export function removeStateFileLeftovers(pidFiles: readonly string[], statusFile: string): void {
  const byDir = new Map<string, TemporaryName[]>();
  const add = (file: string, tails: readonly RegExp[]) => {
    const names = byDir.get(dirname(file)) ?? [];
    for (const tail of tails) names.push({ prefix: `${basename(file)}.`, tail });
    byDir.set(dirname(file), names);
  };
  for (const file of pidFiles) add(file, [/\.tmp/, /\.stale/]);
  add(statusFile, [/\.tmp/]);
  for (const [dir, names] of byDir) removeLeftovers(dir, names);
}

/** Written whole under a temporary name, then renamed: a reader never sees half a file. */
function writeAtomic(file: string, text: string, mode: number): void {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFresh(tmp, text, mode);
  renameSync(tmp, file);
}

/**
 * Creates `file` anew with `text`: whatever is at that name first (a leftover of a process with the same pid, or a
 * symbolic link planted there) is removed, and the file is created with O_EXCL, which never follows a link, so
 * nothing is written through one (docs/operations.md "One serve per folder").
 */
function writeFresh(file: string, text: string, mode: number): void {
  try {
    unlinkSync(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
  writeFileSync(file, text, { mode, flag: "wx" });
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

/** Process `pid` exists (signal 0 checks without sending anything; EPERM: it exists, owned by another user). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

export type PidFileEntry =
  | { readonly state: "running"; readonly pid: number; readonly config: string | null }
  | { readonly state: "none" }
  | { readonly state: "stale"; readonly pid: number };

/**
 * A pid file's text: `PID START` on the first line, the absolute path of the config file the process runs on the
 * second. START is left out where /proc was not readable; the second line is missing in a file written by a
 * mailgator from before it was added (`config` null).
 */
function parsePidFile(text: string): PidFileEntry {
  const nl = text.indexOf("\n");
  const first = nl < 0 ? text : text.slice(0, nl);
  const m = /^(\d{1,10})(?: (\d{1,20}))?\s*$/.exec(first);
  if (m === null) return { state: "none" };
  const pid = Number(m[1]);
  if (m[2] !== undefined && processStart(pid) !== m[2]) return { state: "stale", pid };
  const rest = nl < 0 ? "" : text.slice(nl + 1).replace(/\n$/, "");
  return { state: "running", pid, config: rest === "" || rest.includes("\n") ? null : rest };
}

function readText(file: string): string | null {
  try {
    return readFileSync(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
}

/**
 * The process a pid file names: "none" when there is no file or it holds no pid; "stale" when the file records a
 * start time and process `pid` does not have it (the mailgator that wrote it has exited without removing it, killed
 * or crashed, and the pid may since belong to another process, which must not be signalled). A file with a pid
 * alone (where /proc was not readable when it was written) is taken as it is.
 */
export function readPidFile(file: string): PidFileEntry {
  let text: string | null;
  try {
    text = readText(file);
  } catch {
    return { state: "none" };
  }
  return text === null ? { state: "none" } : parsePidFile(text);
}

/** What `claimPidFile` found: the file is this process's now (`text`), or another live serve holds it. */
export type PidClaim =
  | { readonly held: true; readonly text: string }
  | { readonly held: false; readonly pid: number; readonly config: string | null };

/** Between two looks at a pid file that holds no pid (another serve may be writing it): 10 looks in all. */
const PID_FILE_RETRY_MS = 20;

/** Creates `file` holding `text` only if no file has that name; false when one has. */
function createExclusive(tmp: string, file: string, text: string): boolean {
  // A hard link is created whole or not at all (EEXIST): no reader sees the file half written.
  try {
    linkSync(tmp, file);
    return true;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "EEXIST") return false;
    if (code !== "EPERM" && code !== "ENOTSUP" && code !== "EOPNOTSUPP" && code !== "ENOSYS") throw e;
  }
  // A file system without hard links: an exclusive create (O_CREAT | O_EXCL), then the text.
  try {
    writeFileSync(file, text, { flag: "wx", mode: 0o644 });
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw e;
  }
}

/**
 * Makes `file` this process's pid file (`PID START` and `configFile`), unless a live serve holds it: two serves
 * whose audit databases share a folder would share it, and `mailgator reload` for one would signal the other
 * (docs/operations.md "One serve per folder"). The file is created exclusively, so of two serves starting at once
 * only one gets it. A file whose process has exited (or whose pid is another process's now, by its start time) is
 * stale and is taken over: moved aside, and dropped only if what was moved is the text judged stale; if another
 * serve took it over in between, its file is linked back and this one then finds it live. Throws when the file
 * cannot be written or read.
 */
export function claimPidFile(file: string, configFile: string): PidClaim {
  const start = processStart(process.pid);
  const text = `${process.pid}${start === null ? "" : ` ${start}`}\n${configFile}\n`;
  const tmp = `${file}.${process.pid}.tmp`;
  writeFresh(tmp, text, 0o644);
  try {
    for (let attempt = 0; attempt < 10; attempt++) {
      if (createExclusive(tmp, file, text)) return { held: true, text };
      const seen = readText(file);
      if (seen === null) continue; // removed since: try again
      const entry = parsePidFile(seen);
      if (entry.state === "running" && entry.pid !== process.pid && alive(entry.pid))
        return { held: false, pid: entry.pid, config: entry.config };
      if (entry.state === "none") {
        // No pid in it: another serve may be writing it (the exclusive create below a hard link leaves it empty
        // for a moment), so it is never taken over as stale; looked at again shortly, then refused.
        Bun.sleepSync(PID_FILE_RETRY_MS);
        continue;
      }
      const aside = `${file}.${process.pid}.stale`;
      try {
        renameSync(file, aside);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "ENOENT") continue;
        throw e;
      }
      if (readText(aside) !== seen) {
        // Not the file judged stale: another serve wrote it meanwhile. It goes back; if a third one has created the
        // file since, the moved one is left where it is and this serve does not start (both others may be live).
        try {
          linkSync(aside, file);
        } catch {
          throw new Error(`${file} changed while this process took it over; the file it moved is ${aside}`);
        }
      }
      rmSync(aside, { force: true });
    }
    throw new Error(
      `${file} kept changing, or holds no pid, while this process tried to create it; if no mailgator uses this ` +
        "folder, remove it",
    );
  } finally {
    rmSync(tmp, { force: true });
  }
}

/** Removes `file` if it is still the one `claimPidFile` created (`text`): never another process's. */
export function releasePidFile(file: string, text: string): void {
  try {
    if (readText(file) === text) rmSync(file, { force: true });
  } catch {
    // Unreadable: left as it is; the next serve judges it by its pid and start time.
  }
}

/**
 * One reload's outcome as the status file holds it; `seq` counts the reloads of the process `pid`, `config` is the
 * absolute path of the config file it reads (missing in a file written by a mailgator from before it was added).
 */
export interface ReloadStatus extends ReloadResult {
  readonly pid: number;
  readonly seq: number;
  readonly config?: string;
}

let seq = 0;

export function writeStatusFile(
  file: string,
  config: string,
  result: ReloadResult,
  error: (message: string) => void,
): void {
  const status: ReloadStatus = { pid: process.pid, seq: ++seq, config, ...result };
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
