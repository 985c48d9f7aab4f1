/**
 * packaging/mailgator.service: `systemd-analyze verify` accepts it (no warning either: verify exits 0 on unknown
 * keys and bad values, so its output must be empty), it has the hardening docs/install.md promises, and it offers
 * `systemctl reload` only if `mailgator serve` survives SIGHUP.
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

test("ExecReload is there exactly when serve survives SIGHUP", async () => {
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
  const proc = Bun.spawn([process.execPath, MAIN, "serve", "-c", config], {
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, MIMALLOC_PURGE_DELAY: "-1" },
  });
  let text = "";
  const reader = (proc.stderr as ReadableStream<Uint8Array>).getReader();
  void (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      text += new TextDecoder().decode(value);
    }
  })();
  for (let i = 0; i < 200 && !/listening on/.test(text) && proc.exitCode === null; i++) await Bun.sleep(50);
  expect(text).toMatch(/SMTP proxy listening on/);
  proc.kill("SIGHUP");
  const ended = await Promise.race([proc.exited.then(() => true), Bun.sleep(2000).then(() => false)]);
  if (!ended) proc.kill("SIGTERM");
  await proc.exited;
  const reload = values("ExecReload");
  if (ended) expect(reload).toEqual([]);
  else expect(reload).toEqual(["/bin/kill -HUP $MAINPID"]);
}, 20_000);
