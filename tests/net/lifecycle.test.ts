/**
 * Every connection ends (docs/reliability.md, "Connections and timeouts"): `Connection.end()` destroys a
 * connection whose peer never closes after END_GRACE_MS, and sees the peer's FIN even when reading was paused.
 * The listener's per-address limit at the limit and one past it; how addresses are counted; the session counter.
 */

import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { type AddressInfo, createServer, type Server, type Socket, connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { Connection, END_GRACE_MS } from "../../src/net/connection.ts";
import { addressKey } from "../../src/net/ip.ts";
import { listen, type Overload } from "../../src/net/listener.ts";
import { SessionCounter } from "../../src/net/sessions.ts";

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
});

/** A server whose connections are wrapped in Connection and handed to the test. */
async function server(): Promise<{ port: number; next: () => Promise<Connection> }> {
  const waiting: ((c: Connection) => void)[] = [];
  const ready: Connection[] = [];
  const s: Server = createServer((socket) => {
    const c = new Connection(socket, false);
    const w = waiting.shift();
    if (w) w(c);
    else ready.push(c);
  });
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
  cleanups.push(() => new Promise((resolve) => s.close(resolve)));
  return {
    port: (s.address() as AddressInfo).port,
    next: () => {
      const c = ready.shift();
      return c ? Promise.resolve(c) : new Promise((resolve) => waiting.push(resolve));
    },
  };
}

function client(port: number, options: { allowHalfOpen?: boolean; localAddress?: string } = {}): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = tcpConnect({ host: "127.0.0.1", port, ...options }, () => resolve(s));
    s.once("error", reject);
    s.on("error", () => {});
    cleanups.push(() => s.destroy());
  });
}

function closed(c: Connection): Promise<number> {
  const at = performance.now();
  return new Promise((resolve) => c.onClose(() => resolve(performance.now() - at)));
}

describe("Connection.end()", () => {
  test("END_GRACE_MS is 5 s", () => {
    expect(END_GRACE_MS).toBe(5_000);
  });

  test("a peer that keeps its side open is destroyed after the grace, not before", async () => {
    const { port, next } = await server();
    const peer = await client(port, { allowHalfOpen: true });
    // The FIN goes out at end(), long before the grace runs out (a destroy at the grace would send one too): when
    // the peer saw it, awaited as an event (it may be delivered after the close on this side).
    const sawEnd = new Promise<number | null>((resolve) => {
      peer.on("end", () => resolve(performance.now()));
      peer.on("close", () => resolve(null));
    });
    peer.resume();
    const c = await next();
    const gone = closed(c);
    c.write("bye\r\n");
    const endedAt = performance.now();
    c.end(2000);
    expect(c.ending).toBe(true);
    const after = await gone;
    const endAt = await sawEnd;
    expect(endAt).not.toBeNull();
    expect(endAt! - endedAt).toBeLessThan(1500);
    expect(after).toBeGreaterThanOrEqual(1950);
    expect(after).toBeLessThan(5000);
  });

  test("ending while reading is paused still reads the peer's FIN: closed at once, not at the grace", async () => {
    const { port, next } = await server();
    const peer = await client(port);
    const c = await next();
    c.onData(() => {});
    c.pause();
    // More than the kernel buffers hold: the peer's FIN is queued behind data nobody reads.
    peer.write(Buffer.alloc(4 * 1024 * 1024, 0x61));
    await Bun.sleep(100);
    const gone = closed(c);
    c.end(10_000);
    expect(await gone).toBeLessThan(5000);
  });
});

describe("listener: max_connections_per_ip", () => {
  test("two from one address are accepted, the third is refused; another has its own; then the total", async () => {
    const overloads: Overload[] = [];
    const listener = await listen({
      host: "127.0.0.1",
      port: 0,
      tls: "none",
      identity: null,
      maxConnections: 4,
      maxConnectionsPerIp: 2,
      onConnection: (c) => {
        c.write("ok\n");
      },
      onOverload: (c, over) => {
        overloads.push(over);
        c.write("full\n");
        c.end();
      },
    });
    cleanups.push(() => listener.close(100));
    const port = listener.address.port;
    const line = async (from: string): Promise<{ s: Socket; text: string }> => {
      const s = await client(port, { localAddress: from });
      const text = await new Promise<string>((resolve) => s.once("data", (d: Buffer) => resolve(d.toString().trim())));
      return { s, text };
    };
    expect((await line("127.0.0.1")).text).toBe("ok");
    const second = await line("127.0.0.1");
    expect(second.text).toBe("ok");
    expect((await line("127.0.0.1")).text).toBe("full");
    expect(overloads.at(-1)).toEqual({ limit: "max_connections_per_ip", value: 2 });
    expect((await line("127.0.0.2")).text).toBe("ok");
    expect((await line("127.0.0.2")).text).toBe("ok");
    expect((await line("127.0.0.3")).text).toBe("full");
    expect(overloads.at(-1)).toEqual({ limit: "max_connections", value: 4 });
    expect(listener.open).toBe(4);
    // A closed connection gives its address's place back.
    second.s.destroy();
    for (let i = 0; i < 500 && listener.open > 3; i++) await Bun.sleep(20); // at most 10 s
    expect((await line("127.0.0.1")).text).toBe("ok");
  });
});

