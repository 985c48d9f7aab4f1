/** Converting between AuditEvent and the stored columns (schema.ts COLUMNS order). */
import type { AuditDetail, AuditEvent, AuditProtocol, AuditRow, Decision } from "./event.ts";

/** Text fields longer than this are cut and end with "…": a row describes a decision, it does not carry data. */
export const MAX_TEXT_CHARS = 1024;
/** The JSON of `detail` is cut to this; a cut detail is stored as {"truncated": "<start of the JSON>"}. */
export const MAX_DETAIL_CHARS = 2048;

/**
 * A login name as a row's `target` (a failed or refused login, IMAP and SMTP): its first 200 characters
 * (docs/config.md "Who connects"). An address is at most 64 + 1 + 255 octets (RFC 5321 §4.5.3.1.1–2); a longer name is
 * not one a server takes, and the row needs only enough of it to tell attempts apart.
 */
export const MAX_ROW_LOGIN_NAME = 200;

/**
 * A Message-ID as an SMTP row's `target`: its first 256 characters. RFC 5322 §3.6.4 sets no length; ids that mail
 * programs make are under 100.
 */
export const MAX_ROW_MESSAGE_ID = 256;

/**
 * The longest reason a row is given when it quotes text from elsewhere (an upstream's or a provider's reply, an error
 * message, refused recipients and their replies): the quote is cut to fit. SMTP's DATA row after refused RCPTs names
 * as many as fit and counts the rest, so that the count is never cut (docs/smtp.md "All or nothing").
 */
export const MAX_ROW_REASON = 300;

/**
 * The first `max` UTF-16 units of `value` (all of it when shorter), one fewer where the cut would split a surrogate
 * pair: a lone half is not text SQLite can store as written.
 */
export function cutText(value: string, max: number): string {
  if (value.length <= max) return value;
  const last = value.charCodeAt(max - 1);
  return value.slice(0, last >= 0xd800 && last <= 0xdbff ? max - 1 : max);
}

/**
 * `value` cut to `max` characters as `cutText` cuts it, followed by how many were left out (`cutMark`): what the log
 * and `check --connect` show of a text someone else chose the length of.
 */
export function cutCounted(value: string, max: number, verb: string): string {
  if (value.length <= max) return value;
  const kept = cutText(value, max);
  return `${kept}${cutMark(value.length - kept.length, verb)}`;
}

/** What follows a cut text: `… (N more characters not VERB)`. */
export function cutMark(left: number, verb: string): string {
  return `… (${left} more character${left === 1 ? "" : "s"} not ${verb})`;
}

export type StoredRow = (string | number | null)[];

/** `value` in at most `max` characters, a cut one ending in `…`; never half of a surrogate pair (`cutText`). */
function cut(value: string, max: number): string {
  return value.length > max ? `${cutText(value, max - 1)}…` : value;
}

function text(value: string): string {
  return value.length > MAX_TEXT_CHARS ? cut(value, MAX_TEXT_CHARS) : value;
}

/** `value` with `suffix` after it, the whole within MAX_TEXT_CHARS: `value` is cut to make room, never `suffix`. */
export function textWithSuffix(value: string, suffix: string): string {
  return `${cut(value, MAX_TEXT_CHARS - suffix.length)}${suffix}`;
}

function optionalText(value: string | null | undefined): string | null {
  return value === null || value === undefined ? null : text(value);
}

function detailJson(detail: AuditDetail | null | undefined): string | null {
  if (detail === null || detail === undefined) return null;
  const json = JSON.stringify(detail);
  return json.length > MAX_DETAIL_CHARS ? JSON.stringify({ truncated: cut(json, MAX_DETAIL_CHARS) }) : json;
}

export function toColumns(ev: AuditEvent): StoredRow {
  return [
    ev.time ?? Date.now(),
    text(ev.session),
    optionalText(ev.agent),
    optionalText(ev.clientAddr),
    ev.protocol,
    text(ev.command),
    optionalText(ev.operation),
    optionalText(ev.folder),
    optionalText(ev.target),
    ev.decision,
    optionalText(ev.rule),
    ev.ruleIndex ?? null,
    text(ev.reason),
    text(ev.configRevision),
    ev.count ?? null,
    ev.hiddenCount ?? null,
    detailJson(ev.detail),
  ];
}

type Columns = Record<string, string | number | null>;

const str = (v: string | number | null | undefined): string => (v === null || v === undefined ? "" : String(v));
const optStr = (v: string | number | null | undefined): string | null =>
  v === null || v === undefined ? null : String(v);
const optNum = (v: string | number | null | undefined): number | null =>
  v === null || v === undefined ? null : Number(v);

export function fromColumns(c: Columns): AuditRow {
  const detail = optStr(c["detail"]);
  return {
    id: Number(c["id"]),
    time: Number(c["time"]),
    session: str(c["session"]),
    agent: optStr(c["agent"]),
    clientAddr: optStr(c["client_addr"]),
    protocol: str(c["protocol"]) as AuditProtocol,
    command: str(c["command"]),
    operation: optStr(c["operation"]),
    folder: optStr(c["folder"]),
    target: optStr(c["target"]),
    decision: str(c["decision"]) as Decision,
    rule: optStr(c["rule"]),
    ruleIndex: optNum(c["rule_index"]),
    reason: str(c["reason"]),
    configRevision: str(c["config_revision"]),
    count: optNum(c["count"]),
    hiddenCount: optNum(c["hidden_count"]),
    detail: detail === null ? null : storedDetail(detail),
  };
}

/**
 * A row's `detail` as stored: JSON this build wrote. Text that does not parse (a file another program wrote) is read
 * as `{"unreadable": TEXT}`, so that one such row does not make every query of the log fail (docs/audit.md "What a
 * row may hold").
 */
function storedDetail(text: string): AuditDetail {
  try {
    return JSON.parse(text) as AuditDetail;
  } catch {
    return { unreadable: text };
  }
}
