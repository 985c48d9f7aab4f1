/**
 * IMAP and SMTP mutation fuzzer (docs/reliability.md, "Soak, faults and fuzzing"). A seeded PRNG mutates a corpus
 * of valid commands (bit flips; inserted CR, LF, NUL, literal markers `{n}` `{n+}` `~{n}`; huge numbers;
 * truncation; splicing; repeats; random bytes) and sends them over many connections to a real `mailgator serve`
 * process, most of them after a valid login so that they reach the command handlers. Between the proxy and Dovecot
 * and Postfix runs a checking relay (relay.ts) that parses every command the proxy sends upstream.
 *
 * Checks: the proxy stays up; no connection slot is lost (after the run every agent and upstream connection of
 * the proxy is closed, and a normal IMAP login and SMTP send work); RSS, sampled, stays under a bound; upstream
 * received only well-formed, allowlisted commands. Exits non-zero when any check fails.
 *
 *   npx bun scripts/soak/fuzz.ts [--inputs 1000000] [--concurrency 16] [--max-seconds 1800] [--seed 1] ...
 */

import { connect, type Socket } from "node:net";
import {
  ImapClient,
  intFlag,
  LOOPBACK,
  type MailgatorProcess,
  makeUsers,
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

export interface FuzzOptions {
  readonly inputs: number;
  readonly concurrency: number;
  /** Inputs per connection, at most. */
  readonly perConnection: number;
  /** Share of the inputs sent to IMAP (the rest SMTP). */
  readonly imapShare: number;
  readonly maxSeconds: number;
  readonly rssLimitMiB: number;
  readonly sampleMs: number;
  readonly seed: number;
  readonly env: Readonly<Record<string, string>>;
  /** TOML appended to the proxy's config (e.g. a `[limits]` table raising per-address limits for one client host). */
  readonly extraConfig?: string;
  /** The IMAP relay takes QRESYNC out of Dovecot's capabilities (relay.ts): folder switches go by UNSELECT. */
  readonly hideQresync?: boolean;
  readonly log: (line: string) => void;
}

export interface FuzzReport {
  readonly dir: string;
  readonly inputs: { imap: number; smtp: number };
  readonly connections: { imap: number; smtp: number; closedByProxy: number; destroyedByUs: number };
  readonly seconds: number;
  readonly rss: { start: number; max: number; end: number; series: string };
  readonly relay: { imap: Relay["stats"]; smtp: Relay["stats"] };
  readonly leftover: { agents: number; upstream: number };
  /** The fuzzer's own valid logins (LOGIN, AUTH PLAIN) before its inputs, by how the proxy answered them. */
  readonly logins: { ok: number; locked: number; refused: number };
  readonly problems: string[];
}

// ------------------------------------------------------------------------------------------------ corpus

const IMAP_CORPUS: readonly string[] = [
  "NOOP",
  "CAPABILITY",
  "SELECT INBOX",
  'EXAMINE "INBOX"',
  "UID FETCH 1:5 (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])",
  "FETCH 1:* (UID RFC822.SIZE INTERNALDATE)",
  "UID FETCH 2 (BODY.PEEK[1]<0.100> BODYSTRUCTURE)",
  'UID SEARCH FROM "boss" SINCE 1-Jan-2020',
  "SEARCH CHARSET UTF-8 SUBJECT {4}\r\ntest",
  "SEARCH OR UNSEEN (FLAGGED LARGER 100) NOT DELETED",
  "SEARCH RETURN (COUNT MIN) ALL",
  "UID STORE 1 +FLAGS.SILENT (\\Flagged)",
  "STORE 1:2 -FLAGS (\\Seen)",
  'LIST "" "*"',
  'LIST (SUBSCRIBED) "" "%" RETURN (CHILDREN)',
  'LSUB "" "*"',
  "STATUS INBOX (MESSAGES UIDNEXT UNSEEN)",
  "SELECT Archive",
  "UID FETCH 1:* (ENVELOPE FLAGS)",
  "APPEND INBOX (\\Seen) {24}\r\nSubject: x\r\n\r\nhello you\r\n",
  "APPEND Drafts {10+}\r\nabcdefghij",
  'ID ("name" "fuzz" "version" "1")',
  "ENABLE UTF8=ACCEPT",
  "UID SORT (DATE REVERSE SUBJECT) UTF-8 ALL",
  "IDLE\r\nDONE",
  "UNSELECT",
  "CLOSE",
  "EXPUNGE",
  "UID EXPUNGE 1:3",
  "COPY 1 Trash",
  "UID MOVE 1 Archive",
  'CREATE "Agent/new"',
  'RENAME "Agent/new" "Agent/old"',
  "DELETE Agent",
  "SUBSCRIBE INBOX",
  "NAMESPACE",
  "CHECK",
  'LOGIN "someone@mailgator.test" "wrong"',
  "AUTHENTICATE PLAIN AHVzZXIAcGFzcw==",
  "STARTTLS",
];

const SMTP_CORPUS: readonly string[] = [
  "EHLO fuzz.test",
  "HELO fuzz.test",
  "MAIL FROM:<USER>",
  "MAIL FROM:<USER> SIZE=100 BODY=8BITMIME",
  "RCPT TO:<a@corp.test>",
  "RCPT TO:<b@evil.test>",
  'RCPT TO:<"quoted local"@corp.test> NOTIFY=NEVER',
  "DATA\r\nFrom: <USER>\r\nTo: a@corp.test\r\nSubject: fuzz\r\n\r\nhello\r\n..dot\r\n.",
  "RSET",
  "NOOP",
  "NOOP hello",
  "VRFY postmaster",
  "EXPN list",
  "HELP",
  "AUTH LOGIN",
  "AUTH PLAIN AHVzZXIAcGFzcw==",
  "BDAT 10 LAST",
  "STARTTLS",
  // A whole transaction in one input, so that mutations reach DATA and the replay upstream.
  "MAIL FROM:<USER>\r\nRCPT TO:<fuzz@corp.test>\r\nDATA\r\nFrom: <USER>\r\nTo: " +
    "fuzz@corp.test\r\nSubject: t\r\n\r\nbody\r\n.",
  "MAIL FROM:<USER>\r\nRCPT TO:<fuzz@corp.test>\r\nRCPT TO:<x@evil.test>\r\nDATA",
];

/** Share of the inputs sent unmutated. */
const VALID_SHARE = 0.25;
const SPECIAL_INSERTS = ["\r", "\n", "\0", "\r\n", " ", '"', "(", ")", "[", "]", "*", "\\", "%", "\x7f", "\xff", "~"];
const LITERAL_SIZES = [0, 1, 5, 100, 4095, 4096, 4097, 65536, 65537, 2 ** 31, 4294967295, 4294967296];
const HUGE_NUMBERS = [
  "0",
  "4294967295",
  "4294967296",
  "18446744073709551616",
  "99999999999999999999999999",
  "-1",
  "00000000001",
];

/** One mutated input from the corpus: 1 to 3 mutations. */
export function mutate(corpus: readonly string[], random: () => number): string {
  const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)]!;
  let text = pick(corpus);
  const rounds = 1 + Math.floor(random() * 3);
  for (let r = 0; r < rounds; r++) {
    const at = Math.floor(random() * (text.length + 1));
    switch (Math.floor(random() * 8)) {
      case 0: {
        if (text.length === 0) break;
        const i = Math.min(at, text.length - 1);
        text =
          text.slice(0, i) +
          String.fromCharCode(text.charCodeAt(i) ^ (1 << Math.floor(random() * 8))) +
          text.slice(i + 1);
        break;
      }
      case 1:
        text = text.slice(0, at) + pick(SPECIAL_INSERTS) + text.slice(at);
        break;
      case 2: {
        const n = pick(LITERAL_SIZES);
        const marker = pick([`{${n}}`, `{${n}+}`, `~{${n}}`, `~{${n}+}`]);
        const tail = n <= 100 && random() < 0.5 ? "x".repeat(n) : "";
        text = `${text.slice(0, at)}${marker}\r\n${tail}${text.slice(at)}`;
        break;
      }
      case 3: {
        const runs = [...text.matchAll(/\d+/g)];
        if (runs.length === 0) text = `${text} ${pick(HUGE_NUMBERS)}`;
        else {
          const run = pick(runs);
          text = text.slice(0, run.index!) + pick(HUGE_NUMBERS) + text.slice(run.index! + run[0].length);
        }
        break;
      }
      case 4:
        text = text.slice(0, at);
        break;
      case 5: {
        const other = pick(corpus);
        text = text.slice(0, at) + other.slice(Math.floor(random() * (other.length + 1)));
        break;
      }
      case 6: {
        const len = 1 + Math.floor(random() * 64);
        const times = random() < 0.05 ? 1000 : 1 + Math.floor(random() * 20);
        text = text.slice(0, at) + text.slice(at, at + len).repeat(times) + text.slice(at + len);
        break;
      }
      default: {
        let bytes = "";
        const len = 1 + Math.floor(random() * 16);
        for (let i = 0; i < len; i++) bytes += String.fromCharCode(Math.floor(random() * 256));
        text = text.slice(0, at) + bytes + text.slice(at);
      }
    }
  }
  return text;
}

