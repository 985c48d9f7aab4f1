/**
 * A small OAuth2 authorization server for the tests and the demo only: it lets Dovecot (through
 * its oauth2 passdb) and Postfix (through Dovecot's SASL) check real XOAUTH2 and OAUTHBEARER
 * logins. Never use it for anything else: consent is automatic and control endpoints change its
 * behaviour without authentication (it listens on 127.0.0.1 only).
 *
 * Endpoints (docs/upstreams.md "OAuth2"):
 *   GET  /authorize              RFC 6749 §4.1.1; auto-consent (unless /control/authorize denies it): 302 to
 *                                redirect_uri with code and state;
 *                                PKCE S256 (RFC 7636); `login_hint` picks the user (default: the OAuth user)
 *   POST /token                  RFC 6749 §4.1.3, §6 (refresh, optional rotation), §4.4 (client_credentials),
 *                                RFC 8628 §3.4 (device_code)
 *   POST /device_authorization   RFC 8628 §3.1–3.2
 *   GET  /device, /device/approve?user_code=, /device/deny?user_code=   the "verification_uri" side
 *   POST /introspect             RFC 7662; HTTP Basic client auth required (Dovecot's resource-server client)
 *   /control/...                 failure injection and counters for tests (below)
 *
 * It is node:http rather than Bun.serve because one failure mode closes the connection without an
 * answer, which needs the request's socket.
 *
 * Usage: bun scripts/upstreams/oauth-server.ts CONFIG_JSON (written by scripts/upstreams/oauth.ts)
 */
import { createHash, createSign, generateKeyPairSync, type KeyObject, randomBytes, timingSafeEqual } from "node:crypto";
import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer } from "node:http";

/** What oauth.ts writes for the server process. */
export interface OAuthServerConfig {
  readonly port: number;
  /** The client the proxy (and tests) use: confidential with the secret, public (PKCE) without it. */
  readonly client: { readonly id: string; readonly secret: string };
  /** The resource server (Dovecot) that calls the introspection endpoint. */
  readonly introspectionClient: { readonly id: string; readonly secret: string };
  /** User a token is issued for when the request names none (`login_hint`, `mailbox`). */
  readonly defaultUser: string;
  /** Tokens, codes, settings and counters are kept here across restarts; absent: memory only. */
  readonly stateFile?: string;
  readonly pidFile?: string;
}

/** Default access-token lifetime (seconds); /control/lifetime changes it. */
export const DEFAULT_ACCESS_TOKEN_LIFETIME_S = 3600;
/** Authorization codes are single-use and live this long (RFC 6749 §4.1.2 recommends at most 10 minutes). */
export const AUTHORIZATION_CODE_LIFETIME_S = 600;
/** Device codes live this long (RFC 8628 §3.2 expires_in). */
export const DEVICE_CODE_LIFETIME_S = 600;
/** Minimum seconds between two polls of one device code; faster polls get slow_down (RFC 8628 §3.5). */
export const DEVICE_POLL_INTERVAL_S = 1;
/**
 * A token response for a grant whose scope includes `openid` also carries an `id_token` (OpenID Connect Core
 * §3.1.3.3), as Keycloak's does; its issuer is this path under the server's origin, like Keycloak's
 * `https://host/realms/NAME`: not the origin of the token endpoint.
 */
export const ID_TOKEN_ISSUER_PATH = "/realms/mailgator";
/** Request bodies larger than this are refused with 413. */
export const MAX_BODY_BYTES = 64 * 1024;

export const GRANT_TYPES = [
  "authorization_code",
  "refresh_token",
  "client_credentials",
  "urn:ietf:params:oauth:grant-type:device_code",
] as const;
export type GrantType = (typeof GRANT_TYPES)[number];

export interface TokenRecord {
  readonly kind: "access" | "refresh";
  readonly value: string;
  readonly user: string;
  readonly clientId: string;
  readonly scope: string;
  /** The grant that produced it. */
  readonly grant: GrantType;
  /** Milliseconds since the epoch. */
  readonly issuedAt: number;
  /** Access tokens only (ms since the epoch). */
  expiresAt: number | null;
  revoked: boolean;
  /** Refresh token this access token was issued with (or the refresh token itself). */
  readonly refreshToken: string | null;
  /** The first refresh token of the chain a rotation made from one grant (absent: the token is its own family). */
  readonly family?: string | null;
  /** A refresh token replaced by rotation (and revoked): presenting it again is a reuse. */
  rotated?: boolean;
}

interface CodeRecord {
  readonly user: string;
  readonly clientId: string;
  readonly redirectUri: string;
  readonly scope: string;
  readonly challenge: string | null;
  readonly expiresAt: number;
  used: boolean;
}

interface DeviceRecord {
  readonly userCode: string;
  readonly user: string;
  readonly clientId: string;
  readonly scope: string;
  /** Milliseconds since the epoch; /control/device_expire moves it to the past. */
  expiresAt: number;
  state: "pending" | "approved" | "denied" | "used";
  polls: number;
  lastPollAt: number;
}

