/**
 * What the IMAP session's output path builds on (src/imap/session.ts `flush`): a write made while nothing is queued
 * on the socket (`writeIdle`) is sent or copied by Bun before `write` returns, so the caller may overwrite its
 * buffer at once; plain TCP and TLS alike. Once `end()` was called, writes are dropped and the close stays clean.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import {
  type AddressInfo,
  createServer as createTcpServer,
  type Server,
  type Socket,
  connect as tcpConnect,
} from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer as createTlsServer, connect as tlsConnect } from "node:tls";
import { Connection } from "../../src/net/connection.ts";
import { localhostCertificate } from "../fixtures/certificate.ts";

const SIZE = 8 * 1024 * 1024;

let dir: string;
let key: Buffer;
let cert: Buffer;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "mailgator-net-"));
  ({ key, cert } = await localhostCertificate(dir));
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A peer that reads nothing for a while (so the kernel buffers fill), then counts bytes other than 'A'. */
function slowPeer(
  tls: boolean,
): Promise<{ server: Server; port: number; result: Promise<{ bytes: number; wrong: number }> }> {
  let report!: (r: { bytes: number; wrong: number }) => void;
  const result = new Promise<{ bytes: number; wrong: number }>((resolve) => (report = resolve));
  const onSocket = (s: Socket): void => {
    s.pause();
    let bytes = 0;
    let wrong = 0;
    s.on("data", (chunk: Buffer) => {
      bytes += chunk.length;
      for (const b of chunk) if (b !== 0x41) wrong++;
    });
    s.on("end", () => report({ bytes, wrong }));
    setTimeout(() => s.resume(), 200);
  };
  const server = tls ? createTlsServer({ key, cert }, onSocket) : createTcpServer(onSocket);
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve({ server, port: (server.address() as AddressInfo).port, result })),
  );
}

function open(port: number, tls: boolean): Promise<Connection> {
  return new Promise((resolve, reject) => {
    const s = tls
      ? tlsConnect({ host: "127.0.0.1", port, rejectUnauthorized: false }, () => resolve(new Connection(s, true)))
      : tcpConnect({ host: "127.0.0.1", port }, () => resolve(new Connection(s, false)));
    s.once("error", reject);
  });
}

describe("Connection.write while writeIdle", () => {
  for (const tls of [false, true]) {
    test(`${tls ? "TLS" : "plain"}: buffer may be reused once write returns, even under backpressure`, async () => {
      const peer = await slowPeer(tls);
      const conn = await open(peer.port, tls);
      expect(conn.writeIdle).toBe(true);
      const buf = new Uint8Array(SIZE).fill(0x41);
      const accepted = conn.write(buf);
      // Far more than the kernel buffers hold: the rest waits in the socket, which must have copied it.
      expect(accepted).toBe(false);
      expect(conn.writeIdle).toBe(false);
      buf.fill(0x42);
      await conn.drained();
      expect(conn.writeIdle).toBe(true);
      conn.end();
      expect(await peer.result).toEqual({ bytes: SIZE, wrong: 0 });
      peer.server.close();
    });
  }
});

describe("Connection after end()", () => {
  for (const tls of [false, true]) {
    test(`${tls ? "TLS" : "plain"}: writes are dropped, not sent, not counted; the close is clean`, async () => {
      let received = "";
      let ended!: () => void;
      const peerEnded = new Promise<void>((resolve) => (ended = resolve));
      const onSocket = (s: Socket): void => {
        s.on("data", (chunk: Buffer) => (received += chunk.toString("latin1")));
        s.on("end", () => ended());
      };
      const server = tls ? createTlsServer({ key, cert }, onSocket) : createTcpServer(onSocket);
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      const conn = await open((server.address() as AddressInfo).port, tls);
      let closeError: Error | null | undefined;
      conn.onClose((error) => (closeError = error));
      expect(conn.write("before\r\n")).toBe(true);
      conn.end(200);
      expect(conn.write("after\r\n")).toBe(false);
      expect(await conn.writeFlushed(new TextEncoder().encode("flushed\r\n"))).toBeUndefined();
      let done = false;
      conn.afterWrites(() => (done = true));
      expect(done).toBe(true);
      await peerEnded;
      while (!conn.closed) await Bun.sleep(10);
      expect(received).toBe("before\r\n");
      expect(conn.bytesOut).toBe("before\r\n".length);
      // A write after end() would have ended the connection with an error instead.
      expect(closeError).toBeNull();
      server.close();
    });
  }
});
