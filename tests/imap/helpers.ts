/**
 * Helpers for the IMAP proxy's end-to-end tests: a proxy in front of the real Dovecot (tests/fixtures), a raw
 * IMAP client that sees every byte, and imapflow clients for the proxy and for Dovecot directly.
 */

import { expect, setDefaultTimeout, spyOn } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { connect, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { ImapFlow } from "imapflow";
import { AuditLog, type AuditRow } from "../../src/audit/index.ts";
import { type Config, parseConfig } from "../../src/config/index.ts";
import { type ImapProxy, startImapProxy } from "../../src/imap/index.ts";
import type { LOGIN_THROTTLE } from "../../src/imap/limits.ts";
import { UpstreamSession, type UpstreamTimeouts } from "../../src/imap/upstream.ts";
import type { Value } from "../../src/imap/wire/index.ts";
import { Connection } from "../../src/net/connection.ts";
import type { LoginLockout } from "../../src/net/lockout.ts";
import { compilePolicy } from "../../src/policy/index.ts";
import { LiveConfig } from "../../src/runtime/reload.ts";
import { connectImap, createMailbox, upstreams } from "../fixtures/index.ts";
import { RawSocket } from "../fixtures/raw-socket.ts";

setDefaultTimeout(30_000);

export interface ProxyOptions {
  /** TOML of [[rules]] and anything after [imap]; default allow-all. */
  readonly rules?: string;
  /** Extra keys for [imap]. */
  readonly imap?: string;
  readonly upstreamTls?: "tls" | "starttls" | "none";
  readonly upstreamAddr?: string;
  /** Extra trusted CA for the upstream; default the test CA, null for none. */
  readonly caFile?: string | null;
  /** Text after the rules (agents, accounts). */
  readonly extra?: string;
  /** What the proxy is given as its audit log, built around the real one (a log that fails on cue). */
  readonly wrapAudit?: (log: AuditLog) => AuditLog;
  /** The failed-login delay, instead of LOGIN_THROTTLE. */
  readonly loginThrottle?: Partial<typeof LOGIN_THROTTLE>;
  /** The failed-login count (a shorter lock, or one shared with an SMTP proxy), instead of one of its own. */
  readonly lockout?: LoginLockout;
  readonly accountRefusalHoldMs?: number;
  /** Shorter upstream and agent TLS handshake deadlines (startImapProxy's `timeouts`). */
  readonly timeouts?: Partial<UpstreamTimeouts>;
  /** Instead of RESPONSE_MEMORY_BUDGET. */
  readonly responseMemoryBudget?: number;
  readonly responseMemoryFree?: number;
  /** Instead of COMMAND_MEMORY_BUDGET and COMMAND_MEMORY_FREE. */
  readonly commandMemoryBudget?: number;
  readonly commandMemoryFree?: number;
  /** The proxy's folder (audit log, classification cache), kept at close; default a new one, removed at close. */
  readonly dir?: string;
}

export interface TestProxy {
  readonly proxy: ImapProxy;
  readonly port: number;
  readonly audit: AuditLog;
  readonly config: Config;
  readonly dir: string;
  rows(): Promise<AuditRow[]>;
  /**
   * Puts the config `options` describe in force, as a reload does (docs/operations.md "Reload"). With `judge`
   * (the default) the sessions are then judged as `serve` judges them after a SIGHUP (`prepareReload`, then the
   * swap, then its commit), and the number it ended is returned; without it only the rules change under the
   * sessions (0), which is what a session that has not been judged yet finds at its next step.
   */
  reload(options: ProxyOptions, judge?: boolean): number;
  close(): Promise<void>;
}

export const ALLOW_ALL = `[[rules]]
name = "everything"
action = "allow"
`;

/** INBOX read, flagged and expunged; every other folder denied ("Inbox" is rule 0, "Rest" rule 1). */
export const INBOX_WRITABLE = `
[[rules]]
name = "Inbox"
folders = ["INBOX"]
action = "allow"
operations = ["read", "mail:flag", "mail:delete"]

[[rules]]
name = "Rest"
action = "deny"
`;

export async function startTestProxy(options: ProxyOptions = {}): Promise<TestProxy> {
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), "mailgator-imap-"));
  const config = proxyConfig(options, dir);
  const audit = AuditLog.open(config.audit.path, { batchMs: 5, sync: "normal" });
  const policy = compilePolicy(config.rules);
  const live = new LiveConfig(config, policy);
  const proxy = await startImapProxy({
    config,
    policy,
    audit: options.wrapAudit?.(audit) ?? audit,
    live,
    ...(options.loginThrottle === undefined ? {} : { loginThrottle: options.loginThrottle }),
    ...(options.lockout === undefined ? {} : { lockout: options.lockout }),
    ...(options.accountRefusalHoldMs === undefined ? {} : { accountRefusalHoldMs: options.accountRefusalHoldMs }),
    ...(options.timeouts === undefined ? {} : { timeouts: options.timeouts }),
    ...(options.responseMemoryBudget === undefined ? {} : { responseMemoryBudget: options.responseMemoryBudget }),
    ...(options.responseMemoryFree === undefined ? {} : { responseMemoryFree: options.responseMemoryFree }),
    ...(options.commandMemoryBudget === undefined ? {} : { commandMemoryBudget: options.commandMemoryBudget }),
    ...(options.commandMemoryFree === undefined ? {} : { commandMemoryFree: options.commandMemoryFree }),
  });
  return {
    proxy,
    port: proxy.address.port,
    audit,
    config,
    dir,
    async rows() {
      await audit.flush();
      return audit.query({ order: "asc" });
    },
    reload(next, judge = true) {
      const reloaded = proxyConfig(next, dir);
      const prepared = proxy.prepareReload(reloaded);
      live.swap(reloaded, compilePolicy(reloaded.rules));
      return judge ? prepared.commit() : 0;
    },
    async close() {
      await proxy.close();
      await audit.close();
      if (options.dir === undefined) rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The config of a test proxy in `dir`, listening on a port of the system's choice. */
function proxyConfig(options: ProxyOptions, dir: string): Config {
  const up = upstreams();
  const mode = options.upstreamTls ?? "tls";
  const upstreamAddr = options.upstreamAddr ?? `${up.host}:${mode === "tls" ? up.ports.imaps : up.ports.imap}`;
  const toml = `[imap]
listen_addr = "127.0.0.1:1"
upstream_addr = "${upstreamAddr}"
upstream_tls = "${mode}"
${options.caFile === null ? "" : `upstream_ca_file = "${options.caFile ?? up.caFile}"`}
${options.imap ?? ""}

[audit]
path = "${join(dir, "audit.db")}"

${options.rules ?? ALLOW_ALL}
${options.extra ?? ""}
`;
  const parsed = parseConfig(toml, join(dir, "mailgator.toml"));
  return { ...parsed, imap: { ...parsed.imap!, listenAddr: { host: "127.0.0.1", port: 0 } } };
}

/** imapflow through the proxy (plain unless `tls`). */
export async function proxyClient(
  port: number,
  user: string,
  pass: string,
  tls: "none" | "tls" | "starttls" = "none",
): Promise<ImapFlow> {
  const client = new ImapFlow({
    host: "127.0.0.1",
    port,
    secure: tls === "tls",
    doSTARTTLS: tls === "starttls" ? true : tls === "none" ? false : undefined,
    tls: { ca: readFileSync(upstreams().caFile), servername: "localhost" },
    auth: { user, pass },
    logger: false,
  } as ConstructorParameters<typeof ImapFlow>[0]);
  await client.connect();
  return client;
}

/** A raw IMAP client: send lines, read until a tagged reply; every byte visible. */
export class RawImap extends RawSocket {
  /** `localAddress`: the client's own address (any of 127.0.0.0/8 on loopback), for per-address limits. */
  static async open(port: number, options: { tls?: boolean; localAddress?: string } = {}): Promise<RawImap> {
    const local = options.localAddress === undefined ? {} : { localAddress: options.localAddress };
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = options.tls
        ? tlsConnect(
            { host: "127.0.0.1", port, ca: readFileSync(upstreams().caFile), servername: "localhost", ...local },
            () => resolve(s),
          )
        : connect({ host: "127.0.0.1", port, ...local }, () => resolve(s));
      s.once("error", reject);
    });
    const client = new RawImap(socket);
    await client.readUntil((b) => b.includes("\r\n"));
    client.take();
    return client;
  }

  /** A raw client on `port`, logged in as `account` (tag `L`); the login must succeed. */
  static async login(port: number, account: { readonly user: string; readonly password: string }): Promise<RawImap> {
    const raw = await RawImap.open(port);
    const reply = await raw.command("L", `LOGIN "${account.user}" "${account.password}"`);
    expect(statusOf(reply, "L")).toStartWith("L OK");
    return raw;
  }

  /** A raw client on a socket that is already past the greeting (e.g. just upgraded with STARTTLS). */
  static fromSocket(socket: Socket): RawImap {
    return new RawImap(socket);
  }

  /** Sends `tag command` and returns everything through the tagged reply. */
  async command(tag: string, command: string): Promise<string> {
    this.write(`${tag} ${command}\r\n`);
    return this.waitTagged(tag);
  }

  async waitTagged(tag: string): Promise<string> {
    const re = new RegExp(`(^|\\r\\n)${tag} (OK|NO|BAD)[^\\r\\n]*\\r\\n`);
    const b = await this.readUntil((buffer) => re.test(buffer));
    const m = re.exec(b);
    if (m === null)
      throw new Error(`raw imap: connection closed before ${tag}'s reply; unread: ${JSON.stringify(b.slice(-500))}`);
    return this.take(m.index + m[0].length);
  }
}

