/**
 * The credentials the proxies log in upstream with, per account (docs/accounts.md "Staying logged in").
 *
 * For an OAuth2 account it hands out a cached access token and refreshes it ahead of expiry, once per account
 * however many sessions ask at the same moment (single flight). A revoked grant (invalid_grant) marks the account
 * "needs re-authorization", persisted (held in memory while the state database does not take the mark), with one
 * error log line and one audit row per transition; a token endpoint that is down, slow, 5xx or 429 is retried with
 * capped exponential backoff and never costs the stored token.
 */

import type { AuditEvent } from "../audit/index.ts";
import type { Config, OAuth2AccountConfig } from "../config/index.ts";
import { ownEntry } from "../config/names.ts";
import { errorMessage } from "../log.ts";
import { SealedRecordError, type SealedStore } from "../state/store.ts";
import { AccountNeedsReauthorization, AccountTemporarilyUnavailable } from "./errors.ts";
import {
  heldLease,
  LEASE_MAX_WAIT_MS,
  LEASE_POLL_MS,
  leaseOwner,
  releaseLease,
  renewLease,
  takeLease,
} from "./lease.ts";
import {
  clientCredentialsGrant,
  type Endpoint,
  endpointFor,
  type Grant,
  GrantRevoked,
  refreshGrant,
  TokenEndpointUnavailable,
  UnusableAccessToken,
} from "./oauth.ts";
import {
  ensureSchema,
  matches,
  readStatus,
  readTokens,
  type StatusRow,
  sameTokens,
  saveRefreshedTokens,
  saveTokens,
  type TokenRecord,
  writeStatus,
} from "./records.ts";

/** Refresh once this fraction of the access token's lifetime has passed... */
export const REFRESH_AT_FRACTION = 0.8;
/** ...or this long before it expires, whichever comes first... */
export const REFRESH_MARGIN_MS = 60_000;
/** ...but never before this fraction of its lifetime (short-lived tokens would otherwise refresh at every use). */
export const MIN_USE_FRACTION = 0.5;
/** A token this close to its expiry (or a quarter of its lifetime, if less) is not handed out: it may expire in use. */
export const EXPIRY_SAFETY_MS = 5_000;
/** Retry a failed token request after this long, doubling per consecutive failure, up to BACKOFF_MAX_MS. */
export const BACKOFF_INITIAL_MS = 1_000;
export const BACKOFF_MAX_MS = 60_000;

export type Credential =
  | { readonly kind: "password"; readonly username: string; readonly password: string }
  | { readonly kind: "oauth2"; readonly username: string; readonly accessToken: string };

export interface CredentialsOptions {
  readonly config: Config;
  /** The state database; needed when any account uses OAuth2. */
  readonly store: SealedStore | null;
  /** Records the one audit row per "needs re-authorization" transition. */
  readonly audit?: ((event: AuditEvent) => void) | undefined;
  readonly log?: { error(m: string): void; warn(m: string): void; info(m: string): void } | undefined;
  readonly now?: (() => number) | undefined;
  readonly fetch?: typeof fetch | undefined;
}

/** When to refresh a token issued at `obtainedAt` that expires at `expiresAt`. */
export function refreshAt(obtainedAt: number, expiresAt: number): number {
  const lifetime = Math.max(0, expiresAt - obtainedAt);
  const margin = Math.min(
    Math.max(lifetime * (1 - REFRESH_AT_FRACTION), REFRESH_MARGIN_MS),
    lifetime * (1 - MIN_USE_FRACTION),
  );
  return expiresAt - margin;
}

/** The last moment a token may be handed out. */
export function usableUntil(obtainedAt: number, expiresAt: number): number {
  return expiresAt - Math.min(EXPIRY_SAFETY_MS, Math.max(0, expiresAt - obtainedAt) / 4);
}

export function backoffMs(failures: number): number {
  return Math.min(BACKOFF_MAX_MS, BACKOFF_INITIAL_MS * 2 ** Math.max(0, failures - 1));
}

interface Runtime {
  endpoint: Endpoint;
  record: TokenRecord | null;
  loaded: boolean;
  flight: Promise<TokenRecord> | null;
  failures: number;
  retryAt: number;
  lastError: string | null;
  /** An access token the upstream refused: not handed out again. */
  rejected: string | null;
  /**
   * Tokens obtained but not yet written to the state database (the write failed: a full disk, a lock held too
   * long). They are in use from memory and written again at the account's next use once `retryAt` has passed (the
   * lease kept for them then released), before the next token request and at `settled()`; the provider may already
   * have retired the stored refresh token when it issued them, so they must not be dropped.
   */
  unsaved: Unsaved | null;
  /** A refusal of the grant whose mark the state database did not take (`#holdRefusal`); null when none. */
  held: HeldRefusal | null;
}

/** Tokens a refresh obtained whose write failed (`Runtime.unsaved`). */
interface Unsaved {
  readonly record: TokenRecord;
  /** The stored pair the refresh that obtained them started from (`saveRefreshedTokens`). */
  readonly base: TokenRecord | null;
  /** Failed writes so far, and when to write them again at the account's next use (backoffMs). */
  failures: number;
  retryAt: number;
}

/**
 * The provider refused the grant (invalid_grant) and the state database did not take the "needs re-authorization"
 * mark (locked past its busy timeout, full, read-only): the account is refused from memory, and no refresh is sent,
 * until the mark is stored or a newer pair is (docs/accounts.md "When an account needs re-authorization").
 */
