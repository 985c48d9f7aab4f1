/**
 * `mailgator check --connect`: tries each configured upstream as the proxies would reach it, step by step: TCP,
 * then TLS with the configured verification (and the greeting), then, for each vault account, a login. Each step
 * says what worked; a failed step says what to check, and the steps after it are not tried (a refused connection
 * is never reported as a bad password). docs/install.md "Checking the upstreams".
 */

import { connect as tcpConnect } from "node:net";
import { cutCounted } from "../../audit/row.ts";
import type { Config, ListenerConfig, PasswordAccountConfig } from "../../config/index.ts";
import { DEFAULT_TIMEOUTS } from "../../imap/index.ts";
import { UpstreamSession as ImapUpstream } from "../../imap/upstream.ts";
import { readCaFile, UPSTREAM_HINTS, type UpstreamTarget } from "../../net/index.ts";
import { UpstreamSession as SmtpUpstream, UpstreamAuthError } from "../../smtp/upstream.ts";

/**
 * The TCP step, and the connection each later step opens, give up after this long. The IMAP greeting, STARTTLS and
 * login then wait as long as `serve` waits for them (DEFAULT_TIMEOUTS.handshakeMs, 15 s): a greeting `serve` reads
 * is read here too. An SMTP connection gets CONNECT_CHECK_SMTP_MS in all.
 */
export const CONNECT_CHECK_TIMEOUT_MS = 10_000;

/**
 * How long one SMTP connection of the check may take in all, from the TCP connection to its greeting, EHLO, STARTTLS
 * and login: `serve` waits UPSTREAM_REPLY_TIMEOUT_MS (10 minutes) for each reply, as RFC 5321 §4.5.3.2 asks of a
 * client sending mail, which left the check waiting ten minutes on an upstream that accepts and says nothing. A
 * server's greeting pause or a failed login's delay are seconds.
 */
export const CONNECT_CHECK_SMTP_MS = 30_000;

/** An SMTP session opened as `serve` opens it, within CONNECT_CHECK_SMTP_MS. */
async function openSmtp(target: UpstreamTarget, login: { username: string; password: string } | null) {
  const signal = AbortSignal.timeout(CONNECT_CHECK_SMTP_MS);
  try {
    return await SmtpUpstream.open(target, login, signal);
  } catch (e) {
    if (signal.aborted && !(e instanceof UpstreamAuthError))
      throw new Error(`no complete answer within ${CONNECT_CHECK_SMTP_MS} ms (greeting, EHLO, STARTTLS and login)`);
    throw e;
  }
}

/**
 * Characters of a failure's message (which quotes the upstream's greeting or refusal, any length it chose) that a
 * report line shows at most; past it the line says how many more there were (docs/install.md "Checking the
 * upstreams").
 */
export const MAX_QUOTED_MESSAGE = 500;

/** `message` cut to MAX_QUOTED_MESSAGE characters, saying how many were left out. */
function quoted(message: string): string {
  return cutCounted(message, MAX_QUOTED_MESSAGE, "shown");
}

export interface ConnectReport {
  readonly lines: string[];
  readonly ok: boolean;
}

function tcp(host: string, port: number): Promise<string | null> {
  return new Promise((resolve) => {
    const socket = tcpConnect({ host, port });
    const done = (problem: string | null) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(problem);
    };
    const timer = setTimeout(() => done("timed out"), CONNECT_CHECK_TIMEOUT_MS);
    socket.once("connect", () => done(null));
    socket.once("error", (e) => done(e.message));
  });
}

/**
 * A failed TLS or greeting step's line: the error without the hint the connection adds for the proxy's log
 * (`upstreamHint`, src/net/upstream.ts), which would say again, less exactly, what `advice` says.
 */
function failed(label: string, message: string, listener: ListenerConfig): string {
  // Only the proxy's own hint at the end is taken off (its advice follows instead): "; check " inside the text an
  // upstream wrote (a greeting) is that text, shown as it is.
  const hint = Object.values(UPSTREAM_HINTS).find((h) => message.endsWith(h));
  const text = hint === undefined ? message : message.slice(0, -hint.length);
  return `${label}: FAILED: ${quoted(text)}: ${advice(message, listener)}`;
}

/** What to check for a failed TLS or greeting step. */
function advice(message: string, listener: ListenerConfig): string {
  if (/certificate|self[- ]signed|issuer|altnames|hostname\/ip/i.test(message))
    return listener.upstreamCaFile === null
      ? "the certificate is not trusted by the system CAs or does not name the host: " +
          "set upstream_ca_file to the CA that signed it, or check upstream_addr's host name"
      : `the certificate is not signed by upstream_ca_file (${listener.upstreamCaFile}) or the system CAs, ` +
          "or does not name the host: check upstream_ca_file and upstream_addr";
  return (
    "check upstream_addr and upstream_tls " +
    "(tls for an implicit TLS port such as 993 or 465, starttls for 143 or 587)"
  );
}

