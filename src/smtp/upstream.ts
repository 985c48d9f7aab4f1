/**
 * The proxy's side of the upstream submission server: connect (implicit TLS, verified STARTTLS, or plain only
 * when configured), EHLO, AUTH with the credentials of this session, and replay approved transactions.
 *
 * Credentials are never sent on a connection that is not encrypted unless the config says `upstream_tls =
 * "none"`. With `starttls`, an EHLO without STARTTLS (stripped by a man in the middle, RFC 3207 §6), a refused
 * STARTTLS or a failed handshake ends the connection before anything else is sent; a reply received with the 220
 * ends it too, and a part of a line received before the handshake is discarded (docs/protocol.md §6 "STARTTLS";
 * Poddebniak et al., USENIX Security 2021). Any reply nothing asked for ends the connection (`#onLine`).
 */

import { hostname } from "node:os";
import type { AccountCredentials } from "../accounts/index.ts";
import { cutText, MAX_ROW_REASON } from "../audit/row.ts";
import type { AccountConfig } from "../config/types.ts";
import {
  type Connection,
  connectUpstream,
  LineFramer,
  startUpstreamTls,
  UpstreamError,
  type UpstreamTarget,
  upstreamHint,
} from "../net/index.ts";
import { chooseOAuthMechanism, type MechanismSetting, oauthFailureAnswer, oauthInitialResponse } from "../net/sasl.ts";
import { copyRun, SHORT_RUN } from "./data.ts";
import {
  MAX_UPSTREAM_REPLY_LINE,
  MAX_UPSTREAM_REPLY_LINES,
  TLS_HANDSHAKE_TIMEOUT_MS,
  UPSTREAM_DATA_BLOCK_TIMEOUT_MS,
  UPSTREAM_REPLY_TIMEOUT_MS,
} from "./limits.ts";
import type { Reply } from "./reply.ts";
import { SPOOL_BLOCK, type Spool } from "./spool.ts";

export { UpstreamError };

export interface Credentials {
  readonly username: string;
  readonly password: string;
}

/** An OAuth2 login (docs/smtp.md "OAuth2 accounts"): AUTH OAUTHBEARER or XOAUTH2 as `mechanism` decides. */
export interface OAuthCredentials {
  readonly username: string;
  readonly accessToken: string;
  readonly mechanism: MechanismSetting;
}

export type UpstreamLogin = Credentials | OAuthCredentials;

/**
 * Connects and logs in as an OAuth2 account (docs/smtp.md "OAuth2 accounts"): with the current access token, and
 * when the server refuses it, on a new connection with a fresh one (the refused token is reported, so the next one
 * is new). Throws AccountNeedsReauthorization, AccountTemporarilyUnavailable or UpstreamError; never
 * UpstreamAuthError, since a refused token is not the agent's wrong password. Every login as an OAuth2 account goes
 * through it (openAccountUpstream).
 */
export async function openOAuthUpstream(
  target: UpstreamTarget,
  credentials: Pick<AccountCredentials, "credentialFor" | "reportRejected">,
  account: string,
  mechanism: MechanismSetting,
  signal: AbortSignal | null = null,
): Promise<UpstreamSession> {
  // A token request is not cut by `signal`; what follows it is.
  const stopped = (): boolean => signal?.aborted === true;
  const first = await credentials.credentialFor(account);
  if (stopped()) throw new UpstreamError("cancelled");
  if (first.kind !== "oauth2") throw new UpstreamError(`account ${account}: expected an OAuth2 credential`);
  try {
    return await UpstreamSession.open(target, { ...first, mechanism }, signal);
  } catch (e) {
    if (!(e instanceof UpstreamAuthError)) throw e;
  }
  credentials.reportRejected(account, first.accessToken);
  const second = await credentials.credentialFor(account);
  if (stopped()) throw new UpstreamError("cancelled");
  if (second.kind !== "oauth2") throw new UpstreamError(`account ${account}: expected an OAuth2 credential`);
  if (second.accessToken !== first.accessToken) {
    try {
      return await UpstreamSession.open(target, { ...second, mechanism }, signal);
    } catch (e) {
      if (!(e instanceof UpstreamAuthError)) throw e;
    }
  }
  throw new FreshTokenRefused(`account ${account}: the upstream server refused a fresh access token`);
}

