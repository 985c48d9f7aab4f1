/**
 * IMAP proxy benchmark (docs/imap.md, Benchmarks): 1,000 seeded messages fetched whole, twenty times in one
 * session (`UID FETCH 1:* (BODY.PEEK[])`), directly from Dovecot, through Mailgator (allow-all rules, plain on
 * both legs, the proxy in a child process) and, when the servers run with `--nginx`, through nginx's mail relay
 * for reference. Rounds alternate the targets (A B [C] A B [C] ...); prints each median, the ratio of Mailgator's
 * throughput to direct (goal: >= 0.95, and at least nginx's) and the proxy's CPU time. Each session then times
 * `--latency` single `UID FETCH n (FLAGS)` commands one after the other (a round trip each): p50 and p99 per
 * target, and what the proxy adds at p50.
 *
 *   bun scripts/bench/imap.ts [--messages 1000] [--size 4096] [--repeat 20] [--rounds 9] [--latency 1000]
 *                             [--warmup 30000] [--warm-sessions 8] [--no-relay]
 *
 * A fourth target, "relay", is the least any proxy on this runtime costs: a child process that only copies bytes
 * between the client and Dovecot over node:net, as the proxy's sockets do (`relay` below; `--no-relay` leaves it
 * out). What Mailgator costs beyond it is its own work; what the relay costs beyond nginx is the runtime's.
 *
 * Uses MAILGATOR_UPSTREAMS when set, otherwise starts the servers with scripts/upstreams. BENCH_PROFILE=DIR
 * writes a CPU profile of the proxy there.
 */

import { mkdtempSync, rmSync } from "node:fs";
import { connect, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cpuTime as cpuSeconds } from "../upstreams/processes.ts";
import { benchOptions } from "./args.ts";
import { imapBenchConfig, serveImapChild, startChild, startProxyChild, upstreamDescription } from "./proxy-child.ts";

const argv = process.argv.slice(2);
const USAGE =
  "bun scripts/bench/imap.ts [--messages 1000] [--size 4096] [--repeat 20] [--rounds 9]" +
  " [--latency 1000] [--warmup 30000] [--warm-sessions 8] [--no-relay]";
const OPTIONS = {
  values: ["messages", "size", "repeat", "rounds", "latency", "warmup", "warm-sessions"],
  switches: ["no-relay"],
};

if (argv[0] === "serve") {
  await serve(argv[1]!);
} else if (argv[0] === "relay") {
  relay(Number(argv[1]));
} else {
  await main();
}

/**
 * Child mode: a bare TCP relay to 127.0.0.1:PORT on node:net, with the back-pressure a proxy needs (a side whose
 * writes are queued stops the other's reads until it drains). Prints its port.
 */
function relay(upstreamPort: number): void {
  const pipe = (from: Socket, to: Socket): void => {
    from.on("data", (chunk: Buffer) => {
      if (!to.write(chunk)) {
        from.pause();
        to.once("drain", () => from.resume());
      }
    });
    from.on("end", () => to.end());
    from.on("error", () => to.destroy());
  };
  const server = createServer((agent) => {
    agent.setNoDelay(true);
    const upstream = connect({ host: "127.0.0.1", port: upstreamPort });
    upstream.setNoDelay(true);
    pipe(agent, upstream);
    pipe(upstream, agent);
  });
  server.listen(0, "127.0.0.1", () => {
    const address = server.address();
    if (address === null || typeof address === "string") throw new Error("relay: no TCP address");
    process.stdout.write(`${JSON.stringify({ port: address.port })}\n`);
  });
  process.on("SIGTERM", () => process.exit(0));
}

/** Child mode: run the IMAP proxy from a config file and print its port. */
async function serve(tomlPath: string): Promise<void> {
  await serveImapChild(tomlPath);
}

/**
 * A minimal IMAP client that counts bytes: one command at a time, done when the tagged reply arrives. It looks
 * for `\r\nTAG ` only near the end of each chunk (the tagged reply is the last thing the server sends), so the
 * client costs little next to what it measures.
 */
