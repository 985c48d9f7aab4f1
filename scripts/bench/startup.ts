/**
 * Start-up time of the compiled binary (docs/benchmarks.md, "Start-up"): from spawning `mailgator serve` to both
 * the IMAP and the SMTP port accepting connections, median of 10 runs, for each build variant.
 *
 *   bun scripts/bench/startup.ts [runs]
 *
 * Variants: the plain `bun build --compile` binary; the same with `--bytecode`; and each started with the
 * allocator variable already set, so that serve does not re-execute itself (src/cli/allocator.ts): the difference
 * is the price of that second exec. Upstreams need not exist: serve does not connect to them before a client does.
 */

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { ALLOCATOR_ENV } from "../../src/cli/allocator.ts";
import { freePort } from "../upstreams/ports.ts";
import { cpuTime } from "../upstreams/processes.ts";
import { benchOptions } from "./args.ts";

const ROOT = resolve(import.meta.dir, "../..");
const RUNS = benchOptions(process.argv.slice(2), "bun scripts/bench/startup.ts [runs]", {
  positional: "runs",
}).positional(10);
const POLL_MS = 1;
const GIVE_UP_MS = 10_000;

function accepts(port: number): Promise<boolean> {
  return new Promise((done) => {
    const s = tcpConnect({ host: "127.0.0.1", port });
    s.once("connect", () => {
      s.destroy();
      done(true);
    });
    s.once("error", () => done(false));
  });
}

async function build(dir: string, bytecode: boolean): Promise<string> {
  const out = join(dir, bytecode ? "mailgator-bytecode" : "mailgator");
  const args = [
    "build",
    "--compile",
    ...(bytecode ? ["--bytecode", "--format=esm"] : []),
    "src/cli/main.ts",
    "--outfile",
    out,
  ];
  const p = Bun.spawn([process.execPath, ...args], { cwd: ROOT, stdout: "ignore", stderr: "inherit" });
  if ((await p.exited) !== 0) throw new Error(`bun ${args.join(" ")} failed`);
  return out;
}

/**
 * CPU time (user + system) the process has used, in ms, from /proc (kept across execve: the same process). Clock
 * ticks of 10 ms: only a median over runs says much. Less sensitive than wall time to other work on the machine.
 */
function cpuMs(pid: number): number {
  const { user, sys } = cpuTime(pid);
  return (user + sys) * 1000;
}

/** Milliseconds from spawn to both ports accepting, and the CPU time the process had used by then. */
async function once(
  binary: string,
  dir: string,
  env: Record<string, string | undefined>,
): Promise<{ wall: number; cpu: number }> {
  const [imap, smtp] = [await freePort(), await freePort()];
  const config = join(dir, "startup.toml");
  writeFileSync(
    config,
    [
      "[imap]",
      `listen_addr = "127.0.0.1:${imap}"`,
      'upstream_addr = "127.0.0.1:993"',
      "[smtp]",
      `listen_addr = "127.0.0.1:${smtp}"`,
      'upstream_addr = "127.0.0.1:465"',
      "[audit]",
      `path = "${join(dir, "audit.db")}"`,
      "",
    ].join("\n"),
  );
  const began = performance.now();
  const child = Bun.spawn([binary, "serve", "-c", config], { env, stdout: "ignore", stderr: "ignore" });
  const up = { imap: false, smtp: false };
  try {
    while (!up.imap || !up.smtp) {
      if (performance.now() - began > GIVE_UP_MS) throw new Error(`${binary}: not listening after ${GIVE_UP_MS} ms`);
      if (child.exitCode !== null) throw new Error(`${binary}: exited with ${child.exitCode} before listening`);
      const [i, s] = await Promise.all([up.imap || accepts(imap), up.smtp || accepts(smtp)]);
      up.imap = i;
      up.smtp = s;
      if (!up.imap || !up.smtp) await Bun.sleep(POLL_MS);
    }
    return { wall: performance.now() - began, cpu: cpuMs(child.pid) };
  } finally {
    child.kill("SIGTERM");
    await child.exited;
  }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

const dir = mkdtempSync(join(tmpdir(), "mailgator-startup-"));
try {
  const plain = await build(dir, false);
  const bytecode = await build(dir, true);
  const base: Record<string, string | undefined> = { ...process.env };
  for (const name of Object.keys(ALLOCATOR_ENV)) delete base[name];
  const preset = { ...base, ...ALLOCATOR_ENV };
  const variants: [string, string, Record<string, string | undefined>][] = [
    ["compile", plain, base],
    ["compile --bytecode", bytecode, base],
    ["compile, allocator preset (no re-exec)", plain, preset],
    ["compile --bytecode, allocator preset (no re-exec)", bytecode, preset],
  ];
  // The last run of the other variants stays warm in the page cache: one unmeasured start of each first.
  for (const [, binary, env] of variants) await once(binary, dir, env);
  console.log(`start-up to both ports accepting, ${RUNS} runs each: wall ms (median, min, max), CPU ms (median)`);
  for (const [name, binary, env] of variants) {
    const runs: { wall: number; cpu: number }[] = [];
    for (let i = 0; i < RUNS; i++) runs.push(await once(binary, dir, env));
    const times = runs.map((r) => r.wall);
    const f = (n: number) => n.toFixed(0).padStart(5);
    const cpu = median(runs.map((r) => r.cpu));
    console.log(`${name.padEnd(52)} ${f(median(times))} ${f(Math.min(...times))} ${f(Math.max(...times))} ${f(cpu)}`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
