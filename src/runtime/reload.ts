/**
 * Live configuration and reload (docs/operations.md "Reload"). `serve` keeps one `LiveConfig`; the proxies read
 * the config and policy from it at each use, so a SIGHUP that loads a new file changes the rules for every new
 * command. `onReload` is the hook for whoever counts reloads (metrics); `reloadFailures` counts failed ones.
 */

import { createSecureContext } from "node:tls";
import type { Config, ListenerConfig } from "../config/index.ts";
import { loadIdentity, type TlsIdentity } from "../net/index.ts";
import type { Policy } from "../policy/index.ts";

/** The config and its compiled policy, swapped as one; `generation` goes up by one at each successful reload. */
export class LiveConfig {
  #config: Config;
  #policy: Policy;
  #generation = 0;

  constructor(config: Config, policy: Policy) {
    this.#config = config;
    this.#policy = policy;
  }

  get config(): Config {
    return this.#config;
  }

  get policy(): Policy {
    return this.#policy;
  }

  get generation(): number {
    return this.#generation;
  }

  swap(config: Config, policy: Policy): void {
    this.#config = config;
    this.#policy = policy;
    this.#generation++;
  }
}

/** What one reload did; written to the status file and passed to `onReload` subscribers. */
export interface ReloadResult {
  readonly ok: boolean;
  /** ISO time of the reload. */
  readonly at: string;
  /** The config revision now in force (the old one when `ok` is false). */
  readonly revision: string;
  /** The revision before the reload. */
  readonly previousRevision: string;
  /**
   * Each error as `file:line:col: message` where the position is known. With `ok`, the steps that failed after the
   * new config came into force (a reload in part).
   */
  readonly errors: readonly string[];
  readonly warnings: readonly string[];
  /**
   * Sessions ended because their agent, token, account or upstream changed, or (IMAP) because the new rules would
   * show their selected folder otherwise.
   */
  readonly sessionsEnded: number;
}

type ReloadListener = (result: ReloadResult) => void;
const listeners = new Set<ReloadListener>();
let failures = 0;
let successes = 0;

