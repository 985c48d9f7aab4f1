/**
 * A `[state] path` that names a FIFO (docs/config.md "[state]"): every opening of the state database checks its files
 * first (src/private-files.ts), the read-only ones too. Before, `serve` looked for held messages there with SQLite
 * read-only before it listened, and `explain` read the quota use so: each waited for ever on the FIFO, deaf to SIGTERM.
 * Run as processes with a time limit and SIGKILL, so that a wait shows as a failure rather than a hung test run.
 */
import { afterAll, expect, test } from "bun:test";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");
const dir = mkdtempSync(join(tmpdir(), "mg-state-fifo-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const fifo = join(dir, "state.db");
execFileSync("mkfifo", ["-m", "600", fifo]);
const file = join(dir, "mailgator.toml");
writeFileSync(
  file,
  `[smtp]
listen_addr = "127.0.0.1:0"
upstream_addr = "127.0.0.1:587"

[audit]
path = "${join(dir, "audit.db")}"

[state]
path = "${fifo}"

[[quotas]]
name = "daily"
sends_per_day = 100

[[rules]]
name = "Everything"
action = "allow"
`,
);

function run(args: string[]): { code: number | null; out: string } {
  const p = Bun.spawnSync([process.execPath, MAIN, ...args], {
    env: { PATH: process.env["PATH"] ?? "" },
    timeout: 15_000,
    killSignal: "SIGKILL",
  });
  return { code: p.exitCode, out: p.stdout.toString() + p.stderr.toString() };
}

test("serve refuses a state database path that is a FIFO at once, before it listens", () => {
  const r = run(["serve", "-c", file]);
  expect(r.out).toContain(`cannot start: quotas: ${fifo} is not a regular file`);
  expect(r.out).not.toContain("listening");
  expect(r.code).toBe(1);
}, 30_000);

test("explain refuses it too, rather than wait to read the quota use", () => {
  const r = run(["explain", "-c", file, "--op", "send", "--from", "me@corp.test", "--to", "you@corp.test"]);
  expect(r.out).toContain(`${fifo} is not a regular file`);
  expect(r.code).toBe(1);
}, 30_000);
