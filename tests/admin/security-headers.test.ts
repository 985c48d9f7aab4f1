/**
 * Every response of the admin listener carries `X-Content-Type-Options: nosniff` (docs/operations.md "Health and
 * metrics"): the built-in paths, the listener's own refusals (400, 404, 405, 401, 403, 421), a route's answer, even
 * one whose headers cannot be changed, and the 500 of a route that throws. Raw HTTP: a browser adds nothing here.
 */
import { afterAll, expect, test } from "bun:test";
import { connect } from "node:net";
import { type AdminServer, registerAdminRoute, startAdmin } from "../../src/admin/server.ts";
import { generateToken, hashToken } from "../../src/vault/token.ts";

const servers: AdminServer[] = [];
const removes: (() => void)[] = [];
afterAll(async () => {
  for (const r of removes) r();
  for (const s of servers) await s.close();
});

function start(tokenHash: string | null): number {
  const s = startAdmin({
    config: { listenAddr: { host: "127.0.0.1", port: 0 }, allowRemote: false, tokenHash },
    health: () => ({ problems: [], checks: {} }),
  });
  servers.push(s);
  return s.address.port;
}

/** One request as raw bytes; the whole answer, headers and all. */
function raw(port: number, request: string): Promise<string> {
  return new Promise<string>((resolve) => {
    const s = connect(port, "127.0.0.1", () => s.write(request));
    let out = "";
    s.on("data", (d) => (out += d));
    s.on("close", () => resolve(out));
    s.on("error", () => resolve(out));
  });
}

const request = (method: string, path: string, extra = "") =>
  `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n${extra}Connection: close\r\n\r\n`;

test("every answer of the admin listener says nosniff", async () => {
  removes.push(registerAdminRoute("GET", "/extra-page", () => new Response("<p>page</p>"), { auth: "none" }));
  removes.push(registerAdminRoute("POST", "/extra-act", () => new Response("done"), { auth: "token" }));
  removes.push(
    registerAdminRoute(
      "GET",
      "/extra-throws",
      () => {
        throw new Error("boom");
      },
      { auth: "none" },
    ),
  );
  // Response.redirect's headers are immutable: the listener must still add its own.
  removes.push(
    registerAdminRoute("GET", "/extra-redirect", () => Response.redirect("http://127.0.0.1/x", 302), {
      auth: "none",
    }),
  );
  const token = generateToken();
  const port = start(hashToken(token));
  const closed = start(null);
  const answers: [string, string][] = [
    ["200", await raw(port, request("GET", "/healthz"))],
    ["200", await raw(port, request("HEAD", "/healthz"))],
    ["200", await raw(port, request("GET", "/metrics"))],
    ["405", await raw(port, request("POST", "/healthz"))],
    ["404", await raw(port, request("GET", "/nothing-here"))],
    ["200", await raw(port, request("GET", "/extra-page"))],
    ["405", await raw(port, request("POST", "/extra-page"))],
    ["401", await raw(port, request("POST", "/extra-act"))],
    ["200", await raw(port, request("POST", "/extra-act", `Authorization: Bearer ${token}\r\n`))],
    ["403", await raw(closed, request("POST", "/extra-act", `Authorization: Bearer ${token}\r\n`))],
    ["500", await raw(port, request("GET", "/extra-throws"))],
    ["302", await raw(port, request("GET", "/extra-redirect"))],
    ["421", await raw(port, "GET /healthz HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")],
    ["400", await raw(port, "GET /healthz HTTP/1.1\r\nHost: [::1\r\nConnection: close\r\n\r\n")],
  ];
  const seen = answers.map(([, answer]) => {
    const head = answer.slice(0, answer.indexOf("\r\n\r\n")).toLowerCase();
    return `${head.split(" ")[1]} ${head.includes("\r\nx-content-type-options: nosniff") ? "nosniff" : "sniffable"}`;
  });
  expect(seen).toEqual(answers.map(([status]) => `${status.trim()} nosniff`));
});
