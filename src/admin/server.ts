/**
 * The admin HTTP listener (`[admin]`, docs/config.md; docs/operations.md "Health and metrics"), served with
 * Bun.serve: `GET /healthz` and `GET /metrics` need no token; every other route is registered by the part of the
 * proxy that serves it, and a route that acts must ask for the token.
 *
 * Route registration, for the parts that add pages or actions:
 *
 *   const remove = registerAdminRoute("POST", "/approvals", handler, { auth: "token" });
 *
 * - `method`: the HTTP method, exactly ("GET", "POST"...).
 * - `pathPrefix`: "/approvals" serves "/approvals" and every path below it ("/approvals/42"), not "/approvalsx";
 *   the longest registered prefix wins. "/healthz" and "/metrics" are taken.
 * - `handler(request, url)`: returns the Response (or a promise of one). It runs only after the token check.
 * - `auth: "token"`: the request must carry `Authorization: Bearer <token>` whose hash is `[admin] token_hash`
 *   (the scheme of agent tokens, src/vault/token.ts); 401 otherwise, and 403 for every request when the config
 *   has no token_hash (fail closed). `auth: "none"` is for pages that only read and reveal nothing that acts.
 * - Routes may be registered before or after the listener starts; the returned function removes the route.
 *
 * A path that no route serves gets 404; a known path with another method gets 405 with `Allow`; a route's request
 * whose body does not arrive within ADMIN_BODY_MS gets 408, one larger than its route takes (its maxBodyBytes, at
 * most ADMIN_MAX_BODY_BYTES) 413, and one past ADMIN_MAX_REQUESTS in flight 503. Every answer carries
 * `X-Content-Type-Options: nosniff` (`secured`).
 */

import type { AdminConfig } from "../config/types.ts";
import { isLoopbackHost } from "../net/ip.ts";
import { settledWithin } from "../runtime/settle.ts";
import { verifyToken } from "../vault/token.ts";
import { METRICS_CONTENT_TYPE, renderMetrics } from "./metrics.ts";

export type AdminAuth = "none" | "token";
export type AdminHandler = (request: Request, url: URL) => Response | Promise<Response>;

/**
 * Seconds a connection to the admin listener may stay silent (Bun.serve's `idleTimeout`): a client that sends nothing
 * is cut after it (a request's body has its own, shorter deadline, ADMIN_BODY_MS). The runtime goes on timing a
 * request without a body (a GET) while its answer is made, but not one whose body has been read: an approval (a POST
 * that waits for the upstream's replay, minutes at worst) gets its answer however long that takes
 * (tests/e2e/approvals.test.ts), and every GET is answered at once.
 */
export const ADMIN_IDLE_SECONDS = 10;

/**
 * Requests a registered route (the approval pages) may have in flight at once on one admin listener, from the moment
 * its handler is called, its body read already (ADMIN_BODY_MS), until its Response is made: for an approval, the
 * upstream's replay, which holds an upstream SMTP connection. One more gets a 503 at once (`Retry-After: 1`,
 * `Connection: close`) and its handler is not called; requests in flight are untouched. `/healthz`, `/metrics` and
 * the listener's own refusals (400, 404, 405, 401, 403, 421) are answered without waiting on anything and are never
 * refused: a service manager's probe must not fail because the pages are busy. Bun.serve has no limit on
 * connections, so this is no connection limit (docs/reliability.md "Connections and timeouts"). 32 is far more
 * decisions than a team of approvers makes at once, and a small share next to the proxies' own connection limits
 * (docs/config.md "[limits]").
 */
export const ADMIN_MAX_REQUESTS = 32;

/**
 * How long a route's request may take to deliver its body, from the moment its header has been read. The listener
 * reads the body itself, before the request takes one of the ADMIN_MAX_REQUESTS places and before its handler is
 * called: a client that sends its body slowly, or stops halfway, holds no place, and is answered `408` with
 * `Connection: close` at this deadline (the connection closed, its body not read further). A browser sends the
 * approval page's form, some hundred octets, with its header. Shorter than ADMIN_IDLE_SECONDS, after which the runtime
 * cuts a request whose body is still being read without an answer.
 */
export const ADMIN_BODY_MS = 5000;

