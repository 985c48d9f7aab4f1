/**
 * Soak (docs/reliability.md, "Soak, faults and fuzzing"): mixed IMAP and SMTP traffic from many sessions for a
 * fixed time through a real `mailgator serve` process against the local Dovecot and Postfix, with the proxy's RSS
 * sampled from /proc. At the end it checks that the audit log holds exactly the rows the clients' own counts
 * predict, per protocol, command and decision; that no client saw an error; that every agent and upstream
 * connection is gone; and that RSS at the end, and after an idle period, is within the tolerance of RSS after the
 * warm-up. Exits non-zero when any check fails.
 *
 *   npx bun scripts/soak/soak.ts [--sessions 100] [--minutes 10] [--idle-seconds 60] [--think-ms 250] ...
 *
 * Uses MAILGATOR_UPSTREAMS when set, otherwise starts the servers with scripts/upstreams/start.ts (loopback).
 * `--qresync hidden` puts the checking relay (relay.ts) between the proxy and Dovecot, taking QRESYNC out of its
 * capabilities: every folder switch then goes through UNSELECT with the SELECT pipelined behind it (docs/imap.md
 * "Switching folders"), and the relay's check of the proxy's commands is one more check of the run.
 */

import {
  auditCounts,
  bump,
  compareCounts,
  cpuSeconds,
  ImapClient,
  intFlag,
  type MailgatorProcess,
  makeUsers,
  numberFlag,
  parseFlags,
  plainAuth,
  prng,
  RssSampler,
  runDir,
  SmtpClient,
  type SoakUser,
  servers,
  settle,
  startProxy,
  tcpConnections,
} from "./lib.ts";
import { type Relay, startRelay } from "./relay.ts";

export interface SoakOptions {
  readonly sessions: number;
  readonly seconds: number;
  /** Share of the sessions that speak IMAP (the rest SMTP). */
  readonly imapShare: number;
  readonly users: number;
  readonly messages: number;
  /** Mean pause between two commands of one session. */
  readonly thinkMs: number;
  /** RSS "after the warm-up" is read at this time: the reference the end and idle values are held to. */
  readonly warmupSeconds: number;
  readonly idleSeconds: number;
  readonly sampleMs: number;
  /** Allowed growth of RSS over the warm-up value, at the end and after idling (0.2 = 20 %). */
  readonly rssTolerance: number;
  /** When false, RSS is reported but not checked (short runs, where the warm-up value means little). */
  readonly checkRss: boolean;
  readonly seed: number;
  /** MailgatorProcess environment (MIMALLOC_PURGE_DELAY; the default is what `serve` sets itself). */
  readonly env: Readonly<Record<string, string>>;
  /** TOML appended to the proxy's config (e.g. a `[limits]` table raising per-address limits for one client host). */
  readonly extraConfig?: string;
  readonly heapProbe: boolean;
  /** Dovecot behind the checking relay with QRESYNC taken out of its capabilities (relay.ts). */
  readonly hideQresync?: boolean;
  readonly log: (line: string) => void;
}

export interface SoakReport {
  readonly dir: string;
  readonly client: Map<string, number>;
  readonly audit: Map<string, number>;
  readonly errors: string[];
  readonly errorCount: number;
  readonly cycles: { imap: number; smtp: number; commands: number; sends: number };
  readonly rss: { warm: number; end: number; idle: number; max: number; series: string };
  readonly leftover: { agents: number; upstream: number };
  /** What the relay saw of the proxy's IMAP commands, with `hideQresync` (null without). */
  readonly relay: Relay["stats"] | null;
  /** The proxy's CPU seconds (user + system) during the traffic. */
  readonly cpuSeconds: number;
  readonly problems: string[];
}

const MAX_ERRORS_KEPT = 20;

