/**
 * The admin listener reads a route's request body itself, within ADMIN_BODY_MS and up to ADMIN_MAX_BODY_BYTES, before
 * the request takes one of the ADMIN_MAX_REQUESTS places (src/admin/server.ts; docs/reliability.md "Connections and
 * timeouts"). Over real sockets: a body that arrives just within the deadline is served; one that stalls past it is
 * answered 408 at the deadline and its connection closed, its handler never called; clients stalled in their bodies,
 * more of them than there are places, hold none, so a normal request is served meanwhile and after; a body of
 * exactly ADMIN_MAX_BODY_BYTES is served, one octet more is 413, declared or sent in chunks. A route that takes less
 * (the approval pages: MAX_FORM_BYTES) names its own limit, and the listener holds no more of a body for it: a body
 * declared one octet longer is refused before any of it is sent, instead of being waited for and kept.
 */
import { afterAll, expect, test } from "bun:test";
import { connect } from "node:net";
import {
  ADMIN_BODY_MS,
  ADMIN_IDLE_SECONDS,
  ADMIN_MAX_BODY_BYTES,
  ADMIN_MAX_REQUESTS,
  type AdminServer,
  registerAdminRoute,
  startAdmin,
} from "../../src/admin/server.ts";
import { MAX_FORM_BYTES } from "../../src/approvals/web.ts";

const servers: AdminServer[] = [];
const removes: (() => void)[] = [];
afterAll(async () => {
  for (const r of removes) r();
  for (const s of servers) await s.close();
});

/**
 * A listener with a POST route that answers the length of the body its handler was given; `calls` counts them.
 * `maxBodyBytes`: the route's own limit, as serve gives the approval pages (MAX_FORM_BYTES).
 */
function start(path: string, maxBodyBytes?: number): { port: number; calls: string[] } {
  const calls: string[] = [];
  removes.push(
    registerAdminRoute(
      "POST",
      path,
      async (req) => {
        const body = await req.text();
        calls.push(body.slice(0, 16));
        return new Response(`got ${body.length}`);
      },
      maxBodyBytes === undefined ? { auth: "none" } : { auth: "none", maxBodyBytes },
    ),
  );
  const s = startAdmin({
    config: { listenAddr: { host: "127.0.0.1", port: 0 }, allowRemote: false, tokenHash: null },
    health: () => ({ problems: [], checks: {} }),
  });
  servers.push(s);
  return { port: s.address.port, calls };
}

interface RawAnswer {
  /** The status line's code, or null when the connection closed without one. */
  readonly status: number | null;
  readonly text: string;
  /** Milliseconds from the first write to the first octet of the answer, and to the connection's close. */
  readonly answeredAt: number | null;
  readonly closedAt: number;
}

/**
 * A client on a real socket: writes `head` (the request line and header), then each part at its time (ms after the
 * head), and collects what the listener answers until it closes the connection (or `endAfterMs`).
 */
function rawClient(port: number, head: string, parts: { atMs: number; data: string }[], endAfterMs = 20_000) {
  return new Promise<RawAnswer>((resolve) => {
    const socket = connect(port, "127.0.0.1");
    let text = "";
    let answeredAt: number | null = null;
    const timers: ReturnType<typeof setTimeout>[] = [];
    let t0 = 0;
    const finish = () => {
      for (const t of timers) clearTimeout(t);
      const status = /^HTTP\/1\.1 (\d{3}) /.exec(text)?.[1];
      resolve({ status: status === undefined ? null : Number(status), text, answeredAt, closedAt: Date.now() - t0 });
    };
    socket.on("connect", () => {
      t0 = Date.now();
      socket.write(head);
      for (const part of parts)
        timers.push(
          setTimeout(() => {
            if (!socket.destroyed) socket.write(part.data);
          }, part.atMs),
        );
      timers.push(setTimeout(() => socket.destroy(), endAfterMs));
    });
    socket.on("data", (d) => {
      if (answeredAt === null) answeredAt = Date.now() - t0;
      text += d.toString("latin1");
      // An answer read whole, on a connection kept open: done. One with `Connection: close` waits for the listener
      // to close it (closedAt).
      const end = text.indexOf("\r\n\r\n");
      const head = `${text.slice(0, end)}\r\n`;
      const length = /\r\ncontent-length: (\d+)\r\n/i.exec(head)?.[1];
      const kept = !/\r\nconnection: close\r\n/i.test(head);
      if (end >= 0 && kept && length !== undefined && text.length - end - 4 >= Number(length)) socket.destroy();
    });
    socket.on("error", () => {});
    socket.on("close", finish);
  });
}