/** Box shows shop@ messages only; Open shows every message; nothing else is allowed: the rules of the SELECT tests. */
export const BOX_SHOP_RULES = `
[[rules]]
name = "box: shop only"
folders = ["Box"]
from = "shop@*"
action = "allow"
operations = ["read"]

[[rules]]
name = "open"
folders = ["Open"]
action = "allow"
operations = ["read"]

[[rules]]
name = "nothing else"
action = "deny"
`;

/** The plain IMAP port of the test Dovecot, for a relay (tests/fixtures/tcp-relay.ts) to put itself in front of. */
export function dovecotImap(): { readonly host: string; readonly port: number } {
  const up = upstreams();
  return { host: up.host, port: up.ports.imap };
}

/**
 * A proxy under `rules` whose upstream is `relay`, in front of Dovecot's plain IMAP port (`dovecotImap`): for the
 * answers a real server does not give, made by changing one of Dovecot's.
 */
export function startRelayedProxy(relay: { readonly port: number }, rules: string): Promise<TestProxy> {
  return startTestProxy({ rules, upstreamTls: "none", upstreamAddr: `127.0.0.1:${relay.port}` });
}

/** A one-line message from `from` to me@corp.test, its Message-ID made of `subject`: for sender-filtered folders. */
export function fromMessage(from: string, subject: string): string {
  return `From: ${from}\r\nTo: me@corp.test\r\nSubject: ${subject}\r\nMessage-ID: <${subject}@corp.test>\r\n\r\nx\r\n`;
}

