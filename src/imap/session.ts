/**
 * One agent connection: the proxy as a strict IMAP server (RFC 3501) in front of one upstream session.
 *
 * Commands are read with the wire layer's framer, parsed against its allowlist, run one at a time (pipelined
 * commands wait their turn, RFC 9051 §5.5), checked against the rules, and sent upstream as UID commands with
 * the proxy's own tags. Upstream responses are parsed, translated to the agent's sequence numbers, filtered, and
 * written again. Errors become replies here and nowhere else.
 */

import { randomBytes } from "node:crypto";
import { accountLoginKey, agentReason, reloadEndReason, type SessionLogin } from "../accounts/index.ts";
import type { AuditEvent } from "../audit/index.ts";
import { AuditUnavailableError, waitForAuditBacklog } from "../audit/index.ts";
import { cutText, MAX_ROW_LOGIN_NAME, MAX_ROW_REASON } from "../audit/row.ts";
import { ownEntry } from "../config/names.ts";
import type { Config } from "../config/types.ts";
import {
  CLIENT_CLOSED,
  errorMessage,
  logAccess,
  logLockout,
  logLoginFailure,
  moduleLogger,
  SHUTTING_DOWN,
} from "../log.ts";
import {
  type Connection,
  failureDelay,
  type Lock,
  lockDetail,
  lockedReason,
  lockoutName,
  lockStartedReason,
  sameUpstream,
  type TlsIdentity,
  UpstreamError,
  type UpstreamTarget,
  WRITE_PIECE,
} from "../net/index.ts";
import type { Operation, Policy } from "../policy/index.ts";
import { recordedLoginName } from "../vault/token.ts";
import { authCapabilities, PRE_AUTH_CAPABILITIES } from "./capabilities.ts";
import { messageFilter } from "./classify.ts";
import { append } from "./commands/append.ts";
import { capability, id } from "./commands/capability.ts";
import { close, unselect } from "./commands/close.ts";
import { compress } from "./commands/compress.ts";
import {
  type AwaitedRow,
  type CommandOf,
  type CompressSession,
  cites,
  type Decided,
  type LoggedIn,
  type LoginSession,
  type Row,
  type SessionContext,
  type State,
} from "./commands/context.ts";
import { copyOrMove } from "./commands/copy.ts";
import { create } from "./commands/create.ts";
import { remove } from "./commands/delete.ts";
import { enable } from "./commands/enable.ts";
import { expunge } from "./commands/expunge.ts";
import { fetch } from "./commands/fetch.ts";
import { idle } from "./commands/idle.ts";
import { invalidName } from "./commands/invalid-name.ts";
import { list } from "./commands/list.ts";
import { authenticate, login, refuseLoginLiteralBeforeStartTls, startTls } from "./commands/login.ts";
import { namespace } from "./commands/namespace.ts";
import { noop } from "./commands/noop.ts";
import { rename } from "./commands/rename.ts";
import { search } from "./commands/search.ts";
import { select } from "./commands/select.ts";
import { readOnlyNotice, relayUpdate } from "./commands/shared.ts";
import { sort } from "./commands/sort.ts";
import { status } from "./commands/status.ts";
import { store } from "./commands/store.ts";
import { subscribe } from "./commands/subscribe.ts";
import { threadCommand } from "./commands/thread.ts";
import { Deflate } from "./compress.ts";
import { classifyNew, decideInFolder, searchUids, sessionRunner } from "./filtering.ts";
import { deadFolderRule, FolderNames, FolderRights } from "./folders.ts";
import {
  AUDIT_BACKLOG_PAUSE_ROWS,
  BAD_COMMAND_WINDOW_MS,
  MAX_ABANDONED_LOGIN_CHECKS,
  MAX_BAD_COMMANDS,
  READ_AHEAD_LIMIT,
} from "./limits.ts";
import type { SelectedMailbox } from "./mailbox.ts";
import { Refusal } from "./refusal.ts";
import { type StatusResponse, UpstreamSession } from "./upstream.ts";
import { withoutTimings } from "./upstream-text.ts";
import {
  type Command,
  Encoder,
  Framer,
  type FramerEvent,
  type LiteralRequest,
  parseCommand,
  type Response,
  type ResponseCode,
  writeResponse,
} from "./wire/index.ts";

/**
 * When a command may run (RFC 3501 §3): in any state, before login only, once logged in, or with a mailbox
 * selected. A command refused in this state gets BAD; a command not in the table is refused as not supported.
 */
type When = "any" | "not-authenticated" | "authenticated" | "selected";

interface Entry<N extends Command["name"]> {
  readonly when: When;
  /**
   * Its result is audited: refused at once while the audit log is known to be failing (unless `checksAudit`), and
   * its output held until its allow row is accepted (docs/imap.md "Audit before data").
   */
  readonly audited: boolean;
  /** The handler checks the audit log itself: a failed SELECT or EXAMINE must deselect first (RFC 3501 §6.3.1). */
  readonly checksAudit?: boolean;
  readonly run: (s: ImapSession, cmd: CommandOf<N>) => Promise<void>;
}

type Table = { readonly [N in Command["name"]]?: Entry<N> };

/** An allow row a command put on disk, and its id (`ImapSession.#durableRows`). */
interface DurableRow {
  readonly ev: AuditEvent;
  readonly id: number;
}

/** No durable rows: the command under way has written none, or none is under way. Never pushed to. */
const NO_ROWS: DurableRow[] = [];

/** The access log's `end`, and the reason in a row of a command under way, when the upstream connection is lost. */
const UPSTREAM_LOST = "upstream connection lost";

export class ImapSession implements LoginSession, CompressSession {
  /**
   * The dispatch table (docs/imap.md "Structure"): each command's handler in src/imap/commands/, and when it may
   * run. LOGOUT ends the connection itself and stays here.
   */
  static readonly #table: Table = {
    CAPABILITY: { when: "any", audited: false, run: capability },
    ID: { when: "any", audited: false, run: id },
    NOOP: { when: "any", audited: false, run: noop },
    LOGOUT: { when: "any", audited: false, run: (s, cmd) => s.#logout(cmd.tag) },
    STARTTLS: { when: "not-authenticated", audited: false, run: startTls },
    LOGIN: { when: "not-authenticated", audited: false, run: login },
    AUTHENTICATE: { when: "not-authenticated", audited: false, run: authenticate },
    ENABLE: { when: "authenticated", audited: false, run: enable },
    COMPRESS: { when: "authenticated", audited: false, run: compress },
    NAMESPACE: { when: "authenticated", audited: false, run: namespace },
    IDLE: { when: "authenticated", audited: false, run: (s, cmd) => s.#idle(cmd) },
    LIST: { when: "authenticated", audited: true, run: list },
    LSUB: { when: "authenticated", audited: true, run: list },
    STATUS: { when: "authenticated", audited: true, run: status },
    SELECT: { when: "authenticated", audited: true, checksAudit: true, run: select },
    EXAMINE: { when: "authenticated", audited: true, checksAudit: true, run: select },
    CREATE: { when: "authenticated", audited: true, run: create },
    DELETE: { when: "authenticated", audited: true, run: remove },
    RENAME: { when: "authenticated", audited: true, run: rename },
    SUBSCRIBE: { when: "authenticated", audited: true, run: subscribe },
    UNSUBSCRIBE: { when: "authenticated", audited: true, run: subscribe },
    APPEND: { when: "authenticated", audited: true, run: append },
    CHECK: { when: "selected", audited: false, run: noop },
    FETCH: { when: "selected", audited: true, run: fetch },
    SEARCH: { when: "selected", audited: true, run: search },
    SORT: { when: "selected", audited: true, run: sort },
    THREAD: { when: "selected", audited: true, run: threadCommand },
    STORE: { when: "selected", audited: true, run: store },
    COPY: { when: "selected", audited: true, run: copyOrMove },
    MOVE: { when: "selected", audited: true, run: copyOrMove },
    EXPUNGE: { when: "selected", audited: true, run: expunge },
    CLOSE: { when: "selected", audited: true, run: close },
    UNSELECT: { when: "selected", audited: false, run: unselect },
  };

  readonly id = randomBytes(6).toString("hex");
  readonly ctx: SessionContext;
  readonly conn: Connection;
  readonly log = moduleLogger("imap");
  #framer = new Framer({ role: "server", allowLiteral8: true });
  readonly #enc = new Encoder({ side: "server" });
  /** COMPRESS=DEFLATE in force (RFC 4978, src/imap/compress.ts); null before. */
  #deflate: Deflate | null = null;
  /** The agent's compressed stream ended (its final deflate block): once what it held is read, the session ends. */
  #inputEnded = false;
  /** The inflater has a backlog and reading is paused until it drains (start(), `#mayRead`). */
  #inflateBacklog = false;
  /**
   * Output holds the session back (docs/reliability.md "COMPRESS back-pressure", "Output back-pressure"): while
   * the agent's socket is full, while (compressed) the deflater has a backlog, or both, upstream is paused and no
   * further command is read; each cause has at most one drain waiter at a time, and both resume only once neither
   * holds them (`#holdUpstream`).
   */
  readonly #outputHeld = { deflater: false, socket: false };
  /** Callbacks waiting for the output sent so far to leave (`#afterOutput`). */
  #outputWaiters: (() => void)[] = [];
  /** The upstream session `#holdUpstream` paused, resumed when `#outputHeld` clears. */
  #pausedUpstream: UpstreamSession | null = null;
  /** The upstream session of an agent that hung up in IDLE: offered to the pool once the IDLE has ended upstream. */
  #offerAfterIdle: UpstreamSession | null = null;
  #flushScheduled = false;
  /** The running command's output waits in the encoder until its allow row is accepted (`#hold`). */
  #held = false;
  /**
   * The running command's allow rows written with `auditDurable` (on disk before it went upstream) and their ids: if
   * the command is then answered NO or BAD, each gets an `error` row saying so (`#writeFailed`, docs/audit.md).
   */
  #durableRows: DurableRow[] = NO_ROWS;
  /**
   * The running command's write went upstream after its allow rows were on disk (`upstreamWrite`), and its answer
   * has not come: if the session ends now, whether upstream carried it out is not known, and each of those rows gets
   * an `error` row saying so (`#writeUnknown`, docs/audit.md "What a row records").
   */
  #writeAnswerDue = false;
  /**
   * An upstream write of the running command was answered (`upstreamWrite`): a write carried out in parts (a filtered
   * folder's COPY or MOVE over several upstream commands) went upstream, whatever becomes of its later parts.
   */
  #writeAnswered = false;
  /**
   * The running command's allow rows that wait for upstream's answer (`awaitAnswer`): written by the command once it
   * has the answer, or by `#writeUnanswered` when the command or the session ends first.
   */
  #awaited = new Set<Row>();
  #wake: (() => void) | null = null;
  #closed = false;
  /** Octets of the literals of the command being read (COMMAND_MEMORY_FREE of them are not counted). */
  #commandLiterals = 0;
  /** What the command being read holds of the command memory budget (`#reserveLiteral`). */
  #commandReserved = 0;
  /** Every upstream connection this session opened and may not have closed: `shutdown` closes them all. */
  readonly #upstreams = new Set<UpstreamSession>();
  /** Where the upstream session is kept after LOGOUT (LoggedIn.poolKey); null: logged out. */
  #poolKey: string | null = null;
  /** Aborted by `shutdown`: cancels upstream connection attempts not yet connected. */
  readonly #ending = new AbortController();
  /** The upstream connection whose login upstream is checking (`checkingLogin`): not cut when the agent leaves. */
  #loginCheck: UpstreamSession | null = null;
  /** Called when the session ends while that check goes on (`checkingLogin`). */
  #loginAbandoned: (() => void) | null = null;
  /** Ends the check `shutdown` left running (`ctx.abandonedLogins`) once its rows are written. */
  #loginCheckWritten: (() => void) | null = null;
  /** Why that check was cut after its agent left (`ctx.abandonedLogins`), or null. */
  #loginCheckCut: string | null = null;
  state: State = "not-authenticated";
  up: UpstreamSession | null = null;
  /** Name in audit rows: the agent (vault) or the upstream user (pass-through). */
  user: string | null = null;
  /** Agent name for rules; null in pass-through mode. */
  agent: string | null = null;
  rights: FolderRights;
  names = new FolderNames("/");
  box: SelectedMailbox | null = null;
  condstore = false;
  /** The upstream account (`host:port/user`, no secret): the classification cache's key. */
  account = "";
  /** What the login used, to tell after a reload whether this session may go on (`reloaded`). */
  #credentials: {
    readonly username: string;
    readonly login: SessionLogin;
    /** The server the login's upstream session was opened to (`sameUpstream` after a reload). */
    readonly upstream: UpstreamTarget;
  } | null = null;
  #generation: number;
  readonly #connectedAtMs = Date.now();
  #commands = 0;
  #loginResult: "ok" | "failed" | "none" = "none";
  #endReason = CLIENT_CLOSED;
  /** Audit rows this session has made (`#event`): whether a refused command wrote its own (`#fail`). */
  #rows = 0;
  /**
   * Commands refused as malformed, counted for MAX_BAD_COMMANDS: all of them before login; after it, those within
   * BAD_COMMAND_WINDOW_MS of the first one counted (`#badSince`), whatever came between.
   */
  #badCommands = 0;
  #badSince = 0;
  /**
   * Opens a second upstream session with the same login (STATUS of a filtered folder, classification helper); set at
   * login.
   */
  #openAuxiliary: (() => Promise<UpstreamSession>) | null = null;
  #auxiliary: Promise<UpstreamSession> | null = null;
  /** Settles when the last use of the auxiliary session is over (`withAuxiliary`). */
  #auxiliaryTurn: Promise<void> = Promise.resolve();
  /** Gives back this session's place under `max_sessions_per_agent`; set at login. */
  #releasePlace: (() => void) | null = null;
  /** The one timer of the login deadline, the inactivity timeout and the IDLE limit (`#checkTimers`). */
  #timer: ReturnType<typeof setTimeout> | null = null;
  readonly #connectedAt = performance.now();
  /** When the agent last sent something or last got a command's reply. */
  #lastActivity = performance.now();
  /** A command is running: the agent waits for the proxy, so it is not inactive. */
  #busy = false;
  /** When the running IDLE began; null outside IDLE. */
  #idleSince: number | null = null;
  /** The proxy is stopping (`stop`): the session ends at the next point where it waits for the agent. */
  #stopping = false;
  /**
   * Set while the command under way waits on neither upstream nor nextEvent() (the STARTTLS handshake, the
   * failed-login delay): `stop` calls it to end that wait at once.
   */
  #endWait: (() => void) | null = null;

