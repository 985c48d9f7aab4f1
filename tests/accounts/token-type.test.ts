// A token response whose access token cannot be sent as a Bearer token (RFC 6750): a token_type other than Bearer
// (RFC 6749 §7.1: a client must not use a token of a type it does not understand; a DPoP-bound token is refused when
// presented as Bearer, RFC 9449 §7.1), or a value that is no b64token and could not go into XOAUTH2 or OAUTHBEARER
// (src/net/sasl.ts). Such a response is a failed request, retried with backoff; its access token is never handed
// out, and a refresh token it rotated is kept, since the provider may already have retired the one sent.
import { expect, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { join } from "node:path";
import { AccountCredentials, AccountTemporarilyUnavailable } from "../../src/accounts/index.ts";
import { endpointFor, refreshGrant, TokenEndpointUnavailable } from "../../src/accounts/oauth.ts";
import { readStatus, readTokens, saveTokens } from "../../src/accounts/records.ts";
import type { OAuth2AccountConfig } from "../../src/config/index.ts";
import { tempRoot } from "../fixtures/temp.ts";
import { microsoftAccount } from "./helpers.ts";

const TMP = tempRoot("mg-token-type-");
const TOKEN_URL = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token";
const quiet = { error: () => {}, warn: () => {}, info: () => {} };

function setup() {
  const { config, store } = microsoftAccount(mkdtempSync(join(TMP, "t-")));
  return { config, store, account: config.accounts["work"] as OAuth2AccountConfig };
}

/** A fetch answering each token request with the next body; `sent` has the refresh tokens it was sent. */
function answers(bodies: Record<string, unknown>[]) {
  const sent: (string | null)[] = [];
  const impl = (async (input: string | URL | Request, init?: RequestInit) => {
    const form = new URLSearchParams(await new Request(input as string, init).text());
    sent.push(form.get("refresh_token"));
    const body = bodies.shift();
    if (body === undefined) throw new Error("unexpected token request");
    return Response.json(body, { headers: { "cache-control": "no-store" } });
  }) as typeof fetch;
  return { fetch: impl, sent };
}

const bearer = (access: string, refresh: string) => ({
  token_type: "Bearer",
  expires_in: 3600,
  access_token: access,
  refresh_token: refresh,
});

for (const [what, body] of [
  ["token_type DPoP", { ...bearer("at-dpop", "rt-2"), token_type: "DPoP" }],
  ["an access token with a space and a control character", bearer("at 2\u0001user=other", "rt-2")],
] as const) {
  test(`${what}: not handed out, retried with backoff, the rotated refresh token kept and used next`, async () => {
    const { config, store, account } = setup();
    let now = 1_700_000_000_000;
    saveTokens(
      store,
      "work",
      {
        refreshToken: "rt-1",
        accessToken: null,
        expiresAt: null,
        obtainedAt: now,
        clientId: account.oauth2.clientId,
        tokenUrl: TOKEN_URL,
      },
      now,
    );
    const fake = answers([body, bearer("at-3", "rt-3")]);
    const c = new AccountCredentials({ config, store, fetch: fake.fetch, now: () => now, log: quiet });
    const error = await c.credentialFor("work").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AccountTemporarilyUnavailable);
    expect((error as Error).message).not.toContain(body.access_token);
    expect(readStatus(store, "work")!.state).toBe("retrying");
    expect(readStatus(store, "work")!.lastError).not.toContain(body.access_token);
    // The provider may have retired rt-1 when it issued rt-2: rt-2 is what is stored, and what is sent next.
    expect(readTokens(store, "work")).toMatchObject({ refreshToken: "rt-2", accessToken: null });
    await expect(c.credentialFor("work")).rejects.toBeInstanceOf(AccountTemporarilyUnavailable); // backing off
    now += 1_000;
    expect((await c.credentialFor("work")) as object).toMatchObject({ accessToken: "at-3" });
    expect(fake.sent).toEqual(["rt-1", "rt-2"]);
    expect(readTokens(store, "work")).toMatchObject({ refreshToken: "rt-3", accessToken: "at-3" });
  });
}

test("refreshGrant: a token_type other than Bearer is a failed request naming the type, never the token", async () => {
  const { account } = setup();
  for (const type of ["DPoP", "mac", "N_A"]) {
    const fake = answers([{ ...bearer("at-secret", "rt-secret"), token_type: type }]);
    const e = await refreshGrant(endpointFor(account.oauth2, fake.fetch), "rt-1").catch((x: unknown) => x);
    expect(e).toBeInstanceOf(TokenEndpointUnavailable);
    expect((e as Error).message).toContain("Bearer");
    expect((e as Error).message).not.toContain("secret");
    expect((e as Error).message).not.toContain("unreachable");
  }
});

test("ahead of expiry: the current access token stays in use beside the rotated refresh token", async () => {
  const { config, store, account } = setup();
  let now = 1_700_000_000_000;
  const record = { clientId: account.oauth2.clientId, tokenUrl: TOKEN_URL, obtainedAt: now };
  saveTokens(store, "work", { ...record, refreshToken: "rt-1", accessToken: "at-1", expiresAt: now + 3600_000 }, now);
  const fake = answers([{ ...bearer("at-dpop", "rt-2"), token_type: "DPoP" }]);
  const c = new AccountCredentials({ config, store, fetch: fake.fetch, now: () => now, log: quiet });
  now += 3000_000; // past the refresh point: at-1 is handed out while the refresh runs behind
  expect((await c.credentialFor("work")) as object).toMatchObject({ accessToken: "at-1" });
  await c.settled();
  expect(fake.sent).toEqual(["rt-1"]);
  expect(readTokens(store, "work")).toMatchObject({ refreshToken: "rt-2", accessToken: "at-1" });
  expect((await c.credentialFor("work")) as object).toMatchObject({ accessToken: "at-1" }); // backing off, still good
});
