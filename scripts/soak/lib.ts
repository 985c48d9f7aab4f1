/**
 * What the soak, fault and fuzz scripts share (docs/reliability.md, "Soak, faults and fuzzing"): the local
 * Dovecot and Postfix (scripts/upstreams), fresh seeded users, a real `mailgator serve` process in a folder of its
 * own, its RSS and sockets read from /proc, raw IMAP and SMTP clients, and the audit log read back.
 *
 * Everything is on loopback: the proxy listens on 127.0.0.1 and its upstreams are the servers start.ts runs on
 * 127.0.0.1. No other address is ever dialled.
 */

import { Database } from "bun:sqlite";
import { mkdirSync, readdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { join, resolve } from "node:path";
import { readUpstreams, type Upstreams, type UpstreamUser } from "../upstreams/description.ts";
import { freePort, isListening } from "../upstreams/ports.ts";
import { cpuTime } from "../upstreams/processes.ts";
import { type SeedManifest, seedMaildir } from "../upstreams/seed.ts";
import { addUser } from "../upstreams/users.ts";

export const ROOT = resolve(import.meta.dir, "../..");
/** The only host these scripts connect to. */
export const LOOPBACK = "127.0.0.1";

// ---------------------------------------------------------------------------------------------- flags

export interface FlagSpec {
  readonly [name: string]: { readonly default: string; readonly help: string };
}

/** `--name value` flags with defaults; `--help` prints `usage` and the flags, then exits 0. Unknown flags exit 2. */
export function parseFlags<S extends FlagSpec>(
  usage: string,
  spec: S,
  argv = process.argv.slice(2),
): Record<keyof S, string> {
  const values: Record<string, string> = {};
  for (const [name, s] of Object.entries(spec)) values[name] = s.default;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--help" || arg === "-h") {
      const width = Math.max(...Object.keys(spec).map((n) => n.length)) + 2;
      const lines = Object.entries(spec).map(
        ([n, s]) => `  --${n.padEnd(width)} ${s.help} (default ${s.default === "" ? "none" : s.default})`,
      );
      console.log(`${usage}\n\nFlags:\n${lines.join("\n")}`);
      process.exit(0);
    }
    const name = arg.startsWith("--") ? arg.slice(2) : "";
    const [key, inline] = name.includes("=")
      ? [name.slice(0, name.indexOf("=")), name.slice(name.indexOf("=") + 1)]
      : [name, undefined];
    if (!(key in spec)) {
      console.error(`unknown argument ${arg}; --help lists the flags`);
      process.exit(2);
    }
    const value = inline ?? argv[++i];
    if (value === undefined) {
      console.error(`${arg} needs a value`);
      process.exit(2);
    }
    values[key] = value;
  }
  return values as Record<keyof S, string>;
}

/** A positive integer flag, at most `max` (the scripts are bounded in count and time). */
export function intFlag(name: string, text: string, max: number): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0 || n > max) {
    console.error(`--${name}: expected an integer from 0 to ${max}, got ${JSON.stringify(text)}`);
    process.exit(2);
  }
  return n;
}

export function numberFlag(name: string, text: string, max: number): number {
  const n = Number(text);
  if (!Number.isFinite(n) || n < 0 || n > max) {
    console.error(`--${name}: expected a number from 0 to ${max}, got ${JSON.stringify(text)}`);
    process.exit(2);
  }
  return n;
}

// ---------------------------------------------------------------------------------------------- upstreams

export interface Servers {
  readonly upstreams: Upstreams;
  /** Stops them if this process started them. */
  stop(): Promise<void>;
}

/** The servers named by MAILGATOR_UPSTREAMS (left running), or those of scripts/upstreams/start.ts. */
export async function servers(log: (line: string) => void): Promise<Servers> {
  const given = process.env["MAILGATOR_UPSTREAMS"];
  if (given !== undefined && given !== "") return { upstreams: readUpstreams(given), stop: async () => {} };
  const { startUpstreams } = await import("../upstreams/start.ts");
  const upstreams = await startUpstreams({ log });
  if (upstreams.host !== LOOPBACK) throw new Error(`soak: upstreams on ${upstreams.host}, expected ${LOOPBACK}`);
  return { upstreams, stop: async () => {} };
}

export interface SoakUser extends UpstreamUser {
  readonly manifest: SeedManifest;
}

