// One refresh of an OAuth2 account at a time across processes on one state database (src/accounts/lease.ts,
// docs/accounts.md "Staying logged in"), against the local authorization server with refresh-token rotation and
// reuse revocation on (a retired refresh token presented again revokes the whole grant, as Okta and Auth0 do).
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { join } from "node:path";
import { BACKOFF_INITIAL_MS } from "../../src/accounts/credentials.ts";
import { AccountCredentials } from "../../src/accounts/index.ts";
import {
  heldLease,
  LEASE_MARGIN_MS,
  LEASE_MAX_WAIT_MS,
  LEASE_TTL_MS,
  releaseLease,
  renewLease,
  takeLease,
} from "../../src/accounts/lease.ts";
import { TOKEN_REQUEST_TIMEOUT_MS } from "../../src/accounts/oauth.ts";
import { readStatus, readTokens } from "../../src/accounts/records.ts";
import type { AuditEvent } from "../../src/audit/index.ts";
import { SealedStore } from "../../src/state/store.ts";
import { refresh, refreshCounters, until } from "../fixtures/oauth.ts";
import { tempRoot } from "../fixtures/temp.ts";
import { Child, rotatingAccount as sharedRotatingAccount } from "./helpers.ts";

setDefaultTimeout(60_000);

const CHILD = join(import.meta.dir, "lease-child.ts");
const TMP = tempRoot("mg-refresh-lease-");
const open: SealedStore[] = [];
const children: Child[] = [];
afterAll(() => {
  for (const child of children) child.proc.kill("SIGKILL");
  for (const store of open) store.close();
});

const quiet = { error: () => {}, warn: () => {}, info: () => {} };

/** A logged-in user of the local server whose refresh tokens rotate, with reuse revocation; its config. */
function rotatingAccount(delayMs = 0) {
  return sharedRotatingAccount({
    prefix: join(TMP, "lease-"),
    agentToken: "agent-token-refresh-lease-0123456789",
    open,
    reuse: true,
    delayMs,
  });
}

/** `fetch` that records when each refresh request was sent. */
function recording() {
  const sent: number[] = [];
  const impl = (async (input: string | URL | Request, init?: RequestInit) => {
    const request = new Request(input as string, init);
    if (new URLSearchParams(await request.clone().text()).has("refresh_token")) sent.push(Date.now());
    return fetch(request);
  }) as typeof fetch;
  return { fetch: impl, sent };
}

test("two processes refresh together: one token request, nothing marked, both end with one valid pair", async () => {
  // The provider holds its answer back 1.5 s after rotating: the first process's refresh is under way (its old
  // refresh token already retired) when the second one needs a token.
  const { user, path, login, connect } = await rotatingAccount(1500);
  const before = await refreshCounters(user);
  const a = new Child([CHILD, path]);
  const b = new Child([CHILD, path]);
  children.push(a, b);
  await a.waitFor(/ready/);
  await b.waitFor(/ready/);
  a.write("go\n");
  // A's refresh has reached the provider.
  await until(async () => (await refreshCounters(user)).refreshes > before.refreshes);
  b.write("go\n");
  const fromA = JSON.parse((await a.waitFor(/^\{.*\}$/m))[0]) as { accessToken?: string; audited: number };
  const fromB = JSON.parse((await b.waitFor(/^\{.*\}$/m))[0]) as { accessToken?: string; audited: number };
  expect(fromA.accessToken).toBeString();
  expect(fromB.accessToken).toBe(fromA.accessToken!);
  expect(fromA.audited + fromB.audited).toBe(0);
  const after = await refreshCounters(user);
  expect(after.refreshes - before.refreshes).toBe(1);
  expect(after.reuses).toBe(before.reuses);
  const store = connect();
  expect(readStatus(store, "mail")!.state).toBe("ok");
  const stored = readTokens(store, "mail")!;
  expect(stored.accessToken).toBe(fromA.accessToken!);
  expect(stored.refreshToken).not.toBe(login.refresh_token as string);
  // The grant is alive: the stored refresh token works.
  expect((await refresh(stored.refreshToken!)).status).toBe(200);
  expect(await a.exit()).toBe(0);
  expect(await b.exit()).toBe(0);
});

