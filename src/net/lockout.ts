/**
 * Locks logins out after too many failures (docs/config.md "Who connects"). The failed-login delay (throttle.ts) slows
 * each connection down, but a client with many connections open at once guesses on all of them in parallel; this
 * caps the failures themselves, counted across connections and across both listeners:
 *
 * - per client address (`addressKey`: an IPv4 address, an IPv6 /64), and
 * - per login name tried (without case, as the mail servers compare it), whoever tries it, so that spreading the
 *   guesses over many addresses does not get past it either: in pass-through mode only (`lockoutName`).
 *
 * Failures are counted from the first one in a window; a quiet window starts over. When either count reaches its
 * limit, logins of that address, or under that name, are refused before their credentials are checked, a correct one
 * included, until the lock ends `lockMs` later. Attempts refused while locked are not counted: the lock always ends.
 * A login that succeeds clears nothing (a client that holds one good login would otherwise reset its count with it).
 * Each table keeps at most `maxTracked` entries; past that the one touched longest ago that is not a lock in force is
 * forgotten, so that failures under many other addresses or names cannot end a lock early (the oldest lock goes only
 * when every other entry is a lock in force).
 */

import { MAX_LOGIN_NAME_BYTES } from "./credentials.ts";
import { addressKey } from "./ip.ts";
import { loginKey } from "./sessions.ts";

export interface LockoutLimits {
  /** Failures from one address within `windowMs` that lock it. */
  readonly failuresPerAddress: number;
  /** Failures under one login name within `windowMs`, from any address, that lock the name. */
  readonly failuresPerName: number;
  readonly windowMs: number;
  /** How long a lock lasts from the failure that started it. */
  readonly lockMs: number;
  /** Entries of each table at most (bounds memory under a flood of addresses or names). */
  readonly maxTracked: number;
}

/**
 * 10 failures from one address within 15 minutes lock it for 15 minutes; 30 under one name, from any address, lock
 * the name. A client that knows its credentials never comes near 10; an address that guesses gets 40 guesses an
 * hour, where the delay alone let it guess on each of its `max_connections_per_ip` connections every 10 s.
 */
export const LOGIN_LOCKOUT: LockoutLimits = Object.freeze({
  failuresPerAddress: 10,
  failuresPerName: 30,
  windowMs: 15 * 60_000,
  lockMs: 15 * 60_000,
  maxTracked: 10_000,
});

/** A lock in force: what is locked, the limit reached, and until when (epoch milliseconds). */
export interface Lock {
  readonly by: "address" | "name";
  readonly limit: number;
  readonly until: number;
}

interface Entry {
  count: number;
  start: number;
  /** 0 while not locked. */
  until: number;
}

export class LoginLockout {
  readonly limits: LockoutLimits;
  readonly #addresses = new Map<string, Entry>();
  readonly #names = new Map<string, Entry>();

  constructor(limits: LockoutLimits = LOGIN_LOCKOUT) {
    this.limits = limits;
  }

  /** The lock in force on this client's address or on this name (null: none, or no name known), if any. */
  locked(client: string, name: string | null, now = Date.now()): Lock | null {
    const address = this.#current(this.#addresses, addressKey(client), now);
    if (address !== undefined && address.until > now)
      return { by: "address", limit: this.limits.failuresPerAddress, until: address.until };
    if (name === null) return null;
    const named = this.#current(this.#names, nameKey(name), now);
    if (named !== undefined && named.until > now)
      return { by: "name", limit: this.limits.failuresPerName, until: named.until };
    return null;
  }

