/**
 * Filtered-mailbox benchmark through the proxy (docs/filtering.md, Figures): a fresh user's INBOX seeded with N
 * messages (default 100,000; the seeder's sender mix), the seed config's rules, the proxy in a child process
 * (plain IMAP on both legs, audit log on), a raw client.
 *
 * 1. first SELECT, cold: Dovecot opens the folder for the first time and the cache is empty;
 * 2. re-SELECT in a new session: served by the classification cache (target <= 0.2 s);
 * 3. first SELECT with a warm Dovecot and an empty cache (a second proxy with its own cache file);
 * 4. `UID FETCH 1:* (BODY.PEEK[])` of the filtered INBOX through the proxy against a fetch of the same UIDs
 *    straight from Dovecot, interleaved rounds, medians (target: proxy >= 0.75x direct).
 *
 *   bun scripts/bench/filtered.ts [--count N] [--rounds 3]
 *
 * Uses MAILGATOR_UPSTREAMS when set, otherwise starts the servers with scripts/upstreams. Prints one JSON line.
 */

import { mkdtempSync, rmSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Upstreams } from "../upstreams/description.ts";
import { cpuTime } from "../upstreams/processes.ts";
import { benchOptions } from "./args.ts";
import {
  imapBenchConfig,
  type ProxyChild,
  serveImapChild,
  startProxyChild,
  upstreamDescription,
} from "./proxy-child.ts";

const argv = process.argv.slice(2);
const USAGE = "bun scripts/bench/filtered.ts [--count N] [--rounds 3]";
const OPTIONS = { values: ["count", "rounds"], switches: [] };

if (argv[0] === "serve") await serve(argv[1]!);
else await main();

/** Child mode: the IMAP proxy from a config file; prints its port. */
async function serve(tomlPath: string): Promise<void> {
  await serveImapChild(tomlPath, { timeouts: { commandMs: 600_000 } });
}

