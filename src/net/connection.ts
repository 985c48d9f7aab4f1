/**
 * One TCP connection, on either side of the proxy, plain or TLS, with the upgrade to TLS in place (STARTTLS).
 *
 * Built on node:net and node:tls because Bun 1.4.4's `upgradeTLS` cannot act as a TLS server (oven-sh/bun#25044);
 * one socket type for both sides keeps the protocol code the same whichever way a connection was made.
 * Bytes are delivered as Buffers the caller owns: `subarray` views of them do not copy.
 *
 * Not node's `onread` (one reused read buffer): in Bun 1.4.4 it is a JavaScript layer over the same native data
 * handler, which still copies each read into a new Buffer; `onread` then copies that into the caller's buffer
 * (one callback per buffer-full), so it adds a copy and saves no allocation (docs/imap.md, Benchmarks).
 * `Bun.connect` delivers reads the same way (measured: the same CPU per GB received).
 */

import type { Socket } from "node:net";
import { type ConnectionOptions, TLSSocket, connect as tlsConnect } from "node:tls";

export type DataHandler = (chunk: Buffer) => void;

/**
 * After `end()`, how long the peer has to take what was written and close its side before the connection is
 * destroyed. Without it a peer that never closes (or stops reading) keeps a half-closed connection, and its place
 * under the connection limits, for as long as it likes (docs/reliability.md, "Connections and timeouts"). 5 s is
 * many round trips on any working network for a final reply of a few lines; a session's last reply is never large.
 */
export const END_GRACE_MS = 5_000;

const EMPTY = new Uint8Array(0);

/**
 * Octets of a longer write handed to the runtime's socket at a time. Bun's socket copies what the kernel does not
 * take of a write at once, and joins the writes queued behind it into one more copy when it drains: a fetched
 * message of 100 MiB for an agent that does not read held 100 MiB more than the response memory budget counts
 * (docs/reliability.md "Response memory"). A write longer than this is kept here by reference instead and handed
 * on a piece at a time, each once the socket has given the one before to the kernel, so the runtime holds at
 * most one piece of it; writes made meanwhile wait behind it, in order.
 */
export const WRITE_PIECE = 256 * 1024;

export class Connection {
  #socket: Socket;
  #onData: DataHandler | null = null;
  readonly #onClose: ((error: Error | null) => void)[] = [];
  #closed = false;
  #error: Error | null = null;
  #paused = false;
  #endTimer: ReturnType<typeof setTimeout> | null = null;
  /**
   * What waits to be handed to the socket behind a write longer than WRITE_PIECE, by reference and in order, with
   * the `afterWrites` callbacks among it; `#offset` octets of the first entry were handed on already.
   */
  #queue: (Uint8Array | string | (() => void))[] = [];
  #offset = 0;
  /** The piece handed to the socket last, until its write callback: the next one waits for it. */
  #piece: object | null = null;
  /** `end()` was called while `#queue` held output: the socket is ended once it is handed on. */
  #endQueued = false;
  /** `drained()` calls waiting for `#queue` to be handed on. */
  #queueDrained: (() => void)[] = [];
  /** True once the connection is encrypted (implicit TLS, or after STARTTLS). */
  secure: boolean;
  readonly remoteAddress: string;
  readonly remotePort: number;
  /** Application bytes received and handed to `write` (after TLS decryption): for the access log. */
  bytesIn = 0;
  bytesOut = 0;

  constructor(socket: Socket, secure: boolean) {
    this.#socket = socket;
    this.secure = secure;
    this.remoteAddress = normalizeAddress(socket.remoteAddress ?? "");
    this.remotePort = socket.remotePort ?? 0;
    this.#attach(socket);
  }

