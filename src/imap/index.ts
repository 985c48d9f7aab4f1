/**
 * The IMAP proxy (docs/imap.md, docs/protocol.md): a strict IMAP server to agents and a careful client to the
 * upstream server, with folder and operation rules enforced. `startImapProxy` is what the CLI's `serve` calls.
 */

import { AccountCredentials } from "../accounts/index.ts";
import { AccountRefusals } from "../accounts/refusals.ts";
import { keptUpstreamSessions, responseMemoryReserved, responseMemoryWaiting } from "../admin/metrics.ts";
import type { AuditLog } from "../audit/index.ts";
import { assertRules } from "../config/rules.ts";
import type { Config, ImapLimits } from "../config/types.ts";
import { moduleLogger, SHUTTING_DOWN } from "../log.ts";
import {
  FailureThrottle,
  LoginLockout,
  readCaFile,
  SessionCounter,
  SHUTDOWN_GRACE_MS,
  type UpstreamTarget,
} from "../net/index.ts";
import { FILTERED_OPERATIONS, MESSAGE_FIELDS, type Policy } from "../policy/index.ts";
import { openQuotas, type Quotas } from "../quotas/index.ts";
import { listenForAgents } from "../runtime/agent-listener.ts";
import { commitListener, LiveConfig, listenerReload, type PreparedReload, tlsIdentityFor } from "../runtime/reload.ts";
import { openStateDatabase } from "../state/database.ts";
import { ClassificationCache, cachePathBeside } from "./cache.ts";
import type { SessionContext } from "./commands/context.ts";
import {
  CACHE_PRUNE_INTERVAL_MS,
  COMMAND_MEMORY_BUDGET,
  COMMAND_MEMORY_FREE,
  DEFAULT_TIMEOUTS,
  LOGIN_THROTTLE,
  RESPONSE_MEMORY_BUDGET,
} from "./limits.ts";
import { ResponseMemory } from "./memory.ts";
import { ImapSession } from "./session.ts";
import type { UpstreamTimeouts } from "./upstream.ts";
import { UpstreamPool } from "./upstream-pool.ts";

export interface ImapProxy {
  readonly address: { readonly host: string; readonly port: number };
  close(): Promise<void>;
  /** Checks a new config for this proxy (TLS files readable, listener unchanged); see `PreparedReload`. */
  prepareReload(next: Config): PreparedReload;
  /** What the sessions' upstream responses hold of RESPONSE_MEMORY_BUDGET now (src/imap/memory.ts). */
  readonly responseMemory: { readonly budget: number; readonly used: number; readonly waiting: number };
  /** What the agents' command literals hold of COMMAND_MEMORY_BUDGET now (docs/reliability.md "Command memory"). */
  readonly commandMemory: { readonly budget: number; readonly used: number; readonly waiting: number };
  /** Upstream sessions kept now for the next login of their account (src/imap/upstream-pool.ts). */
  readonly keptUpstreamSessions: number;
  /** Logins upstream is checking now after their agents left (MAX_ABANDONED_LOGIN_CHECKS at most). */
  readonly abandonedLogins: number;
}

/** Upstream connect, TLS handshake and per-command deadlines (src/imap/limits.ts). */
export { DEFAULT_TIMEOUTS };

/** Whether any rule tests message fields for reading: then filtered folders need the classification cache. */
function filtersMessages(config: Config): boolean {
  return config.rules.some(
    (rule) =>
      MESSAGE_FIELDS.some((f) => rule[f] !== undefined) &&
      (rule.operations ?? []).some((op) => FILTERED_OPERATIONS.has(op)),
  );
}

