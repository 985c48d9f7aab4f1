/**
 * Quotas (docs/quotas.md): `[[quotas]]` limits on what a client sends and reads, counted over sliding windows in the
 * state database so that a restart does not reset them. One function charges a send, whoever sends it: the SMTP
 * session at the end of DATA and a message held for approval when it is held. Every entry that applies to the
 * client is checked (so the tightest wins) and, when none is over, the charge is committed durably before the
 * caller answers or sends anything upstream.
 */

import type { Database } from "bun:sqlite";
import type { QuotaConfig, QuotaLimits } from "../config/index.ts";
import { loginKey } from "../net/sessions.ts";
import {
  type Amounts,
  type Charge,
  describeExceeded,
  type Exceeded,
  exceededLimit,
  LONGEST_WINDOW_MS,
  laterReset,
  ROW_WINDOW_SQL,
  used,
  WINDOWED,
  type WindowedLimit,
} from "./window.ts";

export type { Charge, Exceeded, LimitName } from "./window.ts";
export { DAY_MS, describeExceeded, fitsAt, HOUR_MS, MINUTE_MS, used, WINDOWED } from "./window.ts";

/** A send to charge: one message (sends = 1), its envelope recipients and its size in octets. */
export interface SendCharge {
  readonly sends: number;
  readonly recipients: number;
  readonly bytes: number;
}

/**
 * The outcome of a charge. `exceeded`: nothing was charged, the request is refused (SMTP 452 4.7.1, IMAP NO [LIMIT]).
 * `unavailable`: the state database could not be read or written; nothing was charged and the request must be
 * refused as a temporary failure (fail closed).
 */
export type ChargeResult =
  | { readonly ok: true }
  | { readonly ok: false; readonly exceeded: Exceeded; readonly message: string }
  | { readonly ok: false; readonly exceeded: null; readonly message: string };

/** One limit of one entry and its use at a time, for `explain`. */
export interface LimitUse {
  readonly limit: keyof QuotaLimits;
  readonly max: number;
  /** The window's use; null for recipients_per_message (a per-message limit has no window). */
  readonly used: number | null;
  readonly windowSeconds: number | null;
}

export interface QuotaUse {
  readonly quota: string;
  readonly agents: readonly string[] | null;
  readonly limits: readonly LimitUse[];
}

const SCHEMA = `CREATE TABLE IF NOT EXISTS quota_charges (
  subject    TEXT NOT NULL,
  at         INTEGER NOT NULL,
  sends      INTEGER NOT NULL,
  recipients INTEGER NOT NULL,
  bytes      INTEGER NOT NULL,
  reads      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS quota_charges_subject_at ON quota_charges (subject, at);`;

/**
 * Who is counted (docs/quotas.md "Who is counted"): in vault mode an agent, by its name as configured (compared
 * exactly, as at login); in pass-through mode the upstream login, without case (`loginKey`); null: nobody.
 */
export type QuotaSubject = { readonly agent: string } | { readonly login: string } | null;

/** The subject of a session: its agent (vault mode), else its upstream login (pass-through), else nobody. */
export function quotaSubject(agent: string | null, login: string | null): QuotaSubject {
  return agent !== null ? { agent } : login !== null ? { login } : null;
}

/** The key of `subject`'s rows in `quota_charges`: the agent's name, or the login without case. */
function subjectKey(subject: QuotaSubject): string {
  if (subject === null) return "";
  return "agent" in subject ? subject.agent : loginKey(subject.login);
}

/** Does the `agents` entry `name` name `subject`? */
function names(name: string, subject: NonNullable<QuotaSubject>): boolean {
  return "agent" in subject ? name === subject.agent : loginKey(name) === loginKey(subject.login);
}

/** The entries that apply to `subject`. */
function quotasFor(quotas: readonly QuotaConfig[], subject: QuotaSubject): QuotaConfig[] {
  return quotas.filter((q) => q.agents === null || (subject !== null && q.agents.some((a) => names(a, subject))));
}

/** Whether any applicable entry counts something over a window (else nothing is recorded). */
function counts(applicable: readonly QuotaConfig[], amounts: Amounts): boolean {
  return applicable.some((q) =>
    (Object.keys(WINDOWED) as WindowedLimit[]).some((l) => q.limits[l] !== null && amounts[WINDOWED[l].amount] > 0),
  );
}