/**
 * The largest body the listener reads for a route that names no smaller `maxBodyBytes` of its own: one declared
 * larger (Content-Length), or that grows larger, gets `413` with `Connection: close` and its handler is not called.
 * What the listener has read of a body is held until the body ends or ADMIN_BODY_MS passes, for as many connections
 * as clients open (Bun.serve has no limit on them): a route takes no more than it needs. The approval pages take
 * MAX_FORM_BYTES (src/approvals/web.ts, registered so by serve).
 */
export const ADMIN_MAX_BODY_BYTES = 64 * 1024;

/** How a route is served: `auth` (the module comment), and the largest body read for it (ADMIN_MAX_BODY_BYTES). */
export interface AdminRouteOptions {
  readonly auth: AdminAuth;
  readonly maxBodyBytes?: number;
}

interface Route {
  readonly method: string;
  readonly pathPrefix: string;
  readonly handler: AdminHandler;
  readonly auth: AdminAuth;
  readonly maxBodyBytes: number;
}

const RESERVED = ["/healthz", "/metrics"];
const routes: Route[] = [];

function under(path: string, prefix: string): boolean {
  return path === prefix || path.startsWith(prefix.endsWith("/") ? prefix : `${prefix}/`);
}

/** Adds a route to the admin listener (see the module comment); returns the function that removes it. */
export function registerAdminRoute(
  method: string,
  pathPrefix: string,
  handler: AdminHandler,
  options: AdminRouteOptions,
): () => void {
  if (!pathPrefix.startsWith("/")) throw new Error(`admin: a route's path must start with "/", got ${pathPrefix}`);
  if (RESERVED.some((r) => under(r, pathPrefix) || under(pathPrefix, r)))
    throw new Error(`admin: ${pathPrefix} overlaps a built-in route (${RESERVED.join(", ")})`);
  if (options.auth !== "none" && options.auth !== "token") throw new Error(`admin: unknown auth ${options.auth}`);
  const maxBodyBytes = options.maxBodyBytes ?? ADMIN_MAX_BODY_BYTES;
  if (!Number.isSafeInteger(maxBodyBytes) || maxBodyBytes < 0 || maxBodyBytes > ADMIN_MAX_BODY_BYTES)
    throw new Error(`admin: a route's maxBodyBytes must be 0 to ${ADMIN_MAX_BODY_BYTES}, got ${maxBodyBytes}`);
  const route: Route = { method: method.toUpperCase(), pathPrefix, handler, auth: options.auth, maxBodyBytes };
  if (routes.some((r) => r.method === route.method && r.pathPrefix === pathPrefix))
    throw new Error(`admin: ${route.method} ${pathPrefix} is already registered`);
  routes.push(route);
  return () => {
    const i = routes.indexOf(route);
    if (i >= 0) routes.splice(i, 1);
  };
}

/** What /healthz reports: each problem in words; none means ready. */
export interface HealthReport {
  readonly problems: readonly string[];
  readonly checks: Readonly<Record<string, boolean>>;
}

export interface AdminOptions {
  readonly config: AdminConfig;
  /** Called at each /healthz request and each /metrics scrape (the latter to refresh sampled values). */
  readonly health: () => HealthReport;
  /** Called before each /metrics render, to sample values kept elsewhere (audit rows written and queued). */
  readonly sample?: () => void;
  /**
   * Host names a loopback listener answers to besides `localhost` and IP literals, asked at each request: the host
   * of `[approvals] base_url` in the config in force (see `servedHost`).
   */
  readonly hostNames?: () => readonly string[];
}

export interface AdminServer {
  readonly address: { readonly host: string; readonly port: number };
  /** Stops accepting; answers in flight get up to ADMIN_CLOSE_MS to finish, then every connection is cut. */
  close(): Promise<void>;
}

/**
 * How long closing the admin listener waits for the answers in flight (an approval page's, written once its decision
 * ended: docs/approvals.md "What is guaranteed") before it cuts the connections still open.
 */
export const ADMIN_CLOSE_MS = 1000;

const json = (status: number, body: unknown, headers: Record<string, string> = {}): Response =>
  new Response(`${JSON.stringify(body)}\n`, {
    status,
    headers: { "content-type": "application/json; charset=utf-8", "cache-control": "no-store", ...headers },
  });

