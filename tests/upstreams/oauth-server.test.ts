// The local OAuth2 server's limits, in process (a private instance on a free port): the request
// body limit at the limit and one past it, and the code and device-code lifetimes at the second
// they end; its slow_down control; the per-user consent denial, device approval and device expiry,
// and reset. The shared instance is tested against Dovecot and Postfix in tests/e2e/oauth.test.ts.
import { afterAll, beforeAll, describe, expect, setSystemTime, test } from "bun:test";
import { createHash } from "node:crypto";
import {
  AUTHORIZATION_CODE_LIFETIME_S,
  Authority,
  DEVICE_CODE_LIFETIME_S,
  MAX_BODY_BYTES,
  type OAuthServerConfig,
  serve,
} from "../../scripts/upstreams/oauth-server.ts";
import { freePort } from "../../scripts/upstreams/ports.ts";

const CLIENT = { id: "client", secret: "client-secret" };

function config(port: number): OAuthServerConfig {
  return {
    port,
    client: CLIENT,
    introspectionClient: { id: "rs", secret: "rs-secret" },
    defaultUser: "u@mailgator.test",
  };
}

const basic = { authorization: `Basic ${btoa(`${CLIENT.id}:${CLIENT.secret}`)}` };

describe("request body limit", () => {
  let base = "";
  let close: () => Promise<void> = async () => {};
  beforeAll(async () => {
    const port = await freePort();
    const server = await serve(config(port));
    base = `http://127.0.0.1:${port}`;
    close = server.close;
  });
  afterAll(() => close());

  /** A client_credentials form padded with an ignored parameter to exactly `size` bytes. */
  function form(size: number): string {
    const head = "grant_type=client_credentials&pad=";
    return head + "x".repeat(size - head.length);
  }

  test(`${MAX_BODY_BYTES} bytes are read; one more is 413`, async () => {
    const post = (body: string) =>
      fetch(`${base}/token`, {
        method: "POST",
        headers: { ...basic, "content-type": "application/x-www-form-urlencoded" },
        body,
      });
    const atLimit = await post(form(MAX_BODY_BYTES));
    expect(atLimit.status).toBe(200);
    expect(((await atLimit.json()) as { access_token?: string }).access_token).toBeString();
    expect((await post(form(MAX_BODY_BYTES + 1))).status).toBe(413);
  });
});

describe("lifetimes (clock set by the test)", () => {
  const start = new Date("2026-01-01T00:00:00Z");
  afterAll(() => setSystemTime());

  function call(authority: Authority, method: string, path: string, body: Record<string, string> = {}) {
    const reply = authority.handle(method, new URL(path, authority.baseUrl), basic, new URLSearchParams(body));
    if (reply === "close") throw new Error("unexpected close");
    return reply as { status: number; headers?: Record<string, string>; body: Record<string, unknown> };
  }

  function code(authority: Authority): { code: string; verifier: string } {
    const verifier = "v".repeat(43);
    const challenge = createHash("sha256").update(verifier).digest("base64url");
    const query = new URLSearchParams({
      response_type: "code",
      client_id: CLIENT.id,
      redirect_uri: "http://127.0.0.1:9/cb",
      code_challenge: challenge,
      code_challenge_method: "S256",
    });
    const reply = call(authority, "GET", `/authorize?${query}`);
    return { code: new URL(reply.headers?.["location"] ?? "").searchParams.get("code") ?? "", verifier };
  }

  const exchange = (authority: Authority, grant: { code: string; verifier: string }) =>
    call(authority, "POST", "/token", {
      grant_type: "authorization_code",
      code: grant.code,
      redirect_uri: "http://127.0.0.1:9/cb",
      code_verifier: grant.verifier,
    });

  test(`an authorization code works ${AUTHORIZATION_CODE_LIFETIME_S} s after issue, not one second later`, () => {
    const authority = new Authority(config(1));
    setSystemTime(start);
    const [first, second] = [code(authority), code(authority)];
    setSystemTime(new Date(start.getTime() + AUTHORIZATION_CODE_LIFETIME_S * 1000));
    expect(exchange(authority, first).status).toBe(200);
    setSystemTime(new Date(start.getTime() + (AUTHORIZATION_CODE_LIFETIME_S + 1) * 1000));
    expect(exchange(authority, second).body["error"]).toBe("invalid_grant");
  });

  test(`a device code is polled until ${DEVICE_CODE_LIFETIME_S} s, then expired_token`, () => {
    const authority = new Authority(config(1));
    setSystemTime(start);
    const device = call(authority, "POST", "/device_authorization", { scope: "mail" }).body;
    const poll = () =>
      call(authority, "POST", "/token", {
        grant_type: "urn:ietf:params:oauth:grant-type:device_code",
        device_code: device["device_code"] as string,
      }).body["error"];
    setSystemTime(new Date(start.getTime() + DEVICE_CODE_LIFETIME_S * 1000));
    expect(poll()).toBe("authorization_pending");
    setSystemTime(new Date(start.getTime() + (DEVICE_CODE_LIFETIME_S + 1) * 1000));
    expect(poll()).toBe("expired_token");
  });

  test("an access token is active until its expiry and inactive after it", () => {
    const authority = new Authority(config(1));
    setSystemTime(start);
    const token = call(authority, "POST", "/token", { grant_type: "client_credentials" }).body;
    const rs = { authorization: `Basic ${btoa("rs:rs-secret")}` };
    const introspect = () => {
      const reply = authority.handle(
        "POST",
        new URL("/introspect", authority.baseUrl),
        rs,
        new URLSearchParams({ token: token["access_token"] as string }),
      ) as { body: { active: boolean } };
      return reply.body.active;
    };
    const lifetime = token["expires_in"] as number;
    setSystemTime(new Date(start.getTime() + lifetime * 1000 - 1));
    expect(introspect()).toBe(true);
    setSystemTime(new Date(start.getTime() + lifetime * 1000));
    expect(introspect()).toBe(false);
  });
});

