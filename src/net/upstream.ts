/**
 * Connections to the upstream server: implicit TLS, plain for STARTTLS (the protocol negotiates, then calls
 * `Connection.startTlsClient(tlsOptions(target))`), or plain only when the config says `none`.
 *
 * Certificates are always verified unless `upstream_tls_skip_verify` is set: against the system CAs plus
 * `upstream_ca_file`, and against the host name (or IP address) of `upstream_addr`.
 */

import { isIP, type Socket, connect as tcpConnect } from "node:net";
import { type ConnectionOptions, rootCertificates, connect as tlsConnect } from "node:tls";
import { upstreamConnectSeconds, upstreamErrors } from "../admin/metrics.ts";
import { Connection } from "./connection.ts";
import { readTlsFile, TlsFileError } from "./tls-file.ts";

export type UpstreamTls = "tls" | "starttls" | "none";

export interface UpstreamTarget {
  readonly host: string;
  readonly port: number;
  readonly tls: UpstreamTls;
  readonly skipVerify: boolean;
  /** PEM text of extra trusted CAs (from upstream_ca_file), or null. */
  readonly extraCa: string | null;
  readonly connectTimeoutMs: number;
}

/**
 * Whether two targets are the same server reached the same way: address, TLS mode, certificate checking and the
 * extra CAs. A reload that changes any of them ends the sessions connected under the old ones (docs/operations.md
 * "Reload"): their connection was set up, and its certificate checked or not, as the operator no longer wants.
 */
export function sameUpstream(a: UpstreamTarget, b: UpstreamTarget): boolean {
  return (
    a.host === b.host &&
    a.port === b.port &&
    a.tls === b.tls &&
    a.skipVerify === b.skipVerify &&
    a.extraCa === b.extraCa
  );
}

/**
 * Reads upstream_ca_file (at start and at each reload) as src/net/tls-file.ts reads a TLS file; throws with the file
 * name when it cannot be read.
 */
export function readCaFile(file: string | null): string | null {
  if (file === null) return null;
  try {
    return readTlsFile(file).toString("utf8");
  } catch (e) {
    if (e instanceof TlsFileError) throw new TlsFileError(`net: upstream_ca_file ${file} ${e.message}`);
    throw e;
  }
}

/** TLS client options for a target: verification on, system CAs plus the extra CA, host name checked. */
export function tlsOptions(target: UpstreamTarget): ConnectionOptions {
  const options: ConnectionOptions = {
    host: target.host,
    rejectUnauthorized: !target.skipVerify,
    ca: target.extraCa === null ? [...rootCertificates] : [...rootCertificates, target.extraCa],
  };
  // SNI must not carry an IP address (RFC 6066 §3); the identity check still uses `host`.
  if (isIP(target.host) === 0) options.servername = target.host;
  return options;
}

/** OpenSSL's codes for a certificate that could not be verified (and Node's for a name mismatch). */
const UNVERIFIED_CERT_CODES = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "CERT_UNTRUSTED",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);

/** The suffixes `upstreamHint` gives, each beginning "; check ": `mailgator check --connect` takes them off. */
export const UPSTREAM_HINTS = {
  certificate:
    "; check upstream_ca_file (the CA that signed the upstream certificate) and that upstream_addr is a name the " +
    "certificate holds",
  refused: "; check upstream_addr and that the upstream server is running and listening there",
  name: "; check the host name in upstream_addr",
  unreachable: "; check upstream_addr and the network (firewall, routing) between the proxy and the upstream server",
} as const;

/**
 * What to check after an upstream connection failed, as a suffix for the log line (docs/operations.md "Logs"):
 * an unverifiable certificate points at `upstream_ca_file`, a refused or unreachable address at `upstream_addr`.
 */
export function upstreamHint(error: Error): string {
  const code = (error as NodeJS.ErrnoException).code ?? "";
  const text = `${code} ${error.message}`;
  if (UNVERIFIED_CERT_CODES.has(code) || /certificate|self[- ]signed|issuer/i.test(text))
    return UPSTREAM_HINTS.certificate;
  if (code === "ECONNREFUSED" || /refused/i.test(text)) return UPSTREAM_HINTS.refused;
  if (code === "ENOTFOUND" || code === "EAI_AGAIN") return UPSTREAM_HINTS.name;
  if (/timed out|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH/i.test(text)) return UPSTREAM_HINTS.unreachable;
  return "";
}

/**
 * The client side of STARTTLS on an upstream connection (`Connection.startTlsClient` with `tlsOptions(target)`): a
 * handshake that fails (a certificate that cannot be verified, a timeout) is an upstream connection attempt that
 * failed, counted in `mailgator_upstream_errors_total` as one with implicit TLS is (docs/operations.md "Health and
 * metrics"), and rethrown for the protocol to word.
 */
export async function startUpstreamTls(conn: Connection, target: UpstreamTarget, handshakeMs: number): Promise<void> {
  try {
    await conn.startTlsClient(tlsOptions(target), handshakeMs);
  } catch (error) {
    upstreamErrors.inc({ upstream: `${target.host}:${target.port}` });
    throw error;
  }
}

/** Why an upstream connection failed, in words fit for a reply to the agent. */
export class UpstreamError extends Error {
  override name = "UpstreamError";
}

/**
 * Connects (and for `tls`, completes a verified handshake) or rejects with UpstreamError; `signal` gives up at once
 * (the session that asked is gone).
 */
export function connectUpstream(target: UpstreamTarget, signal: AbortSignal | null = null): Promise<Connection> {
  return new Promise((resolve, reject) => {
    let socket: Socket;
    let settled = false;
    const began = performance.now();
    const upstream = `${target.host}:${target.port}`;
    const cancelled = (): void => fail(new Error("cancelled"));
    const fail = (error: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener("abort", cancelled);
      socket.destroy();
      if (error.message !== "cancelled") upstreamErrors.inc({ upstream });
      const what = target.tls === "tls" ? "TLS connection" : "connection";
      reject(
        new UpstreamError(`${what} to ${target.host}:${target.port} failed: ${error.message}${upstreamHint(error)}`),
      );
    };
    const ready = (): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener("abort", cancelled);
      socket.off("error", fail);
      upstreamConnectSeconds.observe({ upstream }, (performance.now() - began) / 1000);
      resolve(new Connection(socket, target.tls === "tls"));
    };
    const timer = setTimeout(() => fail(new Error("timed out")), target.connectTimeoutMs);
    if (target.tls === "tls") {
      socket = tlsConnect({ ...tlsOptions(target), port: target.port }, ready);
    } else {
      socket = tcpConnect({ host: target.host, port: target.port }, ready);
    }
    socket.once("error", fail);
    if (signal?.aborted) cancelled();
    else signal?.addEventListener("abort", cancelled, { once: true });
  });
}