// ------------------------------------------------------------------------------------------------ sessions

/** How long a connection may take to close after its final LOGOUT or QUIT before we destroy it. */
const CLOSE_WAIT_MS = 1_000;
/** How long a login may take (Dovecot answers a failed one after about 2 s). */
const LOGIN_WAIT_MS = 15_000;

interface Outcome {
  closedByProxy: boolean;
  /** Inputs written while the connection was open. */
  written: number;
  /** The fuzzer's own valid login before the inputs: not tried, accepted, refused by the lock-out, or else refused. */
  login: "none" | "ok" | "locked" | "refused";
}

/** What the proxy answers a login refused under a failed-login lock-out (docs/config.md "Who connects"). */
const LOCKED_OUT = /Too many failed logins/;

/**
 * The loopback address the `n`th fuzzing connection comes from: each its own, never 127.0.0.1 (which the checks
 * after the run use). The mutated LOGINs and AUTHs fail, and 10 failures from one address lock it out for 15
 * minutes (docs/config.md "Who connects"); from one address for all, the fuzzer's own valid logins were refused
 * within seconds and the inputs meant for logged-in sessions fuzzed the lock-out's refusal instead. Linux answers
 * every address of 127.0.0.0/8 on the loopback interface.
 */
export function fuzzAddress(n: number): string {
  return `127.${1 + (Math.floor(n / (256 * 254)) % 254)}.${Math.floor(n / 254) % 256}.${1 + (n % 254)}`;
}