/** One soak run: starts a proxy, drives the traffic, checks, stops the proxy. */
export async function runSoak(options: SoakOptions, proxyIn?: MailgatorProcess): Promise<SoakReport> {
  const log = options.log;
  const { upstreams } = await servers(log);
  const dir = runDir("soak");
  const users = makeUsers(upstreams, "soak", options.users, options.messages);
  const relay = options.hideQresync ? await startRelay("imap", upstreams.ports.imap, { hideQresync: true }) : null;
  const imapUpstreamPort = relay?.port ?? upstreams.ports.imap;
  const proxy =
    proxyIn ??
    (await startProxy({
      dir,
      upstreams,
      imapUpstreamPort,
      env: options.env,
      heapProbe: options.heapProbe,
      extraConfig: options.extraConfig ?? "",
    }));
  log(`soak: mailgator pid ${proxy.pid}, IMAP ${proxy.imapPort}, SMTP ${proxy.smtpPort}, folder ${dir}`);
  const rss = new RssSampler(proxy.pid, options.sampleMs);
  const cpuBefore = cpuSeconds(proxy.pid);
  const client = new Map<string, number>();
  const errors: string[] = [];
  let errorCount = 0;
  const cycles = { imap: 0, smtp: 0, commands: 0, sends: 0 };
  const fail = (what: string): void => {
    errorCount++;
    if (errors.length < MAX_ERRORS_KEPT) errors.push(what);
  };
  const deadline = performance.now() + options.seconds * 1000;
  const imapSessions = Math.round(options.sessions * options.imapShare);
  const workers: Promise<void>[] = [];
  for (let i = 0; i < options.sessions; i++) {
    const random = prng(options.seed * 1000 + i);
    const user = users[i % users.length]!;
    const think = () => Bun.sleep(options.thinkMs * (0.5 + random()));
    const worker = i < imapSessions ? imapWorker : smtpWorker;
    workers.push(
      (async () => {
        // Spread the starts over the first few seconds, as agents would arrive.
        await Bun.sleep(random() * Math.min(5_000, options.seconds * 100));
        while (performance.now() < deadline) {
          try {
            await worker({
              port: i < imapSessions ? proxy.imapPort : proxy.smtpPort,
              user,
              random,
              think,
              client,
              cycles,
            });
          } catch (error) {
            fail(`${i < imapSessions ? "imap" : "smtp"} session ${i}: ${(error as Error).message}`);
            await think();
          }
        }
      })(),
    );
  }
  const warmAt = options.warmupSeconds;
  await Promise.all(workers);
  const endRss = rss.sample();
  const cpu = cpuSeconds(proxy.pid) - cpuBefore;
  const trafficSeconds = rss.series[rss.series.length - 1]![0];
  log(`soak: traffic done after ${trafficSeconds.toFixed(0)} s; idling ${options.idleSeconds} s`);
  // Connections: every agent connection and every upstream connection of the proxy must be gone.
  const agents = await settle(
    () => tcpConnections(proxy.pid, { local: proxy.imapPort }) + tcpConnections(proxy.pid, { local: proxy.smtpPort }),
    0,
    10_000,
  );
  const upstream = await settle(
    () =>
      tcpConnections(proxy.pid, { remote: imapUpstreamPort }) +
      tcpConnections(proxy.pid, { remote: upstreams.ports.smtp }),
    0,
    10_000,
  );
  await Bun.sleep(Math.max(0, options.idleSeconds * 1000 - 2_000));
  const idleRss = rss.sample();
  rss.stop();
  const warmRss = rss.at(warmAt);
  const audit = auditCounts(proxy.auditFile);
  if (proxyIn === undefined) {
    const code = await proxy.stop();
    if (code !== 0) fail(`mailgator exited with ${code} on SIGTERM`);
  }
  await relay?.close();

  const problems: string[] = [];
  if (errorCount > 0) problems.push(`${errorCount} client error(s), first: ${errors.slice(0, 3).join(" | ")}`);
  problems.push(...compareCounts(client, audit));
  if (agents !== 0) problems.push(`${agents} agent connection(s) still open in the proxy after the clients left`);
  if (upstream !== 0) problems.push(`${upstream} upstream connection(s) still open after the clients left`);
  if (relay !== null) {
    const { stats } = relay;
    if (stats.malformed > 0)
      problems.push(`${stats.malformed} malformed IMAP command(s) upstream: ${stats.samples.join(" | ")}`);
    if (stats.qresyncHidden === 0) problems.push("the relay took QRESYNC out of no capability list");
  }
  const limit = warmRss * (1 + options.rssTolerance);
  if (options.checkRss) {
    if (!(endRss <= limit))
      problems.push(`RSS at the end ${endRss.toFixed(1)} MiB > ${limit.toFixed(1)} (warm-up ${warmRss.toFixed(1)})`);
    if (!(idleRss <= limit))
      problems.push(`RSS after idling ${idleRss.toFixed(1)} MiB > ${limit.toFixed(1)} (warm-up ${warmRss.toFixed(1)})`);
  }
  return {
    dir,
    client,
    audit,
    errors,
    errorCount,
    cycles,
    rss: {
      warm: warmRss,
      end: endRss,
      idle: idleRss,
      max: rss.max,
      series: rss.format(Math.max(1, Math.round(rss.series.length / 40))),
    },
    leftover: { agents, upstream },
    relay: relay?.stats ?? null,
    cpuSeconds: cpu,
    problems,
  };
}

