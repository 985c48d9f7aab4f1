/** `mailgator audit`: read the audit log, optionally following new rows while the proxy writes. */

import { existsSync, statSync } from "node:fs";
import {
  type AuditFilter,
  AuditLog,
  type AuditProtocol,
  type AuditRow,
  type Decision,
  PROTOCOLS,
} from "../../audit/index.ts";
import { loadConfig } from "../../config/index.ts";
import { escapes, terminalJson } from "../../mail/index.ts";
import { type CommandContext, configOf, EXIT_OK, parse, UsageError } from "../args.ts";

export const usage = `Usage: mailgator audit [-c FILE] [--since 1h] [--until 10m] [--decision allow|deny|ask|error]
                      [--agent X] [--rule NAME] [--protocol ${PROTOCOLS.join("|")}]
                      [--command CMD] [--limit N] [--json] [--follow]

Prints audit rows, oldest first (the newest N with --limit, default 50), and
says how many older rows --limit left out. --since and --until take a
duration ago (90s, 15m, 1h, 7d) or an ISO 8601 date (2026-12-01,
2026-12-01T10:00, UTC unless an offset is given); --until excludes that time.
--command matches the protocol command without regard to case ("UID FETCH",
"RCPT TO"). --agent matches the agent or pass-through login without regard
to case, in any letter's (élodie@x.test finds Élodie@X.test too), as quotas
count a login. --json prints one object per row, its time in ISO 8601 UTC.
--follow keeps printing new rows as they are written, until interrupted; when
the log is rotated (another file at its path), it says so and follows the new
file.

Options:
  -c, --config FILE   the config file (default: $MAILGATOR_CONFIG, else
                      ./mailgator.toml, else /etc/mailgator/mailgator.toml)
  -h, --help          this help`;

/** Rows printed per poll at most; the next poll continues after the last one printed. */
const FOLLOW_BATCH = 10_000;
const FOLLOW_INTERVAL_MS = 500;
/**
 * The largest --limit: the largest whole number a JavaScript number holds exactly. A larger one would reach SQLite as
 * a number it cannot take for LIMIT, and the command would fail as if the log could not be read.
 */
export const MAX_LIMIT = Number.MAX_SAFE_INTEGER;
const UNITS: Readonly<Record<string, number>> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * An ISO 8601 date (`2026-12-01`) or date and time (`2026-12-01T10:00`, seconds and milliseconds optional), with an
 * offset (`Z`, `+02:00`) or without one: then UTC, as the lines show times.
 */
const ISO_DATE = /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,3}))?)?(Z|[+-]\d{2}:\d{2})?)?$/;

/**
 * `--since` and `--until`: a duration ago (90s, 15m, 1h, 7d) or an ISO 8601 date (docs/audit.md "Reading the log").
 * Anything else is a usage error: Date.parse would take `Dec 5` as 2001-12-05 and `10` as 2001-10-01, and a time
 * without an offset as the machine's local time, and the command would answer for another period than asked.
 */
export function parseSince(text: string, now = Date.now(), flag = "--since"): number {
  const m = /^(\d+)([smhd])$/.exec(text);
  if (m) return now - Number(m[1]) * UNITS[m[2]!]!;
  const d = ISO_DATE.exec(text);
  const t = d === null ? Number.NaN : isoTime(d);
  if (Number.isNaN(t))
    throw new UsageError(
      `${flag}: expected a duration like 1h or an ISO 8601 date like 2026-12-01 or 2026-12-01T10:00Z, ` +
        `got ${JSON.stringify(text)}`,
      usage,
    );
  return t;
}

/** The time an ISO_DATE match names, NaN when no such day, time or offset exists (2026-02-30, 24:00, +24:00). */
function isoTime(d: RegExpExecArray): number {
  const n = (i: number) => Number(d[i] ?? "0");
  const [year, month, day, hour, minute, second] = [n(1), n(2), n(3), n(4), n(5), n(6)];
  const ms = Number((d[7] ?? "").padEnd(3, "0"));
  const utc = new Date(Date.UTC(year, month - 1, day, hour, minute, second, ms));
  const exists =
    utc.getUTCFullYear() === year &&
    utc.getUTCMonth() === month - 1 &&
    utc.getUTCDate() === day &&
    utc.getUTCHours() === hour &&
    utc.getUTCMinutes() === minute &&
    utc.getUTCSeconds() === second;
  const zone = d[8] ?? "Z";
  if (!exists) return Number.NaN;
  if (zone === "Z") return utc.getTime();
  const [zh, zm] = [Number(zone.slice(1, 3)), Number(zone.slice(4, 6))];
  if (zh > 23 || zm > 59) return Number.NaN;
  return utc.getTime() - (zone[0] === "-" ? -1 : 1) * (zh * 60 + zm) * 60_000;
}

