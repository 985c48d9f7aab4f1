// An OAuth2 account whose fresh access token the upstream server refuses too (the token is good at the provider, the
// server will not take it for this mailbox: IMAP or SMTP access turned off for tokens, another mailbox's token) is
// not tried again for ACCOUNT_REFUSAL_HOLD_MS (src/accounts/refusals.ts, docs/config.md "Who connects"): an agent
// retrying in a loop costs neither a token request nor two failed logins at the real Dovecot and Postfix each time.
// Here the stored grant is another mailbox's, so both servers refuse every token the local server issues for it.
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AccountCredentials } from "../../src/accounts/index.ts";
import { AuditLog } from "../../src/audit/index.ts";
import { type Config, parseConfig } from "../../src/config/index.ts";
import { startImapProxy } from "../../src/imap/index.ts";
import { compilePolicy } from "../../src/policy/index.ts";
import { startSmtpProxy } from "../../src/smtp/index.ts";
import { SealedStore } from "../../src/state/store.ts";
import { createMailbox, imapListener, smtpListener, uniqueToken } from "../fixtures/index.ts";
import {
  authorizationCodeFlow,
  LineClient,
  oauthServeToml,
  refreshCounters,
  storeIssuedTokens,
} from "../fixtures/oauth.ts";

setDefaultTimeout(60_000);

const AGENT_TOKEN = `mg_${uniqueToken("agent")}`;
/** ACCOUNT_REFUSAL_HOLD_MS, shortened. */
const HOLD_MS = 5_000;
const TRY_LATER = "Upstream login temporarily unavailable; try again later";

const cleanups: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function imapLogin(port: number): Promise<string> {
  const raw = await LineClient.open(port);
  try {
    await raw.until(/^\* OK/);
    raw.send(`a LOGIN bot ${AGENT_TOKEN}`);
    return await raw.until(/^a /);
  } finally {
    raw.close();
  }
}

async function smtpAuth(port: number): Promise<string> {
  const raw = await LineClient.open(port);
  try {
    await raw.until(/^220 /);
    raw.send("EHLO agent.test");
    await raw.until(/^250 /);
    raw.send(`AUTH PLAIN ${Buffer.from(`\0bot\0${AGENT_TOKEN}`).toString("base64")}`);
    return await raw.until(/^\d{3} /);
  } finally {
    raw.close();
  }
}

test("a fresh token refused too: the account is not tried again for the hold, then it is", async () => {
  const owner = await createMailbox({ name: "oauth-hold-owner" });
  const other = await createMailbox({ name: "oauth-hold-other" });
  // The grant is `owner`'s; the account logs in as `other`: Dovecot and Postfix refuse every token of it.
  const tokens = await authorizationCodeFlow({ user: owner.user });
  expect(tokens.status).toBe(200);
  const dir = mkdtempSync(join(tmpdir(), "mailgator-oauth-hold-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const listeners = `${imapListener("127.0.0.1:0")}\n${smtpListener("127.0.0.1:0")}`;
  const parsed = parseConfig(oauthServeToml(dir, AGENT_TOKEN, other.user, { listeners }), join(dir, "mailgator.toml"));
  const any = { host: "127.0.0.1", port: 0 };
  const config: Config = {
    ...parsed,
    imap: { ...parsed.imap!, listenAddr: any },
    smtp: { ...parsed.smtp!, listenAddr: any },
  };
  const store = SealedStore.open(config.state.path, { secretsFile: config.state.secretsFile, env: {}, create: true })!;
  cleanups.push(() => store.close());
  storeIssuedTokens(store, "mail", tokens);
  const audit = AuditLog.open(config.audit.path, { batchMs: 5, sync: "normal" });
  cleanups.push(() => audit.close());
  const quiet = { error: () => {}, warn: () => {}, info: () => {} };
  const credentials = new AccountCredentials({ config, store, audit: (e) => audit.record(e), log: quiet });
  const policy = compilePolicy(config.rules);
  const imap = await startImapProxy({
    config,
    policy,
    audit,
    credentials,
    loginThrottle: { stepMs: 0, maxMs: 0 },
    accountRefusalHoldMs: HOLD_MS,
  });
  cleanups.push(() => imap.close());
  const smtp = await startSmtpProxy({ config, policy, audit, credentials, accountRefusalHoldMs: HOLD_MS });
  cleanups.push(() => smtp.close());

  // IMAP: the cached token refused, one refresh, the fresh token refused: the agent is told to come back later.
  expect(await imapLogin(imap.address.port)).toBe(`a NO [UNAVAILABLE] ${TRY_LATER}\r\n`);
  const imapHeld = Date.now();
  expect((await refreshCounters(owner.user)).refreshes).toBe(1);
  // Within the hold: the same answer, with no token request and no upstream login.
  for (let i = 0; i < 3; i++) expect(await imapLogin(imap.address.port)).toBe(`a NO [UNAVAILABLE] ${TRY_LATER}\r\n`);
  expect((await refreshCounters(owner.user)).refreshes).toBe(1);
  expect(Date.now() - imapHeld).toBeLessThan(HOLD_MS);
  // SMTP keeps its own hold (another server): its first AUTH is tried, with one more refresh; the next ones are not.
  expect(await smtpAuth(smtp.address.port)).toBe(`454 4.7.0 ${TRY_LATER}\r\n`);
  const smtpHeld = Date.now();
  expect((await refreshCounters(owner.user)).refreshes).toBe(2);
  for (let i = 0; i < 3; i++) expect(await smtpAuth(smtp.address.port)).toBe(`454 4.7.0 ${TRY_LATER}\r\n`);
  expect((await refreshCounters(owner.user)).refreshes).toBe(2);
  expect(Date.now() - smtpHeld).toBeLessThan(HOLD_MS);

  await audit.flush();
  const rows = audit.query({ order: "asc" }).filter((r) => r.decision === "error");
  const notTried = rows.filter((r) =>
    /login not tried: the upstream server refused the credentials of account mail/.test(r.reason),
  );
  expect(rows.filter((r) => r.command === "LOGIN").length).toBe(4);
  expect(rows.filter((r) => r.command === "AUTH").length).toBe(4);
  expect(notTried.map((r) => r.command)).toEqual(["LOGIN", "LOGIN", "LOGIN", "AUTH", "AUTH", "AUTH"]);

  // After the hold the account is tried again: one more refresh each.
  await Bun.sleep(Math.max(0, HOLD_MS - (Date.now() - smtpHeld)) + 100);
  expect(await imapLogin(imap.address.port)).toBe(`a NO [UNAVAILABLE] ${TRY_LATER}\r\n`);
  expect(await smtpAuth(smtp.address.port)).toBe(`454 4.7.0 ${TRY_LATER}\r\n`);
  expect((await refreshCounters(owner.user)).refreshes).toBe(4);
});
