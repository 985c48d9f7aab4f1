/** `mailgator reload -c FILE`: tell the running `serve` to reload, wait for its outcome, print it. */

import { realpathSync } from "node:fs";
import { ConfigError, loadConfig } from "../../config/index.ts";
import { escapedLines } from "../../mail/index.ts";
import { pidFileFor, readPidFile, readStatusFile, statusFileFor } from "../../runtime/state-files.ts";
import { type CommandContext, configOf, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, parse } from "../args.ts";

export const usage = `Usage: mailgator reload [-c FILE]

Checks the config, sends SIGHUP to the mailgator serving it (its pid is in
mailgator.pid beside the audit database; a process that runs another config
file is not signalled), waits for the outcome and prints it: "reloaded" with
the new config revision, or the errors (the running config then stays in
force). Exit 0 reloaded, 1 not reloaded (or not the revision read from
FILE), 2 the file does not load (nothing was sent).

Options:
  -c, --config FILE        the config file (default: $MAILGATOR_CONFIG, else
                           ./mailgator.toml, else /etc/mailgator/mailgator.toml)
  -h, --help               this help`;

/** How long to wait for serve to write the outcome of the reload. */
export const RELOAD_WAIT_MS = 10_000;
const POLL_MS = 50;

/** `a` and `b` name one file: the same absolute path, or the same file once symbolic links are followed. */
function sameFile(a: string, b: string): boolean {
  if (a === b) return true;
  try {
    return realpathSync(a) === realpathSync(b);
  } catch {
    return false;
  }
}

export async function reload(ctx: CommandContext): Promise<number> {
  const { values } = parse(ctx.argv, { config: { type: "string", short: "c" } }, usage);
  if (values.help) return (ctx.out(usage), EXIT_OK);
  // What serve reports quotes the config (a rule's name, which an `mcp --admin` edit can write, docs/mcp.md) and
  // errors from elsewhere: each line is shown with its controls and format characters escaped, as `mailgator check`
  // shows the same warnings, so that none reaches the terminal as it is (docs/operations.md "Reload").
  const out = (text: string) => ctx.out(escapedLines(text));
  const file = configOf(ctx, values.config);
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig(file, { env: ctx.env });
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    out("not reloaded: the config does not load, so no signal was sent; the running config stays in force");
    out(e.message);
    return EXIT_USAGE;
  }
  const pidFile = pidFileFor(config);
  const statusFile = statusFileFor(config);
  const entry = readPidFile(pidFile);
  if (entry.state === "none") {
    // The pid file lives beside the audit database: a serve of this file that started with another [audit] path
    // keeps its own there, and cannot take the new path without a restart anyway (docs/operations.md "Reload").
    out(
      `not reloaded: no running mailgator for this config (no pid in ${pidFile}). If a serve of this file ` +
        "started with another [audit] path, its pid file is in that path's folder: a changed [audit] path needs " +
        "a restart, or send that process SIGHUP (kill -HUP PID) to apply the rest of the file without it",
    );
    return EXIT_FAILURE;
  }
  if (entry.state === "stale") {
    out(
      `not reloaded: no running mailgator for this config (${pidFile} names process ${entry.pid}, which is not ` +
        "the mailgator that wrote it: that one has exited; no signal was sent)",
    );
    return EXIT_FAILURE;
  }
  const pid = entry.pid;
  // The serve holding the pid file must be the one running this file: two configs whose audit databases are in one
  // folder would share it (docs/operations.md "Reload"), and signalling the other one reloads its own file.
  if (entry.config === null) {
    out(
      `not reloaded: ${pidFile} (process ${pid}) does not say which config file that process runs (a mailgator ` +
        "from before it did); no signal was sent: restart it",
    );
    return EXIT_FAILURE;
  }
  if (!sameFile(entry.config, config.file)) {
    out(
      `not reloaded: the mailgator in ${pidFile} (process ${pid}) runs ${entry.config}, not ${config.file}; no ` +
        "signal was sent. Two configs cannot share the folder of their audit databases: give each its own",
    );
    return EXIT_FAILURE;
  }
  const before = readStatusFile(statusFile);
  const lastSeq = before?.pid === pid ? before.seq : 0;
  try {
    process.kill(pid, "SIGHUP");
  } catch (e) {
    out(`not reloaded: cannot signal process ${pid} from ${pidFile}: ${(e as Error).message}`);
    return EXIT_FAILURE;
  }
  for (let waited = 0; waited < RELOAD_WAIT_MS; waited += POLL_MS) {
    await Bun.sleep(POLL_MS);
    const status = readStatusFile(statusFile);
    if (status === null || status.pid !== pid || status.seq <= lastSeq) {
      // No outcome yet: gone for good when its pid file no longer names it (removed at exit, or its start time
      // gone with the process), as readPidFile judges a stale file.
      const now = readPidFile(pidFile);
      if (now.state !== "running" || now.pid !== pid) {
        out(`not reloaded: process ${pid} exited before it reported an outcome`);
        return EXIT_FAILURE;
      }
      continue;
    }
    if (status.config === undefined || !sameFile(status.config, config.file)) {
      out(
        `not reloaded: process ${pid} reported the outcome for ${status.config ?? "a config file it does not name"}, ` +
          `not ${config.file}; see its log`,
      );
      return EXIT_FAILURE;
    }
    if (status.ok && status.revision !== config.revision) {
      out(
        `not reloaded as read: process ${pid} now runs config revision ${status.revision}, but ${config.file} was ` +
          `revision ${config.revision} when this command read it (the file changed in between); run it again`,
      );
      return EXIT_FAILURE;
    }
    if (status.ok && status.errors.length > 0) {
      out(
        `reloaded in part: config revision ${status.previousRevision} -> ${status.revision} is in force (process ` +
          `${pid}), but a step failed; restart it to be sure:`,
      );
      for (const e of status.errors) out(`  ${e}`);
      return EXIT_FAILURE;
    }
    if (status.ok) {
      out(`reloaded: config revision ${status.previousRevision} -> ${status.revision} (process ${pid})`);
      for (const w of status.warnings) out(`warning: ${w}`);
      if (status.sessionsEnded > 0)
        out(
          `${status.sessionsEnded} session(s) ended (their agent or account changed, or the rules changed what ` +
            "their selected folder shows)",
        );
      return EXIT_OK;
    }
    out(`not reloaded: the running config (revision ${status.revision}) stays in force (process ${pid}):`);
    for (const e of status.errors) out(`  ${e.replaceAll("\n", "\n  ")}`);
    return EXIT_FAILURE;
  }
  out(`sent SIGHUP to process ${pid}, but it reported no outcome within ${RELOAD_WAIT_MS / 1000} s; see its log`);
  return EXIT_FAILURE;
}
