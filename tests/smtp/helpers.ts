/**
 * Test helpers for the SMTP proxy: a proxy built from TOML against the upstream servers of
 * scripts/upstreams (described by MAILGATOR_UPSTREAMS), a raw SMTP client that sees every reply, and readers
 * of what Postfix delivered (the sink Maildir holds one file per envelope recipient outside the test domain).
 */

import { afterAll, beforeAll, expect, setDefaultTimeout } from "bun:test";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readUpstreams, type Upstreams } from "../../scripts/upstreams/description.ts";
import { defaultDir } from "../../scripts/upstreams/layout.ts";
import { type ApprovalRow, ApprovalStore } from "../../src/approvals/store.ts";
import { AuditLog, type AuditRow } from "../../src/audit/index.ts";
import type { Config } from "../../src/config/index.ts";
import { parseConfig } from "../../src/config/index.ts";
import type { LoginLockout } from "../../src/net/lockout.ts";
import { compilePolicy } from "../../src/policy/index.ts";
import { LiveConfig } from "../../src/runtime/reload.ts";
import { type SmtpProxy, startSmtpProxy } from "../../src/smtp/index.ts";
import type { SessionLimits } from "../../src/smtp/limits.ts";
import { SealedStore } from "../../src/state/store.ts";
import { hashToken } from "../../src/vault/token.ts";
import { heldId } from "../fixtures/delivery.ts";
import { RawSocket } from "../fixtures/raw-socket.ts";

// End-to-end tests wait for Postfix deliveries and Dovecot's ~2 s delay after a failed login.
setDefaultTimeout(30_000);

let cached: Upstreams | null = null;
/** The running upstream servers (npm test starts them and sets MAILGATOR_UPSTREAMS). */
export function upstreams(): Upstreams {
  if (cached === null) {
    const path = process.env["MAILGATOR_UPSTREAMS"] ?? join(defaultDir(), "upstreams.json");
    if (!existsSync(path))
      throw new Error(
        `SMTP e2e tests need the upstream servers: run npm test, or bun scripts/upstreams/start.ts (no ${path})`,
      );
    cached = readUpstreams(path);
  }
  return cached;
}

/** A unique token for addresses and subjects, so parallel tests never see each other's mail. */
export function marker(): string {
  return randomBytes(6).toString("hex");
}

export interface ProxyOptions {
  /** TOML of [[rules]] (and anything else after [smtp]). */
  readonly rules: string;
  /** Extra keys for [smtp]. */
  readonly smtp?: string;
  readonly upstreamTls?: "tls" | "starttls" | "none";
  /** host:port instead of the Postfix port for the upstream mode. */
  readonly upstreamAddr?: string;
  readonly limits?: Partial<SessionLimits>;
  /** The failed-login count (a shorter lock, or one shared with an IMAP proxy), instead of one of its own. */
  readonly lockout?: LoginLockout;
  /** A shorter ACCOUNT_REFUSAL_HOLD_MS (src/accounts/refusals.ts). */
  readonly accountRefusalHoldMs?: number;
  /** Trusted extra CA for the upstream; default the test CA, null for none. */
  readonly caFile?: string | null;
  /** What the proxy is given as its audit log, built around the real one (a slow or failing log). */
  readonly wrapAudit?: (log: AuditLog) => AuditLog;
  /** How often rows recorded without waiting are committed (default 5 ms). */
  readonly auditBatchMs?: number;
  /** Opens the state database (in the test's folder) and holds `ask` sends there. */
  readonly approvals?: boolean;
  /** Called after the agent has its 250 for a held message (the notices, src/approvals/notify.ts). */
  readonly onHeld?: (row: ApprovalRow) => void;
}

export interface TestProxy {
  readonly proxy: SmtpProxy;
  readonly port: number;
  readonly audit: AuditLog;
  readonly config: Config;
  readonly dir: string;
  /** The held messages, when `approvals` was asked for. */
  readonly approvals: ApprovalStore | null;
  /** Audit rows, oldest first, once queued rows are on disk. */
  rows(): Promise<AuditRow[]>;
  /**
   * Puts the same config with `rules` in force, as `serve` does after a SIGHUP (docs/operations.md "Reload"): the
   * swap, then the listener's commit. Returns the new config.
   */
  reload(rules: string): Config;
  close(): Promise<void>;
}