test("the lease: taken for LEASE_TTL_MS, held one ms before its expiry, free at it; released only by its owner", () => {
  expect(LEASE_TTL_MS).toBe(TOKEN_REQUEST_TIMEOUT_MS + LEASE_MARGIN_MS);
  expect(LEASE_MAX_WAIT_MS).toBeGreaterThan(LEASE_TTL_MS);
  const dir = mkdtempSync(join(TMP, "unit-"));
  const store = SealedStore.open(join(dir, "state.db"), { secretsFile: join(dir, "key"), env: {}, create: true })!;
  open.push(store);
  const t = 1_000_000;
  // No table yet: no lease to read.
  expect(heldLease(store, "x", "B", t)).toBeNull();
  expect(takeLease(store, "x", "A", t)).toBeNull();
  // Read without taking it (heldLease): another owner's while it lives, never one's own.
  expect(heldLease(store, "x", "B", t + LEASE_TTL_MS - 1)).toBe(t + LEASE_TTL_MS);
  expect(heldLease(store, "x", "B", t + LEASE_TTL_MS)).toBeNull();
  expect(heldLease(store, "x", "A", t)).toBeNull();
  expect(takeLease(store, "x", "B", t + LEASE_TTL_MS - 1)).toBe(t + LEASE_TTL_MS);
  expect(takeLease(store, "x", "B", t + LEASE_TTL_MS)).toBeNull();
  // Its owner renews it; another account's lease is another row.
  expect(takeLease(store, "x", "B", t + LEASE_TTL_MS + 5)).toBeNull();
  expect(takeLease(store, "y", "A", t + LEASE_TTL_MS + 5)).toBeNull();
  releaseLease(store, "x", "A");
  expect(takeLease(store, "x", "A", t + LEASE_TTL_MS + 6)).toBe(t + 2 * LEASE_TTL_MS + 5);
  releaseLease(store, "x", "B");
  expect(takeLease(store, "x", "A", t + LEASE_TTL_MS + 7)).toBeNull();
});

test("renewLease extends only its owner's lease, and never takes a free one", () => {
  const dir = mkdtempSync(join(TMP, "renew-"));
  const store = SealedStore.open(join(dir, "state.db"), { secretsFile: join(dir, "key"), env: {}, create: true })!;
  open.push(store);
  const t = 2_000_000;
  // Free: a renewal by a process refreshing without the lease leaves it free (it would never release it).
  renewLease(store, "x", "A", t);
  expect(takeLease(store, "x", "B", t + 1)).toBeNull();
  // Held by B: A's renewal changes nothing, B's extends it by LEASE_TTL_MS from its time.
  renewLease(store, "x", "A", t + 2);
  expect(takeLease(store, "x", "A", t + 3)).toBe(t + 1 + LEASE_TTL_MS);
  renewLease(store, "x", "B", t + 10);
  expect(takeLease(store, "x", "A", t + 11)).toBe(t + 10 + LEASE_TTL_MS);
});

test("a lease whose holder was killed blocks until its expiry, not past it; then one refresh", async () => {
  const { user, path, config, connect } = await rotatingAccount();
  const holder = new Child([CHILD, path, "hold-lease"]);
  children.push(holder);
  await holder.waitFor(/leased/);
  holder.proc.kill("SIGKILL");
  await holder.exit();
  const store = connect();
  const { expires_at: expiresAt } = store.db
    .query("SELECT expires_at FROM account_refresh_lease WHERE account = 'mail'")
    .get() as { expires_at: number };
  const before = await refreshCounters(user);
  const p = recording();
  const audited: AuditEvent[] = [];
  const c = new AccountCredentials({ config, store, fetch: p.fetch, log: quiet, audit: (e) => audited.push(e) });
  const first = (await c.credentialFor("mail")) as { accessToken: string };
  c.reportRejected("mail", first.accessToken);
  const second = (await c.credentialFor("mail")) as { accessToken: string };
  const done = Date.now();
  expect(second.accessToken).not.toBe(first.accessToken);
  expect(p.sent.length).toBe(1);
  expect(p.sent[0]!).toBeGreaterThanOrEqual(expiresAt);
  expect(done).toBeLessThan(expiresAt + 5_000); // generous: one poll interval is LEASE_POLL_MS
  expect((await refreshCounters(user)).refreshes - before.refreshes).toBe(1);
  expect(readStatus(store, "mail")!.state).toBe("ok");
  expect(audited).toEqual([]);
});