/** A raw client that counts bytes and finds its tagged replies by scanning each chunk's tail. */
class Client {
  #socket: Socket;
  #tag = 0;
  #window = "";
  #done: ((status: string) => void) | null = null;
  #wanted = "";
  #collect: string[] | null = null;
  bytes = 0;

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.on("data", (chunk: Buffer) => {
      this.bytes += chunk.length;
      const text = chunk.toString("latin1");
      this.#collect?.push(text);
      this.#window = (this.#window + text).slice(-(this.#wanted.length + 512));
      const at = this.#window.indexOf(this.#wanted);
      if (this.#done !== null && at !== -1 && this.#window.indexOf("\r\n", at) !== -1) {
        const line = this.#window.slice(at + 2, this.#window.indexOf("\r\n", at + 2));
        const done = this.#done;
        this.#done = null;
        done(line);
      }
    });
  }

  static async open(port: number): Promise<Client> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect({ host: "127.0.0.1", port }, () => resolve(s));
      s.once("error", reject);
    });
    const client = new Client(socket);
    await new Promise<void>((resolve) => socket.once("data", () => resolve()));
    return client;
  }

  /** Sends a command; resolves with its tagged line (and everything before it when `collect`). */
  async command(text: string, collect = false): Promise<{ status: string; data: string }> {
    const tag = `B${++this.#tag}`;
    this.#wanted = `\r\n${tag} `;
    this.#window = "\r\n";
    this.#collect = collect ? [] : null;
    const status = new Promise<string>((resolve) => (this.#done = resolve));
    this.#socket.write(`${tag} ${text}\r\n`);
    const line = await status;
    if (!line.startsWith(`${tag} OK`)) throw new Error(`bench: ${text.slice(0, 40)} failed: ${line}`);
    const data = this.#collect?.join("") ?? "";
    this.#collect = null;
    return { status: line, data };
  }

  close(): void {
    this.#socket.end(`B${++this.#tag} LOGOUT\r\n`);
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

function cpuSeconds(pid: number): number {
  const { user, sys } = cpuTime(pid);
  return user + sys;
}

async function startProxy(dir: string, up: Upstreams): Promise<ProxyChild> {
  return startProxyChild(
    import.meta.path,
    join(dir, "mailgator.toml"),
    imapBenchConfig({
      upstream: { host: up.host, port: up.ports.imap },
      dir,
      rules: `[[rules]]
name = "Transactional emails from known senders"
folders = ["INBOX"]
from = "notifications@*"
action = "allow"
operations = ["read"]

[[rules]]
name = "Deny everything else"
action = "deny"
`,
    }),
  );
}

async function timed<T>(f: () => Promise<T>): Promise<[number, T]> {
  const t = performance.now();
  const value = await f();
  return [Number(((performance.now() - t) / 1000).toFixed(3)), value];
}

async function main(): Promise<void> {
  const opts = benchOptions(argv, USAGE, OPTIONS);
  const count = opts.number("count", 100000);
  const rounds = opts.number("rounds", 3);
  const up = await upstreamDescription();
  const { addUser } = await import("../upstreams/users.ts");
  const { seedMaildir } = await import("../upstreams/seed.ts");
  const address = `bench-filtered-${Date.now().toString(36)}@${up.userDomain}`;
  const user = addUser(up, address, "bench-password");
  const dirA = mkdtempSync(join(tmpdir(), "mailgator-bench-filtered-a-"));
  const dirB = mkdtempSync(join(tmpdir(), "mailgator-bench-filtered-b-"));
  const figures: Record<string, unknown> = { messages: count };
  try {
    const manifest = seedMaildir(user.maildir, { folders: { INBOX: count }, owner: address });
    // The seeded files go to disk before any timing: otherwise the kernel writes them back during the cold
    // SELECT, and the figure measures the seeder rather than Dovecot and the proxy.
    Bun.spawnSync(["sync"]);
    const visible = manifest.folders["INBOX"]!.filter((m) => m.from.startsWith("notifications@")).map((m) => m.uid);
    figures["visible"] = visible.length;
    const login = async (port: number) => {
      const c = await Client.open(port);
      await c.command(`LOGIN "${user.user}" "${user.password}"`);
      return c;
    };
    const a = await startProxy(dirA, up);
    const b = await startProxy(dirB, up);
    try {
      // 1. cold Dovecot, empty cache.
      const first = await login(a.port);
      const [cold, sel] = await timed(() => first.command("EXAMINE INBOX", true));
      if (!sel.data.includes(`* ${visible.length} EXISTS`))
        throw new Error(`bench: EXISTS is not ${visible.length}: ${sel.data.slice(0, 300)}`);
      first.close();
      figures["selectColdSeconds"] = cold;
      // 2. re-SELECT: the cache.
      const again: number[] = [];
      for (let i = 0; i < 5; i++) {
        const c = await login(a.port);
        again.push((await timed(() => c.command("EXAMINE INBOX")))[0]);
        c.close();
      }
      figures["reselectCachedSeconds"] = median(again);
      // 3. warm Dovecot, empty cache (proxy b has its own cache file).
      const warm = await login(b.port);
      figures["selectWarmNoCacheSeconds"] = (await timed(() => warm.command("EXAMINE INBOX")))[0];
      warm.close();
      // 4. throughput: the filtered INBOX through the proxy vs the same UIDs from Dovecot (in chunks of 2,000
      // UIDs: Dovecot limits command lines to 64 KB).
      const proxyRuns: number[] = [];
      const directRuns: number[] = [];
      let proxyBytes = 0;
      let directBytes = 0;
      const cpuBefore = cpuSeconds(a.pid);
      for (let r = 0; r < rounds; r++) {
        const viaProxy = await login(a.port);
        await viaProxy.command("EXAMINE INBOX");
        const before = viaProxy.bytes;
        proxyRuns.push((await timed(() => viaProxy.command("UID FETCH 1:* (BODY.PEEK[])")))[0]);
        proxyBytes = viaProxy.bytes - before;
        viaProxy.close();
        const direct = await login(up.ports.imap);
        await direct.command("EXAMINE INBOX");
        const start = direct.bytes;
        directRuns.push(
          (
            await timed(async () => {
              for (let i = 0; i < visible.length; i += 2000)
                await direct.command(`UID FETCH ${visible.slice(i, i + 2000).join(",")} (BODY.PEEK[])`);
            })
          )[0],
        );
        directBytes = direct.bytes - start;
        direct.close();
      }
      figures["fetchProxySeconds"] = median(proxyRuns);
      figures["fetchDirectSeconds"] = median(directRuns);
      figures["fetchProxyMB"] = Number((proxyBytes / 1e6).toFixed(1));
      figures["fetchDirectMB"] = Number((directBytes / 1e6).toFixed(1));
      figures["throughputRatio"] = Number((median(directRuns) / median(proxyRuns)).toFixed(2));
      figures["proxyCpuSecondsPerFetch"] = Number(((cpuSeconds(a.pid) - cpuBefore) / rounds).toFixed(2));
    } finally {
      await a.stop();
      await b.stop();
    }
  } finally {
    rmSync(user.maildir, { recursive: true, force: true });
    rmSync(dirA, { recursive: true, force: true });
    rmSync(dirB, { recursive: true, force: true });
  }
  console.log(JSON.stringify(figures));
}
