/**
 * Every size, count and time the SMTP proxy enforces, with the reason next to it.
 * Tests pin each value and exercise it at the limit and one past it (tests/smtp/limits.test.ts).
 * Connection counts and session times are `[limits]` in the config; their defaults are in src/config/limits.ts.
 */

import {
  LOGIN_TIMEOUT_MS,
  MAX_SESSIONS_PER_AGENT,
  SMTP_IDLE_TIMEOUT_MS,
  SMTP_MAX_CONNECTIONS,
  SMTP_MAX_CONNECTIONS_PER_IP,
} from "../config/limits.ts";

/**
 * Longest command line, CRLF excluded. RFC 5321 §4.5.3.1.4 sets 512 octets for commands, but RFC 4954 §4 lets
 * an AUTH command with an initial response reach 12288 octets; a longer line gets `500 5.5.2` and is dropped.
 */
export const MAX_COMMAND_LINE = 12288;

/**
 * Recipients per message. RFC 5321 §4.5.3.1.8: a server must accept at least 100; the 101st gets
 * `452 4.5.3 Too many recipients` (§4.5.3.1.10). That would tell a client to send DATA for the first 100 and the
 * rest in another message; Mailgator refuses that DATA instead (docs/smtp.md "All or nothing").
 */
export const MAX_RECIPIENTS = 100;

/**
 * Largest message (octets of content after dot-unstuffing, CRLF line ends), advertised as `SIZE` (RFC 1870).
 * 50 MiB: common submission servers take 25–35 MB, i.e. 25 MB of attachments after base64's 4/3 growth.
 * A larger message is read to its end (to stay in step with the client), never spooled, and refused with
 * `552 5.3.4`.
 */
export const MAX_MESSAGE_BYTES = 50 * 1024 * 1024;

/**
 * The header section is parsed in memory (for To, Cc, Subject, Message-ID, Content-Type); beyond this the
 * message is refused with `552 5.3.4`. 1 MiB is far above what any mail client writes (Postfix's
 * header_size_limit is 100 KiB).
 */
export const MAX_HEADER_BYTES = 1024 * 1024;

/**
 * MIME parts inspected for `has_attachment`, and their nesting depth. A message beyond either leaves
 * has_attachment unknown, which the policy resolves to deny for rules that test it. 1000 and 20 are Postfix's
 * and common scanners' orders of magnitude (Postfix's mime_nesting_limit is 100).
 */
export const MAX_MIME_PARTS = 1000;
export const MAX_MIME_DEPTH = 20;

/**
 * Messages of one agent (one login in pass-through mode) held for approval or being sent at once; one more that
 * an ask rule would hold gets `452 4.3.1` and nothing is sent. Each is up to MAX_MESSAGE_BYTES in the state
 * database until decided or expired (docs/approvals.md "Limits").
 */
export const MAX_HELD_PER_AGENT = 20;

/**
 * Octets of one header field of a message (its lines as written, folds and line ends included) past which the
 * message is refused with `552 5.3.4`: an address field (To, Cc, Bcc, From and the other fields the rules read
 * addresses from; src/mail/fields.ts ADDRESS_FIELD_NAMES) at MAX_ADDRESS_FIELD_OCTETS, any other at
 * MAX_HEADER_FIELD_OCTETS. The upstream server must see each field whole, as the rules did: Postfix cuts a field
 * longer than its header_size_limit (102,400 octets by default) and an address field of more than its
 * header_address_token_limit (10,240 tokens; a token is at least one octet), so an address past the cut would reach
 * its recipient without being in the field the rules read it from (docs/smtp.md "What the message says").
 */
export const MAX_ADDRESS_FIELD_OCTETS = 8 * 1024;
export const MAX_HEADER_FIELD_OCTETS = 64 * 1024;

/**
 * Octets of one header line, its CRLF excluded: RFC 5322 §2.1.1 (a line MUST be at most 998 characters) and RFC 5321
 * §4.5.3.1.6 (a text line is at most 1000 octets with its CRLF). A server may cut a longer line, and Postfix's SMTP
 * and LMTP clients (`smtp_line_length_limit`, 998) do, with CRLF and a space: inside an address of To that the rules
 * classed as `to`, its recipient then gets a copy whose To names no such address, a blind copy no `bcc` rule saw;
 * a server that breaks with a bare CRLF would turn the rest of the line into a field of its own (docs/smtp.md "What
 * the message says"). A longer line of the message's header refuses it with `554 5.6.0`; of a MIME part's header, it
 * leaves has_attachment unknown. Body lines are not limited.
 */
export const MAX_HEADER_LINE_OCTETS = 998;

/** Header octets of one MIME part held for inspection; a larger part header leaves has_attachment unknown. */
export const MAX_PART_HEADER_BYTES = 64 * 1024;

/**
 * Commands in one session. Bounds a session that never ends (a loop of NOOP or RSET); 10,000 is room for 2,000
 * messages of five commands each. The next command gets `421 4.7.0` and the connection is closed.
 */