/** A socket that discards what it reads but can wait for a pattern; latin1 throughout. */
class Sink {
  #tail = "";
  #want: RegExp | null = null;
  #found: ((match?: RegExpExecArray) => void) | null = null;
  closed = false;
  #closedWaiters: (() => void)[] = [];

  constructor(readonly socket: Socket) {
    socket.setEncoding("latin1");
    socket.on("data", (d: string) => {
      if (this.#want === null) return;
      this.#tail = (this.#tail + d).slice(-4096);
      const match = this.#want.exec(this.#tail);
      if (match !== null) {
        this.#want = null;
        this.#tail = "";
        this.#found?.(match);
      }
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      this.closed = true;
      this.#found?.();
      for (const w of this.#closedWaiters.splice(0)) w();
    });
  }

  static open(port: number, localAddress: string): Promise<Sink> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host: LOOPBACK, port, localAddress });
      socket.once("connect", () => resolve(new Sink(socket)));
      socket.once("error", reject);
    });
  }

  /** Resolves true when `re` matches what arrives (from now on), false on close or timeout. */
  async wait(re: RegExp, ms: number): Promise<boolean> {
    return (await this.reply(re, ms)) !== null;
  }

  /**
   * Resolves with what `re`'s second group matched in what arrives (from now on; the whole match when it has
   * none), or null on close or timeout.
   */
  reply(re: RegExp, ms: number): Promise<string | null> {
    if (this.closed) return Promise.resolve(null);
    this.#want = re;
    this.#tail = "";
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#want = null;
        this.#found = null;
        resolve(null);
      }, ms);
      this.#found = (match) => {
        clearTimeout(timer);
        this.#found = null;
        resolve(this.closed || match === undefined ? null : (match[2] ?? match[0]));
      };
    });
  }

  waitClosed(ms: number): Promise<boolean> {
    if (this.closed) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), ms);
      this.#closedWaiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  write(text: string): void {
    if (!this.socket.destroyed) this.socket.write(Buffer.from(text, "latin1"));
  }
}

/** Inputs go out in chunks of up to SYNC_EVERY, each followed by a no-op whose reply paces the sender. */
const SYNC_EVERY = 50;
/** A chunk whose no-op gets no reply within this time (a literal or DATA swallowing it) ends the connection. */
const SYNC_WAIT_MS = 1_000;