/**
 * An unfiltered folder's SELECT answer as the agent gets it right after a filtered folder was closed: without
 * upstream's `[UNSEEN]` (src/imap/commands/select.ts `respond`). `answer` must have one to take out.
 */
export function withoutUnseen(answer: string): string {
  expect(answer).toMatch(/^\* OK \[UNSEEN \d+\]/m);
  return answer.replace(/^\* OK \[UNSEEN \d+\][^\r\n]*\r\n/m, "");
}

/** The tagged status line of a reply. */
export function statusOf(reply: string, tag: string): string {
  const line = reply.split("\r\n").find((l) => l.startsWith(`${tag} `));
  return line ?? "";
}

/** What Dovecot holds for a user, read directly (not through the proxy): folders, subscriptions, UIDs and flags. */
export interface UpstreamState {
  readonly folders: readonly { readonly path: string; readonly subscribed: boolean }[];
  readonly messages: Readonly<Record<string, { readonly uidNext: number; readonly uids: readonly string[] }>>;
}

/**
 * Snapshot of a mailbox straight from Dovecot (EXAMINE, so \Recent is kept): every folder with its subscription,
 * UIDNEXT, and each message as `uid flags` (without \Recent, which goes to whichever session looks first). Two
 * snapshots are equal when nothing the agent could do changed.
 */
export async function upstreamState(mailbox: Pick<TestMailboxLike, "user" | "password">): Promise<UpstreamState> {
  const client = await connectImap(mailbox);
  try {
    const list = await client.list();
    const folders = list
      .map((f) => ({ path: f.path, subscribed: f.subscribed === true }))
      .sort((a, b) => a.path.localeCompare(b.path));
    const messages: Record<string, { uidNext: number; uids: string[] }> = {};
    for (const f of list) {
      if (f.flags.has("\\Noselect") || f.flags.has("\\NonExistent")) continue;
      const box = await client.mailboxOpen(f.path, { readOnly: true });
      const uids: string[] = [];
      if (box.exists > 0) {
        for await (const m of client.fetch("1:*", { uid: true, flags: true }))
          uids.push(
            `${m.uid} ${[...(m.flags ?? [])]
              .filter((f) => f !== "\\Recent")
              .sort()
              .join(" ")}`.trim(),
          );
      }
      messages[f.path] = { uidNext: box.uidNext, uids };
      await client.mailboxClose();
    }
    return { folders, messages };
  } finally {
    await client.logout();
  }
}

interface TestMailboxLike {
  readonly user: string;
  readonly password: string;
}

/** New audit rows since the last call (per proxy). */
export function auditCursor(proxy: TestProxy): () => Promise<AuditRow[]> {
  let last = 0;
  return async () => {
    const rows = (await proxy.rows()).filter((r) => r.id > last);
    if (rows.length > 0) last = rows[rows.length - 1]!.id;
    return rows;
  };
}

/**
 * The proxy's own upstream client, connected straight to the test Dovecot (implicit TLS, the test CA) and logged in
 * as `account`: what a test reads Dovecot's answers with (BODYSTRUCTURE, classification), as the proxy would.
 */