  constructor(ctx: SessionContext, conn: Connection) {
    this.ctx = ctx;
    this.conn = conn;
    this.rights = new FolderRights(ctx.policy, null);
    this.#generation = ctx.generation;
  }

  /**
   * After a reload: a session whose agent was removed, whose token, account, account credentials or upstream
   * changed, whose address the agent's `allowed_ips` no longer hold, or that logged in pass-through while the
   * config is now in vault mode, ends with `* BYE` (RFC 3501 §7.1.5), after the reply of a command under way; one
   * whose selected mailbox the new rules would show otherwise (`followReload`) ends at once, command or not, whatever
   * else ends it: not one more byte of a FETCH under way is sent about a folder the new rules show otherwise
   * (docs/operations.md "Reload"). Returns true then. Others take the new rules at their next command, and the
   * timeouts of the new `[limits]` at once (`#checkTimers`): a lowered `login_timeout`, `idle_timeout` or
   * `idle_command_timeout` ends a session that has waited longer, not only once the timer set under the old one
   * fires.
   */
  reloaded(): boolean {
    if (this.#judgeReload()) return true;
    this.#rearmTimers();
    return false;
  }

  /** `reloaded` without the timers: whether the config in force ends this session (a login judged as it ends). */
  #judgeReload(): boolean {
    const c = this.#credentials;
    if (c === null || this.#closed) return false;
    const upstreamChanged = !sameUpstream(c.upstream, this.ctx.upstream);
    const why =
      reloadEndReason(this.ctx.config, c.login, this.conn.remoteAddress, upstreamChanged) ??
      deadFolderRule(this.ctx.config.rules, this.names.delimiter)?.reason ??
      null;
    // The view first: an agent removed with the rules that named it must not be shown the rest of its FETCH.
    if (!this.followReload()) return true;
    if (why === null) return false;
    this.#endByReloadSoon(why);
    return true;
  }

  /**
   * A reload's reason to end the session while a command runs: that command first gets its own reply, then the
   * `* BYE` (`nextEvent`), as at shutdown (`stop`): an agent left without the answer to a write the upstream may
   * have carried out (an APPEND) would make it again. The command keeps what it decided before the reload
   * (docs/operations.md "Reload").
   */
  #reloadEnd: string | null = null;

  endingByReload(): string | null {
    return this.#reloadEnd;
  }

  #endByReloadSoon(why: string): void {
    // Waiting in nextEvent() (#wake set: in IDLE, at a continuation) or between commands: now.
    if (!this.#busy || this.#wake !== null) return this.#endByReload(why);
    this.log.info(`session ${this.id}: ends by reload after the command under way: ${why}`);
    this.#reloadEnd = why;
  }

  /**
   * Takes the rules in force (docs/operations.md "Reload"): after a reload, the folder rights are derived again and
   * the selected mailbox is checked. Its view (which messages exist for the agent, and the sequence numbers built
   * on them) was made by the rules of `box.generation`; it is kept only when the folder is still visible and
   * readable and the same rules decide which of its messages are visible (no message filter before and after, or
   * filters with the same fingerprint, docs/filtering.md "The cache"). Otherwise the session ends with `* BYE`
   * (RFC 3501 §7.1.5): the proxy never goes on showing what the rules now hide, nor relays arrivals classified by
   * old rules. Called at every command, before every sync of new messages, during IDLE for every upstream
   * response, and by the reload itself (`reloaded`). Returns false when the session is over.
   */
  followReload(): boolean {
    if (this.#closed) return false;
    const generation = this.ctx.generation;
    if (this.#generation !== generation) {
      this.#generation = generation;
      this.rights = new FolderRights(this.ctx.policy, this.agent);
    }
    const box = this.box;
    if (box === null || box.generation === generation) return true;
    const why = this.#staleView(box);
    if (why !== null) {
      this.#endByReload(why);
      return false;
    }
    box.generation = generation;
    return true;
  }

  /** Why the rules in force would not show `box` as it is, or null when they would (then its filter is theirs). */
  #staleView(box: SelectedMailbox): string | null {
    const p = box.policyName;
    if (!this.rights.visible(p) || this.decide("folder:read", p).action !== "allow")
      return "the selected folder may no longer be read";
    const filter = messageFilter(this.ctx.policy, p, this.agent);
    if (box.visible === null) {
      if (filter !== null) return "the selected folder is now filtered per message";
      // The FLAGS the agent was given list keywords only where it may read the mail (keywordsShown).
      const keywords = this.decide("mail:read", p).action === "allow";
      return keywords === box.keywordsShown ? null : "the right to read the selected folder's mail changed";
    }
    if (filter === null || box.filter === null || filter.fingerprint !== box.filter.fingerprint)
      return "the rules that decide which messages of the selected folder are visible changed";
    // The same decisions; probe rows name the rules by the reloaded config's names and positions.
    box.filter = filter;
    box.filterRevision = this.ctx.config.revision;
    return null;
  }

  #endByReload(why: string): void {
    this.log.info(`session ${this.id}: ended by reload: ${why}`);
    this.#endReason = `reload: ${why}`;
    this.#bye("Configuration changed; this session ends, log in again");
  }

