// A token response the library refuses (a negative expires_in, a scope that is no string: RFC 6749 §5.1) that
// carries a rotated refresh token: the provider may already have retired the one it was sent, so the new one is kept,
// as for an access token that cannot be used (docs/accounts.md "Staying logged in").
import { expect, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { join } from "node:path";
import { AccountCredentials, AccountTemporarilyUnavailable } from "../../src/accounts/index.ts";
import { readStatus, readTokens, saveTokens } from "../../src/accounts/records.ts";
import type { OAuth2AccountConfig } from "../../src/config/index.ts";
import { tempRoot } from "../fixtures/temp.ts";
import { microsoftAccount } from "./helpers.ts";

const TMP = tempRoot("mg-rotated-on-refusal-");
const TOKEN_URL = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token";

const REFUSED: [string, Record<string, unknown>][] = [
  ["a negative expires_in", { expires_in: -1 }],
  ["a scope that is no string", { expires_in: 3600, scope: 42 }],
];

for (const [why, refused] of REFUSED)
  test(`a response refused for ${why} keeps its rotated refresh token; the next request sends it`, async () => {
    const { config, store } = microsoftAccount(mkdtempSync(join(TMP, "ms-")));
    const account = config.accounts["work"] as OAuth2AccountConfig;
    let now = 1_700_000_000_000;
    saveTokens(
      store,
      "work",
      {
        refreshToken: "0.rt-1",
        accessToken: "at-1",
        expiresAt: now + 3600_000,
        obtainedAt: now,
        clientId: account.oauth2.clientId,
        tokenUrl: TOKEN_URL,
      },
      now,
    );
    const sent: string[] = [];
    const answers = [
      { token_type: "Bearer", access_token: "at-2", refresh_token: "0.rt-2", ...refused },
      { token_type: "Bearer", access_token: "at-3", refresh_token: "0.rt-3", expires_in: 3600 },
    ];
    const fetchImpl = (async (input: string | URL | Request, init?: RequestInit) => {
      const form = new URLSearchParams(await new Request(input as string, init).text());
      sent.push(form.get("refresh_token")!);
      return Response.json(answers.shift(), { headers: { "cache-control": "no-store" } });
    }) as typeof fetch;
    const quiet = { error: () => {}, warn: () => {}, info: () => {} };
    const c = new AccountCredentials({ config, store, fetch: fetchImpl, now: () => now, log: quiet });
    now += 3700_000; // expired: the request waits for the refresh
    await expect(c.credentialFor("work")).rejects.toBeInstanceOf(AccountTemporarilyUnavailable);
    expect(readTokens(store, "work")!.refreshToken).toBe("0.rt-2");
    now += 2_000; // past the first backoff
    expect((await c.credentialFor("work")) as object).toMatchObject({ accessToken: "at-3" });
    expect(sent).toEqual(["0.rt-1", "0.rt-2"]);
    expect(readStatus(store, "work")!.state).toBe("ok");
    store.close();
  });
