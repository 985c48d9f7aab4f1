/**
 * What a command handler sees of its session (docs/imap.md "Structure"). Each file of src/imap/commands/ takes a
 * `Session` and its parsed command, checks it, asks the rules, talks to upstream and replies; `ImapSession`
 * (src/imap/session.ts) implements `Session` and keeps the read loop, the connection state and the dispatch table.
 * No command file imports the session itself.
 */

import type { AccountCredentials } from "../../accounts/index.ts";
import type { AccountRefusals } from "../../accounts/refusals.ts";
import type { AuditEvent, AuditLog } from "../../audit/index.ts";
import type { Config, ImapLimits } from "../../config/types.ts";
import type { moduleLogger } from "../../log.ts";
import type {
  Connection,
  FailureThrottle,
  Lock,
  LoginLockout,
  SessionCounter,
  TlsIdentity,
  UpstreamTarget,
} from "../../net/index.ts";
import type { Decision, Operation, Policy } from "../../policy/index.ts";
import type { Quotas } from "../../quotas/index.ts";
import type { ClassificationCache } from "../cache.ts";
import type { FolderNames, FolderRights } from "../folders.ts";
import type { SelectedMailbox } from "../mailbox.ts";
import type { ResponseMemory } from "../memory.ts";
import type { UpstreamSession, UpstreamTimeouts } from "../upstream.ts";
import type { UpstreamPool } from "../upstream-pool.ts";
import type { Command, FramerEvent, Response, ResponseCode } from "../wire/index.ts";

/** What every session of one listener shares. */
export interface SessionContext {
  /** The config and policy in force now: read at each use, as a reload swaps them (docs/operations.md). */
  readonly config: Config;
  readonly policy: Policy;
  /** Goes up at each reload; a session refreshes what it derived from the policy when it changes. */
  readonly generation: number;
  readonly audit: AuditLog;
  /** The upstream credential of each vault-mode account (src/accounts/index.ts). */
  readonly credentials: AccountCredentials;
  /** reads_per_minute is charged at FETCH (docs/quotas.md). */
  readonly quotas: Quotas;
  readonly upstream: UpstreamTarget;
  readonly listenTls: "tls" | "starttls" | "none";
  readonly identity: TlsIdentity | null;
  readonly throttle: FailureThrottle;
  /** Failed logins counted across connections and both listeners (src/net/lockout.ts). */
  readonly lockout: LoginLockout;
  readonly timeouts: UpstreamTimeouts;
  /** Session limits and timeouts (`[limits]`, docs/config.md). */
  readonly limits: ImapLimits;
  /** Logged-in sessions per agent or upstream login: `max_sessions_per_agent`. */
  readonly perAgent: SessionCounter;
  readonly sessions: Set<SessionHandle>;
  /** The budget all sessions' upstream responses share (src/imap/memory.ts). */
  readonly responseMemory: ResponseMemory;
  /** The budget all sessions' agent command literals share (COMMAND_MEMORY_BUDGET, docs/reliability.md). */
  readonly commandMemory: ResponseMemory;
  /** Visible UIDs of filtered folders (docs/filtering.md); null when no rule filters messages or it is off. */
  readonly cache: ClassificationCache | null;
  /** Upstream sessions kept after LOGOUT for the next login of the same vault account (src/imap/upstream-pool.ts). */
  readonly upstreamPool: UpstreamPool;
  /** Vault accounts whose login upstream refused just now, by pool key (src/accounts/refusals.ts). */
  readonly accountRefusals: AccountRefusals;
  /**
   * Logins upstream is still checking after their session ended (`LoginSession.checkingLogin`): the listener cuts
   * them when it closes, and waits until each has written its rows.
   */
  readonly abandonedLogins: Set<AbandonedLogin>;
}

/** A login whose upstream check goes on after its session ended, so that its rows have upstream's verdict. */
export interface AbandonedLogin {
  /** Closes its upstream connection, `why` given: the check ends at once, its verdict not known. */
  cut(why: string): void;
  /** Settles once its rows are written. */
  readonly written: Promise<void>;
}