interface HeldRefusal {
  /** The provider's refusal, as the mark would hold it. */
  readonly message: string;
  /** The stored pair the refused refresh started from: a pair stored over it (a new login) ends the hold. */
  readonly base: TokenRecord | null;
  /** Failed writes of the mark so far, and when to write it again (backoffMs). */
  failures: number;
  storeAt: number;
}

export class AccountCredentials {
  #config: Config;
  readonly #store: SealedStore | null;
  readonly #fetch: CredentialsOptions["fetch"];
  readonly #audit: CredentialsOptions["audit"];
  readonly #log: NonNullable<CredentialsOptions["log"]>;
  readonly #now: () => number;
  readonly #runtime = new Map<string, Runtime>();
  /** This token manager's id in the refresh lease (src/accounts/lease.ts). */
  readonly #owner = leaseOwner();
  /** `settled()` calls under way: a refresh waiting for another process's lease gives up instead of waiting on. */
  #settling = 0;
  /**
   * Token requests still out of runtimes a reload replaced or removed (`prepareReload`), by account: the answer of
   * one is stored over the pair it started from (`#throwIfRetired`), and the account's next token request waits for
   * it rather than send the refresh token it may be retiring.
   */
  readonly #retiring = new Set<{ readonly name: string; readonly flight: Promise<TokenRecord> }>();