/** `key`'s rows that a window still counts at `now`: each row less than its own window old (ROW_WINDOW_SQL). */
function readCharges(db: Database, key: string, now: number): Charge[] {
  return db
    .query(
      `SELECT at, sends, recipients, bytes, reads FROM quota_charges
        WHERE subject = ?1 AND at > ?2 - ?3 AND at > ?2 - ${ROW_WINDOW_SQL} ORDER BY at`,
    )
    .all(key, now, LONGEST_WINDOW_MS) as Charge[];
}

/** Creates the quota table in the state database when missing (idempotent). */
export function prepareQuotaTables(db: Database): void {
  db.run(SCHEMA);
}

export class Quotas {
  #db: Database | null;
  #quotas: readonly QuotaConfig[];

  /** `db` may be null only when `quotas` is empty. */
  constructor(db: Database | null, quotas: readonly QuotaConfig[]) {
    if (db === null && quotas.length > 0) throw new Error("quotas are configured but there is no state database");
    this.#db = db;
    this.#quotas = quotas;
    if (db !== null) prepareQuotaTables(db);
  }

  /**
   * A reload's `[[quotas]]` (docs/operations.md "Reload"): every charge and check from now on uses them, over the
   * same counted windows (what was used stays used). `db` replaces the state database when given.
   */
  replace(quotas: readonly QuotaConfig[], db: Database | null = null): void {
    const next = db ?? this.#db;
    if (next === null && quotas.length > 0) throw new Error("quotas are configured but there is no state database");
    this.#db = next;
    this.#quotas = quotas;
  }

  get configured(): boolean {
    return this.#quotas.length > 0;
  }