interface Failure {
  readonly mode: "status" | "close";
  readonly status: number;
  /** Requests left to fail; null: until cleared. */
  remaining: number | null;
  /** Only token requests for this user (null: every token request). */
  readonly user: string | null;
}

interface SlowDown {
  /** Polls left to answer slow_down. */
  remaining: number;
  /** Only polls of this user's device codes (null: every device code). */
  readonly user: string | null;
}

interface DeviceInterval {
  /** The `interval` the device authorization answers (RFC 8628 §3.2). */
  readonly seconds: number;
  /** Device authorizations left to answer it. */
  remaining: number;
  /** Only device authorizations for this user (null: every one). */
  readonly user: string | null;
}

interface Settings {
  accessTokenLifetime: number;
  rotation: boolean;
  /** With rotation: a rotated refresh token presented again revokes its whole family (reuse detection). */
  reuseRevocation?: boolean;
  perUser: Record<
    string,
    {
      accessTokenLifetime?: number;
      rotation?: boolean;
      reuseRevocation?: boolean;
      deviceAutoApprove?: boolean;
      denyAuthorize?: boolean;
      /**
       * The `expires_in` this user's device authorizations announce (/control/device_lifetime); the codes themselves
       * stay valid for DEVICE_CODE_LIFETIME_S, as a provider's may outlive what it said.
       */
      deviceAnnouncedLifetime?: number;
    }
  >;
  /** Whether a device code is approved by its first poll (/control/device). */
  deviceAutoApprove: boolean;
  /** Whether the authorize endpoint redirects with access_denied (/control/authorize). */
  denyAuthorize: boolean;
  failures: Failure[];
  /** Device-code polls to answer slow_down whenever they come (/control/slow_down). */
  slowDowns?: SlowDown[];
  /** Device authorizations to answer another `interval` (/control/device_interval). */
  deviceIntervals?: DeviceInterval[];
  /** Per user: token responses are held back this long after the grant was made (a slow provider). */
  tokenDelays?: Record<string, number>;
}

export interface Counters {
  /** Token requests received (including those answered by an injected failure), per grant type. */
  token: Record<string, number>;
  /** The same, per user (when the request names a known code, token or device code). */
  tokenByUser: Record<string, Record<string, number>>;
  /** Introspection requests, and those per user of an active token. */
  introspect: number;
  introspectByUser: Record<string, number>;
  /** Token requests answered by an injected failure. */
  injectedFailures: number;
  /** Refresh tokens presented again after rotation retired them, with reuse revocation on (their family revoked). */
  reuseRevocations?: number;
}

interface State {
  tokens: Record<string, TokenRecord>;
  codes: Record<string, CodeRecord>;
  devices: Record<string, DeviceRecord>;
  settings: Settings;
  counters: Counters;
}

function freshState(): State {
  return {
    tokens: {},
    codes: {},
    devices: {},
    settings: {
      accessTokenLifetime: DEFAULT_ACCESS_TOKEN_LIFETIME_S,
      rotation: false,
      perUser: {},
      deviceAutoApprove: true,
      denyAuthorize: false,
      failures: [],
    },
    counters: {
      token: {},
      tokenByUser: {},
      introspect: 0,
      introspectByUser: {},
      injectedFailures: 0,
      reuseRevocations: 0,
    },
  };
}

/** An opaque random token: 32 random bytes, base64url (43 characters). */
function randomToken(): string {
  return randomBytes(32).toString("base64url");
}

/** RFC 8628 §6.1: user codes from 20 consonants, shown as XXXX-XXXX. */
function userCode(): string {
  const alphabet = "BCDFGHJKLMNPQRSTVWXZ";
  const bytes = randomBytes(8);
  const chars = [...bytes].map((byte) => alphabet[byte % alphabet.length]);
  return `${chars.slice(0, 4).join("")}-${chars.slice(4).join("")}`;
}

