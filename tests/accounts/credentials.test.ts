// AccountCredentials against token endpoint transcripts in the shape Microsoft's and Google's endpoints answer
// (token values replaced): what a local server cannot show, such as Microsoft rotating the refresh token on every
// use with its AADSTS error bodies, and the refresh schedule's arithmetic.
import { describe, expect, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { join } from "node:path";
import { BACKOFF_MAX_MS, backoffMs, refreshAt, usableUntil } from "../../src/accounts/credentials.ts";
import {
  AccountCredentials,
  AccountNeedsReauthorization,
  AccountTemporarilyUnavailable,
} from "../../src/accounts/index.ts";
import { DEVICE_MAX_INTERVAL_S, DEVICE_MIN_INTERVAL_S, loginDevice } from "../../src/accounts/login.ts";
import { readStatus, readTokens, saveTokens, writeStatus } from "../../src/accounts/records.ts";
import type { AuditEvent } from "../../src/audit/index.ts";
import { type OAuth2AccountConfig, parseConfig } from "../../src/config/index.ts";
import { tempRoot } from "../fixtures/temp.ts";
import { microsoftAccount } from "./helpers.ts";

/** Every folder this file makes is in here, removed after its tests. */
const TMP = tempRoot("mg-credentials-");

const TENANT = "contoso.onmicrosoft.com";
const TOKEN_URL = `https://login.microsoftonline.com/${TENANT}/oauth2/v2.0/token`;

interface Exchange {
  readonly expect: Record<string, string>;
  readonly status: number;
  readonly body: Record<string, unknown>;
}

/** A fetch that replays `script` in order and checks each request's form against it. */
function replay(script: Exchange[]) {
  const sent: URLSearchParams[] = [];
  const impl = (async (input: string | URL | Request, init?: RequestInit) => {
    const request = new Request(input as string, init);
    expect(request.url).toBe(TOKEN_URL);
    const form = new URLSearchParams(await request.text());
    sent.push(form);
    const next = script.shift();
    if (next === undefined) throw new Error("unexpected token request");
    for (const [k, v] of Object.entries(next.expect)) expect(form.get(k)).toBe(v);
    return Response.json(next.body, { status: next.status, headers: { "cache-control": "no-store" } });
  }) as typeof fetch;
  return { fetch: impl, sent };
}

function microsoftSetup() {
  return microsoftAccount(mkdtempSync(join(TMP, "mg-ms-")));
}

const quiet = { error: () => {}, warn: () => {}, info: () => {} };

function msToken(access: string, refresh: string) {
  return {
    token_type: "Bearer",
    scope: "https://outlook.office.com/IMAP.AccessAsUser.All https://outlook.office.com/SMTP.Send",
    expires_in: 4328,
    ext_expires_in: 4328,
    access_token: access,
    refresh_token: refresh,
  };
}

/** A token pair as the token endpoint issued it at `now` for `account`. */
function tokens(account: OAuth2AccountConfig, now: number, refreshToken: string, accessToken: string) {
  return {
    refreshToken,
    accessToken,
    expiresAt: now + 4328_000,
    obtainedAt: now,
    clientId: account.oauth2.clientId,
    tokenUrl: TOKEN_URL,
  };
}

describe("Microsoft: a refresh token rotated on every use", () => {
  test("each refresh sends the latest refresh token and stores the new one; invalid_grant needs a login", async () => {
    const { config, store } = microsoftSetup();
    const account = config.accounts["work"] as OAuth2AccountConfig;
    let now = 1_700_000_000_000;
    saveTokens(store, "work", tokens(account, now, "0.AAAA-rt-1", "eyJ0-at-1"), now);
    const fake = replay([
      {
        expect: { grant_type: "refresh_token", refresh_token: "0.AAAA-rt-1" },
        status: 200,
        body: msToken("eyJ0-at-2", "0.AAAA-rt-2"),
      },
      {
        expect: { grant_type: "refresh_token", refresh_token: "0.AAAA-rt-2" },
        status: 200,
        body: msToken("eyJ0-at-3", "0.AAAA-rt-3"),
      },
      {
        expect: { grant_type: "refresh_token", refresh_token: "0.AAAA-rt-3" },
        status: 400,
        body: {
          error: "invalid_grant",
          error_description:
            "AADSTS50173: The provided grant has expired due to it being revoked, a fresh auth token is needed. " +
            "Trace ID: 5c1f Correlation ID: 9a2b Timestamp: 2026-11-02 10:00:00Z",
          error_codes: [50173],
          timestamp: "2026-11-02 10:00:00Z",
          trace_id: "5c1f",
          correlation_id: "9a2b",
          error_uri: `https://login.microsoftonline.com/error?code=50173`,
        },
      },
    ]);
    const audited: AuditEvent[] = [];
    const c = new AccountCredentials({
      config,
      store,
      fetch: fake.fetch,
      now: () => now,
      log: quiet,
      audit: (e) => audited.push(e),
    });
    expect(await c.credentialFor("work")).toEqual({
      kind: "oauth2",
      username: "agent@contoso.com",
      accessToken: "eyJ0-at-1",
    });
    now += 4000_000; // past the refresh point, before expiry
    // Past the refresh point the current token is still handed out while the refresh runs behind.
    expect((await c.credentialFor("work")) as object).toMatchObject({ accessToken: "eyJ0-at-1" });
    await Bun.sleep(50);
    expect(readTokens(store, "work")!.refreshToken).toBe("0.AAAA-rt-2");
    expect((await c.credentialFor("work")) as object).toMatchObject({ accessToken: "eyJ0-at-2" });
    // A new process reads the rotated token from the database.
    const restarted = new AccountCredentials({ config, store, fetch: fake.fetch, now: () => now, log: quiet });
    restarted.reportRejected("work", "eyJ0-at-2");
    expect((await restarted.credentialFor("work")) as object).toMatchObject({ accessToken: "eyJ0-at-2" });
    now += 5000_000; // expired: must refresh before answering
    expect((await restarted.credentialFor("work")) as object).toMatchObject({ accessToken: "eyJ0-at-3" });
    now += 5000_000;
    const error = await c.credentialFor("work").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AccountNeedsReauthorization);
    expect((error as Error).message).toContain("AADSTS50173");
    expect((error as Error).message).toContain("mailgator account login work");
    expect(readStatus(store, "work")!.state).toBe("needs-reauthorization");
    expect(readTokens(store, "work")!.refreshToken).toBe("0.AAAA-rt-3"); // kept, for the record; never used again
    expect(audited.length).toBe(1);
    expect(JSON.stringify(audited)).not.toContain("rt-3");
    await expect(restarted.credentialFor("work")).rejects.toBeInstanceOf(AccountNeedsReauthorization);
    expect(fake.sent.length).toBe(3);
  });

  test("429 and 5xx keep the token and back off; invalid_client is not mistaken for a revocation", async () => {
    const { config, store } = microsoftSetup();
    const account = config.accounts["work"] as OAuth2AccountConfig;
    let now = 1_700_000_000_000;
    saveTokens(
      store,
      "work",
      {
        refreshToken: "0.rt",
        accessToken: null,
        expiresAt: null,
        obtainedAt: now,
        clientId: account.oauth2.clientId,
        tokenUrl: TOKEN_URL,
      },
      now,
    );
    const fake = replay([
      { expect: {}, status: 429, body: { error: "temporarily_unavailable" } },
      { expect: {}, status: 503, body: { error: "temporarily_unavailable", error_description: "AADSTS90033" } },
      {
        expect: {},
        status: 401,
        body: { error: "invalid_client", error_description: "AADSTS7000215: Invalid client secret" },
      },
      { expect: { refresh_token: "0.rt" }, status: 200, body: msToken("at", "0.rt2") },
    ]);
    const c = new AccountCredentials({ config, store, fetch: fake.fetch, now: () => now, log: quiet });
    for (const [i, wait] of [backoffMs(1), backoffMs(2), backoffMs(3)].entries()) {
      const e = await c.credentialFor("work").catch((x: unknown) => x);
      expect(e).toBeInstanceOf(AccountTemporarilyUnavailable);
      expect((e as AccountTemporarilyUnavailable).retryAt).toBe(now + wait);
      await expect(c.credentialFor("work")).rejects.toBeInstanceOf(AccountTemporarilyUnavailable); // no request
      expect(fake.sent.length).toBe(i + 1);
      expect(readTokens(store, "work")!.refreshToken).toBe("0.rt");
      now += wait;
    }
    expect(readStatus(store, "work")!.lastError).toContain("invalid_client");
    expect((await c.credentialFor("work")) as object).toMatchObject({ accessToken: "at" });
    expect(readStatus(store, "work")!.state).toBe("ok");
  });
});