/** What the listener does with its sessions: end them all, or judge them after a reload. */
export interface SessionHandle {
  /**
   * Ends the session at once if the reload took its agent, token, account or upstream away, its address out of
   * the agent's `allowed_ips`, or changed what its selected mailbox shows; true then.
   */
  reloaded(): boolean;
  /** `reloaded` threw: `* BYE` now, and the session ends (src/runtime/reload.ts `reloadSessions`). */
  endUnreloaded(why: string): void;
  /** The proxy is stopping: `* BYE` now, or after the reply to the command under way. */
  stop(): void;
}

/** One parsed command of the given name(s). */
export type CommandOf<N extends Command["name"]> = Command & { readonly name: N };

/** An audit row as a command handler writes it; the session fills in who and where. */
export type Row = Omit<AuditEvent, "session" | "agent" | "clientAddr" | "protocol" | "configRevision" | "target"> & {
  target?: string | null;
  /**
   * The revision of the config whose rules made the decision the row cites (`Decided.revision`, given with
   * `cites`): a reload may come between a decision and its row, and the row must name the rule by the position it
   * has in that config (docs/audit.md "What a row records"). Left out, the row gets the revision in force when it
   * is written: a row that cites no rule.
   */
  revision?: string;
};

/** A row registered with `Session.awaitAnswer`. */
export interface AwaitedRow {
  /**
   * Writes the row, with `changes` (the counts, a reason, or another decision that takes its place) as `auditRow`
   * does; an allow row that cannot be queued throws. Nothing when the session has already written it unanswered.
   */
  write(changes?: Partial<Row>): void;
  /** Takes the row off unwritten: the command decided after all, and writes the rows of that decision itself. */
  drop(): void;
}

/** A decision of the rules, and the revision of the config they belong to (`Session.decide`). */
export interface Decided extends Decision {
  readonly revision: string;
}

/** The fields of a row that cite `d`: the rule that decided, its position, and its config's revision. */
export function cites(d: Decided): { rule: string | null; ruleIndex: number | null; revision: string } {
  return { rule: d.rule, ruleIndex: d.ruleIndex, revision: d.revision };
}

/** Connection states (RFC 3501 §3). */
export type State = "not-authenticated" | "authenticated" | "selected" | "logout";

/** The tagged status of an upstream command. */
export type UpstreamStatus = Awaited<ReturnType<UpstreamSession["run"]>>;

/** The session as a command handler uses it. */
export interface Session {
  readonly id: string;
  readonly ctx: SessionContext;
  readonly log: ReturnType<typeof moduleLogger>;
  /** The agent left or the proxy is stopping. */
  readonly closed: boolean;
  /** How the session ended (`client closed the connection`, `upstream connection lost`, `reload: ...`), once closed. */
  readonly endReason: string;
  /** The session ended because its upstream connection was lost (closed, failed, or cut for a bad answer). */
  readonly upstreamLost: boolean;
  state: State;
  /** The upstream session of a logged-in agent. */
  readonly up: UpstreamSession | null;
  /** Name in audit rows: the agent (vault) or the upstream user (pass-through). */
  readonly user: string | null;
  /** Agent name for rules; null in pass-through mode. */
  readonly agent: string | null;
  /** The upstream account (`host:port/user`, no secret): the classification cache's key. */
  readonly account: string;
  readonly rights: FolderRights;
  readonly names: FolderNames;
  /** CONDSTORE is enabled (RFC 7162 §3.1): by ENABLE or a CONDSTORE-enabling command, for the rest of the session. */
  condstore: boolean;
  /** The selected mailbox; a command that selects or deselects sets it together with `state`. */
  box: SelectedMailbox | null;

  // Output: responses accumulate until `flush` (or the end of the current microtask) writes them as one batch.
  send(r: Response): void;
  sendText(line: string): void;
  tagged(tag: string, status: "OK" | "NO" | "BAD", code: string | null, text: string): void;
  /** Tells the agent the selected folder became read-only, if upstream said so and it was not told yet. */
  tellReadOnly(): void;
  /** A tagged reply carrying upstream's status, with `code` (the allowlisted one, or null) as its response code. */
  taggedFrom(
    tag: string,
    status: { status: string; code: ResponseCode | null; text: string },
    code: ResponseCode | null,
  ): void;
  flush(): void;
  capabilities(): string[];