/**
 * Sends `inputs` in chunks, each followed by `sync(n)`'s text, waiting for `done(n)` before the next chunk; stops
 * when the proxy closes the connection or a sync gets no answer. Returns how many inputs were written.
 */
async function sendChunks(
  sink: Sink,
  inputs: readonly string[],
  format: (input: string, n: number) => string,
  sync: (n: number) => [string, RegExp],
): Promise<number> {
  let written = 0;
  for (let at = 0; at < inputs.length && !sink.closed; at += SYNC_EVERY) {
    const chunk = inputs.slice(at, at + SYNC_EVERY);
    sink.write(chunk.map((input, i) => format(input, at + i)).join(""));
    written += chunk.length;
    const [text, reply] = sync(at);
    sink.write(text);
    if (!(await sink.wait(reply, SYNC_WAIT_MS))) break;
  }
  return written;
}

async function imapConnection(
  port: number,
  from: string,
  user: SoakUser,
  inputs: string[],
  random: () => number,
): Promise<Outcome> {
  const sink = await Sink.open(port, from);
  try {
    if (!(await sink.wait(/^\* (OK|BYE)[^\r\n]*\r\n/m, LOGIN_WAIT_MS)))
      return { closedByProxy: sink.closed, written: 0, login: "none" };
    let login: Outcome["login"] = "none";
    if (random() < 0.85) {
      sink.write(`L1 LOGIN "${user.user}" "${user.password}"\r\n`);
      const reply = await sink.reply(/(^|\n)(L1 [^\r\n]*)\r\n/, LOGIN_WAIT_MS);
      if (reply === null) return { closedByProxy: sink.closed, written: 0, login: "refused" };
      login = reply.startsWith("L1 OK") ? "ok" : LOCKED_OUT.test(reply) ? "locked" : "refused";
      if (random() < 0.8) {
        sink.write("L2 SELECT INBOX\r\n");
        await sink.wait(/(^|\n)L2 [^\r\n]*\r\n/, LOGIN_WAIT_MS);
      }
    }
    const written = await sendChunks(
      sink,
      inputs,
      (input, n) => `f${n} ${input}\r\n`,
      (n) => [`y${n} NOOP\r\n`, new RegExp(`(^|\n)y${n} [^\r\n]*\r\n`)],
    );
    sink.write("\r\nZZ LOGOUT\r\n");
    return { closedByProxy: await sink.waitClosed(CLOSE_WAIT_MS), written, login };
  } finally {
    sink.socket.destroy();
  }
}

async function smtpConnection(
  port: number,
  from: string,
  user: SoakUser,
  inputs: string[],
  random: () => number,
): Promise<Outcome> {
  const sink = await Sink.open(port, from);
  try {
    if (!(await sink.wait(/^\d{3} [^\r\n]*\r\n/m, LOGIN_WAIT_MS)))
      return { closedByProxy: sink.closed, written: 0, login: "none" };
    let login: Outcome["login"] = "none";
    if (random() < 0.85) {
      sink.write("EHLO fuzz.test\r\n");
      await sink.wait(/(^|\n)250 [^\r\n]*\r\n/, LOGIN_WAIT_MS);
      sink.write(`AUTH PLAIN ${plainAuth(user.user, user.password)}\r\n`);
      const reply = await sink.reply(/(^|\n)(\d{3} [^\r\n]*)\r\n/, LOGIN_WAIT_MS);
      login =
        reply === null ? "refused" : reply.startsWith("235") ? "ok" : LOCKED_OUT.test(reply) ? "locked" : "refused";
    }
    const written = await sendChunks(
      sink,
      inputs,
      (input) => `${input.replaceAll("USER", user.address)}\r\n`,
      () => ["NOOP\r\n", /(^|\n)250 2\.0\.0 OK\r\n/],
    );
    sink.write("\r\n.\r\nQUIT\r\n");
    return { closedByProxy: await sink.waitClosed(CLOSE_WAIT_MS), written, login };
  } finally {
    sink.socket.destroy();
  }
}

// ------------------------------------------------------------------------------------------------ the run