function sameSecret(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** `delayMs`: the answer is written that long after it was made (/control/delay). */
type Reply = { status: number; headers?: Record<string, string>; body?: unknown; delayMs?: number } | "close";

class OAuthError {
  constructor(
    readonly status: number,
    readonly error: string,
    readonly description: string,
  ) {}
}

/** The server's logic, without the HTTP layer (so a unit test can drive it). */
export class Authority {
  readonly config: OAuthServerConfig;
  readonly state: State;
  readonly baseUrl: string;
  /** The RS256 key ID tokens are signed with: made at the first one, never kept (nothing here checks them). */
  #idTokenKey: KeyObject | null = null;

  constructor(config: OAuthServerConfig) {
    this.config = config;
    this.baseUrl = `http://127.0.0.1:${config.port}`;
    this.state = config.stateFile !== undefined && existsSync(config.stateFile) ? this.#load() : freshState();
  }

  #load(): State {
    const loaded = JSON.parse(readFileSync(this.config.stateFile as string, "utf8")) as State;
    return { ...freshState(), ...loaded };
  }

  /** Writes the state atomically (temporary file + rename) after every change. */
  save(): void {
    if (this.config.stateFile === undefined) return;
    const temporary = `${this.config.stateFile}.tmp`;
    writeFileSync(temporary, JSON.stringify(this.state), { mode: 0o600 });
    renameSync(temporary, this.config.stateFile);
  }

  handle(method: string, url: URL, headers: Record<string, string | undefined>, body: URLSearchParams): Reply {
    try {
      const path = url.pathname;
      if (path === "/authorize" && method === "GET") return this.#authorize(url.searchParams);
      if (path === "/token" && method === "POST") return this.#token(headers, body);
      if (path === "/device_authorization" && method === "POST")
        return this.#deviceAuthorization(headers, body, url.searchParams);
      if (path === "/device" && method === "GET") return this.#devicePage(url.searchParams);
      if ((path === "/device/approve" || path === "/device/deny") && (method === "GET" || method === "POST"))
        return this.#deviceDecision(
          path.endsWith("approve"),
          url.searchParams.get("user_code") ?? body.get("user_code"),
        );
      if (path === "/introspect" && method === "POST") return this.#introspect(headers, body);
      if (path.startsWith("/control/")) return this.#control(method, path.slice("/control/".length), url.searchParams);
      return { status: 404, body: { error: "not_found" } };
    } catch (error) {
      if (error instanceof OAuthError)
        return { status: error.status, body: { error: error.error, error_description: error.description } };
      throw error;
    }
  }

  // --- authorization endpoint (RFC 6749 §4.1.1, RFC 7636 §4.3) ---

  #authorize(params: URLSearchParams): Reply {
    const clientId = params.get("client_id");
    const redirectUri = params.get("redirect_uri");
    // §4.1.2.1: with an unknown client or a bad redirect URI, never redirect.
    if (clientId !== this.config.client.id)
      return { status: 400, body: { error: "invalid_client", error_description: "unknown client_id" } };
    let target: URL;
    try {
      target = new URL(redirectUri ?? "");
    } catch {
      return { status: 400, body: { error: "invalid_request", error_description: "redirect_uri is not a URL" } };
    }
    if ((target.protocol !== "http:" && target.protocol !== "https:") || target.hash !== "")
      return { status: 400, body: { error: "invalid_request", error_description: "redirect_uri must be http(s)" } };
    const state = params.get("state");
    const redirect = (values: Record<string, string>): Reply => {
      for (const [key, value] of Object.entries(values)) target.searchParams.set(key, value);
      if (state !== null) target.searchParams.set("state", state);
      return { status: 302, headers: { location: target.toString() } };
    };
    if (params.get("response_type") !== "code")
      return redirect({ error: "unsupported_response_type", error_description: "only response_type=code" });
    const challenge = params.get("code_challenge");
    const method = params.get("code_challenge_method");
    if (challenge !== null && method !== "S256")
      // RFC 7636 §4.3: the default method is "plain"; only S256 is accepted here.
      return redirect({ error: "invalid_request", error_description: "code_challenge_method must be S256" });
    if (challenge !== null && !/^[A-Za-z0-9_-]{43}$/.test(challenge))
      return redirect({ error: "invalid_request", error_description: "code_challenge is not a base64url SHA-256" });
    const user = params.get("login_hint") || this.config.defaultUser;
    if (this.state.settings.perUser[user]?.denyAuthorize ?? this.state.settings.denyAuthorize)
      return redirect({ error: "access_denied", error_description: "denied by /control/authorize" });
    const code = randomToken();
    this.state.codes[code] = {
      user,
      clientId,
      redirectUri: redirectUri as string,
      scope: params.get("scope") ?? "",
      challenge,
      expiresAt: Date.now() + AUTHORIZATION_CODE_LIFETIME_S * 1000,
      used: false,
    };
    this.save();
    return redirect({ code });
  }

  // --- token endpoint ---

  /**
   * Client authentication (RFC 6749 §2.3.1): HTTP Basic or client_secret in the body, not both.
   * Returns true for an authenticated confidential client, false for a public one (client_id only).
   */
  #clientAuth(headers: Record<string, string | undefined>, body: URLSearchParams): boolean {
    const basic = parseBasic(headers["authorization"]);
    const postedSecret = body.get("client_secret");
    if (basic !== undefined && postedSecret !== null)
      throw new OAuthError(400, "invalid_request", "two client authentication methods");
    const id = basic?.id ?? body.get("client_id");
    const secret = basic?.secret ?? postedSecret;
    if (id !== this.config.client.id) throw new OAuthError(401, "invalid_client", "unknown client");
    if (body.has("client_id") && body.get("client_id") !== id)
      throw new OAuthError(400, "invalid_request", "client_id differs from the authenticated client");
    if (secret === null) return false;
    if (!sameSecret(secret, this.config.client.secret))
      throw new OAuthError(401, "invalid_client", "client authentication failed");
    return true;
  }

  #token(headers: Record<string, string | undefined>, body: URLSearchParams): Reply {
    const grant = body.get("grant_type") ?? "";
    const user = this.#requestUser(grant, body);
    this.#count(grant, user);
    const failure = this.#takeFailure(user);
    if (failure !== undefined) {
      this.state.counters.injectedFailures++;
      this.save();
      if (failure.mode === "close") return "close";
      return {
        status: failure.status,
        body: { error: "server_error", error_description: "injected by /control/fail" },
      };
    }
    this.save();
    const confidential = this.#clientAuth(headers, body);
    let reply: Reply;
    if (grant === "authorization_code") reply = this.#codeGrant(body, confidential);
    else if (grant === "refresh_token") reply = this.#refreshGrant(body);
    else if (grant === "client_credentials") reply = this.#clientCredentialsGrant(body, confidential);
    else if (grant === "urn:ietf:params:oauth:grant-type:device_code") reply = this.#deviceGrant(body);
    else throw new OAuthError(400, "unsupported_grant_type", `grant_type ${JSON.stringify(grant)}`);
    this.save();
    const delayMs = user === undefined ? 0 : (this.state.settings.tokenDelays?.[user] ?? 0);
    return delayMs > 0 && reply !== "close" ? { ...reply, delayMs } : reply;
  }

  /** The user a token request is about, for counters and per-user failures (undefined when unknown). */
  #requestUser(grant: string, body: URLSearchParams): string | undefined {
    if (grant === "authorization_code") return this.state.codes[body.get("code") ?? ""]?.user;
    if (grant === "refresh_token") return this.state.tokens[body.get("refresh_token") ?? ""]?.user;
    if (grant === "client_credentials") return body.get("mailbox") || this.config.defaultUser;
    if (grant === "urn:ietf:params:oauth:grant-type:device_code")
      return this.state.devices[body.get("device_code") ?? ""]?.user;
    return undefined;
  }

  #count(grant: string, user: string | undefined): void {
    const counters = this.state.counters;
    counters.token[grant] = (counters.token[grant] ?? 0) + 1;
    if (user === undefined) return;
    const perUser = counters.tokenByUser[user] ?? {};
    perUser[grant] = (perUser[grant] ?? 0) + 1;
    counters.tokenByUser[user] = perUser;
  }

  #takeFailure(user: string | undefined): Failure | undefined {
    const failures = this.state.settings.failures;
    const index = failures.findIndex((failure) => failure.user === null || failure.user === user);
    const failure = failures[index];
    if (failure === undefined) return undefined;
    if (failure.remaining !== null && --failure.remaining <= 0) failures.splice(index, 1);
    return failure;
  }

  /** True when a slow_down of /control/slow_down applies to this poll (and is used up by it). */
  #takeSlowDown(user: string): boolean {
    const slowDowns = this.state.settings.slowDowns ?? [];
    const index = slowDowns.findIndex((slowDown) => slowDown.user === null || slowDown.user === user);
    const slowDown = slowDowns[index];
    if (slowDown === undefined) return false;
    if (--slowDown.remaining <= 0) slowDowns.splice(index, 1);
    return true;
  }

  /** The `interval` a device authorization for `user` answers: one of /control/device_interval (used up), else 1 s. */
  #takeDeviceInterval(user: string): number {
    const intervals = this.state.settings.deviceIntervals ?? [];
    const index = intervals.findIndex((interval) => interval.user === null || interval.user === user);
    const interval = intervals[index];
    if (interval === undefined) return DEVICE_POLL_INTERVAL_S;
    if (--interval.remaining <= 0) intervals.splice(index, 1);
    return interval.seconds;
  }

  #codeGrant(body: URLSearchParams, confidential: boolean): Reply {
    const code = body.get("code") ?? "";
    const record = this.state.codes[code];
    if (record === undefined || record.used || record.expiresAt < Date.now())
      throw new OAuthError(400, "invalid_grant", "unknown, used or expired code");
    // §4.1.3: a code is single-use, even when this exchange fails below.
    record.used = true;
    if (record.redirectUri !== body.get("redirect_uri"))
      throw new OAuthError(400, "invalid_grant", "redirect_uri differs from the authorization request");
    const verifier = body.get("code_verifier");
    if (record.challenge !== null) {
      // RFC 7636 §4.1, §4.6: 43–128 unreserved characters; BASE64URL(SHA256(verifier)) == challenge.
      if (verifier === null || !/^[A-Za-z0-9._~-]{43,128}$/.test(verifier))
        throw new OAuthError(400, "invalid_grant", "code_verifier missing or malformed");
      const computed = createHash("sha256").update(verifier).digest("base64url");
      if (!sameSecret(computed, record.challenge))
        throw new OAuthError(400, "invalid_grant", "PKCE verification failed");
    } else if (verifier !== null) {
      throw new OAuthError(400, "invalid_grant", "code_verifier without a code_challenge");
    } else if (!confidential) {
      throw new OAuthError(401, "invalid_client", "a public client must use PKCE");
    }
    return this.#issue(record.user, record.clientId, record.scope, "authorization_code", true);
  }

  #refreshGrant(body: URLSearchParams): Reply {
    const record = this.state.tokens[body.get("refresh_token") ?? ""];
    if (record?.kind === "refresh" && record.rotated === true && this.#reuseRevocation(record.user)) {
      // OAuth 2.0 Security BCP (refresh token rotation): a retired refresh token presented again may be a stolen
      // copy, so every token of its family, the live refresh token and its access tokens too, is revoked.
      const family = record.family ?? record.value;
      for (const token of Object.values(this.state.tokens)) {
        if ((token.family ?? token.refreshToken) === family) token.revoked = true;
      }
      this.state.counters.reuseRevocations = (this.state.counters.reuseRevocations ?? 0) + 1;
      throw new OAuthError(400, "invalid_grant", "refresh token reused: its family is revoked");
    }
    if (record === undefined || record.kind !== "refresh" || record.revoked)
      throw new OAuthError(400, "invalid_grant", "unknown or revoked refresh token");
    const scope = body.get("scope") ?? record.scope;
    // RFC 6749 §6: a narrower scope only.
    const granted = new Set(record.scope.split(" "));
    if (!scope.split(" ").every((entry) => entry === "" || granted.has(entry)))
      throw new OAuthError(400, "invalid_scope", "scope beyond the original grant");
    if (this.#rotation(record.user)) {
      // RFC 6749 §6 / OAuth 2.0 Security BCP: the old refresh token is invalid once replaced.
      record.revoked = true;
      record.rotated = true;
      const family = record.family ?? record.value;
      return this.#issue(record.user, record.clientId, scope, "refresh_token", true, null, family);
    }
    return this.#issue(
      record.user,
      record.clientId,
      scope,
      "refresh_token",
      false,
      record.value,
      record.family ?? null,
    );
  }

  #clientCredentialsGrant(body: URLSearchParams, confidential: boolean): Reply {
    if (!confidential) throw new OAuthError(401, "invalid_client", "client_credentials needs client authentication");
    // RFC 6749 §4.4.3: no refresh token. `mailbox` (not standard) names the mailbox the app token is for.
    const user = body.get("mailbox") || this.config.defaultUser;
    return this.#issue(user, this.config.client.id, body.get("scope") ?? "", "client_credentials", false);
  }

  #deviceGrant(body: URLSearchParams): Reply {
    const code = body.get("device_code") ?? "";
    const record = this.state.devices[code];
    if (record === undefined || record.state === "used")
      throw new OAuthError(400, "invalid_grant", "unknown device_code");
    const now = Date.now();
    if (record.expiresAt < now) throw new OAuthError(400, "expired_token", "the device code expired");
    const early = record.polls > 0 && now - record.lastPollAt < DEVICE_POLL_INTERVAL_S * 1000;
    record.polls++;
    record.lastPollAt = now;
    if (record.state === "denied") throw new OAuthError(400, "access_denied", "the user denied the request");
    if (early) throw new OAuthError(400, "slow_down", `poll at most every ${DEVICE_POLL_INTERVAL_S} s`);
    if (this.#takeSlowDown(record.user)) throw new OAuthError(400, "slow_down", "injected by /control/slow_down");
    if (record.state === "pending") {
      if (this.state.settings.perUser[record.user]?.deviceAutoApprove ?? this.state.settings.deviceAutoApprove)
        record.state = "approved";
      throw new OAuthError(400, "authorization_pending", "waiting for the user");
    }
    record.state = "used";
    return this.#issue(
      record.user,
      record.clientId,
      record.scope,
      "urn:ietf:params:oauth:grant-type:device_code",
      true,
    );
  }

  #lifetime(user: string): number {
    return this.state.settings.perUser[user]?.accessTokenLifetime ?? this.state.settings.accessTokenLifetime;
  }

  #rotation(user: string): boolean {
    return this.state.settings.perUser[user]?.rotation ?? this.state.settings.rotation;
  }

  #reuseRevocation(user: string): boolean {
    return this.state.settings.perUser[user]?.reuseRevocation ?? this.state.settings.reuseRevocation ?? false;
  }

  /** Issues an access token (and a new refresh token when asked), RFC 6749 §5.1. */
  #issue(
    user: string,
    clientId: string,
    scope: string,
    grant: GrantType,
    withRefresh: boolean,
    existingRefresh: string | null = null,
    family: string | null = null,
  ): Reply {
    const now = Date.now();
    const lifetime = this.#lifetime(user);
    const refresh = withRefresh ? randomToken() : existingRefresh;
    if (withRefresh && refresh !== null) {
      const common = { user, clientId, scope, grant, issuedAt: now, revoked: false, family: family ?? refresh };
      this.state.tokens[refresh] = {
        ...common,
        kind: "refresh",
        value: refresh,
        expiresAt: null,
        refreshToken: refresh,
      };
    }
    const access = randomToken();
    this.state.tokens[access] = {
      kind: "access",
      value: access,
      user,
      clientId,
      scope,
      grant,
      issuedAt: now,
      expiresAt: now + lifetime * 1000,
      revoked: false,
      refreshToken: refresh,
      family: family ?? refresh,
    };
    const body: Record<string, unknown> = { access_token: access, token_type: "Bearer", expires_in: lifetime, scope };
    if (withRefresh) body["refresh_token"] = refresh;
    if (scope.split(" ").includes("openid")) body["id_token"] = this.#idToken(user, clientId, now, lifetime);
    return { status: 200, body };
  }

  /** An OpenID Connect ID token (Core §2) for `user`, signed RS256. */
  #idToken(user: string, clientId: string, now: number, lifetime: number): string {
    this.#idTokenKey ??= generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey;
    const part = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url");
    const iat = Math.floor(now / 1000);
    const claims = {
      iss: `${this.baseUrl}${ID_TOKEN_ISSUER_PATH}`,
      sub: user,
      aud: clientId,
      azp: clientId,
      iat,
      exp: iat + Math.max(lifetime, 60),
      email: user,
    };
    const input = `${part({ alg: "RS256", typ: "JWT", kid: "local" })}.${part(claims)}`;
    const signature = createSign("RSA-SHA256").update(input).sign(this.#idTokenKey).toString("base64url");
    return `${input}.${signature}`;
  }

  // --- device authorization (RFC 8628) ---

  /**
   * `login_hint` picks the user, from the body or else from the endpoint's query: a client keeps a configured
   * endpoint URL's query (as RFC 6749 §3.1 and §3.2 ask for the other endpoints), so a config can name the user for a
   * client that sends no `login_hint` (RFC 8628 §3.1 has none).
   */
  #deviceAuthorization(headers: Record<string, string | undefined>, body: URLSearchParams, query: URLSearchParams) {
    this.#clientAuth(headers, body);
    const device = randomToken();
    const code = userCode();
    const user = body.get("login_hint") || query.get("login_hint") || this.config.defaultUser;
    const interval = this.#takeDeviceInterval(user);
    this.state.devices[device] = {
      userCode: code,
      user,
      clientId: this.config.client.id,
      scope: body.get("scope") ?? "",
      expiresAt: Date.now() + DEVICE_CODE_LIFETIME_S * 1000,
      state: "pending",
      polls: 0,
      lastPollAt: 0,
    };
    this.save();
    return {
      status: 200,
      body: {
        device_code: device,
        user_code: code,
        verification_uri: `${this.baseUrl}/device`,
        verification_uri_complete: `${this.baseUrl}/device?user_code=${code}`,
        expires_in: this.state.settings.perUser[user]?.deviceAnnouncedLifetime ?? DEVICE_CODE_LIFETIME_S,
        interval,
      },
    };
  }

  #devicePage(params: URLSearchParams): Reply {
    const code = params.get("user_code") ?? "";
    return {
      status: 200,
      headers: { "content-type": "text/plain; charset=utf-8" },
      body: `Local test authorization server. Approve: ${this.baseUrl}/device/approve?user_code=${code}\n`,
    };
  }

  #deviceDecision(approve: boolean, code: string | null): Reply {
    const record = Object.values(this.state.devices).find((device) => device.userCode === code);
    if (record === undefined || record.state !== "pending")
      return { status: 404, body: { error: "unknown_user_code", error_description: "no pending request" } };
    record.state = approve ? "approved" : "denied";
    this.save();
    return { status: 200, body: { user_code: code, state: record.state, user: record.user } };
  }

  // --- introspection (RFC 7662) ---

  #introspect(headers: Record<string, string | undefined>, body: URLSearchParams): Reply {
    // §2.1: the protected resource must authenticate.
    const basic = parseBasic(headers["authorization"]);
    const client = this.config.introspectionClient;
    if (basic === undefined || basic.id !== client.id || !sameSecret(basic.secret, client.secret))
      return {
        status: 401,
        headers: { "www-authenticate": 'Basic realm="introspection"' },
        body: { error: "invalid_client" },
      };
    this.state.counters.introspect++;
    const record = this.state.tokens[body.get("token") ?? ""];
    const active =
      record !== undefined &&
      record.kind === "access" &&
      !record.revoked &&
      record.expiresAt !== null &&
      record.expiresAt > Date.now();
    // Introspection changes only counters: they reach the state file with the next change, so that
    // a load test's thousands of logins do not each rewrite it.
    if (!active) return { status: 200, body: { active: false } };
    this.state.counters.introspectByUser[record.user] = (this.state.counters.introspectByUser[record.user] ?? 0) + 1;
    return {
      status: 200,
      body: {
        active: true,
        username: record.user,
        sub: record.user,
        scope: record.scope,
        client_id: record.clientId,
        token_type: "Bearer",
        iat: Math.floor(record.issuedAt / 1000),
        exp: Math.floor((record.expiresAt as number) / 1000),
      },
    };
  }

  // --- control endpoints (tests only) ---

  #control(method: string, name: string, params: URLSearchParams): Reply {
    const user = params.get("user");
    const settings = this.state.settings;
    const ok = (extra: Record<string, unknown> = {}): Reply => {
      this.save();
      return { status: 200, body: { ok: true, ...extra } };
    };
    if (method === "GET" && name === "counters") return { status: 200, body: this.state.counters };
    if (method === "GET" && name === "tokens") {
      const tokens = Object.values(this.state.tokens).filter((token) => user === null || token.user === user);
      return { status: 200, body: { tokens } };
    }
    if (method === "GET" && name === "settings") return { status: 200, body: settings };
    if (method !== "POST") return { status: 405, body: { error: "use POST" } };
    if (name === "lifetime") {
      const seconds = integerParam(params, "seconds", 0);
      if (user === null) settings.accessTokenLifetime = seconds;
      else settings.perUser[user] = { ...settings.perUser[user], accessTokenLifetime: seconds };
      return ok({ seconds });
    }
    if (name === "rotation") {
      const on = booleanParam(params, "on");
      if (user === null) settings.rotation = on;
      else settings.perUser[user] = { ...settings.perUser[user], rotation: on };
      return ok({ rotation: on });
    }
    if (name === "reuse") {
      const on = booleanParam(params, "on");
      if (user === null) settings.reuseRevocation = on;
      else settings.perUser[user] = { ...settings.perUser[user], reuseRevocation: on };
      return ok({ reuseRevocation: on });
    }
    if (name === "revoke" || name === "expire") {
      const matched = this.#matchTokens(params);
      for (const token of matched) {
        if (name === "revoke") token.revoked = true;
        else if (token.kind === "access") token.expiresAt = Math.min(token.expiresAt ?? 0, Date.now());
      }
      return ok({ tokens: matched.length });
    }
    if (name === "fail") {
      const mode = params.get("mode") ?? "status";
      if (mode === "off") {
        settings.failures = settings.failures.filter((failure) => user !== null && failure.user !== user);
        return ok({ failures: settings.failures.length });
      }
      if (mode !== "status" && mode !== "close") throw new OAuthError(400, "invalid_request", "mode: status|close|off");
      const status = params.has("status") ? integerParam(params, "status", 500) : 503;
      if (status > 599) throw new OAuthError(400, "invalid_request", "status must be 500..599");
      const remaining = params.has("count") ? integerParam(params, "count", 1) : null;
      settings.failures.push({ mode, status, remaining, user });
      return ok({ failures: settings.failures.length });
    }
    if (name === "delay") {
      if (user === null) throw new OAuthError(400, "invalid_request", "delay needs user=");
      const ms = integerParam(params, "ms", 0);
      settings.tokenDelays = { ...settings.tokenDelays, [user]: ms };
      return ok({ ms });
    }
    if (name === "slow_down") {
      const count = integerParam(params, "count", 0);
      const kept = (settings.slowDowns ?? []).filter((slowDown) => user !== null && slowDown.user !== user);
      settings.slowDowns = count === 0 ? kept : [...kept, { remaining: count, user }];
      return ok({ slowDowns: settings.slowDowns.length });
    }
    if (name === "device_interval") {
      const count = params.has("count") ? integerParam(params, "count", 0) : 1;
      const kept = (settings.deviceIntervals ?? []).filter((interval) => user !== null && interval.user !== user);
      settings.deviceIntervals =
        count === 0 ? kept : [...kept, { seconds: integerParam(params, "seconds", 1), remaining: count, user }];
      return ok({ deviceIntervals: settings.deviceIntervals.length });
    }
    if (name === "device") {
      const on = booleanParam(params, "auto_approve");
      if (user === null) settings.deviceAutoApprove = on;
      else settings.perUser[user] = { ...settings.perUser[user], deviceAutoApprove: on };
      return ok({ deviceAutoApprove: on });
    }
    if (name === "device_lifetime") {
      if (user === null) throw new OAuthError(400, "invalid_request", "device_lifetime needs user=");
      const seconds = integerParam(params, "seconds", 0);
      const { deviceAnnouncedLifetime: _, ...rest } = settings.perUser[user] ?? {};
      settings.perUser[user] = seconds === 0 ? rest : { ...rest, deviceAnnouncedLifetime: seconds };
      return ok({ deviceAnnouncedLifetime: seconds === 0 ? DEVICE_CODE_LIFETIME_S : seconds });
    }
    if (name === "device_expire") {
      if (user === null) throw new OAuthError(400, "invalid_request", "device_expire needs user=");
      const now = Date.now();
      const expired = Object.values(this.state.devices).filter(
        (device) => device.user === user && device.state !== "used" && device.expiresAt >= now,
      );
      // #deviceGrant answers expired_token once expiresAt is in the past.
      for (const device of expired) device.expiresAt = now - 1;
      return ok({ devices: expired.length });
    }
    if (name === "authorize") {
      const on = booleanParam(params, "deny");
      if (user === null) settings.denyAuthorize = on;
      else settings.perUser[user] = { ...settings.perUser[user], denyAuthorize: on };
      return ok({ denyAuthorize: on });
    }
    if (name === "reset") {
      const fresh = freshState();
      this.state.settings = fresh.settings;
      return ok();
    }
    return { status: 404, body: { error: "unknown control endpoint" } };
  }

  /** Tokens named by `user=`, `refresh_token=` (it and the access tokens issued with it) or `token=`. */
  #matchTokens(params: URLSearchParams): TokenRecord[] {
    const user = params.get("user");
    const refresh = params.get("refresh_token");
    const token = params.get("token");
    if ([user, refresh, token].filter((value) => value !== null).length !== 1)
      throw new OAuthError(400, "invalid_request", "give exactly one of user, refresh_token, token");
    return Object.values(this.state.tokens).filter((record) =>
      user !== null
        ? record.user === user
        : refresh !== null
          ? record.refreshToken === refresh
          : record.value === token,
    );
  }
}

