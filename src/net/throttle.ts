/**
 * Slows down repeated failed logins from one client address (docs/config.md "Who connects"): each failure within the
 * window adds `stepMs` to the delay before the next failure reply, up to `maxMs`. The delay applies to failures only,
 * so a client that knows its credentials is never slowed. Entries expire after `windowMs` without failures.
 * Addresses are counted under `addressKey`, as connections are: an IPv6 client by its /64, so that taking a new
 * address of its /64 per attempt does not start a fresh delay.
 */

import { addressKey } from "./ip.ts";

export interface ThrottleLimits {
  readonly stepMs: number;
  readonly maxMs: number;
  readonly windowMs: number;
  /** Address keys tracked at once; the oldest is forgotten beyond this (bounds memory under a spray). */
  readonly maxTracked: number;
}

export class FailureThrottle {
  readonly #limits: ThrottleLimits;
  readonly #failures = new Map<string, { count: number; last: number }>();

  constructor(limits: ThrottleLimits) {
    this.#limits = limits;
  }

  /** Records a failure and returns how long to wait before replying to it. */
  fail(client: string, now = Date.now()): number {
    const address = addressKey(client);
    const entry = this.#current(address, now);
    const count = (entry?.count ?? 0) + 1;
    this.#failures.delete(address);
    this.#failures.set(address, { count, last: now });
    if (this.#failures.size > this.#limits.maxTracked) {
      const oldest = this.#failures.keys().next().value;
      if (oldest !== undefined) this.#failures.delete(oldest);
    }
    return Math.min(count * this.#limits.stepMs, this.#limits.maxMs);
  }

  /** Takes back a failure counted before its verdict was known that turned out a success (`LoginLockout.withdraw`). */
  withdraw(client: string, now = Date.now()): void {
    const entry = this.#current(addressKey(client), now);
    if (entry !== undefined && entry.count > 0) entry.count -= 1;
  }

  /** Failures counted for this client's address (its `addressKey`) now. */
  failures(client: string, now = Date.now()): number {
    return this.#current(addressKey(client), now)?.count ?? 0;
  }

  #current(address: string, now: number): { count: number; last: number } | undefined {
    const entry = this.#failures.get(address);
    if (entry !== undefined && now - entry.last > this.#limits.windowMs) {
      this.#failures.delete(address);
      return undefined;
    }
    return entry;
  }
}

/**
 * A failed login's delay that can end early: `end()` resolves `done` at once (the proxy stopping answers the
 * failure without waiting, docs/reliability.md "Shutdown").
 */
export function failureDelay(ms: number): { readonly done: Promise<void>; end(): void } {
  let end!: () => void;
  const done = new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    end = () => {
      clearTimeout(timer);
      resolve();
    };
  });
  return { done, end };
}