export const MAX_COMMANDS_PER_SESSION = 10_000;

/**
 * Commands refused before a successful AUTH (each with its `deny` row: unrecognized, not offered, out of turn, MAIL or
 * RCPT before AUTH, AUTH before STARTTLS) after which the connection is closed with `421 4.7.0`. Nothing else paces
 * them (a failed AUTH has its delay and lock-out, and does not count here): one connection that never logged in
 * wrote MAX_COMMANDS_PER_SESSION rows, and 88 such connections 880,000 rows in 5 s. A client that logs in sends a
 * handful of commands first. 20: IMAP's MAX_BAD_COMMANDS, and Postfix's smtpd_hard_error_limit.
 */
export const MAX_REFUSED_BEFORE_LOGIN = 20;

/**
 * Octets of agent input held while the session waits inside a command (for the upstream, a login, the audit log's
 * backlog): what the agent sends meanwhile is queued, and past this much reading from its connection is paused, so
 * TCP pushes back on the agent; reading resumes once the session has worked through half of it. A client that sends
 * on while a command waits costs one session this much of the proxy's memory at most, with the one read that passed
 * it. 1 MiB is far more than a pipelined group of commands needs (RFC 2920 §3.1; some 85 lines of MAX_COMMAND_LINE).
 */
export const MAX_QUEUED_INPUT = 1024 * 1024;

/**
 * Octets of a refused command's argument kept as its audit row's `target` (a MAIL FROM or RCPT TO that could not be
 * read or is refused for its syntax, parameters or limits), and of a refused RCPT's argument named in DATA's reply
 * (docs/smtp.md "All or nothing"): the rest is cut. A path is at most 256 octets (RFC 5321 §4.5.3.1.3), so
 * any address is kept whole; a longer argument is the agent's own text, which need not fill the audit log.
 */
export const MAX_REFUSED_TARGET = 256;

/**
 * Idle time before the proxy closes the connection with `421 4.4.2`: RFC 5321 §4.5.3.2.7 asks a server to
 * wait at least 5 minutes for the next command. Default of `[limits] idle_timeout`.
 */
export const IDLE_TIMEOUT_MS = SMTP_IDLE_TIMEOUT_MS;

/** Agent connections open at once; one more gets `421 4.7.0` and is closed. Default of `[limits] max_connections`. */
export const MAX_CONNECTIONS = SMTP_MAX_CONNECTIONS;

/**
 * Pass-through AUTHs checked on upstream after their agents hung up (docs/smtp.md "AUTH"): the agents hold no
 * connection, so `max_connections` does not bound these upstream connections. One more is cut at once, its verdict
 * not known, a refusal counted toward the lock-out.
 */
export const MAX_ABANDONED_LOGIN_CHECKS = 32;

/** AUTH attempts in one session; after the last failure the connection is closed with `421 4.7.0`. */
export const MAX_AUTH_FAILURES_PER_SESSION = 3;

/**
 * Failed logins from one client address: each failure in the window delays its reply by one more step, up to
 * the maximum (Dovecot's auth_failure_delay is 2 s). Tracked addresses are capped to bound memory.
 */
export const AUTH_FAILURE_STEP_MS = 1000;
export const AUTH_FAILURE_MAX_DELAY_MS = 10_000;
export const AUTH_FAILURE_WINDOW_MS = 15 * 60 * 1000;
export const AUTH_FAILURE_TRACKED_ADDRESSES = 10_000;

/** Connecting to the upstream server, including implicit TLS. */
export const UPSTREAM_CONNECT_TIMEOUT_MS = 15_000;

/** The longest reason an audit row is given when it quotes outside text (src/audit/row.ts, docs/audit.md). */
export { MAX_ROW_REASON } from "../audit/row.ts";

/**
 * Characters of outside text (an upstream's reply, an address, a client's words) put into one of our reply lines,
 * after each octet outside printable ASCII became `?` (src/smtp/reply.ts `clean`). RFC 5321 §4.5.3.1.5 caps a reply
 * line at 512 octets with its code and CRLF; 400 leaves room for the code, status and our own words around it.
 */
export const MAX_REPLY_TEXT = 400;

/**
 * Characters of the client's EHLO name echoed in our greeting line (`250-host greets NAME`, RFC 5321 §4.1.1.1). A
 * domain is at most 255 octets (RFC 5321 §4.5.3.1.2); the echo is a courtesy, so its first 100 are enough.
 */
export const MAX_EHLO_ECHO = 100;

/** Waiting for one upstream reply. RFC 5321 §4.5.3.2.6 asks clients to wait 10 minutes after the final dot. */
export const UPSTREAM_REPLY_TIMEOUT_MS = 10 * 60 * 1000;