/** Calls `listener` after every reload attempt; returns the function that unsubscribes it. */
export function onReload(listener: ReloadListener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** Reloads that failed (the old config stayed in force) since the process started. */
export function reloadFailures(): number {
  return failures;
}

/** Reloads that put a new config in force since the process started. */
export function reloadSuccesses(): number {
  return successes;
}

export function emitReload(result: ReloadResult): void {
  if (result.ok) successes++;
  else failures++;
  for (const listener of listeners) {
    try {
      listener(result);
    } catch {
      // A subscriber's failure must not stop the reload nor the other subscribers.
    }
  }
}

/** A proxy's part of a reload, checked before anything changes: `commit` swaps it in and returns sessions ended. */
export interface PreparedReload {
  readonly warnings: readonly string[];
  commit(): number;
}

/** A proxy's session as a reload sees it (src/imap/session.ts, src/smtp/session.ts). */
export interface ReloadingSession {
  /** Takes the config in force; true when that ended the session (the new config refuses it). */
  reloaded(): boolean;
  /** Ends the session now, as a reload ends one, saying why: it could not take the config in force. */
  endUnreloaded(why: string): void;
}

/** A part of a reload failed after the swap; `sessionsEnded` counts the sessions it ended all the same. */
export class ReloadPartError extends Error {
  override name = "ReloadPartError";
  constructor(
    message: string,
    readonly sessionsEnded: number,
  ) {
    super(message);
  }
}

/**
 * Some sessions could not take the new config (`reloaded` threw: a bug, config errors being caught before the
 * swap) and were ended instead; `sessionsEnded` counts them with those the new rules ended.
 */
export class SessionsNotReloaded extends ReloadPartError {
  override name = "SessionsNotReloaded";
  constructor(sessionsEnded: number, failed: number, first: string) {
    super(`${failed} session(s) could not take the new config (${first}) and were ended`, sessionsEnded);
  }
}

/**
 * Lets every session take the new config and returns how many it ended. A session whose `reloaded` throws is ended
 * (`endUnreloaded`), never left open under rules it may not have taken, and the sessions after it still take
 * theirs; then SessionsNotReloaded is thrown, which makes the outcome a reload in part (docs/operations.md
 * "Reload").
 */
export function reloadSessions(sessions: Iterable<ReloadingSession>): number {
  let ended = 0;
  let failed = 0;
  let first = "";
  for (const session of [...sessions]) {
    try {
      if (session.reloaded()) ended++;
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      if (failed++ === 0) first = message;
      ended++;
      try {
        session.endUnreloaded(message);
      } catch {
        // Its end failed too (endUnreloaded falls back to closing the connection): the others still take theirs.
      }
    }
  }
  if (failed > 0) throw new SessionsNotReloaded(ended, failed, first);
  return ended;
}

/**
 * A listener's part of a reload, once its new settings are in force: the new TLS identity for new connections, then
 * the sessions (`reloadSessions`), which take the new config even when setting the identity threw (its error is
 * thrown after them). Returns the sessions ended.
 */
export function commitListener(
  listener: { setIdentity(identity: TlsIdentity): void },
  identity: TlsIdentity | null,
  sessions: Iterable<ReloadingSession>,
): number {
  let failure: unknown = null;
  try {
    if (identity !== null) listener.setIdentity(identity);
  } catch (error) {
    failure = error;
  }
  if (failure === null) return reloadSessions(sessions);
  // Both errors are told: the identity's first (what is not in force), then the sessions'.
  let ended: number;
  let also = "";
  try {
    ended = reloadSessions(sessions);
  } catch (error) {
    if (!(error instanceof SessionsNotReloaded)) throw error;
    ended = error.sessionsEnded;
    also = `; ${error.message}`;
  }
  const why = failure instanceof Error ? failure.message : String(failure);
  throw new ReloadPartError(`the new TLS certificate could not be put in force (${why})${also}`, ended);
}

/** Reads and checks a listener's certificate and key (they must load as a pair); null without TLS. */
export function tlsIdentityFor(section: ListenerConfig): TlsIdentity | null {
  if (section.listenTls === "none") return null;
  const identity = loadIdentity(section.tlsCertFile ?? "", section.tlsKeyFile ?? "");
  try {
    createSecureContext({ key: identity.key, cert: identity.cert });
  } catch (e) {
    throw new Error(
      `tls_cert_file ${section.tlsCertFile} and tls_key_file ${section.tlsKeyFile} do not load as a pair: ` +
        (e as Error).message,
    );
  }
  return identity;
}

/**
 * What a reload may change for one listener: not whether it exists nor its `listen_tls` (refused: the old config
 * stays), not its `listen_addr` (a warning; the listener stays where it is). `prepare` reads the new files and
 * returns the commit; it throws when they do not load.
 */
export function listenerReload(
  name: "imap" | "smtp",
  old: Config,
  next: Config,
  prepare: () => () => number,
): PreparedReload {
  const before = old[name]!;
  const after = next[name];
  if (after === null) throw new Error(`[${name}] was removed: adding or removing a listener needs a restart`);
  if (after.listenTls !== before.listenTls)
    throw new Error(
      `[${name}] listen_tls cannot change on reload (${before.listenTls} to ${after.listenTls}): restart`,
    );
  const warnings: string[] = [];
  const at = (a: { host: string; port: number }): string => `${a.host}:${a.port}`;
  if (at(after.listenAddr) !== at(before.listenAddr))
    warnings.push(
      `[${name}] listen_addr cannot change on reload: still listening on ${at(before.listenAddr)}; ` +
        `restart to use ${at(after.listenAddr)}`,
    );
  const [was, now] = [old.limits[name], next.limits[name]];
  for (const [key, a, b] of [
    ["max_connections_per_ip", was.maxConnectionsPerIp, now.maxConnectionsPerIp],
    ["max_sessions_per_agent", was.maxSessionsPerAgent, now.maxSessionsPerAgent],
  ] as const)
    if (a !== b) warnings.push(`[limits.${name}] ${key} changes at the next restart (still ${a})`);
  return { warnings, commit: prepare() };
}
