/**
 * Logged-in upstream sessions kept after their agent's LOGOUT, for the next login of the same vault account
 * (docs/imap.md "Upstream sessions kept for the next login"). A kept session is in the authenticated state with no
 * mailbox selected (UNSELECT, RFC 3691, before it is kept) and changed nothing else of itself (no ENABLE, COMPRESS,
 * ID or CONDSTORE: `UpstreamSession.reusable`); the login that takes it skips the upstream connection, greeting,
 * LOGIN and `LIST "" ""`. The key (`keyOf`) names the upstream server and the account's credentials, and every
 * reload (`clear`) starts a new series of keys: a session logged in under an earlier config is never handed out.
 */

import type { ConsolaInstance } from "consola";
import { moduleLogger } from "../log.ts";
import type { UpstreamTarget } from "../net/index.ts";
import {
  UPSTREAM_POOL_IDLE_MS,
  UPSTREAM_POOL_MAX,
  UPSTREAM_POOL_PER_ACCOUNT,
  UPSTREAM_POOL_UNSELECT_MS,
} from "./limits.ts";
import type { UpstreamSession } from "./upstream.ts";

/** A kept session, with the hierarchy delimiter its login learned. */
export interface KeptUpstream {
  readonly up: UpstreamSession;
  readonly delimiter: string | null;
}

interface Entry extends KeptUpstream {
  readonly key: string;
  timer: ReturnType<typeof setTimeout> | null;
}

export interface PoolLimits {
  readonly perKey: number;
  readonly max: number;
  readonly idleMs: number;
  readonly unselectMs: number;
}

export const POOL_LIMITS: PoolLimits = {
  perKey: UPSTREAM_POOL_PER_ACCOUNT,
  max: UPSTREAM_POOL_MAX,
  idleMs: UPSTREAM_POOL_IDLE_MS,
  unselectMs: UPSTREAM_POOL_UNSELECT_MS,
};

export class UpstreamPool {
  readonly #limits: PoolLimits;
  readonly #log: ConsolaInstance;
  /** Kept sessions by key, the most recently kept last. */
  readonly #kept = new Map<string, Entry[]>();
  #count = 0;
  /** Sessions being unselected before they are kept: closed by `clear` too. */
  readonly #leaving = new Set<UpstreamSession>();
  /** Sessions announced by `awaitOffer`, each with the timer that closes it if it is not offered in time. */
  readonly #awaiting = new Map<UpstreamSession, ReturnType<typeof setTimeout>>();
  #closed = false;
  /** Goes up at each `clear`: keys made before it are kept no longer. */
  #epoch = 0;

  /** Told the number of kept sessions whenever it changes (the listener's metric). */
  readonly #onSize: (size: number) => void;

  constructor(
    limits: Partial<PoolLimits> = {},
    onSize: (size: number) => void = () => {},
    log: ConsolaInstance = moduleLogger("imap"),
  ) {
    this.#limits = { ...POOL_LIMITS, ...limits };
    this.#onSize = onSize;
    this.#log = log;
  }

  /** The key of logins to `target` with credentials `loginKey` (src/accounts/identity.ts), under the config now. */
  keyOf(target: UpstreamTarget, loginKey: string): string {
    return `${this.#epoch}\n${target.host}\n${target.port}\n${target.tls}\n${loginKey}`;
  }

  /** Sessions kept now. */
  get size(): number {
    return this.#count;
  }

