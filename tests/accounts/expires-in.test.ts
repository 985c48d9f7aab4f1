// expires_in of a token response (RFC 6749 §5.1) at its bounds: 0 is an access token already expiring (used for the
// login that waited for it, refreshed at the next), a lifetime past MAX_ACCESS_TOKEN_LIFETIME_S is taken as that one
// (docs/accounts.md "Staying logged in").
import { expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { refreshAt } from "../../src/accounts/credentials.ts";
import { AccountCredentials } from "../../src/accounts/index.ts";
import {
  DEFAULT_ACCESS_TOKEN_LIFETIME_S,
  grantOf,
  MAX_ACCESS_TOKEN_LIFETIME_S,
  type oauth,
} from "../../src/accounts/oauth.ts";
import { readStatus, readTokens, saveTokens } from "../../src/accounts/records.ts";
import { loadConfig, type OAuth2AccountConfig } from "../../src/config/index.ts";
import { SealedStore } from "../../src/state/store.ts";
import { authorizationCodeFlow, control, oauthServeToml, storeServeTokens } from "../fixtures/oauth.ts";
import { tempRoot } from "../fixtures/temp.ts";
import { createMailbox } from "../fixtures/upstreams.ts";

setDefaultTimeout(60_000);

const TMP = tempRoot("mg-expires-in-");
const quiet = { error: () => {}, warn: () => {}, info: () => {} };

function response(expiresIn: number | undefined): oauth.TokenEndpointResponse {
  return {
    access_token: "at",
    token_type: "bearer",
    ...(expiresIn === undefined ? {} : { expires_in: expiresIn }),
  } as oauth.TokenEndpointResponse;
}

test("expires_in: 0 and 1 as given; at MAX_ACCESS_TOKEN_LIFETIME_S as given, one past and 1e308 taken as it", () => {
  expect(MAX_ACCESS_TOKEN_LIFETIME_S).toBe(86_400);
  expect(grantOf(response(0)).expiresIn).toBe(0);
  expect(grantOf(response(1)).expiresIn).toBe(1);
  expect(grantOf(response(MAX_ACCESS_TOKEN_LIFETIME_S)).expiresIn).toBe(MAX_ACCESS_TOKEN_LIFETIME_S);
  expect(grantOf(response(MAX_ACCESS_TOKEN_LIFETIME_S + 1)).expiresIn).toBe(MAX_ACCESS_TOKEN_LIFETIME_S);
  expect(grantOf(response(1e308)).expiresIn).toBe(MAX_ACCESS_TOKEN_LIFETIME_S);
  expect(grantOf(response(undefined)).expiresIn).toBe(DEFAULT_ACCESS_TOKEN_LIFETIME_S);
});

/** A config of the local server's user `user`, logged in, and its state database. */
async function account(user: string) {
  const dir = mkdtempSync(join(TMP, "acct-"));
  const path = join(dir, "mailgator.toml");
  writeFileSync(path, oauthServeToml(dir, "agent-token-expires-in-0123456789", user));
  const login = await authorizationCodeFlow({ user });
  expect(login.status).toBe(200);
  storeServeTokens(dir, login);
  const config = loadConfig(path);
  const store = SealedStore.open(config.state.path, { secretsFile: config.state.secretsFile, env: {}, create: false })!;
  return { config, store };
}

async function refreshCount(user: string): Promise<number> {
  const counters = (await control("counters", {}, "GET")).body as {
    tokenByUser: Record<string, Record<string, number>>;
  };
  return counters.tokenByUser[user]?.["refresh_token"] ?? 0;
}

test("expires_in 0 (the local server's lifetime 0): used for the login that waited, refreshed next time", async () => {
  const user = (await createMailbox()).user;
  await control("lifetime", { user, seconds: "0" });
  const { config, store } = await account(user);
  try {
    const c = new AccountCredentials({ config, store, log: quiet });
    const first = (await c.credentialFor("mail")) as { accessToken: string };
    expect(await refreshCount(user)).toBe(1);
    const second = (await c.credentialFor("mail")) as { accessToken: string };
    expect(second.accessToken).not.toBe(first.accessToken);
    expect(await refreshCount(user)).toBe(2);
    const stored = readTokens(store, "mail")!;
    expect(stored.accessToken).toBe(second.accessToken);
    expect(stored.expiresAt).toBe(stored.obtainedAt);
  } finally {
    store.close();
  }
});

test("expires_in 1e308: stored with an expiry MAX_ACCESS_TOKEN_LIFETIME_S away, refreshed ahead of it", async () => {
  const user = (await createMailbox()).user;
  const { config, store } = await account(user);
  try {
    const settings = (config.accounts["mail"] as OAuth2AccountConfig).oauth2;
    let now = Date.now();
    const start = now;
    // The stored login is expired: the first request refreshes.
    saveTokens(
      store,
      "mail",
      {
        ...readTokens(store, "mail")!,
        expiresAt: now - 1000,
        obtainedAt: now - 3_601_000,
        clientId: settings.clientId,
        tokenUrl: settings.tokenUrl,
      },
      now,
    );
    let issued = 0;
    const huge = (async () => {
      issued++;
      return Response.json(
        { access_token: `at-${issued}`, token_type: "Bearer", expires_in: 1e308 },
        { headers: { "cache-control": "no-store" } },
      );
    }) as unknown as typeof fetch;
    const c = new AccountCredentials({ config, store, fetch: huge, now: () => now, log: quiet });
    expect((await c.credentialFor("mail")) as object).toMatchObject({ accessToken: "at-1" });
    const stored = readTokens(store, "mail")!;
    expect(stored.expiresAt).toBe(start + MAX_ACCESS_TOKEN_LIFETIME_S * 1000);
    expect(readStatus(store, "mail")!.expiresAt).toBe(start + MAX_ACCESS_TOKEN_LIFETIME_S * 1000);
    // Before the refresh point: the cached token, no request.
    now = refreshAt(start, stored.expiresAt!) - 1;
    expect((await c.credentialFor("mail")) as object).toMatchObject({ accessToken: "at-1" });
    expect(issued).toBe(1);
    // At it: still handed out, and refreshed behind.
    now += 1;
    expect((await c.credentialFor("mail")) as object).toMatchObject({ accessToken: "at-1" });
    await c.settled();
    expect(issued).toBe(2);
    expect(readTokens(store, "mail")!.accessToken).toBe("at-2");
  } finally {
    store.close();
  }
});
