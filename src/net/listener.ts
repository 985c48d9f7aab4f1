/**
 * A listener for agents: plain TCP (default, meant for loopback), implicit TLS, or plain with the protocol
 * offering STARTTLS (then `Connection.startTlsServer` upgrades it). node:net / node:tls for all three
 * (see connection.ts for why).
 */

import type { Stats } from "node:fs";
import { type AddressInfo, createServer as createTcpServer, type Server, type Socket } from "node:net";
import { createServer as createTlsServer, type Server as TlsServer } from "node:tls";
import { Connection, normalizeAddress } from "./connection.ts";
import { addressKey } from "./ip.ts";
import { readTlsFile, TlsFileError } from "./tls-file.ts";

export type ListenTls = "tls" | "starttls" | "none";

export interface TlsIdentity {
  readonly key: Buffer;
  readonly cert: Buffer;
}

export interface ListenOptions {
  readonly host: string;
  /** 0 picks a free port. */
  readonly port: number;
  readonly tls: ListenTls;
  /** Required for "tls" and "starttls". */
  readonly identity: TlsIdentity | null;
  /** Connections open at once; one more is handed to `onOverload` instead of `onConnection`. */
  readonly maxConnections: number;
  /**
   * Connections open at once from one client address (an IPv6 client by its /64: `addressKey`); one more is
   * handed to `onOverload`. Default: `maxConnections` (no limit of its own).
   */
  readonly maxConnectionsPerIp?: number;
  readonly onConnection: (connection: Connection) => void;
  /** Say why (e.g. SMTP `421`) and close; the connection does not count against the limits. */
  readonly onOverload: (connection: Connection, overload: Overload) => void;
  /** Implicit TLS: how long a client has to complete its handshake (default TLS_HANDSHAKE_TIMEOUT_MS). */
  readonly handshakeTimeoutMs?: number;
}

/**
 * Implicit TLS: a client that connects and does not complete its handshake within this time is dropped. Node's
 * default is 120 s, long enough for idle connections to hold every place under the connection limit; a real
 * client's handshake takes milliseconds.
 */
export const TLS_HANDSHAKE_TIMEOUT_MS = 10_000;

/** Which limit a refused connection met (its name in `[limits]`) and its value. */
export interface Overload {
  readonly limit: "max_connections" | "max_connections_per_ip";
  readonly value: number;
}

interface Handshake {
  readonly raw: Socket;
  /** Arrived with a limit reached: answered by onOverload once secure. */
  readonly overload: Overload | null;
  /** Gives back the place it holds under the per-address limit. */
  readonly release: () => void;
  readonly timer: ReturnType<typeof setTimeout>;
}

export interface Listener {
  readonly address: { readonly host: string; readonly port: number };
  /** Connections open now. */
  readonly open: number;
  /**
   * Stops accepting; resolves when every open connection has closed. Callers end their sessions politely first;
   * connections still open after `graceMs` are destroyed.
   */
  close(graceMs?: number): Promise<void>;
  /** Implicit TLS: the certificate and key for new handshakes (reload, docs/operations.md "Reload"). */
  setIdentity(identity: TlsIdentity): void;
}

/**
 * How long a proxy's close() (SIGINT/SIGTERM of serve) waits for agents to hang up after their sessions were told
 * to end, before it destroys their connections. Without it one client that never closes keeps serve from exiting
 * and the audit log from closing. A send cut this way is safe: its end of data goes upstream only after its audit
 * rows are on disk, and a transaction without its end of data delivers nothing.
 */
export const SHUTDOWN_GRACE_MS = 10_000;

/**
 * Reads a PEM key and certificate pair; throws with the file name when one is unreadable, or when the key file is
 * readable by every user of the host (docs/config.md `tls_key_file`): a private key any local account can copy lets
 * it pose as the proxy to the agents. Group read is the install layout's (docs/install.md: the `mailgator` group).
 * The mode is checked on the descriptor the key is read from, so what is read is what was checked. Each file is read
 * as src/net/tls-file.ts reads it: a regular file of at most MAX_TLS_FILE_BYTES, never a FIFO or a device.
 */
export function loadIdentity(certFile: string, keyFile: string): TlsIdentity {
  const read = (file: string, what: "certificate" | "key", check?: (stat: Stats) => void): Buffer => {
    try {
      return readTlsFile(file, check);
    } catch (e) {
      if (e instanceof TlsFileError)
        throw new TlsIdentityUnreadable(`net: the TLS ${what} file ${file} ${e.message}`, what);
      throw e;
    }
  };
  const keyMode = ({ mode }: Stats): void => {
    if ((mode & 0o004) !== 0)
      throw new KeyFileReadable(
        `net: the TLS key file ${keyFile} is readable by every user (mode ${(mode & 0o777).toString(8)}): chmod o-r it`,
      );
  };
  return { cert: read(certFile, "certificate"), key: read(keyFile, "key", keyMode) };
}

/** A listener's certificate or key file that could not be read (src/net/tls-file.ts): `what` says which. */
export class TlsIdentityUnreadable extends Error {
  override name = "TlsIdentityUnreadable";
  constructor(
    message: string,
    readonly what: "certificate" | "key",
  ) {
    super(message);
  }
}