describe("refresh-token rotation with reuse revocation", () => {
  function call(authority: Authority, method: string, path: string, body: Record<string, string> = {}) {
    const reply = authority.handle(method, new URL(path, authority.baseUrl), basic, new URLSearchParams(body));
    if (reply === "close") throw new Error("unexpected close");
    return reply as { status: number; headers?: Record<string, string>; body: Record<string, unknown> };
  }

  /** A logged-in grant: its first refresh token and access token. */
  function login(authority: Authority): { refresh: string; access: string } {
    const query = new URLSearchParams({ response_type: "code", client_id: CLIENT.id, redirect_uri: "http://x/cb" });
    const location = call(authority, "GET", `/authorize?${query}`).headers?.["location"] ?? "";
    const code = new URL(location).searchParams.get("code") ?? "";
    const body = call(authority, "POST", "/token", {
      grant_type: "authorization_code",
      code,
      redirect_uri: "http://x/cb",
    }).body;
    return { refresh: body["refresh_token"] as string, access: body["access_token"] as string };
  }

  const refresh = (authority: Authority, token: string) =>
    call(authority, "POST", "/token", { grant_type: "refresh_token", refresh_token: token });

  const active = (authority: Authority, token: string) =>
    (
      authority.handle(
        "POST",
        new URL("/introspect", authority.baseUrl),
        { authorization: `Basic ${btoa("rs:rs-secret")}` },
        new URLSearchParams({ token }),
      ) as { body: { active: boolean } }
    ).body.active;

  test("on: a retired refresh token presented again revokes the whole family; another grant is untouched", () => {
    const authority = new Authority(config(1));
    call(authority, "POST", "/control/rotation?on=true");
    call(authority, "POST", "/control/reuse?on=true");
    const first = login(authority);
    const other = login(authority);
    const second = refresh(authority, first.refresh).body;
    const third = refresh(authority, second["refresh_token"] as string).body;
    expect(refresh(authority, first.refresh).body["error"]).toBe("invalid_grant");
    expect(refresh(authority, third["refresh_token"] as string).body["error"]).toBe("invalid_grant");
    expect(active(authority, third["access_token"] as string)).toBe(false);
    expect(active(authority, first.access)).toBe(false);
    expect(active(authority, other.access)).toBe(true);
    expect(refresh(authority, other.refresh).status).toBe(200);
    const counters = call(authority, "GET", "/control/counters").body;
    expect(counters["reuseRevocations"]).toBe(1);
  });

  test("off (the default): a retired refresh token is refused, and the family stays alive", () => {
    const authority = new Authority(config(1));
    call(authority, "POST", "/control/rotation?on=true");
    const first = login(authority);
    const second = refresh(authority, first.refresh).body;
    expect(refresh(authority, first.refresh).body["error"]).toBe("invalid_grant");
    expect(refresh(authority, second["refresh_token"] as string).status).toBe(200);
  });
});

