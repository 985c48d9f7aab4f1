/**
 * Logs (docs/operations.md "Logs"): one line per message on stderr, each with an ISO 8601 UTC time stamp, as text
 * (`<time> <level> [<module>] <message>`) or, with `--log-format json`, one JSON object per line. Never pass
 * secrets or message bodies to the logger.
 */

import { type ConsolaInstance, createConsola, type LogObject } from "consola";
import { cutCounted, cutMark } from "./audit/row.ts";
import { escapes, terminalJson } from "./mail/display.ts";

export type LogFormat = "pretty" | "json";

let currentFormat: LogFormat = "pretty";

/** The module loggers made from the current `logger`, by tag; configureLogger empties it. */
const tagged = new Map<string, ConsolaInstance>();

/** The `module` of a JSON line from the untagged logger (the command line's own messages). */
export const UNTAGGED_MODULE = "mailgator";

/**
 * The most characters (UTF-16 units, before escaping) of a message, and of each text field of a JSON line, that are
 * logged: the rest is left out and counted (`logCutMark`). Messages quote what upstream servers and agents wrote,
 * and an upstream reply line may be megabytes long (an IMAP greeting comes in clear before STARTTLS: anyone on the
 * path can write it). Without a bound each login would write it into the log whole, and the journal, which splits a
 * longer line than it takes into records of their own, would start a record with the quoted text, where the fail2ban
 * filter anchors (docs/operations.md "Logs"). Escaped, a UTF-16 unit takes at most 6 octets (`\u001b`), so a text
 * line stays under 25,000 octets. Longer than any message of the proxy's own.
 */
export const MAX_LOG_TEXT_CHARS = 4096;

/** What follows a text cut at MAX_LOG_TEXT_CHARS: how many characters were left out. */
export function logCutMark(left: number): string {
  return cutMark(left, "logged");
}

/** `text` as logged: at most MAX_LOG_TEXT_CHARS characters of it, then logCutMark when it was longer. */
function bounded(text: string): string {
  return cutCounted(text, MAX_LOG_TEXT_CHARS, "logged");
}

function jsonReporter(): { log: (obj: LogObject) => void } {
  return {
    log(obj) {
      const [msg, ...rest] = obj.args;
      const line: Record<string, unknown> = {
        time: obj.date.toISOString(),
        level: obj.type,
        msg: bounded(String(msg)),
      };
      // Every JSON line names its module (docs/operations.md "Logs"); the command line's own lines (a config error,
      // a fatal error) come from the untagged logger.
      line["module"] = obj.tag || UNTAGGED_MODULE;
      const extra = rest.find((a) => a && typeof a === "object" && !(a instanceof Error));
      if (extra)
        for (const [key, value] of Object.entries(extra))
          line[key] = typeof value === "string" ? bounded(value) : value;
      const err = rest.find((a) => a instanceof Error);
      if (err) line["error"] = bounded(String(err));
      // Messages quote what agents and upstream servers wrote: the characters JSON.stringify leaves as they are (C1
      // controls, bidirectional overrides, line separators) are written as escapes too, the same values for a reader.
      process.stderr.write(`${terminalJson(line)}\n`);
    },
  };
}

/**
 * Text lines: time stamp, level, module, message. Messages quote what agents and upstream servers wrote (a greeting,
 * a reply, a folder name), so every line begins as the writer made it: a message's further lines (a stack trace)
 * are written with the same time stamp, level and module, then `| `, never as text of their own at a line's start,
 * where a pattern anchored there (the fail2ban filter of docs/operations.md) would take a forged line for a real
 * one; every other control and format character is written as its `\uXXXX` escape (`escapes`, as `mailgator audit`
 * shows them), so that none reaches the terminal of whoever reads the log, and a CR cannot hide the line's start.
 */
function textReporter(): { log: (obj: LogObject) => void } {
  return {
    log(obj) {
      const [msg] = obj.args;
      const tag = obj.tag ? ` [${obj.tag}]` : "";
      const head = `${obj.date.toISOString()} ${obj.type}${tag}`;
      const [first, ...more] = bounded(String(msg)).split("\n").map(escapes);
      let text = `${head} ${first}\n`;
      for (const line of more) text += `${head} | ${line}\n`;
      process.stderr.write(text);
    },
  };
}

/**
 * No throttling (`throttle: 0`): consola otherwise folds identical lines within a second into a count our reporters
 * do not print, and the audit-failure and quota lines an operator counts come from one module logger each.
 */
function create(format: LogFormat, level: number): ConsolaInstance {
  return createConsola({ level, throttle: 0, reporters: [format === "json" ? jsonReporter() : textReporter()] });
}