export async function startTestProxy(options: ProxyOptions): Promise<TestProxy> {
  const up = upstreams();
  const dir = mkdtempSync(join(tmpdir(), "mailgator-smtp-"));
  const mode = options.upstreamTls ?? "starttls";
  const upstreamAddr = options.upstreamAddr ?? `${up.host}:${mode === "tls" ? up.ports.smtps : up.ports.smtp}`;
  // One template for the config at start and after each reload (`options` with the rules in force).
  const tomlOf = (options: ProxyOptions) => `[smtp]
listen_addr = "127.0.0.1:1"
upstream_addr = "${upstreamAddr}"
upstream_tls = "${mode}"
${options.caFile === null ? "" : `upstream_ca_file = "${options.caFile ?? up.caFile}"`}
${options.smtp ?? ""}

[audit]
path = "${join(dir, "audit.db")}"

${options.rules}
`;
  const configOf = (rules: string): Config => {
    const parsed = parseConfig(tomlOf({ ...options, rules }), join(dir, "mailgator.toml"));
    // The config format wants a real port; tests listen on a free one (port 0).
    return { ...parsed, smtp: { ...parsed.smtp!, listenAddr: { host: "127.0.0.1", port: 0 } } };
  };
  const config = configOf(options.rules);
  const audit = AuditLog.open(config.audit.path, { batchMs: options.auditBatchMs ?? 5, sync: "normal" });
  const policy = compilePolicy(config.rules);
  const live = new LiveConfig(config, policy);
  const proxyAudit = options.wrapAudit?.(audit) ?? audit;
  const state = options.approvals
    ? SealedStore.open(config.state.path, { secretsFile: join(dir, "secrets.key"), env: {}, create: true })
    : null;
  const approvals = state === null ? null : new ApprovalStore(state);
  const proxy = await startSmtpProxy({
    config,
    policy,
    live,
    audit: proxyAudit,
    approvals,
    ...(options.onHeld ? { onHeld: options.onHeld } : {}),
    ...(options.limits ? { limits: options.limits } : {}),
    ...(options.lockout ? { lockout: options.lockout } : {}),
    ...(options.accountRefusalHoldMs ? { accountRefusalHoldMs: options.accountRefusalHoldMs } : {}),
  });
  return {
    proxy,
    port: proxy.address.port,
    audit,
    config,
    dir,
    approvals,
    async rows() {
      await audit.flush();
      return audit.query({ order: "asc" });
    },
    reload(rules) {
      const next = configOf(rules);
      const prepared = proxy.prepareReload(next);
      live.swap(next, compilePolicy(next.rules));
      prepared.commit();
      return next;
    },
    async close() {
      await proxy.close();
      await audit.close();
      state?.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface ServerReply {
  readonly code: number;
  readonly lines: string[];
  /** The whole reply as received, CRLFs included. */
  readonly raw: string;
}

/** A raw SMTP client: write anything, read replies one at a time. */
export class RawClient extends RawSocket {
  /** `localAddress`: the client's own address (any of 127.0.0.0/8 on loopback), for per-address limits. */
  static connect(port: number, host = "127.0.0.1", localAddress?: string): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = connect({ port, host, ...(localAddress ? { localAddress } : {}) }, () =>
        resolve(new RawClient(socket)),
      );
      socket.once("error", reject);
    });
  }

  /** Next complete reply; rejects on close or timeout. */
  async reply(timeoutMs = 10_000): Promise<ServerReply> {
    const re = /^(?:\d{3}-[^\r\n]*\r\n)*\d{3}(?: [^\r\n]*)?\r\n/;
    const buffer = await this.readUntil((b) => re.test(b), timeoutMs, "no reply");
    const m = re.exec(buffer);
    if (m === null) throw new Error(`connection closed; unread: ${JSON.stringify(buffer)}`);
    const raw = this.take(m[0].length);
    const lines = raw.split("\r\n").filter((l) => l !== "");
    return { code: Number(raw.slice(0, 3)), lines: lines.map((l) => l.slice(4)), raw };
  }

  /** Sends one command line and returns its reply. */
  async command(line: string): Promise<ServerReply> {
    this.write(`${line}\r\n`);
    return this.reply();
  }

  /** Resolves when the server has closed the connection. */
  async waitClosed(timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) {
      if (Date.now() > deadline) throw new Error("connection still open");
      await Bun.sleep(10);
    }
  }
}

