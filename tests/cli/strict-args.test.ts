/**
 * The command line is read strictly (src/cli/args.ts): an option that takes one value given twice, or an argument a
 * command does not take, is a usage error (exit 2), never silently resolved by taking the last one or ignoring it.
 */
import { expect, test } from "bun:test";
import { join } from "node:path";

const ROOT = join(import.meta.dir, "../..");
const MAIN = join(ROOT, "src/cli/main.ts");
const SEED = join(ROOT, "examples/seed.toml");
const MISSING = join(ROOT, "examples/no-such-config.toml");

function run(args: string[]): { code: number; stdout: string; stderr: string } {
  const p = Bun.spawnSync([process.execPath, MAIN, ...args], { cwd: ROOT, env: { PATH: process.env["PATH"] ?? "" } });
  return { code: p.exitCode ?? -1, stdout: p.stdout.toString(), stderr: p.stderr.toString() };
}

test("`version` prints the version; with an argument it is a usage error", () => {
  const ok = run(["version"]);
  expect(ok.code).toBe(0);
  expect(ok.stdout).toMatch(/^mailgator \d+\.\d+\.\d+/);
  const help = run(["version", "--help"]);
  expect(help.code).toBe(0);
  expect(help.stdout.trim()).toBe("Usage: mailgator version");
  for (const extra of [["--x"], ["now"], ["--json"]]) {
    const r = run(["version", ...extra]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain("Usage: mailgator version");
  }
});

test("a config given twice is refused, whichever spelling, not the last one taken", () => {
  // Once: checked (the control). Twice, the second a file that does not exist: taking the last would fail on it
  // with exit 1 or 2 for another reason, taking the first would pass; both are refused before either is read.
  expect(run(["check", "-c", SEED]).code).toBe(0);
  for (const args of [
    ["check", "-c", SEED, "-c", MISSING],
    ["check", "--config", SEED, "--config", SEED],
    ["check", `--config=${SEED}`, "-c", SEED],
    ["audit", "-c", SEED, "--limit", "1", "--limit", "2"],
  ]) {
    const r = run(args);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--(config|limit) is given more than once/);
    expect(r.stderr).not.toContain("no-such-config");
  }
});

test("a flag and its negation together are refused too", () => {
  const r = run(["check", "-c", SEED, "--connect", "--no-connect"]);
  expect(r.code).toBe(2);
  expect(r.stderr).toContain("--connect is given more than once");
});

test("--log-format given twice is refused; once is taken", () => {
  expect(run(["--log-format", "json", "version"]).code).toBe(0);
  const r = run(["--log-format", "json", "--log-format=pretty", "version"]);
  expect(r.code).toBe(2);
  expect(r.stderr).toContain("--log-format is given more than once");
});

test("options that take several values still do (explain --to)", () => {
  const r = run(["explain", "-c", SEED, "--op", "mail:send", "--to", "a@example.com", "--to", "b@example.com"]);
  expect(r.stderr).not.toContain("more than once");
  expect([0, 1]).toContain(r.code);
});
