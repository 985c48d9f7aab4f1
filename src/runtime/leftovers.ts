/**
 * What a process stopped between writing a file under a temporary name and renaming, linking or removing it (killed,
 * or the machine lost power) leaves behind (docs/operations.md "Leftovers"): the secrets key's copy
 * (src/state/key.ts), the pid and status files' (src/runtime/state-files.ts), the config's and its backup's
 * (src/mcp/admin-edit.ts). Each temporary name holds the pid of the process that wrote it; such a file is removed
 * only when that process is gone, and only when it was written before the process that removes it started.
 */

import { lstatSync, readdirSync, unlinkSync } from "node:fs";
import { join } from "node:path";

/**
 * A temporary name: exactly `prefix`, a pid (decimal, no leading zero), then what the regular expression `tail`
 * matches, and nothing else.
 */
export interface TemporaryName {
  readonly prefix: string;
  readonly tail: RegExp;
}

/** A temporary name as matched: its prefix, and the pattern of what follows it (the pid, then `tail`). */
interface NamePattern {
  readonly prefix: string;
  readonly rest: RegExp;
}

function patternOf(name: TemporaryName): NamePattern {
  return { prefix: name.prefix, rest: new RegExp(`^([1-9]\\d{0,9})(?:${name.tail.source})$`) };
}

/** The pid in `entry` when it is a temporary name of `name`'s kind, else null. */
function leftoverPid(entry: string, name: NamePattern): number | null {
  if (!entry.startsWith(name.prefix)) return null;
  const m = name.rest.exec(entry.slice(name.prefix.length));
  return m === null ? null : Number(m[1]);
}

/** True only when no process has this pid (ESRCH); EPERM (another user's) or any other error: it may be alive. */
function gone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "ESRCH";
  }
}

/**
 * Removes the leftovers in `dir` whose names are one of `names`: regular files (never followed if a symbolic link)
 * that were written before this process started, by a process that is gone (or by an earlier one with this pid). A
 * process writing such a file now has its own pid, alive, or writes after this one started, so its file is never
 * taken. Anything else is left alone; a folder that cannot be listed, or a file that cannot be removed, is left as it
 * is: a leftover never stops a start.
 */
export function removeLeftovers(dir: string, names: readonly TemporaryName[]): void {
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return;
  }
  // Each name's pattern built once, not once per entry of the folder.
  const patterns = names.map(patternOf);
  for (const entry of entries) {
    let pid: number | null = null;
    for (const name of patterns) pid ??= leftoverPid(entry, name);
    if (pid === null || (pid !== process.pid && !gone(pid))) continue;
    const path = join(dir, entry);
    try {
      const stat = lstatSync(path);
      if (stat.isFile() && stat.mtimeMs < performance.timeOrigin) unlinkSync(path);
    } catch {
      // Gone already, or not ours to remove.
    }
  }
}
