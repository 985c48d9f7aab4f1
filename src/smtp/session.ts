/**
 * One agent connection: the SMTP server state machine (RFC 5321 §4.1, §3.3), store and forward.
 *
 * States: before EHLO → greeted → authenticated → in a transaction (after MAIL) → receiving DATA. Commands are
 * read one at a time from a byte queue and answered strictly in order, which is all PIPELINING (RFC 2920) needs:
 * replies are buffered and flushed whenever the input runs dry or the session waits on something.
 *
 * Policy decisions come from decide.ts; this file maps them to replies and audit rows (docs/protocol.md §6
 * "Reply codes").
 */

import { randomBytes } from "node:crypto";
import {
  type AccountCredentials,
  AccountNeedsReauthorization,
  accountLoginKey,
  agentReason,
  reloadEndReason,
  type SessionLogin,
} from "../accounts/index.ts";
import { type AccountRefusals, refusalKey } from "../accounts/refusals.ts";
import { countLimitRefusal } from "../admin/metrics.ts";
import { buildPreview } from "../approvals/preview.ts";
import {
  type ApprovalRow,
  type ApprovalStore,
  HELD_DISK_RESERVE_BYTES,
  HoldStopped,
  newApprovalId,
} from "../approvals/store.ts";
import type { AuditEvent, AuditLog } from "../audit/index.ts";
import { AUDIT_BACKLOG_PAUSE_ROWS, waitForAuditBacklog } from "../audit/index.ts";
import { cutText, MAX_ROW_LOGIN_NAME } from "../audit/row.ts";
import { ownEntry } from "../config/names.ts";
import type { AccountConfig, Config } from "../config/types.ts";
import {
  CLIENT_CLOSED,
  errorMessage,
  logAccess,
  logLockout,
  logLoginFailure,
  moduleLogger,
  SHUTTING_DOWN,
} from "../log.ts";
import type { Connection, FailureThrottle, Lock, LoginLockout, TlsIdentity, UpstreamTarget } from "../net/index.ts";
import {
  failureDelay,
  LineFramer,
  lockDetail,
  lockedReason,
  lockoutName,
  lockStartedReason,
  overlongCredentials,
  SessionCounter,
  sameUpstream,
  UpstreamError,
} from "../net/index.ts";
import type { Decision, Outcome, Policy } from "../policy/index.ts";
import { describeExceeded, type QuotaSubject, type Quotas, quotaSubject } from "../quotas/index.ts";
import { checkAgentLogin } from "../vault/login.ts";
import { recordedLoginName } from "../vault/token.ts";
import { parsePathArgument } from "./address.ts";
import { decodeLoginStep, decodePlain, type LoginAttempt, type Mechanism } from "./auth.ts";
import { DataReader } from "./data.ts";
import {
  decideMessage,
  nullSenderProblem,
  originatorProblem,
  type RecipientFinal,
  recipientOutcome,
  recipientRefused,
  senderNotIdentity,
  senderOutcome,
  senderRefused,
  sessionIdentities,
} from "./decide.ts";
import { type MessageFacts, MessageInspector, unsendable } from "./inspect.ts";
import {
  MAX_ABANDONED_LOGIN_CHECKS,
  MAX_AUTH_FAILURES_PER_SESSION,
  MAX_EHLO_ECHO,
  MAX_HEADER_BYTES,
  MAX_HELD_PER_AGENT,
  MAX_QUEUED_INPUT,
  MAX_REFUSED_BEFORE_LOGIN,
  MAX_REFUSED_TARGET,
  MAX_ROW_REASON,
  type SessionLimits,
  TLS_HANDSHAKE_TIMEOUT_MS,
} from "./limits.ts";
import { clean, formatReply, type Reply, reply } from "./reply.ts";
import { Spool } from "./spool.ts";
import {
  CommitFailedError,
  CommitGate,
  type Credentials,
  EIGHT_BIT_REFUSED,
  EightBitRefused,
  FreshTokenRefused,
  offers8BitMime,
  openAccountUpstream,
  SendStopped,
  UpstreamAuthError,
  UpstreamSession,
} from "./upstream.ts";

/** DATA octets between two hints to the garbage collector (see the DATA sink). */
const GC_HINT_BYTES = 2 * 1024 * 1024;

/** Commands accepted before AUTH (RFC 4954 §4, docs/smtp.md "AUTH": everything else gets 530). */
const BEFORE_AUTH = new Set(["EHLO", "HELO", "STARTTLS", "AUTH", "NOOP", "RSET", "QUIT"]);

/** Commands Mailgator never implements or forwards (docs/protocol.md §6, §7 case 34). */
const NOT_OFFERED = new Set([
  "VRFY",
  "EXPN",
  "BDAT",
  "BURL",
  "XCLIENT",
  "XFORWARD",
  "ETRN",
  "TURN",
  "ATRN",
  "HELP",
  "SEND",
  "SOML",
  "SAML",
]);

export interface SessionContext {
  /** The config and policy in force now: read at each use, as a reload swaps them (docs/operations.md). */
  readonly config: Config;
  readonly policy: Policy;
  readonly audit: AuditLog;
  /** The upstream credential of each vault-mode account (src/accounts/index.ts). */
  readonly credentials: AccountCredentials;
  /** Sends are charged at the end of DATA, before anything goes upstream (docs/quotas.md). */
  readonly quotas: Quotas;
  readonly upstream: UpstreamTarget;
  readonly identity: TlsIdentity | null;
  readonly spoolDir: string;
  readonly throttle: FailureThrottle;
  /** Failed logins counted across connections and both listeners (src/net/lockout.ts). */
  readonly lockout: LoginLockout;
  /** Vault password accounts whose upstream login was refused just now (src/accounts/refusals.ts). */
  readonly accountRefusals: AccountRefusals;
  readonly limits: SessionLimits;
  readonly hostname: string;
  /** Sessions currently open, so that close() can end them. */
  readonly sessions: Set<SmtpSession>;
  /** Sessions whose agents left while upstream checked their AUTH: MAX_ABANDONED_LOGIN_CHECKS at most. */
  readonly abandonedLogins: Set<SmtpSession>;
  /**
   * Messages being held for approval (stored over several turns, docs/approvals.md "Limits"): the proxy's close
   * waits for them, so that the row each ends with is written before the audit log closes.
   */
  readonly holds: Set<Promise<void>>;
  /** Logged-in sessions per agent or upstream login: `max_sessions_per_agent`. */
  readonly perAgent: SessionCounter;
  /** Where `ask` holds messages (docs/approvals.md); null when no rule asks. */
  readonly approvals?: ApprovalStore | null;
  /** Called once a message is held (the notices to approvers). */
  readonly onHeld?: ((row: ApprovalRow) => void) | undefined;
}

interface Recipient {
  readonly address: string;
  readonly key: string;
}

/**
 * Why an RCPT was refused (docs/smtp.md "All or nothing"): the rules, a count (MAX_RECIPIENTS, the quota's
 * recipients_per_message), or its argument (syntax, address, parameter). Whichever it was, DATA is refused.
 */
type RefusalKind = "rules" | "count" | "argument";

interface Refusal {
  readonly kind: RefusalKind;
  /** The recipient as written (cut to MAX_REFUSED_TARGET octets), or the argument when no address could be read. */
  readonly target: string;
  /** The RCPT reply's text, without code and status. */
  readonly text: string;
  /** For a count: the limit it went over. */
  readonly limit: number | null;
}

/** Refused RCPTs of one transaction kept to be named in DATA's reply and audit row; the rest are only counted. */
const MAX_REFUSALS_KEPT = 10;

/** The enhanced status of the DATA refusal for each kind of RCPT refusal (RFC 3463 X.7.1, X.5.3, X.5.4). */
const REFUSAL_STATUS: Record<RefusalKind, string> = { rules: "5.7.1", count: "5.5.3", argument: "5.5.4" };

interface Transaction {
  readonly sender: string;
  readonly senderKey: string;
  readonly senderOutcome: Outcome;
  /**
   * The revision of the config whose rules gave `senderOutcome`: its row, written at the end of DATA, names their
   * rule, and a reload may have come in between (docs/audit.md "What a row records").
   */
  readonly senderRevision: string;
  readonly eightBit: boolean;
  readonly recipients: Recipient[];
  /**
   * RCPTs refused in this transaction, for any reason, the first MAX_REFUSALS_KEPT of them: one is enough to refuse
   * DATA, so the message goes to all its recipients or to none (docs/smtp.md "All or nothing").
   */
  readonly refusals: Refusal[];
  /** Every RCPT refused in this transaction, kept or not. */
  refused: number;
  /** The first refusal of each kind, kept or not: DATA's reply names the weightiest (rules, count, argument). */
  readonly firstOfKind: Partial<Record<RefusalKind, Refusal>>;
  /** The lowest recipient limit a count refusal went over, kept or not; null without one. */
  fewest: number | null;
}

/** A held message's place under MAX_HELD_PER_AGENT (docs/approvals.md "Limits") in `store`; `release` gives it back. */
interface HoldPlace {
  readonly store: ApprovalStore;
  readonly release: () => void;
}

/** An upstream connection being opened (connect, TLS, EHLO, AUTH) while the agent's message comes in. */
interface Opening {
  readonly promise: Promise<UpstreamSession>;
  failed: boolean;
  /**
   * Drops the connection at whatever step it is: the session has ended, and it was not open in time
   * (#releaseUpstream).
   */
  readonly cancel: AbortController;
}

type Identity =
  | { readonly mode: "vault"; readonly agent: string; readonly account: AccountConfig }
  | { readonly mode: "pass-through"; readonly user: string; readonly credentials: Credentials };

export class SmtpSession {
  readonly id = randomBytes(6).toString("hex");
  readonly #ctx: SessionContext;
  readonly #conn: Connection;
  readonly #framer: LineFramer;
  readonly #queue: Buffer[] = [];
  #queueOffset = 0;
  #queuedBytes = 0;
  #running = false;
  /** The input loop while it runs (#running). */
  #runDone: Promise<void> = Promise.resolve();
  #closing = false;
  /** Shutdown, or a reload that ends the session, came while a command ran: it ends once the command has answered. */
  #endAfterCommand = false;
  /** Why a reload ended the session while a command ran (#endAfterCommand): the 421 after its answer says so. */
  #endedByReload: string | null = null;
  /**
   * Set while the command under way waits on neither upstream nor the agent's next line (the STARTTLS handshake,
   * the failed-login delay): `shutdown` calls it to end that wait at once.
   */
  #endWait: (() => void) | null = null;
  /** Aborted past the shutdown grace (stopCommand): the upstream connection in use, or being opened, is dropped. */
  readonly #stopped = new AbortController();
  /**
   * Aborted when a reload ends the session while a command runs: a message whose final dot has not gone upstream is
   * withdrawn (its connection dropped, so the server discards it, RFC 5321 §4.1.1.4); one past its dot is answered.
   */
  readonly #withdrawn = new AbortController();
  #out: string[] = [];