interface WorkerContext {
  readonly port: number;
  readonly user: SoakUser;
  readonly random: () => number;
  readonly think: () => Promise<void>;
  readonly client: Map<string, number>;
  readonly cycles: { imap: number; smtp: number; commands: number; sends: number };
}

/** One IMAP session: login, select, a few reads and flag changes, sometimes IDLE, a filtered and a hidden folder. */
async function imapWorker(ctx: WorkerContext): Promise<void> {
  const { random, think, client, user } = ctx;
  const imap = await ImapClient.connect(ctx.port);
  const messages = user.manifest.folders["INBOX"]!.length;
  // What the rules let the agent see of Archive: the messages from notifications@… (RULES in lib.ts).
  const archive = user.manifest.folders["Archive"]!.filter((m) => m.from.startsWith("notifications@")).map(
    (m) => m.uid,
  );
  const expect = async (command: string, status: string, row: string | null): Promise<string> => {
    const reply = await imap.command(command);
    ctx.cycles.commands++;
    if (reply.status !== status)
      throw new Error(`${command.split(" ").slice(0, 2).join(" ")}: expected ${status}, got ${reply.text.slice(-160)}`);
    if (row !== null) bump(client, `imap ${row}`);
    await think();
    return reply.text;
  };
  try {
    await expect(`LOGIN "${user.user}" "${user.password}"`, "OK", "LOGIN allow");
    opened("INBOX", await expect("SELECT INBOX", "OK", "SELECT allow"), messages);
    const steps = 2 + Math.floor(random() * 5);
    for (let s = 0; s < steps; s++) {
      const a = 1 + Math.floor(random() * messages);
      const b = Math.min(messages, a + Math.floor(random() * 20));
      const pick = random();
      if (pick < 0.25)
        await expect(`UID FETCH ${a}:${b} (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])`, "OK", "UID FETCH allow");
      else if (pick < 0.35) await expect(`FETCH ${a}:${b} (UID RFC822.SIZE)`, "OK", "FETCH allow");
      else if (pick < 0.45) await expect(`UID FETCH ${a} (BODY.PEEK[])`, "OK", "UID FETCH allow");
      else if (pick < 0.55) await expect("UID SEARCH FROM boss", "OK", "UID SEARCH allow");
      else if (pick < 0.62) await expect("SEARCH UNSEEN", "OK", "SEARCH allow");
      else if (pick < 0.75) {
        await expect(`UID STORE ${a} +FLAGS (\\Flagged)`, "OK", "UID STORE allow");
        await expect(`UID STORE ${a} -FLAGS.SILENT (\\Flagged)`, "OK", "UID STORE allow");
      } else if (pick < 0.85) {
        const status = await imap.idle(500 + Math.floor(random() * 2500));
        ctx.cycles.commands++;
        if (status !== "OK") throw new Error(`IDLE ended with ${status}`);
      } else if (pick < 0.93) {
        opened("Archive", await expect("SELECT Archive", "OK", "SELECT allow"), archive.length);
        listed(await expect("UID FETCH 1:* (FLAGS ENVELOPE)", "OK", "UID FETCH allow"), archive);
        opened("INBOX", await expect("SELECT INBOX", "OK", "SELECT allow"), messages);
      } else {
        // A hidden folder: refused; a failed SELECT leaves no folder selected (RFC 9051 §6.3.2), so INBOX again.
        await expect("SELECT Trash", "NO", "SELECT deny");
        opened("INBOX", await expect("SELECT INBOX", "OK", "SELECT allow"), messages);
      }
    }
    await expect("LOGOUT", "OK", null);
    ctx.cycles.imap++;
  } finally {
    imap.destroy();
  }
}

/**
 * A SELECT's answer tells the agent of `visible` messages, in one EXISTS: no count of the folder closed before, and
 * in Archive none of its hidden messages. The soak changes no folder's messages, only their flags.
 */
function opened(folder: string, reply: string, visible: number): void {
  const counts = [...reply.matchAll(/^\* (\d+) EXISTS\r?$/gm)].map((m) => Number(m[1]));
  if (counts.length !== 1 || counts[0] !== visible)
    throw new Error(
      `SELECT ${folder}: EXISTS ${counts.join(", ") || "none"}, expected ${visible} (what the agent may see)`,
    );
}