async function one(name: "imap" | "smtp", config: Config, lines: string[]): Promise<boolean> {
  const listener = config[name]!;
  const { host, port } = listener.upstreamAddr;
  const label = `[${name}] upstream ${host}:${port}`;
  const problem = await tcp(host, port);
  if (problem !== null) {
    lines.push(`${label}: FAILED to connect over TCP (${problem}): check upstream_addr and that the server runs`);
    lines.push(`${label}: TLS and login not tried`);
    return false;
  }
  lines.push(`${label}: TCP ok`);
  const target: UpstreamTarget = {
    host,
    port,
    tls: listener.upstreamTls,
    skipVerify: listener.upstreamTlsSkipVerify,
    extraCa: readCaFile(listener.upstreamCaFile),
    connectTimeoutMs: CONNECT_CHECK_TIMEOUT_MS,
  };
  const tlsWord =
    listener.upstreamTls === "none"
      ? "no TLS (upstream_tls = none)"
      : `${listener.upstreamTls === "tls" ? "TLS" : "STARTTLS"} ok (` +
        (listener.upstreamTlsSkipVerify
          ? "certificate NOT verified: upstream_tls_skip_verify"
          : "certificate verified") +
        ")";
  // OAuth2 accounts log in with a token only `serve` holds (docs/accounts.md): `mailgator account status` reports on
  // them, so here they are named and not tried.
  const all = Object.values(config.accounts);
  const accounts = all.filter((a): a is PasswordAccountConfig => a.auth === "password");
  for (const a of all)
    if (a.auth === "oauth2")
      lines.push(`${label}: account ${a.name}: OAuth2, login not tried here (mailgator account status)`);
  const timeouts = { ...DEFAULT_TIMEOUTS, connectMs: CONNECT_CHECK_TIMEOUT_MS };
  let ok = true;
  if (name === "imap") {
    let session: ImapUpstream;
    try {
      session = await ImapUpstream.open(target, timeouts);
    } catch (e) {
      const message = (e as Error).message;
      lines.push(failed(label, message, listener));
      lines.push(`${label}: login not tried`);
      return false;
    }
    session.close();
    lines.push(`${label}: ${tlsWord}; IMAP greeting ok`);
    for (const account of accounts) {
      let s: ImapUpstream | null = null;
      try {
        s = await ImapUpstream.open(target, timeouts);
        const good = await s.login(account.username, account.password.reveal());
        lines.push(
          good
            ? `${label}: login as account ${account.name} (${account.username}) ok`
            : `${label}: FAILED: login as account ${account.name} (${account.username}) refused: ` +
                "check its username and password",
        );
        ok &&= good;
      } catch (e) {
        lines.push(`${label}: FAILED: login as account ${account.name}: ${quoted((e as Error).message)}`);
        ok = false;
      } finally {
        s?.close();
      }
    }
  } else {
    try {
      await (await openSmtp(target, null)).quit();
    } catch (e) {
      const message = (e as Error).message;
      lines.push(failed(label, message, listener));
      lines.push(`${label}: login not tried`);
      return false;
    }
    lines.push(`${label}: ${tlsWord}; SMTP greeting and EHLO ok`);
    for (const account of accounts) {
      try {
        const s = await openSmtp(target, { username: account.username, password: account.password.reveal() });
        await s.quit();
        lines.push(`${label}: login as account ${account.name} (${account.username}) ok`);
      } catch (e) {
        lines.push(
          e instanceof UpstreamAuthError
            ? `${label}: FAILED: login as account ${account.name} (${account.username}) refused: ` +
                "check its username and password"
            : `${label}: FAILED: login as account ${account.name}: ${quoted((e as Error).message)}`,
        );
        ok = false;
      }
    }
  }
  if (all.length === 0) lines.push(`${label}: login not tried (pass-through: agents log in with their own)`);
  return ok;
}

/** Tries every configured upstream; never throws for an upstream that fails, reports it. */
export async function checkConnections(config: Config): Promise<ConnectReport> {
  const lines: string[] = [];
  let ok = true;
  for (const name of ["imap", "smtp"] as const) if (config[name]) ok = (await one(name, config, lines)) && ok;
  if (!config.imap && !config.smtp) lines.push("no [imap] or [smtp]: nothing to connect to");
  return { lines, ok };
}
