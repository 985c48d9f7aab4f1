// `mailgator account login --device` while the token endpoint misbehaves between the polls (RFC 8628 §3.5,
// docs/accounts.md "Logging in"): a dropped connection, a 5xx and a poll that gets no answer are retried at a longer
// interval until the code expires; slow_down lengthens the interval by DEVICE_SLOW_DOWN_S for good; a nonsense answer
// or an error code other than authorization_pending and slow_down stops the login with a clear error, and nothing is
// stored.
import { afterAll, afterEach, expect, jest, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { DEVICE_MAX_INTERVAL_S, DEVICE_SLOW_DOWN_S, LoginError, loginDevice } from "../../src/accounts/login.ts";
import { TOKEN_REQUEST_TIMEOUT_MS } from "../../src/accounts/oauth.ts";
import { readTokens } from "../../src/accounts/records.ts";
import { loadConfig, type OAuth2AccountConfig, parseConfig } from "../../src/config/index.ts";
import { SealedStore } from "../../src/state/store.ts";
import { control, oauthServer } from "../fixtures/oauth.ts";
import { tempRoot } from "../fixtures/temp.ts";
import { Child, MAIN, madeDirs, oauthConfig } from "./helpers.ts";

setDefaultTimeout(60_000);

const TMP = tempRoot("mg-device-poll-");
afterAll(() => {
  for (const dir of madeDirs) rmSync(dir, { recursive: true, force: true });
});

/** The CLI's device login is for the server's default user (it sends no login_hint): its failures are shared. */
const DEFAULT_USER = () => oauthServer().user.user;
afterEach(async () => {
  await control("fail", { user: DEFAULT_USER(), mode: "off" });
  await control("slow_down", { user: DEFAULT_USER(), count: "0" });
  await control("device_interval", { user: DEFAULT_USER(), count: "0" });
});

/** Starts `account login main --device`; returns the child once it prints the code, and the code. */
async function deviceLogin() {
  const setup = oauthConfig(DEFAULT_USER());
  const child = new Child([MAIN, "account", "login", "main", "-c", setup.config, "--device"]);
  const [, , code] = await child.waitFor(/open (\S+) and enter the code (\S+)/);
  return { setup, child, code: code! };
}

async function approve(code: string): Promise<void> {
  const approved = await fetch(`${oauthServer().issuer}/device/approve?user_code=${encodeURIComponent(code)}`);
  expect(approved.status).toBe(200);
}

function storedRefreshToken(config: string): string | null {
  const cfg = loadConfig(config);
  const store = SealedStore.open(cfg.state.path, { secretsFile: cfg.state.secretsFile, env: {}, create: false })!;
  try {
    return readTokens(store, "main")?.refreshToken ?? null;
  } finally {
    store.close();
  }
}

test("a dropped connection, then a 503, while polling: polled again, less often; the login completes", async () => {
  const { setup, child, code } = await deviceLogin();
  await control("fail", { user: DEFAULT_USER(), mode: "close", count: "1" });
  await control("fail", { user: DEFAULT_USER(), status: "503", count: "1" });
  await approve(code);
  expect(await child.exit()).toBe(0);
  expect(child.stdout).toContain("logged in");
  // Each failure is said, with the wait before the next poll (doubled each time, RFC 8628 §3.5).
  expect(child.stdout).toMatch(/token endpoint unreachable.*; polling again in 2 s/);
  expect(child.stdout).toMatch(/HTTP 503.*; polling again in 4 s/);
  expect(storedRefreshToken(setup.config)).not.toBeNull();
});

test(`slow_down: the interval grows by DEVICE_SLOW_DOWN_S (${DEVICE_SLOW_DOWN_S} s), for each poll after`, async () => {
  // The local server's device codes ask for polls every second (`interval` 1); its first poll is answered slow_down.
  await control("slow_down", { user: DEFAULT_USER(), count: "1" });
  const setup = oauthConfig(DEFAULT_USER());
  const polls: { at: number; answer: string }[] = [];
  let interval = 0;
  const recording = (async (input: string | URL | Request, init?: RequestInit) => {
    const response = await fetch(input, init);
    const url = String(input instanceof Request ? input.url : input);
    if (url === oauthServer().deviceUrl) ({ interval } = (await response.clone().json()) as { interval: number });
    if (url === oauthServer().tokenUrl) {
      const body = (await response.clone().json()) as { error?: string };
      polls.push({ at: performance.now(), answer: body.error ?? "tokens" });
    }
    return response;
  }) as typeof fetch;
  const account = loadConfig(setup.config).accounts["main"] as OAuth2AccountConfig;
  const grant = await loginDevice(account, { say: () => {}, fetch: recording });
  expect(grant.refreshToken).toBeString();
  // The second poll is pending and approves the code (the server's auto-approval); the third gets the tokens.
  expect(polls.map((p) => p.answer)).toEqual(["slow_down", "authorization_pending", "tokens"]);
  expect(interval).toBe(1);
  // Both waits after the slow_down are the server's interval plus DEVICE_SLOW_DOWN_S, and shorter than one second
  // more (what DEVICE_SLOW_DOWN_S + 1 would wait): the poll's own round trip is a few milliseconds.
  for (const i of [1, 2]) {
    const gap = polls[i]!.at - polls[i - 1]!.at;
    expect(gap).toBeGreaterThanOrEqual((interval + DEVICE_SLOW_DOWN_S) * 1000 - 50);
    expect(gap).toBeLessThan((interval + DEVICE_SLOW_DOWN_S + 1) * 1000 - 200);
  }
}, 30_000);

for (const seconds of [DEVICE_MAX_INTERVAL_S, DEVICE_MAX_INTERVAL_S + 1])
  test(`interval ${seconds} s, then grown by a 503 and slow_down: polled at ${DEVICE_MAX_INTERVAL_S} s`, async () => {
    // The server's device code asks for `seconds` between polls; its first poll is answered 503, its second slow_down.
    await control("device_interval", { user: DEFAULT_USER(), seconds: String(seconds) });
    await control("fail", { user: DEFAULT_USER(), status: "503", count: "1" });
    await control("slow_down", { user: DEFAULT_USER(), count: "1" });
    const setup = oauthConfig(DEFAULT_USER());
    const account = loadConfig(setup.config).accounts["main"] as OAuth2AccountConfig;
    const said: string[] = [];
    const polls: { at: number; answer: string }[] = [];
    let interval = 0;
    const recording = (async (input: string | URL | Request, init?: RequestInit) => {
      const response = await fetch(input, init);
      const url = String(input instanceof Request ? input.url : input);
      if (url === oauthServer().deviceUrl) ({ interval } = (await response.clone().json()) as { interval: number });
      if (url === oauthServer().tokenUrl) {
        const body = (await response.clone().json()) as { error?: string };
        polls.push({ at: Date.now(), answer: `${response.status} ${body.error ?? "tokens"}` });
      }
      return response;
    }) as typeof fetch;
    /** Lets the login's fetches and promises run (the timers are fake: nothing else moves time). */
    const settle = async (done: () => boolean) => {
      for (let i = 0; i < 100_000 && !done(); i++) await new Promise((resolve) => setImmediate(resolve));
      expect(done()).toBe(true);
    };
    // Minutes of polling, on the fake clock (Date.now() too): each wait is seen to the millisecond.
    jest.useFakeTimers();
    const stop = new AbortController();
    try {
      const start = Date.now();
      const login = loginDevice(account, { say: (t) => said.push(t), fetch: recording, signal: stop.signal }).catch(
        (e: Error) => e,
      );
      await settle(() => said.some((t) => t.startsWith("Sign in as")));
      expect(interval).toBe(seconds);
      const limit = DEVICE_MAX_INTERVAL_S * 1000;
      for (const n of [1, 2, 3]) {
        jest.advanceTimersByTime(limit - 1);
        for (let i = 0; i < 100; i++) await new Promise((resolve) => setImmediate(resolve));
        expect(polls).toHaveLength(n - 1);
        jest.advanceTimersByTime(1);
        await settle(() => polls.length === n);
        expect(polls[n - 1]!.at - start).toBe(n * limit);
      }
      // The 503 doubled the interval, past the limit; the slow_down added DEVICE_SLOW_DOWN_S, past it too.
      expect(polls.slice(0, 2).map((p) => p.answer)).toEqual(["503 server_error", "400 slow_down"]);
      expect(said.join("\n")).toMatch(new RegExp(`HTTP 503.*; polling again in ${DEVICE_MAX_INTERVAL_S} s`));
      stop.abort();
      expect(await login).toBeInstanceOf(LoginError);
    } finally {
      stop.abort();
      jest.useRealTimers();
    }
  });

function microsoft(): OAuth2AccountConfig {
  const config = parseConfig(
    [
      "[accounts.m]",
      'username = "a@contoso.com"',
      'auth = "oauth2"',
      'provider = "microsoft"',
      'tenant = "contoso.onmicrosoft.com"',
      'client_id = "00000000-0000-0000-0000-00000000c11e"',
    ].join("\n"),
    join(mkdtempSync(join(TMP, "m-")), "m.toml"),
  );
  return config.accounts["m"] as OAuth2AccountConfig;
}

type Answer = (init: RequestInit | undefined) => Response | Promise<Response>;

/** `loginDevice` against a scripted Microsoft token endpoint: one answer per poll, in order. */
async function scripted(answers: Answer[]) {
  const said: string[] = [];
  const polls: number[] = [];
  const fetchImpl = (async (input: string | URL | Request, init?: RequestInit) => {
    const request = new Request(input as string, init);
    if (request.url.endsWith("/devicecode"))
      return Response.json({
        device_code: "dc",
        user_code: "ABCD",
        verification_uri: "https://microsoft.com/devicelogin",
        expires_in: 900,
        interval: 1,
      });
    polls.push(Date.now());
    const next = answers.shift();
    if (next === undefined) throw new Error("unexpected poll");
    return next(init);
  }) as typeof fetch;
  const outcome = await loginDevice(microsoft(), { say: (t) => said.push(t), fetch: fetchImpl }).catch((e: Error) => e);
  return { outcome, said, polls, left: answers.length };
}

const token: Answer = () =>
  Response.json(
    { token_type: "Bearer", access_token: "at", refresh_token: "rt", expires_in: 3600 },
    { headers: { "cache-control": "no-store" } },
  );

test(`a poll unanswered in TOKEN_REQUEST_TIMEOUT_MS (${TOKEN_REQUEST_TIMEOUT_MS} ms): polled again`, async () => {
  // The first poll is never answered: only its signal ends it.
  const hang: Answer = (init) =>
    new Promise((_, reject) => init?.signal?.addEventListener("abort", () => reject(init.signal!.reason)));
  const got = await scripted([hang, token]);
  expect(got.outcome).toMatchObject({ accessToken: "at", refreshToken: "rt" });
  expect(got.said.join("\n")).toMatch(/token request timed out\); polling again in 2 s/);
  expect(got.polls[1]! - got.polls[0]!).toBeGreaterThanOrEqual(TOKEN_REQUEST_TIMEOUT_MS + 2000 - 50);
});

