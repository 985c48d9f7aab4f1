/**
 * Command-line options of the benchmark scripts (docs/benchmarks.md): `--name value` pairs, bare `--switch`es and
 * at most one positional number. Anything a script does not know (a misspelt `--round 5`, a value missing, a number
 * that is not a finite non-negative one) is refused with the usage and exit status 2, so that a typo never runs
 * the default benchmark under the look of the one asked for. `--help` or `-h` prints the usage and exits 0.
 */

export interface BenchOptionsSpec {
  /** Options that take a value: `--name value`. */
  values?: readonly string[];
  /** Options without a value: `--name`. */
  switches?: readonly string[];
  /** The name of the one positional argument, if the script takes one (a count, for the usage's sake). */
  positional?: string;
}

export interface BenchOptions {
  /** The value given for `--name`, else `fallback`; a missing option without a fallback is refused. */
  text(name: string, fallback?: string): string;
  /** As text(), as a finite number ≥ 0. */
  number(name: string, fallback?: number): number;
  /** Whether the switch `--name` was given. */
  has(name: string): boolean;
  /** The positional argument as a finite number ≥ 0, else `fallback`. */
  positional(fallback: number): number;
}

/** Parses `argv` (without the runtime and script paths) against `spec`; exits on `--help` and on any mistake. */
export function benchOptions(argv: readonly string[], usage: string, spec: BenchOptionsSpec): BenchOptions {
  const refuse = (why: string): never => {
    console.error(`${why}\nusage: ${usage}`);
    process.exit(2);
  };
  const values = new Map<string, string>();
  const switches = new Set<string>();
  let positional: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--help" || arg === "-h") {
      console.log(`usage: ${usage}`);
      process.exit(0);
    }
    if (!arg.startsWith("--")) {
      if (spec.positional === undefined || positional !== undefined) refuse(`unexpected argument: ${arg}`);
      positional = arg;
      continue;
    }
    const name = arg.slice(2);
    if (spec.switches?.includes(name)) {
      switches.add(name);
    } else if (spec.values?.includes(name)) {
      const value = argv[i + 1];
      if (value === undefined || value.startsWith("--")) refuse(`${arg} needs a value`);
      values.set(name, value!);
      i++;
    } else {
      refuse(`unknown option: ${arg}`);
    }
  }
  const asNumber = (what: string, text: string): number => {
    const n = Number(text);
    if (text.trim() === "" || !Number.isFinite(n) || n < 0) refuse(`${what} must be a number >= 0, not ${text}`);
    return n;
  };
  const text = (name: string, fallback?: string): string => {
    const v = values.get(name) ?? fallback;
    if (v === undefined) refuse(`--${name} is required`);
    return v!;
  };
  return {
    text,
    number: (name, fallback) => asNumber(`--${name}`, text(name, fallback === undefined ? undefined : `${fallback}`)),
    has: (name) => switches.has(name),
    positional: (fallback) => (positional === undefined ? fallback : asNumber(spec.positional ?? "", positional)),
  };
}