/** The process-wide logger; `configureLogger` switches its format and level. */
export let logger: ConsolaInstance = create("pretty", 3);

export function configureLogger(format: LogFormat, level = 3): ConsolaInstance {
  currentFormat = format;
  logger = create(format, level);
  tagged.clear();
  return logger;
}

/** The format `configureLogger` set last. */
export function logFormat(): LogFormat {
  return currentFormat;
}

/**
 * A logger for one module: its tag prefixes every line. One instance per tag until the next configureLogger, so
 * that what asks for one per connection (an IMAP or SMTP session) does not build a new logger each time.
 */
export function moduleLogger(tag: string): ConsolaInstance {
  let found = tagged.get(tag);
  if (found === undefined) {
    found = logger.withTag(tag);
    tagged.set(tag, found);
  }
  return found;
}

/**
 * A user name as it goes into a log line: printable ASCII without space, quote, backslash or `=`, at most 64
 * characters, so a client cannot forge the fields that follow it (docs/operations.md, the fail2ban filter).
 */
export function logSafeName(name: string | null): string {
  if (name === null || name === "") return "-";
  const safe = name.replace(/[^A-Za-z0-9._@+-]/g, "?");
  return safe.length > 64 ? `${safe.slice(0, 64)}...` : safe;
}

/**
 * A failed login, in the one stable format the fail2ban filter of docs/operations.md matches:
 * `login failed: client=<address> protocol=<imap|smtp> user=<name> reason="<why>"`.
 */
export function logLoginFailure(protocol: "imap" | "smtp", client: string, user: string | null, reason: string): void {
  const name = logSafeName(user);
  const why = reason.replace(/["\\\r\n]/g, "'");
  moduleLogger(protocol).warn(`login failed: client=${client} protocol=${protocol} user=${name} reason="${why}"`, {
    event: "login_failed",
    client,
    protocol,
    user: name,
    reason: why,
  });
}

/**
 * A login lock-out that starts (docs/config.md "Who connects"): `login lock-out: client=<address> protocol=<p>
 * user=<name> by=<address|name> until=<time>`. Not the `login failed:` line, so that the fail2ban filter of
 * docs/operations.md counts each failure once; nor is a login refused under the lock logged as a failure.
 */
export function logLockout(
  protocol: "imap" | "smtp",
  client: string,
  user: string | null,
  by: "address" | "name",
  until: number,
): void {
  const name = logSafeName(user);
  const at = new Date(until).toISOString();
  moduleLogger(protocol).warn(
    `login lock-out: client=${client} protocol=${protocol} user=${name} by=${by} until=${at}`,
    {
      event: "login_lockout",
      client,
      protocol,
      user: name,
      by,
      until: at,
    },
  );
}

/** The access line's `end` of a session that ended for no other reason recorded (docs/operations.md "Logs"). */
export const CLIENT_CLOSED = "client closed the connection";

/** The access line's `end` of a session ended by the proxy's shutdown, a cut after the grace included. */
export const SHUTTING_DOWN = "proxy shutting down";

/** What the access line of one session reports (docs/operations.md "Logs"). */
export interface AccessRecord {
  readonly protocol: "imap" | "smtp";
  readonly session: string;
  readonly client: string;
  readonly clientPort: number;
  /** Epoch milliseconds of the connection. */
  readonly connectedAt: number;
  /** "ok", "failed" (at least one failed attempt and no success) or "none". */
  readonly login: "ok" | "failed" | "none";
  readonly agent: string | null;
  readonly user: string | null;
  readonly commands: number;
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly end: string;
}

/** The one access line of a session, written when it ends. */
export function logAccess(r: AccessRecord): void {
  const durationMs = Math.max(0, Date.now() - r.connectedAt);
  const connected = new Date(r.connectedAt).toISOString();
  const agent = logSafeName(r.agent);
  const user = logSafeName(r.user);
  const end = r.end.replace(/["\\\r\n]/g, "'");
  moduleLogger(r.protocol).info(
    `access: session=${r.session} client=${r.client}:${r.clientPort} connected=${connected} login=${r.login} ` +
      `agent=${agent} user=${user} duration_ms=${durationMs} commands=${r.commands} bytes_in=${r.bytesIn} ` +
      `bytes_out=${r.bytesOut} end="${end}"`,
    {
      event: "access",
      session: r.session,
      protocol: r.protocol,
      client: r.client,
      clientPort: r.clientPort,
      connected,
      login: r.login,
      agent: r.agent,
      user: r.user,
      durationMs,
      commands: r.commands,
      bytesIn: r.bytesIn,
      bytesOut: r.bytesOut,
      end,
    },
  );
}

/** An error's message for a log line or an audit reason, whatever was thrown. */
export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
