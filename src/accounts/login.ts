/**
 * `mailgator account login`: the first grant of an authorization-code account (docs/accounts.md "Logging in").
 * Authorization code with PKCE (RFC 7636) and a loopback redirect (RFC 8252 section 7.3), the same with the final
 * redirect URL pasted back by hand, or the device grant (RFC 8628). Nothing here opens a browser: it prints the URL.
 */

import { createServer, type Server } from "node:http";
import type { OAuth2AccountConfig } from "../config/index.ts";
import { escapes } from "../mail/display.ts";
import {
  authorizationCodeGrant,
  classify,
  type Endpoint,
  endpointFor,
  type Grant,
  grantOf,
  oauth,
  TOKEN_REQUEST_TIMEOUT_MS,
  TokenEndpointUnavailable,
} from "./oauth.ts";
import { issuerOf } from "./providers.ts";

/** How long a login waits for the browser's redirect or the device approval before giving up. */
export const LOGIN_TIMEOUT_MS = 10 * 60_000;
/** The loopback redirect's path (register `http://127.0.0.1` and, where the provider wants a path, this one). */
export const CALLBACK_PATH = "/callback";
/** The redirect of `--paste`: nothing listens there; the person copies the URL the browser stopped at. */
export const PASTE_REDIRECT_URI = `http://127.0.0.1${CALLBACK_PATH}`;
/** RFC 8628 section 3.5: the polling interval when the provider gives none. */
const DEVICE_DEFAULT_INTERVAL_S = 5;
/** The shortest polling interval taken from a provider (an `interval` of 0 would poll without pause). */
export const DEVICE_MIN_INTERVAL_S = 1;
/** The longest: the login waits LOGIN_TIMEOUT_MS in all, and a timer cannot wait 2^31 ms or more. */
export const DEVICE_MAX_INTERVAL_S = 60;
/**
 * Seconds added to the polling interval each time the token endpoint answers slow_down, for that poll and all those
 * after it (RFC 8628 section 3.5: "the interval MUST be increased by 5 seconds"), up to DEVICE_MAX_INTERVAL_S.
 */
export const DEVICE_SLOW_DOWN_S = 5;
/**
 * Longest line taken from stdin for `--paste` (docs/accounts.md "Logging in"): a redirect URL is far shorter; a longer
 * line is refused before it is parsed.
 */
export const MAX_PASTE_BYTES = 16 * 1024;

export class LoginError extends Error {
  override name = "LoginError";
}

export interface LoginIo {
  /** Prints a line for the person logging in. */
  readonly say: (text: string) => void;
  /** Reads the pasted redirect URL (`--paste`). */
  readonly readLine?: (() => Promise<string | null>) | undefined;
  readonly fetch?: typeof fetch | undefined;
  /** Stops waiting (tests). */
  readonly signal?: AbortSignal | undefined;
  readonly timeoutMs?: number | undefined;
}

/** Parameters some providers need to issue a refresh token at all. */
function providerParameters(account: OAuth2AccountConfig): Record<string, string> {
  const extra: Record<string, string> = { login_hint: account.username };
  // Google issues a refresh token only with access_type=offline, and again on a later login only with prompt=consent.
  if (account.oauth2.provider === "google") Object.assign(extra, { access_type: "offline", prompt: "consent" });
  return extra;
}

interface Authorization {
  readonly url: URL;
  readonly state: string;
  readonly verifier: string;
  readonly redirectUri: string;
  /** The issuer the redirect's `iss` must name (`issuerOf`), or null where it is not known. */
  readonly issuer: string | null;
}

async function authorization(account: OAuth2AccountConfig, redirectUri: string): Promise<Authorization> {
  if (account.oauth2.authorizeUrl === null)
    throw new LoginError(`account ${account.name} has no authorize_url: use --device, or set authorize_url`);
  const verifier = oauth.generateRandomCodeVerifier();
  const state = oauth.generateRandomState();
  const url = new URL(account.oauth2.authorizeUrl);
  const params: Record<string, string> = {
    client_id: account.oauth2.clientId,
    response_type: "code",
    redirect_uri: redirectUri,
    scope: account.oauth2.scopes.join(" "),
    state,
    code_challenge: await oauth.calculatePKCECodeChallenge(verifier),
    code_challenge_method: "S256",
    ...providerParameters(account),
  };
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  return { url, state, verifier, redirectUri, issuer: issuerOf(account.oauth2.provider, account.oauth2.tenant) };
}

