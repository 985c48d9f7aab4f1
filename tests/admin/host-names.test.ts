/**
 * DNS rebinding against the admin listener (docs/operations.md "Health and metrics"): a web page the approver's
 * browser opens can point a name of its own at 127.0.0.1 once it is loaded; its scripts then read the loopback
 * listener as their own origin, /metrics and /healthz included, which need no token. Such a request names the
 * page's host in its Host header, so a loopback listener answers only localhost, IP literals and [approvals]
 * base_url's host; a request without a usable Host is still answered (probes), and a listener on another address
 * (allow_remote) answers every name.
 */
import { afterAll, expect, test } from "bun:test";
import { connect } from "node:net";
import { type AdminServer, registerAdminRoute, startAdmin } from "../../src/admin/server.ts";

const servers: AdminServer[] = [];
afterAll(async () => {
  for (const s of servers) await s.close();
});

function start(host: string, hostNames: readonly string[]): number {
  const s = startAdmin({
    config: { listenAddr: { host, port: 0 }, allowRemote: host !== "127.0.0.1", tokenHash: null },
    health: () => ({ problems: [], checks: {} }),
    hostNames: () => hostNames,
  });
  servers.push(s);
  return s.address.port;
}

/** One request over a raw socket, with exactly the Host header given (fetch sets its own); none: HTTP/1.0. */
function raw(port: number, path: string, host: string | null): Promise<string> {
  return new Promise<string>((resolve) => {
    const s = connect(port, "127.0.0.1", () =>
      s.write(
        host === null
          ? `GET ${path} HTTP/1.0\r\n\r\n`
          : `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`,
      ),
    );
    let out = "";
    s.on("data", (d) => (out += d));
    s.on("close", () => resolve(out));
    s.on("error", () => resolve(out));
  });
}

const status = (response: string) => Number(/^HTTP\/1\.1 (\d{3}) /.exec(response)?.[1] ?? "0");

test("a loopback listener refuses a Host a web page could own: /metrics, /healthz and pages are not read", async () => {
  const remove = registerAdminRoute("GET", "/extra-page", () => new Response("page"), { auth: "none" });
  try {
    const port = start("127.0.0.1", ["Mail-Admin.example"]);
    for (const path of ["/metrics", "/healthz", "/extra-page"]) {
      for (const host of [`rebind.example:${port}`, "rebind.example", `127.0.0.1.rebind.example:${port}`]) {
        const r = await raw(port, path, host);
        expect(status(r)).toBe(421);
        expect(r).not.toContain("mailgator_");
        expect(r).not.toContain("page");
      }
      // The names a person or a probe uses for a loopback listener, and base_url's host (a reverse proxy).
      for (const host of [
        `127.0.0.1:${port}`,
        `localhost:${port}`,
        `LOCALHOST.:${port}`,
        `[::1]:${port}`,
        "mail-admin.example",
        `mail-admin.example.:${port}`,
        null,
      ])
        expect(status(await raw(port, path, host))).toBe(200);
    }
  } finally {
    remove();
  }
});

test("a listener allow_remote put on another address answers every name", async () => {
  const port = start("0.0.0.0", []);
  expect(status(await raw(port, "/healthz", `scrape.internal.example:${port}`))).toBe(200);
});