/** Connects, reads the greeting, EHLOs and logs in with a test user's upstream credentials (pass-through). */
export async function loggedIn(port: number, user = upstreams().users[0]!): Promise<RawClient> {
  const c = await RawClient.connect(port);
  await c.reply();
  await c.command("EHLO client.test");
  const token = Buffer.from(`\0${user.user}\0${user.password}`).toString("base64");
  const r = await c.command(`AUTH PLAIN ${token}`);
  if (r.code !== 235) throw new Error(`login failed: ${r.raw}`);
  return c;
}

export interface Delivered {
  readonly file: string;
  /** X-Original-To: the envelope recipient this copy was delivered for. */
  readonly recipient: string;
  readonly text: string;
}

/** Every copy in the sink whose text contains `needle` (e.g. a marker in the subject). */
export function sinkCopies(needle: string): Delivered[] {
  const out: Delivered[] = [];
  const sink = upstreams().sink;
  for (const sub of ["new", "cur"]) {
    const dir = join(sink, sub);
    if (!existsSync(dir)) continue;
    for (const name of readdirSync(dir)) {
      let text: string;
      try {
        text = readFileSync(join(dir, name), "latin1");
      } catch {
        continue;
      }
      if (!text.includes(needle)) continue;
      const m = /^X-Original-To: (.*)$/im.exec(text);
      out.push({ file: join(dir, name), recipient: (m?.[1] ?? "").trim().toLowerCase(), text });
    }
  }
  return out;
}

/** Waits until `count` copies containing `needle` are in the sink. */
export async function waitForSink(needle: string, count: number, timeoutMs = 15_000): Promise<Delivered[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const copies = sinkCopies(needle);
    if (copies.length >= count) return copies;
    if (Date.now() > deadline)
      throw new Error(`only ${copies.length} of ${count} copies of ${needle} reached the sink`);
    await Bun.sleep(50);
  }
}

/** The body as Postfix stored it: what follows the first blank line. */
export function bodyOf(text: string): string {
  const at = text.indexOf("\n\n");
  return at === -1 ? "" : text.slice(at + 2);
}

/** The Postfix log, for asserting what the upstream saw. */
export function postfixLog(): string {
  const path = upstreams().logs["postfix"];
  return path !== undefined && existsSync(path) ? readFileSync(path, "utf8") : "";
}

/** Builds a message with CRLF line ends. */
export function message(headers: Record<string, string>, body: string): string {
  const head = Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}`)
    .join("\r\n");
  return `${head}\r\n\r\n${body.replace(/\r?\n/g, "\r\n")}`;
}

/** Dot-stuffs and terminates a message for DATA. */
/**
 * The approvals setup several tests share: links on `baseUrl`, a group `managers` (boss@corp.test) and one rule by
 * which every send asks them.
 */
export function askManagersRules(baseUrl: string): string {
  return `
[approvals]
base_url = "${baseUrl}"

[approvals.groups.managers]
recipients = ["boss@corp.test"]