test("a 502 page is polled again; an HTML page with 200, access_denied or expired_token stop the login", async () => {
  const html = (status: number) =>
    new Response("<html><body><h1>Bad Gateway</h1></body></html>", {
      status,
      headers: { "content-type": "text/html" },
    });
  const retried = await scripted([() => html(502), token]);
  expect(retried.outcome).toMatchObject({ accessToken: "at", refreshToken: "rt" });
  expect(retried.said.join("\n")).toMatch(/HTTP 502.*; polling again in 2 s/);

  const page = await scripted([() => html(200), token]);
  expect(page.outcome).toBeInstanceOf(LoginError);
  expect((page.outcome as Error).message).toMatch(
    /^device login failed: unexpected token endpoint response \(HTTP 200\)/,
  );
  expect((page.outcome as Error).message).not.toContain("<html>");
  expect(page.left).toBe(1);

  const denied = await scripted([() => Response.json({ error: "access_denied" }, { status: 400 }), token]);
  expect((denied.outcome as Error).message).toBe(
    "the code was denied at the provider's page; run the login again (access_denied (HTTP 400))",
  );
  expect(denied.left).toBe(1);

  // A provider may send the code alone: the two that end the login (RFC 8628 §3.5) are said plainly.
  const expired = await scripted([() => Response.json({ error: "expired_token" }, { status: 400 }), token]);
  expect((expired.outcome as Error).message).toBe(
    "the code expired before it was approved; run the login again (expired_token (HTTP 400))",
  );
  expect(expired.left).toBe(1);
});