/**
 * The redirect's `iss` (RFC 9207), checked against the provider's issuer where it is known, then taken out: the
 * library would compare it with the token URL's origin, which is no issuer's name (Google names
 * `https://accounts.google.com` and answers tokens at `https://oauth2.googleapis.com`). Where the issuer is not
 * known the code still goes only to the account's own token endpoint, with this login's state and PKCE verifier.
 */
function checkIssuer(auth: Authorization, redirected: URL): URL {
  const named = redirected.searchParams.getAll("iss");
  if (named.length === 0) return redirected;
  if (named.length > 1) throw new LoginError("the redirect is not this login's answer (more than one iss)");
  if (auth.issuer !== null && named[0] !== auth.issuer)
    throw new LoginError(
      escapes(`the redirect is not this login's answer (issued by ${named[0]!.slice(0, 200)}, not ${auth.issuer})`),
    );
  const out = new URL(redirected);
  out.searchParams.delete("iss");
  return out;
}

/** Checks the redirect's state and error (RFC 6749 section 4.1.2), then exchanges the code. */
async function finish(ep: Endpoint, auth: Authorization, redirected: URL): Promise<Grant> {
  const checked = checkIssuer(auth, redirected);
  let params: URLSearchParams;
  try {
    params = oauth.validateAuthResponse(ep.as, ep.client, checked, auth.state);
  } catch (e) {
    if (e instanceof oauth.AuthorizationResponseError) {
      const refusal = `${e.error}${e.error_description ? ` (${e.error_description})` : ""}`;
      // RFC 6749 section 4.1.2.1: the person (or the provider for them) did not give consent; another try may.
      if (e.error === "access_denied")
        throw new LoginError(escapes(`the sign-in was denied at the provider; run the login again (${refusal})`));
      throw new LoginError(escapes(`the provider refused: ${refusal}`));
    }
    throw new LoginError(`the redirect is not this login's answer (${(e as Error).message})`);
  }
  return exchange(() => authorizationCodeGrant(ep, params, auth.redirectUri, auth.verifier));
}

async function exchange(fn: () => Promise<Grant>): Promise<Grant> {
  try {
    return await fn();
  } catch (e) {
    throw new LoginError(`the token request failed: ${(e as Error).message}`);
  }
}

function timeout(io: LoginIo): AbortSignal {
  const t = AbortSignal.timeout(io.timeoutMs ?? LOGIN_TIMEOUT_MS);
  return io.signal ? AbortSignal.any([t, io.signal]) : t;
}

/** Loopback redirect: listens on 127.0.0.1, a free port, until the redirect with this login's state arrives. */
export async function loginLoopback(account: OAuth2AccountConfig, io: LoginIo): Promise<Grant> {
  const ep = endpointFor(account.oauth2, io.fetch);
  const signal = timeout(io);
  let server: Server | null = null;
  try {
    const arrived = Promise.withResolvers<URL>();
    let auth: Authorization | null = null;
    server = createServer((req, res) => {
      // Anything on this machine may connect while the login waits: a request-target that is no URL (`http://[`)
      // is answered and ignored, never thrown out of the listener (an uncaught error, and the login's exit status).
      let url: URL;
      try {
        url = new URL(req.url ?? "/", "http://127.0.0.1");
      } catch {
        res.writeHead(400, { "content-type": "text/plain" }).end("bad request\n");
        return;
      }
      // Anything but this login's callback (a favicon, a stray request, a wrong state) is answered and ignored.
      if (auth === null || url.pathname !== CALLBACK_PATH || url.searchParams.get("state") !== auth.state) {
        res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
        return;
      }
      // An error response (RFC 6749 section 4.1.2.1) with this login's state is its answer too: the login ends.
      const text = url.searchParams.has("error")
        ? "mailgator: the provider refused the login; the terminal says why. You can close this page.\n"
        : "mailgator: login received; you can close this page.\n";
      res.writeHead(200, { "content-type": "text/plain" }).end(text);
      arrived.resolve(url);
    });
    const listening = server;
    await new Promise<void>((resolve, reject) => {
      listening.once("error", reject);
      listening.listen(0, "127.0.0.1", () => resolve());
    });
    const port = (server.address() as { port: number }).port;
    auth = await authorization(account, `http://127.0.0.1:${port}${CALLBACK_PATH}`);
    io.say(`Open this URL in a browser on this machine and sign in as ${account.username}:`);
    io.say("");
    io.say(`  ${auth.url.href}`);
    io.say("");
    io.say(`Waiting for the redirect to http://127.0.0.1:${port}${CALLBACK_PATH} ...`);
    const aborted = new Promise<never>((_, reject) => {
      const fail = () => reject(new LoginError("no redirect arrived in time; run the login again"));
      if (signal.aborted) fail();
      signal.addEventListener("abort", fail, { once: true });
    });
    const redirected = await Promise.race([arrived.promise, aborted]);
    return await finish(ep, auth, redirected);
  } finally {
    server?.close();
    server?.closeAllConnections();
  }
}

