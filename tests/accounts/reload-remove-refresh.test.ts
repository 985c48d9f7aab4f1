// A reload that removes an OAuth2 account, or gives it another client, while its refresh is out, and a later reload
// that brings it back (docs/accounts.md "Staying logged in"), against the local authorization server with
// refresh-token rotation and reuse revocation on (a retired refresh token presented again revokes the whole grant,
// as Okta and Auth0 do). The refresh out has made the provider retire the stored refresh token: its answer holds the
// only good one, and must be neither lost nor written over a login stored since.
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { AccountCredentials, AccountTemporarilyUnavailable } from "../../src/accounts/index.ts";
import { readStatus, readTokens, saveTokens } from "../../src/accounts/records.ts";
import { loadConfig } from "../../src/config/index.ts";
import { SealedStore } from "../../src/state/store.ts";
import {
  authorizationCodeFlow,
  control,
  oauthServer,
  oauthServeToml,
  refresh,
  refreshCounters,
  storeIssuedTokens,
  until,
} from "../fixtures/oauth.ts";
import { tempRoot } from "../fixtures/temp.ts";
import { createMailbox } from "../fixtures/upstreams.ts";

setDefaultTimeout(60_000);

const TMP = tempRoot("mg-reload-remove-");
const open: SealedStore[] = [];
afterAll(() => {
  for (const store of open) store.close();
});

const quiet = { error: () => {}, warn: () => {}, info: () => {} };
const AGENT_TOKEN = "agent-token-reload-remove-0123456789";

/**
 * An account "mail" of a fresh user, logged in an hour ago (its access token expired), with rotation and reuse
 * revocation on and the provider's answers held back 1.5 s; `reload(variant)` rewrites the config and reloads:
 * "same" as at start, "removed" without the account (its agent on another account of the same client), "other
 * client" with another client_id.
 */
async function setup() {
  const user = (await createMailbox()).user;
  await control("rotation", { user, on: "true" });
  await control("reuse", { user, on: "true" });
  await control("delay", { user, ms: "1500" });
  const dir = mkdtempSync(join(TMP, "account-"));
  const path = join(dir, "mailgator.toml");
  const same = oauthServeToml(dir, AGENT_TOKEN, user);
  writeFileSync(path, same);
  const config = loadConfig(path);
  const login = await authorizationCodeFlow({ user });
  expect(login.status).toBe(200);
  const store = SealedStore.open(config.state.path, {
    secretsFile: config.state.secretsFile,
    env: {},
    create: true,
  })!;
  open.push(store);
  const { clientId, tokenUrl } = oauthServer();
  const hourAgo = Date.now() - 3600_000;
  const refreshToken = login.refresh_token as string;
  const accessToken = login.access_token as string;
  const old = { refreshToken, accessToken, expiresAt: hourAgo + 1000, obtainedAt: hourAgo - 2600_000 };
  saveTokens(store, "mail", { ...old, clientId, tokenUrl }, hourAgo);
  const c = new AccountCredentials({ config, store, log: quiet });
  const texts = {
    same,
    removed: same.replace("[accounts.mail]", "[accounts.spare]").replace('account = "mail"', 'account = "spare"'),
    "other client": oauthServeToml(dir, AGENT_TOKEN, user, { clientId: "another-client" }),
  };
  const reload = (variant: keyof typeof texts) => {
    writeFileSync(path, texts[variant]);
    c.prepareReload(loadConfig(path)).commit();
  };
  /** Starts the first login, which waits for a refresh; resolves once the provider has rotated (and is delaying). */
  const refreshOut = async () => {
    const before = await refreshCounters(user);
    const first = c.credentialFor("mail").then(
      (credential) => credential,
      (error: Error) => error,
    );
    await until(async () => (await refreshCounters(user)).refreshes > before.refreshes);
    return { first };
  };
  return { user, store, c, reload, refreshOut, refreshToken };
}

/** The grant is alive: the stored refresh token is the newest of its chain, and works. */
async function storedWorks(user: string, store: SealedStore): Promise<void> {
  await control("delay", { user, ms: "0" });
  const stored = readTokens(store, "mail")!;
  expect((await refresh(stored.refreshToken!)).status).toBe(200);
}

for (const [gone, back] of [
  ["removed", "added again"],
  ["other client", "its client back"],
] as const) {
  test(`${gone}, then ${back}, after the refresh out ends: its rotated token is stored and used`, async () => {
    const { user, store, c, reload, refreshOut, refreshToken } = await setup();
    const { first } = await refreshOut();
    const before = await refreshCounters(user);
    reload(gone);
    // The refresh's answer comes while the account is gone: the login that waited for it gets a temporary failure.
    expect(await first).toBeInstanceOf(AccountTemporarilyUnavailable);
    expect(readTokens(store, "mail")!.refreshToken).not.toBe(refreshToken);
    reload("same");
    // Back with the same client: the stored refresh token is the rotated one, not the retired one (which the
    // provider would answer by revoking the grant).
    const got = await c.credentialFor("mail");
    expect(got.kind).toBe("oauth2");
    const after = await refreshCounters(user);
    expect(after.reuses).toBe(before.reuses);
    expect(readStatus(store, "mail")!.state).toBe("ok");
    await storedWorks(user, store);
  });

  test(`${gone}, then ${back} while the refresh is still out: waits for it, sends no retired token`, async () => {
    const { user, store, c, reload, refreshOut } = await setup();
    const { first } = await refreshOut();
    const before = await refreshCounters(user);
    reload(gone);
    reload("same");
    // The account is back before the answer: its login waits for the refresh out, then uses what it stored.
    const second = c.credentialFor("mail").catch((error: Error) => error);
    expect(await first).toBeInstanceOf(AccountTemporarilyUnavailable);
    expect(await second).toMatchObject({ kind: "oauth2" });
    const after = await refreshCounters(user);
    expect(after.reuses).toBe(before.reuses);
    expect(readStatus(store, "mail")!.state).toBe("ok");
    await storedWorks(user, store);
  });
}

test("removed, logged in again (a new grant), added again: the old refresh's answer writes over nothing", async () => {
  const { user, store, c, reload, refreshOut } = await setup();
  const { first } = await refreshOut();
  reload("removed");
  // `mailgator account login mail` while the account is out of the config: a new grant, a new refresh token.
  const login = await authorizationCodeFlow({ user });
  expect(login.status).toBe(200);
  storeIssuedTokens(store, "mail", login);
  reload("same");
  expect(await first).toBeInstanceOf(AccountTemporarilyUnavailable);
  // The new login stays, and is what the account uses.
  expect(readTokens(store, "mail")).toMatchObject({
    refreshToken: login.refresh_token,
    accessToken: login.access_token,
  });
  expect(await c.credentialFor("mail")).toMatchObject({ accessToken: login.access_token });
  expect(readStatus(store, "mail")!.state).toBe("ok");
  await storedWorks(user, store);
});
