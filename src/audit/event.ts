/**
 * What one audit row says: a single policy decision, as docs/audit.md "What a row records" lists it.
 * Never message bodies, credentials or tokens; `detail` is for small scalars such as a size or an upstream reply code.
 */

export type Decision = "allow" | "deny" | "ask" | "error";
/**
 * "oauth2": the proxy's own token requests for an account (docs/accounts.md "When an account needs
 * re-authorization").
 */
export type AuditProtocol = "imap" | "smtp" | "cli" | "oauth2";

export const DECISIONS: readonly Decision[] = ["allow", "deny", "ask", "error"];
export const PROTOCOLS: readonly AuditProtocol[] = ["imap", "smtp", "cli", "oauth2"];

export type AuditDetail = Record<string, string | number | boolean | null>;

export interface AuditEvent {
  /** ms since epoch; default Date.now() when recorded */
  time?: number;
  session: string;
  /** agent name (vault mode) or upstream username (pass-through) */
  agent: string | null;
  clientAddr: string | null;
  protocol: AuditProtocol;
  /** e.g. "UID FETCH", "RCPT TO", "LOGIN" */
  command: string;
  /** e.g. "mail:read", "mail:send", "folder:read" */
  operation: string | null;
  folder: string | null;
  /** recipient, sender, message-id or "n messages" */
  target: string | null;
  decision: Decision;
  /** name of the matched rule */
  rule: string | null;
  /** 0-based index of the matched rule */
  ruleIndex: number | null;
  reason: string;
  /** hash of the config that made the decision */
  configRevision: string;
  /** messages affected, or the visible count */
  count?: number | null;
  hiddenCount?: number | null;
  /** small extras, stored as JSON; the caller keeps bodies and secrets out */
  detail?: AuditDetail | null;
}

/** A row read back: every field present, `id` increasing in commit order and never reused. */
export interface AuditRow extends AuditEvent {
  id: number;
  time: number;
  count: number | null;
  hiddenCount: number | null;
  detail: AuditDetail | null;
}

export interface AuditFilter {
  /** rows with time >= sinceMs */
  sinceMs?: number;
  /** rows with time < untilMs */
  untilMs?: number;
  decision?: Decision;
  agent?: string;
  rule?: string;
  session?: string;
  protocol?: AuditProtocol;
  /** the protocol command (`FETCH`, `UID FETCH`, `RCPT TO`), compared without regard to case */
  command?: string;
  /** rows with id > afterId (for `audit --follow`) */
  afterId?: number;
  /** rows with id < beforeId (for paging back) */
  beforeId?: number;
  limit?: number;
  /** by id; default "desc" (newest first) */
  order?: "asc" | "desc";
}

/** Why the log cannot be used; a proxy that gets this refuses the operation it was about to audit. */
export class AuditUnavailableError extends Error {
  override name = "AuditUnavailableError";
}
