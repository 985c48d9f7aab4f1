/**
 * One budget for the memory that upstream responses on their way to agents hold, shared by every session of the
 * IMAP listener (docs/reliability.md "Response memory"). A response is framed whole before it is checked and
 * relayed (a message's literal included), so each session may hold up to MAX_RESPONSE_BYTES; without a shared
 * budget, a few agents fetching large messages and reading them slowly (or not at all) hold that many times over.
 *
 * A response's literals count once its size passes RESPONSE_MEMORY_FREE (the literal's size is announced before its
 * octets come, `{n}`): each is reserved before it is read, and a session that cannot have it stops reading from
 * upstream until enough is given back, first come, first served. Its lines count apart from its literals once they
 * pass the same free octets: their length is not announced, so they are reserved as they arrive, in one large
 * step (RESPONSE_LINE_RESERVATION) trimmed to the response's size once it is framed. What was reserved is given back
 * once the response has gone to the agent's socket and the kernel has taken it (deflated, under COMPRESS), or was
 * dropped (a hidden message), or the session ended. A response never waits while it holds a reservation (its next large
 * literal goes ahead of those waiting, or fails the upstream session when the budget is short), so no two sessions
 * can wait on each other.
 *
 * What counted responses leave behind (their read chunks, once copied into a literal; the response itself, once
 * delivered) is garbage the runtime frees only when it collects, which it did late enough for the proxy to hold
 * twice the budget: it is noted (`discarded`), and collected every RESPONSE_GARBAGE_SHARE-th of the budget.
 */

import { RESPONSE_GARBAGE_SHARE, RESPONSE_MEMORY_FREE } from "./limits.ts";

interface Waiter {
  readonly size: number;
  readonly grant: () => void;
}

export class ResponseMemory {
  readonly budget: number;
  /** Octets of a response's literals, and apart from them of its lines, not counted (RESPONSE_MEMORY_FREE). */
  readonly free: number;
  #used = 0;
  #waiters: Waiter[] = [];
  readonly #report: (used: number, waiting: number) => void;
  /** Octets of counted memory left to the garbage collector since it last collected (`discarded`). */
  #garbage = 0;
  /** `discarded` collects once this many octets wait for the garbage collector: a share of the budget. */
  readonly collectAfter: number;
  readonly #collect: () => void;

  /**
   * `report` hears of every change (the admin listener's gauges); `collect` runs the garbage collector (tests
   * count its calls).
   */
  constructor(
    budget: number,
    report: (used: number, waiting: number) => void = () => {},
    free = RESPONSE_MEMORY_FREE,
    collect: () => void = () => Bun.gc(true),
  ) {
    this.budget = budget;
    this.free = free;
    this.#report = report;
    this.collectAfter = Math.floor(budget / RESPONSE_GARBAGE_SHARE);
    this.#collect = collect;
  }

  /** Octets reserved now. */
  get used(): number {
    return this.#used;
  }

  /** Reservations waiting for memory. */
  get waiting(): number {
    return this.#waiters.length;
  }

  /**
   * Reserves `size` octets if they are free now and nobody is waiting (`ahead`: whoever waits); true if reserved.
   * `ahead` is for a response that already holds a reservation and will not wait: it passes those waiting, since it
   * gives everything back once delivered.
   */
  tryTake(size: number, ahead = false): boolean {
    if ((this.#waiters.length > 0 && !ahead) || this.#used + size > this.budget) return false;
    this.#used += size;
    // Those waiting still wait when a response holding a reservation went ahead of them.
    this.#report(this.#used, this.#waiters.length);
    return true;
  }

  /**
   * Reserves `size` octets as soon as they are free, after those waiting before (first come, first served, so that
   * a large response is not passed over forever by small ones): `granted` resolves then. `cancel` leaves the queue
   * if not granted yet (what was granted is given back with `give`). `size` must be at most the budget.
   */
  take(size: number): { readonly granted: Promise<void>; cancel(): void } {
    if (size > this.budget)
      throw new RangeError(`a reservation of ${size} octets exceeds the budget of ${this.budget}`);
    if (this.tryTake(size)) return { granted: Promise.resolve(), cancel: () => {} };
    let grant!: () => void;
    const granted = new Promise<void>((resolve) => {
      grant = resolve;
    });
    const waiter: Waiter = { size, grant };
    this.#waiters.push(waiter);
    this.#report(this.#used, this.#waiters.length);
    return {
      granted,
      // A waiter that gives up (its session ended) leaves the queue: those behind it need not wait for its turn.
      cancel: () => {
        const at = this.#waiters.indexOf(waiter);
        if (at === -1) return;
        this.#waiters.splice(at, 1);
        this.give(0);
      },
    };
  }

  /**
   * Notes `size` octets of counted memory that are garbage now, and collects once `collectAfter` of them have
   * gathered: before a waiting reservation is let in, what was given back is then free in fact, not only in the
   * count (docs/reliability.md "Response memory").
   */
  discarded(size: number): void {
    this.#garbage += size;
    if (this.#garbage < this.collectAfter) return;
    this.#garbage = 0;
    this.#collect();
  }

  /** Gives back `size` reserved octets and lets waiting reservations in, in order, while they fit. */
  give(size: number): void {
    this.#used -= size;
    if (this.#used < 0) throw new Error(`response memory: ${-this.#used} octets more given back than taken`);
    while (this.#waiters.length > 0 && this.#used + this.#waiters[0]!.size <= this.budget) {
      const next = this.#waiters.shift()!;
      this.#used += next.size;
      next.grant();
    }
    this.#report(this.#used, this.#waiters.length);
  }
}