test("invalid_grant for a token another process has replaced meanwhile retries with the stored one", async () => {
  const { config, store } = microsoftSetup();
  const account = config.accounts["work"] as OAuth2AccountConfig;
  const now = 1_700_000_000_000;
  const record = (refreshToken: string) => ({
    refreshToken,
    accessToken: null,
    expiresAt: null,
    obtainedAt: now,
    clientId: account.oauth2.clientId,
    tokenUrl: TOKEN_URL,
  });
  saveTokens(store, "work", record("0.old"), now);
  const used: string[] = [];
  const fetchImpl = (async (input: string | URL | Request, init?: RequestInit) => {
    const form = new URLSearchParams(await new Request(input as string, init).text());
    used.push(form.get("refresh_token")!);
    if (form.get("refresh_token") === "0.old") {
      saveTokens(store, "work", record("0.from-login"), now); // `account login` ran while this request was out
      return Response.json({ error: "invalid_grant", error_description: "AADSTS70008" }, { status: 400 });
    }
    return Response.json(msToken("at-new", "0.next"));
  }) as typeof fetch;
  const audited: AuditEvent[] = [];
  const c = new AccountCredentials({
    config,
    store,
    fetch: fetchImpl,
    now: () => now,
    log: quiet,
    audit: (e) => audited.push(e),
  });
  expect((await c.credentialFor("work")) as object).toMatchObject({ accessToken: "at-new" });
  expect(used).toEqual(["0.old", "0.from-login"]);
  expect(readStatus(store, "work")!.state).toBe("ok");
  expect(audited).toEqual([]);
});

