/**
 * The SMTP proxy (docs/smtp.md, docs/protocol.md §6): store and forward with sender, recipient and content rules.
 * `startSmtpProxy` is what the CLI calls; it listens on `[smtp] listen_addr` until `close()`.
 */

import { hostname } from "node:os";
import { dirname, join } from "node:path";
import { AccountCredentials } from "../accounts/index.ts";
import { AccountRefusals } from "../accounts/refusals.ts";
import type { ApprovalRow, ApprovalStore } from "../approvals/store.ts";
import type { AuditLog } from "../audit/index.ts";
import { assertRules } from "../config/rules.ts";
import type { Config } from "../config/types.ts";
import { moduleLogger } from "../log.ts";
import {
  FailureThrottle,
  LoginLockout,
  readCaFile,
  SessionCounter,
  SHUTDOWN_GRACE_MS,
  type UpstreamTarget,
} from "../net/index.ts";
import type { Policy } from "../policy/index.ts";
import { openQuotas, type Quotas } from "../quotas/index.ts";
import { listenForAgents } from "../runtime/agent-listener.ts";
import { commitListener, LiveConfig, listenerReload, type PreparedReload, tlsIdentityFor } from "../runtime/reload.ts";
import { settledWithin } from "../runtime/settle.ts";
import { openStateDatabase } from "../state/database.ts";
import {
  AUTH_FAILURE_MAX_DELAY_MS,
  AUTH_FAILURE_TRACKED_ADDRESSES,
  AUTH_FAILURE_WINDOW_MS,
  COMMAND_WIND_UP_MS,
  DEFAULT_LIMITS,
  type SessionLimits,
  UPSTREAM_CONNECT_TIMEOUT_MS,
} from "./limits.ts";
import { reply } from "./reply.ts";
import { type SessionContext, SmtpSession } from "./session.ts";
import { prepareSpoolDir } from "./spool.ts";

export interface SmtpProxy {
  readonly address: { readonly host: string; readonly port: number };
  close(): Promise<void>;
  /** AUTHs upstream is checking now after their agents left (MAX_ABANDONED_LOGIN_CHECKS at most). */
  readonly abandonedLogins: number;
  /** Checks a new config for this proxy (TLS files readable, listener unchanged); see `PreparedReload`. */
  prepareReload(next: Config): PreparedReload;
}

export interface SmtpProxyOptions {
  readonly config: Config;
  readonly policy: Policy;
  readonly audit: AuditLog;
  /** The accounts' upstream credentials; without it, password accounts only (an OAuth2 account is refused). */
  readonly credentials?: AccountCredentials;
  /** Where sessions read the config and policy at each command; without it they stay as given. */
  readonly live?: LiveConfig;
  /** Where `ask` rules hold messages (docs/approvals.md); needed when a rule asks. */
  readonly approvals?: ApprovalStore | null;
  readonly onHeld?: (row: ApprovalRow) => void;
  /** `[[quotas]]` (docs/quotas.md); without it the proxy opens the state database itself when quotas are set. */
  readonly quotas?: Quotas;
  /** Tests only: shorter times (idle, login delay); connection limits and session times come from `[limits]`. */
  readonly limits?: Partial<SessionLimits>;
  /** Failed logins counted across connections; `serve` gives both listeners one. Default: LOGIN_LOCKOUT's own. */
  readonly lockout?: LoginLockout;
  /** Tests only: a shorter ACCOUNT_REFUSAL_HOLD_MS. */
  readonly accountRefusalHoldMs?: number;
}

/** The spool directory: `mailgator-spool/` beside the audit database (docs/smtp.md). */
export function spoolDirFor(config: Config): string {
  return join(dirname(config.audit.path), "mailgator-spool");
}

/** The upstream SMTP server of `[smtp]`, as the proxy and the approvals' replay connect to it. */
export function smtpUpstreamTarget(smtp: NonNullable<Config["smtp"]>): UpstreamTarget {
  return {
    host: smtp.upstreamAddr.host,
    port: smtp.upstreamAddr.port,
    tls: smtp.upstreamTls,
    skipVerify: smtp.upstreamTlsSkipVerify,
    extraCa: readCaFile(smtp.upstreamCaFile),
    connectTimeoutMs: UPSTREAM_CONNECT_TIMEOUT_MS,
  };
}

