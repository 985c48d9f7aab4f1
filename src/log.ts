/**
 * Human-readable logs through consola, or one JSON object per line with
 * `--log-format json` (for log shippers). Never pass secrets or message
 * bodies to the logger.
 */

import { type ConsolaInstance, createConsola, type LogObject } from "consola";

export type LogFormat = "pretty" | "json";

function jsonReporter(): { log: (obj: LogObject) => void } {
  return {
    log(obj) {
      const [msg, ...rest] = obj.args;
      const line: Record<string, unknown> = { time: obj.date.toISOString(), level: obj.type, msg: String(msg) };
      if (obj.tag) line["module"] = obj.tag;
      const extra = rest.find((a) => a && typeof a === "object" && !(a instanceof Error));
      if (extra) Object.assign(line, extra);
      const err = rest.find((a) => a instanceof Error);
      if (err) line["error"] = String(err);
      process.stderr.write(`${JSON.stringify(line)}\n`);
    },
  };
}

/** The process-wide logger; `configureLogger` switches its format and level. */
export let logger: ConsolaInstance = createConsola({ level: 3, stdout: process.stderr, stderr: process.stderr });

export function configureLogger(format: LogFormat, level = 3): ConsolaInstance {
  logger =
    format === "json"
      ? createConsola({ level, reporters: [jsonReporter()] })
      : createConsola({ level, stdout: process.stderr, stderr: process.stderr });
  return logger;
}

/** A logger for one module: its tag prefixes every line. */
export function moduleLogger(tag: string): ConsolaInstance {
  return logger.withTag(tag);
}