test("Google's device endpoint says verification_url; the login accepts it", async () => {
  const dir = mkdtempSync(join(TMP, "mg-g-"));
  const config = parseConfig(
    [
      "[accounts.g]",
      'username = "a@gmail.com"',
      'auth = "oauth2"',
      'provider = "google"',
      'client_id = "x.apps.googleusercontent.com"',
      'client_secret = "GOCSPX-x"',
    ].join("\n"),
    join(dir, "g.toml"),
  );
  const said: string[] = [];
  const fetchImpl = (async (input: string | URL | Request, init?: RequestInit) => {
    const request = new Request(input as string, init);
    if (request.url === "https://oauth2.googleapis.com/device/code")
      return Response.json({
        device_code: "AH-1Ng",
        user_code: "GQVQ-JKEC",
        verification_url: "https://www.google.com/device",
        expires_in: 1800,
        interval: 1,
      });
    const form = new URLSearchParams(await request.text());
    expect(form.get("grant_type")).toBe("urn:ietf:params:oauth:grant-type:device_code");
    return Response.json({
      access_token: "ya29.x",
      expires_in: 3599,
      refresh_token: "1//rt",
      scope: "https://mail.google.com/",
      token_type: "Bearer",
    });
  }) as typeof fetch;
  const grant = await loginDevice(config.accounts["g"] as OAuth2AccountConfig, {
    say: (t) => said.push(t),
    fetch: fetchImpl,
  });
  expect(said.join("\n")).toContain("open https://www.google.com/device and enter the code GQVQ-JKEC");
  expect(grant).toMatchObject({ refreshToken: "1//rt", expiresIn: 3599 });
});

test(`device login: an interval of 1 ms is taken as DEVICE_MIN_INTERVAL_S (${DEVICE_MIN_INTERVAL_S} s)`, async () => {
  const config = parseConfig(
    [
      "[accounts.m]",
      'username = "a@contoso.com"',
      'auth = "oauth2"',
      'provider = "microsoft"',
      `tenant = "${TENANT}"`,
      'client_id = "00000000-0000-0000-0000-00000000c11e"',
    ].join("\n"),
    join(mkdtempSync(join(TMP, "mg-dev-")), "m.toml"),
  );
  const polls: number[] = [];
  const fetchImpl = (async (input: string | URL | Request, init?: RequestInit) => {
    const request = new Request(input as string, init);
    if (request.url.endsWith("/devicecode"))
      return Response.json({
        device_code: "dc",
        user_code: "ABCD",
        verification_uri: "https://microsoft.com/devicelogin",
        expires_in: 900,
        interval: 0.001,
      });
    polls.push(performance.now());
    if (polls.length < 3) return Response.json({ error: "authorization_pending" }, { status: 400 });
    return Response.json(msToken("at", "0.rt"), { headers: { "cache-control": "no-store" } });
  }) as typeof fetch;
  const grant = await loginDevice(config.accounts["m"] as OAuth2AccountConfig, { say: () => {}, fetch: fetchImpl });
  expect(grant).toMatchObject({ accessToken: "at" });
  expect(polls).toHaveLength(3);
  // No pause shorter than the minimum (a lower bound only: a slow machine can only make the gaps longer).
  for (let i = 1; i < polls.length; i++)
    expect(polls[i]! - polls[i - 1]!).toBeGreaterThanOrEqual(DEVICE_MIN_INTERVAL_S * 1000 - 50);

  // An interval too long for a timer (past 2^31 ms) is DEVICE_MAX_INTERVAL_S: no poll at once, none in a burst.
  polls.length = 0;
  const slow = (async (input: string | URL | Request, init?: RequestInit) => {
    const request = new Request(input as string, init);
    if (!request.url.endsWith("/devicecode")) return fetchImpl(input, init);
    return Response.json({
      device_code: "dc",
      user_code: "ABCD",
      verification_uri: "https://microsoft.com/devicelogin",
      expires_in: 900,
      interval: 3_000_000,
    });
  }) as typeof fetch;
  const stopped = new AbortController();
  const login = loginDevice(config.accounts["m"] as OAuth2AccountConfig, {
    say: () => {},
    fetch: slow,
    signal: stopped.signal,
  }).catch((e: unknown) => e);
  await Bun.sleep(300);
  stopped.abort();
  expect(await login).toBeInstanceOf(Error);
  expect(polls).toEqual([]);
  expect(DEVICE_MAX_INTERVAL_S * 1000).toBeLessThan(2 ** 31);
});

