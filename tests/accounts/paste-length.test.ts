/**
 * `mailgator account login --paste` takes a pasted line of at most MAX_PASTE_BYTES (src/accounts/login.ts,
 * docs/accounts.md "Logging in"): a redirect of exactly that length completes the login, one octet more is refused
 * before anything is exchanged. The token endpoint is an in-process fetch that counts its requests.
 */
import { expect, test } from "bun:test";
import { LoginError, loginPaste, MAX_PASTE_BYTES } from "../../src/accounts/login.ts";
import { type OAuth2AccountConfig, parseConfig } from "../../src/config/index.ts";

const ACCOUNT = parseConfig(
  [
    "[accounts.main]",
    'username = "me@example.test"',
    'auth = "oauth2"',
    'provider = "custom"',
    'client_id = "id"',
    'authorize_url = "https://auth.example.test/authorize"',
    'token_url = "https://auth.example.test/token"',
    'scopes = ["mail"]',
  ].join("\n"),
  "/tmp/mailgator.toml",
).accounts["main"] as OAuth2AccountConfig;

/** Pastes this login's redirect padded to `length` characters; the outcome and the token requests made. */
async function paste(length: number): Promise<{ result: unknown; tokenRequests: number }> {
  let printed = "";
  let tokenRequests = 0;
  const fakeFetch = (async () => {
    tokenRequests++;
    return Response.json(
      { access_token: "at", token_type: "Bearer", expires_in: 3600, refresh_token: "rt" },
      { headers: { "cache-control": "no-store" } },
    );
  }) as unknown as typeof fetch;
  const result = await loginPaste(ACCOUNT, {
    say: (text) => {
      printed += `${text}\n`;
    },
    readLine: async () => {
      const state = /[?&]state=([^&\s]+)/.exec(printed)![1]!;
      const url = `http://127.0.0.1/callback?state=${state}&code=the-code&pad=`;
      const line = `${url}${"x".repeat(length - url.length)}`;
      expect(line.length).toBe(length);
      return line;
    },
    fetch: fakeFetch,
  }).catch((e: unknown) => e);
  return { result, tokenRequests };
}

test(`a pasted redirect of MAX_PASTE_BYTES (${MAX_PASTE_BYTES}) is taken; one more is refused`, async () => {
  const exact = await paste(MAX_PASTE_BYTES);
  expect(exact.result).toMatchObject({ accessToken: "at", refreshToken: "rt" });
  expect(exact.tokenRequests).toBe(1);
  const over = await paste(MAX_PASTE_BYTES + 1);
  expect(over.result).toBeInstanceOf(LoginError);
  expect((over.result as Error).message).toBe("the pasted text is too long to be the redirect URL");
  expect(over.tokenRequests).toBe(0);
});