export async function runFuzz(options: FuzzOptions, proxyIn?: MailgatorProcess): Promise<FuzzReport> {
  const log = options.log;
  const { upstreams } = await servers(log);
  const dir = runDir("fuzz");
  const users = makeUsers(upstreams, "fuzz", 4, 30);
  const imapRelay = await startRelay("imap", upstreams.ports.imap, { hideQresync: options.hideQresync === true });
  const smtpRelay = await startRelay("smtp", upstreams.ports.smtp);
  const proxy =
    proxyIn ??
    (await startProxy({
      dir,
      upstreams,
      imapUpstreamPort: imapRelay.port,
      smtpUpstreamPort: smtpRelay.port,
      env: options.env,
      extraConfig: options.extraConfig ?? "",
    }));
  log(`fuzz: mailgator pid ${proxy.pid}, IMAP ${proxy.imapPort}, SMTP ${proxy.smtpPort}, folder ${dir}`);
  const rss = new RssSampler(proxy.pid, options.sampleMs);
  const started = performance.now();
  const deadline = started + options.maxSeconds * 1000;
  const inputs = { imap: 0, smtp: 0 };
  const connections = { imap: 0, smtp: 0, closedByProxy: 0, destroyedByUs: 0 };
  const logins = { ok: 0, locked: 0, refused: 0 };
  let opened = 0;
  const problems: string[] = [];
  let sent = 0;
  let nextProgress = started + 10_000;
  const workers: Promise<void>[] = [];
  for (let w = 0; w < options.concurrency; w++) {
    const random = prng(options.seed * 7919 + w);
    workers.push(
      (async () => {
        while (sent < options.inputs && performance.now() < deadline && proxy.alive()) {
          const imap = random() < options.imapShare;
          const count = Math.min(options.inputs - sent, 1 + Math.floor(random() * options.perConnection));
          sent += count;
          const corpus = imap ? IMAP_CORPUS : SMTP_CORPUS;
          // A quarter of the inputs are valid commands, so that sessions get on to the handlers behind them.
          const batch = Array.from({ length: count }, () =>
            random() < VALID_SHARE ? corpus[Math.floor(random() * corpus.length)]! : mutate(corpus, random),
          );
          const user = users[Math.floor(random() * users.length)]!;
          const from = fuzzAddress(opened++);
          try {
            const outcome = imap
              ? await imapConnection(proxy.imapPort, from, user, batch, random)
              : await smtpConnection(proxy.smtpPort, from, user, batch, random);
            if (outcome.login !== "none") logins[outcome.login]++;
            if (outcome.closedByProxy) connections.closedByProxy++;
            else connections.destroyedByUs++;
            // Inputs not written (the proxy closed the connection first) go back to the count still to send.
            sent -= count - outcome.written;
            if (imap) inputs.imap += outcome.written;
            else inputs.smtp += outcome.written;
          } catch (error) {
            sent -= count;
            if (proxy.alive()) problems.push(`connecting failed: ${(error as Error).message}`);
          }
          if (imap) connections.imap++;
          else connections.smtp++;
          if (performance.now() > nextProgress) {
            nextProgress += 10_000;
            const s = (performance.now() - started) / 1000;
            log(
              `fuzz: ${inputs.imap + inputs.smtp} inputs in ${s.toFixed(0)} s ` +
                `(${((inputs.imap + inputs.smtp) / s).toFixed(0)}/s), RSS ${rss.sample().toFixed(1)} MiB, ` +
                `upstream commands ${imapRelay.stats.commands}+${smtpRelay.stats.commands}, malformed ` +
                `${imapRelay.stats.malformed + smtpRelay.stats.malformed}`,
            );
          }
        }
      })(),
    );
  }
  await Promise.all(workers);
  const seconds = (performance.now() - started) / 1000;
  if (!proxy.alive()) problems.push(`the proxy died during the run (exit ${await proxy.exited}); see ${proxy.logFile}`);

  // No slot lost: every agent connection and every upstream connection of the proxy closes.
  const agents = await settle(
    () => tcpConnections(proxy.pid, { local: proxy.imapPort }) + tcpConnections(proxy.pid, { local: proxy.smtpPort }),
    0,
    20_000,
  );
  const upstream = await settle(
    () => tcpConnections(proxy.pid, { remote: imapRelay.port }) + tcpConnections(proxy.pid, { remote: smtpRelay.port }),
    0,
    20_000,
  );
  if (agents !== 0) problems.push(`${agents} agent connection(s) still held by the proxy 20 s after the run`);
  if (upstream !== 0) {
    const imap = tcpConnections(proxy.pid, { remote: imapRelay.port });
    const smtp = tcpConnections(proxy.pid, { remote: smtpRelay.port });
    problems.push(`upstream connections still held by the proxy 20 s after the run: IMAP ${imap}, SMTP ${smtp}`);
  }

  // The inputs meant to follow a login did: a lock-out of the fuzzer's address (its mutated logins fail) would leave
  // them to fuzz the lock-out's refusal instead of the sessions behind a login.
  if (logins.locked > 0)
    problems.push(
      `${logins.locked} of the fuzzer's ${logins.ok + logins.locked + logins.refused} own logins were refused ` +
        "under a failed-login lock-out",
    );

  // A normal agent still gets in and is served, on both listeners.
  if (proxy.alive()) {
    try {
      const user = users[0]!;
      const imap = await ImapClient.connect(proxy.imapPort);
      for (const [command, want] of [
        [`LOGIN "${user.user}" "${user.password}"`, "OK"],
        ["SELECT INBOX", "OK"],
        ["UID FETCH 1:3 (FLAGS)", "OK"],
        ["LOGOUT", "OK"],
      ] as const) {
        const reply = await imap.command(command);
        if (reply.status !== want)
          problems.push(`after the run, ${command.split(" ")[0]} got ${reply.text.slice(-120)}`);
      }
      imap.destroy();
      const smtp = await SmtpClient.connect(proxy.smtpPort);
      for (const [command, want] of [
        ["EHLO fuzz.test", "250"],
        [`AUTH PLAIN ${plainAuth(user.user, user.password)}`, "235"],
        [`MAIL FROM:<${user.address}>`, "250"],
        ["RCPT TO:<after-fuzz@corp.test>", "250"],
        ["DATA", "354"],
        [`From: <${user.address}>\r\nTo: after-fuzz@corp.test\r\nSubject: after fuzz\r\n\r\nhi\r\n.`, "250"],
        ["QUIT", "221"],
      ] as const) {
        const reply = await smtp.command(command);
        if (!reply.startsWith(want)) problems.push(`after the run, ${command.slice(0, 12)} got ${reply}`);
      }
      smtp.destroy();
    } catch (error) {
      problems.push(`after the run, a normal session failed: ${(error as Error).message}`);
    }
  }
  const end = rss.sample();
  rss.stop();
  if (!(rss.max <= options.rssLimitMiB))
    problems.push(`RSS reached ${rss.max.toFixed(1)} MiB > ${options.rssLimitMiB}`);
  for (const [name, relay] of [
    ["IMAP", imapRelay],
    ["SMTP", smtpRelay],
  ] as const) {
    if (relay.stats.malformed > 0)
      problems.push(
        `${relay.stats.malformed} malformed ${name} command(s) upstream: ${relay.stats.samples.join(" | ")}`,
      );
    if (relay.stats.commands === 0) problems.push(`no ${name} command reached upstream: the relay saw nothing`);
  }
  if (options.hideQresync === true && imapRelay.stats.qresyncHidden === 0)
    problems.push("the IMAP relay took QRESYNC out of no capability list");
  if (proxyIn === undefined) {
    const code = await proxy.stop();
    if (code !== 0) problems.push(`mailgator exited with ${code} on SIGTERM`);
  }
  await imapRelay.close();
  await smtpRelay.close();
  return {
    dir,
    inputs,
    connections,
    seconds,
    rss: {
      start: rss.series[0]![1],
      max: rss.max,
      end,
      series: rss.format(Math.max(1, Math.round(rss.series.length / 40))),
    },
    relay: { imap: imapRelay.stats, smtp: smtpRelay.stats },
    leftover: { agents, upstream },
    logins,
    problems,
  };
}

