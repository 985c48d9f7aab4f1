/**
 * Argument parsing shared by the subcommands: node:util's parseArgs in strict
 * mode, with its errors turned into UsageError (exit code 2).
 */

import { type ParseArgsConfig, parseArgs } from "node:util";
import { type ConfigLocation, findConfig } from "../config/find.ts";

/** Wrong arguments: printed with the command's usage, exit code 2. */
export class UsageError extends Error {
  override name = "UsageError";
  constructor(
    message: string,
    readonly usage?: string,
  ) {
    super(message);
  }
}

/** Exit codes: 0 ok, 1 runtime failure, 2 usage or config error. */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

export interface CommandContext {
  readonly argv: readonly string[];
  readonly out: (text: string) => void;
  /**
   * Where a note beside machine-readable output goes (`audit --json`'s "N more rows not shown"): standard error
   * when not given; the admin MCP server collects it with the result instead of writing it to its own log.
   */
  readonly err?: (text: string) => void;
  readonly env: Readonly<Record<string, string | undefined>>;
  /**
   * The config file to read, as its caller found it, instead of -c or the search path: the admin MCP server runs
   * commands in-process on the file it serves, with the owner check a search-path file needs on each read
   * (`ConfigLocation.ownedOnly`, docs/config.md "Where the config is read from").
   */
  readonly config?: ConfigLocation;
}

/** The config file a command reads: its caller's (`ctx.config`), else -c, MAILGATOR_CONFIG or the search path. */
export function configOf(ctx: CommandContext, given: string | undefined): ConfigLocation {
  return ctx.config ?? findConfig(given, ctx.env);
}

type Options = NonNullable<ParseArgsConfig["options"]>;

/**
 * Parses `argv` strictly: an unknown option, a missing value, or an option given twice that takes one value (the
 * second `-c` would otherwise silently replace the first, and a command would act on another file than the one
 * read first on the line) is a UsageError.
 */
export function parse<T extends Options>(argv: readonly string[], options: T, usage: string, allowPositionals = false) {
  const all = { help: { type: "boolean", short: "h" } as const, ...options };
  let parsed: ReturnType<
    typeof parseArgs<{ options: typeof all; strict: true; allowPositionals: boolean; tokens: true }>
  >;
  try {
    parsed = parseArgs({
      args: [...argv],
      options: all,
      strict: true,
      allowPositionals,
      allowNegative: true,
      tokens: true,
    }) as typeof parsed;
  } catch (e) {
    throw new UsageError((e as Error).message.split("\n")[0]!, usage);
  }
  const seen = new Set<string>();
  for (const t of parsed.tokens) {
    if (t.kind !== "option" || all[t.name]?.multiple === true) continue;
    if (seen.has(t.name)) throw new UsageError(`--${t.name} is given more than once`, usage);
    seen.add(t.name);
  }
  return { values: parsed.values, positionals: parsed.positionals };
}

/** The value of a required string option, or a UsageError naming it. */
export function required(
  value: string | boolean | (string | boolean)[] | undefined,
  flag: string,
  usage: string,
): string {
  if (typeof value !== "string" || value === "") throw new UsageError(`${flag} is required`, usage);
  return value;
}

export function strings(value: string | boolean | (string | boolean)[] | undefined): string[] | undefined {
  if (value === undefined) return undefined;
  return (Array.isArray(value) ? value : [value]).filter((v): v is string => typeof v === "string");
}