  constructor(options: CredentialsOptions) {
    this.#config = options.config;
    this.#store = options.store;
    this.#fetch = options.fetch;
    this.#audit = options.audit;
    this.#log = options.log ?? { error: console.error, warn: console.warn, info: () => {} };
    this.#now = options.now ?? Date.now;
    const oauth = Object.values(options.config.accounts).filter((a) => a.auth === "oauth2");
    if (oauth.length > 0 && this.#store === null)
      throw new Error("accounts: OAuth2 accounts need the state database (docs/accounts.md)");
    if (this.#store) ensureSchema(this.#store);
    for (const account of oauth) this.#runtime.set(account.name, this.#fresh(account));
  }

  #fresh(account: OAuth2AccountConfig): Runtime {
    return {
      endpoint: endpointFor(account.oauth2, this.#fetch),
      record: null,
      loaded: false,
      flight: null,
      failures: 0,
      retryAt: 0,
      lastError: null,
      rejected: null,
      unsaved: null,
      held: null,
    };
  }

  /**
   * A reload's accounts (docs/operations.md "Reload"): checked now, applied by `commit`. An OAuth2 account whose
   * grant, client id or token endpoint changed starts afresh (its stored tokens count only if they were issued to
   * the new client and token endpoint); one that did not keeps its tokens, and a refresh under way, whose answer
   * belongs to the same grant: with a provider that rotates refresh tokens it holds the only good one. Another
   * client secret, scopes, authorize or device URL are used from the next token request, with the back-off reset.
   * Throws when the reload adds OAuth2 accounts to a process that has no state database open (it is opened at
   * start): the reload fails, nothing changes.
   */
  prepareReload(next: Config): { commit(): void } {
    const oauth = Object.values(next.accounts).filter((a) => a.auth === "oauth2");
    if (oauth.length > 0 && this.#store === null) {
      throw new Error(
        "accounts: OAuth2 accounts need the state database, which is opened at start: restart to add the first one",
      );
    }
    return {
      commit: () => {
        const previous = this.#config.accounts;
        this.#config = next;
        for (const [name, rt] of [...this.#runtime]) {
          const account = ownEntry(next.accounts, name);
          if (account?.auth !== "oauth2") {
            this.#retire(name, rt);
            this.#runtime.delete(name);
          }
        }
        for (const account of oauth) {
          const before = ownEntry(previous, account.name);
          const rt = this.#runtime.get(account.name);
          const same = before?.auth === "oauth2" && sameClient(before.oauth2, account.oauth2);
          const grant = before?.auth === "oauth2" && sameGrant(before.oauth2, account.oauth2);
          if (rt === undefined || (!same && !grant)) {
            if (rt !== undefined) this.#retire(account.name, rt);
            this.#runtime.set(account.name, this.#fresh(account));
          } else if (!same) {
            // The same grant: its tokens (unwritten ones too) and a refresh out stay; a second runtime would send
            // the refresh token that refresh is retiring (docs/accounts.md "Staying logged in").
            rt.endpoint = endpointFor(account.oauth2, this.#fetch);
            recovered(rt);
          }
        }
      },
    };
  }

  /** Keeps the token request `rt` has out, if any, in #retiring until it ends. */
  #retire(name: string, rt: Runtime): void {
    if (rt.flight === null) return;
    const entry = { name, flight: rt.flight };
    this.#retiring.add(entry);
    const done = () => this.#retiring.delete(entry);
    rt.flight.then(done, done);
  }

  /**
   * The credential to log in upstream as `accountName`. Never returns an expired access token. Throws
   * AccountNeedsReauthorization or AccountTemporarilyUnavailable (both: refuse the agent with a temporary failure).
   */
  async credentialFor(accountName: string): Promise<Credential> {
    const account = ownEntry(this.#config.accounts, accountName);
    if (account === undefined) throw new Error(`accounts: no account named ${JSON.stringify(accountName)}`);
    if (account.auth === "password")
      return { kind: "password", username: account.username, password: account.password.reveal() };
    const rt = this.#runtime.get(accountName)!;
    this.#checkAuthorized(account, rt);
    // Tokens whose write failed, written again once their backoff has passed, and the lease they kept released: a
    // process waiting for it would send the stored refresh token, which they may have retired, once it expires.
    const unsaved = rt.unsaved;
    if (unsaved !== null && rt.flight === null && this.#now() >= unsaved.retryAt && this.#saveUnsaved(accountName, rt))
      this.#releaseLease(account, rt);
    const record = this.#load(account, rt);
    const now = this.#now();
    const token = record?.accessToken ?? null;
    if (token !== null && token !== rt.rejected && record?.expiresAt != null) {
      if (now < usableUntil(record.obtainedAt, record.expiresAt)) {
        if (now >= refreshAt(record.obtainedAt, record.expiresAt) && now >= rt.retryAt)
          this.#refresh(account, rt).catch(() => {}); // ahead of expiry; failures are logged and backed off
        return { kind: "oauth2", username: account.username, accessToken: token };
      }
    }
    if (now < rt.retryAt)
      throw new AccountTemporarilyUnavailable(accountName, rt.lastError ?? "token endpoint unavailable", rt.retryAt);
    const fresh = await this.#refresh(account, rt);
    return { kind: "oauth2", username: account.username, accessToken: fresh.accessToken! };
  }

  /** The upstream refused `accessToken` though it had not expired: the next credentialFor fetches a new one. */
  reportRejected(accountName: string, accessToken: string): void {
    const rt = this.#runtime.get(accountName);
    if (rt?.record?.accessToken === accessToken) rt.rejected = accessToken;
  }

  /**
   * Resolves once no token request is in flight, whatever its outcome. A short-lived process (`mailgator approvals
   * approve`) awaits it before closing the state database, so that a refresh started ahead of expiry is written
   * before the process ends (a rotated refresh token would otherwise be lost), as is the mark of a refusal held in
   * memory (`#holdRefusal`), if the state database takes it now.
   */
  async settled(): Promise<void> {
    this.#settling++;
    try {
      for (;;) {
        const flights = [...this.#runtime.values()].flatMap((rt) => (rt.flight ? [rt.flight] : []));
        for (const { flight } of this.#retiring) flights.push(flight);
        if (flights.length === 0) break;
        await Promise.allSettled(flights);
      }
    } finally {
      this.#settling--;
    }
    for (const [name, rt] of this.#runtime) {
      this.#saveUnsaved(name, rt);
      // A refusal held in memory: its mark is written now, before the process ends, whatever its backoff.
      const account = ownEntry(this.#config.accounts, name);
      if (rt.held !== null && account?.auth === "oauth2") this.#storeHeld(account, rt, rt.held);
    }
  }

  /** Writes tokens whose first write failed; true when none are left unwritten. */
  #saveUnsaved(name: string, rt: Runtime): boolean {
    const unsaved = rt.unsaved;
    if (unsaved === null) return true;
    try {
      // A pair stored since by another process (`mailgator account login`) is newer: it wins, this one is dropped.
      const kept = saveRefreshedTokens(this.#store!, name, unsaved.record, unsaved.base, this.#now());
      if (kept !== null) {
        rt.unsaved = null;
        this.#adopt(name, rt, kept.stored);
        return true;
      }
    } catch (e) {
      unsaved.failures++;
      unsaved.retryAt = this.#now() + backoffMs(unsaved.failures);
      this.#log.error(
        `account ${name}: the new tokens are still not written to the state database: ${errorMessage(e)}`,
      );
      return false;
    }
    rt.unsaved = null;
    this.#log.info(`account ${name}: the new tokens are written to the state database`);
    return true;
  }

  /**
   * Another process stored `stored` while this one refreshed: it is newer and stays. This process uses it from
   * now on where it is for the configured client; otherwise (the config names a new client and this process has
   * not been reloaded yet) it keeps the tokens in memory and writes nothing.
   */
  #adopt(name: string, rt: Runtime, stored: TokenRecord | null): void {
    const account = ownEntry(this.#config.accounts, name);
    if (stored === null || account?.auth !== "oauth2" || !matches(stored, account.oauth2)) return;
    rt.record = stored;
    this.#log.info(`account ${name}: a newer login was stored meanwhile; it stays, and is used from now on`);
  }

  /** Status rows of the OAuth2 accounts (no secrets). */
  status(): StatusRow[] {
    if (!this.#store) return [];
    return [...this.#runtime.keys()].flatMap((name) => readStatus(this.#store!, name) ?? []);
  }

  #checkAuthorized(account: OAuth2AccountConfig, rt: Runtime): void {
    // A client_credentials account has no login to fix a mark with: its token requests are retried instead (and a
    // mark an earlier version left is no reason to stop).
    if (account.oauth2.grant === "client_credentials") return;
    // Read from the database each time: `mailgator account login` may have fixed it since.
    const status = readStatus(this.#store!, account.name);
    if (status?.state === "needs-reauthorization") {
      // Stored (by this process or another): the stored mark stands for the one held, and a login clears it.
      if (rt.held !== null) this.#endHold(account, rt, null);
      throw new AccountNeedsReauthorization(account.name, status.lastError ?? "the provider refused the grant");
    }
    if (rt.held !== null) this.#checkHeld(account, rt, rt.held);
  }

  /**
   * An account whose refusal is held in memory (`#holdRefusal`): refused, with no token request, unless a pair was
   * stored over the refused one since (`mailgator account login`), which ends the hold. Once its backoff has passed,
   * the mark is written again; stored, it ends the hold (a login then clears it as any mark).
   */
  #checkHeld(account: OAuth2AccountConfig, rt: Runtime, held: HeldRefusal): void {
    let stored: TokenRecord | null;
    try {
      stored = readTokens(this.#store!, account.name);
    } catch {
      stored = null; // unreadable: no newer login to be seen, the account stays refused
    }
    if (stored !== null && !sameTokens(stored, held.base)) return this.#endHold(account, rt, stored);
    // Refused whether the mark is stored now or not; only a newer pair lets the account go on.
    if (this.#now() >= held.storeAt && this.#storeHeld(account, rt, held) === "newer") return;
    throw new AccountNeedsReauthorization(account.name, held.message);
  }

  /**
   * Writes a held refusal's mark (`#markNeedsReauthorization`; its audit row is recorded already): "stored" ends the
   * hold, as does "newer" (a pair stored over the refused one, used instead); "failed" keeps it, with a longer backoff.
   */
  #storeHeld(account: OAuth2AccountConfig, rt: Runtime, held: HeldRefusal): "stored" | "newer" | "failed" {
    let newer: TokenRecord | null;
    try {
      newer = this.#markNeedsReauthorization(account, held.message, held.base, { recorded: true });
    } catch (e) {
      held.failures++;
      const waitMs = backoffMs(held.failures);
      held.storeAt = this.#now() + waitMs;
      this.#log.error(
        `account ${account.name}: the needs-reauthorization mark is still not stored in the state database ` +
          `(${errorMessage(e)}); the account stays refused and no refresh is sent; tried again in ` +
          `${Math.round(waitMs / 1000)} s`,
      );
      return "failed";
    }
    this.#endHold(account, rt, newer);
    return newer === null ? "stored" : "newer";
  }

  /**
   * The hold of a refusal ends: its mark is stored (`newer` null; the stored mark refuses the account from now on),
   * or `newer`, a pair stored over the refused one, is there. Used where it is for the configured client; one of
   * another client (a login for a new `client_id`, this process not reloaded yet) is not, and the refused pair is
   * not either: the account has no login to refresh until the reload.
   */
  #endHold(account: OAuth2AccountConfig, rt: Runtime, newer: TokenRecord | null): void {
    rt.held = null;
    recovered(rt);
    if (newer === null) {
      this.#log.info(`account ${account.name}: the needs-reauthorization mark is stored in the state database now`);
      return;
    }
    rt.record = matches(newer, account.oauth2) ? newer : null;
    this.#log.info(`account ${account.name}: a newer login is stored; the refusal held in memory ends`);
  }

  #load(account: OAuth2AccountConfig, rt: Runtime): TokenRecord | null {
    if (!rt.loaded) {
      rt.record = this.#read(account);
      rt.loaded = true;
    }
    return rt.record;
  }

  #read(account: OAuth2AccountConfig): TokenRecord | null {
    let record: TokenRecord | null;
    try {
      record = readTokens(this.#store!, account.name);
    } catch (e) {
      if (e instanceof SealedRecordError) throw new AccountNeedsReauthorization(account.name, e.message);
      throw e;
    }
    return record !== null && matches(record, account.oauth2) ? record : null;
  }

  #refresh(account: OAuth2AccountConfig, rt: Runtime): Promise<TokenRecord> {
    rt.flight ??= this.#tokenRequest(account, rt).finally(() => {
      rt.flight = null;
    });
    return rt.flight;
  }

  async #tokenRequest(account: OAuth2AccountConfig, rt: Runtime, retried = false): Promise<TokenRecord> {
    if (account.oauth2.grant === "client_credentials") return this.#leasedTokenRequest(account, rt, retried);
    // A refresh of this account that a reload retired (the account was removed, or given another client, and is
    // back) may still be out, sending the stored refresh token: it stores its answer, which this one then reads.
    const retired = [...this.#retiring].flatMap((r) => (r.name === account.name ? [r.flight] : []));
    if (retired.length > 0) await Promise.allSettled(retired);
    // One refresh of the account at a time across processes (src/accounts/lease.ts).
    const lease = { held: false };
    try {
      const waited = await this.#lease(account, rt, lease);
      if (waited !== null) {
        this.#throwIfRetired(account, rt);
        return waited;
      }
      return await this.#leasedTokenRequest(account, rt, retried);
    } finally {
      if (lease.held) this.#releaseLease(account, rt);
    }
  }

  /**
   * Takes the account's refresh lease. While another process holds it, waits (LEASE_POLL_MS, LEASE_MAX_WAIT_MS in
   * all) and returns the pair that process stores if its access token is good for now: no token request then. Once
   * the lease is taken (or cannot be: a database that cannot be written, a wait past LEASE_MAX_WAIT_MS), returns
   * null and the caller sends its refresh, as it would without a lease.
   */
  async #lease(account: OAuth2AccountConfig, rt: Runtime, lease: { held: boolean }): Promise<TokenRecord | null> {
    const name = account.name;
    const store = this.#store!;
    // The stored pair this process knows of: a pair stored since is another process's (or a login's), newer.
    const known = rt.unsaved !== null ? rt.unsaved.base : rt.record;
    const deadline = this.#now() + LEASE_MAX_WAIT_MS;
    let waiting = false;
    for (;;) {
      let heldUntil: number | null;
      try {
        heldUntil = takeLease(store, name, this.#owner, this.#now());
      } catch (e) {
        // Not taken (the write lock held past the busy timeout, a database this process cannot write). A live lease
        // of another process that can still be read is waited for all the same: its holder is sending the refresh
        // token this process would send, and a provider that rotates may take the second one for a reuse.
        let seen: number | null = null;
        try {
          seen = heldLease(store, name, this.#owner, this.#now());
        } catch {}
        if (seen === null) {
          this.#log.warn(`account ${name}: refresh lease not taken (${errorMessage(e)}); refreshing without it`);
          return null;
        }
        if (!waiting)
          this.#log.warn(`account ${name}: refresh lease not taken (${errorMessage(e)}); another process holds it`);
        heldUntil = seen;
      }
      if (heldUntil === null) {
        lease.held = true;
        // Taken. The holder before may have stored its pair just before it released the lease: used if good.
        const newer = rt.unsaved === null ? this.#storedSince(account, rt, known) : null;
        // Or its refresh was refused and it marked the account: this one would be refused too.
        if (newer === null && waiting) this.#checkAuthorized(account, rt);
        return newer;
      }
      if (!waiting) this.#log.info(`account ${name}: another process is refreshing the token; waiting for it`);
      waiting = true;
      // A process ending (`settled`) does not start a wait: the holder stores its pair, this one has sent nothing.
      if (this.#settling > 0)
        throw new AccountTemporarilyUnavailable(name, "another process is refreshing the token", this.#now());
      const left = deadline - this.#now();
      if (left <= 0) {
        this.#log.warn(
          `account ${name}: the refresh lease is still held after ${LEASE_MAX_WAIT_MS} ms; refreshing without it`,
        );
        return null;
      }
      await Bun.sleep(Math.min(LEASE_POLL_MS, left, Math.max(1, heldUntil - this.#now())));
      const newer = this.#storedSince(account, rt, known);
      if (newer !== null) return newer;
    }
  }

  /**
   * The pair stored over `known` by another process, adopted when its access token is good and not due for a
   * refresh yet (nor the one the upstream refused); else null (and a newer pair is still adopted: its refresh token
   * is the one to send).
   */
  #storedSince(account: OAuth2AccountConfig, rt: Runtime, known: TokenRecord | null): TokenRecord | null {
    let stored: TokenRecord | null;
    try {
      stored = this.#read(account);
    } catch {
      return null; // unreadable: the token request reads it again and reports it
    }
    if (stored === null || sameTokens(stored, known)) return null;
    // Newer than what this process holds unwritten too: saveRefreshedTokens would drop those for it.
    rt.unsaved = null;
    rt.record = stored;
    const { accessToken, expiresAt } = stored;
    if (accessToken === null || accessToken === rt.rejected || expiresAt === null) return null;
    if (this.#now() >= refreshAt(stored.obtainedAt, expiresAt)) return null;
    this.#log.info(`account ${account.name}: another process refreshed the token; using it`);
    recovered(rt);
    return stored;
  }

  #releaseLease(account: OAuth2AccountConfig, rt: Runtime): void {
    // Tokens this process could not write: the stored refresh token may be retired, so the lease is left in place
    // rather than let another process send it at once (released once they are written: credentialFor).
    if (rt.unsaved !== null) return;
    try {
      releaseLease(this.#store!, account.name, this.#owner);
    } catch (e) {
      this.#log.warn(`account ${account.name}: refresh lease not released (${errorMessage(e)}); it expires`);
    }
  }

  async #leasedTokenRequest(account: OAuth2AccountConfig, rt: Runtime, retried: boolean): Promise<TokenRecord> {
    const name = account.name;
    const settings = account.oauth2;
    // Re-read: another process (`account login`, or a proxy restarted after a rotation) may have written newer tokens.
    // Not while this process holds tokens it could not write: the stored refresh token may be the one they retired.
    const stored = this.#saveUnsaved(name, rt) ? this.#read(account) : null;
    if (stored !== null) rt.record = stored;
    const current = rt.record;
    // The stored pair this refresh replaces: while earlier tokens are still unwritten, the one they were to replace.
    const base = rt.unsaved !== null ? rt.unsaved.base : current;
    const started = this.#now();
    let grant: Grant;
    try {
      if (settings.grant === "client_credentials") grant = await clientCredentialsGrant(rt.endpoint, settings.scopes);
      else {
        if (current?.refreshToken == null)
          throw new AccountNeedsReauthorization(name, "no stored login for this client");
        grant = await refreshGrant(rt.endpoint, current.refreshToken);
      }
    } catch (e) {
      if (e instanceof AccountNeedsReauthorization) throw e;
      // The response's access token is unusable, but the refresh token it rotated may be the only good one now.
      const rotated = e instanceof UnusableAccessToken ? e.rotatedRefreshToken() : null;
      const kept =
        rotated !== null && settings.grant !== "client_credentials"
          ? withRefreshToken(current, settings, started, rotated)
          : null;
      this.#throwIfRetired(account, rt, kept, base);
      const error = e as Error;
      // invalid_grant ends a refresh token's grant; a client_credentials request has none (RFC 6749 §4.4): there it
      // is an error of the app's registration or the provider, retried with backoff like invalid_client.
      if (e instanceof GrantRevoked && settings.grant !== "client_credentials") {
        // Another process may have stored a newer pair meanwhile (`account login`, or the refresh of a second
        // process on the same database, whose rotation retired the token refused here). Checked in the transaction
        // that would mark the account, against `base` (not the refused token, which may be one held in memory only),
        // so that no pair written between the check and the mark is missed.
        const row = { recorded: false };
        let newer: TokenRecord | null;
        try {
          newer = this.#markNeedsReauthorization(account, error.message, base, row);
        } catch (e) {
          // Not marked, as its audit row cannot be written: retried with backoff, marked with its row later.
          if (e instanceof UnrecordedMark) throw this.#unrecorded(account, rt, error.message, e.cause);
          // The state database did not take the mark (a lock held past its busy timeout, a full disk): the refusal
          // is held in memory, so that the refused refresh token is not sent again meanwhile.
          throw this.#holdRefusal(account, rt, error.message, base, row, e);
        }
        if (newer === null) throw new AccountNeedsReauthorization(name, error.message);
        return this.#useNewer(account, rt, newer, retried, error.message);
      }
      if (kept !== null) this.#keep(account, rt, kept, base);
      rt.failures++;
      rt.retryAt = this.#now() + backoffMs(rt.failures);
      rt.lastError = error.message;
      const kind = e instanceof TokenEndpointUnavailable ? "unavailable" : "refused the request";
      const retryS = Math.round((rt.retryAt - this.#now()) / 1000);
      this.#log.warn(`account ${name}: token endpoint ${kind}: ${error.message}; retry in ${retryS} s`);
      this.#noteError(account, error.message);
      throw new AccountTemporarilyUnavailable(name, error.message, rt.retryAt);
    }
    const record: TokenRecord = {
      // RFC 6749 section 6: the client keeps its refresh token when the response carries no new one.
      refreshToken: grant.refreshToken ?? current?.refreshToken ?? null,
      accessToken: grant.accessToken,
      expiresAt: started + grant.expiresIn * 1000,
      obtainedAt: started,
      clientId: settings.clientId,
      tokenUrl: settings.tokenUrl,
    };
    this.#throwIfRetired(account, rt, settings.grant === "client_credentials" ? null : record, base);
    this.#keep(account, rt, record, base);
    if (rt.failures > 0) this.#log.info(`account ${name}: token endpoint answers again`);
    recovered(rt);
    rt.rejected = null;
    return record;
  }

  /**
   * A refusal of the grant whose mark and audit row could not be recorded, as the audit log refused the row: not
   * marked, retried with backoff like a token endpoint error, and marked with its row once the log takes it.
   */
  #unrecorded(account: OAuth2AccountConfig, rt: Runtime, message: string, cause: unknown): Error {
    rt.unsaved = null;
    rt.failures++;
    rt.retryAt = this.#now() + backoffMs(rt.failures);
    rt.lastError = message;
    const retryS = Math.round((rt.retryAt - this.#now()) / 1000);
    this.#log.error(
      `account ${account.name}: refresh refused (${message}), not marked as needing re-authorization: its ` +
        `audit row cannot be written (${errorMessage(cause)}); retry in ${retryS} s`,
    );
    this.#noteError(account, message);
    return new AccountTemporarilyUnavailable(account.name, message, rt.retryAt);
  }

  /**
   * The provider refused the grant, and the state database did not take the mark (`cause`: a lock held past its
   * busy timeout, a full disk, a read-only file). The refusal is held in this process instead (`Runtime.held`): the
   * account is refused and no refresh is sent until the mark is stored (tried again at the account's next use after
   * a backoff, and at `settled()`) or a newer pair is (docs/accounts.md "When an account needs re-authorization").
   * Its audit row is recorded now unless the failed transaction queued it (`row`); an audit log that refuses it too
   * leaves the refusal unrecorded (`#unrecorded`).
   */
  #holdRefusal(
    account: OAuth2AccountConfig,
    rt: Runtime,
    message: string,
    base: TokenRecord | null,
    row: { recorded: boolean },
    cause: unknown,
  ): Error {
    const name = account.name;
    const now = this.#now();
    const refusal = new AccountNeedsReauthorization(name, message);
    if (!row.recorded) {
      try {
        this.#audit?.(this.#markRow(account, refusal.message, now, false));
      } catch (e) {
        return this.#unrecorded(account, rt, message, e);
      }
      row.recorded = true;
    }
    // Tokens held unwritten belong to the grant the provider just refused: nothing to keep.
    rt.unsaved = null;
    rt.held = { message, base, failures: 1, storeAt: now + backoffMs(1) };
    this.#log.error(
      `${refusal.message}; the mark is not stored in the state database (${errorMessage(cause)}): the account is ` +
        `refused from memory and no refresh is sent; the mark is stored again in ${Math.round(backoffMs(1) / 1000)} s`,
    );
    return refusal;
  }

  /**
   * Stores the tokens a token request obtained over `base`, the pair it started from, and uses them from now on
   * (from memory when the write fails: the old refresh token may be retired; or the pair another process stored
   * meanwhile, which is newer).
   */
  #keep(account: OAuth2AccountConfig, rt: Runtime, record: TokenRecord, base: TokenRecord | null): void {
    const name = account.name;
    let kept: ReturnType<typeof saveRefreshedTokens> = null;
    try {
      // An app-only token has no login to keep: it replaces whatever is stored (a record of a former client too).
      if (account.oauth2.grant === "client_credentials") saveTokens(this.#store!, name, record, this.#now());
      else kept = saveRefreshedTokens(this.#store!, name, record, base, this.#now());
      // Written, or a newer pair is stored: tokens still unwritten from before are superseded either way.
      rt.unsaved = null;
    } catch (e) {
      // The tokens are good and the old refresh token may be retired: use these from memory, write them later.
      rt.unsaved = { record, base, failures: 1, retryAt: this.#now() + backoffMs(1) };
      this.#log.error(
        `account ${name}: new tokens obtained but not written to the state database (${errorMessage(e)}); kept in ` +
          `memory and written again at the account's next use in ${Math.round(backoffMs(1) / 1000)} s or later`,
      );
    }
    rt.record = record;
    // Stored by another process meanwhile: that pair stays, and is used from the next request on.
    if (kept !== null) this.#adopt(name, rt, kept.stored);
  }

  /**
   * A reload replaced the account's client (grant, client id or token endpoint) or removed the account while this
   * token request was out (`prepareReload`; another secret, scopes or authorize URL keep the request's runtime): its
   * outcome belongs to the old client. The account does not use it, no refusal is recorded (it would mark the
   * account for a grant it no longer uses), and the caller gets a temporary failure: a retry uses the new settings.
   * But `obtained`, a pair with the refresh token the provider issued (and may have retired the stored one for), is
   * stored over `base`, the pair the request started from, as any refresh's is (never over a login stored since):
   * a later reload that brings the account or its client back uses it (docs/accounts.md "Staying logged in").
   */
  #throwIfRetired(
    account: OAuth2AccountConfig,
    rt: Runtime,
    obtained: TokenRecord | null = null,
    base: TokenRecord | null = null,
  ): void {
    if (this.#runtime.get(account.name) === rt) return;
    if (obtained !== null) {
      try {
        saveRefreshedTokens(this.#store!, account.name, obtained, base, this.#now());
      } catch (e) {
        this.#log.error(
          `account ${account.name}: the tokens of a refresh a reload retired are not written to the state database ` +
            `(${errorMessage(e)}); the account may need \`mailgator account login ${account.name}\``,
        );
      }
    }
    throw new AccountTemporarilyUnavailable(
      account.name,
      "the account's settings changed by a reload while its token was being requested",
      this.#now(),
    );
  }

  /**
   * The failure in the account's status row (`account status`). A row the state database does not take (locked past
   * its busy timeout, full) is logged, and the failure is reported to the caller all the same, as the temporary
   * failure it is.
   */
  #noteError(account: OAuth2AccountConfig, message: string): void {
    try {
      this.#writeRetrying(account, message);
    } catch (e) {
      this.#log.error(`account ${account.name}: its status is not written to the state database (${errorMessage(e)})`);
    }
  }

  #writeRetrying(account: OAuth2AccountConfig, message: string): void {
    const store = this.#store!;
    const now = this.#now();
    store.transaction(() => {
      const before = readStatus(store, account.name);
      if (before?.state === "needs-reauthorization") return;
      writeStatus(store, {
        account: account.name,
        state: "retrying",
        since: before?.state === "retrying" ? before.since : now,
        lastError: message,
        lastErrorAt: now,
        expiresAt: before?.expiresAt ?? null,
        refreshedAt: before?.refreshedAt ?? null,
      });
    });
  }

  /**
   * A pair another process stored over `base` while this one's refresh was refused (#markNeedsReauthorization): it
   * replaces the tokens this process holds (unwritten ones too: saveRefreshedTokens would drop them for it). Its
   * access token is used while it is good; otherwise its refresh token is sent, once. A second refusal with yet
   * another pair stored, or a pair of another client (this process not reloaded yet), is a temporary failure: the
   * account is not marked over a login it has not tried.
   */
  #useNewer(
    account: OAuth2AccountConfig,
    rt: Runtime,
    newer: TokenRecord,
    retried: boolean,
    message: string,
  ): Promise<TokenRecord> | TokenRecord {
    rt.unsaved = null;
    if (matches(newer, account.oauth2)) {
      rt.record = newer;
      const now = this.#now();
      const { accessToken, expiresAt } = newer;
      if (accessToken !== null && accessToken !== rt.rejected && expiresAt !== null) {
        if (now < usableUntil(newer.obtainedAt, expiresAt)) {
          recovered(rt);
          return newer;
        }
      }
      if (!retried) {
        // A second token request: the lease, if this process holds it, renewed for it (a failure changes nothing).
        // Never taken here: a process refreshing without the lease would not release it.
        try {
          renewLease(this.#store!, account.name, this.#owner, this.#now());
        } catch {}
        return this.#leasedTokenRequest(account, rt, true);
      }
    }
    this.#log.warn(`account ${account.name}: refresh refused (${message}), but a newer login is stored; not marked`);
    throw new AccountTemporarilyUnavailable(account.name, message, this.#now());
  }

  /**
   * Marks the account, unless the stored pair is no longer `base`, the one the refused refresh started from: then
   * another process stored a newer one, which is returned and nothing is marked. Check and mark are one
   * transaction (BEGIN IMMEDIATE): a pair stored before is seen, and one stored after clears the mark
   * (saveTokens). Logs and audits only when the account was not already marked, and its row not recorded yet
   * (`row`: a refusal held in memory recorded it when the hold began). The audit row is queued inside that
   * transaction: a log that refuses it (docs/audit.md "Failure") rolls the mark back and throws UnrecordedMark, so
   * that the transition is never made without its row (docs/accounts.md "When an account needs re-authorization").
   * Any other error is the state database's: nothing is marked (and `row` says whether the row was queued).
   */
  #markNeedsReauthorization(
    account: OAuth2AccountConfig,
    message: string,
    base: TokenRecord | null,
    row: { recorded: boolean },
  ): TokenRecord | null {
    const store = this.#store!;
    const now = this.#now();
    const reason = new AccountNeedsReauthorization(account.name, message).message;
    let recordedHere = false;
    const outcome = store.transaction((): { newer: TokenRecord } | { changed: boolean } => {
      let stored: TokenRecord | null;
      try {
        stored = readTokens(store, account.name);
      } catch {
        stored = null; // unreadable: nothing anyone could use instead
      }
      if (stored !== null && !sameTokens(stored, base)) return { newer: stored };
      const before = readStatus(store, account.name);
      if (before?.state === "needs-reauthorization") return { changed: false };
      writeStatus(store, {
        account: account.name,
        state: "needs-reauthorization",
        since: now,
        lastError: message,
        lastErrorAt: now,
        expiresAt: before?.expiresAt ?? null,
        refreshedAt: before?.refreshedAt ?? null,
      });
      if (!row.recorded) {
        try {
          this.#audit?.(this.#markRow(account, reason, now, true));
        } catch (e) {
          throw new UnrecordedMark(e);
        }
        row.recorded = true;
        recordedHere = true;
      }
      return { changed: true };
    });
    if ("newer" in outcome) return outcome.newer;
    // Tokens held unwritten belong to the grant the provider just refused: nothing to keep.
    const rt = this.#runtime.get(account.name);
    if (rt !== undefined) rt.unsaved = null;
    if (outcome.changed && recordedHere) this.#log.error(reason);
    return null;
  }

  /**
   * The audit row of a "needs re-authorization" transition (docs/accounts.md); `stored` false: the state database
   * did not take the mark, which is held in memory (`#holdRefusal`), and the row says so in its `detail`.
   */
  #markRow(account: OAuth2AccountConfig, reason: string, now: number, stored: boolean): AuditEvent {
    return {
      time: now,
      session: "-",
      agent: null,
      clientAddr: null,
      protocol: "oauth2",
      command: "oauth-refresh",
      operation: null,
      folder: null,
      target: account.name,
      decision: "error",
      rule: null,
      ruleIndex: null,
      reason,
      configRevision: this.#config.revision,
      ...(stored ? {} : { detail: { stored: false } }),
    };
  }
}

/** The audit log refused the row of a "needs re-authorization" mark, which was therefore not made. */
class UnrecordedMark extends Error {
  constructor(cause: unknown) {
    super("the audit row of a needs-reauthorization mark could not be recorded", { cause });
  }
}

/**
 * `current` with the refresh token a token request obtained without a usable access token: its access token, still
 * good until it expires, stays in use (docs/accounts.md "Staying logged in").
 */
function withRefreshToken(
  current: TokenRecord | null,
  settings: OAuth2AccountConfig["oauth2"],
  obtainedAt: number,
  refreshToken: string,
): TokenRecord {
  if (current !== null) return { ...current, refreshToken };
  const { clientId, tokenUrl } = settings;
  return { refreshToken, accessToken: null, expiresAt: null, obtainedAt, clientId, tokenUrl };
}

/**
 * The same grant of the same client at the same token endpoint, with a refresh token: its tokens and a refresh
 * under way stay valid across a reload whatever else changed (the client secret, the scopes a login asks for, the
 * authorize and device URLs). A `client_credentials` account has no refresh token to keep: any change starts it
 * afresh (sameClient).
 */
function sameGrant(a: OAuth2AccountConfig["oauth2"], b: OAuth2AccountConfig["oauth2"]): boolean {
  return (
    a.grant === "authorization_code" &&
    b.grant === "authorization_code" &&
    a.clientId === b.clientId &&
    a.tokenUrl === b.tokenUrl
  );
}

/** The same OAuth2 client at the same endpoints: its tokens and token requests stay valid across a reload. */
function sameClient(a: OAuth2AccountConfig["oauth2"], b: OAuth2AccountConfig["oauth2"]): boolean {
  return (
    a.grant === b.grant &&
    a.tokenUrl === b.tokenUrl &&
    a.authorizeUrl === b.authorizeUrl &&
    a.deviceUrl === b.deviceUrl &&
    a.clientId === b.clientId &&
    (a.clientSecret?.reveal() ?? null) === (b.clientSecret?.reveal() ?? null) &&
    a.scopes.join(" ") === b.scopes.join(" ")
  );
}

/** A good pair is in use again: the failures counted, the backoff and the last error are over. */
function recovered(rt: Runtime): void {
  rt.failures = 0;
  rt.retryAt = 0;
  rt.lastError = null;
}
