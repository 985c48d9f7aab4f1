/**
 * The OAuth2 protocol, through oauth4webapi (RFC 6749, RFC 7636 PKCE, RFC 8628 device grant): requests to an
 * account's token endpoint, and the sorting of their failures into "the grant is gone" (a person must log in again)
 * and "try again later" (network, 5xx, 429), which must never cost the stored token.
 */

import * as oauth from "oauth4webapi";
import { cutText, MAX_ROW_REASON } from "../audit/row.ts";
import type { OAuth2Settings } from "../config/index.ts";
import { escapes } from "../mail/display.ts";
import { isLoopbackUrlHost } from "../net/ip.ts";
import { isBearerToken } from "../net/sasl.ts";

/** A token request that takes longer than this counts as a network failure (and is retried). */
export const TOKEN_REQUEST_TIMEOUT_MS = 15_000;
/** The lifetime assumed when a token response gives no expires_in (RFC 6749 section 5.1 makes it optional). */
export const DEFAULT_ACCESS_TOKEN_LIFETIME_S = 3600;
/**
 * The longest lifetime taken from expires_in (one day; providers issue an hour or so): a longer one is taken as
 * this, so the token is still refreshed ahead of expiry (a huge value would make its expiry time Infinity: never
 * refreshed, stored without an expiry). An expires_in of 0 is taken as it is: the token is already expiring, used
 * for the login that waited for it and refreshed at the next one (docs/accounts.md "Staying logged in").
 */
export const MAX_ACCESS_TOKEN_LIFETIME_S = 86_400;
/**
 * Longest body read from the token endpoint or the device authorization endpoint: a token response is a few KiB
 * (Microsoft's, the largest here, about 5); a longer one is a failed request (retried), never read whole.
 */
export const MAX_TOKEN_RESPONSE_BYTES = 64 * 1024;

export interface Endpoint {
  readonly as: oauth.AuthorizationServer;
  readonly client: oauth.Client;
  readonly auth: oauth.ClientAuth;
  readonly options: { [oauth.allowInsecureRequests]?: boolean; [oauth.customFetch]?: typeof fetch };
  /**
   * `text` from the provider (an error description) with the client secret, and each of `sent` (what the request
   * carried: a refresh token, a code), replaced: a provider that echoes what it refused does not put a secret into
   * logs, the audit log or `account status` (docs/accounts.md).
   */
  readonly redact: (text: string, sent?: readonly string[]) => string;
}

/** The tokens of one successful token response. */
export interface Grant {
  readonly accessToken: string;
  /** null when the response carries none (client credentials; a provider that does not rotate). */
  readonly refreshToken: string | null;
  /** Seconds, as the provider said, at most MAX_ACCESS_TOKEN_LIFETIME_S (or DEFAULT_ACCESS_TOKEN_LIFETIME_S). */
  readonly expiresIn: number;
  readonly scope: string | null;
}

/** The provider refused the grant itself (RFC 6749 section 5.2 invalid_grant): only a new login helps. */
export class GrantRevoked extends Error {
  override name = "GrantRevoked";
}

/** Worth retrying: the endpoint was unreachable, timed out, answered 5xx or 429, or answered nonsense. */
export class TokenEndpointUnavailable extends Error {
  override name = "TokenEndpointUnavailable";
}

/**
 * A token response whose access token cannot be sent as a Bearer token (RFC 6750): a token_type other than Bearer
 * (RFC 6749 §7.1: a client must not use a token of a type it does not understand), or a value that is no b64token.
 * Retried like any nonsense answer; the refresh token the response carried (`rotatedRefreshToken()`, not in the
 * message or any enumerable property) is still kept by the caller: the provider may have retired the one it was sent.
 */
export class UnusableAccessToken extends TokenEndpointUnavailable {
  override name = "UnusableAccessToken";
  readonly #refreshToken: string | null;
  constructor(message: string, refreshToken: string | null) {
    super(message);
    this.#refreshToken = refreshToken;
  }
  rotatedRefreshToken(): string | null {
    return this.#refreshToken;
  }
}

