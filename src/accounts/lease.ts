/**
 * The refresh lease: one refresh of an OAuth2 account at a time across the processes that share a state database
 * (`mailgator serve`, `mailgator approvals approve`), docs/accounts.md "Staying logged in". A provider that rotates
 * refresh tokens retires the one it was sent, and some revoke the whole grant when a retired one comes again: two
 * processes must not both send the same refresh token. The lease is a row in the state database; a process takes it
 * before its token request and removes it after writing the outcome, and one that finds it held waits and then uses
 * the pair the holder stored. A holder that died leaves a row that expires.
 */

import { randomUUID } from "node:crypto";
import type { SealedStore } from "../state/store.ts";
import { TOKEN_REQUEST_TIMEOUT_MS } from "./oauth.ts";

/** Added to the token request's timeout: the holder writes the new pair after its response. */
export const LEASE_MARGIN_MS = 5_000;
/** A lease expires this long after it was taken: a holder still alive has had its answer or its timeout by then. */
export const LEASE_TTL_MS = TOKEN_REQUEST_TIMEOUT_MS + LEASE_MARGIN_MS;
/** A process that finds the lease held looks again this often... */
export const LEASE_POLL_MS = 100;
/** ...for at most this long in all (a lease taken over and over by others): then it refreshes without one. */
export const LEASE_MAX_WAIT_MS = LEASE_TTL_MS + LEASE_MARGIN_MS;

const SCHEMA = `CREATE TABLE IF NOT EXISTS account_refresh_lease (
  account    TEXT PRIMARY KEY,
  owner      TEXT NOT NULL,
  expires_at INTEGER NOT NULL
) WITHOUT ROWID`;

/** An id for one token manager (process and instance): a lease it holds is its own, whoever else's is not. */
export function leaseOwner(): string {
  return `${process.pid}-${randomUUID()}`;
}

/**
 * Takes (or renews) the account's lease for `owner` in one BEGIN IMMEDIATE transaction. Returns null when taken,
 * else the expiry (ms) of the live lease another owner holds. Throws when the database cannot be written (read-only,
 * locked past the busy timeout): the caller refreshes without a lease.
 */
export function takeLease(store: SealedStore, account: string, owner: string, now: number): number | null {
  return store.transaction(() => {
    store.db.run(SCHEMA);
    const row = store.db
      .query("SELECT owner, expires_at FROM account_refresh_lease WHERE account = ?")
      .get(account) as { owner: string; expires_at: number } | null;
    if (row !== null && row.owner !== owner && row.expires_at > now) return row.expires_at;
    store.db
      .query("INSERT OR REPLACE INTO account_refresh_lease (account, owner, expires_at) VALUES (?, ?, ?)")
      .run(account, owner, now + LEASE_TTL_MS);
    return null;
  });
}

/**
 * The expiry (ms) of the live lease another owner than `owner` holds on the account, read without a write
 * transaction; null when there is none (no row, an expired one, `owner`'s own, no table yet). For a process that
 * could not take the lease (`takeLease` threw: the write lock held past the busy timeout): a live lease it can still
 * read is waited for as one `takeLease` found. Throws when the database cannot be read.
 */
export function heldLease(store: SealedStore, account: string, owner: string, now: number): number | null {
  const table = store.db
    .query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'account_refresh_lease'")
    .get();
  if (table === null) return null;
  const row = store.db.query("SELECT owner, expires_at FROM account_refresh_lease WHERE account = ?").get(account) as {
    owner: string;
    expires_at: number;
  } | null;
  return row !== null && row.owner !== owner && row.expires_at > now ? row.expires_at : null;
}

/** Removes the account's lease if `owner` still holds it. Throws when the database cannot be written. */
export function releaseLease(store: SealedStore, account: string, owner: string): void {
  store.transaction(() => {
    store.db.run(SCHEMA);
    store.db.query("DELETE FROM account_refresh_lease WHERE account = ? AND owner = ?").run(account, owner);
  });
}

/**
 * Extends the account's lease by LEASE_TTL_MS from `now` if `owner` holds it; a lease `owner` does not hold (it
 * refreshes without one, after LEASE_MAX_WAIT_MS or a lease it could not take) is left alone: taken here, nobody
 * would release it. Throws when the database cannot be written.
 */
export function renewLease(store: SealedStore, account: string, owner: string, now: number): void {
  store.transaction(() => {
    store.db.run(SCHEMA);
    store.db
      .query("UPDATE account_refresh_lease SET expires_at = ? WHERE account = ? AND owner = ?")
      .run(now + LEASE_TTL_MS, account, owner);
  });
}