/**
 * How long the session's upstream connection, while it is still being opened (a vault password account opens it while
 * the message comes in), is waited for where nothing needs it open:
 * - At the end of DATA of a message holding 8-bit octets, to read in its EHLO whether the upstream offers 8BITMIME
 *   (RFC 6152 §3). Past it the upstream's extensions are not known, and the message goes on as when that connection
 *   could not be opened: an allowed one to the replay, which sends on that same connection, waiting for it within
 *   UPSTREAM_CONNECT_TIMEOUT_MS, TLS_HANDSHAKE_TIMEOUT_MS and UPSTREAM_REPLY_TIMEOUT_MS, and checks there; a held one
 *   is held, and its approval checks on its own connection (docs/smtp.md "Replay", docs/approvals.md "Holding").
 *   Holding needs no upstream: unbounded, an upstream that accepts the connection and then says nothing would delay
 *   the answer to a held message by those timeouts, over ten minutes.
 * - Once the session has ended: the connection gets this long to finish opening, so that it is quit (RFC 5321
 *   §4.1.1.10) rather than cut in the middle of its login, which a server logs as a lost connection; past it, it is
 *   dropped, not kept open for those timeouts after the session that wanted it is gone (docs/smtp.md "Connections").
 * 10 s is far more than a healthy server takes to greet, do STARTTLS and accept a login, even one that delays its
 * greeting for a reverse DNS lookup (a resolver's default timeout is 5 s) or for Postfix postscreen's greeting wait
 * (6 s), and short beside the 10 minutes an agent waits for the answer to its final dot (RFC 5321 §4.5.3.2.6).
 */
export const UPSTREAM_OPENING_WAIT_MS = 10_000;

/**
 * Waiting for the upstream server to take one block of a replayed message (RFC 5321 §4.5.3.2.5: 3 minutes for each
 * TCP SEND of a data block). A server that stops reading would otherwise hold the session, and its place under
 * `max_sessions_per_agent`, for as long as the kernel keeps the connection; past it the connection is dropped
 * before its end of data, so nothing is delivered, and the agent gets `451`.
 */
export const UPSTREAM_DATA_BLOCK_TIMEOUT_MS = 3 * 60 * 1000;

/**
 * At shutdown, past SHUTDOWN_GRACE_MS: how long the commands still under way get, once their upstream connections
 * are dropped, to record how they ended before the audit log closes (docs/reliability.md "Shutdown").
 */
export const COMMAND_WIND_UP_MS = 2000;

/** Longest upstream reply line and number of lines in one reply: more is a protocol error (4xx to the agent). */
export const MAX_UPSTREAM_REPLY_LINE = 4096;
export const MAX_UPSTREAM_REPLY_LINES = 100;

/**
 * A send's audit rows must be on disk before its end of data goes upstream. They are committed when the upstream
 * has accepted DATA (the body and the final dot then go out together), or at the latest this long after they were
 * queued: meanwhile other sessions' rows join the same commit, one fsync for several messages (docs/smtp.md).
 */
export const SEND_COMMIT_WAIT_MS = 20;

/** A TLS handshake (agent STARTTLS or upstream STARTTLS) must finish within this. */
export const TLS_HANDSHAKE_TIMEOUT_MS = 30_000;

/** What a session may override (tests shorten times); everything else is fixed. */
export interface SessionLimits {
  readonly maxCommandLine: number;
  readonly maxRecipients: number;
  readonly maxMessageBytes: number;
  readonly maxCommandsPerSession: number;
  readonly idleTimeoutMs: number;
  readonly maxConnections: number;
  readonly maxConnectionsPerIp: number;
  readonly maxSessionsPerAgent: number;
  /** From connecting to a successful AUTH; `421 4.4.2` past it. */
  readonly loginTimeoutMs: number;
  readonly authFailureStepMs: number;
  readonly sendCommitWaitMs: number;
  /** UPSTREAM_DATA_BLOCK_TIMEOUT_MS. */
  readonly upstreamBlockTimeoutMs: number;
  /** UPSTREAM_OPENING_WAIT_MS. */
  readonly upstreamOpeningWaitMs: number;
}

export const DEFAULT_LIMITS: SessionLimits = Object.freeze({
  maxCommandLine: MAX_COMMAND_LINE,
  maxRecipients: MAX_RECIPIENTS,
  maxMessageBytes: MAX_MESSAGE_BYTES,
  maxCommandsPerSession: MAX_COMMANDS_PER_SESSION,
  idleTimeoutMs: IDLE_TIMEOUT_MS,
  maxConnections: MAX_CONNECTIONS,
  maxConnectionsPerIp: SMTP_MAX_CONNECTIONS_PER_IP,
  maxSessionsPerAgent: MAX_SESSIONS_PER_AGENT,
  loginTimeoutMs: LOGIN_TIMEOUT_MS,
  authFailureStepMs: AUTH_FAILURE_STEP_MS,
  sendCommitWaitMs: SEND_COMMIT_WAIT_MS,
  upstreamBlockTimeoutMs: UPSTREAM_DATA_BLOCK_TIMEOUT_MS,
  upstreamOpeningWaitMs: UPSTREAM_OPENING_WAIT_MS,
});
