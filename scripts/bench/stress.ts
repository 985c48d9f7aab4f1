/**
 * Write commands under Dovecot's imaptest stress mix (docs/benchmarks.md "Write commands: imaptest's stress mode"):
 * imaptest with `clients` clients for `secs` seconds and its default command mix (each client logs in, selects,
 * fetches, stores flags, appends, expunges and logs out), a fresh user per run, against three targets, interleaved
 * in each round:
 *
 *   direct  Dovecot's plain port;
 *   vault   `mailgator serve` with one allow-all rule, imaptest logging in as an agent of one password account
 *           (its logins take the upstream sessions earlier logouts left: docs/imap.md "Upstream sessions kept for
 *           the next login");
 *   pass    the same in pass-through mode (imaptest's login is the user's own; never kept).
 *
 * Each target first runs `warmup` seconds unmeasured. Prints each run's commands per second, imaptest's mean
 * latency of LOGIN, STORE, STORE \Deleted, EXPUNGE and APPEND, the proxy's CPU per command, and the ratios to
 * direct in the same round.
 *
 *   bun scripts/bench/stress.ts --imaptest PATH [--rounds 3] [--secs 20] [--warmup 10] [--clients 10]
 *                               [--targets direct,vault,pass]
 *
 * imaptest is not part of the project (docs/conformance.md says how to build it): without `--imaptest` (or
 * IMAPTEST=PATH to the binary) the script says so and exits 2. Uses MAILGATOR_UPSTREAMS when set, otherwise starts
 * the servers for the run.
 */

import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { ALLOCATOR_ENV } from "../../src/cli/allocator.ts";
import { generateToken, hashToken } from "../../src/vault/token.ts";
import { readUpstreams, type Upstreams } from "../upstreams/description.ts";
import { freePort, waitForPorts } from "../upstreams/ports.ts";
import { cpuTime } from "../upstreams/processes.ts";
import { benchOptions } from "./args.ts";
import { imapBenchConfig } from "./proxy-child.ts";

/** imaptest's column names, as its reports head them, for the commands the targets are about. */
const WATCHED = { Logi: "LOGIN", Stor: "STORE", Dele: "STORE \\Deleted", Expu: "EXPUNGE", Appe: "APPEND" } as const;

/** What one imaptest run reported. */
export interface StressResult {
  /** Every command of the measured run, over its seconds. */
  readonly commandsPerSecond: number;
  /** Mean latency in ms per column (`Logi`, `Stor`, ...), averaged over its periodic reports. */
  readonly latencyMs: Readonly<Record<string, number>>;
  readonly totals: Readonly<Record<string, number>>;
  /** Lines imaptest printed as errors (a protocol violation it saw). */
  readonly errors: readonly string[];
}

/**
 * Reads imaptest's stress output: the `... ms/cmd avg` line after each periodic report, and the counts under the
 * last `Totals:` (a line of integers, after the percentages). Throws when either is missing: a run that did not
 * get that far (a refused login, a crash) is not a figure.
 */
export function parseStress(output: string, seconds: number): StressResult {
  const lines = output.split(/\r?\n/);
  const at = lines.findLastIndex((l) => l.startsWith("Totals:"));
  if (at === -1) throw new Error("imaptest printed no Totals: (see its output above)");
  const names = (lines[at + 1] ?? "").trim().split(/\s+/);
  const counts = lines.slice(at + 2).find((l) => /^\s*\d+(\s+\d+)*\s*$/.test(l));
  if (counts === undefined || names.length === 0) throw new Error("imaptest's Totals: has no counts");
  const values = counts.trim().split(/\s+/).map(Number);
  const totals: Record<string, number> = {};
  for (const [i, n] of names.entries()) totals[n] = values[i] ?? 0;
  const avgLines = lines.filter((l) => l.trimEnd().endsWith("ms/cmd avg"));
  if (avgLines.length === 0) throw new Error("imaptest printed no latency report");
  const latencyMs: Record<string, number> = {};
  for (const [i, n] of names.entries()) {
    let sum = 0;
    for (const l of avgLines) sum += Number(l.trim().split(/\s+/)[i] ?? 0);
    latencyMs[n] = sum / avgLines.length;
  }
  const all = values.reduce((a, b) => a + b, 0);
  return {
    commandsPerSecond: all / seconds,
    latencyMs,
    totals,
    errors: lines.filter((l) => l.startsWith("Error")),
  };
}