class Client {
  readonly #socket: Socket;
  #tail = Buffer.alloc(0);
  #wanted: Buffer | null = null;
  #done: ((status: string) => void) | null = null;
  #failed: ((error: Error) => void) | null = null;
  #error: Error | null = null;
  #tag = 0;
  bytes = 0;

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => this.#onData(chunk));
    // A server that drops the session (a proxy failure) fails the bench instead of leaving it waiting forever.
    socket.on("error", (error: Error) => this.#lost(error));
    socket.on("close", () => this.#lost(new Error("connection closed by the server")));
  }

  #lost(error: Error): void {
    this.#error ??= error;
    const failed = this.#failed;
    this.#done = this.#failed = this.#wanted = null;
    failed?.(new Error(`bench: ${this.#error.message}`));
  }

  static async open(port: number): Promise<Client> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect({ host: "127.0.0.1", port }, () => resolve(s));
      s.once("error", reject);
    });
    const client = new Client(socket);
    await client.#await(Buffer.from("* OK"), true);
    return client;
  }

  #onData(chunk: Buffer): void {
    this.bytes += chunk.length;
    if (this.#wanted === null) return;
    const window =
      this.#tail.length > 0
        ? Buffer.concat([this.#tail, chunk.subarray(Math.max(0, chunk.length - 4096))])
        : chunk.subarray(Math.max(0, chunk.length - 4096));
    const at = window.lastIndexOf(this.#wanted);
    if (at !== -1) {
      const lineEnd = window.indexOf("\r\n", at + this.#wanted.length);
      if (lineEnd !== -1) {
        const status = window.subarray(at + 2, lineEnd).toString("latin1");
        this.#tail = Buffer.alloc(0);
        this.#wanted = null;
        const done = this.#done!;
        this.#done = this.#failed = null;
        done(status);
        return;
      }
    }
    this.#tail = Buffer.from(window.subarray(Math.max(0, window.length - 256)));
  }

  #await(wanted: Buffer, greeting = false): Promise<string> {
    return new Promise((resolve, reject) => {
      if (this.#error !== null) return reject(new Error(`bench: ${this.#error.message}`));
      this.#wanted = greeting ? wanted : Buffer.concat([Buffer.from("\r\n"), wanted]);
      // The previous reply ended with CRLF, so a tagged line at the start of the next chunk still matches.
      this.#tail = Buffer.from("\r\n");
      this.#done = resolve;
      this.#failed = reject;
    });
  }

  async command(text: string): Promise<string> {
    const tag = `B${++this.#tag}`;
    const reply = this.#await(Buffer.from(`${tag} `));
    this.#socket.write(`${tag} ${text}\r\n`);
    const status = await reply;
    if (!status.startsWith(`${tag} OK`)) throw new Error(`bench: ${text.split(" ")[0]} failed: ${status}`);
    return status;
  }

  close(): void {
    this.#socket.end(`B${++this.#tag} LOGOUT\r\n`);
  }
}

interface Run {
  readonly seconds: number;
  readonly bytes: number;
  /** Round trips of the single-message `UID FETCH n (FLAGS)` commands, in µs. */
  readonly latencies: number[];
}

/** One session: login, select, then `repeat` whole-mailbox fetches; timed from the first fetch to the last OK. */
async function session(
  port: number,
  user: { user: string; password: string },
  repeat: number,
  latency: number,
  messages: number,
): Promise<Run> {
  const client = await Client.open(port);
  await client.command(`LOGIN "${user.user}" "${user.password}"`);
  await client.command("SELECT INBOX");
  const before = client.bytes;
  const start = performance.now();
  for (let i = 0; i < repeat; i++) await client.command("UID FETCH 1:* (BODY.PEEK[])");
  const seconds = (performance.now() - start) / 1000;
  const bytes = client.bytes - before;
  const latencies: number[] = [];
  for (let i = 0; i < latency; i++) {
    const t = performance.now();
    await client.command(`UID FETCH ${1 + (i % messages)} (FLAGS)`);
    latencies.push((performance.now() - t) * 1000);
  }
  client.close();
  return { seconds, bytes, latencies };
}

/** Deterministic text messages of about `size` bytes, appended to INBOX directly (UIDs 1..count). */
async function seed(
  port: number,
  user: { user: string; password: string },
  count: number,
  size: number,
): Promise<number> {
  const client = await Client.open(port);
  await client.command(`LOGIN "${user.user}" "${user.password}"`);
  let total = 0;
  const line = `${"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor".slice(0, 74)}\r\n`;
  for (let i = 1; i <= count; i++) {
    const head =
      `From: sender${i % 37}@bench.test\r\nTo: ${user.user}\r\nSubject: bench message ${i}\r\nMessage-ID: ` +
      `<bench-${i}@bench.test>\r\nDate: Mon, 1 Jun 2026 10:00:00 +0000\r\n\r\n`;
    const body = line.repeat(Math.max(1, Math.floor((size - head.length) / line.length)));
    const message = head + body;
    total += message.length;
    await client.command(`APPEND INBOX {${message.length}+}\r\n${message}`);
  }
  client.close();
  return total;
}

function median(values: number[]): number {
  return quantile(values, 0.5);
}

function quantile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * q))]!;
}