const post = (path: string, length: number | "chunked") =>
  `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n` +
  (length === "chunked" ? "Transfer-Encoding: chunked\r\n\r\n" : `Content-Length: ${length}\r\n\r\n`);

test(`ADMIN_BODY_MS (${ADMIN_BODY_MS} ms) is below the runtime's own cut (ADMIN_IDLE_SECONDS)`, () => {
  expect(ADMIN_BODY_MS).toBeLessThan(ADMIN_IDLE_SECONDS * 1000);
});

test("a body that arrives just within ADMIN_BODY_MS is served; one stalled past it gets 408, closed", async () => {
  const { port, calls } = start("/slow");
  // Ten octets: two with the header, then one every 400 ms, the last 1 s before the deadline.
  const last = ADMIN_BODY_MS - 1000;
  const drip = Array.from({ length: 8 }, (_, i) => ({ atMs: last - (7 - i) * 400, data: "x" }));
  const [within, past] = await Promise.all([
    rawClient(port, `${post("/slow", 10)}ok`, drip),
    // The same, but its last octets come 1 s after the deadline.
    rawClient(port, `${post("/slow", 10)}no`, [...drip.slice(0, 7), { atMs: ADMIN_BODY_MS + 1000, data: "x" }]),
  ]);
  expect(within.status).toBe(200);
  expect(within.text.endsWith("got 10")).toBe(true);
  expect(within.answeredAt!).toBeGreaterThanOrEqual(last);

  expect(past.status).toBe(408);
  expect(past.text).toMatch(/\r\nconnection: close\r\n/i);
  expect(past.text).toContain(`not received within ${ADMIN_BODY_MS} ms (ADMIN_BODY_MS); nothing was done`);
  // At the deadline, not before it, and before its last octet: the listener closed the connection itself.
  expect(past.answeredAt!).toBeGreaterThanOrEqual(ADMIN_BODY_MS - 50);
  expect(past.answeredAt!).toBeLessThan(ADMIN_BODY_MS + 1000);
  expect(past.closedAt).toBeLessThan(ADMIN_BODY_MS + 1000);
  // Only the body that arrived reached a handler.
  expect(calls).toEqual(["okxxxxxxxx"]);
});

test("clients stalled in their bodies, more than ADMIN_MAX_REQUESTS, hold no place: a POST is served", async () => {
  const { port, calls } = start("/stalled");
  const base = `http://127.0.0.1:${port}`;
  const stalled = Array.from({ length: ADMIN_MAX_REQUESTS + 1 }, () =>
    rawClient(port, `${post("/stalled", 100)}half`, []),
  );
  // Their headers are read well within this; under the old limit they held every place, and this got 503.
  await Bun.sleep(500);
  const t0 = performance.now();
  const during = await fetch(`${base}/stalled`, { method: "POST", body: "t=1", signal: AbortSignal.timeout(3000) });
  expect(during.status).toBe(200);
  expect(await during.text()).toBe("got 3");
  expect(performance.now() - t0).toBeLessThan(1000);

  const answers = await Promise.all(stalled);
  expect(answers.map((a) => a.status)).toEqual(Array(ADMIN_MAX_REQUESTS + 1).fill(408));
  for (const a of answers) expect(a.closedAt).toBeLessThan(ADMIN_BODY_MS + 2000);
  // Afterwards too; and no stalled body ever reached the handler.
  const after = await fetch(`${base}/stalled`, { method: "POST", body: "t=2" });
  expect(after.status).toBe(200);
  expect(calls).toEqual(["t=1", "t=2"]);
});

