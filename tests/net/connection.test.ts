/**
 * What the IMAP session's output path builds on (src/imap/session.ts `flush`): a write of at most WRITE_PIECE octets
 * made while nothing is queued (`writeIdle`) is sent or copied by Bun before `write` returns, so the caller may
 * overwrite its buffer at once; a longer one is kept by reference and handed to the socket a piece at a time, so
 * that the runtime holds no copy of it (docs/reliability.md "Response memory"); plain TCP and TLS alike. Once
 * `end()` was called, writes are dropped and the close stays clean.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
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
import { Connection, WRITE_PIECE } from "../../src/net/connection.ts";
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
      // Pieces of WRITE_PIECE octets from one buffer, each overwritten as soon as written, until the kernel buffers
      // are full and the socket had to copy what it was given last.
      const buf = new Uint8Array(WRITE_PIECE);
      let bytes = 0;
      let accepted = true;
      while (accepted && bytes < SIZE) {
        expect(conn.writeIdle).toBe(true);
        accepted = conn.write(buf.fill(0x41));
        buf.fill(0x42);
        bytes += WRITE_PIECE;
      }
      expect(accepted).toBe(false);
      expect(conn.writeIdle).toBe(false);
      await conn.drained();
      expect(conn.writeIdle).toBe(true);
      conn.end();
      expect(await peer.result).toEqual({ bytes, wrong: 0 });
      peer.server.close();
    });
  }
});

/** This process's resident memory, in MiB (VmRSS). */
function rssMiB(): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"))![1]) / 1024;
}

/** A peer that reads nothing until `read()`, then collects everything until the connection ends. */
function pausedPeer(tls: boolean): Promise<{ server: Server; port: number; read(): Promise<Buffer> }> {
  let accepted!: (s: Socket) => void;
  const socket = new Promise<Socket>((resolve) => (accepted = resolve));
  const onSocket = (s: Socket): void => {
    s.pause();
    accepted(s);
  };
  const server = tls ? createTlsServer({ key, cert }, onSocket) : createTcpServer(onSocket);
  const read = async (): Promise<Buffer> => {
    const s = await socket;
    const chunks: Buffer[] = [];
    s.on("data", (chunk: Buffer) => chunks.push(chunk));
    const ended = new Promise<void>((resolve) => s.on("end", resolve));
    s.resume();
    await ended;
    return Buffer.concat(chunks);
  };
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve({ server, port: (server.address() as AddressInfo).port, read })),
  );
}

describe("Connection.write longer than WRITE_PIECE", () => {
  const LONG = 64 * 1024 * 1024;
  for (const tls of [false, true]) {
    test(`${tls ? "TLS" : "plain"}: kept by reference and handed on a piece at a time, in order`, async () => {
      const peer = await pausedPeer(tls);
      const conn = await open(peer.port, tls);
      const long = new Uint8Array(LONG);
      for (let i = 0; i < LONG; i += 4096) long[i] = (i / 4096) & 0xff;
      Bun.gc(true);
      const before = rssMiB();
      expect(conn.write(long)).toBe(false);
      // The runtime copied one piece at most, not the 60-odd MiB the kernel did not take (it did, and 64 MiB
      // more of RSS here, before WRITE_PIECE). 16 MiB of margin for whatever else the process allocates.
      expect(rssMiB() - before).toBeLessThan(16);
      expect(conn.writeIdle).toBe(false);
      // Writes made meanwhile follow it, and so does a callback for everything written so far.
      expect(conn.write("tail")).toBe(false);
      let written = false;
      conn.afterWrites(() => (written = true));
      let drained = false;
      void conn.drained().then(() => (drained = true));
      await Bun.sleep(200);
      expect(written).toBe(false);
      expect(drained).toBe(false);
      // end() waits for what is queued.
      conn.end(30_000);
      const received = await peer.read();
      expect(received.length).toBe(LONG + 4);
      expect(received.subarray(0, LONG).equals(long)).toBe(true);
      expect(received.subarray(LONG).toString("latin1")).toBe("tail");
      expect(written).toBe(true);
      expect(drained).toBe(true);
      expect(conn.bytesOut).toBe(LONG + 4);
      peer.server.close();
    });

    test(`${tls ? "TLS" : "plain"}: a connection destroyed with output queued runs its callbacks`, async () => {
      const peer = await pausedPeer(tls);
      const conn = await open(peer.port, tls);
      expect(conn.write(new Uint8Array(16 * 1024 * 1024))).toBe(false);
      let written = false;
      conn.afterWrites(() => (written = true));
      const drained = conn.drained();
      await Bun.sleep(100);
      expect(written).toBe(false);
      conn.destroy();
      await drained;
      while (!conn.closed) await Bun.sleep(10);
      expect(written).toBe(true);
      // Nothing is written any more, nor queued.
      expect(conn.write(new Uint8Array(WRITE_PIECE + 1))).toBe(false);
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