function integerParam(params: URLSearchParams, name: string, min: number): number {
  const value = Number(params.get(name));
  if (!params.has(name) || !Number.isInteger(value) || value < min)
    throw new OAuthError(400, "invalid_request", `${name} must be an integer >= ${min}`);
  return value;
}

function booleanParam(params: URLSearchParams, name: string): boolean {
  const value = params.get(name);
  if (value !== "true" && value !== "false") throw new OAuthError(400, "invalid_request", `${name}: true|false`);
  return value === "true";
}

/** RFC 7617 Basic credentials; RFC 6749 §2.3.1 form-encodes id and secret inside them. */
function parseBasic(header: string | undefined): { id: string; secret: string } | undefined {
  const match = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header ?? "");
  if (match === null) return undefined;
  const decoded = Buffer.from(match[1] as string, "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  if (colon < 0) return undefined;
  try {
    return {
      id: decodeURIComponent(decoded.slice(0, colon).replace(/\+/g, " ")),
      secret: decodeURIComponent(decoded.slice(colon + 1).replace(/\+/g, " ")),
    };
  } catch {
    return undefined;
  }
}

async function readBody(request: IncomingMessage): Promise<string | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) return undefined;
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString("utf8");
}

/** Serves the authority on 127.0.0.1; resolves once listening. */
export async function serve(config: OAuthServerConfig): Promise<{ authority: Authority; close(): Promise<void> }> {
  const authority = new Authority(config);
  const server = createServer(async (request: IncomingMessage, response: ServerResponse) => {
    const text = await readBody(request);
    if (text === undefined) {
      response.writeHead(413).end();
      return;
    }
    const url = new URL(request.url ?? "/", authority.baseUrl);
    const headers: Record<string, string | undefined> = {};
    for (const [key, value] of Object.entries(request.headers)) headers[key] = Array.isArray(value) ? value[0] : value;
    const form = (headers["content-type"] ?? "").startsWith("application/x-www-form-urlencoded") ? text : "";
    let reply: Reply;
    try {
      reply = authority.handle(request.method ?? "GET", url, headers, new URLSearchParams(form));
    } catch (error) {
      console.error(`oauth-server: ${request.method} ${url.pathname}: ${String(error)}`);
      reply = { status: 500, body: { error: "server_error" } };
    }
    if (reply === "close") {
      request.socket.destroy();
      return;
    }
    if (reply.delayMs !== undefined) await new Promise((resolve) => setTimeout(resolve, reply.delayMs));
    const isText = typeof reply.body === "string";
    response.writeHead(reply.status, {
      "cache-control": "no-store",
      "content-type": isText ? "text/plain; charset=utf-8" : "application/json",
      ...reply.headers,
    });
    response.end(reply.body === undefined ? "" : isText ? (reply.body as string) : JSON.stringify(reply.body));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host: "127.0.0.1", port: config.port }, resolve);
  });
  return {
    authority,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

if (import.meta.main) {
  const configPath = process.argv[2];
  if (configPath === undefined) {
    console.error("usage: bun scripts/upstreams/oauth-server.ts CONFIG_JSON");
    process.exit(2);
  }
  const config = JSON.parse(readFileSync(configPath, "utf8")) as OAuthServerConfig;
  const server = await serve(config);
  // On SIGTERM (stop.ts), close the listening socket and every connection before exiting: with the
  // default handling, the process could linger as a zombie main thread still holding the port for a
  // moment after stop.ts saw it exit (seen with Dovecot's keep-alive introspection connections).
  process.once("SIGTERM", () => {
    setTimeout(() => process.exit(0), 1000).unref();
    void server.close().then(() => process.exit(0));
  });
  if (config.pidFile !== undefined) writeFileSync(config.pidFile, `${process.pid}\n`);
  console.error(`oauth-server: listening on 127.0.0.1:${config.port}`);
}
