/**
 * packaging/mailgator.service: `systemd-analyze verify` accepts it (no warning either: verify exits 0 on unknown
 * keys and bad values, so its output must be empty), it has the hardening docs/install.md promises, and its
 * `systemctl reload` command reloads a running `mailgator serve` and says so.
 */
import { afterAll, expect, test } from "bun:test";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const ROOT = join(import.meta.dir, "../..");
const UNIT = readFileSync(join(ROOT, "packaging/mailgator.service"), "utf8");
const MAIN = join(ROOT, "src/cli/main.ts");
const INSTALLED = "/usr/local/bin/mailgator";
const scratch = mkdtempSync(join(tmpdir(), "mailgator-unit-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** Runs `systemd-analyze verify` on `text`, with ExecStart's binary replaced by an executable in the scratch folder. */
function verify(text: string, name = "mailgator.service"): { code: number; output: string } {
  const found = Bun.which("systemd-analyze");
  if (found === null) throw new Error("systemd-analyze is missing: apt-get install systemd (it need not be running)");
  const exe = join(scratch, "mailgator");
  writeFileSync(exe, "#!/bin/sh\nexit 0\n");
  chmodSync(exe, 0o755);
  expect(text).toContain(`ExecStart=${INSTALLED} `);
  const file = join(scratch, name);
  writeFileSync(file, text.replaceAll(INSTALLED, exe));
  const run = Bun.spawnSync([found, "verify", file], { stdout: "pipe", stderr: "pipe" });
  return { code: run.exitCode, output: `${run.stdout.toString()}${run.stderr.toString()}`.trim() };
}

/** Every value the unit gives `key`, in order. */
function values(key: string): string[] {
  return [...UNIT.matchAll(new RegExp(`^${key}=(.*)$`, "gm"))].map((m) => m[1]!);
}

test("systemd-analyze verify accepts the unit without a single warning", () => {
  expect(verify(UNIT)).toEqual({ code: 0, output: "" });
});

test("the check bites: a misspelt key or a bad value is reported", () => {
  const broken = UNIT.replace("ProtectHome=yes", "ProtectHome=bogus\nProtectHomee=yes");
  const result = verify(broken, "broken.service");
  expect(result.output).toContain("ProtectHomee");
  expect(result.output).toContain("bogus");
});

test("the unit runs as a dedicated user with the hardening systemd offers", () => {
  expect(values("User")).toEqual(["mailgator"]);
  expect(values("Group")).toEqual(["mailgator"]);
  for (const [key, value] of [
    ["NoNewPrivileges", "yes"],
    ["ProtectSystem", "strict"],
    ["ProtectHome", "yes"],
    ["PrivateTmp", "yes"],
    ["PrivateDevices", "yes"],
    ["StateDirectory", "mailgator"],
    ["ConfigurationDirectory", "mailgator"],
    ["CapabilityBoundingSet", ""],
    ["RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"],
    ["MemoryDenyWriteExecute", "no"],
  ] as const)
    expect(values(key)).toEqual([value]);
  expect(values("SystemCallFilter")).toEqual(["@system-service", "~@privileged"]);
  expect(values("ExecStart")).toEqual([`${INSTALLED} serve -c /etc/mailgator/mailgator.toml`]);
});

test("ExecReload is `mailgator reload` with ExecStart's config: it reloads a running serve and waits", async () => {
  const exec = values("ExecReload");
  expect(exec).toEqual([`${INSTALLED} reload -c /etc/mailgator/mailgator.toml`]);
  expect(exec[0]!.split(" -c ")[1]).toBe(values("ExecStart")[0]!.split(" -c ")[1]);
  const config = join(scratch, "hup.toml");
  writeFileSync(
    config,
    [
      "[smtp]",
      'listen_addr = "127.0.0.1:0"',
      'upstream_addr = "127.0.0.1:9"',
      'upstream_tls = "none"',
      "[audit]",
      `path = ${JSON.stringify(join(scratch, "hup.db"))}`,
      "[[rules]]",
      'name = "none"',
      'action = "deny"',
      "",
    ].join("\n"),
  );
  // The unit's command line with the installed binary and config replaced by this checkout's and the test's.
  const reloadArgs = exec[0]!.replace(INSTALLED, "").replace("/etc/mailgator/mailgator.toml", config).trim().split(" ");
  const run = () => Bun.spawnSync([process.execPath, MAIN, ...reloadArgs], { stdout: "pipe", stderr: "pipe" });
  // No serve yet: nothing is signalled, and the reload fails.
  const before = run();
  expect(before.exitCode).toBe(1);
  expect(before.stdout.toString()).toContain("no running mailgator for this config");
  const proc = Bun.spawn([process.execPath, MAIN, "serve", "-c", config], {
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, MIMALLOC_PURGE_DELAY: "-1" },
  });
  try {
    // serve writes its pid file once it listens: until then `reload` finds no running serve.
    let reloaded = run();
    for (let i = 0; i < 200 && reloaded.exitCode !== 0 && proc.exitCode === null; i++) {
      await Bun.sleep(50);
      reloaded = run();
    }
    expect(reloaded.stdout.toString()).toMatch(
      /^reloaded: config revision [0-9a-f]{16} -> [0-9a-f]{16} \(process \d+\)/,
    );
    expect(reloaded.exitCode).toBe(0);
    expect(proc.exitCode).toBeNull();
  } finally {
    proc.kill("SIGTERM");
  }
  expect(await proc.exited).toBe(0);
}, 30_000);