/**
 * The upstream server refused an OAuth2 account's fresh access token after the one it held: the account's refusal
 * (src/accounts/refusals.ts), not the agent's; the sessions do not try the account again for a while.
 */
export class FreshTokenRefused extends UpstreamError {
  override name = "FreshTokenRefused";
}

/**
 * Connects and logs in as a configured account: with its password, or as an OAuth2 account through
 * openOAuthUpstream. The proxy's sessions, the replay of approved messages and the approvers' notices log in as an
 * account through it. An OAuth2 account in a process without its token credentials fails with OAuthUnavailable.
 */
export async function openAccountUpstream(
  target: UpstreamTarget,
  account: AccountConfig,
  credentials: Pick<AccountCredentials, "credentialFor" | "reportRejected"> | undefined,
  signal: AbortSignal | null = null,
): Promise<UpstreamSession> {
  if (account.auth === "password")
    return UpstreamSession.open(target, { username: account.username, password: account.password.reveal() }, signal);
  if (credentials === undefined) throw new OAuthUnavailable(account.name);
  return openOAuthUpstream(target, credentials, account.name, account.oauth2.saslMechanism, signal);
}

/** An OAuth2 account, and no token credentials in this process to log in with (nothing was sent). */
export class OAuthUnavailable extends Error {
  override name = "OAuthUnavailable";
  constructor(account: string) {
    super(`account ${account}: no OAuth2 token manager in this process to log in with`);
  }
}

/** Upstream refused the login (535 and friends): the agent gets 535, not a temporary failure. */
export class UpstreamAuthError extends Error {
  override name = "UpstreamAuthError";
  readonly reply: Reply;
  constructor(reply: Reply) {
    super(`upstream refused the login: ${reply.code} ${reply.lines.join(" ")}`);
    this.reply = reply;
  }
}

/**
 * A transaction stopped by its caller's signal (shutdown: docs/reliability.md "Shutdown"). `endOfDataSent`: the final
 * dot had been handed to the connection, so only the server knows whether it took the message; before it, nothing
 * was delivered (RFC 5321 §4.1.1.4).
 */
export class SendStopped extends UpstreamError {
  override name = "SendStopped";
  readonly endOfDataSent: boolean;
  constructor(endOfDataSent: boolean) {
    super(
      endOfDataSent
        ? "the proxy stopped after the end of data went out: the upstream may have the message"
        : "the proxy stopped before the end of data: nothing was delivered",
    );
    this.endOfDataSent = endOfDataSent;
  }
}

/** What a replay reads the message from: the session's spool, or a held message (blocks of at most SPOOL_BLOCK). */
export type MessageSource = Pick<Spool, "length" | "blocks">;

export interface Envelope {
  readonly from: string;
  readonly recipients: readonly string[];
  /**
   * The client declared `BODY=8BITMIME` (RFC 6152): passed on as such when the upstream offers 8BITMIME, as it is for
   * 8-bit content the client did not declare (`eightBitContent`).
   */
  readonly eightBit: boolean;
  /**
   * The content holds an 8-bit octet (0x80 or above; src/smtp/inspect.ts `MessageFacts.eightBit`), declared or not.
   * RFC 6152 §3: such content must not go to a server that did not offer 8BITMIME, and Mailgator does not convert it
   * (`EightBitRefused`).
   */
  readonly eightBitContent: boolean;
}

/**
 * The content holds 8-bit octets and the upstream server does not offer 8BITMIME: RFC 6152 §3 forbids sending it
 * there, and the relay that does not convert it must refuse it. Mailgator never converts (a converted message is not
 * the one the rules and an approver read): nothing of the transaction was sent, not even MAIL, and the connection is
 * as it was (docs/smtp.md "Replay"). The refusal is permanent: RFC 3463 X.6.3, conversion required but not supported.
 */