test(`a body of ADMIN_MAX_BODY_BYTES (${ADMIN_MAX_BODY_BYTES}) is served; one octet more is 413`, async () => {
  const { port, calls } = start("/big");
  const base = `http://127.0.0.1:${port}`;
  const exact = await fetch(`${base}/big`, { method: "POST", body: "a".repeat(ADMIN_MAX_BODY_BYTES) });
  expect(exact.status).toBe(200);
  expect(await exact.text()).toBe(`got ${ADMIN_MAX_BODY_BYTES}`);

  // Declared in Content-Length: refused before anything is read.
  const declared = await fetch(`${base}/big`, { method: "POST", body: "a".repeat(ADMIN_MAX_BODY_BYTES + 1) });
  expect(declared.status).toBe(413);
  expect(declared.headers.get("connection")).toBe("close");
  // Sent in chunks (no length declared): refused once the octets read pass the limit.
  const chunk = (data: string) => `${data.length.toString(16)}\r\n${data}\r\n`;
  const chunked = await rawClient(port, post("/big", "chunked"), [
    { atMs: 0, data: chunk("b".repeat(ADMIN_MAX_BODY_BYTES)) },
    { atMs: 100, data: `${chunk("b")}0\r\n\r\n` },
  ]);
  expect(chunked.status).toBe(413);
  expect(chunked.text).toContain(`at most ${ADMIN_MAX_BODY_BYTES} octets`);
  expect(calls).toEqual(["a".repeat(16)]);
});

test(`a route's own maxBodyBytes (${MAX_FORM_BYTES}): served at it, one past refused at once`, async () => {
  const { port, calls } = start("/form", MAX_FORM_BYTES);
  const base = `http://127.0.0.1:${port}`;
  const exact = await fetch(`${base}/form`, { method: "POST", body: "a".repeat(MAX_FORM_BYTES) });
  expect(exact.status).toBe(200);
  expect(await exact.text()).toBe(`got ${MAX_FORM_BYTES}`);
  // Declared one octet longer, nothing of it sent: refused at once, not waited for until ADMIN_BODY_MS (and its
  // octets, sent, held until then) as under the listener's own ADMIN_MAX_BODY_BYTES.
  const declared = await rawClient(port, post("/form", MAX_FORM_BYTES + 1), []);
  expect(declared.status).toBe(413);
  expect(declared.text).toContain(`at most ${MAX_FORM_BYTES} octets`);
  expect(declared.answeredAt!).toBeLessThan(1000);
  // Sent in chunks: refused as soon as the octets read pass it, the rest never awaited.
  const chunk = (data: string) => `${data.length.toString(16)}\r\n${data}\r\n`;
  const chunked = await rawClient(port, `${post("/form", "chunked")}${chunk("b".repeat(MAX_FORM_BYTES + 1))}`, []);
  expect(chunked.status).toBe(413);
  expect(chunked.answeredAt!).toBeLessThan(1000);
  expect(calls).toEqual(["a".repeat(16)]);
});

test(`a route's maxBodyBytes is 0 to ADMIN_MAX_BODY_BYTES: one past it is refused at registration`, () => {
  const handler = () => new Response("x");
  removes.push(registerAdminRoute("POST", "/at-limit", handler, { auth: "none", maxBodyBytes: ADMIN_MAX_BODY_BYTES }));
  removes.push(registerAdminRoute("POST", "/none", handler, { auth: "none", maxBodyBytes: 0 }));
  for (const bad of [ADMIN_MAX_BODY_BYTES + 1, -1, 1.5])
    expect(() => registerAdminRoute("POST", "/past", handler, { auth: "none", maxBodyBytes: bad })).toThrow(
      `admin: a route's maxBodyBytes must be 0 to ${ADMIN_MAX_BODY_BYTES}, got ${bad}`,
    );
});
