/**
 * Memory of the IMAP proxy while agents hold large fetched messages unread (docs/reliability.md "Response memory"):
 * one message of `--size` MiB is appended to Dovecot directly, the proxy runs in a child process with a response
 * memory budget of `--budget` MiB (the tests-only option of startImapProxy, src/imap/index.ts) and the allocator
 * settings `mailgator serve` gives itself, and `--agents` sessions each send `UID FETCH 1 BODY.PEEK[]` and do not read.
 * For `--hold` seconds the proxy's RSS (`VmRSS`, and `VmHWM`, the most it ever had, from /proc) and the budget's
 * bookkeeping (octets reserved, reservations waiting) are sampled every 100 ms; then every agent reads its message
 * whole, all at once (which sessions hold the budget and which wait depends on the order upstream answered in),
 * with the same samples, and the proxy's RSS is read once more a few seconds after.
 *
 *   bun scripts/bench/response-memory.ts [--agents 9] [--size 100] [--budget 512] [--hold 10] [--trace]
 *
 * `--trace` prints every sample. Uses MAILGATOR_UPSTREAMS when set, otherwise starts the servers with
 * scripts/upstreams. Dovecot's default limit of ten sessions per user and address (`mail_max_userip_connections`)
 * bounds `--agents` at ten.
 */

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { benchOptions } from "./args.ts";
import { imapBenchConfig, serveImapChild, startChild, upstreamDescription } from "./proxy-child.ts";

const MiB = 1024 * 1024;
const argv = process.argv.slice(2);
const USAGE = "bun scripts/bench/response-memory.ts [--agents 9] [--size 100] [--budget 512] [--hold 10] [--trace]";
const OPTIONS = { values: ["agents", "size", "budget", "hold"], switches: ["trace"] };

if (argv[0] === "serve") await serve(argv[1]!, Number(argv[2]), argv[3]!);
else await main();

/** Child mode: the proxy with a budget of `budget` octets; its bookkeeping written to `statsFile` every 50 ms. */
async function serve(tomlPath: string, budget: number, statsFile: string): Promise<void> {
  const proxy = await serveImapChild(tomlPath, { responseMemoryBudget: budget });
  let peak = 0;
  setInterval(() => {
    const { used, waiting } = proxy.responseMemory;
    peak = Math.max(peak, used);
    writeFileSync(statsFile, JSON.stringify({ used, waiting, peak }));
  }, 50);
}

/** A raw IMAP session that counts what it received and can stop reading. */
class Agent {
  readonly socket: Socket;
  received = 0;
  #tail = "";
  #wanted: { tag: string; done: () => void; failed: (e: Error) => void } | null = null;

  constructor(socket: Socket) {
    this.socket = socket;
    socket.on("data", (chunk: Buffer) => {
      this.received += chunk.length;
      this.#tail = (this.#tail + chunk.subarray(Math.max(0, chunk.length - 512)).toString("latin1")).slice(-512);
      const w = this.#wanted;
      if (w === null) return;
      const m = new RegExp(`(^|\\r\\n)${w.tag} (OK|NO|BAD)[^\\r]*\\r\\n$`).exec(this.#tail);
      if (m === null) return;
      this.#wanted = null;
      if (m[2] === "OK") w.done();
      else w.failed(new Error(`response-memory: ${m[0].trim()}`));
    });
    socket.on("close", () => this.#wanted?.failed(new Error("response-memory: connection closed")));
  }

  static async open(port: number): Promise<Agent> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect({ host: "127.0.0.1", port }, () => resolve(s));
      s.once("error", reject);
    });
    const agent = new Agent(socket);
    await agent.tagged("*", "");
    return agent;
  }

  /** Sends `text` (none for the greeting) and resolves on its tagged OK. */
  tagged(tag: string, text: string): Promise<void> {
    const done = new Promise<void>((resolve, reject) => {
      this.#tail = "";
      this.#wanted = { tag: tag === "*" ? "\\*" : tag, done: resolve, failed: reject };
    });
    if (text !== "") this.socket.write(`${tag} ${text}\r\n`);
    return done;
  }
}

function proc(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kib = (name: string): number => Number(new RegExp(`${name}:\\s+(\\d+) kB`).exec(status)![1]) / 1024;
  return { rss: kib("VmRSS"), hwm: kib("VmHWM") };
}