describe("the refresh schedule", () => {
  test("at 80 % of an hour's token, 60 s before a 5 minute one, at half of a 4 s one", () => {
    expect(refreshAt(0, 3_600_000)).toBe(2_880_000);
    expect(refreshAt(0, 300_000)).toBe(240_000);
    expect(refreshAt(0, 4_000)).toBe(2_000);
    expect(usableUntil(0, 3_600_000)).toBe(3_595_000);
    expect(usableUntil(0, 4_000)).toBe(3_000);
  });

  test("backoff doubles to its cap", () => {
    expect([1, 2, 3, 4].map(backoffMs)).toEqual([1000, 2000, 4000, 8000]);
    expect(backoffMs(7)).toBe(BACKOFF_MAX_MS);
    expect(backoffMs(50)).toBe(BACKOFF_MAX_MS);
  });
});

describe("settled(): a short-lived process waits for the refresh it started", () => {
  test("a refresh ahead of expiry is stored before settled() resolves; nothing in flight: at once", async () => {
    const { config, store } = microsoftSetup();
    const account = config.accounts["work"] as OAuth2AccountConfig;
    let now = 1_700_000_000_000;
    saveTokens(store, "work", tokens(account, now, "0.rt-1", "at-1"), now);
    const fake = replay([{ expect: { refresh_token: "0.rt-1" }, status: 200, body: msToken("at-2", "0.rt-2") }]);
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const slow = (async (input: string | URL | Request, init?: RequestInit) => {
      await gate;
      return fake.fetch(input, init);
    }) as typeof fetch;
    const c = new AccountCredentials({ config, store, fetch: slow, now: () => now, log: quiet });
    await c.settled();
    now += 4000_000; // past the refresh point: the current token is handed out, the refresh runs behind
    expect((await c.credentialFor("work")) as object).toMatchObject({ accessToken: "at-1" });
    let done = false;
    const settled = c.settled().then(() => {
      done = true;
    });
    await Bun.sleep(50);
    expect(done).toBe(false);
    expect(readTokens(store, "work")!.refreshToken).toBe("0.rt-1");
    release();
    await settled;
    expect(readTokens(store, "work")!.refreshToken).toBe("0.rt-2");
    expect(fake.sent.length).toBe(1);
  });
});

