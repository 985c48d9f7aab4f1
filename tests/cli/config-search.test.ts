/**
 * Where a command finds its config without -c: MAILGATOR_CONFIG, then ./mailgator.toml, then
 * /etc/mailgator/mailgator.toml (docs/config.md "Where the config is read from"); checked in process, and with the
 * compiled executable (`npm run build`'s own line) run from a folder holding mailgator.toml.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError, findConfig } from "../../src/config/index.ts";
import { buildAlone } from "../fixtures/compiled.ts";

const ROOT = join(import.meta.dir, "../..");
const scratch = mkdtempSync(join(tmpdir(), "mailgator-find-"));
const CONFIG = `[smtp]
listen_addr = "127.0.0.1:0"
upstream_addr = "127.0.0.1:465"

[[rules]]
name = "Deny everything else"
action = "deny"
`;
const here = join(scratch, "here");
const system = join(scratch, "etc", "mailgator.toml");
const other = join(scratch, "other.toml");
let exe: string;

beforeAll(() => {
  mkdirSync(here);
  mkdirSync(join(scratch, "etc"));
  mkdirSync(join(scratch, "empty"));
  mkdirSync(join(scratch, "exe"));
  writeFileSync(join(here, "mailgator.toml"), CONFIG);
  writeFileSync(system, CONFIG);
  writeFileSync(other, CONFIG);
  exe = join(buildAlone(join(scratch, "exe")), "mailgator");
}, 120_000);
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

test("-c wins over everything", () => {
  expect(findConfig("given.toml", { MAILGATOR_CONFIG: other }, here, system).path).toBe("given.toml");
});

test("then MAILGATOR_CONFIG, even with ./mailgator.toml present", () => {
  expect(findConfig(undefined, { MAILGATOR_CONFIG: other }, here, system).path).toBe(other);
});

test("a MAILGATOR_CONFIG naming no file is an error, never a fall back to another file", () => {
  expect(() => findConfig(undefined, { MAILGATOR_CONFIG: join(scratch, "nope.toml") }, here, system)).toThrow(
    "MAILGATOR_CONFIG names a file that does not exist",
  );
});

test("then ./mailgator.toml, then the system file", () => {
  expect(findConfig(undefined, {}, here, system).path).toBe(join(here, "mailgator.toml"));
  expect(findConfig(undefined, { MAILGATOR_CONFIG: "" }, join(scratch, "empty"), system).path).toBe(system);
});

test("none found: the error lists every place it looked", () => {
  let error: unknown;
  try {
    findConfig(undefined, {}, join(scratch, "empty"), join(scratch, "none", "mailgator.toml"));
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(ConfigError);
  const message = (error as Error).message;
  expect(message).toContain("-c FILE");
  expect(message).toContain("MAILGATOR_CONFIG (not set)");
  expect(message).toContain(join(scratch, "empty", "mailgator.toml"));
  expect(message).toContain(join(scratch, "none", "mailgator.toml"));
});

test("the compiled executable finds ./mailgator.toml without -c", () => {
  const env: Record<string, string | undefined> = { ...process.env };
  delete env["MAILGATOR_CONFIG"];
  const run = Bun.spawnSync([exe, "check"], { cwd: here, env, stdout: "pipe", stderr: "pipe" });
  expect(run.stderr.toString()).toBe("");
  expect(run.stdout.toString()).toContain(`${join(here, "mailgator.toml")}: valid`);
  expect(run.exitCode).toBe(0);
  const viaEnv = Bun.spawnSync([exe, "check"], {
    cwd: here,
    env: { ...env, MAILGATOR_CONFIG: other },
    stdout: "pipe",
  });
  expect(viaEnv.stdout.toString()).toContain(`${other}: valid`);
  const none = Bun.spawnSync([exe, "check"], { cwd: join(scratch, "empty"), env, stdout: "pipe", stderr: "pipe" });
  expect(none.exitCode).toBe(2);
  expect(none.stderr.toString()).toContain(join(scratch, "empty", "mailgator.toml"));
  expect(none.stderr.toString()).toContain("/etc/mailgator/mailgator.toml");
});

test("approvals and account find the config as every other command does (README, docs/install.md)", () => {
  const env: Record<string, string | undefined> = { ...process.env };
  delete env["MAILGATOR_CONFIG"];
  const main = join(ROOT, "src/cli/main.ts");
  const commands = [
    ["approvals", "list"],
    ["account", "status"],
  ];
  for (const command of commands) {
    for (const [cwd, extra] of [
      [here, {}],
      [join(scratch, "empty"), { MAILGATOR_CONFIG: other }],
    ] as const) {
      for (const argv of [
        [process.execPath, main, ...command],
        [exe, ...command],
      ]) {
        const run = Bun.spawnSync(argv, { cwd, env: { ...env, ...extra }, stdout: "pipe", stderr: "pipe" });
        expect({ argv: argv.slice(-2), cwd, stderr: run.stderr.toString(), code: run.exitCode }).toEqual({
          argv: command,
          cwd,
          stderr: "",
          code: 0,
        });
      }
    }
  }
});

test("an empty -c is an error, never the search path: a script's unset variable must not pick ./mailgator.toml", () => {
  expect(() => findConfig("", {}, here, system)).toThrow("-c names no file (an empty value)");
  for (const args of [
    ["check", "-c", ""],
    ["check", "--config="],
    ["audit", "-c", ""],
  ]) {
    const p = Bun.spawnSync([process.execPath, join(ROOT, "src/cli/main.ts"), ...args], {
      cwd: here,
      env: { PATH: process.env["PATH"] ?? "" },
    });
    expect(p.exitCode).toBe(2);
    expect(p.stdout.toString()).toBe("");
    expect(p.stderr.toString()).toContain("-c names no file (an empty value)");
  }
});
