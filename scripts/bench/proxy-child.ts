/**
 * Runs a proxy in a child process for a benchmark, so that its CPU and memory
 * can be read from /proc apart from the client's. The benchmark script itself
 * is the child: started as `bun SCRIPT serve CONFIG`, it starts the proxy and
 * prints one JSON line `{"port": N}` on stdout. It runs with the allocator settings `mailgator serve` gives itself
 * (src/cli/allocator.ts); a value already in the environment wins, so `MIMALLOC_PURGE_DELAY=10` measures without.
 */

import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ALLOCATOR_ENV } from "../../src/cli/allocator.ts";
import type { startImapProxy } from "../../src/imap/index.ts";
import { readUpstreams, type Upstreams } from "../upstreams/description.ts";

export interface ProxyChild {
  readonly port: number;
  readonly pid: number;
  stop(): Promise<void>;
}

/**
 * Writes `toml` to `configFile`, starts `script serve configFile`, waits for its port. BENCH_PROFILE=DIR adds a CPU
 * profile.
 */
export async function startProxyChild(script: string, configFile: string, toml: string): Promise<ProxyChild> {
  writeFileSync(configFile, toml);
  const profile = process.env["BENCH_PROFILE"]
    ? ["--cpu-prof-md", `--cpu-prof-dir=${process.env["BENCH_PROFILE"]}`]
    : [];
  return startChild([...profile, script, "serve", configFile]);
}

/**
 * Starts `bun ARGS` (a benchmark script in one of its child modes) with the same allocator settings, and waits
 * for the `{"port": N}` line it prints.
 */
export async function startChild(args: readonly string[]): Promise<ProxyChild> {
  const child = Bun.spawn([process.execPath, ...args], {
    stdout: "pipe",
    stderr: "inherit",
    env: { ...ALLOCATOR_ENV, ...process.env },
  });
  const reader = child.stdout.getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) {
      child.kill();
      throw new Error("bench: the proxy exited before listening");
    }
    text += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  const { port } = JSON.parse(text.slice(0, text.indexOf("\n"))) as { port: number };
  return {
    port,
    pid: child.pid,
    async stop() {
      child.kill("SIGTERM");
      await child.exited;
    },
  };
}

/**
 * The IMAP half of a benchmark's config: `listen` (`127.0.0.1:1` for a child that picks its own port), a plain
 * upstream leg to `upstream`, the audit log in `dir`, then `rules` (one allow-all rule unless given) and any `extra`.
 */
export function imapBenchConfig(o: {
  readonly listen?: string;
  readonly upstream: { readonly host: string; readonly port: number };
  readonly dir: string;
  readonly rules?: string;
  readonly extra?: string;
}): string {
  const rules = o.rules ?? '[[rules]]\nname = "everything"\naction = "allow"\n';
  return `[imap]
listen_addr = "${o.listen ?? "127.0.0.1:1"}"
upstream_addr = "${o.upstream.host}:${o.upstream.port}"
upstream_tls = "none"

[audit]
path = "${join(o.dir, "audit.db")}"

${rules}${o.extra ?? ""}`;
}

/** The servers MAILGATOR_UPSTREAMS describes, else ones started for this run (docs/upstreams.md). */
export async function upstreamDescription(): Promise<Upstreams> {
  const path = process.env["MAILGATOR_UPSTREAMS"];
  if (path) return readUpstreams(path);
  const { startUpstreams } = await import("../upstreams/start.ts");
  return startUpstreams({});
}

/** What a benchmark's child passes to the IMAP proxy beside its config, policy and audit log. */
type ImapExtras = Omit<Parameters<typeof startImapProxy>[0], "config" | "policy" | "audit">;

/**
 * The child mode of an IMAP benchmark: runs the IMAP proxy from `tomlPath` on a free port with `extras`, prints
 * `{"port": N}` and stops on SIGTERM; returns the proxy.
 */
export async function serveImapChild(tomlPath: string, extras: ImapExtras = {}) {
  const { parseConfig } = await import("../../src/config/index.ts");
  const { AuditLog } = await import("../../src/audit/index.ts");
  const { compilePolicy } = await import("../../src/policy/index.ts");
  const { startImapProxy } = await import("../../src/imap/index.ts");
  const { configureLogger } = await import("../../src/log.ts");
  configureLogger("pretty", 1);
  const parsed = parseConfig(readFileSync(tomlPath, "utf8"), tomlPath);
  const config = { ...parsed, imap: { ...parsed.imap!, listenAddr: { host: "127.0.0.1", port: 0 } } };
  const audit = AuditLog.open(config.audit.path);
  const proxy = await startImapProxy({ ...extras, config, policy: compilePolicy(config.rules), audit });
  process.stdout.write(`${JSON.stringify({ port: proxy.address.port })}\n`);
  process.on("SIGTERM", () => {
    void proxy
      .close()
      .then(() => audit.close())
      .then(() => process.exit(0));
  });
  return proxy;
}