describe("new tokens the state database could not take", () => {
  /** `store` refuses every transaction, as a full disk does, while `full` is true. */
  function fullDisk(store: ReturnType<typeof microsoftSetup>["store"]): { full: boolean } {
    const disk = { full: true };
    const transaction = store.transaction.bind(store);
    store.transaction = <T>(fn: () => T): T => {
      if (disk.full) throw new Error("database or disk is full");
      return transaction(fn);
    };
    return disk;
  }

  test("are used from memory, refreshed with, and written at the next request and at settled()", async () => {
    const { config, store } = microsoftSetup();
    const account = config.accounts["work"] as OAuth2AccountConfig;
    let now = 1_700_000_000_000;
    const issued = (refreshToken: string, accessToken: string) => tokens(account, now, refreshToken, accessToken);
    saveTokens(store, "work", issued("0.rt-1", "at-1"), now);
    // Microsoft retires each refresh token once it has issued the next one: only the latest one may be sent.
    const fake = replay([
      { expect: { refresh_token: "0.rt-1" }, status: 200, body: msToken("at-2", "0.rt-2") },
      { expect: { refresh_token: "0.rt-2" }, status: 200, body: msToken("at-3", "0.rt-3") },
    ]);
    const errors: string[] = [];
    const c = new AccountCredentials({
      config,
      store,
      fetch: fake.fetch,
      now: () => now,
      log: { ...quiet, error: (m) => errors.push(m) },
    });
    // The database refuses writes (a full disk) for a while.
    const disk = fullDisk(store);
    now += 4400_000; // expired: the request waits for the refresh
    expect((await c.credentialFor("work")) as object).toMatchObject({ accessToken: "at-2" });
    expect(errors.join("\n")).toContain("not written to the state database");
    expect(readTokens(store, "work")!.refreshToken).toBe("0.rt-1");
    // Still full at the next refresh: the one sent is the rotated token from memory, not the stored, retired one.
    now += 4400_000;
    expect((await c.credentialFor("work")) as object).toMatchObject({ accessToken: "at-3" });
    expect(fake.sent.map((f) => f.get("refresh_token"))).toEqual(["0.rt-1", "0.rt-2"]);
    expect(readTokens(store, "work")!.refreshToken).toBe("0.rt-1");
    // Writable again: settled() (what a short-lived process awaits before it closes) writes them.
    disk.full = false;
    await c.settled();
    expect(readTokens(store, "work")).toMatchObject({ refreshToken: "0.rt-3", accessToken: "at-3" });
  });

  test("are dropped when another process has stored a newer pair meanwhile (account login)", async () => {
    const { config, store } = microsoftSetup();
    const account = config.accounts["work"] as OAuth2AccountConfig;
    let now = 1_700_000_000_000;
    const issued = (refreshToken: string, accessToken: string) => tokens(account, now, refreshToken, accessToken);
    saveTokens(store, "work", issued("0.rt-1", "at-1"), now);
    const fake = replay([{ expect: { refresh_token: "0.rt-1" }, status: 200, body: msToken("at-2", "0.rt-2") }]);
    const c = new AccountCredentials({ config, store, fetch: fake.fetch, now: () => now, log: quiet });
    const disk = fullDisk(store);
    now += 4400_000;
    expect((await c.credentialFor("work")) as object).toMatchObject({ accessToken: "at-2" });
    // The disk is freed and an operator logs in again: a newer pair is stored by that other process.
    disk.full = false;
    now += 1000;
    saveTokens(store, "work", issued("0.login-rt", "login-at"), now);
    await c.settled();
    expect(readTokens(store, "work")).toMatchObject({ refreshToken: "0.login-rt", accessToken: "login-at" });
  });
});

describe("tokens left unwritten across several refreshes (saveRefreshedTokens after a failed write)", () => {
  test("a write that works supersedes the older unwritten pair: the newest refresh token is always sent", async () => {
    const { config, store } = microsoftSetup();
    const account = config.accounts["work"] as OAuth2AccountConfig;
    let now = 1_700_000_000_000;
    saveTokens(store, "work", tokens(account, now, "0.rt-0", "at-0"), now);
    const sent: string[] = [];
    const endpoint = (async (input: string | URL | Request, init?: RequestInit) => {
      const form = new URLSearchParams(await new Request(input as string, init).text());
      sent.push(form.get("refresh_token")!);
      return Response.json(msToken(`at-${sent.length}`, `0.rt-${sent.length}`), {
        headers: { "cache-control": "no-store" },
      });
    }) as typeof fetch;
    const c = new AccountCredentials({ config, store, fetch: endpoint, now: () => now, log: quiet });
    // The database refuses the transactions marked true in `plan` (a lock held by another process too long).
    const transaction = store.transaction.bind(store);
    const plan: boolean[] = [];
    let depth = 0;
    store.transaction = <T>(fn: () => T): T => {
      if (depth === 0 && plan.shift() === true) throw new Error("database is locked");
      depth++;
      try {
        return transaction(fn);
      } finally {
        depth--;
      }
    };
    // Refresh 1: its write fails (pair 1 unwritten). Refresh 2: pair 1's retry fails, its own write works (pair 1 is
    // superseded). Refresh 3: the first write tried fails again (pair 3 unwritten until refresh 4).
    for (const [i, steps] of [[true], [true, false], [true, false]].entries()) {
      now += 4400_000;
      plan.splice(0, plan.length, ...steps);
      expect((await c.credentialFor("work")) as object).toMatchObject({ accessToken: `at-${i + 1}` });
    }
    now += 4400_000;
    await c.credentialFor("work");
    expect(sent).toEqual(["0.rt-0", "0.rt-1", "0.rt-2", "0.rt-3"]);
    expect(readTokens(store, "work")!.refreshToken).toBe("0.rt-4");
  });
});