  #attach(socket: Socket): void {
    socket.setNoDelay(true);
    socket.on("data", this.#handleData);
    socket.on("error", this.#handleError);
    socket.on("close", this.#handleClose);
  }

  #detach(socket: Socket): void {
    socket.off("data", this.#handleData);
    socket.off("error", this.#handleError);
    socket.off("close", this.#handleClose);
  }

  #handleData = (chunk: Buffer): void => {
    this.bytesIn += chunk.length;
    this.#onData?.(chunk);
  };

  #handleError = (error: Error): void => {
    this.#error ??= error;
  };

  #handleClose = (): void => {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#endTimer !== null) clearTimeout(this.#endTimer);
    this.#endTimer = null;
    // What was queued will not be sent: its callbacks run now, as the socket's own do when it closes.
    this.#dropQueue();
    for (const handler of this.#onClose) handler(this.#error);
  };

  get closed(): boolean {
    return this.#closed;
  }

  /** Where received bytes go; one handler at a time. */
  onData(handler: DataHandler | null): void {
    this.#onData = handler;
  }

  /** Adds a handler called once when the connection is gone, with the error that ended it, if any. */
  onClose(handler: (error: Error | null) => void): void {
    this.#onClose.push(handler);
    if (this.#closed) handler(this.#error);
  }

  /**
   * False once the connection is closed or `end()` was called: what is written then would never be sent, and the
   * runtime would end the connection with a "write after end" error instead of the clean close `end()` began.
   */
  get #writable(): boolean {
    return !this.#closed && !this.#socket.destroyed && !this.#socket.writableEnded && !this.#endQueued;
  }

  /**
   * Queues bytes; returns false when the kernel buffer is full or a longer write is still being handed on (wait for
   * `drained()`), or when the connection is ending or closed (the bytes are dropped). Bytes longer than WRITE_PIECE
   * are kept by reference until `afterWrites` says they are written: the caller must not change them before.
   */
  write(data: Uint8Array | string): boolean {
    if (!this.#writable) return false;
    const size = typeof data === "string" ? Buffer.byteLength(data) : data.byteLength;
    this.bytesOut += size;
    if (this.#queue.length === 0 && size <= WRITE_PIECE) return this.#socket.write(data);
    this.#queue.push(data);
    this.#pump();
    return this.#queue.length === 0 && this.#piece === null && !this.#socket.writableNeedDrain;
  }

  /**
   * Hands what `#queue` holds to the socket, a piece (WRITE_PIECE) at a time: the next once the socket has given the
   * one before to the kernel (at once if the kernel took it whole), so that the socket never copies more than one
   * piece, nor joins queued writes into one copy.
   */
  #pump(): void {
    while (this.#piece === null && this.#queue.length > 0) {
      if (this.#closed || this.#socket.destroyed) return this.#dropQueue();
      const head = this.#queue[0]!;
      if (typeof head === "function") {
        // Everything before it was handed to the kernel: the socket calls it after what it still holds, if any.
        this.#queue.shift();
        this.#socket.write(EMPTY, () => head());
        continue;
      }
      let piece: Uint8Array | string;
      if (typeof head === "string" || head.byteLength - this.#offset <= WRITE_PIECE) {
        piece = typeof head === "string" || this.#offset === 0 ? head : head.subarray(this.#offset);
        this.#queue.shift();
        this.#offset = 0;
      } else {
        piece = head.subarray(this.#offset, this.#offset + WRITE_PIECE);
        this.#offset += WRITE_PIECE;
      }
      const token = {};
      this.#piece = token;
      this.#socket.write(piece, () => {
        if (this.#piece !== token) return;
        this.#piece = null;
        this.#pump();
      });
      // Taken whole by the kernel (the socket holds nothing): the next piece goes now.
      if (this.#socket.writableLength === 0) this.#piece = null;
    }
    if (this.#piece !== null) return;
    if (this.#endQueued) {
      this.#endQueued = false;
      this.#socket.end();
    }
    const waiting = this.#queueDrained;
    this.#queueDrained = [];
    for (const done of waiting) done();
  }

  /** The connection is gone: what `#queue` holds is dropped, its `afterWrites` callbacks run, `drained()` resolves. */
  #dropQueue(): void {
    const queue = this.#queue;
    this.#queue = [];
    this.#offset = 0;
    this.#piece = null;
    for (const entry of queue) if (typeof entry === "function") entry();
    const waiting = this.#queueDrained;
    this.#queueDrained = [];
    for (const done of waiting) done();
  }

  /**
   * True when nothing is queued: a `write` of at most WRITE_PIECE octets now goes straight to Bun's native socket,
   * which sends the bytes or copies what the kernel did not take, so the caller may overwrite its buffer as soon
   * as `write` returns (tests/net/connection.test.ts checks this). Otherwise a write is queued by reference, and so
   * is a longer one.
   */
  get writeIdle(): boolean {
    return this.#queue.length === 0 && this.#piece === null && this.#socket.writableLength === 0;
  }

  /** Calls `done` once everything written so far has been handed to the kernel (or the connection closed). */
  afterWrites(done: () => void): void {
    if (!this.#writable) return done();
    if (this.#queue.length > 0) {
      this.#queue.push(done);
      return;
    }
    this.#socket.write(EMPTY, () => done());
  }

  /**
   * Writes and resolves once these bytes have been handed to the kernel (or the connection closed), so the
   * caller may reuse the buffer they came from.
   */
  writeFlushed(data: Uint8Array): Promise<void> {
    if (!this.#writable) return Promise.resolve();
    return new Promise((resolve) => {
      this.write(data);
      this.afterWrites(resolve);
    });
  }

  /** Resolves when written data has been handed to the kernel, or the connection closed. */
  drained(): Promise<void> {
    if (this.#queue.length > 0 || this.#piece !== null) {
      return new Promise<void>((resolve) => this.#queueDrained.push(resolve)).then(() => this.drained());
    }
    if (this.#closed || this.#socket.writableLength === 0 || !this.#socket.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        this.#socket.off("drain", done);
        this.#socket.off("close", done);
        resolve();
      };
      this.#socket.on("drain", done);
      this.#socket.on("close", done);
    });
  }

  /** Stops delivering data (TCP flow control pushes back on the peer). */
  pause(): void {
    if (!this.#paused) {
      this.#paused = true;
      this.#socket.pause();
    }
  }

  resume(): void {
    if (this.#paused) {
      this.#paused = false;
      this.#socket.resume();
    }
  }

  /**
   * Server side of STARTTLS: call after writing the "go ahead" reply. Bytes the peer sent in clear after its
   * STARTTLS command must be dropped by the caller (RFC 3207 §4.2, RFC 9051 §6.2.1; docs/protocol.md §4, §6): from here
   * on only decrypted bytes reach the data handler.
   */
  async startTlsServer(key: Buffer, cert: Buffer, handshakeTimeoutMs: number): Promise<void> {
    this.#assertNothingQueued();
    const raw = this.#socket;
    this.#detach(raw);
    const secure = new TLSSocket(raw, { isServer: true, key, cert });
    this.#socket = secure;
    this.#attach(secure);
    await this.#handshake(secure, "secure", handshakeTimeoutMs);
  }

  /**
   * Client side of STARTTLS: call after the server's go-ahead reply. The certificate is verified per `options`;
   * any failure rejects and destroys the connection.
   */
  async startTlsClient(options: ConnectionOptions, handshakeTimeoutMs: number): Promise<void> {
    this.#assertNothingQueued();
    const raw = this.#socket;
    this.#detach(raw);
    raw.on("error", () => {});
    const secure = tlsConnect({ ...options, socket: raw });
    this.#socket = secure;
    this.#attach(secure);
    await this.#handshake(secure, "secureConnect", handshakeTimeoutMs);
  }

  /** Output queued in clear (`#queue`) would go out encrypted after the upgrade: never expected, refused. */
  #assertNothingQueued(): void {
    if (this.#queue.length > 0 || this.#piece !== null)
      throw new Error("output is still queued: the connection cannot be upgraded to TLS now");
  }

  #handshake(socket: TLSSocket, event: "secure" | "secureConnect", timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => fail(new Error("TLS handshake timed out")), timeoutMs);
      const cleanup = (): void => {
        clearTimeout(timer);
        socket.off(event, ok);
        socket.off("error", fail);
        socket.off("close", closed);
      };
      const ok = (): void => {
        cleanup();
        this.secure = true;
        resolve();
      };
      const fail = (error: Error): void => {
        cleanup();
        this.#error ??= error;
        socket.destroy();
        reject(error);
      };
      const closed = (): void => fail(this.#error ?? new Error("connection closed during the TLS handshake"));
      socket.once(event, ok);
      socket.once("error", fail);
      socket.once("close", closed);
    });
  }

  /**
   * Flushes what was written, then closes; destroys the connection if it is still open `graceMs` later. Reading
   * resumes (and what arrives is dropped), so the peer's FIN is seen even when reading was paused.
   */
  end(graceMs = END_GRACE_MS): void {
    if (this.#closed || this.#endTimer !== null) return;
    this.#onData = null;
    this.resume();
    // What is queued goes first; the grace covers it too.
    if (this.#queue.length > 0 || this.#piece !== null) this.#endQueued = true;
    else this.#socket.end();
    this.#endTimer = setTimeout(() => {
      this.#endTimer = null;
      this.#socket.destroy();
    }, graceMs);
  }

  /** True once `end()` was called (the connection may still be flushing). */
  get ending(): boolean {
    return this.#endTimer !== null || this.#closed;
  }

  /** Closes at once, dropping unwritten data. */
  destroy(): void {
    this.#socket.destroy();
  }
}

/** `::ffff:127.0.0.1` → `127.0.0.1`, so IPv4 clients are named the same way whatever the listening socket. */
export function normalizeAddress(address: string): string {
  return address.startsWith("::ffff:") && address.includes(".") ? address.slice(7) : address;
}
