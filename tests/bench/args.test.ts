/**
 * The benchmark scripts' options (scripts/bench/args.ts): a misspelt or unknown option, a missing value, a number
 * that is not one, or a second positional argument is refused with exit 2 and the usage, before any server starts;
 * before, `imap.ts --round 5` or `imap.ts --help` ran the default nine-round benchmark as if asked for.
 */

import { expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { join } from "node:path";

const DIR = join(import.meta.dir, "../../scripts/bench");
const run = (script: string, ...args: string[]) => {
  const p = Bun.spawnSync([process.execPath, join(DIR, script), ...args], { env: { ...process.env } });
  return { code: p.exitCode, out: p.stdout.toString(), err: p.stderr.toString() };
};

test("every benchmark script answers --help with its usage and exit 0", () => {
  const scripts = readdirSync(DIR).filter((f) => f.endsWith(".ts") && !["args.ts", "proxy-child.ts"].includes(f));
  expect(scripts.length).toBeGreaterThanOrEqual(15);
  for (const script of scripts) {
    const help = run(script, "--help");
    expect({ script, code: help.code }).toEqual({ script, code: 0 });
    expect(help.out).toStartWith("usage: bun scripts/");
  }
});

test("an unknown option, a missing value, a bad number and an extra argument are refused with exit 2", () => {
  const cases: [string[], string][] = [
    [["imap.ts", "--round", "5"], "unknown option: --round"],
    [["imap.ts", "--rounds"], "--rounds needs a value"],
    [["imap.ts", "--rounds", "--latency", "3"], "--rounds needs a value"],
    [["smtp.ts", "--rounds", "five"], "--rounds must be a number >= 0, not five"],
    [["cache.ts", "--visible", "-1"], "--visible must be a number >= 0, not -1"],
    [["cache.ts", "--visible", ""], "--visible must be a number >= 0, not "],
    [["audit.ts", "10", "20"], "unexpected argument: 20"],
    [["startup.ts", "ten"], "runs must be a number >= 0, not ten"],
    [["policy.ts", "stray"], "unexpected argument: stray"],
    [["idle-sessions.ts", "--port", "1"], "--pid is required"],
  ];
  for (const [args, message] of cases) {
    const r = run(args[0]!, ...args.slice(1));
    expect({ args, code: r.code, first: r.err.split("\n")[0] }).toEqual({ args, code: 2, first: message });
    expect(r.err).toContain(`usage: bun scripts/bench/${args[0]}`);
    expect(r.out).toBe("");
  }
});
