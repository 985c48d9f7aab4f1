// A refusal of the grant (invalid_grant) whose "needs re-authorization" mark the state database does not take, as
// another connection holds its write lock past the busy timeout (docs/accounts.md "When an account needs
// re-authorization"): the refusal is held in memory, so the account is refused and the provider is not sent the
// refused refresh token again, until the mark is stored or the owner logs in again. Agents log in through the IMAP
// proxy to the real Dovecot, which checks the tokens of the local authorization server.
import { Database } from "bun:sqlite";
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BACKOFF_INITIAL_MS } from "../../src/accounts/credentials.ts";
import {
  AccountCredentials,
  AccountNeedsReauthorization,
  AccountTemporarilyUnavailable,
} from "../../src/accounts/index.ts";
import { readStatus } from "../../src/accounts/records.ts";
import { decisions } from "../../src/admin/metrics.ts";
import { AuditLog } from "../../src/audit/index.ts";
import { loadConfig } from "../../src/config/index.ts";
import { startImapProxy } from "../../src/imap/index.ts";
import { compilePolicy } from "../../src/policy/index.ts";
import { SealedStore } from "../../src/state/store.ts";
import { sampleEvent } from "../audit/helpers.ts";
import { healthyAgain, syncFailingLog } from "../audit/unhealthy.ts";
import { createMailbox, uniqueToken } from "../fixtures/index.ts";
import {
  authorizationCodeFlow,
  control,
  LineClient,
  oauthServeToml,
  refreshCounters,
  storeIssuedTokens,
  storeServeTokens,
} from "../fixtures/oauth.ts";
import { tempRoot } from "../fixtures/temp.ts";

setDefaultTimeout(120_000);