[[rules]]
name = "outside needs a manager"
action = "ask"
operations = ["send"]
ask_groups = ["managers"]
`;
}

/** Sends one message as alice through the SMTP proxy on `port`, to `to`; the id it was held under. */
export async function holdMessage(port: number, to: string, subject: string, body: string): Promise<string> {
  const c = await loggedIn(port);
  expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
  expect((await c.command(`RCPT TO:<${to}>`)).code).toBe(250);
  expect((await c.command("DATA")).code).toBe(354);
  c.write(dataPayload(message({ From: "alice@mailgator.test", To: to, Subject: subject }, body)));
  const r = await c.reply();
  await c.command("QUIT");
  return heldId(r.lines.join(" "));
}

export function dataPayload(text: string): string {
  const stuffed = text.replace(/(^|\r\n)\./g, "$1..");
  return `${stuffed}${stuffed.endsWith("\r\n") || stuffed === "" ? "" : "\r\n"}.\r\n`;
}

/**
 * Sends an allowed message through the proxy on `port` in a fresh session and waits until Postfix delivered it:
 * whatever an earlier transaction would have delivered has been delivered by then.
 */
export async function barrier(port: number): Promise<void> {
  const m = marker();
  const c = await loggedIn(port);
  expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
  expect((await c.command(`RCPT TO:<barrier-${m}@corp.test>`)).code).toBe(250);
  expect((await c.command("DATA")).code).toBe(354);
  c.write(dataPayload(message({ Subject: `barrier ${m}`, To: `barrier-${m}@corp.test` }, "barrier")));
  expect((await c.reply()).code).toBe(250);
  c.close();
  await waitForSink(m, 1);
}

/** After a `barrier` through `port`: no copy with marker `m` was delivered, and Postfix never logged it. */
export async function nothingReachedUpstream(port: number, m: string): Promise<void> {
  await barrier(port);
  expect(sinkCopies(m)).toEqual([]);
  expect(postfixLog()).not.toContain(m);
}

/**
 * One message from alice@mailgator.test over a session of its own: `head` (header lines with CRLFs, no blank line),
 * then `body`, to `recipients`; the final reply (the session then quits).
 */
export async function sendHead(
  port: number,
  recipients: readonly string[],
  head: string,
  body = "hello\r\n",
): Promise<string> {
  const c = await loggedIn(port);
  expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
  for (const r of recipients) expect((await c.command(`RCPT TO:<${r}>`)).code).toBe(250);
  expect((await c.command("DATA")).code).toBe(354);
  c.write(Buffer.from(`${head}\r\n${body}.\r\n`, "latin1"));
  const final = (await c.reply()).raw;
  await c.command("QUIT");
  c.close();
  return final;
}

/** Send rules most tests use: only recipients at corp.test, nothing else. */
export const CORP_ONLY_RULES = `
[[rules]]
name = "corp only"
action = "allow"
operations = ["send"]
to = "*@corp.test"

[[rules]]
name = "nothing else"
action = "deny"
`;

/** Approval rules: recipients at corp.test allowed, any other held for the group "managers" (boss@corp.test). */
export const ASK_OUTSIDE_RULES = `
[approvals]
base_url = "http://127.0.0.1:1"

[approvals.groups.managers]
recipients = ["boss@corp.test"]

[[rules]]
name = "colleagues"
action = "allow"
operations = ["send"]
to = "*@corp.test"

[[rules]]
name = "outside needs a manager"
action = "ask"
operations = ["send"]
ask_groups = ["managers"]
`;

/** One proxy for the whole test file: started before its first test, closed after its last. */
export function useTestProxy(options: ProxyOptions, set: (proxy: TestProxy) => void): void {
  let proxy: TestProxy | undefined;
  beforeAll(async () => {
    proxy = await startTestProxy(options);
    set(proxy);
  });
  afterAll(async () => {
    await proxy?.close();
  });
}

/**
 * Vault mode after `rules`: one agent "bot" with `token`, whose account is the first test user (`account`: more keys
 * for it).
 */
export function vaultConfig(rules: string, token: string, account = ""): string {
  const user = upstreams().users[0]!;
  return `${rules}
[[agents]]
name = "bot"
token_hash = "${hashToken(token)}"
account = "main"

[accounts.main]
username = "${user.user}"
password = "${user.password}"
${account}
`;
}

/** A raw client logged in to the proxy as the vault agent "bot". */
export async function vaultClient(port: number, token: string): Promise<RawClient> {
  const c = await RawClient.connect(port);
  await c.reply();
  await c.command("EHLO client.test");
  expect((await c.command(`AUTH PLAIN ${Buffer.from(`\0bot\0${token}`).toString("base64")}`)).code).toBe(235);
  return c;
}
