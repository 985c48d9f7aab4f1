/**
 * The admin listener's limit on requests in flight (`ADMIN_MAX_REQUESTS`, src/admin/server.ts; docs/reliability.md
 * "Connections and timeouts"), over real HTTP: with that many requests held in a route's handler, each of them is
 * served once it ends, one more is refused at once with a 503 that names the limit and closes its connection, while
 * `/healthz`, `/metrics` and the listener's own refusals still answer; a request that fails gives its place back.
 */
import { afterAll, expect, test } from "bun:test";
import { ADMIN_MAX_REQUESTS, type AdminServer, registerAdminRoute, startAdmin } from "../../src/admin/server.ts";

const servers: AdminServer[] = [];
const removes: (() => void)[] = [];
afterAll(async () => {
  for (const r of removes) r();
  for (const s of servers) await s.close();
});

function start(): string {
  const s = startAdmin({
    config: { listenAddr: { host: "127.0.0.1", port: 0 }, allowRemote: false, tokenHash: null },
    health: () => ({ problems: [], checks: {} }),
  });
  servers.push(s);
  return `http://127.0.0.1:${s.address.port}`;
}

/** A route whose requests wait in the handler until `release()`; `entered` counts the handlers that ran. */
function heldRoute(path: string) {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const state = { entered: 0, release: () => release() };
  removes.push(
    registerAdminRoute(
      "GET",
      path,
      async (_req, url) => {
        state.entered++;
        if (url.searchParams.has("fail")) throw new Error("handler failed");
        await gate;
        return new Response(`done ${url.searchParams.get("n")}`);
      },
      { auth: "none" },
    ),
  );
  return state;
}

async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(10);
  }
}

test("the limit's requests are all served; one past it gets a 503 at once; the built-in paths answer", async () => {
  const route = heldRoute("/held");
  const base = start();
  const held = Array.from({ length: ADMIN_MAX_REQUESTS }, (_, n) => fetch(`${base}/held?n=${n}`));
  await until(() => route.entered === ADMIN_MAX_REQUESTS, "the requests at the limit to reach the handler");

  const t0 = performance.now();
  const past = await fetch(`${base}/held?n=past`, { signal: AbortSignal.timeout(2000) });
  expect(performance.now() - t0).toBeLessThan(1000);
  expect(past.status).toBe(503);
  expect(past.headers.get("retry-after")).toBe("1");
  expect(past.headers.get("connection")).toBe("close");
  expect(past.headers.get("x-content-type-options")).toBe("nosniff");
  expect(((await past.json()) as { error: string }).error).toContain(`limit ${ADMIN_MAX_REQUESTS}`);
  expect(route.entered).toBe(ADMIN_MAX_REQUESTS); // the refused one never reached the handler

  // A service manager's probe and a scrape are not refused while the routes are full, nor are 404s.
  expect((await fetch(`${base}/healthz`)).status).toBe(200);
  expect((await fetch(`${base}/metrics`)).status).toBe(200);
  expect((await fetch(`${base}/nothing-here`)).status).toBe(404);

  route.release();
  const answers = await Promise.all(held);
  expect(answers.map((r) => r.status)).toEqual(Array(ADMIN_MAX_REQUESTS).fill(200));
  expect(await Promise.all(answers.map((r) => r.text()))).toEqual(
    Array.from({ length: ADMIN_MAX_REQUESTS }, (_, n) => `done ${n}`),
  );
  // Their places are given back.
  const after = await fetch(`${base}/held?n=after`);
  expect(after.status).toBe(200);
  expect(await after.text()).toBe("done after");
});

test("a request whose handler fails gives its place back", async () => {
  const route = heldRoute("/flaky");
  const base = start();
  const failed = await Promise.all(
    Array.from({ length: ADMIN_MAX_REQUESTS }, () => fetch(`${base}/flaky?fail`).then((r) => r.status)),
  );
  expect(failed).toEqual(Array(ADMIN_MAX_REQUESTS).fill(500));
  route.entered = 0;
  const held = Array.from({ length: ADMIN_MAX_REQUESTS }, (_, n) => fetch(`${base}/flaky?n=${n}`));
  await until(() => route.entered === ADMIN_MAX_REQUESTS, "every place to be free again");
  expect((await fetch(`${base}/flaky?n=past`, { signal: AbortSignal.timeout(2000) })).status).toBe(503);
  route.release();
  expect((await Promise.all(held)).every((r) => r.status === 200)).toBe(true);
});
