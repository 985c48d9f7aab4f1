/**
 * `mailgator reload` on a terminal (docs/operations.md "Reload"): what serve reports quotes the config, a rule's name
 * among it, which an `mcp --admin` edit can write (docs/mcp.md). No control or format character in it reaches the
 * terminal as it is: each is shown as its `\uXXXX` escape, as `mailgator check` shows the same warning.
 */
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { smtpListener } from "../fixtures/index.ts";
import { cleanExit, runCli, serveChild } from "./serve-child.ts";

setDefaultTimeout(60_000);

const dir = mkdtempSync(join(tmpdir(), "mg-reload-display-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** CSI as one C1 character, RIGHT-TO-LEFT OVERRIDE, ZERO WIDTH SPACE, and ESC (which JSON.stringify escapes). */
const NAME = "r\u009b2J\u202e\u200bx\u001b]52;c;QQ==\u0007";
/** What a terminal could act on or hide: C0 but LF, DEL, C1, the line separators and format characters. */
const RAW = /[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\p{Cf}]/u;

test("reload: a warning quoting a rule's name shows its controls and format characters escaped", async () => {
  const file = join(dir, "mailgator.toml");
  const base =
    `${smtpListener()}\n[audit]\npath = "${join(dir, "audit.db")}"\n\n[[rules]]\nname = "Send"\n` +
    'operations = ["send"]\naction = "allow"\n';
  writeFileSync(file, base);
  const served = serveChild(file);
  try {
    await served.port("SMTP");
    // Without [imap] a rule with folders never matches: the config loads, with a warning naming the rule.
    writeFileSync(file, `${base}\n[[rules]]\nname = ${JSON.stringify(NAME)}\nfolders = ["INBOX"]\naction = "deny"\n`);
    const r = runCli(["reload", "-c", file]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/^reloaded: /);
    expect(r.stdout).not.toMatch(RAW);
    const warning =
      'warning: rule 2 "r\\u009b2J\\u202e\\u200bx\\u001b]52;c;QQ==\\u0007" can never match: it has folders';
    expect(r.stdout).toContain(warning);
    // The same line as `mailgator check` prints it.
    expect(runCli(["check", "-c", file]).stdout).toContain(warning);
  } finally {
    served.proc.kill("SIGTERM");
  }
  await cleanExit(served);
});
