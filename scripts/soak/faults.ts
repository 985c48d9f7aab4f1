/**
 * Fault injection (docs/reliability.md, "Soak, faults and fuzzing"), each against a real `mailgator serve` process
 * and the local Dovecot and Postfix, on loopback:
 *
 *   imap-kill     the Dovecot imap process serving a session is killed (SIGKILL) in the middle of a large FETCH
 *   smtp-down     the upstream connection is cut when the proxy replays DATA, and the upstream stops listening
 *                 while an agent is sending its message
 *   audit-full    the audit log's filesystem (a small tmpfs, needs root) fills up, then has space again
 *   kill-sends    the proxy is SIGKILLed while agents send, then restarted on the same files
 *
 * Each prints what it checked; exit 1 when any check fails.
 *
 *   npx bun scripts/soak/faults.ts [--only imap-kill,smtp-down,audit-full,kill-sends] [--senders 20] ...
 */

import { Database } from "bun:sqlite";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer, type Server, type Socket, connect as tcpConnect } from "node:net";
import { join } from "node:path";
import type { Upstreams } from "../upstreams/description.ts";
import {
  ImapClient,
  intFlag,
  LOOPBACK,
  localPortsTo,
  type MailgatorProcess,
  makeUsers,
  parseFlags,
  plainAuth,
  runDir,
  SmtpClient,
  type SoakUser,
  servers,
  settle,
  sinkFilesWith,
  socketOwner,
  startProxy,
  tcpConnections,
} from "./lib.ts";

interface Check {
  readonly what: string;
  readonly ok: boolean;
  readonly detail: string;
}

class Checks {
  readonly list: Check[] = [];
  constructor(readonly fault: string) {}
  add(what: string, ok: boolean, detail = ""): void {
    this.list.push({ what, ok, detail });
    console.log(`${ok ? "  ok  " : "  FAIL"} ${this.fault}: ${what}${detail ? ` (${detail})` : ""}`);
  }
}

interface Context {
  readonly upstreams: Upstreams;
  readonly senders: number;
  readonly perSender: number;
}

async function send(
  port: number,
  user: SoakUser,
  token: string,
  options: { recipient?: string; onData?: (smtp: SmtpClient) => Promise<void> } = {},
): Promise<string> {
  const smtp = await SmtpClient.connect(port);
  try {
    // A connection refused at a limit is greeted with its 421 and closed: that is the send's answer.
    if (!smtp.greeting.startsWith("220")) return smtp.greeting;
    for (const [command, want] of [
      ["EHLO faults.test", "250"],
      [`AUTH PLAIN ${plainAuth(user.user, user.password)}`, "235"],
      [`MAIL FROM:<${user.address}>`, "250"],
      [`RCPT TO:<${options.recipient ?? `${token}@corp.test`}>`, "250"],
      ["DATA", "354"],
    ] as const) {
      const reply = await smtp.command(command);
      if (!reply.startsWith(want)) return reply;
    }
    smtp.write(
      `From: <${user.address}>\r\nTo: <${token}@corp.test>\r\nSubject: ${token}\r\nMessage-ID: ` +
        `<${token}@faults.test>\r\n\r\n`,
    );
    await options.onData?.(smtp);
    return await smtp.command(`${"fault line\r\n".repeat(50)}.`);
  } finally {
    smtp.destroy();
  }
}

/** A TCP forwarder on loopback that can cut connections when the proxy sends DATA, or stop listening. */
class Forwarder {
  #server: Server | null = null;
  readonly #sockets = new Set<Socket>();
  cutOnData = false;
  cuts = 0;

  constructor(
    readonly port: number,
    readonly target: number,
  ) {}