describe("/control/slow_down (clock set by the test)", () => {
  const start = new Date("2026-01-01T00:00:00Z");
  afterAll(() => setSystemTime());

  function call(authority: Authority, method: string, path: string, body: Record<string, string> = {}) {
    const reply = authority.handle(method, new URL(path, authority.baseUrl), basic, new URLSearchParams(body));
    if (reply === "close") throw new Error("unexpected close");
    return reply as { status: number; body: Record<string, unknown> };
  }

  test("the next N polls of the user's device codes get slow_down, however slowly they come; count=0 clears", () => {
    const authority = new Authority(config(1));
    setSystemTime(start);
    const device = (user: string) =>
      call(authority, "POST", "/device_authorization", { scope: "mail", login_hint: user }).body[
        "device_code"
      ] as string;
    const [mine, other] = [device("a@mailgator.test"), device("b@mailgator.test")];
    let minutes = 0;
    /** Polls `code` a minute after the last poll: never too fast by the server's own interval. */
    const poll = (code: string) => {
      setSystemTime(new Date(start.getTime() + ++minutes * 60_000));
      const grant = "urn:ietf:params:oauth:grant-type:device_code";
      return call(authority, "POST", "/token", { grant_type: grant, device_code: code }).body["error"];
    };
    expect(call(authority, "POST", "/control/slow_down?count=2&user=a@mailgator.test").status).toBe(200);
    expect(poll(other)).toBe("authorization_pending");
    expect([poll(mine), poll(mine), poll(mine)]).toEqual(["slow_down", "slow_down", "authorization_pending"]);
    call(authority, "POST", "/control/slow_down?count=5&user=b@mailgator.test");
    call(authority, "POST", "/control/slow_down?count=0&user=b@mailgator.test");
    expect(poll(other)).toBeUndefined();
  });
});

