/**
 * Routes other parts register on the admin listener (src/admin/server.ts), over real HTTP: a route with
 * `auth: "token"` refuses a request without the `[admin] token_hash` token, and every request when the config
 * has no token_hash; the built-in paths cannot be taken; the text format escapes label values.
 */
import { afterAll, expect, test } from "bun:test";
import { connect } from "node:net";
import { Counter } from "../../src/admin/metrics.ts";
import { type AdminServer, registerAdminRoute, startAdmin } from "../../src/admin/server.ts";
import { generateToken, hashToken } from "../../src/vault/token.ts";

const token = generateToken();
const ok = () => ({ problems: [], checks: {} });
const servers: AdminServer[] = [];
afterAll(async () => {
  for (const s of servers) await s.close();
});

function start(tokenHash: string | null): string {
  const s = startAdmin({
    config: { listenAddr: { host: "127.0.0.1", port: 0 }, allowRemote: false, tokenHash },
    health: ok,
  });
  servers.push(s);
  return `http://127.0.0.1:${s.address.port}`;
}

test("a token route refuses without the token, with a wrong one, and serves with the right one", async () => {
  let acted = 0;
  const remove = registerAdminRoute(
    "POST",
    "/act",
    () => {
      acted++;
      return new Response("done");
    },
    { auth: "token" },
  );
  try {
    const base = start(hashToken(token));
    const none = await fetch(`${base}/act/1`, { method: "POST" });
    expect(none.status).toBe(401);
    expect(none.headers.get("www-authenticate")).toBe("Bearer");
    const wrong = await fetch(`${base}/act`, {
      method: "POST",
      headers: { authorization: `Bearer ${generateToken()}` },
    });
    expect(wrong.status).toBe(401);
    expect(acted).toBe(0);
    const right = await fetch(`${base}/act/1`, { method: "POST", headers: { authorization: `Bearer ${token}` } });
    expect(right.status).toBe(200);
    expect(await right.text()).toBe("done");
    expect(acted).toBe(1);
    // Another method on the same path, a path beside the prefix.
    expect((await fetch(`${base}/act`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(405);
    expect((await fetch(`${base}/actx`, { method: "POST" })).status).toBe(404);
    // Without token_hash in the config, nothing gets through.
    const closed = start(null);
    const r = await fetch(`${closed}/act`, { method: "POST", headers: { authorization: `Bearer ${token}` } });
    expect(r.status).toBe(403);
    expect(acted).toBe(1);
  } finally {
    remove();
  }
});

test("a route with auth none needs no token; the built-in paths cannot be registered", async () => {
  const remove = registerAdminRoute("GET", "/page", () => new Response("page"), { auth: "none" });
  try {
    const base = start(hashToken(token));
    expect(await (await fetch(`${base}/page`)).text()).toBe("page");
    expect(() => registerAdminRoute("GET", "/metrics", () => new Response(""), { auth: "none" })).toThrow();
    expect(() => registerAdminRoute("GET", "/", () => new Response(""), { auth: "none" })).toThrow();
    expect((await fetch(`${base}/healthz`, { method: "POST" })).status).toBe(405);
  } finally {
    remove();
  }
  const base = start(null);
  expect((await fetch(`${base}/page`)).status).toBe(404);
});

test("no Host header is served; a Host that is no host name, or a target that is no URL, is a 400", async () => {
  const base = start(null);
  const port = Number(new URL(base).port);
  const raw = (request: string) =>
    new Promise<string>((resolve) => {
      const s = connect(port, "127.0.0.1", () => s.write(request));
      let out = "";
      s.on("data", (d) => (out += d));
      s.on("close", () => resolve(out));
      s.on("error", () => resolve(out));
    });
  // HTTP/1.0 without Host, as simple probes send it.
  expect(await raw("GET /healthz HTTP/1.0\r\n\r\n")).toStartWith("HTTP/1.1 200 ");
  expect(await raw("GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")).toStartWith(
    "HTTP/1.1 200 ",
  );
  // Hosts no browser sends, some of them read by a URL parser as a loopback name: refused, never served.
  for (const host of [
    "a b",
    "evil.example@localhost",
    "localhost/x",
    "?x",
    "localhost#.evil.example",
    "localhost?.evil.example",
    "localhost\\.evil.example",
  ]) {
    const out = await raw(`GET /healthz HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
    expect(out).toStartWith("HTTP/1.1 400 ");
    expect(out).toContain("the Host header is not a host name");
  }
  const bad = await raw("GET /healthz HTTP/1.1\r\nHost: [::1\r\nConnection: close\r\n\r\n");
  expect(bad).toStartWith("HTTP/1.1 400 ");
  expect(bad).toContain("not a valid URL");
});

test("label values are escaped as the text format requires", () => {
  const c = new Counter("t_total", "help", ["x"]);
  c.inc({ x: 'a"b\\c\nd' }, 2);
  expect(c.render()).toBe('# HELP t_total help\n# TYPE t_total counter\nt_total{x="a\\"b\\\\c\\nd"} 2\n');
});
