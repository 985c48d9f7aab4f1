// A reload that changes an OAuth2 account's settings while its refresh is out (docs/accounts.md "Staying logged in",
// docs/operations.md "Reload"), against the local authorization server with refresh-token rotation and reuse
// revocation on (a retired refresh token presented again revokes the whole grant, as Okta and Auth0 do).
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { AccountCredentials, type Credential } from "../../src/accounts/index.ts";
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
  until,
} from "../fixtures/oauth.ts";
import { tempRoot } from "../fixtures/temp.ts";
import { createMailbox } from "../fixtures/upstreams.ts";

setDefaultTimeout(60_000);

const TMP = tempRoot("mg-reload-refresh-");
const open: SealedStore[] = [];
afterAll(() => {
  for (const store of open) store.close();
});

const quiet = { error: () => {}, warn: () => {}, info: () => {} };
const AGENT_TOKEN = "agent-token-reload-refresh-0123456789";

test("the same client with a new device_url: the refresh out is kept and used, no token sent twice", async () => {
  const user = (await createMailbox()).user;
  await control("rotation", { user, on: "true" });
  await control("reuse", { user, on: "true" });
  // The provider holds its answer back after rotating: the reload comes while the refresh is out.
  await control("delay", { user, ms: "1500" });
  const dir = mkdtempSync(join(TMP, "account-"));
  const path = join(dir, "mailgator.toml");
  writeFileSync(path, oauthServeToml(dir, AGENT_TOKEN, user));
  const config = loadConfig(path);
  const login = await authorizationCodeFlow({ user });
  expect(login.status).toBe(200);
  const store = SealedStore.open(config.state.path, {
    secretsFile: config.state.secretsFile,
    env: {},
    create: true,
  })!;
  open.push(store);
  // Logged in an hour ago: the access token has expired, so the first login waits for a refresh.
  const server = oauthServer();
  const hourAgo = Date.now() - 3600_000;
  const { clientId, tokenUrl } = server;
  const refreshToken = login.refresh_token as string;
  const accessToken = login.access_token as string;
  const old = { refreshToken, accessToken, expiresAt: hourAgo + 1000, obtainedAt: hourAgo - 2600_000 };
  saveTokens(store, "mail", { ...old, clientId, tokenUrl }, hourAgo);
  const c = new AccountCredentials({ config, store, log: quiet });
  const before = await refreshCounters(user);
  const first = c.credentialFor("mail").then(
    (credential) => credential,
    (error: Error) => error,
  );
  await until(async () => (await refreshCounters(user)).refreshes > before.refreshes);
  // The refresh has reached the provider, which has retired the stored refresh token. A reload adds a device_url:
  // another setting, the same client and token endpoint, so the same grant.
  writeFileSync(path, oauthServeToml(dir, AGENT_TOKEN, user, { extra: `device_url = "${server.deviceUrl}"` }));
  c.prepareReload(loadConfig(path)).commit();
  // The refresh's answer is the account's new pair: used for the login that waited, and for the next one.
  const got = await first;
  expect(got).not.toBeInstanceOf(Error);
  expect(await c.credentialFor("mail")).toEqual(got as Credential);
  const after = await refreshCounters(user);
  expect(after.refreshes - before.refreshes).toBe(1);
  expect(after.reuses).toBe(before.reuses);
  expect(readStatus(store, "mail")!.state).toBe("ok");
  // The grant is alive: the stored refresh token is the newest of its chain, and works.
  const stored = readTokens(store, "mail")!;
  expect(stored.refreshToken).not.toBe(refreshToken);
  await control("delay", { user, ms: "0" });
  expect((await refresh(stored.refreshToken!)).status).toBe(200);
});