/** The refresh token a token response carries, or null. */
function refreshTokenOf(body: Record<string, unknown>): string | null {
  const refresh = body["refresh_token"];
  return typeof refresh === "string" && refresh !== "" ? refresh : null;
}

/** Why a token response's access token cannot be used as a Bearer token, or null when it can. */
function unusable(body: Record<string, unknown>): UnusableAccessToken | null {
  const type = body["token_type"];
  const refresh = refreshTokenOf(body);
  if (typeof type !== "string" || type.toLowerCase() !== "bearer") {
    const named = typeof type === "string" ? ` (token_type ${JSON.stringify(type.slice(0, 40))})` : "";
    return new UnusableAccessToken(
      escapes(`the token endpoint issued a token that is not a Bearer token${named}`),
      refresh,
    );
  }
  const access = body["access_token"];
  if (typeof access !== "string" || !isBearerToken(access))
    return new UnusableAccessToken(
      "the token endpoint issued an access token that is not an RFC 6750 b64token",
      refresh,
    );
  return null;
}

/** Any other OAuth error (invalid_client, unauthorized_client, invalid_scope...): the config or the app is wrong. */
export class TokenRequestRefused extends Error {
  override name = "TokenRequestRefused";
}

/** A plain http:// URL to a loopback host (src/net/ip.ts isLoopbackHost), the only http config validation allows. */
function isLoopbackUrl(url: string | null): boolean {
  if (url === null) return false;
  const u = new URL(url);
  return u.protocol === "http:" && isLoopbackUrlHost(u);
}

/**
 * `body` without the `id_token` member a JSON object has, else as it is. An OpenID Connect provider (a `custom` one
 * with `openid` among its scopes, such as Keycloak) adds an ID token to every token response (OpenID Connect Core
 * §3.1.3.3). Mailgator never uses it: the account is the configured `username`, and the upstream server checks the
 * access token. oauth4webapi would check it, and its issuer against `Endpoint.as.issuer`, which without a discovery
 * document is only the token endpoint's origin (Keycloak's is `https://host/realms/NAME`), failing every login and
 * refresh; the library has no option to leave a present ID token unchecked, so it never sees one.
 */
function withoutIdToken(body: Buffer): Buffer {
  // Most token responses carry none: not parsed twice for nothing (the library parses the body too). A key written
  // with JSON escapes is missed here and left to the library, which checks it: a failed login, never a guess.
  if (!body.includes("id_token")) return body;
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString("utf8"));
  } catch {
    return body; // not JSON: the library refuses it as it is
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed) || !Object.hasOwn(parsed, "id_token"))
    return body;
  const { id_token: _dropped, ...rest } = parsed as Record<string, unknown>;
  return Buffer.from(JSON.stringify(rest));
}

/**
 * `fetch` whose response bodies are read here, up to MAX_TOKEN_RESPONSE_BYTES: the library reads a body whole
 * (`response.json()`), and the provider, or anything on the way to it, chooses its length. An `id_token` in the body
 * is dropped (withoutIdToken).
 */
function capped(inner: typeof fetch): typeof fetch {
  return (async (input: string | URL | Request, init?: RequestInit) => {
    const response = await inner(input, init);
    const chunks: Uint8Array[] = [];
    let total = 0;
    const reader = response.body?.getReader();
    for (;;) {
      const read = await reader?.read();
      if (read === undefined || read.done) break;
      total += read.value.length;
      if (total > MAX_TOKEN_RESPONSE_BYTES) {
        await reader!.cancel().catch(() => {});
        throw new TokenEndpointUnavailable(
          `the response passed ${MAX_TOKEN_RESPONSE_BYTES} bytes (HTTP ${response.status}): not read further`,
        );
      }
      chunks.push(read.value);
    }
    const body = Buffer.concat(chunks);
    const kept = withoutIdToken(body);
    const headers = new Headers(response.headers);
    if (kept !== body) headers.delete("content-length");
    return new Response(kept, { status: response.status, statusText: response.statusText, headers });
  }) as typeof fetch;
}

