/**
 * An upstream connection attempt belongs to its session (docs/imap.md "Upstream connections"): against an
 * upstream that accepts TCP and then never answers the TLS handshake, the attempt is given up as soon as the agent
 * hangs up or the proxy stops, not when the 10 s connect timeout fires. A stand-in server, because a real one
 * does not stall on purpose.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { createServer, type Server, type Socket } from "node:net";
import { RawImap, startTestProxy } from "./helpers.ts";

/** Accepts and says nothing; records when each connection arrives and when it closes. */
let silent: Server;
const arrivals: { at: number; closedAt: number | null }[] = [];

beforeAll(async () => {
  silent = createServer((socket: Socket) => {
    const entry = { at: performance.now(), closedAt: null as number | null };
    arrivals.push(entry);
    socket.on("error", () => {});
    socket.resume(); // reads (and drops) the ClientHello, so that the proxy's close is seen
    socket.on("close", () => {
      entry.closedAt = performance.now();
    });
  });
  await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
});

afterAll(() => {
  silent.close();
});

async function arrival(index: number): Promise<{ at: number; closedAt: number | null }> {
  for (let i = 0; i < 100 && arrivals.length <= index; i++) await Bun.sleep(20);
  const entry = arrivals[index];
  if (entry === undefined) throw new Error("the proxy never connected upstream");
  return entry;
}

async function closedWithin(entry: { closedAt: number | null }, ms: number): Promise<number | null> {
  const from = performance.now();
  while (entry.closedAt === null && performance.now() - from < ms) await Bun.sleep(20);
  return entry.closedAt === null ? null : entry.closedAt - from;
}

test("an agent that hangs up during the upstream TLS handshake: the attempt is closed at once", async () => {
  const port = (silent.address() as { port: number }).port;
  const proxy = await startTestProxy({ upstreamAddr: `127.0.0.1:${port}`, upstreamTls: "tls" });
  try {
    const agent = await RawImap.open(proxy.port);
    agent.write('a LOGIN "someone" "secret"\r\n');
    const entry = await arrival(0);
    agent.close();
    expect(await closedWithin(entry, 5000)).not.toBeNull(); // long before the 10 s connect timeout
  } finally {
    await proxy.close();
  }
});

test("the proxy stopping during an upstream TLS handshake closes the attempt at once", async () => {
  const port = (silent.address() as { port: number }).port;
  const proxy = await startTestProxy({ upstreamAddr: `127.0.0.1:${port}`, upstreamTls: "tls" });
  const agent = await RawImap.open(proxy.port);
  try {
    agent.write('a LOGIN "someone" "secret"\r\n');
    const entry = await arrival(1);
    await proxy.close();
    expect(await closedWithin(entry, 5000)).not.toBeNull(); // long before the 10 s connect timeout
  } finally {
    agent.close();
  }
});