describe("client_credentials: invalid_grant is no revoked login (there is none to renew)", () => {
  /** A Microsoft app-only account "app" and its state database. */
  function appOnlySetup() {
    return microsoftAccount(mkdtempSync(join(TMP, "mg-cc-")), {
      name: "app",
      username: "shared@contoso.com",
      clientSecret: "s3cret",
    });
  }

  test("retried with backoff, never marked needs-reauthorization; a mark left before does not stop it", async () => {
    const { config, store } = appOnlySetup();
    const invalid = { error: "invalid_grant", error_description: "AADSTS70000: the grant is invalid" };
    const fake = replay([
      { expect: { grant_type: "client_credentials" }, status: 400, body: invalid },
      {
        expect: { grant_type: "client_credentials" },
        status: 200,
        body: { token_type: "Bearer", expires_in: 3599, access_token: "app-at" },
      },
    ]);
    let now = 1_700_000_000_000;
    const c = new AccountCredentials({ config, store, fetch: fake.fetch, now: () => now, log: quiet });
    await expect(c.credentialFor("app")).rejects.toBeInstanceOf(AccountTemporarilyUnavailable);
    expect(readStatus(store, "app")?.state).not.toBe("needs-reauthorization");
    // A mark an earlier version wrote: no login can clear it for such an account, so it does not stop the next try.
    writeStatus(store, {
      account: "app",
      state: "needs-reauthorization",
      since: now,
      lastError: "invalid_grant",
      lastErrorAt: now,
      expiresAt: null,
      refreshedAt: null,
    });
    now += BACKOFF_MAX_MS;
    expect((await c.credentialFor("app")) as object).toMatchObject({ accessToken: "app-at" });
    expect(readStatus(store, "app")?.state).toBe("ok");
    store.close();
  });

  test("a record of the account's former client_id is replaced by the new client's token", async () => {
    const { config, store } = appOnlySetup();
    const now = 1_700_000_000_000;
    const former = { ...(config.accounts["app"] as OAuth2AccountConfig) };
    const formerClient = { ...former, oauth2: { ...former.oauth2, clientId: "11111111-0000-0000-0000-000000000001" } };
    saveTokens(store, "app", { ...tokens(formerClient, now - 3600_000, "", "old-at"), refreshToken: null }, now);
    let requests = 0;
    const endpoint = (async () =>
      Response.json(
        { token_type: "Bearer", expires_in: 3599, access_token: `app-at-${++requests}` },
        { headers: { "cache-control": "no-store" } },
      )) as unknown as typeof fetch;
    const c = new AccountCredentials({ config, store, fetch: endpoint, now: () => now, log: quiet });
    expect((await c.credentialFor("app")) as object).toMatchObject({ accessToken: "app-at-1" });
    expect(readTokens(store, "app")).toMatchObject({
      accessToken: "app-at-1",
      clientId: "00000000-0000-0000-0000-00000000c11e",
    });
    // Another process (a restart, approvals approve) uses the stored token: no second request.
    const again = new AccountCredentials({ config, store, fetch: endpoint, now: () => now, log: quiet });
    expect((await again.credentialFor("app")) as object).toMatchObject({ accessToken: "app-at-1" });
    expect(requests).toBe(1);
    store.close();
  });
});

