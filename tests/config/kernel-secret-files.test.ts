/**
 * A secret file the kernel makes up as it is read (docs/config.md "Vault mode"): `/proc/self/environ` is a regular
 * file, private to the process's user (mode 0400) and of size 0, so it passed every check of a secret file, and its
 * text, the process's environment with every secret given in a variable, became the password sent upstream. Files
 * under /proc and /sys are refused by their file system, and any file that reads other than its size is refused
 * too. `mailgator check` is run as a process, as an operator runs it.
 */
import { afterEach, expect, test } from "bun:test";
import { appendFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ConfigError, parseConfig } from "../../src/config/index.ts";
import { secretFileSteps } from "../../src/runtime/secret-file.ts";
import { tempRoot } from "../fixtures/temp.ts";

const TMP = tempRoot("mg-kernel-secret-");
const MAIN = join(import.meta.dir, "../../src/cli/main.ts");
const HASH = `sha256:${"a".repeat(64)}`;

afterEach(() => {
  secretFileSteps.checked = null;
});

function config(key: "password_file" | "client_secret_file", file: string): string {
  const account =
    key === "password_file"
      ? `[accounts.main]\nusername = "u@x.test"\npassword_file = ${JSON.stringify(file)}\n`
      : '[accounts.main]\nusername = "a@gmail.com"\nauth = "oauth2"\nprovider = "google"\n' +
        `client_id = "x.apps.googleusercontent.com"\nclient_secret_file = ${JSON.stringify(file)}\n`;
  return (
    '[imap]\nlisten_addr = "127.0.0.1:1993"\nupstream_addr = "imap.example.test:993"\n' +
    `${account}[[agents]]\nname = "b"\ntoken_hash = "${HASH}"\naccount = "main"\n` +
    `[audit]\npath = ${JSON.stringify(join(TMP, "audit.db"))}\n`
  );
}

function check(text: string): { code: number | null; stderr: string; stdout: string } {
  const file = join(TMP, `m-${Math.random().toString(16).slice(2)}.toml`);
  writeFileSync(file, text);
  const p = Bun.spawnSync([process.execPath, MAIN, "check", "-c", file], {
    env: { PATH: process.env["PATH"] ?? "", MAIL_SECRET: "hunter2-in-the-environment" },
    timeout: 15_000,
  });
  return { code: p.exitCode, stderr: p.stderr.toString(), stdout: p.stdout.toString() };
}

test("check refuses /proc/self/environ and other /proc files as a password or client secret file", () => {
  for (const [key, file] of [
    ["password_file", "/proc/self/environ"],
    ["client_secret_file", "/proc/self/environ"],
    ["password_file", "/proc/self/cmdline"],
  ] as const) {
    const r = check(config(key, file));
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(
      `accounts.main.${key}: "${file}" is on the kernel's proc file system: made up as it is read, not a secret file`,
    );
    // Never read, so never quoted either.
    expect(r.stderr + r.stdout).not.toContain("hunter2");
  }
});

test("check refuses a file under /sys, whatever its mode", () => {
  const r = check(config("password_file", "/sys/devices/system/cpu/online"));
  expect(r.code).toBe(2);
  expect(r.stderr).toContain(
    `"/sys/devices/system/cpu/online" is on the kernel's sysfs file system: made up as it is read, not a secret file`,
  );
});

test("a file that reads other than its size (here written to between the checks and the read) is refused", () => {
  const file = join(TMP, "pw.txt");
  writeFileSync(file, "password\n", { mode: 0o600 });
  const text = config("password_file", file);
  // Read as it is, the same file is a password.
  expect(parseConfig(text, "/cfg/m.toml").accounts["main"]).toBeDefined();
  secretFileSteps.checked = (f) => appendFileSync(f, "more\n");
  let error: unknown = null;
  try {
    parseConfig(text, "/cfg/m.toml");
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(ConfigError);
  expect((error as ConfigError).message).toContain(
    `${JSON.stringify(file)} read 14 bytes where its size is 9: a file the kernel makes up as it is read`,
  );
});
