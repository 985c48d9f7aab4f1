/**
 * An `[audit] path` that names a FIFO, read by `mailgator audit` (docs/audit.md "Files"): the reader refuses what is
 * not a regular file before SQLite opens it, as the writer does. Before, it opened the FIFO read-only and waited for
 * ever. Run as a process with a time limit and SIGKILL, so that a wait shows as a failure rather than a hung test run.
 */
import { afterAll, expect, test } from "bun:test";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");
const dir = mkdtempSync(join(tmpdir(), "mg-audit-fifo-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test("mailgator audit refuses an audit path that is a FIFO at once", () => {
  const fifo = join(dir, "audit.db");
  execFileSync("mkfifo", ["-m", "600", fifo]);
  const file = join(dir, "mailgator.toml");
  writeFileSync(file, `[audit]\npath = "${fifo}"\n\n[[rules]]\nname = "Everything"\naction = "allow"\n`);
  const p = Bun.spawnSync([process.execPath, MAIN, "audit", "-c", file], {
    env: { PATH: process.env["PATH"] ?? "" },
    timeout: 15_000,
    killSignal: "SIGKILL",
  });
  expect(p.stderr.toString()).toContain(`audit: cannot open ${fifo}: ${fifo} is not a regular file`);
  expect(p.exitCode).toBe(1);
}, 30_000);