describe("/control/authorize, device, device_expire, device_lifetime for one user (clock set by the test)", () => {
  const start = new Date("2026-01-01T00:00:00Z");
  afterAll(() => setSystemTime());
  const [A, B] = ["a@mailgator.test", "b@mailgator.test"];
  const DEVICE = "urn:ietf:params:oauth:grant-type:device_code";

  function call(authority: Authority, method: string, path: string, body: Record<string, string> = {}) {
    const reply = authority.handle(method, new URL(path, authority.baseUrl), basic, new URLSearchParams(body));
    if (reply === "close") throw new Error("unexpected close");
    return reply as { status: number; headers?: Record<string, string>; body: Record<string, unknown> };
  }

  /** The authorize endpoint's redirect for `user`: its query (code or error, and the state). */
  function authorize(authority: Authority, user: string): URLSearchParams {
    const query = new URLSearchParams({
      response_type: "code",
      client_id: CLIENT.id,
      redirect_uri: "http://127.0.0.1:9/cb",
      state: "s-1",
      login_hint: user,
    });
    const reply = call(authority, "GET", `/authorize?${query}`);
    expect(reply.status).toBe(302);
    return new URL(reply.headers?.["location"] ?? "").searchParams;
  }

  let seconds = 0;
  /** Polls `code` ten seconds after the last poll: never too fast by the server's own interval. */
  function poll(authority: Authority, code: string): string {
    setSystemTime(new Date(start.getTime() + (seconds += 10) * 1000));
    const body = call(authority, "POST", "/token", { grant_type: DEVICE, device_code: code }).body;
    return (body["error"] as string | undefined) ?? `tokens for ${(body["access_token"] as string).length} chars`;
  }

  const settings = (authority: Authority) =>
    call(authority, "GET", "/control/settings").body as {
      denyAuthorize: boolean;
      deviceAutoApprove: boolean;
      perUser: Record<
        string,
        { denyAuthorize?: boolean; deviceAutoApprove?: boolean; deviceAnnouncedLifetime?: number }
      >;
    };

  test("authorize?deny=true&user=: that user's consent is denied (access_denied, with the state); others' not", () => {
    const authority = new Authority(config(1));
    expect(call(authority, "POST", `/control/authorize?deny=true&user=${A}`).status).toBe(200);
    expect(Object.fromEntries(authorize(authority, A))).toEqual({
      error: "access_denied",
      error_description: "denied by /control/authorize",
      state: "s-1",
    });
    expect(authorize(authority, B).get("code")).toBeString();
    expect(settings(authority).perUser[A]?.denyAuthorize).toBe(true);
    expect(settings(authority).denyAuthorize).toBe(false);
    call(authority, "POST", `/control/authorize?deny=false&user=${A}`);
    expect(authorize(authority, A).get("code")).toBeString();
    // Without user=, everyone's (a user's own setting still wins).
    call(authority, "POST", "/control/authorize?deny=true");
    expect(authorize(authority, B).get("error")).toBe("access_denied");
    expect(authorize(authority, A).get("code")).toBeString();
  });

  test("device?auto_approve=false&user=: that user's codes stay pending until approved; login_hint in a query", () => {
    const authority = new Authority(config(1));
    setSystemTime(start);
    expect(call(authority, "POST", `/control/device?auto_approve=false&user=${A}`).status).toBe(200);
    // The user comes from the body's login_hint, else from the endpoint's query, else it is the default user.
    const device = (path: string, body: Record<string, string> = {}) =>
      call(authority, "POST", path, { scope: "mail", ...body }).body as { device_code: string; user_code: string };
    const mine = device(`/device_authorization?login_hint=${encodeURIComponent(A)}`);
    const other = device(`/device_authorization?login_hint=${encodeURIComponent(A)}`, { login_hint: B });
    expect([poll(authority, mine.device_code), poll(authority, other.device_code)]).toEqual([
      "authorization_pending",
      "authorization_pending",
    ]);
    expect(poll(authority, other.device_code)).toBe("tokens for 43 chars");
    expect([poll(authority, mine.device_code), poll(authority, mine.device_code)]).toEqual([
      "authorization_pending",
      "authorization_pending",
    ]);
    expect(call(authority, "GET", `/device/approve?user_code=${mine.user_code}`).body["user"]).toBe(A);
    expect(poll(authority, mine.device_code)).toBe("tokens for 43 chars");
    const users = (call(authority, "GET", "/control/tokens").body["tokens"] as { user: string }[]).map((t) => t.user);
    expect(users.sort()).toEqual([A, A, B, B]);
    expect(settings(authority).perUser[A]?.deviceAutoApprove).toBe(false);
    expect(settings(authority).deviceAutoApprove).toBe(true);
  });

  test("device_expire?user=: that user's codes answer expired_token from now on; others' are untouched", () => {
    const authority = new Authority(config(1));
    setSystemTime(start);
    call(authority, "POST", `/control/device?auto_approve=false&user=${A}`);
    call(authority, "POST", `/control/device?auto_approve=false&user=${B}`);
    const device = (user: string) =>
      call(authority, "POST", "/device_authorization", { scope: "mail", login_hint: user }).body as {
        device_code: string;
        user_code: string;
      };
    const [mine, other] = [device(A), device(B)];
    expect(poll(authority, mine.device_code)).toBe("authorization_pending");
    expect(call(authority, "POST", "/control/device_expire").status).toBe(400);
    expect(call(authority, "POST", `/control/device_expire?user=${A}`).body["devices"]).toBe(1);
    expect(poll(authority, mine.device_code)).toBe("expired_token");
    call(authority, "GET", `/device/approve?user_code=${mine.user_code}`);
    expect(poll(authority, mine.device_code)).toBe("expired_token");
    expect(poll(authority, other.device_code)).toBe("authorization_pending");
    expect(call(authority, "POST", `/control/device_expire?user=${A}`).body["devices"]).toBe(0);
  });

  test("device_lifetime?user=&seconds=: the expires_in that user's codes announce; the codes stay valid longer", () => {
    const authority = new Authority(config(1));
    setSystemTime(start);
    call(authority, "POST", `/control/device?auto_approve=false&user=${A}`);
    const device = (user: string) =>
      call(authority, "POST", "/device_authorization", { scope: "mail", login_hint: user }).body as {
        device_code: string;
        expires_in: number;
      };
    expect(call(authority, "POST", "/control/device_lifetime?seconds=2").status).toBe(400);
    expect(call(authority, "POST", `/control/device_lifetime?user=${A}`).status).toBe(400);
    expect(call(authority, "POST", `/control/device_lifetime?user=${A}&seconds=2`).status).toBe(200);
    const mine = device(A);
    expect(mine.expires_in).toBe(2);
    expect(device(B).expires_in).toBe(DEVICE_CODE_LIFETIME_S);
    // Past what it announced, the code is still pending: only the client's own deadline stops its polls.
    setSystemTime(new Date(start.getTime() + 60_000));
    expect(poll(authority, mine.device_code)).toBe("authorization_pending");
    expect(call(authority, "POST", `/control/device_lifetime?user=${A}&seconds=0`).status).toBe(200);
    expect(device(A).expires_in).toBe(DEVICE_CODE_LIFETIME_S);
    expect(settings(authority).perUser[A]?.deviceAnnouncedLifetime).toBeUndefined();
  });

  test("reset: every setting back to its default, each user's too", () => {
    const authority = new Authority(config(1));
    call(authority, "POST", `/control/authorize?deny=true&user=${A}`);
    call(authority, "POST", "/control/device?auto_approve=false");
    call(authority, "POST", `/control/device?auto_approve=false&user=${B}`);
    expect(settings(authority)).toMatchObject({ deviceAutoApprove: false, perUser: { [A]: { denyAuthorize: true } } });
    expect(call(authority, "POST", "/control/reset").status).toBe(200);
    expect(settings(authority)).toMatchObject({ denyAuthorize: false, deviceAutoApprove: true });
    // toMatchObject takes `perUser: {}` for any object: each user's settings are gone.
    expect(settings(authority).perUser).toEqual({});
    expect(authorize(authority, A).get("code")).toBeString();
  });
});