export async function startSmtpProxy(opts: SmtpProxyOptions): Promise<SmtpProxy> {
  const { config, policy, audit } = opts;
  const log = moduleLogger("smtp");
  const smtp = config.smtp;
  if (smtp === null) throw new Error("smtp: the config has no [smtp] section");
  assertRules(config); // loadConfig has refused such a config already (src/config/rules.ts)
  if (config.rules.some((r) => r.action === "ask") && !opts.approvals)
    throw new Error("smtp: a rule asks, but no state database was opened to hold messages in");
  const live = opts.live ?? new LiveConfig(config, policy);
  /** What a reload replaces besides the config and policy. */
  const build = (next: Config) => {
    const section = next.smtp!;
    const upstreamTarget = smtpUpstreamTarget(section);
    const configured = next.limits.smtp;
    const sessionLimits: SessionLimits = {
      ...DEFAULT_LIMITS,
      maxConnections: configured.maxConnections,
      maxConnectionsPerIp: configured.maxConnectionsPerIp,
      maxSessionsPerAgent: configured.maxSessionsPerAgent,
      loginTimeoutMs: configured.loginTimeoutMs,
      idleTimeoutMs: configured.idleTimeoutMs,
      ...opts.limits,
    };
    return { identity: tlsIdentityFor(section), upstream: upstreamTarget, limits: sessionLimits };
  };
  let current = build(config);
  const { upstream, limits } = current;
  if (upstream.skipVerify) log.warn("upstream_tls_skip_verify is on: the upstream server's certificate is NOT checked");
  const spoolDir = spoolDirFor(config);
  prepareSpoolDir(spoolDir);
  const ownQuotas = opts.quotas === undefined ? openQuotas(config, null, openStateDatabase) : null;
  const ctx: SessionContext = {
    get config() {
      return live.config;
    },
    get policy() {
      return live.policy;
    },
    audit,
    credentials: opts.credentials ?? new AccountCredentials({ config, store: null }),
    get upstream() {
      return current.upstream;
    },
    get identity() {
      return current.identity;
    },
    quotas: opts.quotas ?? ownQuotas!.quotas,
    spoolDir,
    get limits() {
      return current.limits;
    },
    throttle: new FailureThrottle({
      stepMs: limits.authFailureStepMs,
      maxMs: AUTH_FAILURE_MAX_DELAY_MS,
      windowMs: AUTH_FAILURE_WINDOW_MS,
      maxTracked: AUTH_FAILURE_TRACKED_ADDRESSES,
    }),
    lockout: opts.lockout ?? new LoginLockout(),
    accountRefusals: new AccountRefusals(opts.accountRefusalHoldMs),
    hostname: validHostname(),
    sessions: new Set(),
    abandonedLogins: new Set(),
    holds: new Set(),
    perAgent: new SessionCounter(limits.maxSessionsPerAgent),
    approvals: opts.approvals ?? null,
    onHeld: opts.onHeld,
  };
  const listener = await listenForAgents({
    protocol: "smtp",
    section: smtp,
    identity: current.identity,
    maxConnections: () => current.limits.maxConnections,
    maxConnectionsPerIp: limits.maxConnectionsPerIp,
    audit,
    revision: () => live.config.revision,
    upstream,
    start: (conn) => new SmtpSession(ctx, conn).start(),
    refusal: (text) => reply(421, "4.7.0", text),
  });
  return {
    address: listener.address,
    get abandonedLogins() {
      return ctx.abandonedLogins.size;
    },
    async close() {
      const closed = listener.close(SHUTDOWN_GRACE_MS);
      for (const session of ctx.sessions) session.shutdown();
      await closed;
      // A command still under way after the grace (a send the upstream has not answered) is cut, and its rows are
      // queued before the caller closes the audit log (docs/reliability.md "Shutdown").
      await settledWithin(
        [...ctx.sessions].map((session) => session.stopCommand()),
        COMMAND_WIND_UP_MS,
      );
      // A message being held stops at its next part once its session has ended (ApprovalStore.hold): its last row
      // is queued before the caller closes the audit log.
      await Promise.allSettled([...ctx.holds]);
      ownQuotas?.close();
    },
    prepareReload(next) {
      return listenerReload("smtp", live.config, next, () => {
        const built = build(next);
        return () => {
          current = built;
          return commitListener(listener, built.identity, ctx.sessions);
        };
      });
    },
  };
}

function validHostname(): string {
  const name = hostname();
  return /^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,250}[A-Za-z0-9])?$/.test(name) ? name : "mailgator.localdomain";
}