/** `count` fresh users `<prefix>-<run>-<i>@…`, each with `messages` seeded INBOX messages and 20 in Archive. */
export function makeUsers(upstreams: Upstreams, prefix: string, count: number, messages: number): SoakUser[] {
  const run = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
  const users: SoakUser[] = [];
  for (let i = 0; i < count; i++) {
    const user = addUser(upstreams, `${prefix}-${run}-${i}@${upstreams.userDomain}`, `pw-${run}-${i}`);
    const manifest = seedMaildir(user.maildir, {
      owner: user.address,
      folders: { INBOX: messages, Archive: 20 },
      seed: i + 1,
    });
    users.push({ ...user, manifest });
  }
  return users;
}

// ---------------------------------------------------------------------------------------------- the proxy

/**
 * Rules of every script: INBOX readable and flaggable, Archive filtered (only mail from notifications@…), sends to
 * `*@corp.test` allowed, everything else denied (so a recipient at `evil.test` is refused).
 */
export const RULES = `
[[rules]]
name = "inbox"
folders = ["INBOX"]
operations = ["read", "mail:flag"]
action = "allow"

[[rules]]
name = "archive notifications"
folders = ["Archive"]
from = "notifications@*"
operations = ["read"]
action = "allow"

[[rules]]
name = "corp"
to = "*@corp.test"
operations = ["send"]
action = "allow"

[[rules]]
name = "deny"
action = "deny"
`;

export interface ProxyOptions {
  readonly dir: string;
  readonly upstreams: Upstreams;
  /** Upstream ports (default: Dovecot's and Postfix's plain ports): a relay in between gives its own. */
  readonly imapUpstreamPort?: number;
  readonly smtpUpstreamPort?: number;
  /** Listen ports (default: free ones). */
  readonly imapPort?: number;
  readonly smtpPort?: number;
  /** Environment additions, e.g. `MIMALLOC_PURGE_DELAY`. */
  readonly env?: Readonly<Record<string, string>>;
  /** Load scripts/soak/heap-probe.ts into the proxy: heap statistics every few seconds into `<dir>/heap.jsonl`. */
  readonly heapProbe?: boolean;
  /** The audit database (default `<dir>/audit.db`). */
  readonly auditFile?: string;
  /** Extra config text (appended before the rules). */
  readonly extraConfig?: string;
}

export interface MailgatorProcess {
  readonly pid: number;
  readonly imapPort: number;
  readonly smtpPort: number;
  readonly configFile: string;
  readonly auditFile: string;
  readonly logFile: string;
  readonly exited: Promise<number>;
  /** SIGTERM, then waits (SIGKILL after `graceMs`). */
  stop(graceMs?: number): Promise<number>;
  kill(): Promise<number>;
  alive(): boolean;
}

/** Writes `<dir>/mailgator.toml` and starts `bun src/cli/main.ts serve` on it; resolves once both ports listen. */
export async function startProxy(options: ProxyOptions): Promise<MailgatorProcess> {
  mkdirSync(options.dir, { recursive: true });
  const imapPort = options.imapPort ?? (await freePort());
  const smtpPort = options.smtpPort ?? (await freePort());
  const configFile = join(options.dir, "mailgator.toml");
  const auditFile = options.auditFile ?? join(options.dir, "audit.db");
  const logFile = join(options.dir, "mailgator.log");
  const { ports } = options.upstreams;
  writeFileSync(
    configFile,
    `[imap]
listen_addr = "${LOOPBACK}:${imapPort}"
upstream_addr = "${LOOPBACK}:${options.imapUpstreamPort ?? ports.imap}"
upstream_tls = "none"

[smtp]
listen_addr = "${LOOPBACK}:${smtpPort}"
upstream_addr = "${LOOPBACK}:${options.smtpUpstreamPort ?? ports.smtp}"
upstream_tls = "none"

[audit]
path = "${auditFile}"
${options.extraConfig ?? ""}
${RULES}`,
  );
  const preload = options.heapProbe ? ["--preload", join(ROOT, "scripts/soak/heap-probe.ts")] : [];
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
  Object.assign(env, options.env ?? {});
  if (options.heapProbe) env["MAILGATOR_SOAK_HEAP_FILE"] = join(options.dir, "heap.jsonl");
  const log = Bun.file(logFile);
  const child = Bun.spawn(
    [process.execPath, ...preload, join(ROOT, "src/cli/main.ts"), "serve", "-c", configFile, "--log-format", "json"],
    { cwd: ROOT, env, stdout: log, stderr: log, stdin: "ignore" },
  );
  let code: number | null = null;
  const exited = child.exited.then((c) => {
    code = c;
    return c;
  });
  const deadline = Date.now() + 30_000;
  while (!((await isListening(imapPort)) && (await isListening(smtpPort)))) {
    if (code !== null) throw new Error(`soak: mailgator exited with ${code} before listening; see ${logFile}`);
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`soak: mailgator did not listen within 30 s; see ${logFile}`);
    }
    await Bun.sleep(100);
  }
  return {
    pid: child.pid,
    imapPort,
    smtpPort,
    configFile,
    auditFile,
    logFile,
    exited,
    alive: () => code === null,
    async stop(graceMs = 20_000) {
      if (code !== null) return code;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      const c = await exited;
      clearTimeout(timer);
      return c;
    },
    async kill() {
      if (code === null) child.kill("SIGKILL");
      return exited;
    },
  };
}