  // Input, for commands that read more from the agent (IDLE's DONE, AUTHENTICATE's response).
  /** The next framer event, waiting for bytes as needed; null once the session is over. */
  nextEvent(): Promise<FramerEvent | null>;
  /** The next line is read raw, not as a command. */
  expectRawLine(): void;

  // Upstream.
  /**
   * Runs an upstream command; every untagged response updates the mailbox model, then goes to `onData`; without
   * it, another session's flag change (and a new keyword's FLAGS) is relayed (`relayUpdate`). With `gate`, the
   * command's literals wait for it (UpstreamSession.run).
   */
  upstreamRun(
    command: Parameters<UpstreamSession["run"]>[0],
    onData?: ((r: Response) => void) | null,
    gate?: Promise<unknown> | null,
  ): Promise<UpstreamStatus>;
  /**
   * `upstreamRun` for the upstream step of a write whose allow rows are on disk (`auditDurable`): if the session ends
   * after it went upstream and before it is answered, those rows get `error` rows saying whether upstream did it is
   * not known (docs/audit.md "What a row records").
   */
  upstreamWrite(
    command: Parameters<UpstreamSession["run"]>[0],
    onData?: ((r: Response) => void) | null,
    gate?: Promise<unknown> | null,
  ): Promise<UpstreamStatus>;
  /**
   * UNSELECT upstream for a folder the agent is told is not selected (any more): `command` and `folder` name it in the
   * row if upstream keeps it selected all the same, which ends the session (and rejects). `sent`: the UNSELECT's
   * answer, when the caller sent it with a SELECT pipelined behind it.
   */
  unselectUpstream(command: string, folder: string | null, sent?: Promise<UpstreamStatus> | null): Promise<void>;
  /** Applies an untagged response to the mailbox model; true when it was consumed. */
  model(r: Response): boolean;
  /** Before a tagged reply: new messages and (when `allowExpunge`) expunges reported to the agent. */
  sync(allowExpunge: boolean): Promise<void>;
  /**
   * After a reload, takes the new rules; the session ends (`* BYE`) when they would not show the selected mailbox
   * as it is. False when the session is over.
   */
  followReload(): boolean;
  /**
   * Why a reload ends the session once the command under way is answered (its agent removed, its token, login or
   * upstream changed: docs/operations.md "Reload"); null when none does.
   */
  endingByReload(): string | null;
  /** Runs `use` on a second upstream session logged in like the first (one use at a time). */
  withAuxiliary<T>(use: (up: UpstreamSession) => Promise<T>): Promise<T>;

  // Policy and audit.
  /** The rules in force now decide; the answer says which config's rules they were (for its rows, `cites`). */
  decide(op: Operation, folder: string): Decided;
  /** Audits a decision and throws a NO [NOPERM] refusal when it denies. */
  require(command: string, op: Operation, folder: string, target?: string | null): Decided;
  /** Queues a row; an accepted allow row releases the command's held output. */
  auditRow(ev: Row): void;
  /**
   * The allow row of a read that goes upstream and is written once upstream has answered (it counts what the answer
   * showed and hid), registered when the command is decided: when the command or the session ends before its
   * `write` (the agent hung up, upstream was lost, the command failed), the session writes it then, with no counts and
   * a reason saying the answer never came (docs/audit.md "What a row records").
   */
  awaitAnswer(row: Row): AwaitedRow;
  /**
   * Records and waits until the row is on disk: for writes, before they go upstream (docs/audit.md). Rows of one
   * command pass the same `group` (DurableOptions.group). An allow row is followed by an `error` row naming it when
   * the command is then answered NO or BAD, unless `followed` is false (a row of the proxy's own work).
   */
  auditDurable(ev: Row, group?: object, followed?: boolean): Promise<void>;
  /** Throws AuditUnavailableError while the audit log is known to be failing. */
  requireAudit(): void;
}

/** A command's handler: replies to `cmd` (tagged reply included), or throws a Refusal or another error. */
export type Handler<N extends Command["name"] = Command["name"]> = (s: Session, cmd: CommandOf<N>) => Promise<void>;

