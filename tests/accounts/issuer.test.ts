/**
 * The `iss` of an authorization redirect (RFC 9207; src/accounts/login.ts checkIssuer, docs/accounts.md): Google names
 * https://accounts.google.com, not its token URL's origin, and a login with it must complete; an issuer other than the
 * provider's is refused before the code is exchanged. The providers' own endpoints cannot be reached from the tests:
 * the token request goes to an in-process fetch that answers as a token endpoint and counts the requests.
 */
import { expect, test } from "bun:test";
import { LoginError, loginPaste } from "../../src/accounts/login.ts";
import { issuerOf } from "../../src/accounts/providers.ts";
import { type OAuth2AccountConfig, parseConfig } from "../../src/config/index.ts";

function account(lines: readonly string[]): OAuth2AccountConfig {
  const config = parseConfig(
    ["[accounts.main]", 'username = "me@example.test"', 'auth = "oauth2"', 'client_id = "id"', ...lines].join("\n"),
    "/tmp/mailgator.toml",
  );
  return config.accounts["main"] as OAuth2AccountConfig;
}

const GOOGLE = account(['provider = "google"']);
const TENANT = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
const MICROSOFT_TENANT = account(['provider = "microsoft"', `tenant = "${TENANT}"`]);
const MICROSOFT_COMMON = account(['provider = "microsoft"']);

/** Logs in with `--paste`, pasting the redirect built from the printed URL's state plus `extra`; token requests. */
async function pasteLogin(a: OAuth2AccountConfig, extra: string): Promise<{ result: unknown; tokenRequests: number }> {
  let printed = "";
  let tokenRequests = 0;
  const fakeFetch = (async () => {
    tokenRequests++;
    return Response.json(
      { access_token: "at", token_type: "Bearer", expires_in: 3600, refresh_token: "rt" },
      { headers: { "cache-control": "no-store" } },
    );
  }) as unknown as typeof fetch;
  const result = await loginPaste(a, {
    say: (text) => {
      printed += `${text}\n`;
    },
    readLine: async () => {
      const state = /[?&]state=([^&\s]+)/.exec(printed)![1]!;
      return `http://127.0.0.1/callback?state=${state}&code=the-code${extra}`;
    },
    fetch: fakeFetch,
  }).catch((e: unknown) => e);
  return { result, tokenRequests };
}

test("issuers known: Google's, a Microsoft tenant's by its id; none for shared tenants or custom providers", () => {
  expect(issuerOf("google", null)).toBe("https://accounts.google.com");
  expect(issuerOf("microsoft", TENANT.toUpperCase())).toBe(`https://login.microsoftonline.com/${TENANT}/v2.0`);
  expect(issuerOf("microsoft", "common")).toBeNull();
  expect(issuerOf("microsoft", "contoso.onmicrosoft.com")).toBeNull();
  expect(issuerOf("custom", null)).toBeNull();
});

test("Google: a redirect naming https://accounts.google.com completes the login; without iss too", async () => {
  for (const extra of ["&iss=https%3A%2F%2Faccounts.google.com&scope=https%3A%2F%2Fmail.google.com%2F", ""]) {
    const { result, tokenRequests } = await pasteLogin(GOOGLE, extra);
    expect(result).toMatchObject({ accessToken: "at", refreshToken: "rt" });
    expect(tokenRequests).toBe(1);
  }
});

test("an issuer other than the provider's, or two of them, is refused before the code is exchanged", async () => {
  const cases: [OAuth2AccountConfig, string][] = [
    [GOOGLE, "&iss=https%3A%2F%2Foauth2.googleapis.com"],
    [GOOGLE, "&iss=https%3A%2F%2Fevil.example"],
    [GOOGLE, "&iss=https%3A%2F%2Faccounts.google.com&iss=https%3A%2F%2Fevil.example"],
    [MICROSOFT_TENANT, "&iss=https%3A%2F%2Flogin.microsoftonline.com%2Fcommon%2Fv2.0"],
  ];
  for (const [a, extra] of cases) {
    const { result, tokenRequests } = await pasteLogin(a, extra);
    expect(result).toBeInstanceOf(LoginError);
    expect((result as Error).message).toContain("is not this login's answer");
    expect(tokenRequests).toBe(0);
  }
});

test("Microsoft: the tenant's own issuer is taken; a shared tenant's redirect is not checked for iss", async () => {
  const own = await pasteLogin(
    MICROSOFT_TENANT,
    `&iss=${encodeURIComponent(`https://login.microsoftonline.com/${TENANT}/v2.0`)}`,
  );
  expect(own.tokenRequests).toBe(1);
  const common = await pasteLogin(
    MICROSOFT_COMMON,
    `&iss=${encodeURIComponent("https://login.microsoftonline.com/any/v2.0")}`,
  );
  expect(common.tokenRequests).toBe(1);
});
