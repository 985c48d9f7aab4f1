#!/usr/bin/env bun
/**
 * The mailgator command line. Exit codes: 0 ok, 1 runtime failure, 2 usage
 * or config error. Protocol logic lives elsewhere; this only dispatches.
 */

import pkg from "../../package.json" with { type: "json" };
import { ConfigError, formatProblem } from "../config/index.ts";
import { configureLogger, logFormat, logger } from "../log.ts";
import { escapedLines } from "../mail/index.ts";
import { tuneAllocator } from "./allocator.ts";
import { type CommandContext, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, parse, UsageError } from "./args.ts";
import { account, usage as accountUsage } from "./commands/account.ts";
import { approvals, usage as approvalsUsage } from "./commands/approvals.ts";
import { audit, usage as auditUsage } from "./commands/audit.ts";
import { check, usage as checkUsage } from "./commands/check.ts";
import { explain, usage as explainUsage } from "./commands/explain.ts";
import { init, usage as initUsage } from "./commands/init.ts";
import { mcp, usage as mcpUsage } from "./commands/mcp.ts";
import { reload, usage as reloadUsage } from "./commands/reload.ts";
import { serve, usage as serveUsage } from "./commands/serve.ts";
import { token, usage as tokenUsage } from "./commands/token.ts";

const HELP = `mailgator ${pkg.version}: an IMAP + SMTP proxy that lets AI agents touch a real
mailbox only as far as your rules allow, and audits every decision.

Usage:
  mailgator --config FILE            run the proxies (same as serve)
  mailgator serve [-c FILE]          run the proxies
  mailgator reload [-c FILE]         make the running proxies reload the config
  mailgator check [-c FILE]          validate a config and list its rules
                                     (--connect: also try each upstream)
  mailgator explain [-c FILE] --op OP
                                     which rule decides a request, and why
  mailgator audit [-c FILE]          read the audit log
  mailgator token new NAME           a new agent token (vault mode)
  mailgator account login NAME [-c FILE]
                                     first OAuth2 login of an account
  mailgator account status [-c FILE] each account's login state
  mailgator approvals list [-c FILE] messages held for approval (also show,
                                     approve, deny ID)
  mailgator mcp --agent NAME [-c FILE]
                                     an MCP server on stdio: mail tools for one
                                     agent, through the proxies (--admin: the
                                     owner's config tools)
  mailgator config init              a commented starter config
  mailgator version                  print the version

Without -c: $MAILGATOR_CONFIG, else ./mailgator.toml, else /etc/mailgator/mailgator.toml.

Global options:
  --log-format pretty|json           log format (stderr); default pretty
  -h, --help                         help (also after each command, or
                                     mailgator help COMMAND)

Exit codes: 0 ok, 1 runtime failure, 2 usage or config error.`;

type Command = (ctx: CommandContext) => number | Promise<number>;
const VERSION_USAGE = "Usage: mailgator version";
const COMMANDS: Readonly<Record<string, [Command, string]>> = {
  serve: [serve, serveUsage],
  reload: [reload, reloadUsage],
  check: [check, checkUsage],
  explain: [explain, explainUsage],
  audit: [audit, auditUsage],
  token: [token, tokenUsage],
  account: [account, accountUsage],
  approvals: [approvals, approvalsUsage],
  mcp: [mcp, mcpUsage],
  config: [init, initUsage],
  version: [version, VERSION_USAGE],
};

/** `mailgator version`: takes no arguments (anything after it is a usage error, not ignored). */
function version(ctx: CommandContext): number {
  const { values } = parse(ctx.argv, {}, VERSION_USAGE);
  ctx.out(values.help ? VERSION_USAGE : `mailgator ${pkg.version}`);
  return EXIT_OK;
}

/** Takes `--log-format X` / `--log-format=X` out of argv, wherever it stands. */
function takeLogFormat(argv: string[]): "pretty" | "json" {
  let format: string | null = null;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--log-format" || a.startsWith("--log-format=")) {
      if (format !== null) throw new UsageError("--log-format is given more than once");
      const value = a.includes("=") ? a.slice(a.indexOf("=") + 1) : argv[i + 1];
      argv.splice(i, a.includes("=") ? 1 : 2);
      if (value !== "pretty" && value !== "json")
        throw new UsageError(`--log-format: expected pretty or json, got ${JSON.stringify(value ?? "")}`);
      format = value;
      i--;
    }
  }
  return (format ?? "pretty") as "pretty" | "json";
}

export async function main(argv: string[], env = process.env, out = (t: string) => console.log(t)): Promise<number> {
  const args = [...argv];
  let usage = HELP;
  try {
    configureLogger(takeLogFormat(args));
    const first = args[0];
    if (first === undefined) {
      process.stderr.write(`${HELP}\n`);
      return EXIT_USAGE;
    }
    if (first === "--help" || first === "-h") return (out(HELP), EXIT_OK);
    if (first === "help") {
      // `help COMMAND` is `COMMAND --help`; `help` alone the general help.
      const [name, ...extra] = args.slice(1);
      if (name === undefined) return (out(HELP), EXIT_OK);
      const command = COMMANDS[name];
      if (command === undefined) throw new UsageError(`help: unknown command ${JSON.stringify(name)}`);
      if (extra.length > 0) throw new UsageError(`help takes one command, not ${JSON.stringify(extra[0])}`);
      return await command[0]({ argv: ["--help"], out, env });
    }
    if (first === "--version" || first === "-V") return (out(`mailgator ${pkg.version}`), EXIT_OK);
    const entry = first.startsWith("-") ? COMMANDS["serve"]! : COMMANDS[first];
    if (!entry) throw new UsageError(`unknown command ${JSON.stringify(first)}`);
    usage = entry[1];
    const rest = first.startsWith("-") ? args : args.slice(1);
    return await entry[0]({ argv: rest, out, env });
  } catch (e) {
    // Escaped line by line: a usage error quotes the arguments given, a config error the config.
    if (e instanceof UsageError) {
      process.stderr.write(`mailgator: ${escapedLines(e.message)}\n\n${e.usage ?? usage}\n`);
      return EXIT_USAGE;
    }
    if (e instanceof ConfigError) {
      if (logFormat() === "json") {
        // One JSON line per problem, with its position as fields (docs/operations.md "Logs").
        for (const p of e.problems)
          logger.error(`config error: ${formatProblem(e.file, p)}`, {
            event: "config_error",
            file: e.file,
            line: p.line ?? null,
            column: p.column ?? null,
            path: p.path ?? null,
          });
      } else process.stderr.write(`mailgator: ${escapedLines(e.message)}\n`);
      return EXIT_USAGE;
    }
    logger.error(`mailgator: ${(e as Error).message}`);
    return EXIT_FAILURE;
  }
}

/** True when argv asks for the long-running proxies (`serve`, or options only), which get a tuned allocator. */
export function runsProxies(argv: readonly string[]): boolean {
  const first = argv.find((a, i) => !a.startsWith("--log-format") && argv[i - 1] !== "--log-format");
  if (first === undefined) return false;
  if (first !== "serve" && !first.startsWith("-")) return false;
  return !argv.some((a) => a === "-h" || a === "--help" || a === "-V" || a === "--version");
}

if (import.meta.main) {
  const argv = process.argv.slice(2);
  if (runsProxies(argv)) tuneAllocator(); // may re-execute this process (src/cli/allocator.ts)
  process.exitCode = await main(argv);
}
