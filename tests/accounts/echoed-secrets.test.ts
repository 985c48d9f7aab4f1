// A token endpoint that echoes what it refused in its error_description (RFC 6749 §5.2 lets it write anything
// there): the refresh token, the client secret, the authorization code or device code it was sent. The description
// goes into the logs, the audit row, `account status` and the login's error (docs/accounts.md: "never a token"), so
// those secrets are replaced in it first.
import { expect, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { join } from "node:path";
import { AccountCredentials, AccountNeedsReauthorization } from "../../src/accounts/index.ts";
import { LoginError, loginDevice } from "../../src/accounts/login.ts";
import { authorizationCodeGrant, endpointFor, oauth } from "../../src/accounts/oauth.ts";
import { readStatus, saveTokens } from "../../src/accounts/records.ts";
import type { AuditEvent } from "../../src/audit/index.ts";
import { type OAuth2AccountConfig, parseConfig } from "../../src/config/index.ts";
import { SealedStore } from "../../src/state/store.ts";
import { tempRoot } from "../fixtures/temp.ts";

const TMP = tempRoot("mg-echo-");
const TOKEN_URL = "https://idp.example.test/token";
const REFRESH = "rt-Secret-0001";
const CLIENT_SECRET = "cs-Secret-0002";
const CODE = "code-Secret-0003";
const VERIFIER = "verifier-Secret-0004-abcdefghijklmnopqrstuvwxyz0123456789";
const DEVICE_CODE = "dc-Secret-0005";
const SECRETS = [REFRESH, CLIENT_SECRET, CODE, VERIFIER, DEVICE_CODE];

function setup() {
  const dir = mkdtempSync(join(TMP, "t-"));
  const config = parseConfig(
    [
      "[accounts.main]",
      'username = "me@example.test"',
      'auth = "oauth2"',
      'provider = "custom"',
      'client_id = "client-1"',
      `client_secret = "${CLIENT_SECRET}"`,
      'authorize_url = "https://idp.example.test/authorize"',
      `token_url = "${TOKEN_URL}"`,
      'device_url = "https://idp.example.test/device"',
      'scopes = ["mail"]',
      "[audit]",
      'path = "audit.db"',
    ].join("\n"),
    join(dir, "m.toml"),
  );
  const store = SealedStore.open(config.state.path, { secretsFile: config.state.secretsFile, env: {}, create: true })!;
  return { config, store, account: config.accounts["main"] as OAuth2AccountConfig };
}

/** Answers every request with `error`, its description echoing every secret the request carried. */
function echoing(error: string, status: number) {
  return (async (input: string | URL | Request, init?: RequestInit) => {
    const form = new URLSearchParams(await new Request(input as string, init).text());
    if (form.get("grant_type") === null)
      return Response.json({
        device_code: DEVICE_CODE,
        user_code: "ABCD",
        verification_uri: "https://x",
        interval: 1,
        expires_in: 60,
      });
    const echoed = [...form.entries()].map(([k, v]) => `${k}=${v}`).join(" ");
    return Response.json({ error, error_description: `refused: ${echoed}` }, { status });
  }) as typeof fetch;
}

function expectNoSecret(text: string): void {
  for (const secret of SECRETS) expect(text).not.toContain(secret);
  expect(text).toContain("[redacted]");
}

for (const [error, status] of [
  ["invalid_request", 400],
  ["invalid_client", 401],
  ["invalid_grant", 400],
] as const) {
  test(`refresh answered ${error} (HTTP ${status}) echoing the refresh token and client secret`, async () => {
    const { config, store, account } = setup();
    const now = 1_700_000_000_000;
    const tokens = { clientId: account.oauth2.clientId, tokenUrl: TOKEN_URL, obtainedAt: now, expiresAt: null };
    saveTokens(store, "main", { ...tokens, refreshToken: REFRESH, accessToken: null }, now);
    const logged: string[] = [];
    const audited: AuditEvent[] = [];
    const log = { error: (m: string) => logged.push(m), warn: (m: string) => logged.push(m), info: () => {} };
    const c = new AccountCredentials({
      config,
      store,
      fetch: echoing(error, status),
      now: () => now,
      log,
      audit: (e) => audited.push(e),
    });
    const e = (await c.credentialFor("main").catch((x: unknown) => x)) as Error;
    if (error === "invalid_grant") expect(e).toBeInstanceOf(AccountNeedsReauthorization);
    expectNoSecret(e.message);
    expectNoSecret(readStatus(store, "main")!.lastError!);
    expectNoSecret(logged.join("\n"));
    for (const secret of SECRETS) expect(JSON.stringify(audited)).not.toContain(secret);
  });
}

test("login: the code exchange and the device flow, refused with the code and secrets echoed", async () => {
  const { account } = setup();
  const ep = endpointFor(account.oauth2, echoing("invalid_grant", 400));
  const redirected = new URL(`http://127.0.0.1/callback?code=${CODE}&state=s-1`);
  const callback = oauth.validateAuthResponse(ep.as, ep.client, redirected, "s-1");
  const exchanged = (await authorizationCodeGrant(ep, callback, "http://127.0.0.1/callback", VERIFIER).catch(
    (x: unknown) => x,
  )) as Error;
  expectNoSecret(exchanged.message);
  const device = (await loginDevice(account, {
    say: () => {},
    fetch: echoing("access_denied", 400),
    timeoutMs: 30_000,
  }).catch((x: unknown) => x)) as Error;
  expect(device).toBeInstanceOf(LoginError);
  expectNoSecret(device.message);
});

// What the request carried is the form-encoded body (application/x-www-form-urlencoded): a Google refresh token or
// authorization code has "/" in it ("1//0g...", "4/0A..."), a Microsoft client secret "~", each sent percent-encoded.
// A provider (or a gateway before it) that echoes the raw body puts the encoded form in its description.
const ENCODED_REFRESH = "1//0gRefreshSecret0006";
const ENCODED_CLIENT_SECRET = "cs~Secret+0007/x";

/** Answers every request with `error`, its description echoing the raw request body. */
function echoingRaw(error: string, status: number) {
  return (async (input: string | URL | Request, init?: RequestInit) => {
    const body = await new Request(input as string, init).text();
    return Response.json({ error, error_description: `refused: ${body}` }, { status });
  }) as typeof fetch;
}

test("refresh refused with the raw, percent-encoded request body echoed: nothing of the secrets shows", async () => {
  const dir = mkdtempSync(join(TMP, "t-"));
  const config = parseConfig(
    [
      "[accounts.main]",
      'username = "me@example.test"',
      'auth = "oauth2"',
      'provider = "custom"',
      'client_id = "client-1"',
      `client_secret = "${ENCODED_CLIENT_SECRET}"`,
      'authorize_url = "https://idp.example.test/authorize"',
      `token_url = "${TOKEN_URL}"`,
      'scopes = ["mail"]',
      "[audit]",
      'path = "audit.db"',
    ].join("\n"),
    join(dir, "m.toml"),
  );
  const store = SealedStore.open(config.state.path, { secretsFile: config.state.secretsFile, env: {}, create: true })!;
  const now = 1_700_000_000_000;
  const tokens = { clientId: "client-1", tokenUrl: TOKEN_URL, obtainedAt: now, expiresAt: null };
  saveTokens(store, "main", { ...tokens, refreshToken: ENCODED_REFRESH, accessToken: null }, now);
  const logged: string[] = [];
  const audited: AuditEvent[] = [];
  const log = { error: (m: string) => logged.push(m), warn: (m: string) => logged.push(m), info: () => {} };
  const c = new AccountCredentials({
    config,
    store,
    fetch: echoingRaw("invalid_grant", 400),
    now: () => now,
    log,
    audit: (e) => audited.push(e),
  });
  const e = (await c.credentialFor("main").catch((x: unknown) => x)) as Error;
  expect(e).toBeInstanceOf(AccountNeedsReauthorization);
  const seen = [e.message, readStatus(store, "main")!.lastError!, logged.join("\n"), JSON.stringify(audited)];
  for (const text of seen) {
    expect(text).toContain("[redacted]");
    // Neither the secret nor its encoded form, nor the part of it that encoding leaves as it is.
    for (const secret of ["0gRefreshSecret0006", "Secret+0007", "Secret%2B0007"]) expect(text).not.toContain(secret);
  }
  store.close();
});