  #greeted = false;
  #identity: Identity | null = null;
  #authFailures = 0;
  #auth: { mechanism: Mechanism; username: string | null } | null = null;
  /** The pass-through AUTH upstream is checking, and whether it was counted as a failure when its agent left. */
  #authCheck: {
    readonly username: string;
    counted: boolean;
    /** Cuts the check (more than MAX_ABANDONED_LOGIN_CHECKS); `why` says so in its row. */
    readonly cut: AbortController;
    why: string | null;
  } | null = null;
  #commands = 0;
  /** Refusal rows written before login, against MAX_REFUSED_BEFORE_LOGIN. */
  #refusedBeforeLogin = 0;
  #tx: Transaction | null = null;

  #data: DataReader | null = null;
  #inspector: MessageInspector | null = null;
  #spool: Spool;
  #messageBytes = 0;
  #lastCollect = 0;
  #tooBig = false;

  #upstream: UpstreamSession | null = null;
  /** Set from DATA until the replay takes it (or, if it failed, until the next DATA starts over). */
  #opening: Opening | null = null;
  #idleTimer: ReturnType<typeof setTimeout> | null = null;
  #lastActivity = 0;
  readonly #connectedAt = performance.now();
  /** Gives back this session's place under `max_sessions_per_agent`; set at AUTH. */
  #releasePlace: (() => void) | null = null;
  /** The connection closed while a command was running; release resources when it ends. */
  #cleanupPending = false;
  /** The agent's token hash at login (vault mode), to tell after a reload whether the session may go on. */
  #tokenHash: string | null = null;
  readonly #connectedAtMs = Date.now();
  #loginResult: "ok" | "failed" | "none" = "none";
  #endReason = CLIENT_CLOSED;
  #accessLogged = false;

  constructor(ctx: SessionContext, conn: Connection) {
    this.#ctx = ctx;
    this.#conn = conn;
    this.#framer = new LineFramer(ctx.limits.maxCommandLine);
    this.#spool = new Spool(ctx.spoolDir);
  }

  start(): void {
    this.#ctx.sessions.add(this);
    this.#conn.onClose(() => this.#cleanup());
    this.#conn.onData(this.#onData);
    this.#conn.write(`220 ${this.#ctx.hostname} ESMTP Mailgator\r\n`);
    this.#touch();
  }

  /**
   * After a reload: a session whose agent was removed, whose token, account, account credentials or upstream
   * changed, whose address the agent's `allowed_ips` no longer hold, or that logged in pass-through while the
   * config is now in vault mode, ends with `421 4.3.2` (RFC 5321 §3.8); returns true then. Others take the new
   * rules and identities at their next command, and the timeouts of the new `[limits]` at once: a lowered
   * `login_timeout` or `idle_timeout` ends a session that has waited longer, not only once the timer set under the
   * old one fires.
   */
  reloaded(): boolean {
    if (this.#judgeReload()) return true;
    if (this.#idleTimer !== null && !this.#closing) {
      clearTimeout(this.#idleTimer);
      this.#idleTimer = setTimeout(this.#onIdle, Math.max(this.#untilLimit(), 10));
    }
    return false;
  }

  /** `reloaded` without the timer: whether the config in force ends this session (a login judged as it ends). */
  #judgeReload(): boolean {
    const identity = this.#identity;
    if (identity === null || this.#closing || this.#endedByReload !== null) return false;
    const login: SessionLogin =
      identity.mode === "pass-through"
        ? { agent: null }
        : {
            agent: identity.agent,
            tokenHash: this.#tokenHash ?? "",
            account: identity.account.name,
            username: identity.account.username,
            loginKey: accountLoginKey(identity.account),
          };
    const upstreamChanged = this.#upstreamAtLogin !== null && !sameUpstream(this.#upstreamAtLogin, this.#ctx.upstream);
    const why = reloadEndReason(this.#ctx.config, login, this.#conn.remoteAddress, upstreamChanged);
    if (why === null) return false;
    this.#endByReload(why);
    return true;
  }

  /**
   * A command under way (a message being relayed, a login the upstream is checking) gets its own answer first and
   * the 421 after it, as at shutdown: a 421 before the upstream's answer to a final dot would have the agent send
   * again a message that may have been delivered (docs/reliability.md "Shutdown"). A message whose final dot has not
   * gone upstream is not sent (#replay withdraws it), nor held (#holdPlaced): the new config ended the session
   * (docs/operations.md "Reload").
   */
  #endByReload(why: string): void {
    moduleLogger("smtp").info(`session ${this.id}: ended by reload: ${why}`);
    this.#endReason = `reload: ${why}`;
    if (this.#running) {
      this.#endedByReload = why;
      this.#endAfterCommand = true;
      this.#endWait?.();
      this.#withdrawn.abort();
      return;
    }
    this.#send(SmtpSession.#reloadEnd);
    this.#close();
    if (!this.#running) this.#releaseUpstream();
  }

  static readonly #reloadEnd = reply(421, "4.3.2", "Configuration changed; this session ends, log in again");

  /**
   * The session has ended, or a reload ended it while the command under way ran: what that command has not done yet
   * (sending a message upstream, holding it) is not done.
   */
  get #ending(): boolean {
    return this.#closing || this.#endedByReload !== null;
  }

  /** `reloaded` threw (a bug): the session ends as a reload ends one. */
  endUnreloaded(why: string): void {
    if (this.#closing || this.#endedByReload !== null) return;
    moduleLogger("smtp").error(`session ${this.id}: could not take the new config: ${why}`);
    this.#endByReload(`the new config could not be applied to it (${why})`);
  }

  /** The upstream in force at the login (pass-through: the one its kept connection was opened to). */
  #upstreamAtLogin: UpstreamTarget | null = null;

  /**
   * Ends the session from outside (proxy shutdown). A command under way (a message being relayed, a login) gets its
   * own answer first, then the 421: a 421 before the upstream's answer to a final dot would tell the agent to send
   * again a message that may have been delivered (docs/reliability.md "Shutdown").
   */
  shutdown(): void {
    // A reload that ended the session while its command ran keeps its reason and its 421; so does a session that
    // had ended already (its agent gone while a login was checked upstream).
    if (this.#endedByReload === null && !this.#closing) this.#endReason = SHUTTING_DOWN;
    if (this.#running) {
      this.#endAfterCommand = true;
      this.#endWait?.();
      return;
    }
    this.#send(reply(421, "4.3.2", "Mailgator is shutting down"));
    this.#close();
    // The upstream connection ends now, not when the agent hangs up.
    this.#releaseUpstream();
  }

  /**
   * Past the shutdown grace: a command still under way has its upstream connection dropped, or the one being opened
   * for it (a send is then recorded as failed, saying whether the upstream may have it: SendStopped). Resolves once
   * the session's input loop has ended; at once when nothing runs.
   */
  stopCommand(): Promise<void> {
    if (!this.#running) return Promise.resolve();
    this.#stopped.abort();
    return this.#runDone;
  }

  // ---- input ----

  #onData = (chunk: Buffer): void => {
    this.#queue.push(chunk);
    this.#queuedBytes += chunk.length;
    if (this.#queuedBytes > MAX_QUEUED_INPUT) this.#conn.pause();
    this.#touch();
    if (!this.#running) this.#runDone = this.#run();
  };

  async #run(): Promise<void> {
    this.#running = true;
    try {
      while (this.#queue.length > 0 && !this.#closing && !this.#endAfterCommand) {
        const chunk = this.#queue[0]!;
        const at = this.#queueOffset;
        if (this.#data !== null) {
          const result = this.#data.feed(chunk, at);
          if (result.kind === "more") {
            this.#consume(chunk.length);
          } else if (result.kind === "end") {
            this.#consume(result.next);
            this.#data = null;
            await this.#endData();
          } else {
            this.#send(
              reply(521, "5.5.2", "Bare CR or LF in the message (RFC 5321 §2.3.8); nothing was sent; closing"),
            );
            this.#audit({
              command: "DATA",
              operation: "mail:send",
              target: null,
              decision: "deny",
              reason: "bare CR or LF in DATA (smuggling defence); connection closed",
            });
            this.#close();
          }
          continue;
        }
        const step = this.#framer.next(chunk, at);
        if (step === null) {
          this.#consume(chunk.length);
          continue;
        }
        this.#consume(step.end);
        const event = step.event;
        if (event.kind === "bare-newline") {
          this.#refused("(command)", null, "bare CR or LF in a command line; connection closed");
          this.#send(reply(521, "5.5.2", "Bare CR or LF in a command (RFC 5321 §2.3.8); closing"));
          this.#close();
        } else if (event.kind === "too-long") {
          // An AUTH response too long to read ends the exchange (RFC 4954 §4): the next line is a command again.
          this.#auth = null;
          this.#countCommand();
          this.#unreadDuringTransaction("(a line too long)");
          this.#refused("(command)", null, `command line longer than ${this.#ctx.limits.maxCommandLine} octets`);
          this.#send(reply(500, "5.5.2", `Line too long (limit ${this.#ctx.limits.maxCommandLine} octets)`));
          this.#tooManyRefused();
        } else {
          // The audit log is far behind (sessions flooding it with refused commands' rows): this command waits until
          // it has caught up, as on the IMAP listener (docs/reliability.md "Output back-pressure").
          if (this.#ctx.audit.queued > AUDIT_BACKLOG_PAUSE_ROWS) {
            await waitForAuditBacklog(this.#ctx.audit);
            // Shutdown or a reload that ends the session came during the wait: this command has not started, so
            // it does not run; the 421 (below) is its answer.
            if (this.#closing || this.#endAfterCommand) break;
          }
          const pending = this.#line(event.line.toString("latin1"));
          if (pending !== undefined) await pending;
          this.#tooManyRefused();
        }
      }
    } catch (e) {
      moduleLogger("smtp").error(`session ${this.id}: ${(e as Error).message}`, e);
      this.#send(reply(421, "4.3.0", "Internal error; closing"));
      this.#close();
    } finally {
      if (this.#endAfterCommand && !this.#closing) {
        // The command under way at shutdown, or at a reload that ended the session, has its answer (above); nothing
        // after it runs.
        this.#send(
          this.#endedByReload !== null ? SmtpSession.#reloadEnd : reply(421, "4.3.2", "Mailgator is shutting down"),
        );
        this.#close();
      }
      this.#flush();
      this.#running = false;
      // The agent's idle time starts when it has our last reply.
      this.#lastActivity = performance.now();
      if (this.#cleanupPending) this.#release();
      else if (this.#closing) this.#releaseUpstream();
      if (this.#queuedBytes <= MAX_QUEUED_INPUT / 2) this.#conn.resume();
    }
  }

  /** Marks input up to `end` of the first queued chunk as consumed. */
  #consume(end: number): void {
    const chunk = this.#queue[0]!;
    if (end >= chunk.length) {
      this.#queue.shift();
      this.#queueOffset = 0;
      this.#queuedBytes -= chunk.length;
    } else {
      this.#queueOffset = end;
    }
    if (this.#queuedBytes <= MAX_QUEUED_INPUT / 2) this.#conn.resume();
  }

  /** Drops every buffered byte (after STARTTLS: RFC 3207 §4.2 forbids acting on pre-TLS input). */
  #discardInput(): void {
    this.#queue.length = 0;
    this.#queueOffset = 0;
    this.#queuedBytes = 0;
    this.#framer.clear();
  }

  /**
   * Closes with `421 4.7.0` once MAX_REFUSED_BEFORE_LOGIN commands were refused before login, after the last one's
   * reply: each wrote a row, and nothing else paces them (docs/smtp.md "Limits").
   */
  #tooManyRefused(): void {
    if (this.#refusedBeforeLogin < MAX_REFUSED_BEFORE_LOGIN || this.#closing) return;
    this.#send(
      reply(421, "4.7.0", `Too many refused commands before login (limit ${MAX_REFUSED_BEFORE_LOGIN}); closing`),
    );
    this.#close();
  }

  #countCommand(): boolean {
    if (++this.#commands > this.#ctx.limits.maxCommandsPerSession) {
      this.#send(
        reply(
          421,
          "4.7.0",
          `Too many commands in one session (limit ${this.#ctx.limits.maxCommandsPerSession}); closing`,
        ),
      );
      this.#close();
      return false;
    }
    return true;
  }

  // ---- output ----

  #send(text: string): void {
    this.#out.push(text);
  }

  #flush(): void {
    if (this.#out.length === 0) return;
    this.#conn.write(this.#out.length === 1 ? this.#out[0]! : this.#out.join(""));
    this.#out = [];
  }

  #close(): void {
    if (this.#closing) return;
    this.#closing = true;
    this.#flush();
    this.#conn.end();
  }

  /**
   * The connection is gone. A replay in progress is left to finish first (the approved message may still be
   * delivered; the agent just never sees the reply): closing the spool under it could let its file descriptor be
   * reused by another session's spool while the replay still reads from it.
   */
  #cleanup(): void {
    this.#closing = true;
    // A pass-through AUTH under way upstream: counted as a failed login now, whatever upstream answers (#finishAuth).
    const check = this.#authCheck;
    if (check !== null && !check.counted) {
      check.counted = true;
      this.#countFailure(check.username);
      // The check goes on without its agent (its verdict is the login's row), within MAX_ABANDONED_LOGIN_CHECKS.
      this.#ctx.abandonedLogins.add(this);
      if (this.#ctx.abandonedLogins.size > MAX_ABANDONED_LOGIN_CHECKS) {
        check.why =
          `more than MAX_ABANDONED_LOGIN_CHECKS (${MAX_ABANDONED_LOGIN_CHECKS}) logins were being checked after ` +
          "their agents left";
        check.cut.abort();
      }
    }
    if (this.#idleTimer !== null) clearTimeout(this.#idleTimer);
    this.#idleTimer = null;
    if (this.#running) {
      this.#cleanupPending = true;
      return;
    }
    this.#release();
  }

  #release(): void {
    this.#cleanupPending = false;
    if (!this.#accessLogged) {
      this.#accessLogged = true;
      const identity = this.#identity;
      logAccess({
        protocol: "smtp",
        session: this.id,
        client: this.#conn.remoteAddress,
        clientPort: this.#conn.remotePort,
        connectedAt: this.#connectedAtMs,
        login: this.#loginResult,
        agent: identity?.mode === "vault" ? identity.agent : null,
        user: identity === null ? null : identity.mode === "vault" ? identity.account.username : identity.user,
        commands: this.#commands,
        bytesIn: this.#conn.bytesIn,
        bytesOut: this.#conn.bytesOut,
        end: this.#endReason,
      });
    }
    this.#ctx.sessions.delete(this);
    this.#releasePlace?.();
    this.#releasePlace = null;
    this.#spool.close();
    this.#releaseUpstream();
  }

  /**
   * Quits the upstream connection and the one being opened, if any: the session sends nothing more. One still being
   * opened (an upstream slow to answer, or one that never does) gets UPSTREAM_OPENING_WAIT_MS to finish, so that it is
   * quit rather than cut in the middle of its login; past it, it is dropped at whatever step it is.
   */
  #releaseUpstream(): void {
    const upstream = this.#upstream;
    this.#upstream = null;
    void upstream?.quit().catch(() => {});
    const opening = this.#opening;
    this.#opening = null;
    if (opening === null) return;
    const cut = setTimeout(() => opening.cancel.abort(), this.#ctx.limits.upstreamOpeningWaitMs);
    cut.unref();
    opening.promise
      .then(
        (late) => {
          clearTimeout(cut);
          return late.quit();
        },
        () => clearTimeout(cut),
      )
      .catch(() => {});
  }

  /** Notes activity; the idle timer checks the time of the last activity instead of being re-armed per chunk. */
  #touch(): void {
    this.#lastActivity = performance.now();
    if (this.#idleTimer === null && !this.#closing) this.#idleTimer = setTimeout(this.#onIdle, this.#untilLimit());
  }

  /**
   * Time until the nearest time limit, if nothing happens meanwhile: the idle timeout (which does not run while a
   * command runs: the agent is waiting for us) and, before AUTH, the login timeout counted from the connection.
   */
  #untilLimit(): number {
    const { idleTimeoutMs, loginTimeoutMs } = this.#ctx.limits;
    const now = performance.now();
    let left = this.#running ? idleTimeoutMs : idleTimeoutMs - (now - this.#lastActivity);
    if (this.#identity === null) left = Math.min(left, loginTimeoutMs - (now - this.#connectedAt));
    return left;
  }

  #onIdle = (): void => {
    this.#idleTimer = null;
    if (this.#closing) return;
    const { idleTimeoutMs, loginTimeoutMs } = this.#ctx.limits;
    const now = performance.now();
    if (this.#identity === null && now - this.#connectedAt >= loginTimeoutMs) {
      this.#endReason = "login timeout";
      this.#send(reply(421, "4.4.2", `No login within ${Math.round(loginTimeoutMs / 1000)} s; closing`));
      this.#close();
      return;
    }
    if (!this.#running && now - this.#lastActivity >= idleTimeoutMs) {
      this.#endReason = "idle timeout";
      this.#send(reply(421, "4.4.2", `Idle for ${Math.round(idleTimeoutMs / 1000)} s; closing`));
      this.#close();
      return;
    }
    this.#idleTimer = setTimeout(this.#onIdle, Math.max(this.#untilLimit(), 10));
  };

  // ---- audit ----

  get #auditAgent(): string | null {
    const id = this.#identity;
    if (id === null) return null;
    return id.mode === "vault" ? id.agent : id.user;
  }

  /**
   * Who the quotas count (docs/quotas.md "Who is counted"): the agent by its name, or the pass-through login
   * without case, so that a login typed in another case shares its windows and its `agents` entries.
   */
  get #quotaSubject(): QuotaSubject {
    const id = this.#identity;
    if (id === null) return null;
    return id.mode === "vault" ? quotaSubject(id.agent, null) : quotaSubject(null, id.user);
  }

  /**
   * The reverse paths this session may use besides `<>`, lower-cased (docs/smtp.md "Identities"), from the config
   * in force: a reload that removes an identity takes it from sessions already logged in, at their next MAIL FROM
   * and at the end of DATA of a transaction under way, as it does with the rules.
   */
  get #senders(): ReadonlySet<string> {
    const id = this.#identity;
    if (id === null) return new Set();
    const config = this.#ctx.config;
    if (id.mode === "pass-through") return sessionIdentities(id.user, config.smtp?.identities ?? []);
    const account = ownEntry(config.accounts, id.account.name);
    // An account gone or renamed upstream ends the session at the reload (`reloaded`); meanwhile it has none.
    if (account === undefined || account.username !== id.account.username) return new Set();
    return sessionIdentities(account.username, account.identities);
  }

  /** The audit fields of a reverse path refused as not one of `senders` (the session's identities). */
  static #notIdentity(senders: ReadonlySet<string>, when: string): Pick<AuditEvent, "decision" | "reason" | "rule"> {
    const known = [...senders].join(", ");
    const reason = `sender is not one of this account's identities${when} (${known === "" ? NO_IDENTITIES : known})`;
    return { decision: "deny", rule: null, reason: cutText(reason, MAX_ROW_REASON) };
  }

  /** The agent as the policy sees it: a name in vault mode, null in pass-through mode. */
  get #policyAgent(): string | null {
    return this.#identity?.mode === "vault" ? this.#identity.agent : null;
  }

  #event(fields: Partial<AuditEvent> & Pick<AuditEvent, "command" | "decision" | "reason">): AuditEvent {
    return {
      session: this.id,
      agent: this.#auditAgent,
      clientAddr: this.#conn.remoteAddress,
      protocol: "smtp",
      operation: null,
      folder: null,
      target: null,
      rule: null,
      ruleIndex: null,
      configRevision: this.#ctx.config.revision,
      ...fields,
    };
  }

  #audit(fields: Partial<AuditEvent> & Pick<AuditEvent, "command" | "decision" | "reason">): void {
    try {
      this.#ctx.audit.record(this.#event(fields));
    } catch (e) {
      moduleLogger("smtp").error(`audit log unavailable: ${(e as Error).message}`);
    }
  }

  /**
   * The row of a command refused before any rule was asked (docs/audit.md: every refusal has a row): a command not
   * offered or not known, a line that is not a command, a MAIL or RCPT whose syntax, parameters or limits refuse
   * it. `target` is an address or argument as the agent wrote it, cut; never a whole line, which could be a secret
   * sent out of turn (an AUTH response after a refused AUTH).
   */
  #refused(command: string, target: string | null, reason: string, send = false): void {
    if (this.#identity === null) this.#refusedBeforeLogin++;
    this.#audit({
      command,
      operation: send ? "mail:send" : null,
      target: target === null ? null : target.slice(0, MAX_REFUSED_TARGET),
      decision: "deny",
      reason,
    });
  }

  // ---- commands ----

  /** Handles one line; returns a promise only when the command waits on something. */
  #line(line: string): Promise<void> | undefined {
    if (this.#auth !== null) return this.#authStep(line);
    if (!this.#countCommand()) return undefined;
    const space = line.indexOf(" ");
    const verb = (space === -1 ? line : line.slice(0, space)).toUpperCase();
    const args = space === -1 ? "" : line.slice(space + 1);
    if (NOT_OFFERED.has(verb)) {
      this.#refused(verb, null, `${verb} is not offered`);
      this.#send(reply(502, "5.5.1", `${verb} is not offered by Mailgator`));
      return undefined;
    }
    const known = verb === "MAIL" || verb === "RCPT" || verb === "DATA" || BEFORE_AUTH.has(verb);
    if (!known) {
      this.#unreadDuringTransaction(`(an unrecognized command of ${line.length} characters)`);
      this.#refused("(command)", null, `unrecognized command (${line.length} characters)`);
      this.#send(reply(500, "5.5.2", "Command unrecognized"));
      return undefined;
    }
    if (!BEFORE_AUTH.has(verb) && this.#identity === null) {
      this.#refused(verb === "MAIL" ? "MAIL FROM" : verb === "RCPT" ? "RCPT TO" : verb, null, "not logged in");
      this.#send(reply(530, "5.7.0", "Authentication required"));
      return undefined;
    }
    switch (verb) {
      case "EHLO":
      case "HELO":
        return this.#helo(verb, args);
      case "STARTTLS":
        return this.#startTls(args);
      case "AUTH":
        return this.#authStart(args);
      case "NOOP":
        this.#send(reply(250, "2.0.0", "OK"));
        return undefined;
      case "RSET":
        if (args !== "") return this.#noParameters(verb, args);
        this.#resetTransaction();
        this.#send(reply(250, "2.0.0", "OK"));
        return undefined;
      case "QUIT":
        if (args !== "") return this.#noParameters(verb, args);
        this.#endReason = "quit";
        this.#send(reply(221, "2.0.0", "Bye"));
        this.#close();
        return undefined;
      case "MAIL":
        return this.#mail(args);
      case "RCPT":
        return this.#rcpt(args);
      case "DATA":
        return this.#dataCommand(args);
    }
    return undefined;
  }

  /**
   * RSET and QUIT take no parameter (RFC 5321 §4.1.1.5, §4.1.1.10); only NOOP's string is ignored (§4.1.1.9). A
   * refusal, so a row (docs/audit.md); the parameter is not written into it, only its length, as for a line that is
   * no command.
   */
  #noParameters(verb: string, args: string): undefined {
    this.#refused(verb, null, `${verb} takes no parameters (one given, length ${args.length})`);
    this.#send(reply(501, "5.5.4", `Syntax: ${verb} (no parameters)`));
    return undefined;
  }

  #resetTransaction(): void {
    this.#tx = null;
  }

  #helo(verb: "EHLO" | "HELO", args: string): undefined {
    if (!/^[\x21-\x7e]+$/.test(args.trim())) {
      this.#send(reply(501, "5.5.4", `Syntax: ${verb} hostname`));
      return undefined;
    }
    // A repeated EHLO resets the transaction (RFC 5321 §4.1.4).
    this.#resetTransaction();
    this.#greeted = true;
    const host = this.#ctx.hostname;
    if (verb === "HELO") {
      this.#send(`250 ${host}\r\n`);
      return undefined;
    }
    const lines = [
      `${host} greets ${clean(args.trim()).slice(0, MAX_EHLO_ECHO)}`,
      "PIPELINING",
      `SIZE ${this.#ctx.limits.maxMessageBytes}`,
      "8BITMIME",
      "ENHANCEDSTATUSCODES",
    ];
    if (this.#needsTls()) lines.push("STARTTLS");
    else if (this.#identity === null) lines.push("AUTH PLAIN LOGIN");
    this.#send(formatReply(250, lines));
    return undefined;
  }

  /** True while the listener requires STARTTLS before AUTH and it has not happened yet. */
  #needsTls(): boolean {
    return this.#ctx.config.smtp!.listenTls === "starttls" && !this.#conn.secure;
  }

  #startTls(args: string): Promise<void> | undefined {
    if (!this.#needsTls()) {
      // Already active is out of order (503, no row, as other 503s); not offered is a refusal with its row.
      if (!this.#conn.secure) this.#refused("STARTTLS", null, "STARTTLS is not offered");
      this.#send(
        this.#conn.secure
          ? reply(503, "5.5.1", "TLS is already active")
          : reply(502, "5.5.1", "STARTTLS is not offered"),
      );
      return undefined;
    }
    if (args !== "") {
      this.#refused("STARTTLS", null, `STARTTLS takes no parameters (one given, length ${args.length})`);
      this.#send(reply(501, "5.5.4", "Syntax: STARTTLS takes no parameters"));
      return undefined;
    }
    this.#send(reply(220, "2.0.0", "Ready to start TLS"));
    this.#flush();
    this.#discardInput();
    return (async () => {
      // A handshake under way when the proxy stops is cut (no 421 can go out in the middle of it).
      this.#endWait = () => this.#conn.destroy();
      try {
        await this.#conn.startTlsServer(this.#ctx.identity!.key, this.#ctx.identity!.cert, TLS_HANDSHAKE_TIMEOUT_MS);
      } catch (e) {
        // The access line names the handshake (timed out, refused, cut), unless shutdown or a reload cut it and said
        // so.
        if (this.#endReason === CLIENT_CLOSED) this.#endReason = `TLS handshake failed: ${errorMessage(e)}`;
        this.#close();
        return;
      } finally {
        this.#endWait = null;
      }
      // RFC 3207 §4.2: forget everything learned before TLS; the client must EHLO again.
      this.#discardInput();
      this.#greeted = false;
      this.#resetTransaction();
    })();
  }

  // ---- AUTH ----

  #authStart(args: string): Promise<void> | undefined {
    if (!this.#greeted) {
      this.#send(reply(503, "5.5.1", "Send EHLO first"));
      return undefined;
    }
    if (this.#needsTls()) {
      // A refusal, so a row (docs/audit.md); one with an initial response had a credential cross the wire in clear,
      // which the owner should hear of (never what it was).
      const inClear = args.trim().includes(" ") ? "; it carried a credential in clear" : "";
      this.#refused("AUTH", null, `AUTH before STARTTLS, which this listener requires${inClear}`);
      this.#send(reply(530, "5.7.0", "Must issue a STARTTLS command first"));
      return undefined;
    }
    if (this.#identity !== null) {
      this.#send(reply(503, "5.5.1", "Already authenticated"));
      return undefined;
    }
    const [mechanismText = "", initial, extra] = args.split(" ");
    const mechanism = mechanismText.toUpperCase();
    if (mechanism !== "PLAIN" && mechanism !== "LOGIN") {
      this.#send(reply(504, "5.5.4", "Unrecognized authentication type (PLAIN and LOGIN are offered)"));
      return undefined;
    }
    // RFC 4954 §4: `AUTH mechanism [SP initial-response]`, an empty response written `=`: a trailing space, an empty
    // response or more words is a syntax error.
    if (extra !== undefined || initial === "") {
      this.#send(reply(501, "5.5.2", "Syntax: AUTH mechanism [initial-response]"));
      return undefined;
    }
    if (mechanism === "PLAIN") {
      if (initial === undefined) {
        this.#auth = { mechanism, username: null };
        this.#send("334 \r\n");
        return undefined;
      }
      return this.#finishAuth(decodePlain(initial));
    }
    if (initial === undefined) {
      this.#auth = { mechanism: "LOGIN", username: null };
      this.#send("334 VXNlcm5hbWU6\r\n");
      return undefined;
    }
    const username = decodeLoginStep(initial);
    if (username === null) return this.#finishAuth(null);
    this.#auth = { mechanism: "LOGIN", username };
    this.#send("334 UGFzc3dvcmQ6\r\n");
    return undefined;
  }

  #authStep(line: string): Promise<void> | undefined {
    const auth = this.#auth!;
    if (line === "*") {
      this.#auth = null;
      this.#send(reply(501, "5.0.0", "Authentication cancelled"));
      return undefined;
    }
    if (auth.mechanism === "PLAIN") {
      this.#auth = null;
      return this.#finishAuth(decodePlain(line));
    }
    const value = decodeLoginStep(line);
    if (value === null) {
      this.#auth = null;
      return this.#finishAuth(null);
    }
    if (auth.username === null) {
      this.#auth = { mechanism: "LOGIN", username: value };
      this.#send("334 UGFzc3dvcmQ6\r\n");
      return undefined;
    }
    this.#auth = null;
    return this.#finishAuth({ username: auth.username, password: value });
  }

  async #finishAuth(attempt: LoginAttempt | null): Promise<void> {
    if (attempt === null) {
      this.#send(reply(501, "5.5.2", "Malformed authentication response"));
      return;
    }
    // Locked out: refused before the credentials are checked, a correct login included (src/net/lockout.ts).
    const lock = this.#ctx.lockout.locked(
      this.#conn.remoteAddress,
      lockoutName(this.#ctx.config.agents, attempt.username),
    );
    if (lock !== null) return this.#authLocked(attempt.username, lockedReason(lock), lock);
    const overlong = overlongCredentials(attempt.username, attempt.password);
    if (overlong !== null) return this.#authFailed(attempt.username, overlong);
    // Asking to act as someone else (in vault mode, another agent): a failed login, checked before the credentials,
    // as IMAP's AUTHENTICATE does (RFC 4954 §6 535: the exchange failed; it was well formed).
    if (attempt.otherAuthzid) return this.#authFailed(attempt.username, "a different authorization identity (authzid)");
    // The upstream in force now: the one a connection kept for sending is opened to, and the one a reload compares.
    const { config, upstream: upstreamTarget } = this.#ctx;
    if (config.agents.length > 0) {
      const result = checkAgentLogin(config.agents, attempt.username, attempt.password, this.#conn.remoteAddress);
      if (!result.ok) return this.#authFailed(attempt.username, result.reason);
      const account = ownEntry(config.accounts, result.agent.account);
      if (account === undefined)
        return this.#authFailed(attempt.username, `agent's account ${result.agent.account} is not configured`);
      if (!this.#takePlace(SessionCounter.key(result.agent.name, account.username), attempt.username, true)) return;
      if (account.auth === "oauth2") {
        // The token is tried at AUTH (docs/smtp.md "OAuth2 accounts"): an account that needs its owner, or a token
        // endpoint that is down, is a 454 now rather than a surprise after DATA. The connection is kept for sending.
        this.#flush();
        try {
          const opened = await this.#openAccount(this.#ctx.upstream, account, this.#stopped.signal);
          if (this.#closing) {
            // The agent left, or the proxy is stopping, while upstream checked the login.
            void opened.quit().catch(() => {});
            return this.#acceptedUnserved(attempt.username);
          }
          this.#upstream = opened;
        } catch (e) {
          // The place taken above is given back: this login did not happen.
          this.#releasePlace?.();
          this.#releasePlace = null;
          this.#audit({
            command: "AUTH",
            target: attempt.username,
            decision: "error",
            reason: `upstream login failed: ${(e as Error).message}`,
          });
          this.#send(
            e instanceof AccountNeedsReauthorization
              ? reply(
                  454,
                  "4.7.0",
                  `Account ${e.account} needs re-authorization by its owner (mailgator account login ${e.account})`,
                )
              : reply(454, "4.7.0", "Upstream login temporarily unavailable; try again later"),
          );
          return;
        }
      }
      this.#identity = { mode: "vault", agent: result.agent.name, account };
      this.#tokenHash = result.agent.tokenHash;
    } else {
      // Pass-through: the upstream judges the credentials (docs/config.md "Who connects"); the connection is kept
      // for sending.
      this.#flush();
      const credentials: Credentials = { username: attempt.username, password: attempt.password };
      // The agent may leave while upstream checks: upstream's answer is the verdict all the same (its row, its log
      // line: docs/audit.md "What a row records"), and the login is counted as a failure toward the lock-out at the
      // hang-up, taken back if upstream accepts it (#cleanup): a hang-up frees the agent's connection, and guesses
      // abandoned one after another would otherwise all be under way upstream, past `max_connections_per_ip`, before
      // the first answer counted one (docs/config.md "Who connects").
      const check = { username: attempt.username, counted: false, cut: new AbortController(), why: null };
      this.#authCheck = check;
      let opened: UpstreamSession;
      try {
        opened = await UpstreamSession.open(
          upstreamTarget,
          credentials,
          AbortSignal.any([this.#stopped.signal, check.cut.signal]),
        );
      } catch (e) {
        this.#authCheck = null;
        this.#ctx.abandonedLogins.delete(this);
        const left = this.#closing ? `; ${this.#unanswered()}` : "";
        if (e instanceof UpstreamAuthError)
          return this.#authFailed(
            attempt.username,
            `upstream refused the login (${e.reply.code})${left}`,
            check.counted,
          );
        const message = this.#stopped.signal.aborted ? SHUTTING_DOWN : (check.why ?? (e as Error).message);
        // No answer after the agent left (the proxy stopping cut it, upstream failed): fail closed, a refusal.
        if (this.#closing)
          return this.#authFailed(
            attempt.username,
            `${this.#unanswered()}, and then the check failed (${message}): not known, counted as refused`,
            check.counted,
          );
        this.#audit({
          command: "AUTH",
          target: cutText(recordedLoginName(attempt.username), MAX_ROW_LOGIN_NAME),
          decision: "error",
          reason: `upstream unavailable: ${message}`,
        });
        this.#send(reply(454, "4.7.0", `Temporary authentication failure: ${message}`));
        return;
      }
      this.#authCheck = null;
      this.#ctx.abandonedLogins.delete(this);
      if (this.#closing) {
        // The agent left, or the proxy is stopping, while upstream checked the login: nothing to keep it for.
        void opened.quit().catch(() => {});
        return this.#acceptedUnserved(attempt.username, check.counted);
      }
      // Counted once the upstream has accepted the login: per upstream login name.
      if (!this.#takePlace(SessionCounter.key(null, attempt.username), attempt.username, false)) {
        void opened.quit().catch(() => {});
        return;
      }
      this.#upstream = opened;
      this.#identity = { mode: "pass-through", user: attempt.username, credentials };
    }
    this.#upstreamAtLogin = upstreamTarget;
    // A reload while the login was checked upstream (the awaits above) did not judge this session, which was not
    // logged in yet: it is judged now against the config in force, before the 235, as the IMAP login does.
    if (this.#judgeReload()) return;
    this.#loginResult = "ok";
    this.#audit({ command: "AUTH", target: attempt.username, decision: "allow", reason: "login accepted" });
    this.#send(reply(235, "2.7.0", "Authentication successful"));
  }

  /** Why a login was left without its answer: how its session ended (docs/audit.md "What a row records"). */
  #unanswered(): string {
    return `the session ended before upstream answered (${this.#endReason})`;
  }

  /** The row of a login upstream accepted after the session had ended: allowed, never served. */
  #acceptedUnserved(username: string, counted = false): void {
    // Counted as a failure at the hang-up, before the verdict (#cleanup): upstream accepted it, so it is taken back,
    // as a client that knows its password and hangs up is no guesser (docs/config.md "Who connects").
    if (counted) {
      this.#ctx.throttle.withdraw(this.#conn.remoteAddress);
      this.#ctx.lockout.withdraw(this.#conn.remoteAddress, lockoutName(this.#ctx.config.agents, username));
    }
    this.#audit({
      command: "AUTH",
      target: cutText(username, MAX_ROW_LOGIN_NAME),
      decision: "allow",
      reason: `login accepted upstream, not served: ${this.#unanswered()}`,
    });
  }

  /**
   * Takes the session's place under `max_sessions_per_agent`. Over it: a `deny` row, `421 4.7.0` and the
   * connection closes; returns false.
   */
  #takePlace(key: string, username: string, vault: boolean): boolean {
    const place = this.#closing ? null : this.#ctx.perAgent.acquire(key);
    if (place !== null) {
      this.#releasePlace = place;
      return true;
    }
    if (this.#closing) return false;
    countLimitRefusal("smtp", "max_sessions_per_agent");
    const limit = this.#ctx.perAgent.limit;
    this.#audit({
      command: "AUTH",
      target: cutText(username, MAX_ROW_LOGIN_NAME),
      decision: "deny",
      reason: `login refused: max_sessions_per_agent (${limit}) reached`,
      detail: { limit: "max_sessions_per_agent", value: limit },
    });
    this.#send(
      reply(421, "4.7.0", `Too many sessions for this ${vault ? "agent" : "login"} (limit ${limit}); closing`),
    );
    this.#close();
    return false;
  }

  /** A failed login (not counted again when `counted`: `#cleanup`), then `535 5.7.8` after the failed-login delay. */
  async #authFailed(given: string, reason: string, counted = false): Promise<void> {
    const address = this.#conn.remoteAddress;
    // A token given as the name is never recorded (docs/audit.md "What is never in it").
    const username = this.#recordedName(given);
    if (this.#loginResult === "none") this.#loginResult = "failed";
    logLoginFailure("smtp", address, username, reason);
    const delay = counted ? 0 : this.#ctx.throttle.fail(address);
    this.#audit({
      command: "AUTH",
      target: cutText(username, MAX_ROW_LOGIN_NAME),
      decision: "deny",
      reason: `login refused: ${reason}`,
      detail: { delayMs: delay },
    });
    if (!counted) this.#countLockout(given);
    this.#flush();
    await this.#failureDelay(delay);
    this.#send(reply(535, "5.7.8", "Authentication credentials invalid"));
    if (++this.#authFailures >= MAX_AUTH_FAILURES_PER_SESSION) {
      this.#send(reply(421, "4.7.0", "Too many failed logins; closing"));
      this.#close();
    }
  }

  /** Counts a failed login toward the failed-login delay and the lock-out, as `#authFailed` does. */
  #countFailure(given: string): void {
    this.#ctx.throttle.fail(this.#conn.remoteAddress);
    this.#countLockout(given);
  }

  /** Counts a failed login toward the lock-out, with the row and log line of a lock it starts. */
  #countLockout(given: string): void {
    const address = this.#conn.remoteAddress;
    const username = this.#recordedName(given);
    for (const lock of this.#ctx.lockout.fail(address, lockoutName(this.#ctx.config.agents, given))) {
      logLockout("smtp", address, username, lock.by, lock.until);
      this.#audit({
        command: "AUTH",
        target: cutText(username, MAX_ROW_LOGIN_NAME),
        decision: "deny",
        reason: lockStartedReason(lock),
        detail: lockDetail(lock),
      });
    }
  }

  /** A failed login's name as its rows and log lines record it: never a token (docs/audit.md "What is never in it"). */
  #recordedName(given: string): string {
    return recordedLoginName(
      given,
      this.#ctx.config.agents.map((a) => a.tokenHash),
    );
  }

  /**
   * A login while its address or name is locked out (docs/config.md "Who connects"): refused before its credentials
   * are checked, with a row but without the failed-login log line (it is not a guess), and after the failed-login
   * delay, `454 4.7.0` (RFC 4954 §6: a temporary authentication failure). It counts toward
   * MAX_AUTH_FAILURES_PER_SESSION, as a failure does.
   */
  async #authLocked(given: string, reason: string, lock: Lock): Promise<void> {
    const username = recordedLoginName(
      given,
      this.#ctx.config.agents.map((a) => a.tokenHash),
    );
    if (this.#loginResult === "none") this.#loginResult = "failed";
    this.#audit({
      command: "AUTH",
      target: cutText(username, MAX_ROW_LOGIN_NAME),
      decision: "deny",
      reason,
      detail: lockDetail(lock),
    });
    this.#flush();
    await this.#failureDelay(this.#ctx.throttle.fail(this.#conn.remoteAddress));
    this.#send(reply(454, "4.7.0", "Too many failed logins; try again later"));
    if (++this.#authFailures >= MAX_AUTH_FAILURES_PER_SESSION) {
      this.#send(reply(421, "4.7.0", "Too many failed logins; closing"));
      this.#close();
    }
  }

  /** The failed-login delay before a refused AUTH's reply. It ends early when the proxy stops: the reply, then 421. */
  async #failureDelay(ms: number): Promise<void> {
    // Nobody to answer: an AUTH whose agent left before upstream refused it waits for nothing.
    if (this.#endAfterCommand || this.#closing) return;
    const wait = failureDelay(ms);
    this.#endWait = wait.end;
    await wait.done;
    this.#endWait = null;
  }

  // ---- transaction ----

  #mail(args: string): undefined {
    // A new MAIL starts over, even if it is refused (RFC 5321 §4.1.1.2, §4.1.4; docs/protocol.md §6 "Transactions").
    this.#resetTransaction();
    if (!/^FROM:/i.test(args)) {
      this.#refused("MAIL FROM", args, "syntax: MAIL FROM:<address>", true);
      this.#send(reply(501, "5.5.4", "Syntax: MAIL FROM:<address>"));
      return undefined;
    }
    const parsed = parsePathArgument(args.slice(5), true, "sender");
    if (!parsed.ok) {
      this.#refused("MAIL FROM", args.slice(5).trim(), parsed.text, true);
      this.#send(reply(parsed.code, parsed.status, parsed.text));
      return undefined;
    }
    const { path } = parsed;
    let eightBit = false;
    for (const [key, value] of path.params) {
      if (key === "SIZE" && value !== null && /^\d{1,20}$/.test(value)) {
        if (Number(value) > this.#ctx.limits.maxMessageBytes) {
          this.#refused("MAIL FROM", path.key, `SIZE=${value} over ${this.#ctx.limits.maxMessageBytes} octets`, true);
          this.#send(reply(552, "5.3.4", `Message too large (limit ${this.#ctx.limits.maxMessageBytes} octets)`));
          return undefined;
        }
      } else if (key === "BODY" && (value?.toUpperCase() === "7BIT" || value?.toUpperCase() === "8BITMIME")) {
        eightBit = value.toUpperCase() === "8BITMIME";
      } else {
        // RET, ENVID, AUTH=, SMTPUTF8, HOLDFOR, BY and anything unknown (docs/protocol.md §6 "Parameters", §7 case 30).
        this.#refused("MAIL FROM", path.key, `MAIL parameter ${key} is not accepted`, true);
        this.#send(reply(555, "5.5.4", `MAIL parameter ${key} is not accepted`));
        return undefined;
      }
    }
    const senders = this.#senders;
    if (senderNotIdentity(senders, path.key)) {
      // Bounces and DSNs go to the reverse path with the message in them (RFC 3461): an address that is not the
      // account's own would receive a copy of what it may not, whatever the rules say about recipients.
      this.#audit({
        command: "MAIL FROM",
        operation: "mail:send",
        target: path.key,
        ...SmtpSession.#notIdentity(senders, ""),
      });
      this.#send(reply(553, "5.7.1", `Sender <${path.address}> is not one of this account's identities`));
      return undefined;
    }
    const senderRevision = this.#ctx.config.revision; // of the same reload as the policy read next
    const outcome = senderOutcome(this.#ctx.policy, this.#policyAgent, path.key);
    const target = path.address === "" ? "<>" : path.key;
    if (senderRefused(outcome)) {
      this.#audit({ command: "MAIL FROM", operation: "mail:send", target, ...decisionFields(outcome.decision) });
      this.#send(reply(553, "5.7.1", `Sender <${path.address}> is not allowed`));
      return undefined;
    }
    this.#tx = {
      sender: path.address,
      senderKey: path.key,
      senderOutcome: outcome,
      senderRevision,
      eightBit,
      recipients: [],
      refusals: [],
      refused: 0,
      firstOfKind: {},
      fewest: null,
    };
    this.#send(reply(250, "2.1.0", "Sender OK"));
    return undefined;
  }

  #rcpt(args: string): undefined {
    const tx = this.#tx;
    if (tx === null) {
      this.#send(reply(503, "5.5.1", "Need MAIL before RCPT"));
      return undefined;
    }
    // Every refusal below is noted on the transaction: DATA is then refused (all or nothing, docs/smtp.md). Those
    // the rules or a quota made have their row already; the others get theirs here.
    const refuse = (
      kind: RefusalKind,
      target: string,
      code: number,
      status: string,
      text: string,
      limit: number | null = null,
      audited = false,
    ): undefined => {
      SmtpSession.#noteRefusal(tx, { kind, target: target.slice(0, MAX_REFUSED_TARGET), text, limit });
      if (!audited) this.#refused("RCPT TO", target, text, true);
      this.#send(reply(code, status, text));
      return undefined;
    };
    if (!/^TO:/i.test(args)) return refuse("argument", args, 501, "5.5.4", "Syntax: RCPT TO:<address>");
    const parsed = parsePathArgument(args.slice(3), false, "recipient");
    if (!parsed.ok) return refuse("argument", args.slice(3).trim(), parsed.code, parsed.status, parsed.text);
    const { path } = parsed;
    const [param] = path.params.keys();
    if (param !== undefined) {
      // NOTIFY and ORCPT (DSN, RFC 3461) would send reports and copies elsewhere; nothing else is defined.
      return refuse("argument", path.address, 555, "5.5.4", `RCPT parameter ${param} is not accepted`);
    }
    const max = this.#ctx.limits.maxRecipients;
    // Counted: the recipients accepted and the RCPTs refused, so that a transaction holds at most `max` of each.
    if (tx.recipients.length + tx.refused >= max) {
      // RFC 5321 §4.5.3.1.10's 452, but the rest cannot follow in another transaction: this one is refused at DATA
      // (docs/smtp.md "All or nothing").
      const text = `Too many recipients (limit ${max}); this message will be refused, send it to at most ${max}`;
      return refuse("count", path.address, 452, "4.5.3", text, max);
    }
    const outcome = recipientOutcome(this.#ctx.policy, this.#policyAgent, tx.senderKey, path.key);
    if (recipientRefused(outcome)) {
      this.#audit({
        command: "RCPT TO",
        operation: "mail:send",
        target: path.key,
        ...decisionFields(outcome.decision),
      });
      return refuse("rules", path.address, 550, "5.7.1", `Recipient <${path.address}> is not allowed`, null, true);
    }
    if (!tx.recipients.some((r) => r.key === path.key)) {
      // recipients_per_message is refused at the RCPT one past it (docs/quotas.md), and with it the message at DATA.
      const over = this.#ctx.quotas.checkRecipients(this.#quotaSubject, tx.recipients.length + 1);
      if (over !== null) {
        this.#audit({
          command: "RCPT TO",
          operation: "mail:send",
          target: path.key,
          decision: "deny",
          reason: describeExceeded(over),
          detail: { quota: over.quota, limit: over.limit, max: over.max },
        });
        const text = `${capitalize(describeExceeded(over))}; recipient not accepted, and this message will be refused`;
        return refuse("count", path.address, 452, "4.7.1", text, over.max, true);
      }
      tx.recipients.push({ address: path.address, key: path.key });
    }
    this.#send(reply(250, "2.1.5", "Recipient OK"));
    return undefined;
  }

  static #noteRefusal(tx: Transaction, refusal: Refusal): void {
    tx.refused++;
    if (tx.refusals.length < MAX_REFUSALS_KEPT) tx.refusals.push(refusal);
    tx.firstOfKind[refusal.kind] ??= refusal;
    if (refusal.limit !== null) tx.fewest = Math.min(tx.fewest ?? refusal.limit, refusal.limit);
  }

  /**
   * A line the session could not read while a transaction is open (too long, or no command it knows: `RCPT\tTO:`
   * is one): it may have been an RCPT the client now takes as refused, so it refuses the transaction too, and DATA
   * cannot go to the others (docs/smtp.md "All or nothing").
   */
  #unreadDuringTransaction(what: string): void {
    if (this.#tx === null) return;
    SmtpSession.#noteRefusal(this.#tx, { kind: "argument", target: what, text: "not read", limit: null });
  }

  /**
   * DATA after refused RCPTs (docs/smtp.md "All or nothing"): the reply and the audit reason, naming why. The
   * enhanced status is the first kind present of rules, count, argument; a count says how many recipients fit.
   */
  static #refusedAtData(tx: Transaction): { status: string; text: string; reason: string } {
    const kinds = tx.firstOfKind;
    const kind: RefusalKind = kinds.rules ? "rules" : kinds.count ? "count" : "argument";
    const first = kinds[kind]!;
    const why =
      kind === "rules"
        ? `<${first.target}> is not allowed`
        : kind === "count"
          ? `more than ${first.limit} recipients`
          : `<${first.target}>: ${first.text}`;
    let text = `Message refused: ${tx.refused} recipient(s) refused at RCPT (${why}); nothing was sent`;
    if (tx.fewest !== null) text += `; send it again to at most ${tx.fewest} recipients, the others in another message`;
    return {
      status: REFUSAL_STATUS[kind],
      text,
      reason: refusedReason(tx.refusals, tx.refused),
    };
  }

  #dataCommand(args: string): undefined {
    const tx = this.#tx;
    if (args !== "") {
      this.#refused("DATA", null, `DATA takes no parameters (one given, length ${args.length})`, true);
      this.#send(reply(501, "5.5.4", "Syntax: DATA takes no parameters"));
      return undefined;
    }
    if (tx === null) {
      this.#send(reply(503, "5.5.1", "Need MAIL before DATA"));
      return undefined;
    }
    if (tx.refused > 0) {
      // All or nothing (docs/protocol.md §6, docs/smtp.md "All or nothing"): one refused RCPT, whatever refused it,
      // refuses the message, before it is read; nothing goes upstream and nothing is charged to a quota.
      const refusal = SmtpSession.#refusedAtData(tx);
      this.#audit({
        command: "DATA",
        operation: "mail:send",
        target: null,
        decision: "deny",
        reason: refusal.reason,
        count: tx.recipients.length + tx.refused,
      });
      this.#resetTransaction();
      this.#send(reply(554, refusal.status, refusal.text));
      return undefined;
    }
    if (tx.recipients.length === 0) {
      this.#send(reply(503, "5.5.1", "Need RCPT before DATA (no valid recipients)"));
      return undefined;
    }
    this.#spool.begin();
    this.#messageBytes = 0;
    this.#lastCollect = 0;
    this.#tooBig = false;
    const inspector = new MessageInspector();
    this.#inspector = inspector;
    const max = this.#ctx.limits.maxMessageBytes;
    this.#data = new DataReader((content) => {
      if (this.#tooBig) return;
      this.#messageBytes += content.length;
      // Socket chunks are garbage once spooled; on a large message, ask the collector to keep up so the
      // proxy's memory does not grow with the message (docs/smtp.md, memory figures).
      if (this.#messageBytes - this.#lastCollect >= GC_HINT_BYTES) {
        this.#lastCollect = this.#messageBytes;
        Bun.gc(true);
      }
      if (this.#messageBytes > max) {
        this.#tooBig = true;
        this.#spool.begin();
        return;
      }
      this.#spool.append(content);
      inspector.write(content);
    });
    this.#prepareUpstream();
    this.#send("354 End data with <CR><LF>.<CR><LF>\r\n");
    return undefined;
  }

  /**
   * Opens the upstream connection, if the session has none, while the message is still coming in: connect, TLS,
   * EHLO and AUTH say nothing about the message. MAIL FROM waits for the final decision after the last dot.
   */
  #prepareUpstream(): void {
    if (this.#opening !== null && !this.#opening.failed) return;
    this.#opening = null;
    if (this.#upstream !== null && !this.#upstream.closed) return;
    this.#upstream?.destroy();
    this.#upstream = null;
    const cancel = new AbortController();
    const opening: Opening = {
      promise: this.#openUpstream(AbortSignal.any([this.#stopped.signal, cancel.signal])),
      failed: false,
      cancel,
    };
    this.#opening = opening;
    opening.promise.then(
      (session) => {
        if (this.#opening !== opening) return; // taken by the replay, or the session ended (#release quits it)
        this.#opening = null;
        this.#upstream = session;
      },
      () => {
        // Kept for the replay, which reports it; a later DATA starts over.
        opening.failed = true;
      },
    );
  }

  /**
   * Whether the upstream is known not to offer 8BITMIME (RFC 6152 §3): the session's connection, kept from AUTH or
   * opened while the message came in (#prepareUpstream), answered its last EHLO without it. Waits for the connection
   * being opened, at most UPSTREAM_OPENING_WAIT_MS; opens none. Not known (false) when it could not be opened, is
   * not open by then, or has closed, or when the session is ending: the replay then checks on the connection it sends
   * on (one still being opened is left to it, or to the next message), and an approval on its own (docs/smtp.md
   * "Replay", docs/approvals.md "Holding").
   */
  async #upstreamLacks8BitMime(): Promise<boolean> {
    let upstream = this.#upstream;
    const opening = this.#opening;
    if (opening !== null) {
      const waitMs = this.#ctx.limits.upstreamOpeningWaitMs;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<null>((resolve) => {
        timer = setTimeout(() => resolve(null), waitMs);
      });
      try {
        upstream = await Promise.race([opening.promise, late]);
      } catch {
        return false; // Kept for the replay, which reports it (#prepareUpstream).
      } finally {
        clearTimeout(timer);
      }
      if (upstream === null) {
        moduleLogger("smtp").info(
          `session ${this.id}: the upstream connection was not open ${waitMs} ms after the end of DATA; ` +
            "whether the upstream offers 8BITMIME is not known",
        );
        return false;
      }
    }
    if (this.#ending || upstream === null || upstream.closed) return false;
    return !offers8BitMime(upstream);
  }

  /** The upstream connection for a replay: the one being opened, the open one, or a new one. */
  async #connectedUpstream(): Promise<UpstreamSession> {
    const opening = this.#opening;
    if (opening !== null) {
      this.#opening = null;
      this.#upstream = await opening.promise;
      return this.#upstream;
    }
    if (this.#upstream !== null && !this.#upstream.closed) return this.#upstream;
    this.#upstream?.destroy();
    this.#upstream = null;
    this.#upstream = await this.#openUpstream();
    return this.#upstream;
  }

  async #endData(): Promise<void> {
    const tx = this.#tx!;
    const inspector = this.#inspector!;
    this.#inspector = null;
    this.#tx = null;
    if (this.#tooBig) {
      this.#audit({
        command: "DATA",
        operation: "mail:send",
        target: null,
        decision: "deny",
        reason: `message larger than ${this.#ctx.limits.maxMessageBytes} octets`,
      });
      this.#send(
        reply(552, "5.3.4", `Message too large (limit ${this.#ctx.limits.maxMessageBytes} octets); nothing was sent`),
      );
      return;
    }
    this.#spool.flush();
    const facts = inspector.finish();
    if (facts.headerTooLarge) {
      this.#audit({
        command: "DATA",
        operation: "mail:send",
        target: null,
        decision: "deny",
        reason: `header section larger than ${MAX_HEADER_BYTES} octets`,
      });
      this.#send(reply(552, "5.3.4", "Header section too large; nothing was sent"));
      return;
    }
    // What the rules read must be what the upstream server passes on (src/smtp/inspect.ts `unsendable`).
    const refusal = unsendable(facts);
    if (refusal !== null) {
      const { code, status, reason } = refusal;
      this.#audit({ command: "DATA", operation: "mail:send", target: facts.messageId, decision: "deny", reason });
      this.#send(reply(code, status, `${capitalize(reason)}; nothing was sent`));
      return;
    }
    // 8-bit content goes only to an upstream that offers 8BITMIME (RFC 6152 §3). Whether this one does is learned
    // here, before the rules decide (nothing waits between their decision and the charge, the hold or the send), so
    // that a message the upstream cannot take is refused alike whether the rules allow it or hold it: before it is
    // charged or held (docs/smtp.md "Replay", docs/approvals.md "Holding").
    const eightBitRefused = facts.eightBit && (await this.#upstreamLacks8BitMime());
    const senders = this.#senders;
    if (senderNotIdentity(senders, tx.senderKey)) {
      // A reload took the sender from the session's identities while the message came in (docs/smtp.md
      // "Identities"): the whole message is refused, as for a rule that no longer allows it.
      this.#audit({
        command: "MAIL FROM",
        operation: "mail:send",
        target: tx.senderKey,
        ...SmtpSession.#notIdentity(senders, " any more"),
      });
      this.#audit({
        command: "DATA",
        operation: "mail:send",
        target: facts.messageId,
        decision: "deny",
        reason: "refused as a whole: the sender is not one of this account's identities any more",
        count: tx.recipients.length,
      });
      const text = `Sender <${tx.sender}> is not one of this account's identities; nothing was sent`;
      this.#send(reply(554, "5.7.1", text));
      return;
    }
    const authors = originatorProblem(senders, facts.originators);
    if (authors !== null) {
      // From, Sender, Reply-To, the Resent- forms and the other fields that direct answers name only identities,
      // as MAIL FROM does (docs/smtp.md "The author in the header").
      this.#audit({
        command: "DATA",
        operation: "mail:send",
        target: facts.messageId,
        decision: "deny",
        reason: cutText(`refused as a whole: ${authors}`, MAX_ROW_REASON),
        count: tx.recipients.length,
      });
      const text =
        "The From, Sender, Reply-To or a related header names someone other than this account's identities; " +
        "nothing was sent";
      this.#send(reply(554, "5.7.1", text));
      return;
    }
    const authorless = nullSenderProblem(tx.senderKey, facts.missingAuthors);
    if (authorless !== null) {
      const missing = facts.missingAuthors.map((n) => (n === "from" ? "From" : "Resent-From")).join(" and ");
      this.#audit({
        command: "DATA",
        operation: "mail:send",
        target: facts.messageId,
        decision: "deny",
        reason: `refused as a whole: ${authorless}`,
        count: tx.recipients.length,
      });
      const text = `A message sent with <> must name its author in a ${missing} field; nothing was sent`;
      this.#send(reply(554, "5.7.1", text));
      return;
    }
    const agent = this.#policyAgent;
    const size = this.#spool.length;
    const rows: AuditEvent[] = [];
    const senderTarget = tx.sender === "" ? "<>" : tx.senderKey;
    rows.push(
      this.#event({
        command: "MAIL FROM",
        operation: "mail:send",
        target: senderTarget,
        ...(tx.senderOutcome.decided
          ? { ...decisionFields(tx.senderOutcome.decision), configRevision: tx.senderRevision }
          : { decision: "allow", reason: "sender not refused on its own; decided with each recipient" }),
      }),
    );
    const verdict = decideMessage(
      this.#ctx.policy,
      agent,
      tx.senderKey,
      tx.recipients.map((r) => r.key),
      facts,
    );
    const refused = verdict.refused;
    for (const r of verdict.recipients) {
      rows.push(
        this.#event({
          command: "RCPT TO",
          operation: "mail:send",
          target: r.recipient,
          ...decisionFields(r.decision),
          detail: { class: r.class },
        }),
      );
    }
    const detail = {
      size,
      messageId: facts.messageId,
      hasAttachment: facts.hasAttachment ?? null,
      subjectKnown: facts.subject !== undefined,
    };
    if (refused.length > 0) {
      rows.push(
        this.#event({
          command: "DATA",
          operation: "mail:send",
          target: facts.messageId,
          decision: "deny",
          reason: `refused as a whole: not allowed for ${refused.join(", ")}`,
          count: tx.recipients.length,
          detail,
        }),
      );
      for (const row of rows) this.#audit(row);
      this.#send(
        reply(
          554,
          "5.7.1",
          `Message refused: not allowed for ${refused.map((r) => `<${r}>`).join(", ")}; nothing was sent`,
        ),
      );
      return;
    }
    // DATA's row when the rules allow every recipient: before the replay, or before the 8-bit refusal below.
    const allowedRow = (): AuditEvent =>
      this.#event({
        command: "DATA",
        operation: "mail:send",
        target: facts.messageId,
        decision: "allow",
        reason: "every recipient allowed",
        count: tx.recipients.length,
        detail,
      });
    if (eightBitRefused) {
      // The upstream's EHLO, read above, lacks 8BITMIME: the refusal the replay would give (EightBitRefused), given
      // before anything is charged, held or sent, and before any approver is asked. No quota is charged, as for the
      // other refusals of the message itself (`unsendable`): nothing went anywhere (docs/quotas.md).
      if (verdict.held.length === 0) rows.push(allowedRow());
      rows.push(
        this.#event({
          command: "DATA",
          operation: "mail:send",
          target: facts.messageId,
          decision: "deny",
          reason:
            verdict.held.length === 0
              ? `not sent (nothing went upstream): ${EIGHT_BIT_REFUSED}`
              : `not held for approval, no approver asked (nothing went upstream): ${EIGHT_BIT_REFUSED}`,
          // As the replay's row (#replay) when sent; held, the only row with the message's details.
          ...(verdict.held.length === 0
            ? { detail: { eightBit: true } }
            : { count: tx.recipients.length, detail: { ...detail, eightBit: true } }),
        }),
      );
      for (const row of rows) this.#audit(row);
      this.#send(eightBitRefusal());
      return;
    }
    this.#flush();
    const audit = this.#ctx.audit;
    if (!audit.healthy) {
      // Known to be unable to write: refused before anything of the transaction goes upstream.
      moduleLogger("smtp").error(`audit log unavailable, send refused: ${audit.path}`);
      this.#send(reply(451, "4.3.0", "Audit log unavailable; nothing was sent, try again later"));
      return;
    }
    // A message to hold takes its place under MAX_HELD_PER_AGENT before it is charged: a send refused for that
    // limit is not charged (docs/quotas.md "Over a limit", docs/approvals.md "Limits").
    let place: HoldPlace | null = null;
    if (verdict.held.length > 0) {
      place = this.#takeHoldPlace(rows);
      if (place === null) return;
    }
    // The send is charged (committed to the state database) before anything of it goes upstream (docs/quotas.md).
    const charged = this.#ctx.quotas.charge(this.#quotaSubject, {
      sends: 1,
      recipients: tx.recipients.length,
      bytes: size,
    });
    if (!charged.ok) {
      place?.release();
      const over = charged.exceeded;
      rows.push(
        this.#event({
          command: "DATA",
          operation: "mail:send",
          target: facts.messageId,
          decision: over === null ? "error" : "deny",
          reason: charged.message,
          count: tx.recipients.length,
          detail: over === null ? detail : { ...detail, quota: over.quota, limit: over.limit, max: over.max },
        }),
      );
      for (const row of rows) this.#audit(row);
      if (over === null) moduleLogger("smtp").error(`send refused: ${charged.message}`);
      this.#send(
        over === null
          ? reply(451, "4.3.0", "Quota state unavailable; nothing was sent, try again later")
          : reply(452, "4.7.1", `${capitalize(charged.message)}; nothing was sent`),
      );
      return;
    }
    // A held message was charged above, when held: asking again and again does not bypass a quota (docs/quotas.md).
    if (place !== null) return this.#hold(place, tx, verdict.held, rows, detail, facts);
    rows.push(allowedRow());
    // The rows must be on disk before the message reaches the upstream (docs/audit.md "What a row records"), that is
    // before the final dot. They wait for company (at most SEND_COMMIT_WAIT_MS) while MAIL, the RCPTs and DATA go
    // upstream; the replay commits them once DATA is accepted, and holds its end of data until they are on disk.
    // One group: the send's rows are committed together or kept together (docs/audit.md).
    const group = {};
    const wait = this.#ctx.limits.sendCommitWaitMs;
    const gate = new CommitGate(Promise.all(rows.map((row) => audit.durableWithin(row, wait, { group }))), () =>
      audit.commitNow(),
    );
    const answer = await this.#replay(tx, facts.messageId, facts.eightBit, gate);
    if (answer !== "") this.#send(answer);
  }

  /**
   * A message that an `ask` rule holds takes its place under MAX_HELD_PER_AGENT (messages of the agent, the login in
   * pass-through mode, held or being stored), before its quota charge: each is up to 50 MiB in the state database
   * until decided or expired (docs/approvals.md "Limits"), and a send refused for that limit is not charged
   * (docs/quotas.md "Over a limit"). So does its room on the state database's disk (HELD_DISK_RESERVE_BYTES). The
   * place is taken before the rows go to disk, so that another session of the agent sees it taken meanwhile. Null:
   * refused, the transaction's rows and the DATA row that says why are written and the agent has its answer.
   */
  #takeHoldPlace(rows: readonly AuditEvent[]): HoldPlace | null {
    const notHeld = (decision: "deny" | "error", reason: string): null => {
      for (const row of rows) this.#audit(row);
      this.#audit({ command: "DATA", operation: "mail:send", target: null, decision, reason });
      return null;
    };
    const store = this.#ctx.approvals ?? null;
    if (store === null) {
      notHeld("error", "held for approval, but the state database is not open");
      this.#send(reply(451, "4.3.0", "Cannot hold the message for approval; nothing was sent, try again later"));
      return null;
    }
    // Room on the state database's disk first (HELD_DISK_RESERVE_BYTES): a full disk would refuse every quota charge
    // and the very deletions that deny or expire held messages (docs/approvals.md "Limits").
    const space = store.reserveSpace(this.#spool.length);
    if (typeof space !== "function") {
      notHeld(
        "deny",
        `held for approval, but the state database's file system has ${space.free} octets free, fewer than the ` +
          `${space.needed} a hold of this message needs (twice its size and ${HELD_DISK_RESERVE_BYTES} more)`,
      );
      this.#send(
        reply(452, "4.3.1", "Insufficient storage to hold the message for approval; nothing was sent, try later"),
      );
      return null;
    }
    const place = store.reservePlace(this.#auditAgent, MAX_HELD_PER_AGENT);
    if (place === null) {
      space();
      notHeld(
        "deny",
        `held for approval, but ${MAX_HELD_PER_AGENT} messages of this agent already wait for a decision`,
      );
      this.#send(
        reply(452, "4.3.1", `${MAX_HELD_PER_AGENT} messages already wait for approval; nothing was sent, try later`),
      );
      return null;
    }
    return {
      store,
      release: () => {
        place();
        space();
      },
    };
  }

  /**
   * An `ask` rule decided a recipient and none is refused, the message has its place (`#takeHoldPlace`) and is
   * charged: the message, its envelope and (pass-through) the agent's upstream login are sealed in the state
   * database, committed, before the 250 (docs/approvals.md "Holding"). Nothing goes upstream; the agent learns only
   * that it is held, and its id. The place is given back once the message is held (then the stored row counts) or
   * not.
   *
   * The rows saying which rule held it go to disk first: a process killed between the two leaves rows naming an id
   * that holds nothing (the agent had no 250 and sends again), never a held message, approvable later, without
   * them. Rows that cannot be written get the 451 of every audit failure, and nothing is held. A session that ended
   * while they were written (a reload, shutdown) holds nothing either: one more row says so.
   */
  async #hold(
    place: HoldPlace,
    tx: Transaction,
    held: readonly RecipientFinal[],
    rows: AuditEvent[],
    detail: Record<string, string | number | boolean | null>,
    facts: MessageFacts,
  ): Promise<void> {
    const { store, release } = place;
    const groups = [
      ...new Set(
        held.flatMap((h) =>
          (h.asking ?? [h.decision.ruleIndex ?? -1]).flatMap((i) => this.#ctx.config.rules[i]?.askGroups ?? []),
        ),
      ),
    ];
    const refuse = () =>
      this.#send(reply(451, "4.3.0", "Cannot hold the message for approval; nothing was sent, try again later"));
    const holding = this.#holdPlaced(store, tx, held, rows, detail, facts, groups, refuse);
    this.#ctx.holds.add(holding);
    try {
      await holding;
    } finally {
      this.#ctx.holds.delete(holding);
      release();
    }
  }

  /** `#hold` once a place under MAX_HELD_PER_AGENT is taken: the rows on disk, then the message stored. */
  async #holdPlaced(
    store: ApprovalStore,
    tx: Transaction,
    held: readonly RecipientFinal[],
    rows: AuditEvent[],
    detail: Record<string, string | number | boolean | null>,
    facts: MessageFacts,
    groups: readonly string[],
    refuse: () => void,
  ): Promise<void> {
    const first = held[0]!.decision;
    // The config whose rules decided `held`: still the one in force, as nothing has waited since the decision. The
    // held message keeps it for the rows written about it later, after reloads maybe (docs/audit.md).
    const revision = this.#ctx.config.revision;
    // One copy of the spooled message (its blocks are views of one reused buffer), not a copy per block and a
    // second one to join them: a held message is up to MAX_MESSAGE_BYTES.
    const message = Buffer.allocUnsafe(this.#spool.length);
    let filled = 0;
    for (const block of this.#spool.blocks()) {
      message.set(block, filled);
      filled += block.length;
    }
    if (filled !== message.length) throw new Error("smtp: the spool gave back another length than it was given");
    const id = this.#identity!;
    const approvalId = newApprovalId();
    const expires = Date.now() + this.#ctx.config.approvals.timeoutMs;
    rows.push(
      this.#event({
        command: "DATA",
        operation: "mail:send",
        target: approvalId,
        ...decisionFields(first),
        configRevision: revision,
        reason: `held for approval (${groups.join(", ")}): asked for ${held.map((h) => h.recipient).join(", ")}`,
        count: tx.recipients.length,
        detail: { ...detail, approval: approvalId, expires },
      }),
    );
    // Queued in the turn of the health check before the quota charge (nothing above waits), so only their commit
    // can fail.
    const audit = this.#ctx.audit;
    try {
      const group = {};
      await Promise.all(rows.map((row) => audit.durable(row, { group })));
    } catch (e) {
      moduleLogger("smtp").error(`audit log unavailable, message not held: ${errorMessage(e)}`);
      this.#send(reply(451, "4.3.0", "Audit log unavailable; nothing was sent, try again later"));
      return;
    }
    // The rows on disk name `approvalId`: when nothing ends up held under it, one more row on it says why.
    const unheldRow = (reason: string): void =>
      this.#audit({ command: "DATA", operation: "mail:send", target: approvalId, decision: "error", reason });
    if (this.#ending) {
      // The session ended while its rows went to disk (a reload that ends it, shutdown, the agent gone): the agent
      // cannot get its 250, so it does not know of the message and would send it again. Nothing is held, and no
      // approver is asked.
      return unheldRow(`not held: the session ended (${this.#endReason})`);
    }
    let row: ApprovalRow;
    try {
      row = await store.hold(
        {
          envelope: { from: tx.sender, recipients: tx.recipients.map((r) => r.address), eightBit: tx.eightBit },
          message,
          account: id.mode === "vault" ? id.account.name : null,
          credentials: id.mode === "pass-through" ? id.credentials : null,
          agent: this.#auditAgent,
          tokenHash: id.mode === "vault" ? this.#tokenHash : null,
          preview: buildPreview(
            tx.sender,
            tx.recipients.map((r) => r.address),
            message,
            facts.hasAttachment ?? null,
            { names: facts.attachments, complete: facts.attachmentsComplete },
          ),
        },
        { name: first.rule ?? "", index: first.ruleIndex, groups, revision },
        expires,
        Date.now(),
        approvalId,
        // The session ended while the message was stored: the agent cannot get its 250 (as above).
        () => this.#ending,
      );
    } catch (e) {
      if (e instanceof HoldStopped)
        return unheldRow(`not held: the session ended while it was stored (${this.#endReason})`);
      moduleLogger("smtp").error(`session ${this.id}: cannot hold a message: ${errorMessage(e)}`);
      unheldRow(`not held: cannot hold for approval: ${errorMessage(e)}`);
      return refuse();
    }
    if (this.#ending) {
      // The session ended between the message's last step and here (a few promise steps): as above, the agent
      // cannot get its 250, so the message is taken back before anyone is asked.
      let withdrawn = false;
      try {
        withdrawn = store.withdraw(row.id);
      } catch (e) {
        moduleLogger("smtp").error(`session ${this.id}: cannot take back held message ${row.id}: ${errorMessage(e)}`);
      }
      if (withdrawn) return unheldRow(`not held: the session ended while it was stored (${this.#endReason})`);
      unheldRow(`held, but the session ended before its reply (${this.#endReason}): the agent may send it again`);
    }
    this.#send(reply(250, "2.0.0", `Held for approval as ${row.id}`));
    this.#ctx.onHeld?.(row);
  }

  /**
   * Sends the approved transaction upstream; returns the reply for the agent and records the result. Empty: not
   * sent, for the session's end (the 421 after the command) is the reply.
   */
  async #replay(
    tx: Transaction,
    messageId: string | null,
    eightBitContent: boolean,
    gate: CommitGate,
  ): Promise<string> {
    const envelope = {
      from: tx.sender,
      recipients: tx.recipients.map((r) => r.address),
      eightBit: tx.eightBit,
      eightBitContent,
    };
    let upstreamReply: Reply;
    let text: string;
    let used: UpstreamSession | null = null;
    try {
      const upstream = await this.#connectedUpstream();
      used = upstream;
      upstream.blockTimeoutMs = this.#ctx.limits.upstreamBlockTimeoutMs;
      // A reload that ended the session meanwhile (the connection was being opened, perhaps to the upstream the
      // reload replaced) has aborted #withdrawn: send() then stops before anything goes out (below).
      const result = await upstream.send(envelope, this.#spool, gate, this.#stopped.signal, this.#withdrawn.signal);
      upstreamReply = result.reply;
      const [status, rest] = splitStatus(result.reply);
      if (result.stage === "data") {
        text = reply(result.reply.code, status, rest);
      } else {
        const what =
          result.stage === "rcpt" ? `recipient <${result.recipient}>` : result.stage === "mail" ? "the sender" : "DATA";
        text = reply(result.reply.code, status, `Upstream refused ${what}: ${rest}; nothing was sent`);
      }
    } catch (e) {
      if (e instanceof EightBitRefused) {
        // Refused before anything of the transaction went upstream (RFC 6152 §3; docs/smtp.md "Replay"): the upstream
        // replied nothing, and its connection is as it was. The rows the rules wrote say "allow"; this one says why
        // the message was not sent after all.
        this.#audit({
          command: "DATA",
          operation: "mail:send",
          target: messageId,
          decision: "deny",
          reason: `not sent (nothing went upstream): ${EIGHT_BIT_REFUSED}`,
          detail: { eightBit: true },
        });
        return eightBitRefusal();
      }
      // The agent learns of a failed commit whichever failure came first: nothing was delivered either way.
      await gate.settled;
      if (gate.state() === "failed" || e instanceof CommitFailedError) {
        moduleLogger("smtp").error(
          `audit log unavailable, send abandoned before its end of data: ` +
            `${gate.error?.message ?? (e as Error).message}`,
        );
        this.#upstream?.destroy();
        this.#upstream = null;
        return reply(451, "4.3.0", "Audit log unavailable; nothing was sent, try again later");
      }
      if (e instanceof SendStopped && !e.endOfDataSent && this.#endedByReload !== null) {
        // A reload ended the session before the transaction's final dot went upstream (while its connection was
        // opened, or MAIL, RCPT, DATA or the content went out): the connection was dropped, so the server discards
        // it; nothing was delivered and the 421 that follows is the reply.
        this.#audit({
          command: "DATA",
          operation: "mail:send",
          target: messageId,
          decision: "deny",
          reason: cutText(`not sent: the session was ended by a reload (${this.#endedByReload})`, MAX_ROW_REASON),
        });
        this.#upstream?.destroy();
        this.#upstream = null;
        return "";
      }
      const message = (e as Error).message;
      const auth = e instanceof UpstreamAuthError;
      // The final dot went out and no answer came (the connection lost, no reply in time): only the server knows
      // whether it took the message (RFC 5321 §4.1.1.4, §6.1). The row says so, and so does the reply: the agent
      // that sends it again may have it delivered twice. (SendStopped's own message says it already.)
      const mayHaveIt = used?.endOfDataSent === true && !(e instanceof SendStopped);
      // An OAuth2 account without a token (a new login at DATA): the words of AUTH's 454 (docs/smtp.md "OAuth2
      // accounts"); the token endpoint's answer is the owner's, in the row below.
      const shown = agentReason(e);
      this.#audit({
        command: "DATA",
        operation: "mail:send",
        target: messageId,
        decision: "error",
        reason: `upstream failed: ${message}${mayHaveIt ? MAY_HAVE_IT : ""}`,
        ...(mayHaveIt ? { detail: { endOfDataSent: true } } : {}),
      });
      if (!(e instanceof UpstreamError) && !auth)
        moduleLogger("smtp").error(`session ${this.id}: upstream: ${message}`);
      this.#upstream?.destroy();
      this.#upstream = null;
      if (shown !== null) return reply(451, "4.7.0", shown);
      if (mayHaveIt)
        return reply(
          451,
          "4.4.1",
          `No answer from upstream to the end of data (${message}); it may have been delivered`,
        );
      return reply(451, auth ? "4.7.0" : "4.4.1", `Upstream unavailable: ${message}; try again later`);
    }
    const ok = upstreamReply.code >= 200 && upstreamReply.code < 300;
    this.#audit({
      command: "DATA",
      operation: "mail:send",
      target: messageId,
      decision: ok ? "allow" : "error",
      reason: cutText(`upstream replied ${upstreamReply.code} ${upstreamReply.lines.at(-1) ?? ""}`, MAX_ROW_REASON),
      detail: { upstreamCode: upstreamReply.code },
    });
    return text;
  }

  /**
   * A new upstream connection logged in as this session's identity. A vault password account whose login the
   * upstream refused moments ago is not tried again yet (src/accounts/refusals.ts): the send fails as that one did.
   */
  #openUpstream(signal: AbortSignal = this.#stopped.signal): Promise<UpstreamSession> {
    const id = this.#identity!;
    const target = this.#ctx.upstream;
    if (id.mode === "pass-through") return UpstreamSession.open(target, id.credentials, signal);
    return this.#openAccount(target, id.account, signal);
  }

  /**
   * A new upstream connection logged in as a vault account, unless the upstream refused its login moments ago
   * (src/accounts/refusals.ts): a password account's password, or an OAuth2 account's fresh access token after the
   * one it held (FreshTokenRefused). Then the login is not tried again yet: no token request, no upstream login.
   */
  #openAccount(target: UpstreamTarget, account: AccountConfig, signal: AbortSignal): Promise<UpstreamSession> {
    const refusals = this.#ctx.accountRefusals;
    const key = refusalKey(target, account);
    const held = refusals.notTried(key, account.name);
    if (held !== null) return Promise.reject(new UpstreamError(held));
    const opened = openAccountUpstream(target, account, this.#ctx.credentials, signal);
    opened.catch((e: unknown) => {
      if (e instanceof UpstreamAuthError || e instanceof FreshTokenRefused) refusals.refused(key);
    });
    return opened;
  }
}