export class EightBitRefused extends Error {
  override name = "EightBitRefused";
  static readonly code = 554;
  static readonly status = "5.6.3";
  constructor() {
    super(EIGHT_BIT_REFUSED);
  }
}

/** Why an 8-bit message is not sent (EightBitRefused), as the reply, the audit rows and the approvers read it. */
export const EIGHT_BIT_REFUSED =
  "the upstream server does not accept 8-bit messages (it does not offer 8BITMIME, RFC 6152) and this message " +
  "holds 8-bit octets";

/** Whether `upstream` offered 8BITMIME in its last EHLO reply (RFC 6152 §2). */
export function offers8BitMime(upstream: Pick<UpstreamSession, "extensions">): boolean {
  return upstream.extensions.has("8BITMIME");
}

/** Throws EightBitRefused when the content holds 8-bit octets and `upstream` does not offer 8BITMIME (RFC 6152 §3). */
export function checkEightBit(upstream: Pick<UpstreamSession, "extensions">, eightBitContent: boolean): void {
  if (eightBitContent && !offers8BitMime(upstream)) throw new EightBitRefused();
}

export type SendResult =
  /** Upstream's reply to the final dot (success or failure), or to the first refused command. */
  | { readonly stage: "data"; readonly reply: Reply }
  | { readonly stage: "mail" | "rcpt" | "data-command"; readonly reply: Reply; readonly recipient?: string };

/**
 * The audit commit that a replay waits for before its final dot. docs/audit.md ("What a row records") asks that an
 * operation that reached upstream has its audit row on disk; a message reaches the upstream server only with the end of
 * data (RFC 5321 §4.1.1.4: nothing is delivered before it, and a connection lost before it discards the transaction).
 * So MAIL, the RCPTs and DATA may go out while the rows wait to be committed; the replay asks for the commit (`hurry`)
 * once DATA is accepted, the final dot waits for it, and a failed commit abandons the transaction instead.
 */
export class CommitGate {
  #state: "pending" | "committed" | "failed" = "pending";
  #error: Error | null = null;
  readonly #onFail = new Set<(error: Error) => void>();
  /** Resolves once the commit has settled, either way; never rejects. */
  readonly settled: Promise<void>;
  /** Asks for the commit now rather than later (the rows may be waiting for company: AuditLog.durableWithin). */
  readonly hurry: () => void;