/** A login as `ImapSession.loggedIn` completes it, once the login's audit row is on disk. */
export interface LoggedIn {
  readonly tag: string;
  /** The upstream session, logged in; its hierarchy delimiter is `delimiter` (upstream's own answer). */
  readonly up: UpstreamSession;
  readonly delimiter: string | null;
  /** The agent (vault mode) or null (pass-through). */
  readonly agent: string | null;
  readonly upstreamUser: string;
  /** Logs another upstream session in the same way (the auxiliary session). */
  readonly loginUpstream: (up: UpstreamSession) => Promise<boolean>;
  /** The reload generation the login was checked against. */
  readonly generation: number;
  /**
   * The config the login was checked against (of `generation`): the session records the token and the account's
   * credentials from it, so that a reload during the login, which may have revoked them, ends the session.
   */
  readonly config: Config;
  /** Where `up` is kept after the agent's LOGOUT (src/imap/upstream-pool.ts); null: it is logged out then. */
  readonly poolKey: string | null;
}

/**
 * What LOGIN, AUTHENTICATE and STARTTLS (commands/login.ts) see besides `Session`: they change the connection
 * itself, so they reach a little further into it. No other command uses these.
 */
export interface LoginSession extends Session {
  readonly conn: Connection;
  /** STARTTLS after its OK: the framer starts afresh, and bytes sent in clear are discarded. */
  upgradeToTls(identity: TlsIdentity): Promise<void>;
  /** Opens an upstream connection owned by this session: closed by `shutdown` from the moment it is connected. */
  openUpstream(): Promise<UpstreamSession>;
  /** Owns `up`, taken from the pool of kept sessions, as if this session had opened it. */
  adoptUpstream(up: UpstreamSession): void;
  /** Takes a place under `max_sessions_per_agent`; false when there is none (or the session ended). */
  takePlace(key: string): boolean;
  /** A login that fails after its place was taken gives the place back (a retried LOGIN takes a new one). */
  dropPlace(): void;
  /**
   * Upstream checks the login on `up` from now on: if the session ends meanwhile, but for the proxy stopping, `up` is
   * left open until upstream has answered (`ctx.abandonedLogins`), so that the login's rows have its verdict, and
   * `abandoned` is called then.
   */
  checkingLogin(up: UpstreamSession, abandoned: () => void): void;
  /** The login checked by `checkingLogin` has its rows: an abandoned check is over. */
  loginChecked(): void;
  /**
   * Why the upstream connection of that check was closed after its agent had gone (`SessionContext.abandonedLogins`):
   * the listener closing, or more such checks than MAX_ABANDONED_LOGIN_CHECKS allows; null while it was not.
   */
  readonly loginCheckCut: string | null;
  /** The name audit rows carry: set just before the login's own row, cleared if that row fails. */
  setUser(user: string | null): void;
  /** Completes the login and replies OK (or ends the session, if a reload meanwhile took its access away). */
  loggedIn(o: LoggedIn): void;
  /**
   * A failed login: audited, logged, throttled and counted toward the lock-out (not again when `counted`: see
   * `countFailedLogin`), then `NO [AUTHENTICATIONFAILED]`.
   */
  loginFailed(tag: string, command: string, username: string | null, reason: string, counted?: boolean): Promise<void>;
  /**
   * Counts a failed login of `username` toward the failed-login delay and the lock-out (docs/config.md "Who
   * connects"), with the row and log line of a lock it starts; returns the delay the failure earns.
   */
  countFailedLogin(command: string, username: string | null): number;
  /**
   * Takes back a failure `countFailedLogin` counted at the hang-up, once upstream accepted that login: a client that
   * knows its password and hangs up is no guesser (docs/config.md "Who connects").
   */
  withdrawFailedLogin(username: string | null): void;
  /** Over `max_sessions_per_agent`: a `deny` row, then `* BYE` and the connection closes. */
  overSessionLimit(command: string, username: string, vault: boolean): void;
  /** A login while its address or name is locked out: a `deny` row, the failed-login delay, `NO [UNAVAILABLE]`. */
  loginLocked(tag: string, command: string, username: string, lock: Lock): Promise<void>;
}

/** What COMPRESS (commands/compress.ts) sees besides `Session`: it changes how the connection's bytes are coded. */
export interface CompressSession extends Session {
  /** Compression is on (RFC 4978). */
  readonly compressed: boolean;
  /** Starts DEFLATE in both directions, right after what was sent so far (call after flushing the tagged OK). */
  startDeflate(): void;
}