describe("a pair another process stores while a refresh is in flight stays (saveRefreshedTokens)", () => {
  /** A token endpoint that answers only once `release()` is called: the refresh is in flight until then. */
  function held(body: object) {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const sent: string[] = [];
    const impl = (async (input: string | URL | Request, init?: RequestInit) => {
      const form = new URLSearchParams(await new Request(input as string, init).text());
      sent.push(form.get("refresh_token") ?? "");
      await gate;
      return Response.json(body, { headers: { "cache-control": "no-store" } });
    }) as typeof fetch;
    return { fetch: impl, release, sent };
  }

  test("account login during the refresh: its pair stays, and is what the next request uses", async () => {
    const { config, store } = microsoftSetup();
    const account = config.accounts["work"] as OAuth2AccountConfig;
    let now = 1_700_000_000_000;
    saveTokens(store, "work", tokens(account, now, "0.rt-1", "at-1"), now);
    const endpoint = held(msToken("at-2", "0.rt-2"));
    const c = new AccountCredentials({ config, store, fetch: endpoint.fetch, now: () => now, log: quiet });
    now += 4400_000; // expired
    const asked = c.credentialFor("work");
    while (endpoint.sent.length === 0) await Bun.sleep(1);
    // The login of another process, with an earlier start time than the refresh (it began before the browser wait).
    saveTokens(store, "work", tokens(account, now - 60_000, "0.login-rt", "login-at"), now);
    endpoint.release();
    // This request gets the refreshed token (valid), but the stored pair is the login's and stays so.
    expect((await asked) as object).toMatchObject({ accessToken: "at-2" });
    expect(readTokens(store, "work")).toMatchObject({ refreshToken: "0.login-rt", accessToken: "login-at" });
    expect((await c.credentialFor("work")) as object).toMatchObject({ accessToken: "login-at" });
  });

  test("a login for a new client_id during the refresh: not overwritten by the old client's pair", async () => {
    const { config, store } = microsoftSetup();
    const account = config.accounts["work"] as OAuth2AccountConfig;
    let now = 1_700_000_000_000;
    saveTokens(store, "work", tokens(account, now, "0.rt-1", "at-1"), now);
    const endpoint = held(msToken("at-2", "0.rt-2"));
    const c = new AccountCredentials({ config, store, fetch: endpoint.fetch, now: () => now, log: quiet });
    now += 4400_000;
    const asked = c.credentialFor("work");
    while (endpoint.sent.length === 0) await Bun.sleep(1);
    const newClient = { ...account, oauth2: { ...account.oauth2, clientId: "00000000-0000-0000-0000-0000000c11e2" } };
    saveTokens(store, "work", tokens(newClient, now, "0.new-rt", "new-at"), now);
    endpoint.release();
    // The running process (not reloaded yet) goes on with its own client's tokens from memory.
    expect((await asked) as object).toMatchObject({ accessToken: "at-2" });
    expect(readTokens(store, "work")).toMatchObject({ refreshToken: "0.new-rt", clientId: newClient.oauth2.clientId });
  });

  test("tokens whose write failed are dropped for a login stored since, whatever its start time", async () => {
    const { config, store } = microsoftSetup();
    const account = config.accounts["work"] as OAuth2AccountConfig;
    let now = 1_700_000_000_000;
    saveTokens(store, "work", tokens(account, now, "0.rt-1", "at-1"), now);
    const fake = replay([{ expect: { refresh_token: "0.rt-1" }, status: 200, body: msToken("at-2", "0.rt-2") }]);
    const c = new AccountCredentials({ config, store, fetch: fake.fetch, now: () => now, log: quiet });
    const transaction = store.transaction.bind(store);
    let full = true;
    store.transaction = <T>(fn: () => T): T => {
      if (full) throw new Error("database or disk is full");
      return transaction(fn);
    };
    now += 4400_000;
    expect((await c.credentialFor("work")) as object).toMatchObject({ accessToken: "at-2" });
    full = false;
    // A login that started before the failed write (its time is its start) and stored after it.
    saveTokens(store, "work", tokens(account, now - 60_000, "0.login-rt", "login-at"), now);
    await c.settled();
    expect(readTokens(store, "work")).toMatchObject({ refreshToken: "0.login-rt", accessToken: "login-at" });
  });
});