const TMP = tempRoot("mg-reauth-locked-");
const AGENT_TOKEN = `mg_${uniqueToken("reauth-locked")}`;
/** What the agent is told when its account needs its owner (docs/imap.md "OAuth2 accounts"). */
const NEEDS_OWNER = /^a NO \[UNAVAILABLE\] Account mail needs re-authorization by its owner \(mailgator account login/m;
/** The series the audit row of a refused refresh counts in (docs/operations.md "Health and metrics"). */
const OAUTH_ERRORS = { protocol: "oauth2", operation: "none", decision: "error" };

const cleanups: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** A logged-in user of the local server, its state database, audit log and the IMAP proxy of its agent "bot". */
async function setup() {
  const user = (await createMailbox()).user;
  const dir = mkdtempSync(join(TMP, "acct-"));
  const path = join(dir, "mailgator.toml");
  writeFileSync(path, oauthServeToml(dir, AGENT_TOKEN, user));
  const login = await authorizationCodeFlow({ user });
  expect(login.status).toBe(200);
  storeServeTokens(dir, login);
  const config = loadConfig(path);
  const store = SealedStore.open(config.state.path, { secretsFile: config.state.secretsFile, env: {}, create: false })!;
  const audit = AuditLog.open(config.audit.path, { batchMs: 5, sync: "normal" });
  const logged: string[] = [];
  const log = {
    error: (m: string) => void logged.push(`error: ${m}`),
    warn: (m: string) => void logged.push(`warn: ${m}`),
    info: (m: string) => void logged.push(`info: ${m}`),
  };
  const credentials = new AccountCredentials({ config, store, audit: (e) => audit.record(e), log });
  const imap = await startImapProxy({
    config,
    policy: compilePolicy(config.rules),
    audit,
    credentials,
    loginThrottle: { stepMs: 0, maxMs: 0 },
  });
  cleanups.push(async () => {
    await imap.close();
    await audit.close();
    store.close();
  });
  /** The local server's refresh requests for the user since `setup`. */
  const base = (await refreshCounters(user)).refreshes;
  const refreshes = async () => (await refreshCounters(user)).refreshes - base;
  /** The audit rows of the proxy's own token requests. */
  const oauthRows = async () => {
    await audit.flush();
    return audit.query({ protocol: "oauth2" });
  };
  return { user, config, store, logged, credentials, port: imap.address.port, refreshes, oauthRows };
}

/** A second connection to the state database holding its write lock (an EXCLUSIVE transaction) until released. */
function lockDatabase(path: string): { release(): void } {
  const db = new Database(path, { readwrite: true, create: false });
  db.run("BEGIN EXCLUSIVE");
  let held = true;
  const release = () => {
    if (!held) return;
    held = false;
    db.run("COMMIT");
    db.close();
  };
  cleanups.push(release);
  return { release };
}

/** An agent's IMAP LOGIN through the proxy; the tagged answer. */
async function agentLogin(port: number): Promise<string> {
  const client = await LineClient.open(port);
  try {
    await client.until(/^\* OK/);
    client.send(`a LOGIN bot ${AGENT_TOKEN}`);
    return await client.until(/^a /, 60_000);
  } finally {
    client.close();
  }
}

test("the locked database does not take the mark: two logins, one refresh; stored once it can be", async () => {
  const s = await setup();
  const lock = lockDatabase(s.config.state.path);
  // The owner's grant is revoked: the access token Dovecot is shown and the refresh token.
  expect((await control("revoke", { user: s.user })).status).toBe(200);
  const counted = decisions.get(OAUTH_ERRORS);

  const first = await agentLogin(s.port);
  const second = await agentLogin(s.port);
  // The provider was sent the revoked refresh token once: the second login was refused from memory.
  expect(await s.refreshes()).toBe(1);
  expect(first).toMatch(NEEDS_OWNER);
  expect(second).toMatch(NEEDS_OWNER);
  // The failed write is reported: an error line naming it, and the refusal's audit row (counted in the metrics),
  // which says the mark is not stored; the database still says what it said before.
  const unstored = s.logged.filter((l) => l.startsWith("error: ") && l.includes("the mark is not stored"));
  expect(unstored).toHaveLength(1);
  expect(unstored[0]).toContain("database is locked");
  expect(unstored[0]).toContain("mailgator account login mail");
  const rows = await s.oauthRows();
  expect(rows).toHaveLength(1);
  expect(rows[0]!).toMatchObject({ command: "oauth-refresh", target: "mail", decision: "error" });
  expect(rows[0]!.detail).toEqual({ stored: false });
  expect(decisions.get(OAUTH_ERRORS) - counted).toBe(1);
  expect(readStatus(s.store, "mail")?.state).toBe("ok");

  // The lock ends. Past the backoff, the next login stores the mark, and is refused by it: still one refresh, one
  // row. The stored mark is the one `mailgator account status` shows.
  lock.release();
  await Bun.sleep(BACKOFF_INITIAL_MS + 200);
  expect(await agentLogin(s.port)).toMatch(NEEDS_OWNER);
  expect(readStatus(s.store, "mail")?.state).toBe("needs-reauthorization");
  expect(s.logged).toContain("info: account mail: the needs-reauthorization mark is stored in the state database now");
  expect(await agentLogin(s.port)).toMatch(NEEDS_OWNER);
  expect(await s.refreshes()).toBe(1);
  expect(await s.oauthRows()).toHaveLength(1);

  // The owner logs in again (as `mailgator account login` stores it): the agent's login works.
  const again = await authorizationCodeFlow({ user: s.user });
  storeIssuedTokens(s.store, "mail", again);
  expect(await agentLogin(s.port)).toMatch(/^a OK/m);
  expect(await s.refreshes()).toBe(1);
});

test("a refusal held in memory ends with the owner's new login, stored before the mark could be", async () => {
  const s = await setup();
  const lock = lockDatabase(s.config.state.path);
  expect((await control("revoke", { user: s.user })).status).toBe(200);
  expect(await agentLogin(s.port)).toMatch(NEEDS_OWNER);
  expect(await s.refreshes()).toBe(1);

  lock.release();
  const again = await authorizationCodeFlow({ user: s.user });
  storeIssuedTokens(s.store, "mail", again);
  // The new pair is used as it is: no refresh, nothing marked.
  expect(await agentLogin(s.port)).toMatch(/^a OK/m);
  expect(await s.refreshes()).toBe(1);
  expect(readStatus(s.store, "mail")?.state).toBe("ok");
  expect(s.logged).toContain("info: account mail: a newer login is stored; the refusal held in memory ends");
  expect(await s.oauthRows()).toHaveLength(1);
});

test("settled() stores the mark of a refusal held in memory before a process ends, whatever its backoff", async () => {
  const s = await setup();
  const lock = lockDatabase(s.config.state.path);
  expect((await control("revoke", { user: s.user })).status).toBe(200);
  expect(await agentLogin(s.port)).toMatch(NEEDS_OWNER);
  lock.release();
  await s.credentials.settled();
  expect(readStatus(s.store, "mail")?.state).toBe("needs-reauthorization");
  expect(await s.refreshes()).toBe(1);
  expect(await s.oauthRows()).toHaveLength(1);
});

test("locked, and the audit log failing too: a temporary failure, no refresh before its backoff", async () => {
  const user = (await createMailbox()).user;
  const dir = mkdtempSync(join(TMP, "audit-"));
  const path = join(dir, "mailgator.toml");
  writeFileSync(path, oauthServeToml(dir, AGENT_TOKEN, user));
  const login = await authorizationCodeFlow({ user });
  expect(login.status).toBe(200);
  storeServeTokens(dir, login);
  const config = loadConfig(path);
  const store = SealedStore.open(config.state.path, { secretsFile: config.state.secretsFile, env: {}, create: false })!;
  const { log: audit, failing } = syncFailingLog(config.audit.path);
  cleanups.push(async () => {
    await audit.close().catch(() => {});
    store.close();
  });
  let now = Date.now();
  const logged: string[] = [];
  const log = { error: (m: string) => void logged.push(m), warn: () => {}, info: () => {} };
  const c = new AccountCredentials({ config, store, audit: (e) => audit.record(e), log, now: () => now });
  const token = ((await c.credentialFor("mail")) as { accessToken: string }).accessToken;
  const before = (await refreshCounters(user)).refreshes;

  failing.on = true;
  await expect(audit.durable(sampleEvent())).rejects.toThrow();
  const lock = lockDatabase(config.state.path);
  expect((await control("revoke", { user })).status).toBe(200);
  c.reportRejected("mail", token);
  // Neither the mark nor its row can be recorded: not held, a temporary failure retried with backoff (the status
  // row that would say so cannot be written either, which is logged), and nothing is sent before the backoff ends.
  await expect(c.credentialFor("mail")).rejects.toBeInstanceOf(AccountTemporarilyUnavailable);
  expect(logged.some((m) => m.includes("its status is not written to the state database (database is locked)"))).toBe(
    true,
  );
  await expect(c.credentialFor("mail")).rejects.toBeInstanceOf(AccountTemporarilyUnavailable);
  expect((await refreshCounters(user)).refreshes - before).toBe(1);

  // Both can be written again: past the backoff, the refusal is marked, with its row.
  lock.release();
  failing.on = false;
  await healthyAgain(audit);
  now += 10 * 60_000;
  await expect(c.credentialFor("mail")).rejects.toBeInstanceOf(AccountNeedsReauthorization);
  expect(readStatus(store, "mail")?.state).toBe("needs-reauthorization");
  await audit.flush();
  expect(audit.query({ protocol: "oauth2" })).toHaveLength(1);
  expect((await refreshCounters(user)).refreshes - before).toBe(2);
});