  /**
   * Takes over `up`, which its agent left (LOGOUT): unselected and kept under `key` if it is reusable and there is
   * room, otherwise logged out. The caller lets go of it either way.
   */
  keep(key: string, up: UpstreamSession, delimiter: string | null): void {
    const waited = this.#awaiting.get(up);
    if (waited !== undefined) clearTimeout(waited);
    this.#awaiting.delete(up);
    // Until kept, anything upstream sends unasked, or its close, ends it: nothing is left half-owned.
    const drop = (): void => {
      this.#leaving.delete(up);
      up.close();
    };
    up.detach(drop, () => this.#leaving.delete(up));
    if (!this.#mayKeep(key, up)) return void up.logout();
    if (!up.mailboxSelected) return this.#add(key, up, delimiter);
    this.#leaving.add(up);
    // Untagged responses of the UNSELECT itself (none expected) are ignored: the next owner selects afresh.
    up.run({ name: "UNSELECT" }, () => {}, this.#limits.unselectMs).then(
      (st) => {
        const wasLeaving = this.#leaving.delete(up);
        if (!wasLeaving || up.closed) return;
        if (st.status !== "OK" || up.mailboxSelected || !this.#mayKeep(key, up)) return void up.logout();
        this.#add(key, up, delimiter);
      },
      () => drop(),
    );
  }

  /**
   * `up` will be offered (`keep`) once its agent's IDLE has ended upstream (src/imap/session.ts). Until then `clear`
   * closes it, as it closes those being unselected, so that none outlives the listener's close; and if it has not
   * been offered within `unselectMs` (the server never answered the IDLE or its DONE), it is closed. False, with
   * nothing done, when the pool keeps nothing any more (the listener is closing): the caller closes it.
   */
  awaitOffer(up: UpstreamSession): boolean {
    if (this.#closed) return false;
    const timer = setTimeout(() => {
      this.#awaiting.delete(up);
      up.close();
    }, this.#limits.unselectMs);
    timer.unref?.();
    this.#awaiting.set(up, timer);
    return true;
  }

  /** The session most recently kept under `key`, now the caller's; null when none is. */
  take(key: string): KeptUpstream | null {
    const list = this.#kept.get(key);
    while (list !== undefined && list.length > 0) {
      const entry = list[list.length - 1]!;
      this.#remove(entry);
      // Kept unselected and unchanged (`reusable` is false once closed); anything else is closed, never handed out.
      if (!entry.up.reusable || entry.up.mailboxSelected) {
        entry.up.close();
        continue;
      }
      return { up: entry.up, delimiter: entry.delimiter };
    }
    return null;
  }

  /**
   * Logs out every kept session, and closes those being unselected or awaited (a reload: they were logged in under
   * the config it replaced). With `close` the pool keeps nothing from now on (the listener is closing).
   */
  async clear(close = false): Promise<void> {
    if (close) this.#closed = true;
    this.#epoch++;
    const ending: Promise<void>[] = [];
    for (const up of this.#leaving) up.close();
    this.#leaving.clear();
    for (const [up, timer] of this.#awaiting) {
      clearTimeout(timer);
      up.close();
    }
    this.#awaiting.clear();
    for (const list of this.#kept.values()) {
      for (const entry of [...list]) {
        this.#remove(entry);
        ending.push(entry.up.logout());
      }
    }
    this.#kept.clear();
    await Promise.all(ending);
  }

  #mayKeep(key: string, up: UpstreamSession): boolean {
    if (this.#closed || !up.reusable || !key.startsWith(`${this.#epoch}\n`)) return false;
    return this.#count < this.#limits.max && (this.#kept.get(key)?.length ?? 0) < this.#limits.perKey;
  }

  #add(key: string, up: UpstreamSession, delimiter: string | null): void {
    if (!this.#mayKeep(key, up)) return void up.logout();
    const entry: Entry = { key, up, delimiter, timer: null };
    // A kept session hears nothing before its next command (no mailbox is selected); whatever comes (an alert, a
    // BYE) ends it rather than be delivered to the next agent. So does its close.
    up.detach(
      () => {
        this.#remove(entry);
        up.close();
      },
      () => this.#remove(entry),
    );
    entry.timer = setTimeout(() => {
      entry.timer = null;
      this.#remove(entry);
      void up.logout();
    }, this.#limits.idleMs);
    entry.timer.unref?.();
    let list = this.#kept.get(key);
    if (list === undefined) {
      list = [];
      this.#kept.set(key, list);
    }
    list.push(entry);
    this.#count++;
    this.#onSize(this.#count);
    this.#log.debug(`upstream session kept for the next login (${this.#count} kept)`);
  }

  /** Forgets `entry` if still kept (idempotent). */
  #remove(entry: Entry): void {
    if (entry.timer !== null) clearTimeout(entry.timer);
    entry.timer = null;
    const list = this.#kept.get(entry.key);
    const at = list?.indexOf(entry) ?? -1;
    if (at < 0) return;
    list!.splice(at, 1);
    if (list!.length === 0) this.#kept.delete(entry.key);
    this.#count--;
    this.#onSize(this.#count);
  }
}