  static async start(target: number): Promise<Forwarder> {
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, LOOPBACK, resolve));
    const address = probe.address();
    const port = typeof address === "object" && address !== null ? address.port : 0;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    const forwarder = new Forwarder(port, target);
    await forwarder.listen();
    return forwarder;
  }

  listen(): Promise<void> {
    const server = createServer((down) => {
      const up = tcpConnect({ host: LOOPBACK, port: this.target });
      this.#sockets.add(down);
      this.#sockets.add(up);
      let seen = "";
      down.on("data", (chunk: Buffer) => {
        seen = (seen + chunk.toString("latin1")).slice(-64);
        if (this.cutOnData && /(^|\n)DATA\r\n/.test(seen)) {
          this.cuts++;
          down.destroy();
          up.destroy();
          return;
        }
        up.write(chunk);
      });
      up.on("data", (chunk: Buffer) => down.write(chunk));
      for (const s of [down, up]) {
        s.on("error", () => {});
        s.on("close", () => {
          this.#sockets.delete(s);
          down.destroy();
          up.destroy();
        });
      }
    });
    this.#server = server;
    return new Promise((resolve) => server.listen(this.port, LOOPBACK, resolve));
  }

  /** Stops listening and cuts every connection. */
  async down(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    const server = this.#server;
    this.#server = null;
    if (server !== null) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

function auditRows(file: string, where: string, ...params: (string | number)[]): number {
  const db = new Database(file, { readonly: true });
  try {
    return db
      .query<{ n: number }, (string | number)[]>(`SELECT count(*) AS n FROM audit WHERE ${where}`)
      .get(...params)!.n;
  } finally {
    db.close();
  }
}

// ------------------------------------------------------------------------------------------- imap-kill

async function imapKill(ctx: Context): Promise<Check[]> {
  const checks = new Checks("imap-kill");
  const dir = runDir("fault-imap-kill");
  const [user] = makeUsers(ctx.upstreams, "fault-imap", 1, 3000);
  const proxy = await startProxy({ dir, upstreams: ctx.upstreams });
  try {
    const imap = await ImapClient.connect(proxy.imapPort);
    await imap.command(`LOGIN "${user!.user}" "${user!.password}"`);
    await imap.command("SELECT INBOX");
    const ports = localPortsTo(proxy.pid, ctx.upstreams.ports.imap);
    const owners = ports.map((p) => socketOwner(ctx.upstreams.ports.imap, p)).filter((p): p is number => p !== null);
    const comm = owners.map((pid) => readFileSync(`/proc/${pid}/comm`, "utf8").trim());
    checks.add(
      "found the Dovecot process serving the session",
      owners.length > 0 && comm.every((c) => c === "imap"),
      `pids ${owners.join(",")} ${comm.join(",")}`,
    );
    const fetch = imap.command("UID FETCH 1:* (BODY.PEEK[])", 30_000).then(
      (r) => ({ status: r.status, error: null as string | null }),
      (e: Error) => ({ status: "", error: e.message }),
    );
    const deadline = Date.now() + 10_000;
    while (imap.unread === 0 && Date.now() < deadline) await Bun.sleep(5);
    const midway = imap.unread;
    for (const pid of owners) process.kill(pid, "SIGKILL");
    const started = performance.now();
    const outcome = await fetch;
    const ms = performance.now() - started;
    checks.add(
      "the kill came in the middle of the FETCH",
      midway > 0 && outcome.status !== "OK",
      `${midway} octets received before the kill`,
    );
    checks.add(
      "the agent is told (tagged NO/BAD, or BYE and close) instead of waiting",
      outcome.status === "NO" || outcome.status === "BAD" || (outcome.error !== null && imap.closed),
      `${outcome.status || outcome.error} after ${ms.toFixed(0)} ms`,
    );
    imap.destroy();
    checks.add("the proxy is still running", proxy.alive());
    const upstream = await settle(() => tcpConnections(proxy.pid, { remote: ctx.upstreams.ports.imap }), 0, 10_000);
    checks.add("no upstream connection left for the dead session", upstream === 0, `${upstream} open`);
    const again = await ImapClient.connect(proxy.imapPort);
    const statuses = [];
    for (const c of [`LOGIN "${user!.user}" "${user!.password}"`, "SELECT INBOX", "UID FETCH 1:10 (FLAGS)", "LOGOUT"])
      statuses.push((await again.command(c)).status);
    again.destroy();
    checks.add(
      "a new session logs in and reads",
      statuses.every((s) => s === "OK"),
      statuses.join(" "),
    );
  } finally {
    await proxy.stop();
  }
  return checks.list;
}

// ------------------------------------------------------------------------------------------- smtp-down

async function smtpDown(ctx: Context): Promise<Check[]> {
  const checks = new Checks("smtp-down");
  const dir = runDir("fault-smtp-down");
  const [user] = makeUsers(ctx.upstreams, "fault-smtp", 1, 1);
  const forwarder = await Forwarder.start(ctx.upstreams.ports.smtp);
  const proxy = await startProxy({ dir, upstreams: ctx.upstreams, smtpUpstreamPort: forwarder.port });
  const since = Date.now();
  const run = `${Date.now().toString(36)}`;
  try {
    // 1. The upstream connection is cut as the proxy sends DATA (the replay after the agent's final dot).
    forwarder.cutOnData = true;
    const cutToken = `cut-${run}`;
    const cutReply = await send(proxy.smtpPort, user!, cutToken);
    forwarder.cutOnData = false;
    checks.add(
      "connection cut at the replay's DATA: the agent gets a 4xx",
      /^4\d\d /.test(cutReply),
      `${cutReply}; ${forwarder.cuts} cut(s)`,
    );
    // 2. The upstream stops listening while the agent is in the middle of its message.
    const downToken = `down-${run}`;
    const downReply = await send(proxy.smtpPort, user!, downToken, {
      onData: async (smtp) => {
        smtp.write("first half of the message\r\n");
        await forwarder.down();
        await Bun.sleep(200);
      },
    });
    checks.add("upstream gone during DATA: the agent gets a 4xx", /^4\d\d /.test(downReply), downReply);
    await Bun.sleep(3_000);
    checks.add(
      "neither message reached anyone",
      sinkFilesWith(ctx.upstreams.sink, cutToken, since) + sinkFilesWith(ctx.upstreams.sink, downToken, since) === 0,
    );
    checks.add("the proxy is still running", proxy.alive());
    const errors = auditRows(proxy.auditFile, "protocol = 'smtp' AND command = 'DATA' AND decision = 'error'");
    checks.add("each failed send has an error row in the audit log", errors >= 2, `${errors} DATA error rows`);
    // 3. Back up: the next send goes through.
    await forwarder.listen();
    const okToken = `back-${run}`;
    const okReply = await send(proxy.smtpPort, user!, okToken);
    checks.add("with the upstream back, a send is accepted", okReply.startsWith("250"), okReply);
    const deadline = Date.now() + 15_000;
    while (sinkFilesWith(ctx.upstreams.sink, okToken, since) === 0 && Date.now() < deadline) await Bun.sleep(250);
    checks.add("and delivered", sinkFilesWith(ctx.upstreams.sink, okToken, since) === 1);
  } finally {
    await proxy.stop();
    await forwarder.down();
  }
  return checks.list;
}

// ------------------------------------------------------------------------------------------- audit-full

async function auditFull(ctx: Context): Promise<Check[]> {
  const checks = new Checks("audit-full");
  if (process.getuid?.() !== 0) {
    checks.add("needs root to mount a small tmpfs for the audit log", false, "run as root");
    return checks.list;
  }
  const dir = runDir("fault-audit-full");
  const mount = join(dir, "auditfs");
  mkdirSync(mount, { recursive: true });
  const mounted = Bun.spawnSync(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", mount]);
  if (mounted.exitCode !== 0) {
    checks.add("mount a 4 MiB tmpfs", false, mounted.stderr.toString().trim());
    return checks.list;
  }
  const [user] = makeUsers(ctx.upstreams, "fault-audit", 1, 20);
  let proxy: MailgatorProcess | null = null;
  const filler = join(mount, "filler");
  const since = Date.now();
  const run = `${Date.now().toString(36)}`;
  try {
    proxy = await startProxy({ dir, upstreams: ctx.upstreams, auditFile: join(mount, "audit.db") });
    const before = await send(proxy.smtpPort, user!, `before-${run}`);
    checks.add("a send with space left is accepted", before.startsWith("250"), before);
    const early = await ImapClient.connect(proxy.imapPort);
    await early.command(`LOGIN "${user!.user}" "${user!.password}"`);
    await early.command("SELECT INBOX");
    // Fill the filesystem.
    const block = Buffer.alloc(64 * 1024, 0x61);
    try {
      for (;;) writeFileSync(filler, block, { flag: "a" });
    } catch {
      // ENOSPC: full
    }
    const fullToken = `full-${run}`;
    const full = await send(proxy.smtpPort, user!, fullToken);
    checks.add("with the disk full, a send is refused with a 4xx", /^4\d\d /.test(full), full);
    for (const command of ['LIST "" "*"', "UID SEARCH ALL", "UID FETCH 1:3 (FLAGS)", "SELECT INBOX"]) {
      const reply = await early.command(command);
      const untagged = reply.text.split("\r\n").filter((l) => l.startsWith("* ")).length;
      checks.add(
        `logged-in session: ${command.split(" ")[0]} ${command.split(" ")[1]} answers NO and nothing else`,
        reply.status === "NO" && untagged === 0,
        `${reply.status}, ${untagged} untagged line(s)`,
      );
    }
    early.destroy();
    const late = await ImapClient.connect(proxy.imapPort);
    const login = await late.command(`LOGIN "${user!.user}" "${user!.password}"`);
    // NAMESPACE needs a login and writes no audit row: BAD ("Log in first") only if the session is not logged in.
    const after = await late.command("NAMESPACE");
    checks.add(
      "LOGIN is refused and leaves the session unauthenticated",
      login.status === "NO" && after.status === "BAD",
      `LOGIN ${login.status}, then NAMESPACE ${after.status}`,
    );
    late.destroy();
    checks.add("the proxy is still running", proxy.alive());
    // Space again.
    rmSync(filler, { force: true });
    let recovered = "";
    const deadline = Date.now() + 20_000;
    const backToken = `back-${run}`;
    while (Date.now() < deadline) {
      recovered = await send(proxy.smtpPort, user!, backToken);
      if (recovered.startsWith("250")) break;
      await Bun.sleep(1_000);
    }
    checks.add("with space again, a send is accepted", recovered.startsWith("250"), recovered);
    const imap = await ImapClient.connect(proxy.imapPort);
    const statuses = [];
    for (const c of [`LOGIN "${user!.user}" "${user!.password}"`, "SELECT INBOX", "UID FETCH 1:3 (FLAGS)"])
      statuses.push((await imap.command(c)).status);
    imap.destroy();
    checks.add(
      "and an IMAP session logs in and reads",
      statuses.every((s) => s === "OK"),
      statuses.join(" "),
    );
    await Bun.sleep(3_000);
    checks.add("the send refused while full reached no one", sinkFilesWith(ctx.upstreams.sink, fullToken, since) === 0);
  } finally {
    await proxy?.stop();
    Bun.spawnSync(["umount", mount]);
  }
  return checks.list;
}

// ------------------------------------------------------------------------------------------- kill-sends

/** The proxy's defaults (docs/config.md "[limits]") that the senders of kill-sends must stay under. */
const SESSIONS_PER_AGENT = 10;
const SMTP_CONNECTIONS_PER_IP = 50;

async function killSends(ctx: Context): Promise<Check[]> {
  const checks = new Checks("kill-sends");
  const dir = runDir("fault-kill-sends");
  // Every sender logged in at once, and from 127.0.0.1: enough users for max_sessions_per_agent, and the SMTP
  // listener's connection limits raised past the senders when they would refuse some. Twice the senders: a sender
  // connects again at once after its send, and its previous connection (and session) holds its place until the proxy
  // has seen it close.
  const places = 2 * ctx.senders;
  const users = makeUsers(ctx.upstreams, "fault-kill", Math.max(4, Math.ceil(places / SESSIONS_PER_AGENT)), 1);
  const extraConfig =
    places < SMTP_CONNECTIONS_PER_IP
      ? ""
      : `[limits.smtp]\nmax_connections = ${places + 20}\nmax_connections_per_ip = ${places + 10}\n`;
  let proxy = await startProxy({ dir, upstreams: ctx.upstreams, extraConfig });
  const since = Date.now();
  const run = `k${Date.now().toString(36)}`;
  const outcomes = new Map<string, string>();
  let stop = false;
  const senders = Array.from({ length: ctx.senders }, async (_, i) => {
    for (let j = 0; j < ctx.perSender && !stop; j++) {
      const token = `${run}-${i}-${j}`;
      try {
        outcomes.set(token, await send(proxy.smtpPort, users[i % users.length]!, token));
      } catch (error) {
        outcomes.set(token, `lost: ${(error as Error).message.slice(0, 60)}`);
        return;
      }
    }
  });
  // Let the senders get going, then kill the proxy in the middle of their traffic.
  const deadline = Date.now() + 30_000;
  while (outcomes.size < ctx.senders && Date.now() < deadline) await Bun.sleep(20);
  const killedPid = proxy.pid;
  await proxy.kill();
  stop = true;
  await Promise.all(senders);
  const accepted = [...outcomes].filter(([, r]) => r.startsWith("250")).map(([t]) => t);
  const cut = [...outcomes].filter(([, r]) => r.startsWith("lost")).length;
  const refused = [...outcomes].filter(([, r]) => !r.startsWith("250") && !r.startsWith("lost")).map(([, r]) => r);
  checks.add(
    "the proxy was killed while sends were in flight",
    cut > 0,
    `${outcomes.size} sends, ${accepted.length} accepted, ${cut} cut by the kill (pid ${killedPid})`,
  );
  // Before the kill the proxy is healthy: a refusal (a connection or session limit, say) means the senders did not
  // all send at once, and the kill fell on fewer sends than asked for.
  checks.add(
    "no send was refused before the kill",
    refused.length === 0,
    `${refused.length} refused${refused.length > 0 ? `, first: ${refused[0]}` : ""}`,
  );
  proxy = await startProxy({
    dir,
    upstreams: ctx.upstreams,
    imapPort: proxy.imapPort,
    smtpPort: proxy.smtpPort,
    extraConfig,
  });
  try {
    const after = await send(proxy.smtpPort, users[0]!, `${run}-after`);
    checks.add("restarted on the same files, it accepts a send", after.startsWith("250"), after);
    // Wait for Postfix to deliver what it accepted.
    const wait = Date.now() + 20_000;
    let delivered: string[] = [];
    for (;;) {
      delivered = [...outcomes.keys()].filter(
        (t) => sinkFilesWith(ctx.upstreams.sink, `<${t}@faults.test>`, since) > 0,
      );
      if (accepted.every((t) => delivered.includes(t)) || Date.now() > wait) break;
      await Bun.sleep(500);
    }
    const missing = accepted.filter((t) => !delivered.includes(t));
    checks.add("every send the agent saw accepted was delivered", missing.length === 0, `${missing.length} missing`);
    await Bun.sleep(500);
    const db = new Database(proxy.auditFile, { readonly: true });
    const rowFor = db.query<{ n: number }, [string]>(
      "SELECT count(*) AS n FROM audit WHERE protocol = 'smtp' AND command = 'DATA' AND decision = " +
        "'allow' AND detail LIKE ?",
    );
    const unaudited = delivered.filter((t) => rowFor.get(`%${t}@faults.test%`)!.n === 0);
    const integrity = db.query<{ integrity_check: string }, []>("PRAGMA integrity_check").get()!.integrity_check;
    db.close();
    checks.add(
      "every message that reached upstream has its allow row in the audit log",
      unaudited.length === 0,
      `${delivered.length} delivered, ${unaudited.length} without a ` +
        `row${unaudited.length ? `: ${unaudited.slice(0, 3).join(", ")}` : ""}`,
    );
    checks.add("the audit database is intact after the kill", integrity === "ok", integrity);
    const spool = join(dir, "mailgator-spool");
    const left = existsSync(spool) ? readdirSync(spool).filter((f) => statSync(join(spool, f)).isFile()) : [];
    checks.add(
      "no spooled message is left behind (spool files are unlinked when opened)",
      left.length === 0,
      `${left.length} file(s)`,
    );
  } finally {
    await proxy.stop();
  }
  return checks.list;
}

// ------------------------------------------------------------------------------------------- main

export const FAULTS: Readonly<Record<string, (ctx: Context) => Promise<Check[]>>> = {
  "imap-kill": imapKill,
  "smtp-down": smtpDown,
  "audit-full": auditFull,
  "kill-sends": killSends,
};

if (import.meta.main) {
  const flags = parseFlags(
    "Usage: npx bun scripts/soak/faults.ts [flags]\n\nInjects faults into a real mailgator process and " +
      "its upstreams and prints what it checked.\nExit 1 when a check fails.",
    {
      only: { default: Object.keys(FAULTS).join(","), help: "faults to run, comma-separated" },
      senders: { default: "20", help: "kill-sends: concurrent senders (at most 200)" },
      "per-sender": { default: "20", help: "kill-sends: messages per sender at most (at most 1000)" },
    },
  );
  const { upstreams } = await servers((line) => console.error(line));
  const ctx: Context = {
    upstreams,
    senders: Math.max(1, intFlag("senders", flags.senders, 200)),
    perSender: Math.max(1, intFlag("per-sender", flags["per-sender"], 1000)),
  };
  const all: Check[] = [];
  for (const name of flags.only.split(",").filter(Boolean)) {
    const fault = FAULTS[name];
    if (fault === undefined) {
      console.error(`unknown fault ${name}; known: ${Object.keys(FAULTS).join(", ")}`);
      process.exit(2);
    }
    console.log(`faults: ${name}`);
    try {
      all.push(...(await fault(ctx)));
    } catch (error) {
      console.log(`  FAIL ${name}: did not complete: ${(error as Error).message}`);
      all.push({ what: `${name} completed`, ok: false, detail: (error as Error).message });
    }
  }
  const failed = all.filter((c) => !c.ok);
  console.log(
    failed.length === 0
      ? `faults: PASS (${all.length} checks)`
      : `faults: FAIL (${failed.length} of ${all.length} checks)`,
  );
  process.exit(failed.length === 0 ? 0 : 1);
}
