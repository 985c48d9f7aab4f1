/**
 * The proxy as an IMAP client to the upstream server: connect (implicit TLS, verified STARTTLS, or plain when
 * configured), log in with credentials the caller chose, then run one command at a time with proxy-owned tags
 * (docs/protocol.md §0.4, §4). Every response is framed and parsed; nothing is relayed as bytes.
 */

import {
  type Connection,
  connectUpstream,
  startUpstreamTls,
  UpstreamError,
  type UpstreamTarget,
  upstreamHint,
} from "../net/index.ts";
import {
  chooseOAuthMechanism,
  type MechanismSetting,
  type OAuthMechanism,
  oauthFailureAnswer,
  oauthInitialResponse,
} from "../net/sasl.ts";
import { MAX_RESPONSE_LINE, RESPONSE_LINE_RESERVATION } from "./limits.ts";
import type { ResponseMemory } from "./memory.ts";
import { withoutTimings } from "./upstream-text.ts";
import {
  type Command,
  Encoder,
  type FetchItem,
  Framer,
  isInbox,
  parseResponse,
  type Response,
  type SearchKey,
  writeCommand,
} from "./wire/index.ts";

export type StatusResponse = Extract<Response, { type: "status" }>;

/** A command as the wire layer writes it, without a tag (the upstream session adds its own). */
export type UpstreamCommand = Command extends infer C ? (C extends { tag: string } ? Omit<C, "tag"> : never) : never;

export interface UpstreamTimeouts {
  readonly connectMs: number;
  /** Greeting, STARTTLS, login. */
  readonly handshakeMs: number;
  /** Any other command, from sending it to its tagged reply. */
  readonly commandMs: number;
  /**
   * How often the proxy renews its own IDLE upstream while an agent idles (IDLE_RENEW_MS when absent; shorter in
   * tests only, to run many renewals).
   */
  readonly idleRenewMs?: number;
}

/** A command encoder that grew past this many bytes is dropped after the command (see `#encode`). */
const KEPT_COMMAND_BUFFER = 4096;

/** Capabilities the proxy needs from the upstream server once logged in. */
const REQUIRED_CAPABILITIES = ["UIDPLUS", "UNSELECT"] as const;

interface Pending {
  readonly tag: string;
  readonly onData: ((r: Response) => void) | null;
  rounds: Uint8Array[][];
  /** A `+` once the literals are sent: a SASL challenge (AUTHENTICATE). Absent: the session fails. */
  readonly onChallenge: (() => void) | null;
  /**
   * Literals are held back until this is true (`run`'s `gate`); false while the gate is pending, null without one.
   * A `+` that comes meanwhile is remembered in `plusWaiting`.
   */
  gateOpen: boolean | null;
  plusWaiting: boolean;
  resolve(status: StatusResponse): void;
  reject(error: Error): void;
  /** An ENABLE's capabilities, upper-cased: what its `* ENABLED` may name (RFC 5161 §3.2); null for other commands. */
  enables: ReadonlySet<string> | null;
  /** What the command does to the selected state once answered: SELECT/EXAMINE, UNSELECT/CLOSE, or nothing. */
  selection: "select" | "unselect" | null;
  /** The mailbox a SELECT or EXAMINE names; null for other commands. */
  mailbox: string | null;
  /** When the session fails if the tagged reply has not come (performance.now(); Infinity: never). */
  deadline: number;
  /** What the failure says then. */
  expiry: string;
}

export class UpstreamSession {
  readonly #conn: Connection;
  readonly #target: UpstreamTarget;
  readonly #timeouts: UpstreamTimeouts;
  #framer: Framer;
  /** The listener's budget for responses' memory (src/imap/memory.ts); null: nothing counted (tools, tests). */
  readonly #memory: ResponseMemory | null;
  /** Octets of the response being framed that were reserved in `#memory`. */
  #frameReserved = 0;
  /** Reservations taken so far (`#reserve`): tells `#onData` whether a chunk's response became counted. */
  #reservations = 0;
  /** Waiting for `#memory` to give a literal's octets: reading from upstream is paused meanwhile. */
  #memoryWait = false;
  /** Paused by the owner (`pause()`), for the agent's back-pressure. */
  #ownerPaused = false;
  /** Leaves `#memory`'s queue while waiting in it (the session ends meanwhile). */
  #cancelMemoryWait: (() => void) | null = null;
  /** Releases of delivered responses' reservations not yet given back (given back at the latest when closed). */
  readonly #undelivered = new Set<() => void>();
  #tagCount = 0;
  #pending: Pending | null = null;
  /** Commands written behind the one in flight (`pipeline`), answered after it in this order. */
  readonly #queued: Pending[] = [];
  /** What `together` gathers to write at once; null outside it. */
  #gathered: Uint8Array[] | null = null;
  #error: Error | null = null;
  /** Continuation handler while a command without rounds waits for `+` (IDLE). */
  #onContinue: (() => void) | null = null;
  /** Untagged responses outside a command (during IDLE, or between commands). */
  onUnsolicited: (r: Response) => void = () => {};
  /** Called once when the connection is lost or closed. */
  onClose: (error: Error | null) => void = () => {};
  /** Called after each batch of responses from one network read: flush what was queued for the agent. */
  onBatch: () => void = () => {};
  /**
   * Called with each response's reservation in `#memory` once the response was handed to `onData` or
   * `onUnsolicited`: `release` gives it back, exactly once, when what the owner made of the response has left
   * (docs/reliability.md "Response memory"). Without an owner's hook it is given back at once.
   */
  afterDelivery: (release: () => void) => void = (release) => release();
  caps = new Set<string>();
  /**
   * Set when the session ends: the command in flight then still had a literal to send, so the server never read it
   * whole and acted on none of it (RFC 9051 §4.3). A write's audit rows then say nothing of an unknown outcome.
   */
  cutMidCommand = false;
  /** Between a STARTTLS OK and the handshake: everything received is discarded (RFC 9051 §6.2.1). */
  #discarding = false;
  /** While the greeting is awaited: takes it, or why there is none (`#readGreeting`). */
  #greeting: ((r: Response | UpstreamError) => void) | null = null;
  /** Octets received while the greeting was awaited: a deadline or a close then says how much of it came. */
  #greetingOctets = 0;
  /**
   * One timer watches the deadlines of the commands in flight, instead of a timer set and cleared for every
   * command: it fires at the earliest deadline it was armed for, and re-arms itself for the command then in flight.
   */
  #watchdog: ReturnType<typeof setTimeout> | null = null;
  #watchdogAt = Number.POSITIVE_INFINITY;
  /** LOGOUT was sent (`logout`): the BYE that answers it is expected. */
  #loggingOut = false;
  /** Commands are encoded here; `finish()` copies what a command needs, so the buffer serves the next one. */
  #commandEncoder: Encoder | null = null;
  /**
   * A mailbox may be selected upstream: the last SELECT/EXAMINE answered OK or BAD (then nothing changed, if it was
   * selected before), no UNSELECT/CLOSE since.
   */
  #mailboxSelected = false;
  /** The name the mailbox selected upstream was selected by (`#mailboxSelected`); null when none or not known. */
  #selectedName: string | null = null;
  /**
   * The server left out a `* OK [CLOSED]` it owed, or sent a closed folder's responses after the boundary
   * (`distrustBoundary`): neither its `[CLOSED]` (`closedAtSelect`) nor its UNSELECT's OK with a SELECT pipelined
   * behind it (src/imap/commands/select.ts) is counted on any more.
   */
  #boundaryDistrusted = false;
  /**
   * A command changed the session beyond its selected mailbox and CONDSTORE (`changesSession`): it is not handed to
   * another agent's login (src/imap/upstream-pool.ts).
   */
  #sessionChanged = false;
  /** CONDSTORE is on upstream (RFC 7162 §3.1): ENABLE CONDSTORE or a CONDSTORE-enabling command was sent. */
  #condstore = false;