/** The reply to a message refused for its 8-bit octets (EightBitRefused; docs/smtp.md "Replay"). */
function eightBitRefusal(): string {
  const hint = "send it as 7-bit (base64 or quoted-printable)";
  return reply(
    EightBitRefused.code,
    EightBitRefused.status,
    `${capitalize(EIGHT_BIT_REFUSED)}; nothing was sent; ${hint}`,
  );
}

/**
 * DATA's audit reason after refused RCPTs: names the kept refusals (the first MAX_REFUSALS_KEPT) with their replies,
 * as many as fit in MAX_ROW_REASON with the count of the others after them ("and N more"), so that a cut never takes
 * the count. A first refusal too long to fit whole is cut to leave room for the count.
 */
export function refusedReason(refusals: readonly { target: string; text: string }[], refused: number): string {
  const head = "refused before the message was read: recipients refused at RCPT: ";
  const more = (named: number) => (refused > named ? ` and ${refused - named} more` : "");
  const parts = refusals.map((r) => `<${r.target}>: ${r.text}`);
  let named = "";
  let shown = 0;
  for (const part of parts) {
    const next = shown === 0 ? part : `${named}; ${part}`;
    if (head.length + next.length + more(shown + 1).length > MAX_ROW_REASON) break;
    named = next;
    shown++;
  }
  if (shown === 0 && parts.length > 0) {
    const tail = more(1);
    return `${cutText(`${head}${parts[0]}`, MAX_ROW_REASON - tail.length)}${tail}`;
  }
  return `${head}${named}${more(shown)}`;
}

function capitalize(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function decisionFields(decision: Decision): Pick<AuditEvent, "decision" | "rule" | "ruleIndex" | "reason"> {
  return { decision: decision.action, rule: decision.rule, ruleIndex: decision.ruleIndex, reason: decision.reason };
}

/** Added to a failed send's row when its end of data had gone out (`#replay`). */
const MAY_HAVE_IT = "; the end of data had gone out: the upstream may have the message";

/** Why a session has no identity to send as (docs/smtp.md "Identities"). */
const NO_IDENTITIES = "it has none: the upstream login is not an address and no identities are configured";

/**
 * Splits "2.0.0 Ok: queued" into its enhanced status code and text (RFC 3463); invents one from the code when absent.
 */
function splitStatus(r: Reply): [string, string] {
  const last = r.lines.at(-1) ?? "";
  const m = /^([245]\.\d{1,3}\.\d{1,3}) (.*)$/.exec(last);
  if (m !== null) return [m[1]!, m[2]!];
  return [`${String(r.code)[0]}.0.0`, last];
}