test("a lease held past LEASE_MAX_WAIT_MS: still waited for one ms before it, not at it", async () => {
  const { config, connect } = await rotatingAccount();
  const store = connect();
  const t0 = Date.now();
  let clock = t0;
  // Held by another owner far beyond the wait (its clock ahead, say).
  expect(takeLease(store, "mail", "other", t0 + 10 * LEASE_MAX_WAIT_MS)).toBeNull();
  const p = recording();
  const warned: string[] = [];
  const log = { ...quiet, warn: (m: string) => warned.push(m) };
  const c = new AccountCredentials({ config, store, fetch: p.fetch, log, now: () => clock });
  const first = (await c.credentialFor("mail")) as { accessToken: string };
  c.reportRejected("mail", first.accessToken);
  let settled = false;
  const second = c.credentialFor("mail").finally(() => {
    settled = true;
  });
  await Bun.sleep(300);
  clock = t0 + LEASE_MAX_WAIT_MS - 1;
  await Bun.sleep(300);
  expect(p.sent.length).toBe(0);
  expect(settled).toBe(false);
  clock = t0 + LEASE_MAX_WAIT_MS;
  const credential = (await second) as { accessToken: string };
  expect(credential.accessToken).not.toBe(first.accessToken);
  expect(p.sent.length).toBe(1);
  expect(warned.some((m) => m.includes("refresh lease is still held"))).toBe(true);
});

test("a database this process cannot write (read-only): the refresh works as without the lease", async () => {
  const { config, connect } = await rotatingAccount();
  const store = connect();
  store.db.run("PRAGMA query_only = 1");
  const p = recording();
  const warned: string[] = [];
  const log = { ...quiet, warn: (m: string) => warned.push(m) };
  const c = new AccountCredentials({ config, store, fetch: p.fetch, log });
  const first = (await c.credentialFor("mail")) as { accessToken: string };
  c.reportRejected("mail", first.accessToken);
  const second = (await c.credentialFor("mail")) as { accessToken: string };
  expect(second.accessToken).not.toBe(first.accessToken);
  expect(p.sent.length).toBe(1);
  expect(warned.some((m) => m.includes("refresh lease not taken"))).toBe(true);
  // The new pair is kept in memory (its write failed too) and written once the database can be written.
  store.db.run("PRAGMA query_only = 0");
  await c.settled();
  expect(readTokens(store, "mail")!.accessToken).toBe(second.accessToken);
});

test("a database locked past the busy timeout: the refresh works as without the lease", async () => {
  const { config, connect } = await rotatingAccount();
  const store = connect();
  const locker = connect();
  const p = recording();
  const c = new AccountCredentials({ config, store, fetch: p.fetch, log: quiet });
  const first = (await c.credentialFor("mail")) as { accessToken: string };
  c.reportRejected("mail", first.accessToken);
  locker.db.run("BEGIN IMMEDIATE");
  let second: { accessToken: string };
  try {
    second = (await c.credentialFor("mail")) as { accessToken: string };
  } finally {
    locker.db.run("ROLLBACK");
  }
  expect(second.accessToken).not.toBe(first.accessToken);
  expect(p.sent.length).toBe(1);
  await c.settled();
  expect(readTokens(store, "mail")!.accessToken).toBe(second.accessToken);
});