/** A TLS key file readable by every user (`loadIdentity`): refused, with its own message. */
export class KeyFileReadable extends Error {
  override name = "KeyFileReadable";
}

export async function listen(options: ListenOptions): Promise<Listener> {
  if (options.tls !== "none" && options.identity === null) {
    throw new Error(`net: listen_tls = "${options.tls}" needs tls_cert_file and tls_key_file`);
  }
  let open = 0;
  const perIpLimit = options.maxConnectionsPerIp ?? options.maxConnections;
  const sockets = new Set<Socket>();
  // TCP connections whose TLS handshake has not completed (implicit TLS). Each holds a place under the connection
  // limits until it completes or fails, and has TLS_HANDSHAKE_TIMEOUT_MS to do so. server.close() waits for them,
  // and no session exists yet to end them, so close() destroys them.
  const handshaking = new Map<string, Handshake>();
  let overloadedHandshakes = 0;
  // Places held per client address: open connections and handshakes in progress.
  const perIp = new Map<string, number>();
  const hold = (key: string): (() => void) => {
    perIp.set(key, (perIp.get(key) ?? 0) + 1);
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      const n = (perIp.get(key) ?? 1) - 1;
      if (n <= 0) perIp.delete(key);
      else perIp.set(key, n);
    };
  };
  /** The limit a new connection from `key` would pass, with `pending` places taken by handshakes. */
  const over = (key: string, pending: number): Overload | null => {
    if (open + pending >= options.maxConnections) return { limit: "max_connections", value: options.maxConnections };
    if ((perIp.get(key) ?? 0) >= perIpLimit) return { limit: "max_connections_per_ip", value: perIpLimit };
    return null;
  };
  const clientKey = (s: Socket): string => addressKey(normalizeAddress(s.remoteAddress ?? ""));
  const peer = (s: Socket): string => `${s.remoteAddress}|${s.remotePort}`;
  const accept = (socket: Socket, secure: boolean): void => {
    const key = clientKey(socket);
    let overload: Overload | null;
    if (secure) {
      const peerKey = peer(socket);
      const h = handshaking.get(peerKey);
      if (h !== undefined) finishHandshake(peerKey, h);
      // Decided when the handshake began, when it took its place.
      overload = h === undefined ? over(key, handshaking.size - overloadedHandshakes) : h.overload;
    } else {
      overload = over(key, 0);
    }
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    const connection = new Connection(socket, secure);
    if (overload !== null) {
      options.onOverload(connection, overload);
      return;
    }
    open++;
    const release = hold(key);
    connection.onClose(() => {
      open--;
      release();
    });
    options.onConnection(connection);
  };
  const finishHandshake = (key: string, h: Handshake): void => {
    clearTimeout(h.timer);
    if (handshaking.get(key) !== h) return;
    handshaking.delete(key);
    if (h.overload !== null) overloadedHandshakes--;
    h.release();
  };
  let server: Server;
  if (options.tls === "tls") {
    const { key, cert } = options.identity!;
    server = createTlsServer({ key, cert }, (socket) => accept(socket, true));
    // A failed handshake is the client's problem; it must not take the listener down.
    server.on("tlsClientError", () => {});
    const timeoutMs = options.handshakeTimeoutMs ?? TLS_HANDSHAKE_TIMEOUT_MS;
    server.on("connection", (raw: Socket) => {
      // Over the limit, the client still completes its handshake to be told why (onOverload), but only as many
      // such handshakes run at once as the limit itself; beyond that the connection is dropped unanswered.
      const overload = over(clientKey(raw), handshaking.size - overloadedHandshakes);
      if (overload !== null && overloadedHandshakes >= options.maxConnections) {
        raw.destroy();
        return;
      }
      const key = peer(raw);
      const h: Handshake = {
        raw,
        overload,
        release: overload === null ? hold(clientKey(raw)) : () => {},
        timer: setTimeout(() => raw.destroy(), timeoutMs),
      };
      if (overload !== null) overloadedHandshakes++;
      handshaking.set(key, h);
      raw.once("close", () => finishHandshake(key, h));
    });
  } else {
    server = createTcpServer((socket) => accept(socket, false));
  }
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  server.on("error", () => {});
  const bound = server.address() as AddressInfo;
  return {
    address: { host: options.host, port: bound.port },
    get open() {
      return open;
    },
    setIdentity(identity: TlsIdentity) {
      // New handshakes use the new certificate; established connections keep theirs.
      if (options.tls === "tls") (server as TlsServer).setSecureContext({ key: identity.key, cert: identity.cert });
    },
    close: (graceMs?: number) =>
      new Promise<void>((resolve) => {
        let timer: ReturnType<typeof setTimeout> | null = null;
        server.close(() => {
          if (timer !== null) clearTimeout(timer);
          resolve();
        });
        for (const [key, h] of [...handshaking]) {
          finishHandshake(key, h);
          h.raw.destroy();
        }
        if (sockets.size === 0) resolve();
        else if (graceMs !== undefined) {
          // A peer that never closes its side must not hold the shutdown forever.
          timer = setTimeout(() => {
            for (const socket of sockets) socket.destroy();
          }, graceMs);
        }
      }),
  };
}