/** True when the request carries `Authorization: Bearer <token>` matching `tokenHash`. */
function authorized(request: Request, tokenHash: string): boolean {
  const header = request.headers.get("authorization") ?? "";
  const m = /^Bearer ([\x21-\x7e]+)$/i.exec(header.trim());
  return m !== null && verifyToken(m[1]!, tokenHash);
}

/**
 * Whether a loopback listener answers a request with this Host header (docs/operations.md "Health and metrics"). A
 * web page the approver's browser opens can point a name of its own at 127.0.0.1 once it is loaded (DNS rebinding):
 * its scripts then read this listener as their own origin, /metrics and /healthz included, which need no token. Such
 * a request names the page's host, so only `localhost`, an IP literal and `hostNames` are answered; a request without
 * no Host (a probe sending HTTP/1.0) names no host a page could own, and is answered too; a Host that is no host name
 * (`a b`), which no browser sends, is not (`handle` answers 400). A listener that `allow_remote` put on another
 * address is reached by names of the operator's choosing: every Host is answered.
 */
const HOST_HEADER = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]+)(?::[0-9]*)?$/;

function servedHost(options: AdminOptions, request: Request): boolean | "malformed" {
  if (!isLoopbackHost(options.config.listenAddr.host)) return true;
  const header = request.headers.get("host");
  if (header === null) return true;
  // RFC 9110 §7.2: uri-host [":" port], the host an IP-literal or a reg-name (RFC 3986 §3.2.2). Anything else is no
  // host name, however a URL parser would read it: `localhost#.evil.test` is `localhost` to it.
  if (!HOST_HEADER.test(header)) return "malformed";
  let name: string;
  try {
    name = new URL(`http://${header}`).hostname;
  } catch {
    return "malformed";
  }
  if (name === "" || header.includes("/") || header.includes("@")) return "malformed";
  // The URL parser writes every IPv4 form as dotted decimal and brackets IPv6; a name is lower case, punycode.
  if (/^\d+\.\d+\.\d+\.\d+$/.test(name) || name.startsWith("[")) return true;
  const bare = name.replace(/\.$/, "");
  if (isLoopbackHost(bare)) return true;
  return (options.hostNames?.() ?? []).some((h) => h.toLowerCase().replace(/\.$/, "") === bare);
}

/** The requests in flight in a route's handler on one listener, against ADMIN_MAX_REQUESTS. */
interface InFlight {
  count: number;
}

async function handle(options: AdminOptions, inFlight: InFlight, request: Request): Promise<Response> {
  // Only the path and query are read. Without a usable Host (HTTP/1.0 without one, or a malformed one) the runtime
  // gives the request target alone, read against a placeholder origin; a target that is no URL even so is a 400.
  let url: URL;
  try {
    url = new URL(request.url, "http://admin.invalid");
  } catch {
    return json(400, { error: "bad request: the request target or Host header is not a valid URL" });
  }
  const served = servedHost(options, request);
  if (served === "malformed") return json(400, { error: "bad request: the Host header is not a host name" });
  if (!served)
    return json(421, {
      error: "misdirected request: this listener answers to localhost, its IP address and [approvals] base_url's host",
    });
  const path = url.pathname;
  const method = request.method.toUpperCase();
  if (path === "/healthz" || path === "/metrics") {
    if (method !== "GET" && method !== "HEAD")
      return json(405, { error: "method not allowed" }, { allow: "GET, HEAD" });
    if (path === "/healthz") {
      const report = options.health();
      const ok = report.problems.length === 0;
      return json(ok ? 200 : 503, {
        status: ok ? "ok" : "unavailable",
        checks: report.checks,
        problems: report.problems,
      });
    }
    options.sample?.();
    return new Response(renderMetrics(), { headers: { "content-type": METRICS_CONTENT_TYPE } });
  }
  const matching = routes.filter((r) => under(path, r.pathPrefix));
  if (matching.length === 0) return json(404, { error: "not found" });
  const longest = Math.max(...matching.map((r) => r.pathPrefix.length));
  const candidates = matching.filter((r) => r.pathPrefix.length === longest);
  const route = candidates.find((r) => r.method === method);
  if (route === undefined)
    return json(405, { error: "method not allowed" }, { allow: candidates.map((r) => r.method).join(", ") });
  if (route.auth === "token") {
    if (options.config.tokenHash === null)
      return json(403, { error: "this route needs a token, and [admin] has no token_hash" });
    if (!authorized(request, options.config.tokenHash))
      return json(
        401,
        { error: "a valid token is required (Authorization: Bearer ...)" },
        { "www-authenticate": "Bearer" },
      );
  }
  // The body is read before the request takes a place: a slow one holds none (ADMIN_BODY_MS).
  const read = await readBody(request, url, route.maxBodyBytes);
  if (read instanceof Response) return read;
  if (inFlight.count >= ADMIN_MAX_REQUESTS)
    return json(
      503,
      { error: `too many requests in progress (limit ${ADMIN_MAX_REQUESTS}); try again later` },
      { "retry-after": "1", connection: "close" },
    );
  inFlight.count++;
  try {
    return await route.handler(read, url);
  } finally {
    inFlight.count--;
  }
}