/**
 * A row as `--json` prints it: the time in ISO 8601 UTC, like the text lines, and the characters a terminal could act
 * on written as JSON escapes, which a JSON reader decodes to the same values (docs/audit.md).
 */
export function jsonRow(row: AuditRow): string {
  return terminalJson({ ...row, time: rowTime(row.time) });
}

/**
 * A row's time in ISO 8601 UTC; null for one that is no time (not a number of milliseconds a Date holds: a row another
 * program wrote), which is shown and not fatal: toISOString would throw and end the whole listing.
 */
function rowTime(ms: number): string | null {
  const date = new Date(ms);
  return Number.isNaN(date.getTime()) ? null : date.toISOString();
}

/**
 * An agent name shown as it is on a text line, unless `escapes` would change it (the Hangul fillers U+115F, U+1160,
 * U+3164 and U+FFA0 are letters drawn as nothing); any other is quoted (`line`).
 */
const PLAIN_AGENT = /^[\p{L}\p{N}._+@-]+$/u;

/**
 * A row as one text line. Agents choose folder names, targets and commands, and reasons quote them and upstream
 * replies, so every text field is shown with its controls and format characters escaped (`escapes`): none reaches
 * the terminal as it is (docs/audit.md "Reading the log").
 */
function line(row: AuditRow): string {
  const when = rowTime(row.time) ?? "(no valid time)";
  // The agent's name is the config's, or in pass-through mode the login the upstream accepted, which some servers
  // let hold spaces or quotes: anything but letters, digits and `._+@-` is quoted, so that `bob ALLOW x` cannot pass
  // for the line's other fields.
  const plain = row.agent !== null && PLAIN_AGENT.test(row.agent) && escapes(row.agent) === row.agent;
  const who = row.agent === null ? "-" : plain ? row.agent : terminalJson(row.agent);
  const what = [
    // Checked when a row is written (PROTOCOLS), but read from a file another program may have written.
    escapes(row.protocol),
    escapes(row.command),
    escapes(row.operation ?? ""),
    row.folder ? `folder=${terminalJson(row.folder)}` : "",
    row.target ? `target=${terminalJson(row.target)}` : "",
  ]
    .filter(Boolean)
    .join(" ");
  const counts =
    row.count != null ? ` count=${row.count}${row.hiddenCount != null ? ` hidden=${row.hiddenCount}` : ""}` : "";
  const rule = row.rule ? ` rule=${terminalJson(row.rule)}` : "";
  return (
    `${when} #${row.id} ${escapes(row.decision.toUpperCase()).padEnd(5)} ${who}@${escapes(row.clientAddr ?? "-")} ` +
    `${what}${counts}${rule} — ${escapes(row.reason)}`
  );
}