const argv = process.argv.slice(2);
const USAGE =
  "bun scripts/bench/stress.ts --imaptest PATH [--rounds 3] [--secs 20] [--warmup 10] [--clients 10]" +
  " [--targets direct,vault,pass]";
const OPTIONS = { values: ["imaptest", "rounds", "secs", "warmup", "clients", "targets"], switches: [] };

type Target = "direct" | "vault" | "pass";

interface Run extends StressResult {
  readonly target: Target;
  /** The proxy's CPU (user + system) over the measured run, in ms per command; null for direct. */
  readonly cpuMsPerCommand: number | null;
}

/** The proxy's user + system CPU time in ms. */
function cpuMs(pid: number): number {
  const { user, sys } = cpuTime(pid);
  return (user + sys) * 1000;
}

/** 300 small text messages in mbox form, for imaptest's APPENDs (about 440 octets each). */
function writeMbox(path: string): void {
  const out: string[] = [];
  for (let i = 1; i <= 300; i++) {
    out.push(
      `From sender${i}@mailgator.test Thu Jan  1 00:00:00 2026`,
      `From: Sender ${i} <sender${i}@mailgator.test>`,
      "To: stress@mailgator.test",
      `Subject: stress message ${i}`,
      `Message-ID: <stress-${i}@mailgator.test>`,
      "Date: Thu, 1 Jan 2026 00:00:00 +0000",
      "",
      `Body of message ${i}: a line of plain text that makes the message about as long as a short note.`,
      "Another line, so that the body is more than one line long, as most messages are.",
      "",
    );
  }
  writeFileSync(path, out.join("\n"));
}

function imaptest(binary: string, args: readonly string[]): Promise<string> {
  return new Promise((done, fail) => {
    const child = spawn(binary, args, { stdio: ["ignore", "pipe", "pipe"] });
    let text = "";
    child.stdout.on("data", (d: Buffer) => (text += d.toString("utf8")));
    child.stderr.on("data", (d: Buffer) => (text += d.toString("utf8")));
    child.once("error", fail);
    child.once("close", () => done(text));
  });
}