/** Archive's `UID FETCH 1:* (FLAGS ENVELOPE)` lists exactly the messages from notifications@… (`uids`). */
function listed(reply: string, uids: readonly number[]): void {
  const lines = reply.split("\r\n").filter((l) => /^\* \d+ FETCH /.test(l));
  const got = lines.map((l) => Number(/\bUID (\d+)/.exec(l)?.[1] ?? 0));
  const from = lines.every((l) => l.includes('NIL "notifications" "shop.test")'));
  if (!from || got.join(",") !== uids.join(","))
    throw new Error(`UID FETCH 1:* in Archive: UIDs ${got.join(",")}, expected ${uids.join(",")} from notifications@`);
}

let sendCounter = 0;

/** One SMTP session: AUTH, then allowed sends, refused recipients and mixed transactions. */
async function smtpWorker(ctx: WorkerContext): Promise<void> {
  const { random, think, client, user } = ctx;
  const smtp = await SmtpClient.connect(ctx.port);
  const expect = async (command: string, code: string, row: string | null): Promise<void> => {
    const reply = await smtp.command(command);
    ctx.cycles.commands++;
    if (!reply.startsWith(code)) throw new Error(`${command.slice(0, 24)}: expected ${code}, got ${reply}`);
    if (row !== null) bump(client, `smtp ${row}`);
    await think();
  };
  try {
    await expect("EHLO soak.test", "250", null);
    await expect(`AUTH PLAIN ${plainAuth(user.user, user.password)}`, "235", "AUTH allow");
    const transactions = 1 + Math.floor(random() * 3);
    for (let t = 0; t < transactions; t++) {
      const pick = random();
      const id = `${process.pid}-${++sendCounter}`;
      await expect(`MAIL FROM:<${user.address}>`, "250", null);
      if (pick < 0.6) {
        const rcpts = 1 + Math.floor(random() * 2);
        for (let r = 0; r < rcpts; r++) await expect(`RCPT TO:<soak${r}-${id}@corp.test>`, "250", "RCPT TO allow");
        await expect("DATA", "354", null);
        const body =
          `From: <${user.address}>\r\nTo: <soak0-${id}@corp.test>\r\nSubject: soak ${id}\r\nMessage-ID: ` +
          `<${id}@soak.test>\r\n\r\n${"soak line\r\n".repeat(1 + Math.floor(random() * 200))}.`;
        await expect(body, "250", "DATA allow");
        // Two rows for a send: the decision, and the upstream's reply; plus the sender's row.
        bump(client, "smtp DATA allow");
        bump(client, "smtp MAIL FROM allow");
        ctx.cycles.sends++;
      } else if (pick < 0.8) {
        await expect(`RCPT TO:<refused-${id}@evil.test>`, "550", "RCPT TO deny");
        await expect("RSET", "250", null);
      } else {
        // An allowed recipient is recorded with the final decision after DATA (docs/smtp.md); a transaction
        // refused at DATA for its refused recipient records the refusal, the DATA row, and no allow row.
        await expect(`RCPT TO:<soak-${id}@corp.test>`, "250", null);
        await expect(`RCPT TO:<refused-${id}@evil.test>`, "550", "RCPT TO deny");
        await expect("DATA", "554", "DATA deny");
      }
    }
    await expect("QUIT", "221", null);
    ctx.cycles.smtp++;
  } finally {
    smtp.destroy();
  }
}

function print(report: SoakReport, options: SoakOptions): void {
  const lines = [
    `soak: ${options.sessions} sessions for ${options.seconds} s: ${report.cycles.imap} IMAP and ` +
      `${report.cycles.smtp} SMTP sessions completed, ${report.cycles.commands} commands, ` +
      `${report.cycles.sends} messages sent`,
    `soak: client errors: ${report.errorCount}${report.errors.length > 0 ? `\n  ${report.errors.join("\n  ")}` : ""}`,
    "soak: audit rows vs the client's counts (protocol command decision: client / audit):",
    ...[...new Set([...report.client.keys(), ...report.audit.keys()])]
      .sort()
      .map((k) => `  ${k}: ${report.client.get(k) ?? 0} / ${report.audit.get(k) ?? 0}`),
    `soak: proxy CPU during the traffic: ${report.cpuSeconds.toFixed(1)} s ` +
      `(${((report.cpuSeconds / report.cycles.commands) * 1e3).toFixed(2)} ms per command)`,
    `soak: connections left in the proxy: ${report.leftover.agents} agent, ${report.leftover.upstream} upstream`,
    report.relay === null
      ? "soak: Dovecot as it is (QRESYNC offered)"
      : `soak: QRESYNC hidden from ${report.relay.qresyncHidden} capability lists; upstream IMAP commands ` +
        `${report.relay.commands} over ${report.relay.connections} connections, malformed ` +
        `${report.relay.malformed}: ${[...report.relay.names]
          .sort((a, b) => b[1] - a[1])
          .map(([k, v]) => `${k} ${v}`)
          .join(", ")}`,
    `soak: RSS MiB: after ${options.warmupSeconds} s ${report.rss.warm.toFixed(1)}, ` +
      `end ${report.rss.end.toFixed(1)}, after ${options.idleSeconds} s idle ${report.rss.idle.toFixed(1)}, ` +
      `max ${report.rss.max.toFixed(1)}` +
      `${options.checkRss ? ` (limit +${(options.rssTolerance * 100).toFixed(0)} %)` : " (not checked)"}`,
    `soak: RSS series (s MiB): ${report.rss.series}`,
    `soak: folder ${report.dir}`,
    report.problems.length === 0 ? "soak: PASS" : `soak: FAIL\n  ${report.problems.join("\n  ")}`,
  ];
  console.log(lines.join("\n"));
}