export async function audit(ctx: CommandContext): Promise<number> {
  const { values } = parse(
    ctx.argv,
    {
      config: { type: "string", short: "c" },
      since: { type: "string" },
      decision: { type: "string" },
      agent: { type: "string" },
      rule: { type: "string" },
      until: { type: "string" },
      protocol: { type: "string" },
      command: { type: "string" },
      limit: { type: "string" },
      json: { type: "boolean" },
      follow: { type: "boolean", short: "f" },
    },
    usage,
  );
  if (values.help) return (ctx.out(usage), EXIT_OK);
  const config = loadConfig(configOf(ctx, values.config), { env: ctx.env });
  const filter: AuditFilter = { order: "desc", limit: 50 };
  const now = Date.now();
  if (values.since !== undefined) filter.sinceMs = parseSince(values.since, now);
  if (values.until !== undefined) filter.untilMs = parseSince(values.until, now, "--until");
  if (values.protocol !== undefined) {
    if (!(PROTOCOLS as readonly string[]).includes(values.protocol))
      throw new UsageError(
        `--protocol: expected ${PROTOCOLS.join(", ")}, got ${JSON.stringify(values.protocol)}`,
        usage,
      );
    filter.protocol = values.protocol as AuditProtocol;
  }
  if (values.command !== undefined) filter.command = values.command;
  if (values.decision !== undefined) {
    if (!["allow", "deny", "ask", "error"].includes(values.decision))
      throw new UsageError(
        `--decision: expected allow, deny, ask or error, got ${JSON.stringify(values.decision)}`,
        usage,
      );
    filter.decision = values.decision as Decision;
  }
  if (values.agent !== undefined) filter.agent = values.agent;
  if (values.rule !== undefined) filter.rule = values.rule;
  if (values.limit !== undefined) {
    if (!/^\d+$/.test(values.limit) || Number(values.limit) < 1 || Number(values.limit) > MAX_LIMIT)
      throw new UsageError(
        `--limit: expected a whole number from 1 to ${MAX_LIMIT}, got ${JSON.stringify(values.limit)}`,
        usage,
      );
    filter.limit = Number(values.limit);
  }
  // Notes go to stdout with text and to stderr with --json, so that stdout stays one JSON object per line.
  const err = ctx.err ?? ((text: string) => process.stderr.write(`${text}\n`));
  const note = (text: string) => (values.json ? err(text) : ctx.out(text));
  if (!existsSync(config.audit.path) && !values.follow) {
    note(`no audit log yet at ${escapes(config.audit.path)}`);
    return EXIT_OK;
  }
  const path = config.audit.path;
  let { log, id: opened } = await openLog(path, values.follow === true);
  const show = (rows: AuditRow[]) => {
    for (const row of rows) ctx.out(values.json ? jsonRow(row) : line(row));
  };
  try {
    // Each poll looks only at rows newer than the newest one seen, matching or not: a filter that matches rarely
    // must not rescan the log every time (the decision, agent and rule columns have no index).
    let last = log.newestId();
    const rows = log.query({ ...filter, beforeId: last + 1 }).reverse();
    show(rows);
    if (rows.length === 0) note(values.follow ? "no matching rows yet; waiting for new ones" : "no matching rows");
    else if (rows.length === filter.limit) {
      const left = log.count({ ...filter, beforeId: rows[0]!.id });
      if (left > 0) note(`${left} more row${left === 1 ? "" : "s"} not shown; raise --limit (now ${filter.limit})`);
    }
    if (!values.follow) return EXIT_OK;
    // One batch a poll; `drain`: until the newest row (before the file is left).
    const poll = (drain = false) => {
      for (;;) {
        const top = log.newestId();
        if (top <= last) return;
        const fresh = log.query({ ...filter, afterId: last, beforeId: top + 1, order: "asc", limit: FOLLOW_BATCH });
        show(fresh);
        last = fresh.length === FOLLOW_BATCH ? fresh.at(-1)!.id : top;
        if (!drain || fresh.length < FOLLOW_BATCH) return;
      }
    };
    for (;;) {
      await Bun.sleep(FOLLOW_INTERVAL_MS);
      poll();
      // The log rotated (serve stopped, the files moved, serve started again: docs/audit.md "Failure") or removed:
      // this connection still reads the file it opened, where no row is written again. What the old file holds
      // past the last poll is printed, then the file at the path is followed from its first row (its ids start
      // again).
      if (sameFile(fileAt(path), opened)) continue;
      poll(true);
      // The file left, told from any other by its device and inode and its newest row: one moved back to the path
      // (a move undone) still has both, and its ids go on, so following it from its first row would print every
      // row again. An inode freed and given to a new file does not hold that row.
      const left = { id: opened, top: last, row: rowAt(log, last) };
      await log.close();
      note(`${escapes(path)} is another file now (rotated, replaced or removed): following it from its first row`);
      ({ log, id: opened } = await openLog(path, true));
      if (sameFile(opened, left.id) && left.row !== null && left.row === rowAt(log, left.top))
        note(`${escapes(path)} is the file followed before, back: going on after row #${left.top}`);
      else last = 0;
    }
  } finally {
    await log.close();
  }
}

interface FileId {
  readonly dev: number;
  readonly ino: number;
}

function fileAt(path: string): FileId | null {
  try {
    const s = statSync(path);
    return { dev: s.dev, ino: s.ino };
  } catch {
    return null;
  }
}

/** Row `id` of the log, whatever the filter, as text to compare (null: none). */
function rowAt(log: AuditLog, id: number): string | null {
  const row = log.query({ afterId: id - 1, beforeId: id + 1, order: "asc", limit: 1 })[0];
  return row === undefined ? null : JSON.stringify(row);
}

function sameFile(a: FileId | null, b: FileId | null): boolean {
  return a !== null && b !== null && a.dev === b.dev && a.ino === b.ino;
}

/** How long `--follow` retries a log it cannot open yet: serve creates the file, then its schema. */
const FOLLOW_OPEN_RETRY_MS = 10_000;

/**
 * Opens the log read-only, and which file it opened: the file at the path before and after the open, the same one
 * (else opened again: it was replaced meanwhile). With `wait` (--follow), once a file is at the path, and a file
 * that does not open is tried again for FOLLOW_OPEN_RETRY_MS: one serve has just created has no schema yet.
 */
async function openLog(path: string, wait: boolean): Promise<{ log: AuditLog; id: FileId }> {
  let failingSince: number | null = null;
  for (;;) {
    const before = fileAt(path);
    if (before === null && wait) {
      await Bun.sleep(FOLLOW_INTERVAL_MS);
      continue;
    }
    let log: AuditLog;
    try {
      log = AuditLog.open(path, { readonly: true });
    } catch (e) {
      failingSince ??= Date.now();
      if (!wait || Date.now() - failingSince >= FOLLOW_OPEN_RETRY_MS) throw e;
      await Bun.sleep(FOLLOW_INTERVAL_MS);
      continue;
    }
    if (sameFile(fileAt(path), before)) return { log, id: before! };
    await log.close();
  }
}