async function runTarget(
  target: Target,
  up: Upstreams,
  options: { binary: string; mbox: string; clients: number; secs: number; warmup: number; round: number },
): Promise<Run> {
  const { addUser } = await import("../upstreams/users.ts");
  const address = `stress-${target}-${options.round}-${Date.now().toString(36)}@${up.userDomain}`;
  const user = addUser(up, address, "stress-password");
  let port = up.ports.imap;
  let login = { user: user.user, pass: user.password };
  let proxy: { pid: number; stop: () => Promise<void> } | null = null;
  const dir = mkdtempSync(join(tmpdir(), "mailgator-bench-stress-"));
  try {
    if (target !== "direct") {
      port = await freePort();
      const token = generateToken();
      const vault =
        target === "vault"
          ? `
[accounts.main]
username = "${user.user}"
password = "${user.password}"

[[agents]]
name = "stress"
token_hash = "${hashToken(token)}"
account = "main"
`
          : "";
      if (target === "vault") login = { user: "stress", pass: token };
      const config = join(dir, "mailgator.toml");
      writeFileSync(
        config,
        imapBenchConfig({
          listen: `127.0.0.1:${port}`,
          upstream: { host: up.host, port: up.ports.imap },
          dir,
          extra: vault,
        }),
      );
      const main = resolve(import.meta.dir, "..", "..", "src", "cli", "main.ts");
      const child = Bun.spawn([process.execPath, main, "serve", "-c", config], {
        stdout: "ignore",
        stderr: "ignore",
        env: { ...ALLOCATOR_ENV, ...process.env },
      });
      proxy = {
        pid: child.pid,
        async stop() {
          child.kill("SIGTERM");
          await child.exited;
        },
      };
      await waitForPorts({ mailgator: port }, 10_000);
    }
    const common = [
      "host=127.0.0.1",
      `port=${port}`,
      `user=${login.user}`,
      `pass=${login.pass}`,
      `mbox=${options.mbox}`,
      `clients=${options.clients}`,
    ];
    if (options.warmup > 0) await imaptest(options.binary, [...common, `secs=${options.warmup}`]);
    const before = proxy === null ? 0 : cpuMs(proxy.pid);
    const output = await imaptest(options.binary, [...common, `secs=${options.secs}`]);
    const used = proxy === null ? 0 : cpuMs(proxy.pid) - before;
    let result: StressResult;
    try {
      result = parseStress(output, options.secs);
    } catch (error) {
      console.error(output);
      throw error;
    }
    const commands = result.commandsPerSecond * options.secs;
    return { ...result, target, cpuMsPerCommand: proxy === null ? null : used / commands };
  } finally {
    await proxy?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

function describe(run: Run, direct: Run | undefined): string {
  const ratio = (a: number, b: number | undefined): string => (b ? ` (${(a / b).toFixed(2)}x)` : "");
  const parts = [`${run.target.padEnd(6)} ${run.commandsPerSecond.toFixed(0).padStart(5)} cmd/s`];
  if (run.target !== "direct") parts[0] += ratio(run.commandsPerSecond, direct?.commandsPerSecond);
  for (const [column, label] of Object.entries(WATCHED)) {
    const ms = run.latencyMs[column] ?? Number.NaN;
    const base = run.target === "direct" ? undefined : direct?.latencyMs[column];
    parts.push(`${label} ${ms.toFixed(1)} ms${ratio(ms, base)}`);
  }
  if (run.cpuMsPerCommand !== null) parts.push(`proxy CPU ${run.cpuMsPerCommand.toFixed(2)} ms/cmd`);
  if (run.errors.length > 0) parts.push(`${run.errors.length} imaptest error(s): ${run.errors[0]}`);
  return parts.join(" | ");
}

async function main(): Promise<void> {
  const opts = benchOptions(argv, USAGE, OPTIONS);
  const binary = opts.text("imaptest", process.env["IMAPTEST"] ?? "");
  if (binary === "" || !existsSync(binary)) {
    console.error(
      "stress: needs Dovecot's imaptest: --imaptest PATH or IMAPTEST=PATH (docs/conformance.md says how to build it)",
    );
    process.exit(2);
  }
  const rounds = opts.number("rounds", 3);
  const secs = opts.number("secs", 20);
  const warmup = opts.number("warmup", 10);
  const clients = opts.number("clients", 10);
  const targets = opts.text("targets", "direct,vault,pass").split(",") as Target[];
  for (const t of targets) if (!["direct", "vault", "pass"].includes(t)) throw new Error(`stress: no target ${t}`);

  let servers: string | null = null;
  let up: Upstreams;
  const described = process.env["MAILGATOR_UPSTREAMS"];
  if (described) {
    up = readUpstreams(described);
  } else {
    const { startUpstreams } = await import("../upstreams/start.ts");
    servers = mkdtempSync(join(tmpdir(), "mailgator-bench-stress-servers-"));
    up = await startUpstreams({ dir: servers });
  }
  const work = mkdtempSync(join(tmpdir(), "mailgator-bench-stress-mbox-"));
  const mbox = join(work, "stress.mbox");
  writeMbox(mbox);
  console.log(`stress: imaptest, ${clients} clients, ${secs} s measured after ${warmup} s, ${rounds} round(s)`);
  const ratios = new Map<Target, number[]>();
  try {
    for (let round = 1; round <= rounds; round++) {
      const runs: Run[] = [];
      for (const target of targets) {
        runs.push(await runTarget(target, up, { binary, mbox, clients, secs, warmup, round }));
      }
      const direct = runs.find((r) => r.target === "direct");
      console.log(`round ${round}:`);
      for (const run of runs) {
        console.log(`  ${describe(run, direct)}`);
        if (run.target === "direct" || direct === undefined) continue;
        ratios.set(run.target, [...(ratios.get(run.target) ?? []), run.commandsPerSecond / direct.commandsPerSecond]);
      }
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
    if (servers !== null) {
      const { stopUpstreams } = await import("../upstreams/stop.ts");
      await stopUpstreams({ dir: servers });
      rmSync(servers, { recursive: true, force: true });
    }
  }
  for (const [target, r] of ratios)
    console.log(`${target}: ${r.map((x) => `${x.toFixed(2)}x`).join(", ")} direct's commands/s`);
  console.log("targets: >= 0.8x direct's commands/s; APPEND, STORE and EXPUNGE latency <= 2x direct's");
}

if (import.meta.main) await main();