describe("implicit TLS listener: max_connections_per_ip", () => {
  test("a handshake in progress holds its address's place; another address is served; the place returns", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mailgator-lifecycle-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const openssl = Bun.spawnSync(
      ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost"].concat([
        "-keyout",
        "key.pem",
        "-out",
        "cert.pem",
      ]),
      { cwd: dir, stdout: "ignore", stderr: "ignore" },
    );
    expect(openssl.exitCode).toBe(0);
    const listener = await listen({
      host: "127.0.0.1",
      port: 0,
      tls: "tls",
      identity: { key: readFileSync(join(dir, "key.pem")), cert: readFileSync(join(dir, "cert.pem")) },
      maxConnections: 4,
      maxConnectionsPerIp: 1,
      handshakeTimeoutMs: 2000,
      onConnection: (c) => {
        c.write("ok\n");
      },
      onOverload: (c, over) => {
        c.write(`full ${over.limit}\n`);
        c.end();
      },
    });
    cleanups.push(() => listener.close(100));
    const port = listener.address.port;
    const line = async (from: string): Promise<string> => {
      const raw = await client(port, { localAddress: from });
      return new Promise((resolve, reject) => {
        const s = tlsConnect({ socket: raw, rejectUnauthorized: false });
        s.once("data", (d: Buffer) => {
          resolve(d.toString().trim());
          s.destroy();
        });
        s.once("error", reject);
        s.once("close", () => reject(new Error(`closed before any data (from ${from})`)));
      });
    };
    // Takes 127.0.0.1's only place and never speaks TLS.
    const stalled = await client(port, { localAddress: "127.0.0.1" });
    await Bun.sleep(50);
    expect(await line("127.0.0.1")).toBe("full max_connections_per_ip");
    expect(await line("127.0.0.2")).toBe("ok");
    // The stalled handshake is dropped at its timeout, and its place is given back.
    await new Promise((resolve) => stalled.once("close", resolve));
    expect(await line("127.0.0.1")).toBe("ok");
  });
});

describe("addressKey", () => {
  test("IPv4 as itself (mapped or not); IPv6 by its /64", () => {
    expect(addressKey("127.0.0.1")).toBe("127.0.0.1");
    expect(addressKey("::ffff:10.1.2.3")).toBe("10.1.2.3");
    expect(addressKey("2001:db8::1")).toBe(addressKey("2001:db8::ffff:1"));
    expect(addressKey("2001:db8::1")).toBe("20010db800000000::/64");
    expect(addressKey("2001:db8:0:1::1")).not.toBe(addressKey("2001:db8::1"));
    expect(addressKey("::1")).toBe("0::/64");
    expect(addressKey("not an address")).toBe("not an address");
  });
});

describe("SessionCounter", () => {
  test("places up to the limit; one past it is refused; a place given back (once) is taken again", () => {
    const counter = new SessionCounter(2);
    const key = SessionCounter.key(null, "Bob@Example.test");
    expect(key).toBe(SessionCounter.key(null, "bob@example.test"));
    expect(SessionCounter.key("Bot", "x")).not.toBe(SessionCounter.key("bot", "x"));
    const a = counter.acquire(key);
    const b = counter.acquire(key);
    expect(a).not.toBeNull();
    expect(b).not.toBeNull();
    expect(counter.acquire(key)).toBeNull();
    expect(counter.acquire(SessionCounter.key("bot", "x"))).not.toBeNull();
    a!();
    a!();
    expect(counter.count(key)).toBe(1);
    expect(counter.acquire(key)).not.toBeNull();
    expect(counter.acquire(key)).toBeNull();
  });
});