  constructor(commit: Promise<unknown>, hurry: () => void = () => {}) {
    this.hurry = hurry;
    this.settled = commit.then(
      () => {
        this.#state = "committed";
      },
      (e: unknown) => {
        this.#state = "failed";
        this.#error = e instanceof Error ? e : new Error(String(e));
        for (const f of this.#onFail) f(this.#error);
        this.#onFail.clear();
      },
    );
  }

  /** A method, not a getter: the state changes between two reads, which TypeScript's narrowing would not expect. */
  state(): "pending" | "committed" | "failed" {
    return this.#state;
  }

  /** Why the commit failed, once it has. */
  get error(): Error | null {
    return this.#error;
  }

  /** Calls `f` when the commit fails (not if it already has); returns the function that cancels this. */
  onFail(f: (error: Error) => void): () => void {
    this.#onFail.add(f);
    return () => this.#onFail.delete(f);
  }
}

/** The audit commit failed: the transaction was abandoned before its end of data, and nothing was delivered. */
export class CommitFailedError extends Error {
  override name = "CommitFailedError";
  constructor(cause: Error | null) {
    super(`audit commit failed, transaction abandoned before the end of data: ${cause?.message ?? "unknown error"}`, {
      cause,
    });
  }
}

const CRLF_DOT_CRLF = Buffer.from(".\r\n");
const LF_DOT = Buffer.from("\n.");
const DOT = 46;
const LF = 10;

/**
 * Copies `block` into `out` with every line-initial "." doubled (RFC 5321 §4.5.2) and returns the length written:
 * one search and one copy per dotted line, no object per line (docs/smtp.md "DATA on the wire"). `out` holds 1.5
 * times the block, the most a block of "." lines can grow.
 */
function stuffInto(block: Buffer, lineStart: boolean, out: Buffer): number {
  let length = 0;
  let from = 0;
  let dot = lineStart && block[0] === DOT ? 0 : nextLineDot(block, 0);
  while (dot !== -1) {
    // Up to and including the dot; the next run starts at the same dot, so it goes out twice.
    length += copyRun(block, from, dot + 1, out, length);
    from = dot;
    dot = nextLineDot(block, dot + 1);
  }
  return length + block.copy(out, length, from);
}

/** Index of the next "." that starts a line, searching from `from`, or -1. */
function nextLineDot(block: Buffer, from: number): number {
  const stop = Math.min(block.length - 1, from + SHORT_RUN);
  for (let i = from; i < stop; i++) if (block[i] === LF && block[i + 1] === DOT) return i + 1;
  const at = block.indexOf(LF_DOT, stop);
  return at === -1 ? -1 : at + 1;
}

export class UpstreamSession {
  readonly #conn: Connection;
  readonly #framer = new LineFramer(MAX_UPSTREAM_REPLY_LINE);
  #lines: string[] = [];
  readonly #replies: Reply[] = [];
  readonly #waiters: { resolve(r: Reply): void; reject(e: Error): void }[] = [];
  #failure: Error | null = null;
  extensions = new Map<string, string>();
  /** Reused output block for the dot-stuffed message. */
  #out: Buffer | null = null;
  /** Whether this transaction's final dot was handed to the connection (SendStopped). */
  #endOfDataSent = false;
  /**
   * Replies the server owes: one for its greeting, one per command line written and one per end of data. A reply
   * beyond them answers nothing the proxy asked; kept, it would be read as the answer to the next command, and
   * every reply after it one command late (`#onLine`).
   */
  #owed = 1;
  /** The greeting was read: what fails from now on is a reply, before it the greeting (`#what`). */
  #greeted = false;
  /** How long the server may take to accept one block of a replayed message (UPSTREAM_DATA_BLOCK_TIMEOUT_MS). */
  blockTimeoutMs = UPSTREAM_DATA_BLOCK_TIMEOUT_MS;

