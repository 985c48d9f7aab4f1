/**
 * Stops exactly what start.ts started in a runtime folder, by recorded PID (and start time),
 * and reports any process of theirs or any port still alive afterwards.
 *
 *   bun scripts/upstreams/stop.ts [--dir D]
 */
import { existsSync, rmSync } from "node:fs";
import type { Upstreams } from "./description.ts";
import { readUpstreams } from "./description.ts";
import { layout } from "./layout.ts";
import { withLock } from "./lock.ts";
import { isListening } from "./ports.ts";
import type { TrackedProcess } from "./processes.ts";
import { commandLine, processTree, terminate, waitForExit } from "./processes.ts";

export interface StopReport {
  /** The description that was running, or undefined when nothing was. */
  readonly stopped: Upstreams | undefined;
  /** Processes of the servers (masters and their children) still running after the stop. */
  readonly leftoverProcesses: readonly { pid: number; command: string }[];
  /** Ports of the servers that still accept connections. */
  readonly leftoverPorts: readonly number[];
}

/** Terminates the processes (helpers first) and waits for their whole trees to exit. */
export async function stopProcesses(processes: readonly TrackedProcess[]): Promise<TrackedProcess[]> {
  const trees = processes.flatMap(processTree);
  for (const process of [...processes].reverse()) await terminate(process);
  return waitForExit(trees, 5000);
}

export async function stopUpstreams(options: { dir?: string } = {}): Promise<StopReport> {
  const paths = layout(options.dir);
  if (!existsSync(paths.descriptionFile)) return { stopped: undefined, leftoverProcesses: [], leftoverPorts: [] };
  return withLock(paths.lockFile, async () => {
    const description = readUpstreams(paths.descriptionFile);
    const left = await stopProcesses(description.processes);
    rmSync(paths.descriptionFile, { force: true });
    const ports = Object.values(description.ports);
    const listening = await Promise.all(ports.map(async (port) => ((await isListening(port)) ? port : 0)));
    return {
      stopped: description,
      leftoverProcesses: left.map((process) => ({ pid: process.pid, command: commandLine(process.pid) })),
      leftoverPorts: listening.filter((port) => port !== 0),
    };
  });
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const dirIndex = args.indexOf("--dir");
  const dir = dirIndex >= 0 ? args[dirIndex + 1] : undefined;
  const report = await stopUpstreams(dir === undefined ? {} : { dir });
  if (report.stopped === undefined) {
    console.error(`upstreams: nothing recorded as running in ${layout(dir).dir}`);
  } else {
    console.error(`upstreams: stopped ${report.stopped.processes.map((p) => `${p.name} (pid ${p.pid})`).join(", ")}`);
  }
  for (const left of report.leftoverProcesses)
    console.error(`upstreams: still running: pid ${left.pid} ${left.command}`);
  for (const port of report.leftoverPorts) console.error(`upstreams: still listening: 127.0.0.1:${port}`);
  process.exit(report.leftoverProcesses.length + report.leftoverPorts.length === 0 ? 0 : 1);
}