test("a lease held by a process refreshing, the database locked past the busy timeout: waited for", async () => {
  // The provider rotates at once and holds its answer back 3 s: the other process's refresh has retired the stored
  // refresh token when this one finds the lease out of reach (another connection holds the write lock for longer
  // than the busy timeout), though it can read that the lease is held. Sent now, the stored refresh token would be
  // a reuse, and the provider would revoke the grant, the other process's new pair with it.
  const { user, path, config, connect } = await rotatingAccount(3000);
  const before = await refreshCounters(user);
  const holder = new Child([CHILD, path]);
  children.push(holder);
  await holder.waitFor(/ready/);
  const store = connect();
  const locker = connect();
  const p = recording();
  const warned: string[] = [];
  const c = new AccountCredentials({ config, store, fetch: p.fetch, log: { ...quiet, warn: (m) => warned.push(m) } });
  const first = (await c.credentialFor("mail")) as { accessToken: string };
  c.reportRejected("mail", first.accessToken);
  holder.write("go\n");
  // The holder's refresh has reached the provider, under its lease.
  await until(async () => (await refreshCounters(user)).refreshes > before.refreshes);
  locker.db.run("BEGIN IMMEDIATE");
  let second: Promise<unknown>;
  try {
    // The lease is not taken: BEGIN IMMEDIATE waits the busy timeout, 5 s, longer than the holder's answer takes.
    second = c.credentialFor("mail");
  } finally {
    locker.db.run("ROLLBACK");
  }
  const credential = (await second) as { accessToken: string };
  const fromHolder = JSON.parse((await holder.waitFor(/^\{.*\}$/m))[0]) as { accessToken?: string };
  expect(warned.some((m) => m.includes("refresh lease not taken"))).toBe(true);
  // Nothing sent: the holder's pair is used.
  expect(p.sent.length).toBe(0);
  expect(credential.accessToken).toBe(fromHolder.accessToken!);
  const after = await refreshCounters(user);
  expect(after.refreshes - before.refreshes).toBe(1);
  expect(after.reuses).toBe(before.reuses);
  expect(readStatus(store, "mail")!.state).toBe("ok");
  expect((await refresh(readTokens(store, "mail")!.refreshToken!)).status).toBe(200);
  expect(await holder.exit()).toBe(0);
});

test("a pair whose write failed is written at the next use: the process waiting for its lease uses it", async () => {
  // This process's refresh rotates the refresh token, and its write of the new pair fails (another connection holds
  // the write lock past the busy timeout): the stored refresh token is retired, and the lease is left to expire so
  // that the other process does not send it at once. The new pair must be stored before that expiry, or the other
  // process sends the retired token then, and the provider revokes the grant.
  const { user, path, config, connect } = await rotatingAccount(1500);
  const before = await refreshCounters(user);
  const waiter = new Child([CHILD, path]);
  children.push(waiter);
  await waiter.waitFor(/ready/);
  const store = connect();
  const locker = connect();
  const c = new AccountCredentials({ config, store, log: quiet });
  const first = (await c.credentialFor("mail")) as { accessToken: string };
  c.reportRejected("mail", first.accessToken);
  const refreshed = c.credentialFor("mail");
  await until(async () => (await refreshCounters(user)).refreshes > before.refreshes);
  locker.db.run("BEGIN IMMEDIATE");
  let second: { accessToken: string };
  try {
    second = (await refreshed) as { accessToken: string };
  } finally {
    locker.db.run("ROLLBACK");
  }
  expect(readTokens(store, "mail")!.accessToken).toBe(first.accessToken);
  waiter.write("go\n");
  // The account's next use, once the write's backoff (BACKOFF_INITIAL_MS) has passed.
  await Bun.sleep(BACKOFF_INITIAL_MS + 500);
  expect(((await c.credentialFor("mail")) as { accessToken: string }).accessToken).toBe(second.accessToken);
  expect(readTokens(store, "mail")!.accessToken).toBe(second.accessToken);
  const fromWaiter = JSON.parse((await waiter.waitFor(/^\{.*\}$/m, 40_000))[0]) as { accessToken?: string };
  expect(fromWaiter.accessToken).toBe(second.accessToken);
  const after = await refreshCounters(user);
  expect(after.refreshes - before.refreshes).toBe(1);
  expect(after.reuses).toBe(before.reuses);
  expect(readStatus(store, "mail")!.state).toBe("ok");
  expect((await refresh(readTokens(store, "mail")!.refreshToken!)).status).toBe(200);
  expect(await waiter.exit()).toBe(0);
});