/**
 * The ways a secret the request carried can come back in a provider's text: percent-encoded as the request body
 * sends it (application/x-www-form-urlencoded, WHATWG URL "urlencoded serializer": "/" is %2F, "~" is %7E, a space
 * "+"), or as a URI component; then as it is. The encoded forms come first: a provider that echoes the raw body
 * would otherwise show the bulk of a Google refresh token ("1//0g..." sent as "1%2F%2F0g...").
 */
function spellings(secret: string): string[] {
  if (secret === "") return [];
  const form = new URLSearchParams({ s: secret }).toString().slice(2);
  return [...new Set([form, encodeURIComponent(secret), secret])];
}

/** The oauth4webapi view of an account's client registration; `fetchImpl` is for tests. */
export function endpointFor(settings: OAuth2Settings, fetchImpl?: typeof fetch): Endpoint {
  const as: oauth.AuthorizationServer = {
    // No discovery document is used: the issuer is only a name here, checked by nothing but oauth4webapi's shape.
    issuer: new URL(settings.tokenUrl).origin,
    token_endpoint: settings.tokenUrl,
    ...(settings.authorizeUrl ? { authorization_endpoint: settings.authorizeUrl } : {}),
    ...(settings.deviceUrl ? { device_authorization_endpoint: settings.deviceUrl } : {}),
  };
  const secret = settings.clientSecret?.reveal();
  // Config validation allows http:// only on a loopback address (a local test server).
  const insecure = [settings.tokenUrl, settings.authorizeUrl, settings.deviceUrl].some(isLoopbackUrl);
  return {
    as,
    client: { client_id: settings.clientId },
    auth: secret === undefined ? oauth.None() : oauth.ClientSecretPost(secret),
    redact: (text, sent = []) =>
      [secret ?? "", ...sent].flatMap(spellings).reduce((t, s) => (s === "" ? t : t.replaceAll(s, "[redacted]")), text),
    options: {
      ...(insecure ? { [oauth.allowInsecureRequests]: true } : {}),
      [oauth.customFetch]: capped(fetchImpl ?? fetch),
    },
  };
}

function requestOptions(ep: Endpoint): oauth.TokenEndpointRequestOptions {
  return { ...ep.options, signal: AbortSignal.timeout(TOKEN_REQUEST_TIMEOUT_MS) };
}

export function grantOf(response: oauth.TokenEndpointResponse): Grant {
  const refused = unusable(response as unknown as Record<string, unknown>);
  if (refused !== null) throw refused;
  // oauth4webapi has checked that expires_in, when present, is a finite number >= 0.
  const expiresIn =
    typeof response.expires_in === "number"
      ? Math.min(Math.max(0, response.expires_in), MAX_ACCESS_TOKEN_LIFETIME_S)
      : DEFAULT_ACCESS_TOKEN_LIFETIME_S;
  return {
    accessToken: response.access_token,
    refreshToken: typeof response.refresh_token === "string" ? response.refresh_token : null,
    expiresIn,
    scope: typeof response.scope === "string" ? response.scope : null,
  };
}

/**
 * The error code and description of an OAuth error, as a short line without any token. The provider chooses both
 * (RFC 6749 §5.2); controls and format characters in them are escaped (src/mail/display.ts), since the line reaches
 * terminals and logs through `mailgator account status` and login errors (docs/accounts.md).
 */
function describe(e: oauth.ResponseBodyError, redact: (text: string) => string): string {
  const text = e.error_description ? `${e.error}: ${e.error_description}` : e.error;
  return escapes(cutText(redact(`${text} (HTTP ${e.status})`).replace(/[\r\n]+/g, " "), MAX_ROW_REASON));
}

/**
 * Sorts a token request's failure; never lets a raw response body (which could hold a token) into a message, and
 * `redact` (Endpoint.redact with what the request sent) takes the secrets out of the text that does go in.
 */
