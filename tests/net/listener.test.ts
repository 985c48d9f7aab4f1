/** Implicit-TLS listener: a handshake in progress holds a place under the connection limit, and times out. */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { type Socket, connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { type Listener, listen, TLS_HANDSHAKE_TIMEOUT_MS, type TlsIdentity } from "../../src/net/listener.ts";
import { localhostCertificate } from "../fixtures/certificate.ts";

let dir: string;
let identity: TlsIdentity;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "mailgator-listener-"));
  identity = await localhostCertificate(dir);
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A TLS client that reads the first line the server sends. */
function tlsFirstLine(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ host: "127.0.0.1", port, rejectUnauthorized: false });
    let text = "";
    s.on("data", (chunk: Buffer) => {
      text += chunk.toString("latin1");
      if (text.includes("\n")) {
        s.destroy();
        resolve(text.trim());
      }
    });
    s.once("error", reject);
  });
}

function rawConnect(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = tcpConnect({ host: "127.0.0.1", port }, () => resolve(s));
    s.once("error", reject);
  });
}

describe("implicit TLS listener", () => {
  test("the handshake timeout is a named constant well under Node's 120 s", () => {
    expect(TLS_HANDSHAKE_TIMEOUT_MS).toBeLessThanOrEqual(30_000);
  });

  test("a connection still in its handshake counts against the limit, and is dropped after the timeout", async () => {
    const listener: Listener = await listen({
      host: "127.0.0.1",
      port: 0,
      tls: "tls",
      identity,
      maxConnections: 1,
      handshakeTimeoutMs: 300,
      onConnection: (c) => {
        c.write("* OK welcome\r\n");
      },
      onOverload: (c) => {
        c.write("* BYE too many connections\r\n");
        c.end();
      },
    });
    const port = listener.address.port;
    try {
      // Takes the only place and never speaks TLS.
      const idle = await rawConnect(port);
      const closed = new Promise<number>((resolve) => {
        const at = performance.now();
        idle.once("close", () => resolve(performance.now() - at));
      });
      await Bun.sleep(50);
      expect(await tlsFirstLine(port)).toBe("* BYE too many connections");
      const after = await closed;
      expect(after).toBeGreaterThan(150);
      expect(after).toBeLessThan(5000);
      // Its place is free again.
      expect(await tlsFirstLine(port)).toBe("* OK welcome");
    } finally {
      await listener.close(100);
    }
  });
});
