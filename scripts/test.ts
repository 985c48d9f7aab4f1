/**
 * The test runner behind `npm test`: starts Dovecot and Postfix in a runtime folder of its
 * own (installing them, and what only the tests run (Chromium, fail2ban, mutt, isync), first when
 * missing and root), runs `bun test --parallel` with
 * MAILGATOR_UPSTREAMS pointing at their description, stops them, and fails the run if any of
 * their processes or ports is left. Extra arguments go to `bun test`.
 *
 * With MAILGATOR_UPSTREAMS already set, uses those servers and leaves them running.
 */
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { ensurePackages } from "./upstreams/install.ts";
import { runRoot } from "./upstreams/layout.ts";
import { commandLine } from "./upstreams/processes.ts";
import { startUpstreams } from "./upstreams/start.ts";
import type { StopReport } from "./upstreams/stop.ts";
import { stopUpstreams } from "./upstreams/stop.ts";

const ROOT = resolve(import.meta.dir, "..");
/** `.run/` in the checkout, or a folder under /var/tmp when the checkout is out of the daemons' reach. */
const RUN = runRoot();
const args = process.argv.slice(2);
const log = (line: string) => console.error(`test: ${line}`);
/** Per-test timeout: a failed login alone takes ~2 s at Dovecot, plus delivery. */
const BUNFIG_TIMEOUT_MS = 30_000;

/** Runs of this script that were killed leave a folder (and maybe servers) behind: clean them. */
async function cleanAbandonedRuns(): Promise<void> {
  if (!existsSync(RUN)) return;
  for (const name of readdirSync(RUN)) {
    if (!name.startsWith("test-")) continue;
    const dir = join(RUN, name);
    const runner = Number(existsSync(join(dir, "runner.pid")) ? readFileSync(join(dir, "runner.pid"), "utf8") : 0);
    if (runner > 0 && alive(runner)) continue;
    const report = await stopUpstreams({ dir });
    if (report.stopped !== undefined) log(`stopped servers left by an earlier run in ${dir}`);
    if (report.leftoverProcesses.length === 0) rmSync(dir, { recursive: true, force: true });
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Processes whose command line names the runtime folder (a test that left a server running, say). */
function processesNaming(dir: string): string[] {
  const found: string[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const command = commandLine(Number(entry));
    if (command.includes(dir)) found.push(`pid ${entry}: ${command}`);
  }
  return found;
}

async function runBunTest(env: Record<string, string | undefined>): Promise<number> {
  const parallel = args.some((arg) => arg === "--parallel" || arg.startsWith("--parallel="));
  // bunfig.toml's [test] timeout is not applied to --parallel workers; pass it on the command line.
  const timeout = args.some((arg) => arg.startsWith("--timeout")) ? [] : [`--timeout=${BUNFIG_TIMEOUT_MS}`];
  const child = Bun.spawn([process.execPath, "test", ...(parallel ? [] : ["--parallel"]), ...timeout, ...args], {
    cwd: ROOT,
    env,
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  });
  // Ctrl-C reaches bun test too (same process group); wait for it, then clean up.
  const ignore = () => {};
  process.on("SIGINT", ignore);
  process.on("SIGTERM", () => child.kill("SIGTERM"));
  const code = await child.exited;
  process.off("SIGINT", ignore);
  return code;
}

let report: StopReport = { stopped: undefined, leftoverProcesses: [], leftoverPorts: [] };

async function main(): Promise<number> {
  const given = process.env["MAILGATOR_UPSTREAMS"];
  if (given !== undefined && given !== "") {
    log(`using the servers described in ${given} (MAILGATOR_UPSTREAMS); they stay running`);
    return runBunTest(process.env);
  }

  try {
    // One apt-get for the mail servers, the browser tests/browser/ drives (Debian's chromium) and the other tools
    // only the tests run (fail2ban, mutt, isync).
    ensurePackages({ nginx: false, browser: true, log });
  } catch (error) {
    console.error(
      `\ntest: FAILED: packages the tests need are missing, so no test ran.\n` +
        `${error instanceof Error ? error.message : String(error)}\n`,
    );
    return 1;
  }
  await cleanAbandonedRuns();
  const dir = join(RUN, `test-${process.pid}`);
  rmSync(dir, { recursive: true, force: true });
  log(`runtime folder: ${dir}`);
  const started = performance.now();
  let descriptionFile: string;
  try {
    const upstreams = await startUpstreams({ dir, log });
    writeFileSync(join(dir, "runner.pid"), `${process.pid}\n`);
    descriptionFile = join(upstreams.dir, "upstreams.json");
    log(
      `Dovecot imap ${upstreams.ports.imap}/imaps ${upstreams.ports.imaps}, ` +
        `Postfix smtp ${upstreams.ports.smtp}/smtps ${upstreams.ports.smtps} ` +
        `ready in ${((performance.now() - started) / 1000).toFixed(1)} s`,
    );
  } catch (error) {
    console.error(
      "\ntest: FAILED: the upstream mail servers did not start, so no test ran.\n" +
        `${error instanceof Error ? error.message : String(error)}\n`,
    );
    await stopUpstreams({ dir }).catch(() => undefined);
    return 1;
  }

  let code = 1;
  try {
    code = await runBunTest({ ...process.env, MAILGATOR_UPSTREAMS: descriptionFile });
  } finally {
    report = await stopUpstreams({ dir });
  }
  const strays = processesNaming(dir);
  const problems = [
    ...report.leftoverProcesses.map((left) => `process still running: pid ${left.pid} ${left.command}`),
    ...report.leftoverPorts.map((port) => `port still listening: 127.0.0.1:${port}`),
    ...strays.map((stray) => `process still using ${dir}: ${stray}`),
  ];
  if (problems.length > 0) {
    console.error(
      `\ntest: FAILED: the fixtures did not shut down cleanly:\n  ${problems.join("\n  ")}\nLogs are in ${dir}`,
    );
    return code === 0 ? 1 : code;
  }
  if (code === 0) rmSync(dir, { recursive: true, force: true });
  else log(`bun test exited with ${code}; server logs kept in ${dir}`);
  log("servers stopped; no process or port left");
  return code;
}

process.exit(await main());