  private constructor(conn: Connection) {
    this.#conn = conn;
    conn.onData(this.#onData);
    conn.onClose((error) =>
      this.#fail(new UpstreamError(`upstream closed the connection${error ? `: ${error.message}` : ""}`)),
    );
  }

  get closed(): boolean {
    return this.#conn.closed || this.#failure !== null;
  }

  /**
   * Whether the last `send`'s final dot was handed to the connection: after a failure, true means only the server
   * knows whether it took the message; false, that nothing was delivered (RFC 5321 §4.1.1.4).
   */
  get endOfDataSent(): boolean {
    return this.#endOfDataSent;
  }

  /**
   * Connects, secures and authenticates; rejects with UpstreamError or UpstreamAuthError. An aborted `signal` drops
   * the connection at whatever step it is (the open then rejects with UpstreamError).
   */
  static async open(
    target: UpstreamTarget,
    credentials: UpstreamLogin | null,
    signal: AbortSignal | null = null,
  ): Promise<UpstreamSession> {
    const conn = await connectUpstream(target, signal);
    const session = new UpstreamSession(conn);
    const cut = (): void => conn.destroy();
    signal?.addEventListener("abort", cut, { once: true });
    try {
      if (signal?.aborted === true) throw new UpstreamError("cancelled");
      await session.#handshake(target, credentials);
    } catch (e) {
      conn.destroy();
      throw e;
    } finally {
      signal?.removeEventListener("abort", cut);
    }
    return session;
  }

  async #handshake(target: UpstreamTarget, credentials: UpstreamLogin | null): Promise<void> {
    const greeting = await this.#next();
    if (greeting.code !== 220) throw new UpstreamError(`upstream greeting was ${describe(greeting)}`);
    await this.#ehlo();
    if (target.tls === "starttls") {
      if (!this.extensions.has("STARTTLS")) {
        throw new UpstreamError("upstream did not offer STARTTLS (stripped by a man in the middle?); nothing was sent");
      }
      const go = await this.command("STARTTLS");
      if (go.code !== 220) throw new UpstreamError(`upstream refused STARTTLS: ${describe(go)}`);
      // A reply that came in clear with the 220 (an injection) has ended the connection already (`#onLine`).
      if (this.#failure !== null) throw this.#failure;
      // Anything already received arrived in clear text before the handshake: drop it.
      this.#framer.clear();
      this.#lines = [];
      this.#replies.length = 0;
      try {
        await startUpstreamTls(this.#conn, target, TLS_HANDSHAKE_TIMEOUT_MS);
      } catch (e) {
        throw new UpstreamError(`upstream TLS handshake failed: ${(e as Error).message}${upstreamHint(e as Error)}`);
      }
      await this.#ehlo();
    }
    if (credentials !== null) {
      if (!this.#conn.secure && target.tls !== "none")
        throw new UpstreamError("refusing to send credentials without TLS");
      await this.#auth(credentials);
    }
  }

  async #ehlo(): Promise<void> {
    const r = await this.command(`EHLO ${ehloName()}`);
    if (r.code !== 250) throw new UpstreamError(`upstream refused EHLO: ${describe(r)}`);
    this.extensions = new Map();
    for (const line of r.lines.slice(1)) {
      const [keyword, ...rest] = line.split(" ");
      if (keyword) this.extensions.set(keyword.toUpperCase(), rest.join(" "));
    }
  }

  async #auth(credentials: UpstreamLogin): Promise<void> {
    const mechanisms = (this.extensions.get("AUTH") ?? "").toUpperCase().split(" ");
    let r: Reply;
    if ("accessToken" in credentials) {
      r = await this.#authOAuth(mechanisms, credentials);
    } else if (credentials.username.includes("\0") || credentials.password.includes("\0")) {
      // RFC 4616 §2: PLAIN's fields hold no NUL, and one in the name would move the line between name and password,
      // a login nobody gave (the agent-facing decoders refuse such a name or password before it comes here).
      throw new UpstreamError("a user name or password holding NUL cannot be sent upstream (RFC 4616 §2)");
    } else if (mechanisms.includes("PLAIN")) {
      const token = Buffer.from(`\0${credentials.username}\0${credentials.password}`, "utf8").toString("base64");
      r = await this.command(`AUTH PLAIN ${token}`);
    } else if (mechanisms.includes("LOGIN")) {
      r = await this.command("AUTH LOGIN");
      if (r.code === 334) r = await this.command(Buffer.from(credentials.username, "utf8").toString("base64"));
      if (r.code === 334) r = await this.command(Buffer.from(credentials.password, "utf8").toString("base64"));
    } else {
      throw new UpstreamError("upstream offers neither AUTH PLAIN nor AUTH LOGIN");
    }
    if (r.code === 235) return;
    if (r.code >= 500) throw new UpstreamAuthError(r);
    throw new UpstreamError(`upstream login failed: ${describe(r)}`);
  }

  /**
   * AUTH with an access token and the initial response in the command (RFC 4954 §4). A refused token gets a 334
   * challenge (base64 JSON) first, answered as the mechanism says (src/net/sasl.ts), then 535; a second 334 ends
   * the connection.
   */
  async #authOAuth(mechanisms: readonly string[], credentials: OAuthCredentials): Promise<Reply> {
    const mechanism = chooseOAuthMechanism((m) => mechanisms.includes(m), credentials.mechanism);
    if (mechanism === null) {
      const wanted = credentials.mechanism === "auto" ? "OAUTHBEARER or XOAUTH2" : credentials.mechanism.toUpperCase();
      throw new UpstreamError(`upstream does not offer AUTH ${wanted}`);
    }
    const initial = oauthInitialResponse(mechanism, credentials.username, credentials.accessToken);
    let r = await this.command(`AUTH ${mechanism} ${Buffer.from(initial).toString("base64")}`);
    if (r.code === 334) r = await this.command(Buffer.from(oauthFailureAnswer(mechanism)).toString("base64"));
    if (r.code === 334) throw new UpstreamError(`upstream kept challenging AUTH ${mechanism}`);
    return r;
  }

