/**
 * `mailgator check` and `mailgator explain` show the config's names (rules, accounts, agents, user names, the audit
 * log's path) with their control and format characters escaped, as `mailgator audit` shows what agents send
 * (docs/audit.md "Reading the log"): a rule name can come from a rule edit through `mailgator mcp --admin`
 * (docs/mcp.md), and JSON.stringify leaves C1 controls (U+009B, a CSI on its own) and bidirectional overrides as they
 * are.
 */
import { expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { tempRoot } from "../fixtures/temp.ts";

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");
const dir = tempRoot("mg-check-display-");
const file = join(dir, "m.toml");
/** C0 and DEL and C1, general category Cf, the line separators, and surrogates (tests/cli/terminal-display.test.ts). */
const RAW = /[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\p{Cf}\p{Cs}]/u;

writeFileSync(
  file,
  `[audit]
path = "audit\\u009b2J\\u202e.db"

[accounts."m\\u009b2J\\u202e"]
username = "u\\u009b1A@example.com"
password = "pw"

[[agents]]
name = "bot\\u202e"
token_hash = "sha256:06d87530918e921091a920c9775639131d33b1e13d9e31d82e533c09cc8797e0"
account = "m\\u009b2J\\u202e"

[[rules]]
name = "Inbox\\u009b2K\\u202e"
folders = ["INBOX"]
operations = ["read"]
action = "allow"

[[rules]]
name = "Deny\\u009b2J"
action = "deny"
`,
);

function run(...args: string[]): { code: number; stdout: string } {
  const p = Bun.spawnSync([process.execPath, MAIN, ...args], { env: { PATH: process.env["PATH"] ?? "" } });
  return { code: p.exitCode ?? -1, stdout: p.stdout.toString() };
}

test("check shows every name escaped", () => {
  const { code, stdout } = run("check", "-c", file);
  expect(code).toBe(0);
  expect(stdout).not.toMatch(RAW);
  expect(stdout).toContain('"Inbox\\u009b2K\\u202e"');
  expect(stdout).toContain("account m\\u009b2J\\u202e: u\\u009b1A@example.com");
  expect(stdout).toContain("bot\\u202e");
  expect(stdout).toContain("audit\\u009b2J\\u202e.db");
});

for (const json of [false, true]) {
  test(`explain${json ? " --json" : ""} shows rule names escaped`, () => {
    const args = ["explain", "-c", file, "--op", "mail:read", "--folder", "INBOX", "--agent", "bot\u202e"];
    const { code, stdout } = run(...args, ...(json ? ["--json"] : []));
    expect(code).toBe(0);
    expect(stdout).not.toMatch(RAW);
    expect(stdout).toContain("Inbox\\u009b2K\\u202e");
  });
}