  /** `reloaded` threw (a bug): the session ends as a reload ends one, or at once if even that fails. */
  endUnreloaded(why: string): void {
    if (this.#closed) return;
    try {
      this.log.error(`session ${this.id}: could not take the new config: ${why}`);
      this.#endByReloadSoon(`the new config could not be applied to it (${why})`);
    } catch {
      // Ending it the usual way failed too: the connection goes without a BYE.
    } finally {
      if (!this.#closed && this.#reloadEnd === null) this.shutdown();
    }
  }

  start(): void {
    this.ctx.sessions.add(this);
    this.conn.onData((chunk) => {
      this.#lastActivity = performance.now();
      if (this.#deflate === null) return this.#feed(chunk);
      // Compressed: inflated bytes reach #feed; a backlog in the inflater stops reading (a deflate bomb).
      if (!this.#deflate.input(chunk) && !this.#inflateBacklog) {
        // One wait at a time: chunks already read before the pause took effect need no listener of their own.
        this.#inflateBacklog = true;
        this.conn.pause();
        void this.#deflate.drained().then(() => {
          this.#inflateBacklog = false;
          // The framer may be over its read-ahead meanwhile: then nextEvent resumes, once it is not.
          this.#resumeInput();
        });
      }
    });
    this.conn.onClose(this.#agentLeft);
    this.sendText(`* OK [CAPABILITY ${this.capabilities().join(" ")}] Mailgator ready`);
    this.#checkTimers();
    void this.#loop();
  }

  /**
   * Ends the session with `* BYE` (RFC 3501 §7.1.5, autologout) when a time limit has passed, else sets the timer
   * for the nearest one: before login, `login_timeout` counted from the connection; then `idle_timeout` of
   * inactivity, which does not run while a command runs (the agent is waiting for the proxy) nor during IDLE,
   * which has `idle_command_timeout` instead (docs/reliability.md, "Connections and timeouts").
   */
  #checkTimers = (): void => {
    this.#timer = null;
    if (this.#closed) return;
    const now = performance.now();
    const { loginTimeoutMs, idleTimeoutMs, idleCommandTimeoutMs } = this.ctx.limits;
    const s = (ms: number): number => Math.round(ms / 1000);
    let next = Number.POSITIVE_INFINITY;
    if (this.state === "not-authenticated") {
      const left = loginTimeoutMs - (now - this.#connectedAt);
      if (left <= 0) return this.#autologout(`no login within ${s(loginTimeoutMs)} s`);
      next = left;
    }
    if (this.#idleSince !== null) {
      const left = idleCommandTimeoutMs - (now - this.#idleSince);
      if (left <= 0) return this.#autologout(`IDLE for ${s(idleCommandTimeoutMs)} s`);
      next = Math.min(next, left);
    } else if (this.#busy) {
      next = Math.min(next, idleTimeoutMs);
    } else {
      const left = idleTimeoutMs - (now - this.#lastActivity);
      if (left <= 0) return this.#autologout(`idle for ${s(idleTimeoutMs)} s`);
      next = Math.min(next, left);
    }
    this.#timer = setTimeout(this.#checkTimers, Math.max(next, 10));
  };

  /**
   * Sets the timer again for the deadlines as they are now: at a reload, and as IDLE begins and ends. The timer is
   * otherwise set only when it fires, so a deadline that became nearer than the one it was set for (an
   * `idle_command_timeout` shorter than `idle_timeout`, or after DONE an `idle_timeout` that ends before the IDLE's
   * limit would have) would be kept only once it fired (docs/reliability.md "Timeouts").
   */
  #rearmTimers(): void {
    if (this.#closed) return;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#checkTimers();
  }

  #autologout(why: string): void {
    this.log.info(`session ${this.id}: autologout, ${why}`);
    this.#endReason = `autologout: ${why}`;
    this.sendText(`* BYE Autologout; ${why}`);
    this.flush();
    this.shutdown();
  }

  /**
   * The proxy is stopping (SIGINT/SIGTERM of serve): a session waiting for its agent ends now with `* BYE`
   * (RFC 9051 §7.1.5); a command under way first gets its own reply, then the `* BYE`, so that an agent is not
   * left without the answer to a write the upstream may have carried out. The listener cuts what is still open
   * after its grace (docs/reliability.md "Shutdown").
   */
  stop(): void {
    if (this.#closed || this.#stopping) return;
    this.#stopping = true;
    // Said now: a command under way when the listener cuts the session after its grace was cut by the shutdown,
    // not by the agent (the access line, and the rows of a command left without its answer).
    this.#endReason = SHUTTING_DOWN;
    // Waiting in nextEvent() (#wake set): between commands, in IDLE, at an AUTHENTICATE prompt.
    if (!this.#busy || this.#wake !== null) this.#stopNow();
    else this.#endWait?.();
  }

  #stopNow(): void {
    this.#endReason = SHUTTING_DOWN;
    this.#bye("Server shutting down");
  }

  /** Ends the session now (listener closing, or either side gone). */
  shutdown(): void {
    if (this.#closed) return;
    this.#closed = true;
    // The wait under way (a failed login's delay, a STARTTLS handshake) ends with the session, whatever ended it: a
    // delay's timer would otherwise keep the process alive.
    const endWait = this.#endWait;
    this.#endWait = null;
    endWait?.();
    this.state = "logout";
    this.ctx.sessions.delete(this);
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    this.#releasePlace?.();
    this.#releasePlace = null;
    // What is still queued for the agent holds no reservation any more: the connection ends (docs/reliability.md
    // "Response memory").
    this.#outputLeft();
    // Not one whose IDLE is ending after its agent hung up: offered to the pool, or closed, when that is over.
    if (this.up !== this.#offerAfterIdle) this.up?.close();
    // Including one still connecting, or opened by a command the agent left in the middle of. Not one whose login
    // upstream is checking, unless the proxy is stopping: its answer is the login's verdict, which its rows, its
    // log line and (a failure) the lock-out's count need (docs/audit.md "What a row records"); the login command
    // closes it once answered, within its deadline (`DEFAULT_TIMEOUTS.handshakeMs`), or the listener's close cuts it.
    for (const up of this.#upstreams) {
      if (up === this.#loginCheck && !this.#stopping) this.#abandonLoginCheck(up);
      else up.close();
    }
    this.#upstreams.clear();
    this.#ending.abort();
    this.#releaseCommand();
    void this.#auxiliary?.then(
      (up) => up.close(),
      () => {},
    );
    // Compressed output is deflated asynchronously: the connection ends once the last of it (a BYE) is written.
    if (this.#deflate === null) this.conn.end();
    else this.#deflate.end(() => this.conn.end());
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
    // A login check going on without its agent: the access line waits for its verdict (loginChecked), so that it
    // says how the login ended, as the login's row and log line do.
    if (this.#loginCheckWritten === null) this.#logAccess();
  }

  /** The access line (docs/operations.md "Access lines"): once per session, when it has ended. */
  #logAccess(): void {
    logAccess({
      protocol: "imap",
      session: this.id,
      client: this.conn.remoteAddress,
      clientPort: this.conn.remotePort,
      connectedAt: this.#connectedAtMs,
      login: this.#loginResult,
      agent: this.#credentials?.login.agent ?? null,
      user: this.#credentials?.username ?? null,
      commands: this.#commands,
      bytesIn: this.conn.bytesIn,
      bytesOut: this.conn.bytesOut,
      end: this.#endReason,
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  get endReason(): string {
    return this.#endReason;
  }

  get upstreamLost(): boolean {
    return this.#closed && this.#endReason === UPSTREAM_LOST;
  }

  #feed(chunk: Uint8Array): void {
    this.#framer.feed(chunk);
    if (this.#framer.buffered > READ_AHEAD_LIMIT) {
      this.conn.pause();
      this.#deflate?.pause();
    }
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  /**
   * Every resume of input goes through here (docs/reliability.md "COMPRESS back-pressure"): nothing while the
   * framer holds more than READ_AHEAD_LIMIT octets ahead of the running command; then the inflater may deliver
   * again (that is what empties its backlog), and the agent's socket is read only when the inflater has no backlog
   * (a deflate bomb's compressed input waits in the agent's socket, not in the proxy).
   */
  #resumeInput(): void {
    if (this.#closed || this.#framer.buffered > READ_AHEAD_LIMIT) return;
    this.#deflate?.resume();
    if (!this.#inflateBacklog) this.conn.resume();
  }

  get compressed(): boolean {
    return this.#deflate !== null;
  }

  /** RFC 4978 §3: from here on both directions are deflated; input already read past the command is compressed. */
  startDeflate(): void {
    const pending = this.#framer.takeBuffered();
    this.#deflate = new Deflate(
      (chunk) => this.#feed(chunk),
      (chunk) => {
        // The agent reads slower than upstream sends: push back on upstream.
        if (!this.conn.write(chunk)) this.#holdUpstream("socket");
      },
      (error) => {
        this.log.info(`session ${this.id}: compressed input is not valid deflate data: ${error.message}`);
        this.#endReason = "invalid compressed data";
        this.#bye("Invalid compressed data");
      },
      () => {
        // What the final block held is answered first (nextEvent ends the session once it needs more input).
        this.#inputEnded = true;
        const wake = this.#wake;
        this.#wake = null;
        wake?.();
      },
    );
    for (const chunk of pending) this.#deflate.input(chunk);
  }

  capabilities(): string[] {
    if (this.state === "authenticated" || this.state === "selected") return authCapabilities(this.up?.caps ?? null);
    const caps = [...PRE_AUTH_CAPABILITIES];
    if (this.ctx.listenTls === "starttls" && !this.conn.secure) {
      caps.push("STARTTLS", "LOGINDISABLED");
      return caps.filter((c) => c !== "AUTH=PLAIN" && c !== "SASL-IR");
    }
    return caps;
  }

  // ---- output ----------------------------------------------------------------------------------------------

  /**
   * Responses accumulate in one encoder until `flush`, which writes the batch (one upstream read's worth) as one
   * buffer: no per-response copies or allocations on the FETCH path.
   */
  send(r: Response): void {
    writeResponse(this.#enc, r);
    this.#scheduleFlush();
  }

  /** One line the proxy writes itself; CR, LF or NUL in it (never valid in a line) become spaces. */
  sendText(line: string): void {
    this.#enc.line(LINE_BREAK.test(line) ? line.replace(LINE_BREAKS, " ") : line);
    this.#scheduleFlush();
  }

  /** The agent is told that the selected folder became read-only, if it was not yet (`readOnlyUntold`). */
  tellReadOnly(): void {
    const box = this.box;
    if (box === null || !box.readOnlyUntold) return;
    box.readOnlyUntold = false;
    this.sendText("* OK [READ-ONLY] Mailbox is now read-only");
  }

  tagged(tag: string, status: "OK" | "NO" | "BAD", code: string | null, text: string): void {
    this.tellReadOnly();
    if (status !== "OK" && this.#durableRows.length > 0)
      this.#writeFailed(`${status} ${code ? `[${code}] ` : ""}${text}`);
    this.sendText(`${tag} ${status} ${code ? `[${code}] ` : ""}${text === "" ? "." : text}`);
  }

  /** A tagged reply carrying upstream's status, with its response code kept only if allowlisted. */
  taggedFrom(
    tag: string,
    status: { status: string; code: ResponseCode | null; text: string },
    code: ResponseCode | null,
  ): void {
    this.tellReadOnly();
    const kind = status.status === "OK" ? "OK" : status.status === "NO" ? "NO" : "BAD";
    const text = withoutTimings(status.text);
    if (kind !== "OK" && this.#durableRows.length > 0)
      this.#writeFailed(`${kind} ${code ? `[${code.name}] ` : ""}${text}`);
    this.send({ type: "status", tag, status: kind, code, text });
  }

  /**
   * The running command is answered `reply` (NO or BAD) after allow rows of it went to disk: each gets an `error`
   * row, its fields but the decision, naming it (`detail.row`) and the reply, so the log does not read as if the write
   * was carried out (docs/audit.md "What a row records"). Queued, as a refusal's row is.
   */
  #writeFailed(reply: string): void {
    this.#followDurable((id) => `failed after row ${id} allowed it: the command was answered ${reply}`);
  }

  /**
   * The session ended (`why`) after the running command's write went upstream and before its answer came: each of
   * its allow rows gets an `error` row naming it and saying that whether upstream carried it out is not known, as the
   * log would otherwise read as if it was (docs/audit.md "What a row records"). Not for a write that never went
   * upstream (the session ended while its rows were made durable, or before its upstream step): nothing was done.
   */
  #writeUnknown(why: string): void {
    if (!this.#writeAnswerDue) return;
    this.#writeAnswerDue = false;
    this.#followDurable((id) => `after row ${id} allowed it: ${why}; whether upstream did it is not known`);
  }

  /** An `error` row for each of the running command's durable allow rows, naming it (`detail.row`): `reason(id)`. */
  #followDurable(reason: (id: number) => string): void {
    const rows = this.#durableRows;
    this.#durableRows = NO_ROWS;
    for (const { ev, id } of rows) {
      const failed: AuditEvent = {
        ...ev,
        time: Date.now(),
        decision: "error",
        reason: reason(id),
        detail: { row: id },
      };
      try {
        this.ctx.audit.record(failed);
      } catch (error) {
        this.log.error(`session ${this.id}: audit row lost: ${(error as Error).message}`);
      }
    }
  }

  /**
   * Output goes out once the current turn of the event loop is over (setImmediate), not at the next microtask: a
   * command's untagged responses, relayed as upstream's reply arrives, and its tagged reply, written a few promise
   * steps later, leave in one write (docs/imap.md "Round trips upstream").
   */
  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(this.#flushLater);
  }

  /** `flush` bound once: scheduled for every command's output, so not a new closure each time. */
  readonly #flushLater = (): void => this.flush();

  /**
   * Runs `done` once what the session has sent so far has left it: the next flush hands it on, to run when the
   * socket has given those bytes (deflated, under COMPRESS) to the kernel; at once if that flush has nothing
   * to write, or when the session ends or its held output is dropped. How a response's reservation of the response
   * memory budget is given back (src/imap/memory.ts, docs/reliability.md "Response memory").
   */
  #afterOutput(done: () => void): void {
    if (this.#closed) return done();
    this.#outputWaiters.push(done);
    this.#scheduleFlush();
  }

  /** Takes the `#afterOutput` callbacks queued until now, as one call that runs them; null when there are none. */
  #takeOutputWaiters(): (() => void) | null {
    const waiters = this.#outputWaiters;
    if (waiters.length === 0) return null;
    this.#outputWaiters = [];
    return () => {
      for (const done of waiters) done();
    };
  }

  /** Runs the `#afterOutput` callbacks queued until now (the output they wait for will not be written). */
  #outputLeft(): void {
    this.#takeOutputWaiters()?.();
  }

  flush(): void {
    this.#flushScheduled = false;
    if (this.#held) return;
    // The batch goes out as views of the encoder's buffer, and large literals by reference (see Encoder): no copy.
    // When the socket took every part directly (nothing queued before it), the buffer is reused for the next
    // batch; otherwise a part may be queued by reference: the encoder moves on to a spare buffer and gets this one
    // back once the socket has written it (Encoder.detach / giveBack).
    const parts = this.#enc.takeViews();
    const left = this.#takeOutputWaiters();
    if (parts.length === 0) return left?.();
    if (this.#deflate !== null) {
      // The deflater holds the views until it has read them; then the buffer comes back (no copy).
      const enc = this.#enc;
      const buf = enc.detach();
      const room = this.#deflate.output(parts, () => {
        enc.giveBack(buf);
        // The batch's deflated octets have gone to the socket by now (before the flush's callback): what holds the
        // reservation is what the socket has not handed to the kernel yet.
        if (left !== null) this.conn.afterWrites(left);
      });
      // Deflate is slower than upstream sends: push back on upstream (src/imap/compress.ts).
      if (!room) this.#holdUpstream("deflater");
      return;
    }
    let full = false;
    let taken = true;
    for (const part of parts) {
      // A part longer than WRITE_PIECE is kept by reference until written (src/net/connection.ts).
      if (!this.conn.writeIdle || part.length > WRITE_PIECE) taken = false;
      full = !this.conn.write(part) || full;
    }
    if (taken) this.#enc.recycle();
    else {
      const enc = this.#enc;
      const buf = enc.detach();
      this.conn.afterWrites(() => enc.giveBack(buf));
    }
    if (left !== null) this.conn.afterWrites(left);
    // The agent reads slower than upstream sends: push back on upstream.
    if (full) this.#holdUpstream("socket");
  }

  /**
   * Output back-pressure: pauses upstream while the agent's socket (`socket`) or, compressed, the deflater
   * (`deflater`) cannot take more, with one drain waiter per cause however many chunks or batches find it full,
   * and resumes upstream only when every cause has drained (docs/reliability.md "COMPRESS back-pressure").
   */
  #holdUpstream(cause: "deflater" | "socket"): void {
    const up = this.up;
    const deflate = this.#deflate;
    if (this.#outputHeld[cause] || this.#closed) return;
    if (cause === "deflater" && deflate === null) return;
    this.#outputHeld[cause] = true;
    if (up !== null && this.#pausedUpstream !== up) {
      // A replaced upstream session (not expected once compressed) no longer feeds this output: it is let go.
      this.#pausedUpstream?.resume();
      this.#pausedUpstream = up;
      up.pause();
    }
    const drained = cause === "deflater" ? deflate!.outputDrained() : this.conn.drained();
    void drained.then(() => {
      this.#outputHeld[cause] = false;
      if (this.#outputHeld.deflater || this.#outputHeld.socket) return;
      const paused = this.#pausedUpstream;
      this.#pausedUpstream = null;
      paused?.resume();
      // The command loop waits in nextEvent() while output is held.
      const wake = this.#wake;
      this.#wake = null;
      wake?.();
    });
  }

  /** Holds what the running command sends until `#release` (its allow row was accepted, or it ended). */
  #hold(): void {
    this.flush();
    this.#held = true;
  }

  #release(): void {
    if (!this.#held) return;
    this.#held = false;
    this.#scheduleFlush();
  }

  /** Ends the session with `* BYE`; what a held command had prepared is not sent (it was never audited). */
  #bye(text: string): void {
    this.#dropHeld();
    this.#held = false;
    this.sendText(`* BYE ${text}`);
    this.flush();
    this.shutdown();
  }

  /** Throws away what the running command sent while held: its row could not be recorded. */
  #dropHeld(): void {
    if (!this.#held) return;
    this.#enc.takeViews();
    this.#enc.recycle();
    this.#outputLeft();
  }

  // ---- input -----------------------------------------------------------------------------------------------

  /** The next framer event, waiting for bytes as needed; null once the session is over. */
  async nextEvent(): Promise<FramerEvent | null> {
    for (;;) {
      if (this.#reloadEnd !== null && !this.#closed) this.#endByReload(this.#reloadEnd);
      if (this.#stopping && !this.#closed) this.#stopNow();
      if (this.#closed) return null;
      // An agent that does not read what it asked for gets no more answers: nothing more is read from it (its
      // input stops at READ_AHEAD_LIMIT, then TCP pushes back) until its socket has drained. Commands answered
      // without upstream (CAPABILITY, NOOP before login, a BAD) would otherwise queue output without bound.
      if (this.#outputHeld.socket || this.#outputHeld.deflater) {
        await new Promise<void>((resolve) => (this.#wake = resolve));
        continue;
      }
      const ev = this.#framer.next();
      if (ev !== null && ev.kind === "error" && ev.error.fatal) {
        // The framer cannot go on (a line past MAX_LINE, a `{n+}` past the drain cap: `[TOOBIG]`, RFC 7888 §4):
        // the session ends here, whoever was reading (the command loop, AUTHENTICATE's response, IDLE's DONE). Ending
        // it is a refusal like a malformed line's, with its `deny` row (docs/audit.md "What a row records"), queued
        // before the untagged BYE (RFC 9051 §7.1.5) goes out and the connection closes.
        const e = ev.error;
        const text = e.detail;
        this.#endReason = `refused: ${text}`;
        this.#refusalRow("(refused)", null, cutText(`${text}; the session was ended`, MAX_ROW_REASON));
        this.sendText(`* BYE ${e.responseCode === null ? "" : `[${e.responseCode}] `}${text}`);
        this.flush();
        this.shutdown();
        return null;
      }
      if (ev !== null) return ev;
      if (this.#inputEnded) {
        // The agent's compressed stream has ended: no command can follow (src/imap/compress.ts).
        this.#endReason = "compressed input ended";
        this.#bye("Compressed input ended");
        return null;
      }
      this.#resumeInput();
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  expectRawLine(): void {
    this.#framer.expectRawLine();
  }

  async #loop(): Promise<void> {
    while (!this.#closed) {
      const ev = await this.nextEvent();
      if (ev === null) break;
      switch (ev.kind) {
        case "literal": {
          const r = ev.request;
          const allowed = this.state !== "not-authenticated" || r.command === "LOGIN";
          if (!allowed) {
            // A refused command like any other (docs/reliability.md "Malformed commands"): counted, or a client
            // could send refused literals without end.
            this.#refuseLiteral(r, "BAD", null, "Literal refused before login");
            this.#badCommand();
          } else if (
            r.command === "LOGIN" &&
            this.state === "not-authenticated" &&
            refuseLoginLiteralBeforeStartTls(this, r.nonSync)
          ) {
            // Before STARTTLS no `+` asks for a LOGIN's user name or password in clear (commands/login.ts, which
            // wrote the refusal's row).
            this.#refuseLiteral(r, "NO", "PRIVACYREQUIRED", "Use STARTTLS first", false);
            this.#badCommand();
          } else if (r.binary && !this.#literal8(r.command)) {
            this.#refuseLiteral(r, "BAD", "CLIENTBUG", "literal8 is allowed in APPEND only, with BINARY");
            this.#badCommand();
          } else {
            const reserved = await this.#reserveLiteral(r);
            if (reserved === "refused") {
              if (this.#closed) break;
              this.#refuseLiteral(r, "NO", "LIMIT", "Too many large literals at once on this server; try again later");
              continue;
            }
            // A literal counted against the budget is read into one buffer of its announced size: its memory is
            // reserved already (docs/reliability.md "Command memory").
            this.#framer.acceptLiteral(reserved === "counted");
            if (!r.nonSync) {
              this.sendText("+ Ready for literal data");
              this.flush();
            }
          }
          continue;
        }
        case "error": {
          // Not fatal: nextEvent() ends the session on a fatal one.
          this.#releaseCommand();
          const e = ev.error;
          this.#refusalRow(e.command ?? "(refused)", null, cutText(e.detail, MAX_ROW_REASON));
          this.tagged(e.tag ?? "*", "BAD", e.responseCode, e.detail);
          this.#badCommand();
          continue;
        }
        case "line":
          // A raw line is only expected inside IDLE or AUTHENTICATE, which read it themselves.
          continue;
        case "frame": {
          // The command's literals hold their reservation until it has run (docs/reliability.md "Command memory").
          try {
            // The audit log is far behind (a session flooding it with rows): wait until it has caught up, so that
            // every session's rows, and the writes waiting for theirs, wait behind a bounded queue
            // (src/imap/limits.ts).
            if (this.ctx.audit.queued > AUDIT_BACKLOG_PAUSE_ROWS) {
              await waitForAuditBacklog(this.ctx.audit);
              if (this.#closed) break;
            }
            const parsed = parseCommand(ev.frame);
            if (!parsed.ok) {
              const e = parsed.error;
              if (e.code === "mailbox-name" && e.tag !== null && e.command !== null) {
                // Not valid modified UTF-7 and the like: NO, as servers answer (commands/invalid-name.ts).
                this.#busy = true;
                let answered = false;
                try {
                  answered = await invalidName(this, e.tag, e.command, e.detail);
                } catch (error) {
                  answered = true;
                  this.#fail({ tag: e.tag, name: e.command }, error);
                } finally {
                  this.#busy = false;
                }
                if (answered) {
                  this.flush();
                  continue;
                }
              }
              this.#refusalRow("(refused)", null, cutText(e.detail, MAX_ROW_REASON));
              // An unsupported charset is NO [BADCHARSET], not BAD (RFC 9051 §6.4.4): the command was well formed.
              this.tagged(e.tag ?? "*", e.code === "bad-charset" ? "NO" : "BAD", e.responseCode, e.detail);
              this.#badCommand();
              continue;
            }
            this.#busy = true;
            this.#commands++;
            try {
              await this.#execute(parsed.value);
            } finally {
              this.#busy = false;
              this.#lastActivity = performance.now();
              this.#idleEnded();
            }
            this.flush();
          } finally {
            this.#releaseCommand();
          }
        }
      }
    }
  }

  /**
   * One more malformed command (MAX_BAD_COMMANDS): at the limit the session ends with `* BYE`. After login the count
   * starts again once BAD_COMMAND_WINDOW_MS have passed since the first one counted; a well-formed command between
   * two bad ones does not start it again, or alternating them would write refusal rows without end.
   */
  #badCommand(): void {
    const now = performance.now();
    if (this.state !== "not-authenticated" && now - this.#badSince > BAD_COMMAND_WINDOW_MS) this.#badCommands = 0;
    if (this.#badCommands === 0) this.#badSince = now;
    if (++this.#badCommands < MAX_BAD_COMMANDS || this.#closed) return;
    this.#endReason = "too many invalid commands";
    this.#bye("Too many invalid commands");
  }

  /**
   * Reserves what a literal of the command being read takes past COMMAND_MEMORY_FREE of its literals, before any of
   * its octets is read (docs/reliability.md "Command memory"). The command's first counted literal waits for room,
   * first come, first served, with reading held (a `{n}` gets no `+`; a `{n+}` stays in the agent's socket behind
   * READ_AHEAD_LIMIT). A command that already holds a reservation never waits, or two sessions could each hold part
   * and wait for the other: its next literal goes ahead of those waiting if the budget has room, and is refused
   * otherwise ("refused"), as is one larger than the whole budget; "refused" too when the session ended while it
   * waited. "free" when none of the literal is counted (it fits in COMMAND_MEMORY_FREE with the command's earlier
   * ones), "counted" when some is and that memory is now reserved.
   */
  async #reserveLiteral(r: LiteralRequest): Promise<"refused" | "free" | "counted"> {
    const memory = this.ctx.commandMemory;
    if (r.index === 0) this.#releaseCommand();
    const before = Math.max(0, this.#commandLiterals - memory.free);
    this.#commandLiterals += r.size;
    const counted = Math.max(0, this.#commandLiterals - memory.free) - before;
    if (counted === 0) return "free";
    if (this.#commandReserved > 0 || counted > memory.budget) {
      if (!memory.tryTake(counted, true)) return "refused";
      this.#commandReserved += counted;
      return "counted";
    }
    const wait = memory.take(counted);
    const granted = wait.granted.then(() => {
      // Granted after the session ended: nobody will give it back but here.
      if (this.#closed) memory.give(counted);
      else this.#commandReserved += counted;
    });
    const ended = new Promise<void>((resolve) => {
      if (this.#ending.signal.aborted) resolve();
      else this.#ending.signal.addEventListener("abort", () => resolve(), { once: true });
    });
    await Promise.race([granted, ended]);
    if (!this.#closed) return "counted";
    wait.cancel();
    return "refused";
  }

  /** The command being read is over (run, refused or failed): its literals' reservation is given back. */
  #releaseCommand(): void {
    this.#commandLiterals = 0;
    if (this.#commandReserved === 0) return;
    this.ctx.commandMemory.give(this.#commandReserved);
    this.#commandReserved = 0;
  }

  /** literal8 (`~{n}`) is APPEND's only (RFC 3516 §4.4), and only while BINARY is offered. */
  #literal8(command: string | null): boolean {
    return command === "APPEND" && this.capabilities().includes("BINARY");
  }

  async #execute(cmd: Command): Promise<void> {
    const name = cmd.name;
    // Reloaded since the last command: what was derived from the old policy goes (docs/operations.md "Reload").
    if (!this.followReload()) return;
    const entry = ImapSession.#table[name] as Entry<Command["name"]> | undefined;
    const when = entry?.when ?? "authenticated";
    if (this.state === "not-authenticated" && when !== "any" && when !== "not-authenticated")
      return this.#wrongState(cmd, "Log in first");
    if (this.state !== "not-authenticated" && when === "not-authenticated")
      return this.#wrongState(cmd, "Already logged in");
    if (when === "selected" && this.state !== "selected") return this.#wrongState(cmd, "No mailbox selected");
    const rowsBefore = this.#rows;
    const audited = entry?.audited ?? false;
    if (audited) this.#hold();
    try {
      if (audited && !entry?.checksAudit) this.requireAudit();
      if (entry === undefined) throw new Refusal("BAD", null, `${name} is not supported`);
      await entry.run(this, cmd);
    } catch (error) {
      // A row that could not be recorded: the agent gets the NO and nothing the command had prepared.
      if (error instanceof AuditUnavailableError) this.#dropHeld();
      this.#release();
      // The session ended under the command (the agent left, upstream was lost, the proxy is stopping) before an
      // answer came: nobody is answered and `#fail` writes nothing, so the reads it decided and sent upstream have
      // their rows here (docs/audit.md). Otherwise `#fail` writes the command's row: the refusal's, or the error's.
      // A write that went upstream and was not answered: whether it was carried out is not known, and its allow rows
      // are followed by error rows saying so.
      if (this.#closed) {
        const why = `no answer: the session ended before upstream answered (${this.#endReason})`;
        this.#writeUnanswered(why);
        this.#writeUnknown(why);
      } else this.#awaited.clear();
      this.#fail(cmd, error, rowsBefore);
    } finally {
      this.#release();
      this.#durableRows = NO_ROWS;
      this.#writeAnswerDue = false;
      this.#writeAnswered = false;
      this.#writeUnanswered("not completed: the command ended before its answer was read");
    }
  }

  #logout(tag: string): Promise<void> {
    this.#endReason = "logout";
    this.sendText("* BYE Logging out");
    this.tagged(tag, "OK", null, "Logout completed");
    this.flush();
    if (this.up !== null) {
      // Kept for the next login of the account, or logged out politely (at most 2 s); not cut by shutdown either way.
      if (!this.#offerUpstream()) void this.up.logout();
    }
    this.up = null;
    this.shutdown();
    return Promise.resolve();
  }

  /**
   * The agent's connection closed. Between two commands (none under way, none in IDLE: `#busy` is false) the
   * upstream session is where a LOGOUT would leave it, and is offered to the pool the same way; the commands the
   * agent sent and this session did not start are never run (`nextEvent` returns null once closed). During a
   * command it is closed with the rest: the command's next upstream step must never reach a session that another
   * agent may have taken (docs/imap.md "Upstream sessions kept for the next login").
   */
  #agentLeft = (): void => {
    if (!this.#closed && !this.#stopping && this.#reloadEnd === null) {
      if (!this.#busy) this.#offerUpstream();
      else if (this.#idleSince !== null) this.#offerWhenIdleEnds();
    }
    this.shutdown();
  };

  /**
   * The agent hung up in IDLE, which changes nothing upstream: once the command has ended its upstream IDLE (DONE,
   * answered OK, as the agent's own DONE would have), the session is where the agent's next command would have
   * found it, and is offered to the pool then (`#idleEnded`); the IDLE command starts nothing else after a hang-up
   * (commands/idle.ts; a sync already under way finishes first, and the pool keeps nothing with a command in
   * flight). Until then shutdown leaves it open, and the pool closes it on `clear` (a reload, the listener closing)
   * or when it has not been offered within UPSTREAM_POOL_UNSELECT_MS (`UpstreamPool.awaitOffer`).
   */
  #offerWhenIdleEnds(): void {
    const up = this.up;
    // The listener closing (the pool keeps nothing any more): closed by shutdown with the rest.
    if (up === null || this.#poolKey === null || !this.ctx.upstreamPool.awaitOffer(up)) return;
    this.#upstreams.delete(up);
    this.#offerAfterIdle = up;
  }

  /** A command has ended: an upstream session waiting for its IDLE to end (`#offerWhenIdleEnds`) is offered now. */
  #idleEnded(): void {
    const up = this.#offerAfterIdle;
    if (up === null) return;
    this.#offerAfterIdle = null;
    // The pool keeps it only if nothing is in flight and it did not fail (an IDLE whose DONE went unanswered).
    this.#handToPool(up);
  }

  /**
   * Hands the upstream session of a vault login to the pool (src/imap/upstream-pool.ts: it keeps it only if nothing
   * is under way and it is unchanged, and logs it out otherwise); `this.up` is then null and shutdown leaves it
   * alone. False, with nothing changed, for a pass-through login (never kept) or no upstream session.
   */
  #offerUpstream(): boolean {
    const up = this.up;
    if (up === null || this.#poolKey === null) return false;
    this.#handToPool(up);
    return true;
  }

  /** Lets go of `up`, a vault login's upstream session, and gives it to the pool (`#poolKey` is set). */
  #handToPool(up: UpstreamSession): void {
    this.#upstreams.delete(up);
    if (this.up === up) this.up = null;
    // Paused while the agent's output was held: the pool resumes it (`detach`); the end of that wait must not
    // touch it again once it may belong to another session.
    if (this.#pausedUpstream === up) this.#pausedUpstream = null;
    this.ctx.upstreamPool.keep(this.#poolKey!, up, this.names.delimiter);
  }

  /** IDLE has its own time limit, `idle_command_timeout`, instead of the inactivity timeout (`#checkTimers`). */
  async #idle(cmd: CommandOf<"IDLE">): Promise<void> {
    this.#idleSince = performance.now();
    this.#rearmTimers();
    try {
      await idle(this, cmd);
    } finally {
      this.#idleSince = null;
      // DONE counts as activity: `idle_timeout` runs from here, not from when the IDLE's own limit would have ended.
      this.#rearmTimers();
    }
  }

  /**
   * A command the session's state does not take (RFC 3501 §3): refused `BAD` with a deny row (docs/audit.md "What a
   * row records": every refusal is a row), and counted with the malformed ones (MAX_BAD_COMMANDS), so that a client
   * cannot send them without end.
   */
  #wrongState(cmd: Command, reason: string): void {
    this.#refusalRow(cmd.name, null, reason);
    this.tagged(cmd.tag, "BAD", null, reason);
    this.#badCommand();
  }

  /**
   * Refuses the literal the read loop was asked about, and with it its command: the framer skips it (no `+`), the
   * command's literal reservation goes, the refusal has its deny row (docs/audit.md "What a row records": every
   * refusal, those that need no rule included; `row` false when the caller wrote it) and the tagged reply.
   */
  #refuseLiteral(r: LiteralRequest, status: "NO" | "BAD", code: string | null, text: string, row = true): void {
    this.#framer.refuseLiteral();
    // An earlier literal of this command may hold a reservation: the command is over.
    this.#releaseCommand();
    if (row) this.#refusalRow(r.command ?? "(refused)", null, text);
    this.tagged(r.tag ?? "*", status, code, text);
  }

  /** The `deny` row of a refusal no rule decided: a malformed line, a command in the wrong state, a check's own. */
  #refusalRow(command: string, folder: string | null, reason: string): void {
    this.auditRow({ command, operation: null, folder, decision: "deny", rule: null, ruleIndex: null, reason });
  }

  /**
   * The one place a command's errors become replies: a Refusal as thrown, an unavailable audit log `NO [UNAVAILABLE]`,
   * a lost upstream `BYE`, anything else logged, audited as an `error` row and `NO [SERVERBUG]`. Parse errors are
   * answered in the read loop. A refusal that wrote no row of its own (`rowsBefore`: the session's row count when
   * the command began; a check with no rule to cite, such as an unknown COMPRESS mechanism) gets a deny row here.
   */
  #fail(cmd: { readonly tag: string; readonly name: string }, error: unknown, rowsBefore = -1): void {
    if (this.#closed) {
      // The agent left (or the proxy is stopping) during the command: nobody to answer, and shutdown closed upstream.
      this.log.debug(`session ${this.id}: ${cmd.name} ended with the session: ${(error as Error)?.message}`);
      return;
    }
    if (error instanceof Refusal) {
      if (this.#rows === rowsBefore) this.#refusalRow(cmd.name, this.box?.policyName ?? null, error.message);
      this.tagged(cmd.tag, error.status, error.code, error.message);
      // Before login every refused command counts with the malformed ones (MAX_BAD_COMMANDS): a cancelled or
      // refused AUTHENTICATE, a second STARTTLS, a login before STARTTLS each have their row, and no failed-login
      // delay paces them (docs/reliability.md "Malformed commands").
      if (this.state === "not-authenticated") this.#badCommand();
      return;
    }
    if (error instanceof AuditUnavailableError) {
      this.log.error(`session ${this.id}: ${error.message}`);
      return this.tagged(cmd.tag, "NO", "UNAVAILABLE", "The audit log is unavailable; nothing was done");
    }
    // A command that failed upstream or inside the proxy has its row too (docs/imap.md "Decisions": every refusal
    // is a row).
    const errorRow = (reason: string): void =>
      this.auditRow({
        command: cmd.name,
        operation: null,
        folder: this.box?.policyName ?? null,
        decision: "error",
        rule: null,
        ruleIndex: null,
        reason,
      });
    if (error instanceof UpstreamError) {
      // The message is the agent's; a cause (an OAuth2 token request's failure) is for the log and the row only.
      const detail = error.cause instanceof Error ? `${error.message}: ${error.cause.message}` : error.message;
      this.log.warn(`session ${this.id}: ${detail}`);
      errorRow(detail);
      return this.#bye(`Upstream server unavailable: ${error.message}`);
    }
    this.log.error(`session ${this.id}: ${cmd.name} failed: ${(error as Error)?.stack ?? String(error)}`);
    errorRow(`internal error: ${errorMessage(error)}`);
    this.tagged(cmd.tag, "NO", "SERVERBUG", "Internal error");
  }

  // ---- upstream --------------------------------------------------------------------------------------------

  /**
   * Runs an upstream command; every untagged response updates the mailbox model, then goes to `onData`. Without
   * `onData`, another session's flag change (and a new keyword's FLAGS) is still relayed to the agent (`relayUpdate`).
   */
  upstreamRun(
    command: Parameters<UpstreamSession["run"]>[0],
    onData?: ((r: Response) => void) | null,
    gate?: Promise<unknown> | null,
  ): ReturnType<UpstreamSession["run"]> {
    const up = this.up;
    if (up === null) return Promise.reject(new UpstreamError("no upstream session"));
    // Not an async function (one promise step less per command): a throw becomes a rejection here. No default
    // parameters and no closure made here (`#routed` makes it): either would add scope objects to every command.
    try {
      return up.run(command, onData ? this.#routed(onData) : this.#relayed, undefined, null, null, gate ?? null);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * `upstreamRun` for the upstream step of a write whose allow rows are on disk (`auditDurable`): from when it is
   * sent (with `gate`, when the gate opens and its literals may go) until it is answered, a session that ends leaves
   * those rows followed by error rows saying whether upstream did it is not known (`#writeUnknown`). Sent after the
   * session ended, it never reaches upstream, and nothing is said.
   */
  upstreamWrite(
    command: Parameters<UpstreamSession["run"]>[0],
    onData?: ((r: Response) => void) | null,
    gate?: Promise<unknown> | null,
  ): ReturnType<UpstreamSession["run"]> {
    const up = this.up;
    const run = this.upstreamRun(command, onData, gate);
    let over = false;
    const sent = (): void => {
      if (!this.#closed && !over) this.#writeAnswerDue = true;
    };
    if (gate) gate.then(sent, () => {});
    else sent();
    run.then(
      () => {
        over = true;
        this.#writeAnswerDue = false;
        this.#writeAnswered = true;
      },
      () => {
        over = true;
        // Its literal never went (an APPEND's message waiting for `+`): upstream did nothing, as for a write that
        // never went upstream, and the allow rows stand alone (docs/audit.md "What a row records"). Not when an
        // earlier part of the same write was carried out: the write as a whole did go upstream.
        if (up?.cutMidCommand === true && !this.#writeAnswered) this.#writeAnswerDue = false;
      },
    );
    return run;
  }

  /**
   * UNSELECT upstream (RFC 3691) for a folder the agent is told is not selected: a SELECT refused after upstream opened
   * it, CLOSE, UNSELECT, a DELETE or RENAME of the selected folder. Upstream that answers it NO or BAD while it still
   * has a mailbox selected (`UpstreamSession.mailboxSelected`) keeps the folder open under a session the proxy and its
   * agent take for one with none: its responses would come with later commands, and at the next SELECT before that
   * one's `[CLOSED]` (RFC 9051 §7.1), where they would be taken for the new folder's. Fail closed: an `error` row,
   * `* BYE`, and the session ends (docs/imap.md "Decisions"); the caller gets an UpstreamError.
   *
   * `sent`: an UNSELECT the caller sent itself while a mailbox was selected, with a SELECT pipelined behind it
   * (src/imap/commands/select.ts). Once this runs, that SELECT's answer may have changed `mailboxSelected`, so a
   * refusal alone ends the session.
   */
  async unselectUpstream(
    command: string,
    folder: string | null,
    sent: Promise<StatusResponse> | null = null,
  ): Promise<void> {
    const up = this.up;
    const st = await (sent ?? this.upstreamRun({ name: "UNSELECT" }));
    if (st.status === "OK" || this.#closed || up === null || up !== this.up) return;
    if (sent === null && !up.mailboxSelected) return;
    const answer = `${st.status}${st.code === null ? "" : ` [${st.code.name}]`} ${withoutTimings(st.text)}`;
    const why = cutText(`the upstream server kept the mailbox selected: UNSELECT answered ${answer}`, MAX_ROW_REASON);
    this.auditRow({
      command,
      operation: null,
      folder,
      decision: "error",
      rule: null,
      ruleIndex: null,
      reason: `${why}; the session was ended`,
    });
    this.#endReason = "upstream kept a mailbox selected";
    this.#bye("[UNAVAILABLE] The server did not close the mailbox");
    throw new UpstreamError(why);
  }

  /** `upstreamRun`'s handler for `onData`: the mailbox model first, then `onData`. */
  #routed(onData: (r: Response) => void): (r: Response) => void {
    return (r) => {
      if (!this.model(r)) onData(r);
    };
  }

  /** `upstreamRun`'s handler without `onData`: the mailbox model, then another session's flag change relayed. */
  readonly #relayed = (r: Response): void => {
    if (!this.model(r)) relayUpdate(this, r);
  };

  /**
   * Applies an untagged response to the mailbox model. Returns true when it was consumed (EXISTS, EXPUNGE,
   * RECENT, dropped data); FETCH and the rest are left to the caller.
   */
  model(r: Response): boolean {
    const box = this.box;
    switch (r.type) {
      case "EXISTS":
        box?.onExists(r.n);
        return true;
      case "EXPUNGE":
        box?.onExpunge(r.n);
        return true;
      case "RECENT":
        if (box !== null) box.upstreamRecent = r.n;
        return true;
      case "VANISHED":
      case "unknown":
      case "CAPABILITY":
      case "ENABLED":
        return true;
      case "FETCH":
        if (box !== null) {
          for (const a of r.attrs) if (a.name === "UID") box.learnUid(r.seq, a.value);
        }
        return false;
      case "status":
        // The mailbox became read-only while selected (RFC 3501 §7.1): its writes are refused from now on
        // (refuseReadOnly). Not consumed: during a command or in IDLE the agent is told now (forwardUntagged,
        // tellReadOnly); else before the next tagged reply.
        if (box !== null && readOnlyNotice(r)) {
          box.readOnly = true;
          box.readOnlyUntold = true;
        }
        return false;
      default:
        return false;
    }
  }

  /** Unsolicited responses between commands update the model; the agent hears of them at the next command. */
  attachUpstream(up: UpstreamSession): void {
    this.up = up;
    up.onUnsolicited = (r) => {
      this.model(r);
    };
    up.onBatch = () => this.#scheduleFlush();
    up.onClose = (error) => {
      if (this.#closed || this.up !== up) return;
      // The command under way ends with it: its rows say why (`#writeUnanswered`), and so does the access log.
      if (this.#endReason === CLIENT_CLOSED) this.#endReason = UPSTREAM_LOST;
      this.auditRow({
        command: "(upstream)",
        operation: null,
        folder: null,
        decision: "error",
        rule: null,
        ruleIndex: null,
        reason: error?.message ?? "upstream closed",
      });
      this.#bye("Upstream connection lost");
    };
  }

  /**
   * Before a tagged reply: learn the UIDs of new messages and report the size change (RFC 3501 §5.2); announce
   * expunges when the command permits them (§7.4.1: not during FETCH, STORE, SEARCH).
   */
  sync(allowExpunge: boolean): Promise<void> {
    // Nothing new is classified or announced under rules that are no longer in force.
    if (!this.followReload()) return SETTLED;
    const box = this.box;
    if (box === null) return SETTLED;
    // An unfiltered folder with every UID known (nearly every command): nothing to wait for, so no promise steps
    // of its own; what it announces, and in which order, is the same.
    if (!box.hasUnknown && box.visible === null) {
      this.#announce(box, allowExpunge);
      this.#relayRecent(box);
      return SETTLED;
    }
    return this.#syncWaiting(box, allowExpunge);
  }

  async #syncWaiting(box: SelectedMailbox, allowExpunge: boolean): Promise<void> {
    if (box.hasUnknown) {
      const from = box.lastKnownUid + 1;
      await this.upstreamRun({
        name: "FETCH",
        uid: true,
        set: [{ start: from, stop: 0 }],
        items: [{ type: "UID" }],
        macro: null,
      });
    }
    // A filtered folder's arrivals are classified before the agent hears of any (docs/protocol.md §3 "IDLE flow").
    if (box.visible !== null) await classifyNew(this, box);
    this.#announce(box, allowExpunge);
    await this.#syncRecent(box);
  }

  /** Expunges (when the command permits them) and the new size, as `sync` tells them. */
  #announce(box: SelectedMailbox, allowExpunge: boolean): void {
    if (allowExpunge) for (const k of box.takeExpunges()) this.sendText(`* ${k} EXPUNGE`);
    const n = box.admitNew();
    if (n !== null) this.sendText(`* ${n} EXISTS`);
    // A [READ-ONLY] in the replies of the sync itself: told now, which in IDLE is before DONE.
    this.tellReadOnly();
  }

  /**
   * The agent's RECENT (RFC 3501 §7.3.2). Unfiltered: upstream's `* n RECENT` as it is. Filtered: the number of
   * visible messages upstream counts as recent, counted again whenever the agent's view grew or lost a message
   * (`recentDue`) and told only when it changed. Upstream's own RECENT is no cue there: its count moves with hidden
   * arrivals and expunges, and stays put when a hidden change offsets a visible one, so a RECENT it triggers (or
   * leaves out) would tell of hidden messages (docs/filtering.md "The view"). While an expunge waits to be announced
   * the count waits too: the message is still in the agent's view, and no longer in upstream's search.
   */
  async #syncRecent(box: SelectedMailbox): Promise<void> {
    if (box.visible === null) return this.#relayRecent(box);
    box.upstreamRecent = null;
    if (!box.recentDue || box.opening || box.pendingExpunges.length > 0) return;
    box.recentDue = false;
    const recent = box.countKnown(await searchUids(sessionRunner(this), "RECENT"));
    if (recent === box.recent) return;
    box.recent = recent;
    this.sendText(`* ${recent} RECENT`);
  }

  /** An unfiltered folder's RECENT: upstream's `* n RECENT`, if one came, as it is. */
  #relayRecent(box: SelectedMailbox): void {
    const upstream = box.upstreamRecent;
    box.upstreamRecent = null;
    if (upstream !== null) this.sendText(`* ${upstream} RECENT`);
  }

  // ---- policy and audit ------------------------------------------------------------------------------------

  /**
   * Read operations in a filtered folder are allowed for the visible messages (filtering.ts). The policy and the
   * config are read together, with nothing awaited between: both are those of one reload (LiveConfig).
   */
  decide(op: Operation, folder: string): Decided {
    const policy = this.ctx.policy;
    const revision = this.ctx.config.revision;
    const agent = this.agent;
    let known = this.#decided;
    if (
      known === null ||
      known.policy !== policy ||
      known.revision !== revision ||
      known.folder !== folder ||
      known.agent !== agent
    ) {
      known = { policy, revision, folder, agent, byOperation: new Map() };
      this.#decided = known;
    }
    let d = known.byOperation.get(op);
    if (d === undefined) {
      const e = decideInFolder(policy, op, folder, agent);
      d = { action: e.action, rule: e.rule, ruleIndex: e.ruleIndex, reason: e.reason, revision };
      known.byOperation.set(op, d);
    }
    return d;
  }

  /**
   * `decide`'s answers for the last folder it was asked about, by operation: decideInFolder is a function of the
   * policy, the operation, the folder and the agent alone, so a command on the selected folder (each FETCH asks for
   * mail:read and mail:flag) does not evaluate the rules again. Any change of policy, revision, folder or agent starts
   * it afresh; at most one entry per operation.
   */
  #decided: {
    readonly policy: Policy;
    readonly revision: string;
    readonly folder: string;
    readonly agent: string | null;
    readonly byOperation: Map<Operation, Decided>;
  } | null = null;

  /**
   * Runs `use` on a second upstream session, logged in like the first, opened when first needed and again when it
   * was lost. Uses run one after another (STATUS of a filtered folder, a helper of a large classification that
   * may outlast its SELECT), so none finds the session in another's folder or with a command in flight.
   */
  withAuxiliary<T>(use: (up: UpstreamSession) => Promise<T>): Promise<T> {
    const run = async (): Promise<T> => {
      const open = this.#openAuxiliary;
      if (open === null || this.#closed) throw new UpstreamError("not logged in");
      let up = await this.#auxiliary?.catch(() => null);
      if (up === undefined || up === null || up.closed) {
        up?.close();
        this.#auxiliary = open();
        up = await this.#auxiliary.catch((error: unknown) => {
          this.#auxiliary = null;
          throw error;
        });
      }
      // The agent may have left while the connection opened: shutdown closes only what it found.
      if (this.#closed) {
        up.close();
        throw new UpstreamError("not logged in");
      }
      return use(up);
    };
    const result = this.#auxiliaryTurn.then(run, run);
    this.#auxiliaryTurn = result.then(
      () => {},
      () => {},
    );
    return result;
  }

  /**
   * Queues a row. An allow row that cannot be queued throws AuditUnavailableError (the command is refused); one
   * that is queued lets the command's held output go to the agent.
   */
  auditRow(ev: Row): void {
    try {
      this.ctx.audit.record(this.#event(ev));
    } catch (error) {
      if (ev.decision === "allow") throw error;
      this.log.error(`session ${this.id}: audit row lost: ${(error as Error).message}`);
      return;
    }
    if (ev.decision === "allow") this.#release();
  }

  awaitAnswer(row: Row): AwaitedRow {
    this.#awaited.add(row);
    return {
      write: (changes) => {
        // Taken off first: a row that then cannot be queued fails the command closed, and is not tried again here.
        if (!this.#awaited.delete(row)) return;
        this.auditRow(changes === undefined ? row : { ...row, ...changes });
      },
      drop: () => {
        this.#awaited.delete(row);
      },
    };
  }

  /**
   * The rows `awaitAnswer` registered that their command did not write, when the command ends (a session that ends
   * closes its upstream connections, so a command waiting for an answer fails then): written now, with no counts and
   * `; <why>` after their reason (docs/audit.md "What a row records"). The decision stays: it was made, and the
   * command went upstream. A row that cannot be queued is logged: nobody waits for the answer any more.
   */
  #writeUnanswered(why: string): void {
    if (this.#awaited.size === 0) return;
    const rows = [...this.#awaited];
    this.#awaited.clear();
    for (const row of rows) {
      const ev = { ...row, count: null, hiddenCount: null, reason: `${row.reason}; ${why}` };
      try {
        this.ctx.audit.record(this.#event(ev));
      } catch (error) {
        this.log.error(`session ${this.id}: audit row lost: ${(error as Error).message}`);
      }
    }
  }

  /**
   * Records and waits until the row is on disk: for writes, before they go upstream (docs/audit.md). An allow row is
   * followed by an `error` row if the command is then answered NO or BAD (`#writeFailed`), unless `followed` is false.
   */
  async auditDurable(ev: Row, group?: object, followed = true): Promise<void> {
    const event = this.#event(ev);
    // The list of the command under way: a row that became durable only after its command ended (a rejected
    // sibling of its group ended it) goes to that command's list, not to the next command's.
    if (followed && this.#durableRows === NO_ROWS) this.#durableRows = [];
    const rows = this.#durableRows;
    const id = await this.ctx.audit.durable(event, group === undefined ? {} : { group });
    if (followed && event.decision === "allow") rows.push({ ev: event, id });
    this.#release();
  }

  /**
   * Throws AuditUnavailableError while the audit log is known to be failing (a commit failed and no retry has
   * succeeded yet): audited commands are refused before they do anything.
   */
  requireAudit(): void {
    if (!this.ctx.audit.healthy) {
      throw new AuditUnavailableError(`audit: ${this.ctx.audit.path} is not accepting rows; command refused`);
    }
  }

  /**
   * A row citing a decision carries the revision of the config that made it, which a reload since may have
   * replaced (docs/audit.md "What a row records"); any other row, the revision in force.
   */
  #event(ev: Row): AuditEvent {
    this.#rows++;
    // Every field of AuditEvent named once (no rest and spread copies: a row per command goes through here).
    return {
      time: ev.time ?? Date.now(),
      session: this.id,
      agent: this.user,
      clientAddr: this.conn.remoteAddress,
      protocol: "imap",
      command: ev.command,
      operation: ev.operation,
      folder: ev.folder,
      target: ev.target ?? null,
      decision: ev.decision,
      rule: ev.rule,
      ruleIndex: ev.ruleIndex,
      reason: ev.reason,
      configRevision: ev.revision ?? this.ctx.config.revision,
      count: ev.count ?? null,
      hiddenCount: ev.hiddenCount ?? null,
      detail: ev.detail ?? null,
    };
  }

  /** Audits a decision and throws a NO [NOPERM] refusal when it denies. */
  require(command: string, op: Operation, folder: string, target: string | null = null): Decided {
    const d = this.decide(op, folder);
    if (d.action !== "allow") {
      this.auditRow({
        command,
        operation: op,
        folder,
        target,
        decision: "deny",
        ...cites(d),
        reason: d.reason,
      });
      throw new Refusal("NO", "NOPERM", `Not permitted: ${op} in this folder`);
    }
    return d;
  }

  // ---- login -----------------------------------------------------------------------------------------------

  /** STARTTLS after its OK: bytes sent in clear are discarded (RFC 9051 §6.2.1, docs/protocol.md §7.20). */
  async upgradeToTls(identity: TlsIdentity): Promise<void> {
    this.#framer.discardBuffered();
    this.#framer = new Framer({ role: "server", allowLiteral8: true });
    // A handshake under way when the proxy stops is cut (no BYE can go out in the middle of it); the catch below
    // then ends the session.
    this.#endWait = () => this.conn.destroy();
    try {
      await this.conn.startTlsServer(identity.key, identity.cert, this.ctx.timeouts.handshakeMs);
    } catch (e) {
      // The access line names the handshake (timed out, refused, cut), unless shutdown or a reload cut it and said so.
      if (this.#endReason === CLIENT_CLOSED) this.#endReason = `TLS handshake failed: ${errorMessage(e)}`;
      this.shutdown();
    } finally {
      this.#endWait = null;
    }
    this.#framer.discardBuffered();
  }

  /** Takes a place under `max_sessions_per_agent` for `key`; false when there is none (or the session ended). */
  takePlace(key: string): boolean {
    const place = this.#closed ? null : this.ctx.perAgent.acquire(key);
    if (place === null) return false;
    this.#releasePlace = place;
    return true;
  }

  setUser(user: string | null): void {
    this.user = user;
  }

  /**
   * The login's row is on disk: the session is logged in as `o.agent` (null in pass-through mode) with `o.up`,
   * whose hierarchy delimiter is `o.delimiter`. `o.loginUpstream` logs the auxiliary session in the same way.
   */
  loggedIn(o: LoggedIn): void {
    const { tag, up, agent, upstreamUser, loginUpstream, generation, delimiter, config, poolKey } = o;
    this.agent = agent;
    this.#poolKey = poolKey;
    this.account = `${this.ctx.upstream.host}:${this.ctx.upstream.port}/${upstreamUser}`;
    const { upstream, timeouts } = this.ctx;
    this.#openAuxiliary = async () => {
      const aux = await UpstreamSession.open(
        upstream,
        timeouts,
        (opened) => this.#own(opened),
        this.#ending.signal,
        this.ctx.responseMemory,
      );
      const ok = await loginUpstream(aux).catch((error: unknown) => {
        aux.close();
        if (error instanceof UpstreamError) throw error;
        // An OAuth2 account without a token: the agent is told what its LOGIN would have been told (docs/imap.md
        // "OAuth2 accounts"); the token endpoint's answer is kept as the cause, for the log and the audit row.
        const shown = agentReason(error);
        throw shown === null ? new UpstreamError((error as Error).message) : new UpstreamError(shown, { cause: error });
      });
      if (!ok) {
        aux.close();
        throw new UpstreamError("the upstream server refused the credentials on a second connection");
      }
      return aux;
    };
    this.rights = new FolderRights(this.ctx.policy, agent);
    this.#generation = generation;
    const found = agent === null ? undefined : config.agents.find((a) => a.name === agent);
    this.#credentials = {
      username: upstreamUser,
      upstream: up.target,
      // A vault agent not found here (never: its login was just checked) gets values no reload can match.
      login:
        agent === null
          ? { agent: null }
          : {
              agent,
              tokenHash: found?.tokenHash ?? "",
              account: found?.account ?? "",
              username: upstreamUser,
              loginKey: found === undefined ? "" : accountLoginKeyOf(config, found.account),
            },
    };
    this.#loginResult = "ok";
    // After login malformed commands count within BAD_COMMAND_WINDOW_MS (MAX_BAD_COMMANDS): the count starts again.
    this.#badCommands = 0;
    this.attachUpstream(up);
    // Before the reload is judged: a deny or ask rule the reload brought in is checked against this server's
    // delimiter (docs/config.md "Globs"), not the default `/` that holds until login.
    this.names = new FolderNames(delimiter);
    // A reload while this login was checked: judged now against the config in force.
    if (generation !== this.ctx.generation && this.#judgeReload()) return;
    this.state = "authenticated";
    this.tagged(tag, "OK", `CAPABILITY ${this.capabilities().join(" ")}`, "Logged in");
  }

  /** Over `max_sessions_per_agent`: a `deny` row, then `* BYE` and the connection closes (RFC 3501 §7.1.5). */
  overSessionLimit(command: string, username: string, vault: boolean): void {
    const limit = this.ctx.perAgent.limit;
    this.auditRow({
      command,
      operation: null,
      folder: null,
      target: username,
      decision: "deny",
      rule: null,
      ruleIndex: null,
      reason: `login refused: max_sessions_per_agent (${limit}) reached`,
      detail: { limit: "max_sessions_per_agent", value: limit },
    });
    this.sendText(`* BYE [LIMIT] Too many sessions for this ${vault ? "agent" : "login"} (limit ${limit})`);
    this.flush();
    this.shutdown();
  }

  /**
   * A login while its address or name is locked out (docs/config.md "Who connects"): refused before its credentials
   * are checked, with a row but without the failed-login log line (it is not a guess), and after the failed-login
   * delay (so that LOGINs pipelined on one connection do not write rows as fast as they come), `NO [UNAVAILABLE]`
   * (RFC 5530 §3: a temporary failure; the client may try again later, when the lock has ended).
   */
  async loginLocked(tag: string, command: string, username: string, lock: Lock): Promise<void> {
    if (this.#loginResult === "none") this.#loginResult = "failed";
    const recorded = recordedLoginName(
      username,
      this.ctx.config.agents.map((a) => a.tokenHash),
    );
    this.#lockRow(command, recorded, lockedReason(lock), lock);
    await this.#failureDelay(this.ctx.throttle.fail(this.conn.remoteAddress));
    this.tagged(tag, "NO", "UNAVAILABLE", "Too many failed logins; try again later");
  }

  /** A login that fails after its place was taken gives the place back (a retried LOGIN takes a new one). */
  dropPlace(): void {
    this.#releasePlace?.();
    this.#releasePlace = null;
  }

  checkingLogin(up: UpstreamSession, abandoned: () => void): void {
    this.#loginCheck = up;
    this.#loginAbandoned = abandoned;
  }

  get loginCheckCut(): string | null {
    return this.#loginCheckCut;
  }

  loginChecked(): void {
    this.#loginCheck = null;
    this.#loginAbandoned = null;
    const written = this.#loginCheckWritten;
    this.#loginCheckWritten = null;
    if (written !== null) {
      this.#logAccess();
      written();
    }
  }

  /**
   * The session ends while upstream checks its login: the check goes on, registered with the listener. At most
   * MAX_ABANDONED_LOGIN_CHECKS go on at once: the agents who left hold no connection to the listener any more, so
   * max_connections does not bound their upstream connections. One more is cut at once, its verdict not known, which
   * counts it as refused (commands/login.ts).
   */
  #abandonLoginCheck(up: UpstreamSession): void {
    const { promise, resolve } = Promise.withResolvers<void>();
    const check = {
      cut: (why: string) => {
        this.#loginCheckCut = why;
        up.close();
      },
      written: promise,
    };
    const over = this.ctx.abandonedLogins.size >= MAX_ABANDONED_LOGIN_CHECKS;
    this.ctx.abandonedLogins.add(check);
    this.#loginCheckWritten = () => {
      this.ctx.abandonedLogins.delete(check);
      resolve();
    };
    this.#loginAbandoned?.();
    if (over)
      check.cut(
        `more than MAX_ABANDONED_LOGIN_CHECKS (${MAX_ABANDONED_LOGIN_CHECKS}) logins were being checked ` +
          "after their agents left",
      );
  }

  /** Opens an upstream connection owned by this session: closed by `shutdown` from the moment it is connected. */
  async openUpstream(): Promise<UpstreamSession> {
    return UpstreamSession.open(
      this.ctx.upstream,
      this.ctx.timeouts,
      (opened) => this.#own(opened),
      this.#ending.signal,
      this.ctx.responseMemory,
    );
  }

  adoptUpstream(up: UpstreamSession): void {
    this.#own(up);
  }

  #own(up: UpstreamSession): void {
    if (this.#closed) return up.close();
    up.afterDelivery = (release) => this.#afterOutput(release);
    for (const known of this.#upstreams) if (known.closed) this.#upstreams.delete(known);
    this.#upstreams.add(up);
  }

  async loginFailed(
    tag: string,
    command: string,
    given: string | null,
    reason: string,
    counted = false,
  ): Promise<void> {
    this.user = null;
    if (this.#loginResult === "none") this.#loginResult = "failed";
    // A token given as the name is never recorded (docs/audit.md "What is never in it").
    const username = this.#recordedName(given);
    logLoginFailure("imap", this.conn.remoteAddress, username, reason);
    this.auditRow({
      command,
      operation: null,
      folder: null,
      target: username === null ? null : cutText(username, MAX_ROW_LOGIN_NAME),
      decision: "deny",
      rule: null,
      ruleIndex: null,
      reason: `login failed: ${reason}`,
    });
    const delay = counted ? 0 : this.countFailedLogin(command, given);
    await this.#failureDelay(delay);
    this.tagged(tag, "NO", "AUTHENTICATIONFAILED", "Authentication failed");
  }

  countFailedLogin(command: string, given: string | null): number {
    const delay = this.ctx.throttle.fail(this.conn.remoteAddress);
    const username = this.#recordedName(given);
    for (const lock of this.ctx.lockout.fail(this.conn.remoteAddress, lockoutName(this.ctx.config.agents, given))) {
      logLockout("imap", this.conn.remoteAddress, username, lock.by, lock.until);
      this.#lockRow(command, username, lockStartedReason(lock), lock);
    }
    return delay;
  }

  withdrawFailedLogin(given: string | null): void {
    this.ctx.throttle.withdraw(this.conn.remoteAddress);
    this.ctx.lockout.withdraw(this.conn.remoteAddress, lockoutName(this.ctx.config.agents, given));
  }

  #recordedName(given: string | null): string | null {
    return recordedLoginName(
      given,
      this.ctx.config.agents.map((a) => a.tokenHash),
    );
  }

  /** A login's `deny` row about a lock-out: the one that started it, or a login refused under it. */
  #lockRow(command: string, recorded: string | null, reason: string, lock: Lock): void {
    this.auditRow({
      command,
      operation: null,
      folder: null,
      target: recorded === null ? null : cutText(recorded, MAX_ROW_LOGIN_NAME),
      decision: "deny",
      rule: null,
      ruleIndex: null,
      reason,
      detail: lockDetail(lock),
    });
  }

  /** The failed-login delay before a refused login's reply; it ends early when the proxy stops (the NO, then BYE). */
  async #failureDelay(ms: number): Promise<void> {
    // Nobody to answer: a login whose agent left before upstream refused it (`checkingLogin`) waits for nothing.
    if (this.#stopping || this.#closed) return;
    const wait = failureDelay(ms);
    this.#endWait = wait.end;
    await wait.done;
    this.#endWait = null;
  }
}

/** `sync`'s answer when it had nothing to wait for: one settled promise, not a new one per command. */
const SETTLED: Promise<void> = Promise.resolve();

/** CR, LF and NUL, which cannot stand in a line (RFC 3501 §9 TEXT-CHAR and CHAR8). */
const LINE_BREAK = /[\r\n\0]/;
const LINE_BREAKS = /[\r\n\0]/g;

/** `accountLoginKey` of a configured account; "" when it is missing (the login refuses that case before). */
function accountLoginKeyOf(config: Config, name: string): string {
  const account = ownEntry(config.accounts, name);
  return account === undefined ? "" : accountLoginKey(account);
}
