/**
 * The agents' listener of either proxy (docs/config.md `[limits]`, docs/reliability.md "Connections and timeouts"):
 * each accepted connection is counted (`mailgator_sessions_open`, `mailgator_connections_total`) and handed to the
 * protocol's session; one past `max_connections` or `max_connections_per_ip` is told why in the protocol's words,
 * counted, closed, and audited with a `deny` row of its own.
 */

import { countLimitRefusal, countSession } from "../admin/metrics.ts";
import type { AuditLog } from "../audit/index.ts";
import type { ListenerConfig } from "../config/types.ts";
import { moduleLogger } from "../log.ts";
import {
  type Connection,
  type Listener,
  listen,
  overloadEvent,
  type TlsIdentity,
  type UpstreamTarget,
} from "../net/index.ts";

export interface AgentListenerOptions {
  readonly protocol: "imap" | "smtp";
  readonly section: ListenerConfig;
  readonly identity: TlsIdentity | null;
  /** Read at each connection: a reload changes it (docs/operations.md "Reload"). */
  readonly maxConnections: () => number;
  /** Fixed at start (a reload warns that it changes at the next restart). */
  readonly maxConnectionsPerIp: number;
  readonly audit: AuditLog;
  /** The config revision a refusal's row names. */
  readonly revision: () => string;
  /** For the log line that says where the listener listens and to which upstream it relays. */
  readonly upstream: UpstreamTarget;
  /** Starts the protocol's session on an accepted connection. */
  readonly start: (conn: Connection) => void;
  /** What a connection over a limit is told before it is closed (IMAP `* BYE [LIMIT]`, SMTP `421`), with CRLF. */
  readonly refusal: (text: string) => string;
}

export async function listenForAgents(o: AgentListenerOptions): Promise<Listener> {
  const log = moduleLogger(o.protocol);
  const listener = await listen({
    host: o.section.listenAddr.host,
    port: o.section.listenAddr.port,
    tls: o.section.listenTls,
    identity: o.identity,
    get maxConnections() {
      return o.maxConnections();
    },
    maxConnectionsPerIp: o.maxConnectionsPerIp,
    onConnection: (conn) => {
      conn.onClose(countSession(o.protocol));
      o.start(conn);
    },
    onOverload: (conn, over) => {
      countLimitRefusal(o.protocol, over.limit);
      const from = over.limit === "max_connections_per_ip" ? " from your address" : "";
      conn.write(o.refusal(`Too many connections${from} (limit ${over.value}); try again later`));
      conn.end();
      try {
        o.audit.record(overloadEvent(o.protocol, conn.remoteAddress, over, o.revision()));
      } catch (error) {
        log.error(`audit row lost: ${(error as Error).message}`);
      }
    },
  });
  log.info(
    `${o.protocol.toUpperCase()} proxy listening on ${listener.address.host}:${listener.address.port} ` +
      `(${o.section.listenTls}), upstream ${o.upstream.host}:${o.upstream.port} (${o.upstream.tls})`,
  );
  return listener;
}
