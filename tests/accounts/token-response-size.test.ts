/**
 * MAX_TOKEN_RESPONSE_BYTES (src/accounts/oauth.ts, docs/accounts.md): a token endpoint's response is read up to that
 * many bytes and no further; one byte more is a failed request, retried like an unreachable endpoint, with nothing
 * of the body in the error. The provider cannot be reached from the tests: an in-process fetch answers.
 */
import { expect, test } from "bun:test";
import {
  endpointFor,
  MAX_TOKEN_RESPONSE_BYTES,
  refreshGrant,
  TokenEndpointUnavailable,
} from "../../src/accounts/oauth.ts";
import { type OAuth2AccountConfig, parseConfig } from "../../src/config/index.ts";

const ACCOUNT = parseConfig(
  [
    "[accounts.main]",
    'username = "me@example.test"',
    'auth = "oauth2"',
    'provider = "microsoft"',
    'tenant = "contoso.onmicrosoft.com"',
    'client_id = "id"',
  ].join("\n"),
  "/tmp/mailgator.toml",
).accounts["main"] as OAuth2AccountConfig;

/** A token response of exactly `size` bytes: valid JSON, padded with spaces before its closing brace. */
function tokenBody(size: number): string {
  const json = JSON.stringify({ token_type: "Bearer", expires_in: 3600, access_token: "at", refresh_token: "rt" });
  return `${json.slice(0, -1)}${" ".repeat(size - json.length)}}`;
}

/** What refreshGrant makes of a response of `size` bytes, sent in chunks of 16 KiB; and how much was sent. */
async function refreshWith(size: number): Promise<{ result: unknown; sent: number }> {
  const body = new TextEncoder().encode(tokenBody(size));
  let sent = 0;
  const fakeFetch = (async () =>
    new Response(
      new ReadableStream({
        pull(controller) {
          if (sent >= body.length) return controller.close();
          const chunk = body.subarray(sent, sent + 16 * 1024);
          sent += chunk.length;
          controller.enqueue(chunk);
        },
      }),
      { headers: { "content-type": "application/json", "cache-control": "no-store" } },
    )) as unknown as typeof fetch;
  const result = await refreshGrant(endpointFor(ACCOUNT.oauth2, fakeFetch), "rt-0").catch((e: unknown) => e);
  return { result, sent };
}

test(`a token response of MAX_TOKEN_RESPONSE_BYTES (${MAX_TOKEN_RESPONSE_BYTES}) is read and used`, async () => {
  const { result } = await refreshWith(MAX_TOKEN_RESPONSE_BYTES);
  expect(result).toMatchObject({ accessToken: "at", refreshToken: "rt" });
});

test("one byte more: a failed request to retry, the rest of the body not read, no body in the message", async () => {
  const { result, sent } = await refreshWith(MAX_TOKEN_RESPONSE_BYTES + 1);
  expect(result).toBeInstanceOf(TokenEndpointUnavailable);
  expect((result as Error).message).toContain(`passed ${MAX_TOKEN_RESPONSE_BYTES} bytes`);
  expect((result as Error).message).not.toContain("access_token");
  // And a far longer one is not read to its end.
  const long = await refreshWith(16 * 1024 * 1024);
  expect(long.result).toBeInstanceOf(TokenEndpointUnavailable);
  expect(long.sent).toBeLessThanOrEqual(MAX_TOKEN_RESPONSE_BYTES + 2 * 16 * 1024);
  expect(sent).toBeLessThanOrEqual(MAX_TOKEN_RESPONSE_BYTES + 16 * 1024);
});