export async function startImapProxy(deps: {
  config: Config;
  policy: Policy;
  audit: AuditLog;
  /** The accounts' upstream credentials; without it, password accounts only (an OAuth2 account is refused). */
  credentials?: AccountCredentials;
  /** Where sessions read the config and policy at each command; without it they stay as given. */
  live?: LiveConfig;
  /** `[[quotas]]` (docs/quotas.md); without it the proxy opens the state database itself when quotas are set. */
  quotas?: Quotas;
  /** Tests only: shorter timeouts and login delays, a smaller RESPONSE_MEMORY_BUDGET and RESPONSE_MEMORY_FREE. */
  timeouts?: Partial<UpstreamTimeouts>;
  responseMemoryBudget?: number;
  responseMemoryFree?: number;
  /** Tests only: a smaller COMMAND_MEMORY_BUDGET and COMMAND_MEMORY_FREE. */
  commandMemoryBudget?: number;
  commandMemoryFree?: number;
  loginThrottle?: Partial<typeof LOGIN_THROTTLE>;
  /** Failed logins counted across connections; `serve` gives both listeners one. Default: LOGIN_LOCKOUT's own. */
  lockout?: LoginLockout;
  /** Tests only: a shorter ACCOUNT_REFUSAL_HOLD_MS. */
  accountRefusalHoldMs?: number;
}): Promise<ImapProxy> {
  const { config, policy, audit } = deps;
  const log = moduleLogger("imap");
  const imap = config.imap;
  if (imap === null) throw new Error("imap: the config has no [imap] section");
  assertRules(config); // loadConfig has refused such a config already (src/config/rules.ts)
  const timeouts: UpstreamTimeouts = { ...DEFAULT_TIMEOUTS, ...deps.timeouts };
  const live = deps.live ?? new LiveConfig(config, policy);
  /** What a reload replaces besides the config and policy. */
  const build = (next: Config) => {
    const section = next.imap!;
    const upstreamTarget: UpstreamTarget = {
      host: section.upstreamAddr.host,
      port: section.upstreamAddr.port,
      tls: section.upstreamTls,
      skipVerify: section.upstreamTlsSkipVerify,
      extraCa: readCaFile(section.upstreamCaFile),
      connectTimeoutMs: timeouts.connectMs,
    };
    return { identity: tlsIdentityFor(section), upstream: upstreamTarget, limits: next.limits.imap };
  };
  let current = build(config);
  const upstream = current.upstream;
  const limits: ImapLimits = current.limits;
  if (upstream.skipVerify)
    log.warn("upstream_tls_skip_verify is on: the upstream IMAP server's certificate is NOT checked");
  const responseMemory = new ResponseMemory(
    deps.responseMemoryBudget ?? RESPONSE_MEMORY_BUDGET,
    (used, waiting) => {
      responseMemoryReserved.set({}, used);
      responseMemoryWaiting.set({}, waiting);
    },
    deps.responseMemoryFree,
  );
  const commandMemory = new ResponseMemory(
    deps.commandMemoryBudget ?? COMMAND_MEMORY_BUDGET,
    () => {},
    deps.commandMemoryFree ?? COMMAND_MEMORY_FREE,
  );
  const ownQuotas = deps.quotas === undefined ? openQuotas(config, null, openStateDatabase) : null;
  const ctx: SessionContext = {
    get config() {
      return live.config;
    },
    get policy() {
      return live.policy;
    },
    get generation() {
      return live.generation;
    },
    audit,
    credentials: deps.credentials ?? new AccountCredentials({ config, store: null }),
    get upstream() {
      return current.upstream;
    },
    quotas: deps.quotas ?? ownQuotas!.quotas,
    listenTls: imap.listenTls,
    get identity() {
      return current.identity;
    },
    throttle: new FailureThrottle({ ...LOGIN_THROTTLE, ...deps.loginThrottle }),
    lockout: deps.lockout ?? new LoginLockout(),
    timeouts,
    get limits() {
      return current.limits;
    },
    perAgent: new SessionCounter(limits.maxSessionsPerAgent),
    sessions: new Set(),
    responseMemory,
    commandMemory,
    upstreamPool: new UpstreamPool({}, (size) => keptUpstreamSessions.set({}, size)),
    accountRefusals: new AccountRefusals(deps.accountRefusalHoldMs),
    abandonedLogins: new Set(),
    cache: filtersMessages(config)
      ? ClassificationCache.open(cachePathBeside(config.audit.path), (m) => log.warn(m))
      : null,
  };
  const listener = await listenForAgents({
    protocol: "imap",
    section: imap,
    identity: current.identity,
    maxConnections: () => current.limits.maxConnections,
    maxConnectionsPerIp: limits.maxConnectionsPerIp,
    audit,
    revision: () => live.config.revision,
    upstream,
    start: (conn) => new ImapSession(ctx, conn).start(),
    // The greeting is replaced by BYE (RFC 3501 §7.1.5): the server will not accept this connection.
    refusal: (text) => `* BYE [LIMIT] ${text}\r\n`,
  });
  // Rows of the classification cache no session used for CACHE_ROW_IDLE_MS go, daily as at the start (cache.ts).
  const cache = ctx.cache;
  const pruning = cache === null ? null : setInterval(() => cache.prune(), CACHE_PRUNE_INTERVAL_MS);
  pruning?.unref();
  return {
    address: listener.address,
    responseMemory,
    commandMemory,
    get keptUpstreamSessions() {
      return ctx.upstreamPool.size;
    },
    get abandonedLogins() {
      return ctx.abandonedLogins.size;
    },
    async close() {
      // Kept upstream sessions are logged out, and none is kept from now on.
      const cleared = ctx.upstreamPool.clear(true);
      const closed = listener.close(SHUTDOWN_GRACE_MS);
      for (const session of ctx.sessions) session.stop();
      await closed;
      // Logins upstream was still checking after their agent left: cut, their rows written (an `error` row each,
      // the verdict not known) before the caller closes the audit log.
      const abandoned = [...ctx.abandonedLogins];
      for (const login of abandoned) login.cut(SHUTTING_DOWN);
      await Promise.all(abandoned.map((login) => login.written));
      await cleared;
      if (pruning !== null) clearInterval(pruning);
      ctx.cache?.close();
      ownQuotas?.close();
    },
    prepareReload(next) {
      return listenerReload("imap", live.config, next, () => {
        const built = build(next);
        return () => {
          current = built;
          // Kept upstream sessions were logged in under the config this replaces (its accounts, server, limits).
          void ctx.upstreamPool.clear();
          return commitListener(listener, built.identity, ctx.sessions);
        };
      });
    },
  };
}
