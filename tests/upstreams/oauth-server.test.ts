// The local OAuth2 server's limits, in process (a private instance on a free port): the request
// body limit at the limit and one past it, and the code and device-code lifetimes at the second
// they end; and its slow_down control. The shared instance is tested against Dovecot and Postfix in
// tests/e2e/oauth.test.ts.
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