export function classify(e: unknown, redact: (text: string) => string = (text) => text): Error {
  if (e instanceof TokenEndpointUnavailable) return e;
  if (e instanceof oauth.ResponseBodyError) {
    if (e.status >= 500 || e.status === 429) return new TokenEndpointUnavailable(describe(e, redact));
    if (e.error === "invalid_grant") return new GrantRevoked(describe(e, redact));
    return new TokenRequestRefused(describe(e, redact));
  }
  if (e instanceof oauth.UnsupportedOperationError) {
    // oauth4webapi refuses a token_type other than bearer and dpop itself, with the parsed body as the cause.
    const body = (e.cause as { body?: unknown } | undefined)?.body;
    const refused = typeof body === "object" && body !== null ? unusable(body as Record<string, unknown>) : null;
    return refused ?? new TokenEndpointUnavailable(escapes(`unexpected token endpoint response: ${e.message}`));
  }
  if (e instanceof oauth.WWWAuthenticateChallengeError) {
    return new TokenRequestRefused(`the token endpoint refused the client (HTTP ${e.status})`);
  }
  if (e instanceof oauth.OperationProcessingError) {
    const status = (e.cause as { status?: unknown } | undefined)?.status;
    const response = (e.cause as Response | undefined) ?? null;
    const code = typeof status === "number" ? status : response instanceof Response ? response.status : null;
    // The message names the check that failed (never a value from the body).
    const message = escapes(
      redact(`unexpected token endpoint response${code ? ` (HTTP ${code})` : ""}: ${e.message}`).slice(
        0,
        MAX_ROW_REASON,
      ),
    );
    // A successful answer the library refused (a negative expires_in, a scope that is no string) may still carry
    // the refresh token the provider rotated, retiring the one it was sent: kept like an unusable access token's.
    const body = (e.cause as { body?: unknown } | undefined)?.body;
    const rotated = typeof body === "object" && body !== null ? refreshTokenOf(body as Record<string, unknown>) : null;
    return rotated !== null ? new UnusableAccessToken(message, rotated) : new TokenEndpointUnavailable(message);
  }
  const name = (e as Error)?.name;
  if (name === "TimeoutError" || name === "AbortError") return new TokenEndpointUnavailable("token request timed out");
  return new TokenEndpointUnavailable(
    escapes(cutText(redact(`token endpoint unreachable (${(e as Error)?.message ?? String(e)})`), MAX_ROW_REASON)),
  );
}

/** `sent`: the secrets the request carries besides the client secret (Endpoint.redact). */
async function run(
  ep: Endpoint,
  sent: readonly string[],
  fn: () => Promise<oauth.TokenEndpointResponse>,
): Promise<Grant> {
  try {
    return grantOf(await fn());
  } catch (e) {
    throw classify(e, (text) => ep.redact(text, sent));
  }
}

/** RFC 6749 section 6. */
export function refreshGrant(ep: Endpoint, refreshToken: string): Promise<Grant> {
  return run(ep, [refreshToken], async () => {
    const response = await oauth.refreshTokenGrantRequest(ep.as, ep.client, ep.auth, refreshToken, requestOptions(ep));
    return oauth.processRefreshTokenResponse(ep.as, ep.client, response);
  });
}

/** RFC 6749 section 4.4: app-only accounts. */
export function clientCredentialsGrant(ep: Endpoint, scopes: readonly string[]): Promise<Grant> {
  return run(ep, [], async () => {
    const response = await oauth.clientCredentialsGrantRequest(
      ep.as,
      ep.client,
      ep.auth,
      { scope: scopes.join(" ") },
      requestOptions(ep),
    );
    return oauth.processClientCredentialsResponse(ep.as, ep.client, response);
  });
}

/** RFC 6749 section 4.1.3 with the RFC 7636 code verifier. */
export function authorizationCodeGrant(
  ep: Endpoint,
  callback: URLSearchParams,
  redirectUri: string,
  codeVerifier: string,
): Promise<Grant> {
  return run(ep, [callback.get("code") ?? "", codeVerifier], async () => {
    const response = await oauth.authorizationCodeGrantRequest(
      ep.as,
      ep.client,
      ep.auth,
      callback,
      redirectUri,
      codeVerifier,
      requestOptions(ep),
    );
    return oauth.processAuthorizationCodeResponse(ep.as, ep.client, response);
  });
}

export { oauth };
