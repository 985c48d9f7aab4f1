/**
 * Processes the fixtures start, identified by PID plus the kernel's start time so that a
 * recycled PID is never mistaken for ours (and never killed).
 */
import { closeSync, existsSync, openSync, readdirSync, readFileSync } from "node:fs";

/** A process we started (a daemon's master), as recorded in upstreams.json. */
export interface TrackedProcess {
  readonly name: string;
  readonly pid: number;
  /** Field 22 of /proc/PID/stat (clock ticks since boot). */
  readonly startTime: number;
}

interface ProcStat {
  readonly pid: number;
  readonly ppid: number;
  readonly startTime: number;
  readonly state: string;
}

function readStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // The command name is in parentheses and may contain spaces: split after the last ")".
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return { pid, state: fields[0] ?? "?", ppid: Number(fields[1]), startTime: Number(fields[19]) };
}

/**
 * User and system CPU seconds a process has used so far, from /proc/PID/stat (utime and stime, fields 14 and 15, in
 * clock ticks of USER_HZ = 100: 10 ms steps); throws once the process is gone.
 */
export function cpuTime(pid: number): { user: number; sys: number } {
  const text = readFileSync(`/proc/${pid}/stat`, "utf8");
  // The command name is in parentheses and may contain spaces: split after the last ")".
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return { user: Number(fields[11]) / 100, sys: Number(fields[12]) / 100 };
}

/** Records a running process, or throws when it is not running. */
export function track(name: string, pid: number): TrackedProcess {
  const stat = readStat(pid);
  if (stat === undefined) throw new Error(`upstreams: ${name} (pid ${pid}) is not running`);
  return { name, pid, startTime: stat.startTime };
}

/** True when the recorded process still runs (same PID, same start time, not a zombie). */
export function isAlive(process: TrackedProcess): boolean {
  const stat = readStat(process.pid);
  return stat !== undefined && stat.startTime === process.startTime && stat.state !== "Z";
}

/** The process and all its descendants, as tracked processes (for the leftover check after stop). */
export function processTree(root: TrackedProcess): TrackedProcess[] {
  if (!isAlive(root)) return [];
  const children = new Map<number, ProcStat[]>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = readStat(Number(entry));
    if (stat === undefined) continue;
    const siblings = children.get(stat.ppid) ?? [];
    siblings.push(stat);
    children.set(stat.ppid, siblings);
  }
  const tree: TrackedProcess[] = [root];
  const queue = [root.pid];
  while (queue.length > 0) {
    const pid = queue.shift() as number;
    for (const child of children.get(pid) ?? []) {
      tree.push({ name: `${root.name} child`, pid: child.pid, startTime: child.startTime });
      queue.push(child.pid);
    }
  }
  return tree;
}

/** The command line of a process, for messages. */
export function commandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ").trim();
  } catch {
    return "?";
  }
}

/**
 * Sends SIGTERM to the recorded process and waits for it to exit; SIGKILL after `graceMs`.
 * Does nothing when the PID now belongs to someone else.
 */
export async function terminate(target: TrackedProcess, graceMs = 5000): Promise<void> {
  if (!isAlive(target)) return;
  try {
    process.kill(target.pid, "SIGTERM");
  } catch {
    return;
  }
  const deadline = Date.now() + graceMs;
  while (isAlive(target)) {
    if (Date.now() > deadline) {
      try {
        process.kill(target.pid, "SIGKILL");
      } catch {
        return;
      }
    }
    await Bun.sleep(20);
  }
}

/** Waits until none of the processes runs; returns those still running at the deadline. */
export async function waitForExit(processes: readonly TrackedProcess[], timeoutMs: number): Promise<TrackedProcess[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = processes.filter(isAlive);
    if (left.length === 0 || Date.now() > deadline) return left;
    await Bun.sleep(50);
  }
}

/**
 * Runs a command that daemonizes (dovecot, postfix start, nginx) and returns its exit code and
 * output. Output goes through a file, not a pipe: the daemon inherits the descriptors and
 * would keep a pipe open, so waiting for its end would hang.
 */
export function runDaemonCommand(argv: string[], outputFile: string): { exitCode: number; output: string } {
  const fd = openSync(outputFile, "w");
  try {
    const result = Bun.spawnSync(argv, { stdin: "ignore", stdout: fd, stderr: fd });
    return { exitCode: result.exitCode ?? -1, output: readFileSync(outputFile, "utf8").trim() };
  } finally {
    closeSync(fd);
  }
}

/**
 * Starts a daemon with `argv` and waits until it has written a positive PID
 * to `pidFile`; `logTail` adds the end of its log to any error.
 */
export async function startDaemon(
  name: string,
  argv: string[],
  outputFile: string,
  pidFile: string,
  logTail: () => string,
): Promise<number> {
  const result = runDaemonCommand(argv, outputFile);
  if (result.exitCode !== 0) {
    throw new Error(`upstreams: ${name} did not start (exit ${result.exitCode}): ${result.output}${logTail()}`);
  }
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    if (existsSync(pidFile)) {
      const pid = Number(readFileSync(pidFile, "utf8").trim());
      if (pid > 0) return pid;
    }
    await Bun.sleep(20);
  }
  throw new Error(`upstreams: ${name} wrote no ${pidFile}${logTail()}`);
}