  /** Sends one command line and waits for its reply. */
  command(line: string): Promise<Reply> {
    this.#owed++;
    this.#conn.write(`${line}\r\n`);
    return this.#next();
  }

  /**
   * Replays one approved transaction: MAIL, every RCPT and DATA, then the spooled content, dot-stuffed again
   * (RFC 5321 §4.5.2), and the final dot only once `gate` (the audit commit) has succeeded.
   *
   * All or nothing upstream too: a recipient the upstream refuses must not let the others receive the message.
   * With PIPELINING (RFC 2920) MAIL, the RCPTs and DATA go out in one write; if DATA was accepted although a
   * recipient was refused, the connection is dropped before the final dot, which makes the server discard the
   * transaction (RFC 5321 §4.1.1.4: only the end-of-data sequence completes a message), and the next
   * transaction reconnects. Without PIPELINING, DATA is sent only after every RCPT was accepted.
   *
   * Content with 8-bit octets to a server that did not offer 8BITMIME is refused before anything goes out: rejects
   * with EightBitRefused, and the connection stays usable (RFC 6152 §3).
   *
   * A failed commit abandons the transaction the same way, at whatever stage it is (nothing at all is sent if it
   * failed before the call): rejects with CommitFailedError, and the connection is closed. An aborted `signal`
   * drops the connection too, at whatever stage: rejects with SendStopped, which says whether the dot had gone out.
   * An aborted `withdraw` drops it only while the final dot has not gone out (SendStopped, nothing delivered); after
   * the dot it changes nothing, and the server's answer is awaited as usual.
   */
  async send(
    envelope: Envelope,
    spool: MessageSource,
    gate: CommitGate,
    signal: AbortSignal | null = null,
    withdraw: AbortSignal | null = null,
  ): Promise<SendResult> {
    this.#endOfDataSent = false;
    if (gate.state() === "failed") throw new CommitFailedError(gate.error);
    const stop = (): void => {
      this.#fail(new SendStopped(this.#endOfDataSent));
      this.#conn.destroy();
    };
    const withdrawn = (): void => {
      if (!this.#endOfDataSent) stop();
    };
    if (signal?.aborted === true || withdraw?.aborted === true) {
      // Stopped before the call (a reload that ended the session while its connection was opened): nothing goes out.
      stop();
      throw new SendStopped(false);
    }
    signal?.addEventListener("abort", stop, { once: true });
    withdraw?.addEventListener("abort", withdrawn, { once: true });
    const cancel = gate.onFail(() => this.#abandon("the audit commit failed"));
    try {
      return await this.#send(envelope, spool, gate);
    } catch (e) {
      if (gate.state() === "failed") {
        this.#abandon("the audit commit failed");
        throw new CommitFailedError(gate.error);
      }
      // A write the dropped connection refused fails with the socket's error: the stop is what happened.
      if (this.#failure instanceof SendStopped) throw this.#failure;
      throw e;
    } finally {
      cancel();
      signal?.removeEventListener("abort", stop);
      withdraw?.removeEventListener("abort", withdrawn);
    }
  }

  async #send(envelope: Envelope, spool: MessageSource, gate: CommitGate): Promise<SendResult> {
    // Before anything of the transaction goes out: a server that did not offer 8BITMIME gets no 8-bit content.
    checkEightBit(this, envelope.eightBitContent);
    const params: string[] = [];
    if (this.extensions.has("SIZE")) params.push(`SIZE=${spool.length}`);
    // RFC 6152 §3: 8-bit content goes declared, whether or not the agent declared it (refused before here when the
    // upstream does not offer 8BITMIME, checkEightBit).
    if ((envelope.eightBit || envelope.eightBitContent) && this.extensions.has("8BITMIME"))
      params.push("BODY=8BITMIME");
    const commands = [
      `MAIL FROM:<${envelope.from}>${params.map((p) => ` ${p}`).join("")}`,
      ...envelope.recipients.map((r) => `RCPT TO:<${r}>`),
      "DATA",
    ];
    const replies: Reply[] = [];
    if (this.extensions.has("PIPELINING")) {
      this.#owed += commands.length;
      this.#conn.write(commands.map((c) => `${c}\r\n`).join(""));
      for (let i = 0; i < commands.length; i++) replies.push(await this.#next());
    } else {
      for (const c of commands) {
        const r = await this.command(c);
        replies.push(r);
        if (r.code !== 250 && r.code !== 251) break;
      }
    }
    const failed = replies.findIndex((r, i) =>
      i === commands.length - 1 ? r.code !== 354 : r.code !== 250 && r.code !== 251,
    );
    if (failed !== -1) {
      const r = replies[failed]!;
      const last = replies[commands.length - 1];
      if (last?.code === 354) {
        // DATA was accepted for the recipients that passed: abandon the transaction without ending it.
        this.#abandon("a recipient was refused");
      } else {
        await this.#reset();
      }
      if (failed === 0) return { stage: "mail", reply: r };
      if (failed === commands.length - 1) return { stage: "data-command", reply: r };
      return { stage: "rcpt", reply: r, recipient: envelope.recipients[failed - 1]! };
    }
    // Upstream accepted DATA: the rows go to disk now (with whatever other sends queued meanwhile), before any of
    // the content, so that the last block and the final dot can go out in one write.
    if (gate.state() === "pending") {
      gate.hurry();
      await gate.settled;
    }
    // Nothing of the content goes out unless the rows are on disk (never on a gate still pending).
    if (gate.state() !== "committed") throw new CommitFailedError(gate.error);
    let lineStart = true;
    let sent = 0;
    let ended = false;
    // Each block is stuffed into one reused buffer and written at once (one system call per block rather
    // than per piece); a line-initial dot is doubled, so the output is at most 1.5 times the block, plus the dot.
    // The commit is done (checked above), so the final dot goes with the last block; it goes alone only for an
    // empty message, which has no block.
    const out = (this.#out ??= Buffer.allocUnsafe(Math.ceil(SPOOL_BLOCK * 1.5) + 1 + CRLF_DOT_CRLF.length));
    for (const block of spool.blocks()) {
      // The event loop's other work (every other session) runs between two blocks: a block's write may be taken
      // by the kernel at once, and without this a large message would be replayed in one turn.
      if (sent > 0) await new Promise<void>((resolve) => setImmediate(resolve));
      if (this.closed) throw this.#failure ?? new UpstreamError("upstream closed the connection");
      sent += block.length;
      let length = stuffInto(block, lineStart, out);
      lineStart = block[block.length - 1] === LF;
      if (sent === spool.length) {
        out.set(CRLF_DOT_CRLF, length);
        length += CRLF_DOT_CRLF.length;
        ended = true;
        this.#endOfDataSent = true;
        this.#owed++;
      }
      await this.#flushed(out.subarray(0, length));
    }
    if (!ended) {
      if (this.closed) throw this.#failure ?? new UpstreamError("upstream closed the connection");
      this.#endOfDataSent = true;
      this.#owed++;
      this.#conn.write(CRLF_DOT_CRLF);
    }
    return { stage: "data", reply: await this.#next() };
  }

  /**
   * Writes one block of the message and resolves once the kernel has it, so that its buffer may be reused; a server
   * that does not take it within `blockTimeoutMs` has its connection dropped (the caller then finds it closed).
   */
  async #flushed(block: Uint8Array): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        this.#fail(new UpstreamError(`upstream did not take a block of the message within ${this.blockTimeoutMs} ms`));
        this.#conn.destroy();
        resolve();
      }, this.blockTimeoutMs);
    });
    try {
      await Promise.race([this.#conn.writeFlushed(block), late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Drops the connection in the middle of a transaction, before its end of data: the server discards it
   * (RFC 5321 §4.1.1.4). RSET cannot be sent inside DATA. The next transaction reconnects.
   */
  #abandon(why: string): void {
    this.#fail(new UpstreamError(`transaction abandoned before the end of data: ${why}`));
    this.#conn.destroy();
  }

  async #reset(): Promise<void> {
    if (this.closed) return;
    try {
      await this.command("RSET");
    } catch {
      // A failed RSET leaves the connection closed; the next transaction reconnects.
    }
  }

  /** QUIT and close, without waiting long for a polite answer. */
  async quit(): Promise<void> {
    if (!this.closed) {
      this.#owed++;
      this.#conn.write("QUIT\r\n");
      await Promise.race([this.#next().catch(() => undefined), Bun.sleep(1000)]);
    }
    this.#conn.end();
  }

  /** Drops the connection; from now on the session is closed (synchronously: the socket's close event comes later). */
  destroy(): void {
    this.#fail(new UpstreamError("the connection was dropped"));
    this.#conn.destroy();
  }

  #onData = (chunk: Buffer): void => {
    let at = 0;
    while (at < chunk.length && this.#failure === null) {
      const step = this.#framer.next(chunk, at);
      if (step === null) return;
      at = step.end;
      const event = step.event;
      if (event.kind !== "line") {
        this.#fail(
          new UpstreamError(
            event.kind === "too-long"
              ? `upstream ${this.#what()} line too long: longer than MAX_UPSTREAM_REPLY_LINE ` +
                  `(${MAX_UPSTREAM_REPLY_LINE} octets)`
              : `upstream ${this.#what()} with a bare CR or LF`,
          ),
        );
        this.#conn.destroy();
        return;
      }
      this.#onLine(event.line.toString("latin1"));
    }
  };

  #onLine(line: string): void {
    const m = /^([2-5]\d\d)([ -])(.*)$/.exec(line) ?? /^([2-5]\d\d)()$/.exec(line);
    if (m === null || this.#lines.length >= MAX_UPSTREAM_REPLY_LINES) {
      this.#fail(
        new UpstreamError(
          m === null
            ? `malformed upstream ${this.#what()}: ${JSON.stringify(line.slice(0, 80))}`
            : `upstream ${this.#what()} too long: more than MAX_UPSTREAM_REPLY_LINES ` +
                `(${MAX_UPSTREAM_REPLY_LINES}) lines`,
        ),
      );
      this.#conn.destroy();
      return;
    }
    this.#lines.push(m[3] ?? "");
    if (m[2] === "-") return;
    const reply: Reply = { code: Number(m[1]), lines: this.#lines };
    this.#lines = [];
    if (this.#owed === 0) {
      // A reply nothing asked for (a server that says 421 and stays open, a reply sent before the end of data, one
      // injected with STARTTLS's 220): the connection is out of step, and what it answers next cannot be trusted to
      // answer what was asked. It is dropped; a transaction on it has not had its end of data, so nothing is
      // delivered (RFC 5321 §4.1.1.4), and the session's next transaction opens a new one.
      this.#fail(new UpstreamError(`upstream sent a reply nothing asked for: ${describe(reply)}`));
      this.#conn.destroy();
      return;
    }
    this.#owed--;
    this.#greeted = true;
    const waiter = this.#waiters.shift();
    if (waiter) waiter.resolve(reply);
    else this.#replies.push(reply);
  }

  /** What a line being read belongs to, for a failure's message. */
  #what(): "greeting" | "reply" {
    return this.#greeted ? "reply" : "greeting";
  }

  #next(): Promise<Reply> {
    const ready = this.#replies.shift();
    if (ready) return Promise.resolve(ready);
    if (this.#failure) return Promise.reject(this.#failure);
    return new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#fail(new UpstreamError("upstream did not reply in time"));
        this.#conn.destroy();
      }, UPSTREAM_REPLY_TIMEOUT_MS);
      this.#waiters.push({
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
    });
  }

  #fail(error: Error): void {
    this.#failure ??= error;
    for (const waiter of this.#waiters.splice(0)) waiter.reject(this.#failure);
  }
}

function describe(r: Reply): string {
  return cutText(`${r.code} ${r.lines.join(" / ")}`, MAX_ROW_REASON);
}

let cachedName: string | null = null;
/** The name Mailgator gives in EHLO upstream: this machine's host name when it is a valid domain. */
function ehloName(): string {
  if (cachedName === null) {
    const name = hostname();
    cachedName = /^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,250}[A-Za-z0-9])?$/.test(name) ? name : "mailgator.localdomain";
  }
  return cachedName;
}