function print(report: FuzzReport, options: FuzzOptions): void {
  const names = (m: Map<string, number>) =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `${k} ${v}`)
      .join(", ");
  const total = report.inputs.imap + report.inputs.smtp;
  console.log(
    [
      `fuzz: ${total} inputs (IMAP ${report.inputs.imap}, SMTP ${report.inputs.smtp}) in ` +
        `${report.seconds.toFixed(0)} s (${(total / report.seconds).toFixed(0)}/s), seed ${options.seed}, ` +
        `concurrency ${options.concurrency}`,
      `fuzz: connections: IMAP ${report.connections.imap}, SMTP ${report.connections.smtp}; closed by ` +
        `the proxy ${report.connections.closedByProxy}, destroyed by the fuzzer after ${CLOSE_WAIT_MS} ms ` +
        `${report.connections.destroyedByUs}`,
      `fuzz: upstream IMAP commands ${report.relay.imap.commands} over ${report.relay.imap.connections} ` +
        `connections, malformed ${report.relay.imap.malformed}: ${names(report.relay.imap.names)}`,
      options.hideQresync === true
        ? `fuzz: QRESYNC hidden from ${report.relay.imap.qresyncHidden} capability lists`
        : "",
      `fuzz: upstream SMTP commands ${report.relay.smtp.commands} over ${report.relay.smtp.connections} ` +
        `connections, malformed ${report.relay.smtp.malformed}: ${names(report.relay.smtp.names)}`,
      `fuzz: the fuzzer's own logins: ${report.logins.ok} accepted, ${report.logins.locked} refused under a ` +
        `lock-out, ${report.logins.refused} refused otherwise (max_sessions_per_agent, a slow upstream)`,
      `fuzz: connections left in the proxy: ${report.leftover.agents} agent, ${report.leftover.upstream} upstream`,
      `fuzz: RSS MiB: start ${report.rss.start.toFixed(1)}, max ${report.rss.max.toFixed(1)} (limit ` +
        `${options.rssLimitMiB}), end ${report.rss.end.toFixed(1)}`,
      `fuzz: RSS series (s MiB): ${report.rss.series}`,
      `fuzz: folder ${report.dir}`,
      total < options.inputs
        ? `fuzz: stopped at --max-seconds ${options.maxSeconds} after ${total} of ${options.inputs} inputs`
        : "",
      report.problems.length === 0 ? "fuzz: PASS" : `fuzz: FAIL\n  ${report.problems.join("\n  ")}`,
    ]
      .filter(Boolean)
      .join("\n"),
  );
}