  /** recipients_per_message for a message of `recipients` recipients (checked at each RCPT); nothing is charged. */
  checkRecipients(subject: QuotaSubject, recipients: number): Exceeded | null {
    for (const q of quotasFor(this.#quotas, subject)) {
      const max = q.limits.recipients_per_message;
      if (max !== null && recipients > max)
        return { quota: q.name, limit: "recipients_per_message", max, used: recipients, resetsAt: null };
    }
    return null;
  }

  /**
   * Charges one send (the SMTP session at the end of DATA, or a message held for approval when it is held): checks
   * every applicable entry and, when none would be exceeded, records the charge in the same transaction.
   */
  charge(subject: QuotaSubject, send: SendCharge, now: number = Date.now()): ChargeResult {
    return this.#charge(subject, { ...send, reads: 0 }, now);
  }

  /** Charges `messages` messages whose content an IMAP FETCH returns (reads_per_minute). */
  chargeReads(subject: QuotaSubject, messages: number, now: number = Date.now()): ChargeResult {
    return this.#charge(subject, { sends: 0, recipients: 0, bytes: 0, reads: messages }, now);
  }

  #charge(subject: QuotaSubject, amounts: Amounts, now: number): ChargeResult {
    const applicable = quotasFor(this.#quotas, subject);
    if (applicable.length === 0) return { ok: true };
    const db = this.#db!;
    const key = subjectKey(subject);
    try {
      return db
        .transaction((): ChargeResult => {
          // Pruned as it goes, by the older of the clock and the newest stored charge (docs/quotas.md "Windows"):
          // a clock stepped ahead for a charge and back again has not dropped the charges it counts once back. Each
          // row goes once its own window is behind it: a day for a send, a minute for a fetch.
          db.query(
            `DELETE FROM quota_charges WHERE subject = ?1
               AND at <= MIN(?2, (SELECT MAX(at) FROM quota_charges WHERE subject = ?1)) - ${ROW_WINDOW_SQL}`,
          ).run(key, now);
          const charges = readCharges(db, key, now);
          // Every entry is checked: the request is refused when one is over, and the agent is told the limit that
          // frees last, as the request fits only once all have room (docs/quotas.md "Over a limit").
          let worst: Exceeded | null = null;
          for (const q of applicable) {
            const over = exceededLimit(q.name, q.limits, charges, amounts, now);
            if (over !== null) worst = worst === null ? over : laterReset(worst, over);
          }
          if (worst !== null) return { ok: false, exceeded: worst, message: describeExceeded(worst) };
          if (counts(applicable, amounts)) {
            db.query(
              "INSERT INTO quota_charges (subject, at, sends, recipients, bytes, reads) VALUES (?, ?, ?, ?, ?, ?)",
            ).run(key, now, amounts.sends, amounts.recipients, amounts.bytes, amounts.reads);
          }
          return { ok: true };
        })
        .immediate();
    } catch (e) {
      return { ok: false, exceeded: null, message: `quota state unavailable: ${(e as Error).message}` };
    }
  }
}

/**
 * The entries that apply to `subject` and each limit's use at `now`, read from `db` (null: no state database yet,
 * every window is empty). For `explain`; reads only.
 */
export function quotaUse(
  db: Database | null,
  quotas: readonly QuotaConfig[],
  subject: QuotaSubject,
  now: number = Date.now(),
): QuotaUse[] {
  const applicable = quotasFor(quotas, subject);
  let charges: Charge[] = [];
  if (db !== null && applicable.length > 0) {
    const table = db.query("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'quota_charges'").get();
    if (table !== null) charges = readCharges(db, subjectKey(subject), now);
  }
  return applicable.map((q) => ({
    quota: q.name,
    agents: q.agents,
    limits: (Object.keys(q.limits) as (keyof QuotaLimits)[]).flatMap((limit): LimitUse[] => {
      const max = q.limits[limit];
      if (max === null) return [];
      if (limit === "recipients_per_message") return [{ limit, max, used: null, windowSeconds: null }];
      const windowed: WindowedLimit = limit;
      return [{ limit, max, used: used(charges, windowed, now), windowSeconds: WINDOWED[windowed].windowMs / 1000 }];
    }),
  }));
}

type QuotaSettings = { readonly quotas: readonly QuotaConfig[]; readonly state: { readonly path: string } };

/** The quotas of a running proxy, which a reload can replace. */
export interface RunningQuotas {
  readonly quotas: Quotas;
  /**
   * Readies `next`'s `[[quotas]]` for a reload: opens the state database if none is open yet (a reload that adds
   * the first quotas). Throws when that fails, and the reload fails with nothing changed; `commit` applies them.
   */
  prepareReload(next: QuotaSettings): { warnings: string[]; commit(): void };
  close(): void;
}

/**
 * The Quotas of a running proxy: with `[[quotas]]` configured, on `db` (the state database already open for sealed
 * records) or on the state database opened here. `close` closes only what was opened here.
 */
export function openQuotas(
  config: QuotaSettings,
  db: Database | null,
  open: (path: string) => Database,
): RunningQuotas {
  /** The state database at `at`, opened here with the quota table; closed again if the table cannot be made. */
  const openOwn = (at: string): Database => {
    const opened = open(at);
    try {
      prepareQuotaTables(opened);
    } catch (e) {
      opened.close();
      throw e;
    }
    return opened;
  };
  // The path serve started with, which it claimed (`<path>.pid`, docs/operations.md "One serve per folder"): a
  // reload never opens another, which a second serve may hold.
  const path = config.state.path;
  let own = config.quotas.length > 0 && db === null ? openOwn(path) : null;
  const quotas = new Quotas(config.quotas.length > 0 ? (db ?? own) : null, config.quotas);
  return {
    quotas,
    prepareReload(next) {
      const warnings: string[] = [];
      if (next.quotas.length === 0) return { warnings, commit: () => quotas.replace([]) };
      const store = db ?? own;
      // One shared with the sealed records has its own warning (serve's reload).
      if (db === null && next.state.path !== path) {
        const still = `quotas are ${store === null ? "counted" : "still counted"} in ${path}`;
        warnings.push(`[state] path cannot change on reload: ${still}; restart to use ${next.state.path}`);
      }
      if (store !== null) {
        // The database may have been opened for something else (sealed records) with no quota table yet.
        prepareQuotaTables(store);
        return { warnings, commit: () => quotas.replace(next.quotas, store) };
      }
      const opened = openOwn(path);
      return {
        warnings,
        commit: () => {
          own = opened;
          quotas.replace(next.quotas, opened);
        },
      };
    },
    close: () => own?.close(),
  };
}