  private constructor(
    conn: Connection,
    target: UpstreamTarget,
    timeouts: UpstreamTimeouts,
    memory: ResponseMemory | null,
  ) {
    this.#conn = conn;
    this.#target = target;
    this.#timeouts = timeouts;
    this.#memory = memory;
    this.#framer = this.#newFramer();
    conn.onData((chunk) => this.#onData(chunk));
    conn.onClose((error) => this.#closed(error));
  }

  /**
   * Connects, reads the greeting and, for `starttls`, upgrades with a verified certificate before anything else.
   * `signal` abandons the connection attempt (and, for implicit TLS, its handshake); `onConnected` gets the session
   * as soon as the connection exists, so that its owner can close it while the rest is still under way (the agent
   * hung up, the proxy is stopping).
   */
  static async open(
    target: UpstreamTarget,
    timeouts: UpstreamTimeouts,
    onConnected: ((session: UpstreamSession) => void) | null = null,
    signal: AbortSignal | null = null,
    memory: ResponseMemory | null = null,
  ): Promise<UpstreamSession> {
    const conn = await connectUpstream({ ...target, connectTimeoutMs: timeouts.connectMs }, signal);
    const session = new UpstreamSession(conn, target, timeouts, memory);
    onConnected?.(session);
    try {
      await session.#readGreeting();
      if (target.tls === "starttls") await session.#startTls();
      if (session.caps.size === 0) await session.refreshCapabilities();
      return session;
    } catch (error) {
      session.close();
      throw error instanceof UpstreamError ? error : new UpstreamError((error as Error).message);
    }
  }

  get secure(): boolean {
    return this.#conn.secure;
  }

  /** The server this session was opened to, as the config named it then. */
  get target(): UpstreamTarget {
    return this.#target;
  }

  get closed(): boolean {
    return this.#conn.closed;
  }

  /**
   * CONDSTORE is on upstream: every FETCH that reports flags carries a mod-sequence, and SELECT reports
   * HIGHESTMODSEQ (RFC 7162 §3.1). A session taken from the pool may have it on while its agent has not: what the
   * agent is sent of mod-sequences follows the agent's own state (`modseqRelayed`), never upstream's.
   */
  get condstore(): boolean {
    return this.#condstore;
  }

  /** A mailbox is selected upstream. */
  get mailboxSelected(): boolean {
    return this.#mailboxSelected;
  }

  /**
   * A SELECT or EXAMINE of `mailbox` sent now, while a mailbox is selected, must be answered with `* OK [CLOSED]`
   * between the responses that still belong to the mailbox it closes and the new mailbox's own, which is the only
   * boundary between them (RFC 9051 §7.1); false when the server owes none, and the caller closes the mailbox with
   * UNSELECT first (src/imap/commands/select.ts, docs/imap.md "Switching folders"). The server owes one:
   * - under IMAP4rev2 whenever a selected mailbox is closed (RFC 9051 §6.3.2). A server that offers IMAP4rev1 too
   *   answers as RFC 3501 has it until the client uses IMAP4rev2 (RFC 9051 §7.2.2), which the proxy never does
   *   (it enables CONDSTORE only): so only a server that offers IMAP4rev2 and not IMAP4rev1;
   * - when it offers QRESYNC, at a SELECT or EXAMINE "on another mailbox" (RFC 7162 §3.2.11: a server implementing
   *   the extension MUST return it), whether or not QRESYNC is enabled (the proxy never enables it, docs/protocol.md
   *   §2). The mailbox selected again is not another one: no CLOSED is owed there.
   * RFC 3501 has no CLOSED. A server that left out one it owed, or sent responses of the folder closed after it or
   * after UNSELECT's tagged OK (`distrustBoundary`), is not counted on again.
   */
  closedAtSelect(mailbox: string): boolean {
    if (!this.#mailboxSelected || this.#boundaryDistrusted) return false;
    if (this.caps.has("IMAP4REV2") && !this.caps.has("IMAP4REV1")) return true;
    const current = this.#selectedName;
    return this.caps.has("QRESYNC") && current !== null && !sameMailbox(current, mailbox);
  }

  /**
   * A SELECT or EXAMINE that `closedAtSelect` said owed `[CLOSED]` was answered without it, or a folder's answer
   * said twice what it says once (src/imap/commands/select.ts `onceInAnswer`): the server's boundary between two
   * folders' responses is not counted on again.
   */
  distrustBoundary(): void {
    this.#boundaryDistrusted = true;
  }

  /** The server left out a `[CLOSED]` it owed, or answered past its boundary (`distrustBoundary`). */
  get boundaryDistrusted(): boolean {
    return this.#boundaryDistrusted;
  }

  /**
   * Nothing is under way (no command in flight or queued, no IDLE, no response half read or waiting for memory), the
   * session has not failed, and no command changed it beyond its selected mailbox and CONDSTORE: another login of
   * the same account may take it over once it is unselected (src/imap/upstream-pool.ts).
   */
  get reusable(): boolean {
    return (
      !this.#conn.closed &&
      this.#error === null &&
      this.#pending === null &&
      this.#queued.length === 0 &&
      this.#onContinue === null &&
      !this.#loggingOut &&
      !this.#discarding &&
      !this.#memoryWait &&
      this.#frameReserved === 0 &&
      !this.#sessionChanged
    );
  }

  /**
   * Leaves the owner that attached its hooks: what arrives from now on until another owner attaches closes the
   * session (`onUnsolicited`), reservations are given back at once, and reading resumes if the owner had paused it.
   */
  detach(onUnsolicited: (r: Response) => void, onClose: () => void): void {
    this.onUnsolicited = onUnsolicited;
    this.onClose = onClose;
    this.onBatch = () => {};
    this.afterDelivery = (release) => release();
    if (this.#ownerPaused) this.resume();
  }

  /**
   * The greeting (RFC 9051 §7.1: an untagged OK, PREAUTH or BYE) says exactly what went wrong: nothing came in time,
   * part of a line came, the connection closed first, the line was longer than MAX_RESPONSE_LINE, or it was not a
   * greeting (docs/install.md "Checking the upstreams").
   */
  #readGreeting(): Promise<void> {
    return new Promise((resolve, reject) => {
      const ms = this.#timeouts.handshakeMs;
      const timer = setTimeout(
        () =>
          reject(
            new UpstreamError(
              this.#greetingOctets === 0
                ? `no greeting from the upstream server within ${ms} ms`
                : `the upstream server's greeting was not complete within ${ms} ms ` +
                    `(${this.#greetingOctets} octets of it came, no line end)`,
            ),
          ),
        ms,
      );
      this.#greeting = (r) => {
        clearTimeout(timer);
        this.#greeting = null;
        if (r instanceof UpstreamError) return reject(r);
        if (
          r.type !== "status" ||
          r.tag !== null ||
          (r.status !== "OK" && r.status !== "BYE" && r.status !== "PREAUTH")
        )
          return reject(malformedGreeting("not an untagged OK, PREAUTH or BYE"));
        if (r.status === "OK") {
          if (r.code?.known && r.code.name === "CAPABILITY")
            this.caps = new Set(r.code.capabilities.map((c) => c.toUpperCase()));
          return resolve();
        }
        if (r.status === "PREAUTH")
          return reject(
            new UpstreamError(
              "the upstream server greeted with PREAUTH; refusing a session not authenticated by the proxy",
            ),
          );
        reject(new UpstreamError(`the upstream server refused the connection: ${r.text}`));
      };
    });
  }

  async #startTls(): Promise<void> {
    if (this.caps.size === 0) await this.refreshCapabilities();
    if (!this.caps.has("STARTTLS")) {
      throw new UpstreamError("the upstream server does not offer STARTTLS; refusing to send credentials in clear");
    }
    this.#discarding = false;
    const status = await this.run({ name: "STARTTLS" }, null, this.#timeouts.handshakeMs, () => {
      // Anything after the OK was sent before the handshake: never read it (RFC 9051 §6.2.1).
      this.#discarding = true;
    });
    if (status.status !== "OK") throw new UpstreamError(`the upstream server refused STARTTLS: ${status.text}`);
    this.#framer.discardBuffered();
    this.#framer = this.#newFramer();
    try {
      await startUpstreamTls(this.#conn, this.#target, this.#timeouts.handshakeMs);
    } catch (error) {
      throw new UpstreamError(
        `STARTTLS with the upstream server failed: ${(error as Error).message}${upstreamHint(error as Error)}`,
      );
    }
    this.#discarding = false;
    this.caps.clear();
  }

  async refreshCapabilities(): Promise<void> {
    const caps = new Set<string>();
    const status = await this.run(
      { name: "CAPABILITY" },
      (r) => {
        if (r.type === "CAPABILITY") for (const c of r.capabilities) caps.add(c.toUpperCase());
      },
      this.#timeouts.handshakeMs,
    );
    if (status.status !== "OK") throw new UpstreamError(`CAPABILITY failed upstream: ${status.text}`);
    this.caps = caps;
  }

  /**
   * Logs in; resolves true on success, false when the server refused the credentials (the agent gets the one
   * uniform failure reply), and throws UpstreamError when the session cannot be used.
   */
  async login(username: string, password: string): Promise<boolean> {
    let status: StatusResponse;
    if (this.caps.has("AUTH=PLAIN") && this.caps.has("SASL-IR")) {
      const initial = new TextEncoder().encode(`\0${username}\0${password}`);
      status = await this.run(
        { name: "AUTHENTICATE", mechanism: "PLAIN", initialResponse: initial },
        null,
        this.#timeouts.handshakeMs,
      );
    } else if (!this.caps.has("LOGINDISABLED")) {
      status = await this.run({ name: "LOGIN", username, password }, null, this.#timeouts.handshakeMs);
    } else {
      throw new UpstreamError("the upstream server accepts neither LOGIN nor AUTHENTICATE PLAIN with SASL-IR");
    }
    return this.#loggedIn(status);
  }

  /**
   * Logs in with an OAuth2 access token (docs/imap.md "OAuth2 accounts"): AUTHENTICATE OAUTHBEARER (RFC 7628) or
   * XOAUTH2 as `setting` and the capabilities decide, with the initial response in the command when the server
   * offers SASL-IR (RFC 4959) and after the first `+` otherwise. A refused token gets a challenge (base64 JSON)
   * first, answered as the mechanism says, then NO. Resolves like `login`; throws UpstreamError when no offered
   * mechanism fits or the server goes on challenging.
   */
  async loginOAuth(username: string, accessToken: string, setting: MechanismSetting): Promise<boolean> {
    const mechanism: OAuthMechanism | null = chooseOAuthMechanism((m) => this.caps.has(`AUTH=${m}`), setting);
    if (mechanism === null) {
      const wanted = setting === "auto" ? "OAUTHBEARER or XOAUTH2" : setting.toUpperCase();
      throw new UpstreamError(`the upstream server does not offer AUTHENTICATE ${wanted}`);
    }
    const response = oauthInitialResponse(mechanism, username, accessToken);
    const saslIr = this.caps.has("SASL-IR");
    // Challenges expected: the one asking for the response (without SASL-IR), then at most one failure challenge.
    let sent = saslIr;
    let answeredFailure = false;
    const status = await this.run(
      { name: "AUTHENTICATE", mechanism, initialResponse: saslIr ? response : null },
      null,
      this.#timeouts.handshakeMs,
      null,
      () => {
        if (!sent) {
          sent = true;
          this.#conn.write(`${Buffer.from(response).toString("base64")}\r\n`);
        } else if (!answeredFailure) {
          answeredFailure = true;
          this.#conn.write(`${Buffer.from(oauthFailureAnswer(mechanism)).toString("base64")}\r\n`);
        } else {
          this.#fail(new UpstreamError(`the upstream server kept challenging AUTHENTICATE ${mechanism}`));
        }
      },
    );
    // NO [UNAVAILABLE] (RFC 5530 §3): the server could not check the token now (its authentication service is
    // down), which says nothing of the token: a temporary failure, not a refusal that would cost a token request.
    // Not after a failure challenge (RFC 7628 §3.2.2): the server had looked at the token and said what was wrong.
    const unavailable = status.code?.known === true && status.code.name === "UNAVAILABLE";
    if (status.status === "NO" && unavailable && !answeredFailure)
      throw new UpstreamError("the upstream server cannot check access tokens now (NO [UNAVAILABLE])");
    return this.#loggedIn(status);
  }

  async #loggedIn(status: StatusResponse): Promise<boolean> {
    if (status.status !== "OK") return false;
    if (status.code?.known && status.code.name === "CAPABILITY") {
      this.caps = new Set(status.code.capabilities.map((c) => c.toUpperCase()));
    } else {
      await this.refreshCapabilities();
    }
    const missing = REQUIRED_CAPABILITIES.filter((c) => !this.caps.has(c));
    if (missing.length > 0)
      throw new UpstreamError(`the upstream server lacks ${missing.join(", ")}, which the proxy requires`);
    return true;
  }

  /**
   * Sends one command and resolves with its tagged status. Untagged responses go to `onData` (or, when null, to
   * `onUnsolicited`). `afterTagged` runs synchronously when the tagged reply is parsed, before later bytes.
   *
   * `gate`: the command's first line goes now, its literals only once `gate` has resolved (and the server sent
   * `+`), so that the server's `+` round trip overlaps with what the proxy must finish first (APPEND's audit rows
   * made durable, docs/audit.md "Writing: batches and durability"). A server acts on no command before it has read
   * the whole of it, so nothing is written upstream before the gate. If the gate rejects while a literal is still to
   * be sent, the session fails: a synchronizing literal once announced cannot be withdrawn (RFC 9051 §4.3), and
   * the proxy never sends its octets.
   */
  run(
    command: UpstreamCommand,
    onData?: ((r: Response) => void) | null,
    timeoutMs?: number,
    afterTagged?: (() => void) | null,
    onChallenge?: (() => void) | null,
    gate?: Promise<unknown> | null,
  ): Promise<StatusResponse> {
    // No default parameters and no closure of its own here: either would give every call a scope object or two
    // (this runs for every upstream command).
    if (this.#error !== null) return Promise.reject(this.#error);
    if (this.#pending !== null) return Promise.reject(new Error("imap: upstream command already in flight"));
    const { tag, rounds } = this.#encode(command);
    // The first round goes now; `rounds` keeps the literals' rounds, each sent on its `+`.
    const first = rounds.shift()!;
    const { promise, resolve, reject } = Promise.withResolvers<StatusResponse>();
    try {
      const done = afterTagged ? resolveAfter(afterTagged, resolve) : resolve;
      const timeout = timeoutMs ?? this.#timeouts.commandMs;
      const pending = this.#pendingOf(tag, onData ?? null, rounds, onChallenge ?? null, done, reject, timeout);
      if (command.name === "ENABLE") pending.enables = new Set(command.capabilities.map((c) => c.toUpperCase()));
      pending.selection = selectionOf(command);
      pending.mailbox = selectedName(command);
      this.#pending = pending;
      if (gate && pending.rounds.length > 0) this.#holdLiterals(pending, gate);
      this.#send(first);
    } catch (error) {
      // As a promise's executor would: whatever failed here is the command's rejection.
      reject(error);
    }
    return promise;
  }

  /** `run`'s gate: the literals of `pending` wait for `gate`; its rejection fails the session if one still waits. */
  #holdLiterals(pending: Pending, gate: Promise<unknown>): void {
    pending.gateOpen = false;
    gate.then(
      () => {
        pending.gateOpen = true;
        if (!pending.plusWaiting || this.#pending !== pending || this.#error !== null) return;
        pending.plusWaiting = false;
        for (const chunk of pending.rounds.shift()!) this.#conn.write(chunk);
      },
      (error: unknown) => {
        if (this.#pending !== pending || pending.rounds.length === 0) return;
        const why = error instanceof Error ? error.message : String(error);
        this.#fail(new UpstreamError(`a literal announced upstream could not be sent: ${why}`));
      },
    );
  }

  /**
   * Writes `command` now, behind the commands in flight, when the first has been sent whole (no literal waiting for
   * `+`) and this one needs no `+` either: a server answers pipelined commands in order (RFC 9051 §5.5). Its
   * untagged responses go to `onData` once the tagged reply of the command before it has been dispatched. Null when
   * it cannot be pipelined (nothing in flight, a literal round or a challenge pending, or the session failed); the
   * caller then runs it the usual way. Callers pipeline a fixed few commands (src/imap/commands/select.ts), never one
   * per item of the agent's. Dovecot answers a pipelined command from the mailbox state of the command before it: new
   * mail shows up only after both (docs/imap.md "Round trips upstream").
   */
  pipeline(
    command: UpstreamCommand,
    onData: ((r: Response) => void) | null = null,
    timeoutMs = this.#timeouts.commandMs,
  ): Promise<StatusResponse> | null {
    const head = this.#pending;
    if (this.#error !== null || head === null || head.rounds.length > 0 || head.onChallenge !== null) return null;
    const { tag, rounds } = this.#encode(command);
    if (rounds.length !== 1) return null; // a tag number left unused is harmless
    return new Promise<StatusResponse>((resolve, reject) => {
      const queued = this.#pendingOf(tag, onData, [], null, resolve, reject, timeoutMs);
      queued.selection = selectionOf(command);
      queued.mailbox = selectedName(command);
      this.#queued.push(queued);
      this.#send(rounds[0]!);
    });
  }

  /**
   * Runs `f`, which starts commands (`run`, then `pipeline`), and writes the lines they send then in one write, so
   * that commands pipelined together reach the server together.
   */
  together<T>(f: () => T): T {
    if (this.#gathered !== null) return f();
    const gathered: Uint8Array[] = [];
    this.#gathered = gathered;
    try {
      return f();
    } finally {
      this.#gathered = null;
      if (gathered.length > 0) this.#conn.write(gathered.length === 1 ? gathered[0]! : Buffer.concat(gathered));
    }
  }

  /** A command's round, written now or gathered by `together`. */
  #send(round: Uint8Array[]): void {
    if (this.#gathered !== null) this.#gathered.push(...round);
    else for (const chunk of round) this.#conn.write(chunk);
  }

  /**
   * `command` under the next tag, as its rounds: one more for each literal, which waits for the server's `+`.
   * Every literal is synchronizing (RFC 9051 §4.3), even when the server offers LITERAL+ (RFC 7888): the octets of a
   * literal are the agent's data (a message, a search string), and a server that refuses the command before it
   * reads them (a flag it rejects, a line too long) skips to the next line and would take those octets as commands
   * of the proxy's own logged-in session. Waiting for `+` means a refused command never sends them
   * (docs/protocol.md §4, "Upstream literals").
   */
  #encode(command: UpstreamCommand): { tag: string; rounds: Uint8Array[][] } {
    const change = changesSession(command);
    if (change === "condstore") this.#condstore = true;
    else if (change === "session") this.#sessionChanged = true;
    const tag = `M${++this.#tagCount}`;
    let enc = this.#commandEncoder;
    if (enc === null) {
      enc = new Encoder({ side: "client" });
      this.#commandEncoder = enc;
    }
    try {
      writeCommand(enc, { ...command, tag } as Command);
    } catch (error) {
      this.#commandEncoder = null; // half a command may be in it
      throw error;
    }
    const rounds = enc.finish();
    // A long command (a large APPEND) grew the buffer: not kept for the life of the session.
    let bytes = 0;
    for (const round of rounds) for (const part of round) bytes += part.byteLength;
    if (bytes > KEPT_COMMAND_BUFFER) this.#commandEncoder = null;
    return { tag, rounds };
  }

  /** A command waiting for its tagged reply, failing the session after `timeoutMs` (none when 0). */
  #pendingOf(
    tag: string,
    onData: ((r: Response) => void) | null,
    rounds: Uint8Array[][],
    onChallenge: (() => void) | null,
    resolve: (s: StatusResponse) => void,
    reject: (e: Error) => void,
    timeoutMs: number,
  ): Pending {
    const deadline = timeoutMs > 0 ? performance.now() + timeoutMs : Number.POSITIVE_INFINITY;
    this.#arm(deadline);
    const expiry = "the upstream server did not answer in time";
    return {
      tag,
      onData,
      rounds,
      onChallenge,
      gateOpen: null,
      plusWaiting: false,
      enables: null,
      selection: null,
      mailbox: null,
      resolve,
      reject,
      deadline,
      expiry,
    };
  }

  /** Makes sure the watchdog fires by `deadline`. */
  #arm(deadline: number): void {
    if (deadline === Number.POSITIVE_INFINITY || this.#watchdogAt <= deadline) return;
    if (this.#watchdog !== null) clearTimeout(this.#watchdog);
    this.#watchdogAt = deadline;
    this.#watchdog = setTimeout(this.#onWatchdog, Math.max(1, Math.ceil(deadline - performance.now())));
  }

  /** Fails the session if a command in flight is past its deadline; otherwise waits for the next deadline. */
  readonly #onWatchdog = (): void => {
    this.#watchdog = null;
    this.#watchdogAt = Number.POSITIVE_INFINITY;
    const now = performance.now();
    for (const pending of [this.#pending, ...this.#queued]) {
      if (pending !== null && pending.deadline <= now) return this.#fail(new UpstreamError(pending.expiry));
    }
    for (const pending of [this.#pending, ...this.#queued]) if (pending !== null) this.#arm(pending.deadline);
  };

  /** Starts IDLE upstream; resolves once the server sent `+`. The returned promise of `done()` ends it. */
  async idle(onData: (r: Response) => void): Promise<{ done(): Promise<StatusResponse> }> {
    let started!: () => void;
    let failed!: (e: Error) => void;
    const ready = new Promise<void>((resolve, reject) => {
      started = resolve;
      failed = reject;
    });
    this.#onContinue = () => {
      this.#onContinue = null;
      // Idling now: no deadline until DONE (docs/imap.md "Deadlines").
      const pending = this.#pending;
      if (pending !== null) pending.deadline = Number.POSITIVE_INFINITY;
      started();
    };
    // Until its `+` the IDLE is a command like any other, with `commandMs`: a server that never starts it would
    // otherwise hold the session, and the agent whose DONE waits for it, until `idle_command_timeout`.
    const finished = this.run({ name: "IDLE" }, onData, this.#timeouts.commandMs);
    const pending = this.#pending;
    if (pending !== null && pending.onData === onData) pending.expiry = "the upstream server did not start IDLE";
    finished.then(
      // The text ends in the agent's BYE: without upstream's timings, as a tagged reply's.
      (s) => failed(new UpstreamError(`the upstream server refused IDLE: ${withoutTimings(s.text)}`)),
      (e: Error) => failed(e),
    );
    await ready;
    return {
      done: () => {
        this.#conn.write("DONE\r\n");
        const pending = this.#pending;
        if (pending !== null && pending.deadline === Number.POSITIVE_INFINITY) {
          pending.deadline = performance.now() + this.#timeouts.handshakeMs;
          pending.expiry = "the upstream server did not end IDLE";
          this.#arm(pending.deadline);
        }
        return finished;
      },
    };
  }

  pause(): void {
    this.#ownerPaused = true;
    this.#conn.pause();
  }

  resume(): void {
    this.#ownerPaused = false;
    if (!this.#memoryWait) this.#conn.resume();
  }

  #newFramer(): Framer {
    return new Framer(
      this.#memory === null
        ? { role: "client" }
        : { role: "client", holdLiteralsFrom: this.#memory.free, holdLinesFrom: this.#memory.free },
    );
  }

  /** Sends LOGOUT without waiting long for the reply, then closes. */
  async logout(): Promise<void> {
    if (this.#error !== null || this.#pending !== null) return this.close();
    this.#loggingOut = true;
    try {
      await this.run({ name: "LOGOUT" }, () => {}, 2000);
    } catch {
      // Closing anyway.
    }
    this.close();
  }

  close(): void {
    this.#conn.destroy();
  }

  #onData(chunk: Buffer): void {
    if (this.#discarding) return;
    if (this.#greeting !== null) this.#greetingOctets += chunk.length;
    const reservations = this.#reservations;
    const counted = this.#frameReserved > 0;
    this.#framer.feed(chunk);
    if (!this.#memoryWait) this.#frameAll();
    // A counted response's chunks are garbage once copied into its literal (src/imap/memory.ts `discarded`): the
    // response was counted when the chunk came, or became counted (and maybe was framed whole) while it was read.
    if (counted || this.#frameReserved > 0 || this.#reservations !== reservations)
      this.#memory!.discarded(chunk.length);
  }

  /** Frames and dispatches what has been read, until more input (or memory for a literal) is needed. */
  #frameAll(): void {
    for (;;) {
      if (this.#discarding) {
        this.#framer.discardBuffered();
        break;
      }
      const ev = this.#framer.next();
      if (ev === null) break;
      if (ev.kind === "error") {
        if (this.#greeting === null)
          return this.#fail(new UpstreamError(`the upstream server sent an invalid response: ${ev.error.message}`));
        // A greeting is one line (RFC 9051 §7.1): past MAX_RESPONSE_BYTES it is a line past MAX_RESPONSE_LINE too.
        return this.#fail(
          ev.error.code === "response-too-big" ? greetingTooLong() : malformedGreeting(ev.error.detail),
        );
      }
      if (ev.kind === "literal") {
        if (!this.#reserve(ev.request.size, () => this.#framer.acceptLiteral(true))) break;
        continue;
      }
      if (ev.kind === "line-memory") {
        // Room for the longest line at once, so that a line is not cut off half-way by a budget another session
        // took meanwhile; what the response did not use is given back when it is framed (below).
        const budget = this.#memory!.budget;
        const size = ev.size > budget ? ev.size : Math.min(Math.max(ev.size, RESPONSE_LINE_RESERVATION), budget);
        if (!this.#reserve(size, () => this.#framer.grantLineMemory(size))) break;
        continue;
      }
      if (ev.kind !== "frame") continue;
      let reserved = this.#frameReserved;
      this.#frameReserved = 0;
      // A line's reservation is for the longest line; the response holds at most its own size.
      if (reserved > ev.frame.size) {
        this.#memory!.give(reserved - ev.frame.size);
        reserved = ev.frame.size;
      }
      const parsed = parseResponse(ev.frame);
      if (!parsed.ok) {
        if (reserved > 0) this.#memory!.give(reserved);
        if (this.#greeting !== null)
          return this.#fail(
            ev.frame.truncated === true && ev.frame.literals.length === 0
              ? greetingTooLong()
              : malformedGreeting(parsed.error.detail),
          );
        return this.#fail(new UpstreamError(`the upstream server sent an invalid response: ${parsed.error.message}`));
      }
      try {
        this.#dispatch(parsed.value);
      } finally {
        // Even if the owner's handler threw: the reservation is the owner's to give back, or `#closed`'s.
        if (reserved > 0) this.#deliveredReservation(reserved);
      }
      if (this.#error !== null) return;
    }
    this.onBatch();
  }

  /**
   * Memory for a literal the framer announced, or for more of a response's lines (docs/reliability.md "Response
   * memory"): reserved now, `accept` tells the framer and framing goes on (true); or reading pauses until the budget
   * has room and framing resumes then (false). A response that already holds a reservation does not wait (two
   * sessions could each hold part and wait for the other's): the session fails instead, as one whose literal
   * exceeds the budget as a whole.
   */
  #reserve(size: number, accept: () => void): boolean {
    const memory = this.#memory!;
    // A response holding a reservation passes those waiting: it will not wait itself, and gives all back once out.
    if (memory.tryTake(size, this.#frameReserved > 0)) {
      this.#reservations++;
      this.#frameReserved += size;
      accept();
      return true;
    }
    if (this.#frameReserved > 0 || size > memory.budget) {
      this.#fail(
        new UpstreamError(
          `a response of the upstream server needs more memory than the proxy's budget for responses has free ` +
            `(${memory.budget} octets for all sessions)`,
        ),
      );
      return false;
    }
    this.#memoryWait = true;
    this.#conn.pause();
    const wait = memory.take(size);
    this.#cancelMemoryWait = wait.cancel;
    void wait.granted.then(() => {
      this.#cancelMemoryWait = null;
      if (this.#conn.closed || this.#error !== null) return memory.give(size);
      this.#memoryWait = false;
      this.#reservations++;
      this.#frameReserved += size;
      accept();
      if (!this.#ownerPaused) this.#conn.resume();
      this.#frameAll();
    });
    return false;
  }

  /** Hands a dispatched response's reservation to the owner, to be given back once; the session's end gives it too. */
  #deliveredReservation(size: number): void {
    const memory = this.#memory!;
    let given = false;
    const release = (): void => {
      if (given) return;
      given = true;
      this.#undelivered.delete(release);
      // Delivered, the response is garbage: collected before those waiting allocate theirs, when enough gathered.
      memory.discarded(size);
      memory.give(size);
    };
    this.#undelivered.add(release);
    this.afterDelivery(release);
  }

  #dispatch(r: Response): void {
    if (this.#greeting !== null) return this.#greeting(r);
    const pending = this.#pending;
    if (r.type === "continuation") {
      if (pending !== null && pending.rounds.length > 0) {
        if (pending.gateOpen === false) {
          // Written when the gate opens (`#holdLiterals`); a second `+` before that is a protocol error.
          if (pending.plusWaiting) return this.#fail(new UpstreamError("the upstream server sent `+` twice"));
          pending.plusWaiting = true;
          return;
        }
        for (const chunk of pending.rounds.shift()!) this.#conn.write(chunk);
      } else if (pending !== null && pending.onChallenge !== null) {
        pending.onChallenge();
      } else if (this.#onContinue !== null) {
        this.#onContinue();
      } else {
        // Nothing waits for one: no literal, no SASL exchange, no IDLE. A server that asks for data the proxy never
        // announced is out of step with it; what it reads next as a command is unknown (fail closed).
        return this.#fail(new UpstreamError("the upstream server sent `+` when no command waited for it"));
      }
      return;
    }
    // What upstream sends next depends on what is enabled there. QRESYNC never is (docs/protocol.md §2): a VANISHED
    // stands for expunges the mailbox model cannot apply (§3), so every later sequence number could name another
    // message, a hidden one among them; and an ENABLED may name only what its ENABLE asked for (RFC 5161 §3.2). Either
    // ends the session rather than go on with a model that may be wrong.
    if (r.type === "VANISHED")
      return this.#fail(new UpstreamError("the upstream server sent VANISHED, but QRESYNC was never enabled"));
    if (r.type === "ENABLED") {
      const extra = r.capabilities.find((c) => pending?.enables?.has(c.toUpperCase()) !== true);
      if (extra !== undefined)
        return this.#fail(new UpstreamError(`the upstream server enabled ${extra}, which the proxy did not ask for`));
    }
    if (r.type === "status" && r.tag !== null) {
      if (pending === null || r.tag !== pending.tag)
        return this.#fail(new UpstreamError("the upstream server answered a command that was not sent"));
      this.#pending = this.#queued.shift() ?? null;
      // RFC 9051 §6.3.2: a failed SELECT or EXAMINE leaves no mailbox selected, as UNSELECT and CLOSE do (§6.4.2).
      // A BAD is a command the server did not carry out (§7.1.3): whatever was selected may still be, and the pool
      // unselects such a session before it is kept (src/imap/upstream-pool.ts).
      if (pending.selection === "select" && r.status !== "BAD") {
        this.#mailboxSelected = r.status === "OK";
        this.#selectedName = r.status === "OK" ? pending.mailbox : null;
      } else if (pending.selection === "unselect" && r.status === "OK") {
        this.#mailboxSelected = false;
        this.#selectedName = null;
      }
      pending.resolve(r);
      return;
    }
    if (r.type === "status" && r.status === "BYE") {
      const error = new UpstreamError(`the upstream server closed the session: ${r.text}`);
      // Answering LOGOUT, the tagged OK follows; the close handler reports the end.
      if (this.#loggingOut) {
        this.#error ??= error;
        return;
      }
      // Unasked (RFC 9051 §7.1.5: autologout, shutdown): no command in flight gets its reply, so the session ends now,
      // not when the server closes its side or a deadline passes.
      return this.#fail(error);
    }
    if (pending !== null && pending.onData !== null) pending.onData(r);
    else this.onUnsolicited(r);
  }

  #fail(error: Error): void {
    this.#error ??= error;
    this.#conn.destroy();
  }

  #closed(error: Error | null): void {
    const failed = this.#error;
    const reason =
      this.#error ??
      (error
        ? new UpstreamError(`the upstream connection failed: ${error.message}`)
        : new UpstreamError("the upstream server closed the connection"));
    this.#error = reason;
    // A response cut off holds its reservation no longer; delivered ones are given back by their owner, or here.
    if (this.#frameReserved > 0) this.#memory!.give(this.#frameReserved);
    this.#frameReserved = 0;
    this.#cancelMemoryWait?.();
    this.#cancelMemoryWait = null;
    for (const release of [...this.#undelivered]) release();
    if (this.#watchdog !== null) clearTimeout(this.#watchdog);
    this.#watchdog = null;
    this.cutMidCommand = this.#pending !== null && this.#pending.rounds.length > 0;
    for (const pending of [this.#pending, ...this.#queued]) pending?.reject(reason);
    this.#pending = null;
    this.#queued.length = 0;
    if (this.#greeting !== null) {
      // A failure found in what came (`#frameAll`) says so; otherwise the connection ended before a whole line did.
      const before =
        this.#greetingOctets === 0
          ? "before its greeting"
          : `before its greeting was complete (${this.#greetingOctets} octets of it came, no line end)`;
      this.#greeting(
        failed ??
          new UpstreamError(
            error
              ? `the upstream connection failed ${before}: ${error.message}`
              : `the upstream server closed the connection ${before}`,
          ),
      );
    }
    this.onClose(reason);
  }
}

/** A greeting line longer than the longest response line the proxy reads (MAX_RESPONSE_LINE). */
function greetingTooLong(): UpstreamError {
  return new UpstreamError(
    `the upstream server's greeting is too long: a line longer than MAX_RESPONSE_LINE (${MAX_RESPONSE_LINE} octets)`,
  );
}

function malformedGreeting(why: string): UpstreamError {
  return new UpstreamError(`the upstream server's greeting is malformed: ${why}`);
}

/** The selected state a command changes once answered (RFC 9051 §6.3.2, §6.4.2, RFC 3691). */
function selectionOf(command: UpstreamCommand): "select" | "unselect" | null {
  if (command.name === "SELECT" || command.name === "EXAMINE") return "select";
  if (command.name === "UNSELECT" || command.name === "CLOSE") return "unselect";
  return null;
}

/**
 * What a command changes of the session beyond its selected mailbox. "condstore": it turns CONDSTORE on (RFC 7162
 * §3.1: ENABLE CONDSTORE, SELECT/EXAMINE `(CONDSTORE)`, STATUS `HIGHESTMODSEQ`, FETCH `MODSEQ` or `CHANGEDSINCE`,
 * STORE `UNCHANGEDSINCE`, SEARCH `MODSEQ`), which the proxy filters for each agent (`UpstreamSession.condstore`).
 * "session": anything else that outlasts the mailbox, an ENABLE of anything besides CONDSTORE (RFC 5161), COMPRESS
 * (RFC 4978), ID (RFC 2971, the client's identity as the server logs it) or LOGOUT; a session that ran one stays
 * with its agent. Every command is named: a new one is not taken to change nothing until it is classified here
 * (the switch is exhaustive; at run time an unnamed one counts as "session").
 */
function changesSession(command: UpstreamCommand): "condstore" | "session" | null {
  switch (command.name) {
    case "ENABLE":
      return command.capabilities.every((c) => c.toUpperCase() === "CONDSTORE") ? "condstore" : "session";
    case "COMPRESS":
    case "ID":
    case "LOGOUT":
      return "session";
    // How the session came to be logged in as its account: what the pool's key names (src/imap/upstream-pool.ts).
    case "STARTTLS":
    case "LOGIN":
    case "AUTHENTICATE":
      return null;
    case "SELECT":
    case "EXAMINE":
      return condstoreIf(command.condstore === true);
    case "STATUS":
      return condstoreIf(command.items.includes("HIGHESTMODSEQ"));
    case "LIST":
    case "LSUB":
      return condstoreIf(command.statusItems?.includes("HIGHESTMODSEQ") === true);
    case "FETCH":
      return condstoreIf(command.changedSince !== undefined || command.items.some(isModseqItem));
    case "STORE":
      return condstoreIf(command.unchangedSince !== undefined);
    case "SEARCH":
    case "SORT":
    case "THREAD":
      return condstoreIf(command.criteria.some(namesModseq));
    // The selected mailbox (UNSELECT and CLOSE end it: `selectionOf`), its messages, other mailboxes' data, or
    // nothing at all: none of it stays with the session once no mailbox is selected.
    case "CAPABILITY":
    case "NOOP":
    case "IDLE":
    case "UNSELECT":
    case "CHECK":
    case "NAMESPACE":
    case "CLOSE":
    case "CREATE":
    case "DELETE":
    case "SUBSCRIBE":
    case "UNSUBSCRIBE":
    case "RENAME":
    case "EXPUNGE":
    case "COPY":
    case "MOVE":
    case "APPEND":
      return null;
    default: {
      // Not reached while the switch is exhaustive; a command it does not name keeps the session with its agent.
      const unclassified: never = command;
      void unclassified;
      return "session";
    }
  }
}

/** The mailbox a SELECT or EXAMINE selects; null for any other command. */
function selectedName(command: UpstreamCommand): string | null {
  return command.name === "SELECT" || command.name === "EXAMINE" ? command.mailbox : null;
}

/** Two names of the same mailbox: the same name, or INBOX in any case (RFC 3501 §5.1). */
function sameMailbox(a: string, b: string): boolean {
  return a === b || (isInbox(a) && isInbox(b));
}

/** `run`'s resolution when something must run first, synchronously, as the tagged reply is parsed. */
function resolveAfter(first: () => void, resolve: (s: StatusResponse) => void): (s: StatusResponse) => void {
  return (s) => {
    first();
    resolve(s);
  };
}

function condstoreIf(enables: boolean): "condstore" | null {
  return enables ? "condstore" : null;
}

function isModseqItem(item: FetchItem): boolean {
  return item.type === "MODSEQ";
}

function namesModseq(key: SearchKey): boolean {
  switch (key.key) {
    case "MODSEQ":
      return true;
    case "NOT":
      return namesModseq(key.operand);
    case "OR":
      return namesModseq(key.left) || namesModseq(key.right);
    case "AND":
      return key.operands.some(namesModseq);
    default:
      return false;
  }
}
