/**
 * A reload cannot add or remove a listener (docs/operations.md "Reload": a reload that removes or adds an `[imap]` or
 * `[smtp]` section is refused): `mailgator serve` as a child process, its config rewritten on disk, then `mailgator
 * reload`. The running config stays in force, and the reload says why, rather than reporting a config in force
 * whose added listener nothing serves.
 */
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { imapListener, smtpListener } from "../fixtures/index.ts";
import { runCli, serveChild } from "./serve-child.ts";

setDefaultTimeout(60_000);

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function config(dir: string, listeners: string): string {
  return `${listeners}
[audit]
path = "${join(dir, "audit.db")}"

[[rules]]
name = "Everything"
action = "allow"
`;
}

for (const [started, added, name] of [
  [imapListener(), smtpListener(), "smtp"],
  [smtpListener(), imapListener(), "imap"],
] as const)
  test(`[${name}] added to a serve started without it: not reloaded, the running config stays`, async () => {
    const dir = mkdtempSync(join(tmpdir(), "mg-reload-sections-"));
    dirs.push(dir);
    const file = join(dir, "mailgator.toml");
    writeFileSync(file, config(dir, started));
    const served = serveChild(file);
    try {
      await served.port(name === "smtp" ? "IMAP" : "SMTP");
      writeFileSync(file, config(dir, `${started}\n${added}`));
      const r = runCli(["reload", "-c", file]);
      expect(r.stdout).toContain("not reloaded: the running config");
      expect(r.stdout).toContain(`[${name}] was added: adding or removing a listener needs a restart`);
      expect(r.exitCode).toBe(1);
      // Back to the file it started with: reloaded.
      writeFileSync(file, config(dir, started));
      const back = runCli(["reload", "-c", file]);
      expect(back.stdout).toContain("reloaded: config revision");
      expect(back.exitCode).toBe(0);
    } finally {
      served.proc.kill("SIGTERM");
      await served.proc.exited;
    }
  });
