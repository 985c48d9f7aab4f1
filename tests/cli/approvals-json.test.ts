/**
 * `mailgator approvals show|approve|deny ID --json` when there is nothing to act on (docs/approvals.md "Deciding"):
 * stdout stays JSON for a script reading it (empty here), the reason goes to stderr, and the exit code is 1. Before,
 * the text `no held message ID` went to stdout with --json, and `[]` (a list, for a command whose answer is an
 * object) when no state database existed.
 */
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ApprovalStore } from "../../src/approvals/store.ts";
import { loadConfig } from "../../src/config/index.ts";
import { openStateDatabase } from "../../src/state/database.ts";
import { SealedStore } from "../../src/state/store.ts";

const ROOT = join(import.meta.dir, "../..");
const MAIN = join(ROOT, "src/cli/main.ts");
const dir = mkdtempSync(join(tmpdir(), "mg-approvals-json-"));
const file = join(dir, "m.toml");
writeFileSync(file, readFileSync(join(ROOT, "examples/seed.toml")));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
setDefaultTimeout(60_000); // each test runs the command line several times
const ID = "0123456789abcdef0123456789abcdef";

function run(...args: string[]) {
  const p = Bun.spawnSync([process.execPath, MAIN, "approvals", ...args, "-c", file], {
    env: { PATH: process.env["PATH"] ?? "" },
  });
  return { code: p.exitCode, stdout: p.stdout.toString(), stderr: p.stderr.toString() };
}

test("no state database: show, approve and deny --json print nothing on stdout and exit 1; list prints []", () => {
  for (const verb of ["show", "approve", "deny"]) {
    const r = run(verb, ID, "--json");
    expect(r).toMatchObject({ code: 1, stdout: "" });
    expect(r.stderr).toContain("nothing was ever held");
  }
  expect(run("list", "--json")).toMatchObject({ code: 0, stdout: "[]\n" });
  // Text output is unchanged: the note on stdout.
  expect(run("show", ID).stdout).toContain("nothing was ever held");
});

test("a state database the quota counters made, with no key and nothing sealed: not called missing", () => {
  const config = loadConfig({ path: file, ownedOnly: false });
  const db = openStateDatabase(config.state.path);
  db.run("CREATE TABLE quota_counter (k TEXT PRIMARY KEY, n INTEGER)");
  db.close();
  try {
    for (const r of [run("list"), run("show", ID)]) {
      expect(r.stdout).toContain("nothing was ever held: the state database at");
      expect(r.stdout).toContain("holds no sealed record");
      expect(r.stdout).not.toContain("no state database");
    }
    expect(run("list", "--json")).toMatchObject({ code: 0, stdout: "[]\n" });
    expect(run("show", ID, "--json")).toMatchObject({ code: 1, stdout: "" });
  } finally {
    for (const suffix of ["", "-wal", "-shm"]) rmSync(`${config.state.path}${suffix}`, { force: true });
  }
});

test("an unknown ID: show, approve and deny --json print nothing on stdout and exit 1", () => {
  const config = loadConfig({ path: file, ownedOnly: false });
  const state = SealedStore.open(config.state.path, { secretsFile: config.state.secretsFile, env: {}, create: true })!;
  new ApprovalStore(state);
  state.close();
  for (const verb of ["show", "approve", "deny"]) {
    const r = run(verb, ID, "--json");
    expect(r).toMatchObject({ code: 1, stdout: "", stderr: `no held message ${ID}\n` });
  }
  expect(run("list", "--json")).toMatchObject({ code: 0, stdout: "[]\n" });
  expect(run("approve", ID)).toMatchObject({ code: 1, stdout: `no held message ${ID}\n` });
});