async function main(): Promise<void> {
  const opts = benchOptions(argv, USAGE, OPTIONS);
  const messages = opts.number("messages", 1000);
  const repeat = opts.number("repeat", 20);
  // Nine rounds (about 10 s each way): on a shared 2-core machine a median of 3 swung by ±0.05 between runs.
  const rounds = opts.number("rounds", 9);
  const size = opts.number("size", 4096);
  const latency = opts.number("latency", 1000);
  const warmup = opts.number("warmup", 30000);
  const warmSessions = Math.max(1, opts.number("warm-sessions", 8));
  const up = await upstreamDescription();
  const { addUser } = await import("../upstreams/users.ts");
  const address = `bench-imap-${Date.now().toString(36)}@${up.userDomain}`;
  const user = addUser(up, address, "bench-password");
  const mailboxBytes = await seed(up.ports.imap, user, messages, size);
  console.log(
    `imap: ${messages} messages, ${(mailboxBytes / 1e6).toFixed(2)} MB (avg ` +
      `${(mailboxBytes / messages / 1024).toFixed(1)} KB), fetched x${repeat} per session, ${rounds} rounds`,
  );

  const dir = mkdtempSync(join(tmpdir(), "mailgator-bench-imap-"));
  const child = await startProxyChild(
    import.meta.path,
    join(dir, "mailgator.toml"),
    imapBenchConfig({ upstream: { host: up.host, port: up.ports.imap }, dir }),
  );
  const relayChild = opts.has("no-relay") ? null : await startChild([import.meta.path, "relay", String(up.ports.imap)]);
  try {
    const proxyPort = child.port;
    const nginxPort = (up.ports as Record<string, number | undefined>)["nginxImap"];
    const targets: { name: string; port: number }[] = [
      { name: "direct", port: up.ports.imap },
      { name: "mailgator", port: proxyPort },
    ];
    if (nginxPort !== undefined) targets.push({ name: "nginx", port: nginxPort });
    else console.log("imap: no nginx relay (start the servers with --nginx for the reference figure)");
    if (relayChild !== null) targets.push({ name: "relay", port: relayChild.port });

    // Warm-up: Dovecot builds its index and cache on first access; the proxy's code gets compiled. A whole
    // session per target: with 2 fetches the proxy's JIT was still warming up in the first timed round (its CPU
    // per message halved from round 1 to round 3), and a proxy in service runs warm. Then `warmup` single
    // commands: the runtime kept compiling the command path for about 30,000 of them (proxy CPU per command
    // 150 µs in the first 10,000, 85 µs from the 30,000th on; docs/benchmarks.md "IMAP"). Both spread over
    // `--warm-sessions` sessions: the runtime compiles much of the proxy's code again for each of its first
    // sessions (the first session's objects no longer the only ones), for about seven of them, and every timed
    // round is a session of its own (docs/benchmarks.md "The compiler and new sessions").
    for (const t of targets) {
      for (let s = 0; s < warmSessions; s++)
        await session(t.port, user, repeat, Math.ceil(warmup / warmSessions), messages);
    }

    const times = new Map<string, number[]>(targets.map((t) => [t.name, []]));
    const latencies = new Map<string, number[]>(targets.map((t) => [t.name, []]));
    const proxyCpu = { user: 0, sys: 0 };
    let relayCpu = relayChild === null ? proxyCpu : cpuSeconds(relayChild.pid);
    let bytes = 0;
    for (let r = 0; r < rounds; r++) {
      const line: string[] = [];
      for (const t of targets) {
        const cpuBefore = cpuSeconds(child.pid);
        const run = await session(t.port, user, repeat, latency, messages);
        latencies.get(t.name)!.push(...run.latencies);
        let cpu = "";
        if (t.name === "relay" && relayChild !== null) {
          const relayBefore = relayCpu;
          relayCpu = cpuSeconds(relayChild.pid);
          cpu = ` (relay CPU ${(relayCpu.user - relayBefore.user + relayCpu.sys - relayBefore.sys).toFixed(2)} s)`;
        }
        if (t.name === "mailgator") {
          const cpuAfter = cpuSeconds(child.pid);
          proxyCpu.user += cpuAfter.user - cpuBefore.user;
          proxyCpu.sys += cpuAfter.sys - cpuBefore.sys;
          cpu = ` (proxy CPU ${(cpuAfter.user - cpuBefore.user + cpuAfter.sys - cpuBefore.sys).toFixed(2)} s)`;
        }
        if (t.name === "direct") bytes = run.bytes;
        else if (Math.abs(run.bytes - bytes) > bytes * 0.01)
          throw new Error(`bench: ${t.name} returned ${run.bytes} bytes, direct ${bytes}`);
        times.get(t.name)!.push(run.seconds);
        line.push(`${t.name} ${run.seconds.toFixed(3)} s${cpu}`);
      }
      console.log(`  round ${r + 1}: ${line.join(", ")}`);
    }
    const direct = median(times.get("direct")!);
    const proxied = median(times.get("mailgator")!);
    const mb = bytes / 1e6;
    console.log(`imap: ${mb.toFixed(1)} MB per session`);
    console.log(`  direct     ${direct.toFixed(3)} s  ${(mb / direct).toFixed(0)} MB/s`);
    console.log(
      `  mailgator  ${proxied.toFixed(3)} s  ${(mb / proxied).toFixed(0)} MB/s  ratio ` +
        `${(direct / proxied).toFixed(2)}x direct (goal >= 0.95 and >= nginx); proxy CPU ` +
        `${((proxyCpu.user + proxyCpu.sys) / rounds).toFixed(2)} s per session (user ` +
        `${(proxyCpu.user / rounds).toFixed(2)}, kernel ${(proxyCpu.sys / rounds).toFixed(2)}; ` +
        `${(((proxyCpu.user + proxyCpu.sys) / rounds / (messages * repeat)) * 1e6).toFixed(1)} µs per ` +
        `message)`,
    );
    const paired = times.get("direct")!.map((d, i) => d / times.get("mailgator")![i]!);
    console.log(
      `  per round (direct/mailgator, same round): ${paired.map((r) => r.toFixed(2)).join(" ")}, median ` +
        `${median(paired).toFixed(2)}`,
    );
    if (times.has("nginx")) {
      const nginx = median(times.get("nginx")!);
      console.log(
        `  nginx      ${nginx.toFixed(3)} s  ${(mb / nginx).toFixed(0)} MB/s  ratio ` +
          `${(direct / nginx).toFixed(2)}x direct (pure relay, reference)`,
      );
    }
    if (times.has("relay")) {
      const bare = median(times.get("relay")!);
      console.log(
        `  relay      ${bare.toFixed(3)} s  ${(mb / bare).toFixed(0)} MB/s  ratio ` +
          `${(direct / bare).toFixed(2)}x direct (bare node:net relay on this runtime, reference)`,
      );
    }
    if (latency > 0) {
      const p50 = new Map(targets.map((t) => [t.name, quantile(latencies.get(t.name)!, 0.5)]));
      console.log(`imap: UID FETCH n (FLAGS), ${latency} per session, one at a time (µs)`);
      for (const t of targets) {
        const all = latencies.get(t.name)!;
        const added = t.name === "direct" ? "" : `, adds ${(p50.get(t.name)! - p50.get("direct")!).toFixed(0)} at p50`;
        console.log(
          `  ${t.name.padEnd(10)} p50 ${p50.get(t.name)!.toFixed(0)}, p90 ${quantile(all, 0.9).toFixed(0)}, ` +
            `p99 ${quantile(all, 0.99).toFixed(0)}, max ${quantile(all, 1).toFixed(0)}${added}`,
        );
      }
    }
  } finally {
    await child.stop();
    await relayChild?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
