/** The audit log (docs/audit.md): SQLite schema, migrations, batched writer and queries. It makes no decisions. */
export {
  type AuditDetail,
  type AuditEvent,
  type AuditFilter,
  type AuditProtocol,
  type AuditRow,
  AuditUnavailableError,
  type Decision,
  PROTOCOLS,
} from "./event.ts";
export {
  AUDIT_BACKLOG_PAUSE_ROWS,
  AuditLog,
  type AuditOpenOptions,
  type DurableOptions,
  MAX_QUEUED_ROWS,
  NOT_CARRIED_OUT,
  PRUNE_CLOCK_SLACK_MS,
  waitForAuditBacklog,
} from "./log.ts";
export { MAX_DETAIL_CHARS, MAX_TEXT_CHARS } from "./row.ts";
export { SCHEMA_VERSION } from "./schema.ts";