if (import.meta.main) {
  const flags = parseFlags(
    "Usage: npx bun scripts/soak/fuzz.ts [flags]\n\nMutation fuzzing of a real mailgator process's IMAP " +
      "and SMTP listeners, with a checking relay\nbetween it and the upstream servers. Exit 1 when a check " +
      "fails.",
    {
      inputs: { default: "1000000", help: "mutated inputs to send (at most 10,000,000)" },
      concurrency: { default: "48", help: "connections at once (at most 500)" },
      "per-connection": { default: "200", help: "most inputs sent on one connection" },
      "imap-share": { default: "0.7", help: "share of inputs sent to IMAP" },
      "max-seconds": { default: "1800", help: "stop sending after this long, whatever the count" },
      "rss-limit-mib": { default: "400", help: "fail when the proxy's RSS exceeds this" },
      "sample-ms": { default: "2000", help: "RSS sampling interval" },
      "purge-delay": { default: "", help: "MIMALLOC_PURGE_DELAY for the proxy (default: what serve sets, 1000)" },
      seed: { default: "1", help: "PRNG seed" },
      "extra-config": { default: "", help: "TOML appended to the proxy's config, e.g. a [limits] table" },
      qresync: {
        default: "offered",
        help: "hidden: the IMAP relay takes QRESYNC out of Dovecot's capabilities (folder switches by UNSELECT)",
      },
    },
  );
  if (flags.qresync !== "offered" && flags.qresync !== "hidden") {
    console.error(`--qresync: expected offered or hidden, got ${JSON.stringify(flags.qresync)}`);
    process.exit(2);
  }
  const options: FuzzOptions = {
    inputs: intFlag("inputs", flags.inputs, 10_000_000),
    concurrency: Math.max(1, intFlag("concurrency", flags.concurrency, 500)),
    perConnection: Math.max(1, intFlag("per-connection", flags["per-connection"], 100_000)),
    imapShare: Number(flags["imap-share"]),
    maxSeconds: intFlag("max-seconds", flags["max-seconds"], 86_400),
    rssLimitMiB: intFlag("rss-limit-mib", flags["rss-limit-mib"], 1_000_000),
    sampleMs: Math.max(100, intFlag("sample-ms", flags["sample-ms"], 600_000)),
    seed: intFlag("seed", flags.seed, 2 ** 31),
    env: flags["purge-delay"] === "" ? {} : { MIMALLOC_PURGE_DELAY: flags["purge-delay"] },
    extraConfig: flags["extra-config"],
    hideQresync: flags.qresync === "hidden",
    log: (line) => console.error(line),
  };
  const report = await runFuzz(options);
  print(report, options);
  process.exit(report.problems.length === 0 ? 0 : 1);
}