export async function directUpstream(account: {
  readonly user: string;
  readonly password: string;
}): Promise<UpstreamSession> {
  const servers = upstreams();
  const session = await UpstreamSession.open(
    {
      host: servers.host,
      port: servers.ports.imaps,
      tls: "tls",
      skipVerify: false,
      extraCa: readFileSync(servers.caFile, "utf8"),
      connectTimeoutMs: 5000,
    },
    { connectMs: 5000, handshakeMs: 5000, commandMs: 30_000 },
  );
  if (!(await session.login(account.user, account.password))) {
    session.close();
    throw new Error(`login at Dovecot as ${account.user} failed`);
  }
  return session;
}

/**
 * Dovecot's BODYSTRUCTURE of each of `cases`, by id: the messages appended to a fresh mailbox straight at Dovecot, then
 * fetched with the proxy's own upstream client, as the IMAP filter would read the same bytes.
 */
export async function dovecotStructures(
  cases: readonly { readonly id: string; readonly text: string }[],
): Promise<Map<string, Value>> {
  const structures = new Map<string, Value>();
  const mailbox = await createMailbox();
  const direct = await connectImap(mailbox);
  const uids = new Map<number, string>();
  try {
    for (const c of cases) {
      const appended = await direct.append("INBOX", c.text);
      if (!appended || appended.uid === undefined) throw new Error(`APPEND of ${c.id} gave no UID`);
      uids.set(appended.uid, c.id);
    }
  } finally {
    await direct.logout();
  }
  const session = await directUpstream(mailbox);
  try {
    expect((await session.run({ name: "EXAMINE", mailbox: "INBOX" }, () => {})).status).toBe("OK");
    const fetched = await session.run(
      {
        name: "FETCH",
        uid: true,
        set: [{ start: 1, stop: Math.max(...uids.keys()) }],
        items: [{ type: "UID" }, { type: "BODYSTRUCTURE" }],
        macro: null,
      },
      (r) => {
        if (r.type !== "FETCH") return;
        let uid = 0;
        let structure: Value | undefined;
        for (const a of r.attrs) {
          if (a.name === "UID") uid = a.value;
          else if (a.name === "BODYSTRUCTURE") structure = a.value;
        }
        const caseId = uids.get(uid);
        if (caseId !== undefined && structure !== undefined) structures.set(caseId, structure);
      },
    );
    expect(fetched.status).toBe("OK");
  } finally {
    await session.logout();
  }
  return structures;
}

/**
 * Records every write the proxy makes on any connection (to agents and to Dovecot), as latin1 text, until
 * `restore()`: what crossed the wire, without a relay in between.
 */
export function recordWrites(): { readonly writes: string[]; restore(): void } {
  const writes: string[] = [];
  const original = Connection.prototype.write;
  const spy = spyOn(Connection.prototype, "write").mockImplementation(function (this: Connection, data) {
    writes.push(typeof data === "string" ? data : Buffer.from(data).toString("latin1"));
    return original.call(this, data);
  });
  return { writes, restore: () => spy.mockRestore() };
}

/** One command line a scripted upstream read: its tag, its name upper-cased (`UID FETCH` for UID commands). */
export interface ScriptedCommand {
  readonly line: string;
  readonly tag: string;
  readonly command: string;
}

export interface ScriptedUpstream {
  readonly server: Server;
  readonly port: number;
  close(): Promise<void>;
}

/**
 * A scripted IMAP server on loopback, for what a real server cannot be made to do on cue (misbehaviour, a response in
 * a window a test cannot time): it greets with `* OK [CAPABILITY caps]`, reads one command line at a time and hands
 * each to `answer`, which writes the reply. It knows no literals. `close` cuts the connections still open.
 */
export async function startScriptedUpstream(
  caps: string,
  answer: (socket: Socket, c: ScriptedCommand) => void,
): Promise<ScriptedUpstream> {
  const open = new Set<Socket>();
  const server = createServer((socket: Socket) => {
    open.add(socket);
    socket.on("close", () => open.delete(socket));
    socket.setEncoding("latin1");
    socket.on("error", () => {});
    socket.write(`* OK [CAPABILITY ${caps}] scripted\r\n`);
    let buffer = "";
    socket.on("data", (d: string) => {
      buffer += d;
      for (let i = buffer.indexOf("\r\n"); i >= 0; i = buffer.indexOf("\r\n")) {
        const line = buffer.slice(0, i);
        buffer = buffer.slice(i + 2);
        const [tag = "", name = "", sub = ""] = line.split(" ");
        const command = name.toUpperCase() === "UID" ? `UID ${sub.toUpperCase()}` : name.toUpperCase();
        answer(socket, { line, tag, command });
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    server,
    port: (server.address() as { port: number }).port,
    close: () => {
      for (const socket of open) socket.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