/** `--paste`: the person opens the URL anywhere and pastes back the URL the browser ended on. */
export async function loginPaste(account: OAuth2AccountConfig, io: LoginIo): Promise<Grant> {
  if (!io.readLine) throw new LoginError("--paste needs a terminal or a pipe on standard input");
  const ep = endpointFor(account.oauth2, io.fetch);
  const auth = await authorization(account, PASTE_REDIRECT_URI);
  io.say(`Open this URL in any browser and sign in as ${account.username}:`);
  io.say("");
  io.say(`  ${auth.url.href}`);
  io.say("");
  io.say(`The browser then fails to load ${PASTE_REDIRECT_URI}?...: that is expected.`);
  io.say("Copy the whole address from its address bar and paste it here:");
  const line = await io.readLine();
  if (line === null || line.trim() === "") throw new LoginError("nothing was pasted");
  if (line.length > MAX_PASTE_BYTES) throw new LoginError("the pasted text is too long to be the redirect URL");
  let url: URL;
  try {
    url = new URL(line.trim());
  } catch {
    throw new LoginError("the pasted text is not a URL");
  }
  if (`${url.origin}${url.pathname}` !== PASTE_REDIRECT_URI)
    throw new LoginError(`the pasted URL does not start with ${PASTE_REDIRECT_URI}`);
  return finish(ep, auth, url);
}

/**
 * Google's device endpoint answers `verification_url` where RFC 8628 section 3.2 says `verification_uri`: accept
 * either, so that the strict parser sees the standard name.
 */
async function standardDeviceResponse(response: Response): Promise<Response> {
  if (!response.ok) return response;
  const body = (await response.json()) as Record<string, unknown>;
  if (body["verification_uri"] === undefined && typeof body["verification_url"] === "string")
    body["verification_uri"] = body["verification_url"];
  return new Response(JSON.stringify(body), { status: response.status, headers: response.headers });
}

/**
 * RFC 8628 section 3.5's error codes that end a device login, said plainly before the provider's code and description
 * (a provider may send the code alone).
 */
const DEVICE_LOGIN_ENDINGS: Readonly<Record<string, string>> = {
  access_denied: "the code was denied at the provider's page",
  expired_token: "the code expired before it was approved",
};

/**
 * A failure of the transport, not an answer: what `fetch` itself threw (no connection, a connection dropped, no
 * answer in TOKEN_REQUEST_TIMEOUT_MS), apart from the response-size refusal (src/accounts/oauth.ts `capped`).
 */
class PollUnanswered extends Error {
  override name = "PollUnanswered";
}

function unanswered(inner: typeof fetch): typeof fetch {
  return (async (input: string | URL | Request, init?: RequestInit) => {
    try {
      return await inner(input, init);
    } catch (e) {
      if (e instanceof TokenEndpointUnavailable) throw e;
      throw new PollUnanswered("no answer", { cause: e });
    }
  }) as typeof fetch;
}

/** The HTTP status of a response oauth4webapi refused, where it names one. */
function statusOf(e: unknown): number | null {
  if (e instanceof oauth.ResponseBodyError) return e.status;
  if (e instanceof oauth.OperationProcessingError) {
    const cause = e.cause as { status?: unknown } | undefined;
    return typeof cause?.status === "number" ? cause.status : null;
  }
  return null;
}

