/**
 * The response memory budget's bookkeeping (src/imap/memory.ts), and an upstream session's use of it against a fake
 * server, for the timings Dovecot cannot be made to produce on cue; end to end in tests/imap/response-memory.test.ts.
 */

import { expect, test } from "bun:test";
import { createServer, type Server, type Socket } from "node:net";
import { RESPONSE_GARBAGE_SHARE } from "../../src/imap/limits.ts";
import { ResponseMemory } from "../../src/imap/memory.ts";
import { UpstreamSession } from "../../src/imap/upstream.ts";

const MiB = 1024 * 1024;
const TIMEOUTS = { connectMs: 2000, handshakeMs: 2000, commandMs: 10_000 };

/** A fake upstream server that greets and hands each command line to `onCommand`. */
async function fakeServer(
  onCommand: (socket: Socket, line: string) => void,
): Promise<{ server: Server; port: number }> {
  const server = createServer((socket) => {
    socket.write("* OK [CAPABILITY IMAP4rev1] fake\r\n");
    let text = "";
    socket.on("data", (d) => {
      text += d.toString("latin1");
      for (let at = text.indexOf("\r\n"); at !== -1; at = text.indexOf("\r\n")) {
        onCommand(socket, text.slice(0, at));
        text = text.slice(at + 2);
      }
    });
    socket.on("error", () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, port: (server.address() as { port: number }).port };
}

async function openWith(port: number, memory: ResponseMemory): Promise<UpstreamSession> {
  const target = { host: "127.0.0.1", port, tls: "none" as const, skipVerify: false, extraCa: null };
  return UpstreamSession.open({ ...target, connectTimeoutMs: 2000 }, TIMEOUTS, null, null, memory);
}

async function until(what: string, condition: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !condition(); i++) await Bun.sleep(10);
  if (!condition()) throw new Error(`not reached: ${what}`);
}

test("reservations up to the budget at once; past it they wait, first come first served", async () => {
  const m = new ResponseMemory(100);
  expect(m.tryTake(60)).toBe(true);
  expect(m.tryTake(40)).toBe(true);
  expect(m.used).toBe(100);
  expect(m.tryTake(1)).toBe(false);
  const order: string[] = [];
  const big = m.take(80).granted.then(() => order.push("80"));
  const small = m.take(10).granted.then(() => order.push("10"));
  // Someone waits: a small reservation that would fit does not pass them.
  m.give(40);
  expect(m.tryTake(10)).toBe(false);
  await Bun.sleep(0);
  expect(order).toEqual([]);
  m.give(60);
  await Promise.all([big, small]);
  expect(order).toEqual(["80", "10"]);
  expect(m.used).toBe(90);
  expect(m.waiting).toBe(0);
  m.give(90);
  expect(m.used).toBe(0);
});

test("the whole budget can be reserved; one octet more never can", () => {
  const m = new ResponseMemory(100);
  expect(m.tryTake(100)).toBe(true);
  m.give(100);
  expect(m.tryTake(101)).toBe(false);
  expect(() => m.take(101)).toThrow(RangeError);
  expect(() => m.give(1)).toThrow(/given back than taken/);
});

test("garbage of counted responses is collected once an eighth of the budget of it gathered, not before", () => {
  expect(RESPONSE_GARBAGE_SHARE).toBe(8);
  let collected = 0;
  const m = new ResponseMemory(
    800,
    () => {},
    10,
    () => collected++,
  );
  expect(m.collectAfter).toBe(100);
  m.discarded(60);
  m.discarded(39);
  expect(collected).toBe(0);
  // At the limit: collected, and the count starts again.
  m.discarded(1);
  expect(collected).toBe(1);
  m.discarded(99);
  expect(collected).toBe(1);
  // One past it, in one step.
  m.discarded(2);
  expect(collected).toBe(2);
  m.discarded(99);
  expect(collected).toBe(2);
  // What is discarded changes nothing of what is reserved.
  expect(m.used).toBe(0);
});

test("a response that holds a reservation goes ahead of those waiting, within the budget", () => {
  const reports: [number, number][] = [];
  const m = new ResponseMemory(100, (used, waiting) => reports.push([used, waiting]));
  expect(m.tryTake(40)).toBe(true);
  expect(m.tryTake(20)).toBe(true);
  m.take(50);
  expect(m.waiting).toBe(1);
  expect(m.tryTake(30)).toBe(false);
  expect(m.tryTake(30, true)).toBe(true);
  expect(m.tryTake(11, true)).toBe(false);
  expect(m.used).toBe(90);
  // What the gauges hear: the one waiting still waits after the response went ahead of it.
  expect(reports.at(-1)).toEqual([90, 1]);
});

test("a waiter that gives up leaves the queue, and those behind it go on", async () => {
  const m = new ResponseMemory(100);
  expect(m.tryTake(60)).toBe(true);
  const gone = m.take(80);
  let behind = false;
  const next = m.take(30);
  void next.granted.then(() => (behind = true));
  expect(m.waiting).toBe(2);
  gone.cancel();
  await next.granted;
  expect(behind).toBe(true);
  expect(m.used).toBe(90);
  expect(m.waiting).toBe(0);
  // Cancelling again, or after the grant, changes nothing.
  gone.cancel();
  next.cancel();
  expect(m.used).toBe(90);
});

test("upstream: a response's second large literal goes ahead of a waiting session when it fits", async () => {
  const memory = new ResponseMemory(10 * MiB);
  let second: (() => void) | null = null;
  const { server, port } = await fakeServer((socket, line) => {
    const tag = line.split(" ")[0];
    socket.write(`* 1 FETCH (BODY[1] {${2 * MiB}}\r\n`);
    socket.write(Buffer.alloc(2 * MiB, 0x61));
    second = () => socket.write(` BODY[2] {${2 * MiB}}\r\n${"b".repeat(2 * MiB)})\r\n${tag} OK done\r\n`);
  });
  const up = await openWith(port, memory);
  try {
    let fetched = 0;
    const run = up.run({ name: "NOOP" }, (r) => {
      if (r.type === "FETCH") fetched++;
    });
    await until("the first literal reserved", () => memory.used === 2 * MiB && second !== null);
    // Another session holds 4 MiB and one waits for 5 (2 + 4 + 5 > 10); this response's 2 MiB more fit (8).
    expect(memory.tryTake(4 * MiB)).toBe(true);
    const waiting = memory.take(5 * MiB);
    second!();
    expect((await run).status).toBe("OK");
    expect(fetched).toBe(1);
    expect(up.closed).toBe(false);
    // Delivered (no owner's hook: at once), the 4 MiB are back; the waiter is let in.
    await waiting.granted;
    expect(memory.used).toBe(9 * MiB);
  } finally {
    up.close();
    server.close();
  }
});

test("upstream: a counted response's read chunks, and the response once delivered, are garbage collected", async () => {
  // A budget of 8 MiB collects once a MiB of garbage gathered; a response of 4 MiB leaves its 4 MiB of read chunks
  // (collected two to four times, by how the reads fall), then itself once delivered (once more). One of half a MiB
  // is not counted, and leaves nothing to collect.
  let collected = 0;
  const memory = new ResponseMemory(
    8 * MiB,
    () => {},
    MiB,
    () => collected++,
  );
  let commands = 0;
  const { server, port } = await fakeServer((socket, line) => {
    const tag = line.split(" ")[0];
    const size = ++commands === 1 ? MiB / 2 : 4 * MiB;
    socket.write(`* 1 FETCH (BODY[] {${size}}\r\n`);
    socket.write(Buffer.alloc(size, 0x61));
    socket.write(`)\r\n${tag} OK done\r\n`);
  });
  const up = await openWith(port, memory);
  try {
    const small = await up.run({ name: "NOOP" }, () => {});
    expect(small.status).toBe("OK");
    expect(collected).toBe(0);
    const large = await up.run({ name: "NOOP" }, () => {});
    expect(large.status).toBe("OK");
    expect(collected).toBeGreaterThanOrEqual(3);
    expect(collected).toBeLessThanOrEqual(5);
    expect(memory.used).toBe(0);
  } finally {
    up.close();
    server.close();
  }
});

test("upstream: a session that ends while it waits for memory leaves the queue", async () => {
  const memory = new ResponseMemory(10 * MiB);
  const { server, port } = await fakeServer((socket) => socket.write(`* 1 FETCH (BODY[] {${8 * MiB}}\r\n`));
  expect(memory.tryTake(5 * MiB)).toBe(true);
  const up = await openWith(port, memory);
  try {
    const run = up.run({ name: "NOOP" }, () => {}).catch((e: Error) => e);
    await until("the session waiting", () => memory.waiting === 1);
    up.close();
    expect(await run).toBeInstanceOf(Error);
    await until("out of the queue", () => memory.waiting === 0);
    // Nobody is before a request that fits any more.
    expect(memory.tryTake(MiB)).toBe(true);
    expect(memory.used).toBe(6 * MiB);
  } finally {
    server.close();
  }
});
