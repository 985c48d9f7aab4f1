/**
 * The reload step in process (docs/operations.md "Reload"): a file that loads is swapped in whole, one that does not
 * changes nothing and says where; `onReload` subscribers see each outcome. The end-to-end behaviour with signals and
 * sessions is in tests/e2e/reload.test.ts.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { reload } from "../../src/cli/commands/serve.ts";
import { loadConfig } from "../../src/config/index.ts";
import { compilePolicy } from "../../src/policy/index.ts";
import {
  emitReload,
  LiveConfig,
  onReload,
  type ReloadResult,
  reloadFailures,
  reloadSuccesses,
  SessionsNotReloaded,
} from "../../src/runtime/reload.ts";

const dir = mkdtempSync(join(tmpdir(), "mg-reload-unit-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function write(action: string): string {
  const file = join(dir, "mailgator.toml");
  writeFileSync(
    file,
    `[smtp]
listen_addr = "127.0.0.1:0"
upstream_addr = "127.0.0.1:25"
upstream_tls = "none"

[audit]
path = "${join(dir, "audit.db")}"

[[rules]]
name = "Everything"
action = "${action}"
`,
  );
  return file;
}

test("a good file is swapped in with a new revision; a bad one keeps the old and reports file:line:col", () => {
  const file = write("allow");
  const first = loadConfig(file);
  const live = new LiveConfig(first, compilePolicy(first.rules));
  const seen: ReloadResult[] = [];
  const off = onReload((r) => seen.push(r));
  const failuresBefore = reloadFailures();
  const successesBefore = reloadSuccesses();

  write("deny");
  const ok = reload(file, {}, live, [], first.audit.path);
  emitReload(ok);
  expect(ok.ok).toBe(true);
  expect(ok.previousRevision).toBe(first.revision);
  expect(ok.revision).not.toBe(first.revision);
  expect(live.generation).toBe(1);
  expect(live.config.rules[0]!.action).toBe("deny");

  write('maybe"\n[[rules]\n');
  const bad = reload(file, {}, live, [], first.audit.path);
  emitReload(bad);
  expect(bad.ok).toBe(false);
  expect(bad.errors.length).toBeGreaterThan(0);
  expect(bad.errors[0]).toMatch(new RegExp(`^${file.replaceAll(".", "\\.")}:\\d+:\\d+: `));
  expect(bad.revision).toBe(ok.revision);
  expect(live.generation).toBe(1);
  expect(live.config.rules[0]!.action).toBe("deny");

  off();
  emitReload(ok);
  expect(seen.map((r) => r.ok)).toEqual([true, false]);
  expect(reloadFailures()).toBe(failuresBefore + 1);
  expect(reloadSuccesses()).toBe(successesBefore + 2);
});

test("a step that throws after the swap: the steps after it still run, and the outcome says so", () => {
  const file = write("allow");
  const first = loadConfig(file);
  const live = new LiveConfig(first, compilePolicy(first.rules));
  const committed: string[] = [];
  const handle = (name: string, fail: boolean) => ({
    address: { host: "127.0.0.1", port: 0 },
    close: async () => {},
    prepareReload: () => ({
      warnings: [],
      commit: () => {
        committed.push(name);
        if (fail) throw new Error(`${name} broke`);
        return 1;
      },
    }),
  });
  write("deny");
  const result = reload(file, {}, live, [handle("imap", true), handle("smtp", false)], first.audit.path);
  expect(committed).toEqual(["imap", "smtp"]);
  expect(live.config.rules[0]!.action).toBe("deny");
  // In force, in part: ok with the failed step as its error (`mailgator reload` exits 1 on it).
  expect(result.ok).toBe(true);
  expect(result.sessionsEnded).toBe(1);
  expect(result.errors).toHaveLength(1);
  expect(result.errors[0]).toContain("a step of the reload failed (imap broke)");
});

test("sessions that could not take the new config were ended: counted, and the outcome is a reload in part", () => {
  const file = write("allow");
  const first = loadConfig(file);
  const live = new LiveConfig(first, compilePolicy(first.rules));
  const handle = {
    address: { host: "127.0.0.1", port: 0 },
    close: async () => {},
    prepareReload: () => ({
      warnings: [],
      commit: () => {
        throw new SessionsNotReloaded(3, 1, "a bug");
      },
    }),
  };
  write("deny");
  const result = reload(file, {}, live, [handle], first.audit.path);
  expect(result.ok).toBe(true);
  expect(result.sessionsEnded).toBe(3);
  expect(result.errors).toEqual([
    "a step of the reload failed: 1 session(s) could not take the new config (a bug) and were ended; the new " +
      "config is in force",
  ]);
});

test("the first ask rule by reload: a warning (approvals are set up at start), none when they are", () => {
  const file = write("allow");
  const first = loadConfig(file);
  const live = new LiveConfig(first, compilePolicy(first.rules));
  writeFileSync(
    file,
    readFileSync(file, "utf8").replace(
      'action = "allow"',
      'action = "ask"\noperations = ["send"]\nask_groups = ["boss"]',
    ) + '\n[approvals.groups.boss]\nrecipients = ["boss@example.test"]\n',
  );
  const warned = reload(file, {}, live, [], first.audit.path);
  expect(warned.ok).toBe(true);
  expect(warned.warnings).toContain(
    'rule 1 "Everything" asks for approval, but approvals are set up at start: until a restart, a send it holds ' +
      "is refused with 451 and nothing is sent",
  );
  const served = reload(file, {}, live, [], first.audit.path, { approvals: true });
  expect(served.ok).toBe(true);
  expect(served.warnings.filter((w) => w.includes("asks for approval"))).toEqual([]);
});

test("a changed [state] path or secrets file, with sealed records open: a warning; the database in use stays", () => {
  const file = write("allow");
  const first = loadConfig(file);
  const live = new LiveConfig(first, compilePolicy(first.rules));
  const sealed = { path: first.state.path, secretsFile: first.state.secretsFile };
  const same = reload(file, {}, live, [], first.audit.path, { sealed });
  expect(same.warnings.filter((w) => w.startsWith("[state]"))).toEqual([]);
  writeFileSync(file, `${readFileSync(file, "utf8")}\n[state]\npath = "${join(dir, "other-state.db")}"\n`);
  const moved = reload(file, {}, live, [], first.audit.path, { sealed });
  expect(moved.ok).toBe(true);
  expect(moved.warnings.filter((w) => w.startsWith("[state]"))).toEqual([
    `[state] cannot change on reload: tokens and held messages stay in ${sealed.path} (secrets key ` +
      `${sealed.secretsFile}); restart to use ${join(dir, "other-state.db")} (secrets key ${sealed.secretsFile})`,
  ]);
  // No sealed records open: nothing to say.
  expect(reload(file, {}, live, [], first.audit.path).warnings.filter((w) => w.startsWith("[state]"))).toEqual([]);
});

test("a changed or added [admin]: a warning that the admin listener keeps what it started with", () => {
  const file = write("allow");
  const first = loadConfig(file);
  const live = new LiveConfig(first, compilePolicy(first.rules));
  const admin = first.admin;
  const warnedOf = (r: ReturnType<typeof reload>) => r.warnings.filter((w) => w.startsWith("[admin]"));
  expect(warnedOf(reload(file, {}, live, [], first.audit.path, { admin }))).toEqual([]);
  writeFileSync(file, `${readFileSync(file, "utf8")}\n[admin]\nlisten_addr = "127.0.0.1:19999"\n`);
  const added = reload(file, {}, live, [], first.audit.path, { admin });
  expect(added.ok).toBe(true);
  expect(warnedOf(added)).toEqual([
    "[admin] cannot change on reload: the admin listener keeps the address, allow_remote and token_hash it " +
      "started with; restart to use the new ones",
  ]);
  const started = loadConfig(file).admin;
  expect(warnedOf(reload(file, {}, live, [], first.audit.path, { admin: started }))).toEqual([]);
  writeFileSync(file, `${readFileSync(file, "utf8")}token_hash = "sha256:${"ab".repeat(32)}"\n`);
  expect(warnedOf(reload(file, {}, live, [], first.audit.path, { admin: started }))).toHaveLength(1);
});

test("a reload that removes the last [[agents]] is refused: it would switch vault mode to pass-through", () => {
  const file = write("allow");
  const base = readFileSync(file, "utf8");
  const vault =
    `${base}\n[accounts.m]\nusername = "u"\npassword = "p"\n\n[[agents]]\nname = "bot"\n` +
    `token_hash = "sha256:${"a".repeat(64)}"\naccount = "m"\n`;
  writeFileSync(file, vault);
  const first = loadConfig(file);
  const live = new LiveConfig(first, compilePolicy(first.rules));
  // The agent removed, the account kept: refused, the vault config stays in force.
  writeFileSync(file, `${base}\n[accounts.m]\nusername = "u"\npassword = "p"\n`);
  const refused = reload(file, {}, live, [], first.audit.path);
  expect(refused.ok).toBe(false);
  expect(refused.errors).toEqual([
    "the new config has no [[agents]]: that would switch from vault mode to pass-through, where any login the " +
      "upstream accepts is let in; a reload does not switch modes (restart serve to do it; to shut every agent " +
      "out, stop serve)",
  ]);
  expect(live.config.agents.map((a) => a.name)).toEqual(["bot"]);
  // Another agent in its place is a reload as any other; pass-through to vault mode too.
  writeFileSync(file, vault.replace('name = "bot"', 'name = "other"'));
  expect(reload(file, {}, live, [], first.audit.path).ok).toBe(true);
  expect(live.config.agents.map((a) => a.name)).toEqual(["other"]);
  const passThrough = loadConfig(write("allow"));
  const fromPassThrough = new LiveConfig(passThrough, compilePolicy(passThrough.rules));
  writeFileSync(file, vault);
  expect(reload(file, {}, fromPassThrough, [], passThrough.audit.path).ok).toBe(true);
  expect(fromPassThrough.config.agents.map((a) => a.name)).toEqual(["bot"]);
});
