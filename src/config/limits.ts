/**
 * The defaults of `[limits]` (docs/config.md), each with its reason. Counts are per listener: the IMAP and SMTP
 * proxies count their own connections. Times are in milliseconds here and in seconds in the file.
 */

import type { ImapLimits, LimitsConfig, ProtocolLimits } from "./types.ts";

/** IMAP connections open at once (the proxy's total before `[limits]` existed). */
export const IMAP_MAX_CONNECTIONS = 256;
/** SMTP connections open at once (the proxy's total before `[limits]` existed). */
export const SMTP_MAX_CONNECTIONS = 100;

/**
 * Connections from one client address: half the total, so that one address can never hold every place; the same
 * share as Postfix's defaults (smtpd_client_connection_count_limit 50 of default_process_limit 100).
 */
export const IMAP_MAX_CONNECTIONS_PER_IP = IMAP_MAX_CONNECTIONS / 2;
export const SMTP_MAX_CONNECTIONS_PER_IP = SMTP_MAX_CONNECTIONS / 2;

/**
 * Logged-in sessions per agent (vault) or upstream login (pass-through). Dovecot's default
 * mail_max_userip_connections is 10, and every session of one account reaches the upstream from the proxy's one
 * address, so an 11th session would be refused upstream anyway (Gmail allows 15 per account).
 */
export const MAX_SESSIONS_PER_AGENT = 10;

/**
 * Time from connecting to a successful login, counted from the connection (activity does not extend it): the
 * 3 minutes Dovecot's login processes allow. A real client logs in within a second; a connection that never does
 * would otherwise hold its place until the idle timeout.
 */
export const LOGIN_TIMEOUT_MS = 180_000;

/** IMAP inactivity of a logged-in session: RFC 3501 §5.4's "at least 30 minutes". */
export const IMAP_IDLE_TIMEOUT_MS = 30 * 60_000;

/** SMTP time to wait for the next command: RFC 5321 §4.5.3.2.7 asks a server for at least 5 minutes. */
export const SMTP_IDLE_TIMEOUT_MS = 5 * 60_000;

/**
 * Longest IMAP IDLE command (RFC 2177). The inactivity timeout does not run during IDLE (an agent waiting for new
 * mail is not inactive); RFC 2177 §3 lets a server log out an idling client after its inactivity timeout and
 * asks clients to re-issue IDLE at least every 29 minutes. Twice the 30 minutes leaves room for clients that are
 * late, and still ends an IDLE whose client vanished without closing.
 */
export const IMAP_IDLE_COMMAND_TIMEOUT_MS = 2 * IMAP_IDLE_TIMEOUT_MS;

export const DEFAULT_IMAP_LIMITS: ImapLimits = Object.freeze({
  maxConnections: IMAP_MAX_CONNECTIONS,
  maxConnectionsPerIp: IMAP_MAX_CONNECTIONS_PER_IP,
  maxSessionsPerAgent: MAX_SESSIONS_PER_AGENT,
  loginTimeoutMs: LOGIN_TIMEOUT_MS,
  idleTimeoutMs: IMAP_IDLE_TIMEOUT_MS,
  idleCommandTimeoutMs: IMAP_IDLE_COMMAND_TIMEOUT_MS,
});

export const DEFAULT_SMTP_LIMITS: ProtocolLimits = Object.freeze({
  maxConnections: SMTP_MAX_CONNECTIONS,
  maxConnectionsPerIp: SMTP_MAX_CONNECTIONS_PER_IP,
  maxSessionsPerAgent: MAX_SESSIONS_PER_AGENT,
  loginTimeoutMs: LOGIN_TIMEOUT_MS,
  idleTimeoutMs: SMTP_IDLE_TIMEOUT_MS,
});

export const DEFAULT_LIMITS: LimitsConfig = Object.freeze({ imap: DEFAULT_IMAP_LIMITS, smtp: DEFAULT_SMTP_LIMITS });