// ---------------------------------------------------------------------------------------------- /proc

/** Resident set size in MiB (VmRSS of /proc/PID/status), or NaN once the process is gone. */
export function rssMiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) / 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** Samples RSS every `everyMs`; `series` holds `[seconds since start, MiB]`. */
export class RssSampler {
  readonly series: [number, number][] = [];
  readonly #timer: ReturnType<typeof setInterval>;
  readonly #start = performance.now();

  constructor(
    readonly pid: number,
    everyMs: number,
  ) {
    this.sample();
    this.#timer = setInterval(() => this.sample(), everyMs);
  }

  sample(): number {
    const mib = rssMiB(this.pid);
    this.series.push([(performance.now() - this.#start) / 1000, mib]);
    return mib;
  }

  /** The last sample at or before `seconds`. */
  at(seconds: number): number {
    let value = Number.NaN;
    for (const [t, mib] of this.series) if (t <= seconds) value = mib;
    return value;
  }

  get max(): number {
    return Math.max(...this.series.map(([, mib]) => mib).filter((m) => !Number.isNaN(m)));
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  /** "t=10s 80.1, t=20s 85.3, ..." */
  format(step = 1): string {
    return this.series
      .filter((_, i) => i % step === 0 || i === this.series.length - 1)
      .map(([t, mib]) => `${t.toFixed(0)}s ${mib.toFixed(1)}`)
      .join(", ");
  }
}

/** User plus system CPU seconds a process has used so far (/proc/PID/stat), NaN once it is gone. */
export function cpuSeconds(pid: number): number {
  try {
    const { user, sys } = cpuTime(pid);
    return user + sys;
  } catch {
    return Number.NaN;
  }
}

/** Socket inodes a process holds (from /proc/PID/fd). */
function socketInodes(pid: number): Set<string> {
  const inodes = new Set<string>();
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return inodes;
  }
  for (const fd of fds) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    } catch {
      // closed meanwhile
    }
  }
  return inodes;
}

const TCP_LISTEN = "0A";

/**
 * TCP connections the process holds (not listening sockets), by local port (`local`) or remote port (`remote`):
 * from /proc/net/tcp, matched to the process's own socket inodes. A connection a session leaked stays counted here
 * whatever its TCP state, until the process closes the descriptor.
 */
export function tcpConnections(pid: number, filter: { local?: number; remote?: number }): number {
  const inodes = socketInodes(pid);
  let count = 0;
  for (const f of tcpTable()) {
    if (f.state === TCP_LISTEN || !inodes.has(f.inode)) continue;
    if (filter.local !== undefined && f.local !== filter.local) continue;
    if (filter.remote !== undefined && f.remote !== filter.remote) continue;
    count++;
  }
  return count;
}

/** Local ports of the process's TCP connections to `remotePort` (its upstream connections, say). */
export function localPortsTo(pid: number, remotePort: number): number[] {
  const inodes = socketInodes(pid);
  const ports: number[] = [];
  for (const f of tcpTable()) {
    if (f.state !== TCP_LISTEN && inodes.has(f.inode) && f.remote === remotePort) ports.push(f.local);
  }
  return ports;
}

/** The process holding the loopback TCP connection from `localPort` to `remotePort` (null when none). */
export function socketOwner(localPort: number, remotePort: number): number | null {
  const entry = tcpTable().find((f) => f.local === localPort && f.remote === remotePort && f.state !== TCP_LISTEN);
  if (entry === undefined) return null;
  for (const pid of readdirSync("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    if (socketInodes(Number(pid)).has(entry.inode)) return Number(pid);
  }
  return null;
}

function tcpTable(): { local: number; remote: number; state: string; inode: string }[] {
  const rows: { local: number; remote: number; state: string; inode: string }[] = [];
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10) continue;
      rows.push({
        local: Number.parseInt(f[1]!.split(":")[1]!, 16),
        remote: Number.parseInt(f[2]!.split(":")[1]!, 16),
        state: f[3]!,
        inode: f[9]!,
      });
    }
  }
  return rows;
}