if (import.meta.main) {
  const flags = parseFlags(
    "Usage: npx bun scripts/soak/soak.ts [flags]\n\nMixed IMAP/SMTP traffic through a real mailgator " +
      "process; checks the audit log against\nthe client's counts, client errors, leftover connections and " +
      "RSS. Exit 1 when a check fails.",
    {
      sessions: { default: "100", help: "concurrent sessions (at most 1000)" },
      minutes: { default: "10", help: "traffic duration in minutes (at most 120)" },
      seconds: { default: "", help: "traffic duration in seconds (overrides --minutes)" },
      "imap-share": { default: "0.7", help: "share of IMAP sessions, the rest SMTP" },
      users: { default: "10", help: "upstream users the sessions share" },
      messages: { default: "200", help: "messages seeded in each user's INBOX" },
      "think-ms": { default: "250", help: "mean pause between commands of a session" },
      "warmup-seconds": { default: "60", help: "RSS reference time: end and idle RSS are held to it" },
      "idle-seconds": { default: "60", help: "idle time after the traffic before the last RSS sample" },
      "sample-ms": { default: "5000", help: "RSS sampling interval" },
      "rss-tolerance": { default: "0.2", help: "allowed RSS growth over the warm-up value" },
      "check-rss": { default: "yes", help: "yes or no: fail when RSS exceeds the tolerance" },
      "purge-delay": { default: "", help: "MIMALLOC_PURGE_DELAY for the proxy (default: what serve sets, 1000)" },
      "heap-probe": { default: "no", help: "yes: the proxy writes heap statistics to heap.jsonl in the run folder" },
      seed: { default: "1", help: "PRNG seed" },
      "extra-config": { default: "", help: "TOML appended to the proxy's config, e.g. a [limits] table" },
      qresync: {
        default: "offered",
        help: "hidden: Dovecot behind a relay that takes QRESYNC out of its capabilities (folder switches by UNSELECT)",
      },
    },
  );
  if (flags.qresync !== "offered" && flags.qresync !== "hidden") {
    console.error(`--qresync: expected offered or hidden, got ${JSON.stringify(flags.qresync)}`);
    process.exit(2);
  }
  const seconds =
    flags.seconds !== "" ? intFlag("seconds", flags.seconds, 7200) : intFlag("minutes", flags.minutes, 120) * 60;
  const options: SoakOptions = {
    sessions: intFlag("sessions", flags.sessions, 1000),
    seconds,
    imapShare: numberFlag("imap-share", flags["imap-share"], 1),
    users: Math.max(1, intFlag("users", flags.users, 1000)),
    messages: Math.max(1, intFlag("messages", flags.messages, 100_000)),
    thinkMs: intFlag("think-ms", flags["think-ms"], 60_000),
    warmupSeconds: Math.min(intFlag("warmup-seconds", flags["warmup-seconds"], 3600), seconds),
    idleSeconds: intFlag("idle-seconds", flags["idle-seconds"], 3600),
    sampleMs: Math.max(100, intFlag("sample-ms", flags["sample-ms"], 600_000)),
    rssTolerance: numberFlag("rss-tolerance", flags["rss-tolerance"], 10),
    checkRss: flags["check-rss"] === "yes",
    seed: intFlag("seed", flags.seed, 2 ** 31),
    env: flags["purge-delay"] === "" ? {} : { MIMALLOC_PURGE_DELAY: flags["purge-delay"] },
    extraConfig: flags["extra-config"],
    heapProbe: flags["heap-probe"] === "yes",
    hideQresync: flags.qresync === "hidden",
    log: (line) => console.error(line),
  };
  const report = await runSoak(options);
  print(report, options);
  process.exit(report.problems.length === 0 ? 0 : 1);
}