/**
 * The request with its body read, at most `max` octets (the route's maxBodyBytes) within ADMIN_BODY_MS of the call
 * (the header is read by then); a request without a body as it came. Else the answer: `408` past the deadline, `413`
 * past the size, both with `Connection: close`, so that the runtime closes the connection rather than read the rest.
 */
async function readBody(request: Request, url: URL, max: number): Promise<Request | Response> {
  if (request.body === null) return request;
  const close = { connection: "close" };
  const tooLarge = () => json(413, { error: `request body too large (at most ${max} octets)` }, close);
  const declared = request.headers.get("content-length");
  if (declared !== null && !(Number(declared) <= max)) return tooLarge();
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"late">((resolve) => {
    timer = setTimeout(() => resolve("late"), ADMIN_BODY_MS);
  });
  const whole = (async (): Promise<"read" | "too large"> => {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return "read";
      size += value.byteLength;
      if (size > max) return "too large";
      chunks.push(value);
    }
  })();
  // A read that fails once the answer is decided (the connection closed under it) has nothing left to tell.
  whole.catch(() => {});
  let outcome: "read" | "too large" | "late";
  try {
    outcome = await Promise.race([whole, late]);
  } finally {
    clearTimeout(timer);
  }
  if (outcome !== "read") {
    reader.cancel().catch(() => {});
    if (outcome === "too large") return tooLarge();
    return json(
      408,
      { error: `request body not received within ${ADMIN_BODY_MS} ms (ADMIN_BODY_MS); nothing was done` },
      close,
    );
  }
  // The body is whole now, so its length is known, sent in chunks or not: a handler that checks Content-Length (the
  // approval pages, MAX_FORM_BYTES) reads the octets it is given, not a header the request may not have had.
  const headers = new Headers(request.headers);
  headers.delete("transfer-encoding");
  headers.set("content-length", String(size));
  return new Request(url.href, { method: request.method, headers, body: Buffer.concat(chunks) });
}

/**
 * Adds the headers every answer of the listener carries: `X-Content-Type-Options: nosniff`, so that no browser reads
 * a JSON error, the metrics text or a page as another type than the one it is sent as (docs/operations.md "Health
 * and metrics"). A response whose headers cannot be changed (Response.redirect's) is copied first.
 */
function secured(response: Response): Response {
  try {
    response.headers.set("x-content-type-options", "nosniff");
    return response;
  } catch {
    const copy = new Response(response.body, response);
    copy.headers.set("x-content-type-options", "nosniff");
    return copy;
  }
}

/** Starts the admin listener; throws when the address cannot be bound. */
export function startAdmin(options: AdminOptions): AdminServer {
  const { host, port } = options.config.listenAddr;
  const inFlight: InFlight = { count: 0 };
  const server = Bun.serve({
    hostname: host,
    port,
    idleTimeout: ADMIN_IDLE_SECONDS,
    fetch: async (request) => secured(await handle(options, inFlight, request)),
    error: () => secured(json(500, { error: "internal error" })),
  });
  return {
    address: { host, port: server.port ?? port },
    close: async () => {
      // stop() lets a request in flight finish (idle keep-alive connections close at once); stop(true) cuts the rest.
      await settledWithin([server.stop()], ADMIN_CLOSE_MS);
      await server.stop(true);
    },
  };
}