/** Polls until `count()` is at most `target` or `ms` passes; returns the last count. */
export async function settle(count: () => number, target: number, ms: number): Promise<number> {
  const deadline = Date.now() + ms;
  let n = count();
  while (n > target && Date.now() < deadline) {
    await Bun.sleep(200);
    n = count();
  }
  return n;
}

// ---------------------------------------------------------------------------------------------- clients

/** A line-oriented loopback client: every byte kept as latin1, readers wait for a condition on the buffer. */
export class LineClient {
  protected buffer = "";
  #waiter: (() => void) | null = null;
  closed = false;
  error: Error | null = null;

  protected constructor(readonly socket: Socket) {
    socket.setEncoding("latin1");
    socket.setNoDelay(true);
    socket.on("data", (d: string) => {
      this.buffer += d;
      this.#wake();
    });
    socket.on("error", (e) => {
      this.error ??= e;
    });
    socket.on("close", () => {
      this.closed = true;
      this.#wake();
    });
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = null;
    w?.();
  }

  protected static open(port: number, timeoutMs: number): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host: LOOPBACK, port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`connect to ${LOOPBACK}:${port} timed out`));
      }, timeoutMs);
      socket.once("connect", () => {
        clearTimeout(timer);
        resolve(socket);
      });
      socket.once("error", (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
  }

  /** Waits until `done(buffer)` returns an index ≥ 0, takes the buffer up to it and returns that text. */
  protected async until(done: (buffer: string) => number, ms: number, what: string): Promise<string> {
    const deadline = Date.now() + ms;
    for (;;) {
      const at = done(this.buffer);
      if (at >= 0) {
        const taken = this.buffer.slice(0, at);
        this.buffer = this.buffer.slice(at);
        return taken;
      }
      if (this.closed) throw new Error(`${what}: connection closed; unread ${JSON.stringify(this.buffer.slice(-200))}`);
      const left = deadline - Date.now();
      if (left <= 0)
        throw new Error(`${what}: no answer within ${ms} ms; unread ${JSON.stringify(this.buffer.slice(-200))}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  }

  /** Octets received and not yet taken by a reader. */
  get unread(): number {
    return this.buffer.length;
  }

  write(data: string | Uint8Array): void {
    if (!this.socket.destroyed) this.socket.write(typeof data === "string" ? Buffer.from(data, "latin1") : data);
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** Resolves when the connection has closed (or after `ms`). */
  async waitClosed(ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!this.closed && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.#waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
    return this.closed;
  }
}

/**
 * Index just past the end of the line that starts with `prefix` at a line start, skipping IMAP literals
 * (`{n}` / `{n+}` / `~{n}` at a line's end announce n octets that are not lines); -1 when not there yet.
 */
export function imapFind(buffer: string, prefix: string): number {
  let at = 0;
  for (;;) {
    const end = buffer.indexOf("\r\n", at);
    if (end === -1) return -1;
    const line = buffer.slice(at, end);
    if (line.startsWith(prefix)) return end + 2;
    const literal = /\{(\d+)\+?\}$/.exec(line);
    at = end + 2 + (literal ? Number(literal[1]) : 0);
    if (at > buffer.length) return -1;
  }
}

export class ImapClient extends LineClient {
  #tag = 0;
  greeting = "";

  static async connect(port: number, timeoutMs = 15_000): Promise<ImapClient> {
    const client = new ImapClient(await LineClient.open(port, timeoutMs));
    client.greeting = await client.until((b) => imapFind(b, "* "), timeoutMs, "IMAP greeting");
    return client;
  }

  /** Sends `TAG text` and returns everything up to and including the tagged reply; `status` is OK, NO or BAD. */
  async command(text: string, timeoutMs = 30_000): Promise<{ status: string; text: string }> {
    const tag = `s${++this.#tag}`;
    this.write(`${tag} ${text}\r\n`);
    const reply = await this.until((b) => imapFind(b, `${tag} `), timeoutMs, `IMAP ${text.split(" ")[0]}`);
    const last = reply.slice(reply.lastIndexOf(`${tag} `));
    return { status: last.split(" ")[1] ?? "", text: reply };
  }

  /** IDLE for `ms`, then DONE; returns the tagged status. */
  async idle(ms: number, timeoutMs = 30_000): Promise<string> {
    const tag = `s${++this.#tag}`;
    this.write(`${tag} IDLE\r\n`);
    await this.until((b) => imapFind(b, "+"), timeoutMs, "IMAP IDLE continuation");
    await Bun.sleep(ms);
    this.write("DONE\r\n");
    const reply = await this.until((b) => imapFind(b, `${tag} `), timeoutMs, "IMAP IDLE end");
    return reply.slice(reply.lastIndexOf(`${tag} `)).split(" ")[1] ?? "";
  }
}

export class SmtpClient extends LineClient {
  greeting = "";

  static async connect(port: number, timeoutMs = 15_000): Promise<SmtpClient> {
    const client = new SmtpClient(await LineClient.open(port, timeoutMs));
    client.greeting = await client.reply(timeoutMs);
    return client;
  }

  /** Reads one (possibly multi-line) reply; returns its last line. */
  async reply(timeoutMs = 30_000): Promise<string> {
    const text = await this.until(
      (b) => {
        const m = /(^|\r\n)\d{3} [^\r\n]*\r\n/.exec(b);
        return m ? m.index + m[0].length : -1;
      },
      timeoutMs,
      "SMTP reply",
    );
    const lines = text.trimEnd().split("\r\n");
    return lines[lines.length - 1]!;
  }

  async command(text: string, timeoutMs = 30_000): Promise<string> {
    this.write(`${text}\r\n`);
    return this.reply(timeoutMs);
  }
}

export function plainAuth(user: string, password: string): string {
  return Buffer.from(`\0${user}\0${password}`).toString("base64");
}

// ---------------------------------------------------------------------------------------------- audit

export interface AuditCount {
  readonly protocol: string;
  readonly command: string;
  readonly decision: string;
  readonly n: number;
}

/** Rows per (protocol, command, decision), read from the SQLite file opened read-only; `since` in ms. */
export function auditCounts(file: string, sinceMs = 0): Map<string, number> {
  const db = new Database(file, { readonly: true });
  try {
    const rows = db
      .query<AuditCount, [number]>(
        "SELECT protocol, command, decision, count(*) AS n FROM audit WHERE time >= ? GROUP BY protocol, " +
          "command, decision",
      )
      .all(sinceMs);
    return new Map(rows.map((r) => [`${r.protocol} ${r.command} ${r.decision}`, r.n]));
  } finally {
    db.close();
  }
}

/** Adds `n` to `key` of a count map. */
export function bump(map: Map<string, number>, key: string, n = 1): void {
  map.set(key, (map.get(key) ?? 0) + n);
}

/** Lines "key: expected N, audit M" for every key where the two maps differ (keys of `only` when given). */
export function compareCounts(
  expected: Map<string, number>,
  actual: Map<string, number>,
  only?: (k: string) => boolean,
): string[] {
  const keys = new Set([...expected.keys(), ...actual.keys()]);
  const problems: string[] = [];
  for (const key of [...keys].sort()) {
    if (only && !only(key)) continue;
    const e = expected.get(key) ?? 0;
    const a = actual.get(key) ?? 0;
    if (e !== a) problems.push(`${key}: client counted ${e}, audit has ${a}`);
  }
  return problems;
}

/** Message files in the Postfix sink (every non-local recipient) written since `sinceMs` that contain `text`. */
export function sinkFilesWith(sinkDir: string, text: string, sinceMs: number): number {
  let found = 0;
  for (const sub of ["new", "cur"]) {
    const dir = join(sinkDir, sub);
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      continue;
    }
    for (const name of names) {
      try {
        const file = join(dir, name);
        if (statSync(file).mtimeMs < sinceMs - 2_000) continue;
        if (readFileSync(file, "latin1").includes(text)) found++;
      } catch {
        // moved from new/ to cur/ meanwhile
      }
    }
  }
  return found;
}

/** A run folder under .run/soak/. */
export function runDir(name: string): string {
  const dir = join(ROOT, ".run", "soak", `${name}-${new Date().toISOString().replace(/[:.]/g, "-")}-${process.pid}`);
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** mulberry32: a small seeded PRNG, so every run of a seed makes the same choices. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