  /** Counts a failed login; returns the locks this failure started (none, usually). */
  fail(client: string, name: string | null, now = Date.now()): Lock[] {
    const started: Lock[] = [];
    const { failuresPerAddress, failuresPerName } = this.limits;
    if (this.#count(this.#addresses, addressKey(client), failuresPerAddress, now))
      started.push({ by: "address", limit: failuresPerAddress, until: now + this.limits.lockMs });
    if (name !== null && this.#count(this.#names, nameKey(name), failuresPerName, now))
      started.push({ by: "name", limit: failuresPerName, until: now + this.limits.lockMs });
    return started;
  }

  /**
   * Takes back one failure counted before its verdict was known: a login whose agent hung up is counted at the
   * hang-up (docs/config.md "Who connects"), and upstream then accepted it. A lock that failure started ends when
   * the count falls below the limit again; one the other failures hold stays.
   */
  withdraw(client: string, name: string | null, now = Date.now()): void {
    this.#uncount(this.#addresses, addressKey(client), this.limits.failuresPerAddress, now);
    if (name !== null) this.#uncount(this.#names, nameKey(name), this.limits.failuresPerName, now);
  }

  #uncount(table: Map<string, Entry>, key: string, limit: number, now: number): void {
    const entry = this.#current(table, key, now);
    if (entry === undefined) return;
    entry.count = Math.max(0, entry.count - 1);
    if (entry.until !== 0 && entry.count < limit) entry.until = 0;
  }

  /** Entries held now, both tables (tests: memory stays bounded). */
  get size(): number {
    return this.#addresses.size + this.#names.size;
  }

  /** Counts one failure under `key`; true when it starts a lock. */
  #count(table: Map<string, Entry>, key: string, limit: number, now: number): boolean {
    const entry = this.#current(table, key, now) ?? { count: 0, start: now, until: 0 };
    // Already locked (a failure decided before the lock, answered after it): counted in, the lock not extended.
    entry.count += 1;
    const starts = entry.until === 0 && entry.count >= limit;
    if (starts) entry.until = now + this.limits.lockMs;
    table.delete(key);
    table.set(key, entry);
    if (table.size > this.limits.maxTracked) this.#forgetOne(table, key, now);
    return starts;
  }

  /**
   * Forgets one entry of a table past `maxTracked`, other than `counted` (the one just counted): the one touched
   * longest ago whose lock is not in force (counting, or its window or lock over). Forgetting the oldest whatever it
   * held would let anyone end a lock by failing under `maxTracked` other addresses or names (an IPv6 /48 holds 65,536
   * /64s); now that takes `maxTracked` locks in force, each `failuresPerAddress` or `failuresPerName` failures. When
   * every other entry is a lock in force, the oldest lock goes, so that new failures go on being counted.
   */
  #forgetOne(table: Map<string, Entry>, counted: string, now: number): void {
    let oldestLock: string | undefined;
    for (const [key, entry] of table) {
      if (key === counted) continue;
      if (entry.until === 0 || now >= entry.until) {
        table.delete(key);
        return;
      }
      oldestLock ??= key;
    }
    if (oldestLock !== undefined) table.delete(oldestLock);
  }

  /** The entry of `key`, or undefined once its lock has ended or its window has passed without a lock. */
  #current(table: Map<string, Entry>, key: string, now: number): Entry | undefined {
    const entry = table.get(key);
    if (entry === undefined) return undefined;
    const over = entry.until !== 0 ? now >= entry.until : now - entry.start >= this.limits.windowMs;
    if (over) {
      table.delete(key);
      return undefined;
    }
    return entry;
  }
}

/**
 * The name a failure counts under (`LoginLockout.fail`): the name given in pass-through mode, where it is the
 * upstream account's and its password may be guessed; none in vault mode (any `[[agents]]`), where a login is an
 * agent's name and its token, which has 256 bits (docs/config.md "Vault mode"): there is nothing to guess under a
 * name, and counting would let anyone who knows an agent's name (names are not secret) keep the agent locked out.
 * The address is counted in both modes.
 */
export function lockoutName(agents: readonly unknown[], given: string | null): string | null {
  return agents.length > 0 ? null : given;
}

/**
 * A name as it is counted: folded as every per-login count folds it (loginKey), cut at the longest name a login may
 * have (longer ones fail anyway).
 */
function nameKey(name: string): string {
  return loginKey(name.slice(0, MAX_LOGIN_NAME_BYTES));
}

/** Why a lock refuses: "after 10 failed logins from this address" (the audit rows of docs/config.md). */
export function lockCause(lock: Lock): string {
  return `${lock.limit} failed logins ${lock.by === "address" ? "from this address" : "under this name"}`;
}

/** A lock's audit row `detail`: what is locked, the limit reached, and until when. */
export function lockDetail(lock: Lock): { lockout: Lock["by"]; limit: number; until: string } {
  return { lockout: lock.by, limit: lock.limit, until: new Date(lock.until).toISOString() };
}

/** The audit row's reason for a login refused under a lock. */
export function lockedReason(lock: Lock): string {
  return `login refused: locked out after ${lockCause(lock)}, until ${new Date(lock.until).toISOString()}`;
}

/** The audit row's reason for the failure that starts a lock. */
export function lockStartedReason(lock: Lock): string {
  return `lock-out: ${lockCause(lock)}; logins refused until ${new Date(lock.until).toISOString()}`;
}
