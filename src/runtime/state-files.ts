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

export function writePidFile(file: string, warn: (message: string) => void): void {
  try {
    writeAtomic(file, `${process.pid}\n`, 0o644);
  } catch (e) {
    warn(`cannot write the pid file ${file} (mailgator reload will not find this process): ${(e as Error).message}`);
  }
}

/** The pid in a pid file, or null when there is none or it does not hold a pid. */
export function readPidFile(file: string): number | null {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return null;
  }
  const m = /^(\d{1,10})\s*$/.exec(text);
  return m ? Number(m[1]) : null;
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