async function main(): Promise<void> {
  const opts = benchOptions(argv, USAGE, OPTIONS);
  const agents = opts.number("agents", 9);
  const size = opts.number("size", 100) * MiB;
  const budget = opts.number("budget", 512) * MiB;
  const holdMs = opts.number("hold", 10) * 1000;
  const trace = opts.has("trace");
  const up = await upstreamDescription();
  const { addUser } = await import("../upstreams/users.ts");
  const user = addUser(up, `bench-memory-${Date.now().toString(36)}@${up.userDomain}`, "bench-password");

  // One message of `size` octets, appended to Dovecot directly.
  const head = `From: a@bench.test\r\nTo: ${user.user}\r\nSubject: large\r\n\r\n`;
  const line = `${"x".repeat(76)}\r\n`;
  const body = line.repeat(Math.ceil((size - head.length) / line.length));
  const message = Buffer.from((head + body).slice(0, size), "latin1");
  const seeder = await Agent.open(up.ports.imap);
  await seeder.tagged("L", `LOGIN "${user.user}" "${user.password}"`);
  seeder.socket.write(`A APPEND INBOX {${message.length}+}\r\n`);
  seeder.socket.write(message);
  const appended = seeder.tagged("A", "");
  seeder.socket.write("\r\n");
  await appended;
  seeder.socket.end("Z LOGOUT\r\n");

  const dir = mkdtempSync(join(tmpdir(), "mailgator-bench-memory-"));
  const toml = join(dir, "mailgator.toml");
  const statsFile = join(dir, "memory.json");
  writeFileSync(toml, imapBenchConfig({ upstream: { host: up.host, port: up.ports.imap }, dir }));
  const child = await startChild([import.meta.path, "serve", toml, String(budget), statsFile]);
  const stats = (): { used: number; waiting: number; peak: number } => {
    try {
      return JSON.parse(readFileSync(statsFile, "utf8"));
    } catch {
      return { used: 0, waiting: 0, peak: 0 };
    }
  };
  const fmt = (n: number): string => n.toFixed(0);
  try {
    const sessions: Agent[] = [];
    for (let i = 0; i < agents; i++) {
      const a = await Agent.open(child.port);
      await a.tagged("L", `LOGIN "${user.user}" "${user.password}"`);
      await a.tagged("S", "SELECT INBOX");
      sessions.push(a);
    }
    await Bun.sleep(1000);
    const base = proc(child.pid);
    console.log(
      `response-memory: ${agents} agents, a ${fmt(size / MiB)} MiB message each, budget ${fmt(budget / MiB)} MiB; ` +
        `proxy RSS with the agents logged in: ${fmt(base.rss)} MiB`,
    );
    for (const a of sessions) {
      a.socket.pause();
      a.socket.write("F UID FETCH 1 BODY.PEEK[]\r\n");
    }
    let maxRss = 0;
    const start = performance.now();
    while (performance.now() - start < holdMs) {
      await Bun.sleep(100);
      const now = proc(child.pid).rss;
      maxRss = Math.max(maxRss, now);
      if (trace) {
        const st = stats();
        const at = ((performance.now() - start) / 1000).toFixed(1);
        console.log(`    ${at} s: RSS ${fmt(now)} MiB, reserved ${fmt(st.used / MiB)} MiB, ${st.waiting} waiting`);
      }
    }
    const held = proc(child.pid);
    const s = stats();
    console.log(
      `  not reading, after ${holdMs / 1000} s: RSS ${fmt(held.rss)} MiB (at most ${fmt(maxRss)}), ` +
        `VmHWM ${fmt(held.hwm)} MiB; reserved ${fmt(s.used / MiB)} MiB (at most ${fmt(s.peak / MiB)}), ` +
        `${s.waiting} waiting`,
    );
    let drainMax = 0;
    const sampler = setInterval(() => {
      const now = proc(child.pid).rss;
      drainMax = Math.max(drainMax, now);
      if (trace) console.log(`    reading: RSS ${fmt(now)} MiB, reserved ${fmt(stats().used / MiB)} MiB`);
    }, 100);
    const t = performance.now();
    await Promise.all(
      sessions.map((a) => {
        const done = a.tagged("F", "");
        a.socket.resume();
        return done;
      }),
    );
    clearInterval(sampler);
    const seconds = (performance.now() - t) / 1000;
    const total = sessions.reduce((n, a) => n + a.received, 0);
    await Bun.sleep(3000);
    const after = proc(child.pid);
    console.log(
      `  read in ${seconds.toFixed(1)} s (${fmt(total / MiB)} MiB received): RSS at most ` +
        `${fmt(drainMax)} MiB, VmHWM ${fmt(after.hwm)} MiB; 3 s later RSS ${fmt(after.rss)} MiB, reserved ` +
        `${fmt(stats().used / MiB)} MiB`,
    );
    for (const a of sessions) a.socket.destroy();
  } finally {
    await child.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
