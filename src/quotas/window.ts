/**
 * Sliding windows over a log of timestamped charges (docs/quotas.md "Windows"). Pure functions of `now`, so that the
 * sliding is tested with explicit times. A charge counts while `at > now - window` (a charge made in the future,
 * after the clock stepped back, counts too: fail closed); precision is the millisecond.
 */

import type { QuotaLimits } from "../config/index.ts";

export const MINUTE_MS = 60_000;
export const HOUR_MS = 60 * MINUTE_MS;
export const DAY_MS = 24 * HOUR_MS;

/** One recorded charge: a send (sends, recipients, bytes) or an IMAP fetch (reads). */
export interface Charge {
  readonly at: number;
  readonly sends: number;
  readonly recipients: number;
  readonly bytes: number;
  readonly reads: number;
}

export type Amounts = Omit<Charge, "at">;

/** The limits counted over a window, what each counts and the window's length. */
export const WINDOWED = {
  sends_per_hour: { amount: "sends", windowMs: HOUR_MS },
  sends_per_day: { amount: "sends", windowMs: DAY_MS },
  recipients_per_day: { amount: "recipients", windowMs: DAY_MS },
  bytes_per_day: { amount: "bytes", windowMs: DAY_MS },
  reads_per_minute: { amount: "reads", windowMs: MINUTE_MS },
} as const satisfies Record<string, { amount: keyof Amounts; windowMs: number }>;

export type WindowedLimit = keyof typeof WINDOWED;
export type LimitName = keyof QuotaLimits & string;

/** The longest window: charges older than this are never counted again and may be pruned. */
export const LONGEST_WINDOW_MS = DAY_MS;

/** The longest window that counts `amount` (0: none counts it). */
function windowOfAmount(amount: keyof Amounts): number {
  let longest = 0;
  for (const w of Object.values(WINDOWED)) if (w.amount === amount) longest = Math.max(longest, w.windowMs);
  return longest;
}

/**
 * A `quota_charges` row's own window in SQL: the longest window that counts one of its non-zero amounts. A send's
 * row counts for a day; a fetch's (reads only) for a minute, past which no window counts it (docs/quotas.md
 * "Windows"): kept or read for a day, the rows of a client fetching at its limit would be a day of fetches.
 */
export const ROW_WINDOW_SQL = `MAX(${(["sends", "recipients", "bytes", "reads"] as const)
  .map((a) => `CASE WHEN ${a} > 0 THEN ${windowOfAmount(a)} ELSE 0 END`)
  .join(", ")})`;

/** What a window holds at `now`. */
export function used(charges: readonly Charge[], limit: WindowedLimit, now: number): number {
  const { amount, windowMs } = WINDOWED[limit];
  let total = 0;
  for (const c of charges) if (c.at > now - windowMs) total += c[amount];
  return total;
}

/**
 * When a request of `request` would fit under `max` again: the time at which enough of the counted charges have left
 * the window (for a single charge in the way, the oldest counted charge's time plus the window). null when the
 * request alone is over the limit (it never fits); `now` when it fits already.
 */
export function fitsAt(
  charges: readonly Charge[],
  limit: WindowedLimit,
  max: number,
  request: number,
  now: number,
): number | null {
  if (request > max) return null;
  const { amount, windowMs } = WINDOWED[limit];
  const counted = charges.filter((c) => c.at > now - windowMs && c[amount] > 0).sort((a, b) => a.at - b.at);
  let total = counted.reduce((sum, c) => sum + c[amount], 0);
  if (total + request <= max) return now;
  for (const c of counted) {
    total -= c[amount];
    if (total + request <= max) return c.at + windowMs;
  }
  return null; // not reached: with every charge gone, request <= max
}

/** A limit a request would go over. */
export interface Exceeded {
  readonly quota: string;
  readonly limit: LimitName;
  readonly max: number;
  /** What the window already holds (for recipients_per_message: the message's recipients). */
  readonly used: number;
  /** When the request would fit again (ms since the epoch); null when it never fits as it is. */
  readonly resetsAt: number | null;
}

/** The sentence agents and the audit log get: the quota, the limit, what is used and when it resets. */
export function describeExceeded(e: Exceeded): string {
  const what =
    e.limit === "recipients_per_message"
      ? `${e.limit} ${e.max} (this message has ${e.used})`
      : `${e.limit} ${e.max} (used ${e.used})`;
  // Shown to the second, rounded up: the request fits from `resetsAt` on, so a second cut down could name a moment
  // at which it is still refused.
  const when =
    e.resetsAt === null
      ? "this request alone is over the limit"
      : `resets at ${new Date(Math.ceil(e.resetsAt / 1000) * 1000).toISOString().replace(/\.\d{3}Z$/, "Z")}`;
  return `quota "${e.quota}" exceeded: ${what}; ${when}`;
}

/**
 * Of two limits a request would go over, the one it waits for longer: it fits again only once every limit has room,
 * so the time the agent is told is the latest (null, never as it is, is the latest of all). On a tie, `a`.
 */
export function laterReset(a: Exceeded, b: Exceeded): Exceeded {
  if (a.resetsAt === null) return a;
  if (b.resetsAt === null) return b;
  return b.resetsAt > a.resetsAt ? b : a;
}

/**
 * The limit of `limits` that `request` would go over at `now` and that frees last (`laterReset`), given the subject's
 * charges; null when every limit leaves room. recipients_per_message is checked against the request itself.
 */
export function exceededLimit(
  quota: string,
  limits: QuotaLimits,
  charges: readonly Charge[],
  request: Amounts,
  now: number,
): Exceeded | null {
  const perMessage = limits.recipients_per_message;
  if (perMessage !== null && request.sends > 0 && request.recipients > perMessage)
    return { quota, limit: "recipients_per_message", max: perMessage, used: request.recipients, resetsAt: null };
  let worst: Exceeded | null = null;
  for (const limit of Object.keys(WINDOWED) as WindowedLimit[]) {
    const max = limits[limit];
    const amount = request[WINDOWED[limit].amount];
    if (max === null || amount === 0) continue;
    const current = used(charges, limit, now);
    if (current + amount <= max) continue;
    const over = { quota, limit, max, used: current, resetsAt: fitsAt(charges, limit, max, amount, now) };
    worst = worst === null ? over : laterReset(worst, over);
  }
  return worst;
}