describe("a reload's accounts (prepareReload, then commit)", () => {
  function reloaded(config: ReturnType<typeof microsoftSetup>["config"], lines: string[]) {
    return parseConfig([...lines, `[audit]`, `path = "audit.db"`].join("\n"), config.file);
  }
  const MS = (clientId: string) => [
    `[accounts.work]`,
    `username = "agent@contoso.com"`,
    `auth = "oauth2"`,
    `provider = "microsoft"`,
    `tenant = "${TENANT}"`,
    `client_id = "${clientId}"`,
  ];
  const PASSWORD = (password: string) => [`[accounts.plain]`, `username = "p@contoso.com"`, `password = "${password}"`];
  const CLIENT = "00000000-0000-0000-0000-00000000c11e";

  const NOW = 1_700_000_000_000;

  /**
   * An account "work" with stored tokens for CLIENT (`expiresIn` ms from now; negative: expired) and credentials
   * whose token requests answer `script`, each only once `release` is called when `gated`.
   */
  function withToken(expiresIn: number, script: Exchange[] = [], gated = false) {
    const { config, store } = microsoftSetup();
    const record = {
      refreshToken: "rt-1",
      accessToken: "at-1",
      expiresAt: NOW + expiresIn,
      obtainedAt: NOW + expiresIn - 3600_000,
      clientId: CLIENT,
      tokenUrl: TOKEN_URL,
    };
    saveTokens(store, "work", record, NOW);
    const fake = replay(script);
    let release: () => void = () => {};
    const gate = gated ? new Promise<void>((resolve) => (release = resolve)) : Promise.resolve();
    const fetchImpl = (async (input: string | URL | Request, init?: RequestInit) => {
      await gate;
      return fake.fetch(input, init);
    }) as typeof fetch;
    const c = new AccountCredentials({ config, store, fetch: fetchImpl, now: () => NOW, log: quiet });
    return { config, store, c, fake, release };
  }

  for (const [what, answer, stored] of [
    ["a new token", { expect: { refresh_token: "rt-1" }, status: 200, body: msToken("at-2", "rt-2") }, "rt-2"],
    ["invalid_grant", { expect: { refresh_token: "rt-1" }, status: 400, body: { error: "invalid_grant" } }, "rt-1"],
  ] as const) {
    test(`a refresh out when a reload changes the client, answered with ${what}: not used or noted`, async () => {
      // The stored token expired: credentialFor waits for a refresh, whose answer waits for `release`.
      const { config, store, c, release, fake } = withToken(-1000, [answer], true);
      const pending = c.credentialFor("work");
      await Bun.sleep(20);
      c.prepareReload(reloaded(config, MS("11111111-0000-0000-0000-00000000c11e"))).commit();
      release();
      await expect(pending).rejects.toBeInstanceOf(AccountTemporarilyUnavailable);
      expect(fake.sent).toHaveLength(1);
      // The old client's answer marked nothing; a rotated pair is stored over the old client's pair it started
      // from (the provider retired rt-1), which the new client does not use.
      expect(readTokens(store, "work")).toMatchObject({ refreshToken: stored, clientId: CLIENT });
      await expect(c.credentialFor("work")).rejects.toBeInstanceOf(AccountNeedsReauthorization);
      expect(fake.sent).toHaveLength(1);
      expect(readStatus(store, "work")?.state).not.toBe("needs-reauthorization");
    });
  }

  test("a changed password is the one handed out after the reload", async () => {
    const { config, c } = withToken(3600_000);
    const next = reloaded(config, [...MS(CLIENT), ...PASSWORD("new-secret")]);
    c.prepareReload(next).commit();
    expect(await c.credentialFor("plain")).toEqual({
      kind: "password",
      username: "p@contoso.com",
      password: "new-secret",
    });
  });

  test("the same OAuth2 client: the account's state is kept (a token the upstream refused stays refused)", async () => {
    const { config, c, fake } = withToken(3600_000, [
      { expect: { refresh_token: "rt-1" }, status: 200, body: msToken("at-2", "rt-2") },
    ]);
    expect(await c.credentialFor("work")).toMatchObject({ accessToken: "at-1" });
    c.reportRejected("work", "at-1");
    c.prepareReload(reloaded(config, MS(CLIENT))).commit();
    // Started afresh, the account would hand out the stored at-1 again.
    expect(await c.credentialFor("work")).toMatchObject({ accessToken: "at-2" });
    expect(fake.sent).toHaveLength(1);
  });

  test("another client_id: the token issued to the old client is not used; the account needs a login", async () => {
    const { config, c, fake } = withToken(3600_000);
    expect((await c.credentialFor("work")).kind).toBe("oauth2");
    c.prepareReload(reloaded(config, MS("11111111-0000-0000-0000-00000000c11e"))).commit();
    await expect(c.credentialFor("work")).rejects.toBeInstanceOf(AccountNeedsReauthorization);
    expect(fake.sent).toHaveLength(0);
  });

  test("a removed account is unknown after the reload", async () => {
    const { config, c } = withToken(3600_000);
    c.prepareReload(reloaded(config, PASSWORD("x"))).commit();
    await expect(c.credentialFor("work")).rejects.toThrow('no account named "work"');
  });

  test("the first OAuth2 account, without a state database open: the reload fails, nothing changes", async () => {
    const { config } = withToken(3600_000);
    const plain = reloaded(config, PASSWORD("old-secret"));
    const c = new AccountCredentials({ config: plain, store: null, log: quiet });
    expect(() => c.prepareReload(reloaded(config, [...MS(CLIENT), ...PASSWORD("new-secret")]))).toThrow(
      "restart to add the first one",
    );
    expect(await c.credentialFor("plain")).toEqual({
      kind: "password",
      username: "p@contoso.com",
      password: "old-secret",
    });
  });
});
