/**
 * What the proxy keeps per OAuth2 account in the state database (docs/accounts.md "What is stored where"): the
 * tokens, as one sealed record so that a rotated refresh token and the access token that came with it replace the
 * old pair in a single write, and a plain status row (no secret in it) that `account status` reads.
 */

import type { OAuth2Settings } from "../config/index.ts";
import type { SealedStore } from "../state/store.ts";

export const TOKEN_KIND = "oauth2-token";

export interface TokenRecord {
  readonly refreshToken: string | null;
  readonly accessToken: string | null;
  /** ms since epoch; null when there is no access token. */
  readonly expiresAt: number | null;
  /** When the access token was issued (ms): its lifetime is expiresAt - obtainedAt. */
  readonly obtainedAt: number;
  /** The client and token endpoint the grant belongs to: a refresh token is only good with these. */
  readonly clientId: string;
  readonly tokenUrl: string;
}

export type AccountState = "ok" | "needs-reauthorization" | "retrying";

export interface StatusRow {
  readonly account: string;
  readonly state: AccountState;
  /** When `state` last changed (ms). */
  readonly since: number;
  readonly lastError: string | null;
  readonly lastErrorAt: number | null;
  /** The cached access token's expiry (ms), not the token. */
  readonly expiresAt: number | null;
  readonly refreshedAt: number | null;
}

const SCHEMA = `CREATE TABLE IF NOT EXISTS account_status (
  account       TEXT PRIMARY KEY,
  state         TEXT NOT NULL,
  since         INTEGER NOT NULL,
  last_error    TEXT,
  last_error_at INTEGER,
  expires_at    INTEGER,
  refreshed_at  INTEGER
) WITHOUT ROWID`;

/**
 * Creates `account_status` when missing. In a state database opened read-only (`account status`) a missing table
 * reads as an empty one: a temporary table of the connection's own (SQLite reads temp before main), the file unwritten.
 */
export function ensureSchema(store: SealedStore): void {
  store.ensureTable("account_status", SCHEMA);
}

/** Does this record belong to the account's current client registration? */
export function matches(record: TokenRecord, settings: OAuth2Settings): boolean {
  return record.clientId === settings.clientId && record.tokenUrl === settings.tokenUrl;
}

export function readTokens(store: SealedStore, account: string): TokenRecord | null {
  const text = store.getText(TOKEN_KIND, account);
  if (text === null) return null;
  const r = JSON.parse(text) as Partial<TokenRecord>;
  if (typeof r.clientId !== "string" || typeof r.tokenUrl !== "string" || typeof r.obtainedAt !== "number")
    throw new Error(`sealed token record of account ${account} is malformed`);
  return {
    refreshToken: typeof r.refreshToken === "string" ? r.refreshToken : null,
    accessToken: typeof r.accessToken === "string" ? r.accessToken : null,
    expiresAt: typeof r.expiresAt === "number" ? r.expiresAt : null,
    obtainedAt: r.obtainedAt,
    clientId: r.clientId,
    tokenUrl: r.tokenUrl,
  };
}

export function readStatus(store: SealedStore, account: string): StatusRow | null {
  const row = store.db.query("SELECT * FROM account_status WHERE account = ?").get(account) as Record<
    string,
    unknown
  > | null;
  if (row === null) return null;
  return {
    account,
    state: row["state"] as AccountState,
    since: row["since"] as number,
    lastError: (row["last_error"] as string | null) ?? null,
    lastErrorAt: (row["last_error_at"] as number | null) ?? null,
    expiresAt: (row["expires_at"] as number | null) ?? null,
    refreshedAt: (row["refreshed_at"] as number | null) ?? null,
  };
}

export function writeStatus(store: SealedStore, row: StatusRow): void {
  store.db
    .query(
      `INSERT OR REPLACE INTO account_status
         (account, state, since, last_error, last_error_at, expires_at, refreshed_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
    )
    .run(row.account, row.state, row.since, row.lastError, row.lastErrorAt, row.expiresAt, row.refreshedAt);
}

/** The same stored pair: what a refresh started from is still what the database holds. */
export function sameTokens(a: TokenRecord | null, b: TokenRecord | null): boolean {
  if (a === null || b === null) return a === b;
  return (
    a.refreshToken === b.refreshToken &&
    a.accessToken === b.accessToken &&
    a.obtainedAt === b.obtainedAt &&
    a.clientId === b.clientId &&
    a.tokenUrl === b.tokenUrl
  );
}

/**
 * `saveTokens` of tokens a refresh obtained, unless the stored pair is no longer `base`, the one the refresh started
 * from: then another process wrote since (`mailgator account login`, a login for a new client, another process's
 * refresh) and its pair is newer, so it stays. Read and write are one transaction (BEGIN IMMEDIATE), so no other
 * process writes between them. Returns null when `record` was written, else the stored record that stays.
 */
export function saveRefreshedTokens(
  store: SealedStore,
  account: string,
  record: TokenRecord,
  base: TokenRecord | null,
  now: number,
): { readonly stored: TokenRecord | null } | null {
  ensureSchema(store);
  return store.transaction(() => {
    let stored: TokenRecord | null;
    try {
      stored = readTokens(store, account);
    } catch {
      // A record that cannot be read is no pair anyone could use: the new one replaces it.
      stored = base;
    }
    if (!sameTokens(stored, base)) return { stored };
    saveTokens(store, account, record, now);
    return null;
  });
}

/**
 * Replaces the account's tokens and marks it ok, in one transaction: a crash leaves either the old pair or the new
 * one, never neither (the provider may already have retired the old refresh token when it issued the new one).
 */
export function saveTokens(store: SealedStore, account: string, record: TokenRecord, now: number): void {
  ensureSchema(store);
  store.transaction(() => {
    store.put(TOKEN_KIND, account, JSON.stringify(record));
    const before = readStatus(store, account);
    writeStatus(store, {
      account,
      state: "ok",
      since: before?.state === "ok" ? before.since : now,
      lastError: before?.lastError ?? null,
      lastErrorAt: before?.lastErrorAt ?? null,
      expiresAt: record.expiresAt,
      refreshedAt: now,
    });
  });
}