/**
 * A poll to try again later (RFC 8628 §3.5: "On encountering a connection timeout, clients MUST unilaterally reduce
 * their polling frequency before retrying"): no answer, a dropped connection, or a 5xx or 429, which are no OAuth
 * error response (RFC 6749 §5.2) and say nothing of the device code. Any other answer that is not a token response,
 * authorization_pending or slow_down stops the login.
 */
function retriable(e: unknown): boolean {
  if (e instanceof PollUnanswered) return true;
  const status = statusOf(e);
  return status !== null && (status >= 500 || status === 429);
}

/** RFC 8628: prints the code and the page to enter it on, then polls the token endpoint. */
export async function loginDevice(account: OAuth2AccountConfig, io: LoginIo): Promise<Grant> {
  if (account.oauth2.deviceUrl === null)
    throw new LoginError(
      `account ${account.name}'s provider has no device endpoint (set device_url, or log in without --device)`,
    );
  const ep = endpointFor(account.oauth2, io.fetch);
  const signal = timeout(io);
  let device: oauth.DeviceAuthorizationResponse;
  try {
    const response = await oauth.deviceAuthorizationRequest(
      ep.as,
      ep.client,
      ep.auth,
      { scope: account.oauth2.scopes.join(" ") },
      { ...ep.options, signal: AbortSignal.any([signal, AbortSignal.timeout(TOKEN_REQUEST_TIMEOUT_MS)]) },
    );
    device = await oauth.processDeviceAuthorizationResponse(ep.as, ep.client, await standardDeviceResponse(response));
  } catch (e) {
    throw new LoginError(`the device authorization request failed: ${classify(e, (t) => ep.redact(t)).message}`);
  }
  // The provider chooses these strings (RFC 8628 §3.2); a person reads them on a terminal.
  io.say(`On any device, open ${escapes(device.verification_uri)} and enter the code ${escapes(device.user_code)}`);
  if (device.verification_uri_complete) io.say(`(or open ${escapes(device.verification_uri_complete)})`);
  io.say(`Sign in as ${account.username}. Waiting for approval ...`);
  const between = (s: number) => Math.min(Math.max(s, DEVICE_MIN_INTERVAL_S), DEVICE_MAX_INTERVAL_S);
  let interval = between(device.interval ?? DEVICE_DEFAULT_INTERVAL_S);
  const deadline = Date.now() + device.expires_in * 1000;
  const redact = (t: string) => ep.redact(t, [device.device_code]);
  const customFetch = unanswered(ep.options[oauth.customFetch] ?? fetch);
  while (Date.now() < deadline) {
    await sleep(interval * 1000, signal);
    try {
      const response = await oauth.deviceCodeGrantRequest(ep.as, ep.client, ep.auth, device.device_code, {
        ...ep.options,
        [oauth.customFetch]: customFetch,
        // Each poll gets TOKEN_REQUEST_TIMEOUT_MS: one that hangs is retried, not waited on until the login's end.
        signal: AbortSignal.any([signal, AbortSignal.timeout(TOKEN_REQUEST_TIMEOUT_MS)]),
      });
      return grantOf(await oauth.processDeviceCodeResponse(ep.as, ep.client, response));
    } catch (e) {
      if (e instanceof oauth.ResponseBodyError && e.error === "authorization_pending") continue;
      if (e instanceof oauth.ResponseBodyError && e.error === "slow_down") {
        interval = between(interval + DEVICE_SLOW_DOWN_S);
        continue;
      }
      if (signal.aborted) break;
      const cause = e instanceof PollUnanswered ? e.cause : e;
      const message = classify(cause, redact).message;
      if (retriable(e)) {
        interval = between(interval * 2);
        io.say(`The poll failed (${message}); polling again in ${interval} s`);
        continue;
      }
      const ending =
        e instanceof oauth.ResponseBodyError && Object.hasOwn(DEVICE_LOGIN_ENDINGS, e.error)
          ? DEVICE_LOGIN_ENDINGS[e.error]
          : undefined;
      if (ending !== undefined) throw new LoginError(`${ending}; run the login again (${message})`);
      throw new LoginError(`device login failed: ${message}`);
    }
  }
  throw new LoginError("the code was not approved in time; run the login again");
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new LoginError("login timed out"));
    const timer = setTimeout(resolve, ms);
    signal.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(new LoginError("login timed out"));
      },
      { once: true },
    );
  });
}
