/**
 * What a config file must be before it is parsed (src/config/read.ts, docs/config.md "Where the config is read from"):
 * a regular file, at most MAX_CONFIG_BYTES, valid UTF-8. `mailgator check` is run as a process, with a time limit, so
 * a read that blocks (a pipe) shows as a failure rather than a hung test run.
 */
import { expect, test } from "bun:test";
import { execFileSync } from "node:child_process";
import { appendFileSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ConfigError, loadConfig, MAX_CONFIG_BYTES } from "../../src/config/index.ts";
import { configReadSteps } from "../../src/config/read.ts";
import { tempRoot } from "../fixtures/temp.ts";

const TMP = tempRoot("mg-read-");
const ROOT = join(import.meta.dir, "../..");
const MAIN = join(ROOT, "src/cli/main.ts");
const SEED = readFileSync(join(ROOT, "examples/seed.toml"), "utf8");

function check(file: string): { code: number | null; stderr: string } {
  const p = Bun.spawnSync([process.execPath, MAIN, "check", "-c", file], {
    cwd: ROOT,
    env: { PATH: process.env["PATH"] ?? "" },
    timeout: 15_000,
  });
  return { code: p.exitCode, stderr: p.stderr.toString() };
}

/** The seed config padded with a comment to exactly `size` bytes. */
function padded(size: number): string {
  const head = `${SEED}\n# `;
  return `${head}${"x".repeat(size - head.length - 1)}\n`;
}

function problem(file: string): string {
  try {
    loadConfig(file);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as ConfigError).problems.map((p) => p.message).join("; ");
  }
  throw new Error(`${file} loaded`);
}

test("a named pipe is refused at once, not waited on", () => {
  const fifo = join(TMP, "pipe.toml");
  execFileSync("mkfifo", [fifo]);
  const r = check(fifo);
  expect(r.code).toBe(2);
  expect(r.stderr).toContain("not a regular file (a pipe)");
});

test("a folder and a character device are refused", () => {
  expect(problem(TMP)).toContain("not a regular file (a folder)");
  expect(problem("/dev/zero")).toContain("not a regular file (a character device)");
  const r = check("/dev/zero");
  expect(r.code).toBe(2);
  expect(r.stderr).toContain("a character device");
});

test("a config of MAX_CONFIG_BYTES is read; one byte more is refused", () => {
  const at = join(TMP, "at-limit.toml");
  writeFileSync(at, padded(MAX_CONFIG_BYTES));
  expect(readFileSync(at).length).toBe(MAX_CONFIG_BYTES);
  expect(loadConfig(at).rules.length).toBeGreaterThan(0);
  const past = join(TMP, "past-limit.toml");
  writeFileSync(past, padded(MAX_CONFIG_BYTES + 1));
  expect(problem(past)).toContain(`larger than ${MAX_CONFIG_BYTES} bytes`);
  const r = check(past);
  expect(r.code).toBe(2);
  expect(r.stderr).toContain("MAX_CONFIG_BYTES");
});

test("bytes that are not UTF-8 are refused, not read as U+FFFD", () => {
  // A rule named with a Latin-1 "ä": read leniently, the name (in every audit row) would be "Gesch\uFFFDft".
  const file = join(TMP, "latin1.toml");
  const text = `${SEED}\n[[rules]]\nname = "Gesch\u00e4ft"\naction = "deny"\nfolders = ["Archive"]\n`;
  writeFileSync(file, Buffer.from(text, "latin1"));
  expect(problem(file)).toContain("not valid UTF-8");
  const good = join(TMP, "utf8.toml");
  writeFileSync(good, text);
  expect(loadConfig(good).rules.at(-1)?.name).toBe("Gesch\u00e4ft");
});

test("a missing file is still named as such", () => {
  expect(problem(join(TMP, "none.toml"))).toBe("file not found");
});

test("a file that grows while it is read is refused, not cut at the size it had", () => {
  // The rules that follow the seed's are what a cut would drop: here, a deny rule ahead of the seed's allows.
  const file = join(TMP, "growing.toml");
  writeFileSync(file, SEED);
  configReadSteps.checked = (f) => appendFileSync(f, '\n[[rules]]\nname = "late"\naction = "deny"\n');
  try {
    expect(problem(file)).toBe(
      `read more than ${Buffer.byteLength(SEED)} bytes where its size is ${Buffer.byteLength(SEED)}: changed while ` +
        "it was read (or made up by the kernel as it is read); not read",
    );
  } finally {
    configReadSteps.checked = null;
  }
  // Read again once it no longer changes: all of it.
  expect(loadConfig(file).rules.at(-1)?.name).toBe("late");
});

test("a file that reads other than its size (the kernel's /proc) is refused", () => {
  expect(problem("/proc/self/status")).toBe(
    "read more than 0 bytes where its size is 0: changed while it was read (or made up by the kernel as it is read); " +
      "not read",
  );
});
