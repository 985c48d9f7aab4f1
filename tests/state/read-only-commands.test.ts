/**
 * Commands that only read the state database (`approvals list`, `approvals show`, `account status`) never write it
 * (docs/operations.md "Commands that only read the state database"). Before, with the secrets key at hand, they
 * opened it for writing: a database the quota counters had made without a key was given the sealed table, a key
 * check record, the approvals and account_status tables, and a new schema version, by a command asked only to show
 * what it holds.
 */

import { Database } from "bun:sqlite";
import { afterAll, expect, test } from "bun:test";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ApprovalStore } from "../../src/approvals/store.ts";
import { openStateDatabase } from "../../src/state/database.ts";
import { SealedStore } from "../../src/state/store.ts";

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");
const KEY = randomBytes(32).toString("base64");
const ID = "0123456789abcdef0123456789abcdef";
const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** A config with an OAuth2 account (so that `account status` reads the state database) in a folder of its own. */
function setup(): { dir: string; config: string; state: string } {
  const dir = mkdtempSync(join(tmpdir(), "mg-read-only-"));
  dirs.push(dir);
  const config = join(dir, "m.toml");
  writeFileSync(
    config,
    [
      "[accounts.g]",
      'username = "a@gmail.com"',
      'auth = "oauth2"',
      'provider = "google"',
      'client_id = "x.apps.googleusercontent.com"',
      'client_secret = "GOCSPX-x"',
      "[audit]",
      'path = "audit.db"',
      "[state]",
      'path = "state.db"',
      "",
    ].join("\n"),
  );
  return { dir, config, state: join(dir, "state.db") };
}

/** `mailgator ARGS` as a process, with the secrets key in its environment. */
function run(...args: string[]): { code: number; stdout: string; stderr: string } {
  const p = Bun.spawnSync([process.execPath, MAIN, ...args], {
    env: { PATH: process.env["PATH"] ?? "", MAILGATOR_SECRETS_KEY: KEY },
  });
  return { code: p.exitCode ?? -1, stdout: p.stdout.toString(), stderr: p.stderr.toString() };
}

/** What a write would change: the database file's bytes, and its schema and version as a reader sees them. */
function snapshot(path: string): { sha256: string; schema: unknown; version: unknown } {
  const sha256 = createHash("sha256").update(readFileSync(path)).digest("hex");
  const db = new Database(path, { readonly: true });
  try {
    return {
      sha256,
      schema: db.query("SELECT type, name FROM sqlite_master ORDER BY name").all(),
      version: db.query("PRAGMA user_version").get(),
    };
  } finally {
    db.close();
  }
}

/** The commands that only read, with what each says of a database holding nothing for it. */
function readOnlyCommands(config: string) {
  const list = run("approvals", "list", "-c", config);
  expect(list.stderr).toBe("");
  expect(list.code).toBe(0);
  const listJson = run("approvals", "list", "--json", "-c", config);
  expect(listJson).toMatchObject({ code: 0 });
  expect(JSON.parse(listJson.stdout)).toEqual([]);
  const show = run("approvals", "show", ID, "-c", config);
  expect(show.code).toBe(1);
  const status = run("account", "status", "-c", config);
  expect(status.stderr).toBe("");
  expect(status.code).toBe(0);
  expect(status.stdout).toContain("not logged in");
  return { list, show };
}

test("a database the quota counters made: read as empty, with the key at hand, and not written", () => {
  const { dir, config, state } = setup();
  const db = openStateDatabase(state);
  db.run("CREATE TABLE quota_counter (k TEXT PRIMARY KEY, n INTEGER)");
  db.run("INSERT INTO quota_counter VALUES ('x', 1)");
  db.close();
  const before = snapshot(state);
  expect(before.version).toEqual({ user_version: 0 });
  const { list, show } = readOnlyCommands(config);
  expect(list.stdout).toContain("nothing was ever held: the state database at");
  expect(list.stdout).toContain("holds no sealed record");
  expect(show.stdout).toContain("nothing was ever held");
  expect(snapshot(state)).toEqual(before);
  // SQLite may leave the side files a reader of a WAL database uses: no row in them, and as private as the database.
  for (const side of ["state.db-wal", "state.db-shm"])
    if (existsSync(join(dir, side))) expect(statSync(join(dir, side)).mode & 0o077).toBe(0);
  if (existsSync(join(dir, "state.db-wal"))) expect(statSync(join(dir, "state.db-wal")).size).toBe(0);
});

test("a database with sealed records but no approvals or account_status table yet: read as empty, not written", () => {
  const { config, state } = setup();
  const store = SealedStore.open(state, {
    secretsFile: join(state, "..", "unused.key"),
    env: { MAILGATOR_SECRETS_KEY: KEY },
    create: true,
  })!;
  store.put("other", "1", "a sealed record of another feature");
  store.close();
  const before = snapshot(state);
  const names = (before.schema as { name: string }[]).map((r) => r.name);
  expect(names).not.toContain("approvals");
  expect(names).not.toContain("account_status");
  const { list, show } = readOnlyCommands(config);
  expect(list.stdout).toBe("no held messages\n");
  expect(show.stdout).toContain(`no held message ${ID}`);
  expect(snapshot(state)).toEqual(before);
});

test("an approvals table made before its later columns: listed with their defaults, not migrated", () => {
  const { config, state } = setup();
  const store = SealedStore.open(state, {
    secretsFile: join(state, "..", "unused.key"),
    env: { MAILGATOR_SECRETS_KEY: KEY },
    create: true,
  })!;
  new ApprovalStore(store);
  // As the first version made it: without notified, claimed_by, link_generation and config_revision.
  for (const column of ["notified", "claimed_by", "link_generation", "config_revision"])
    store.db.run(`ALTER TABLE approvals DROP COLUMN ${column}`);
  store.db
    .query(
      "INSERT INTO approvals (id, state, created, expires, sha256, rule, rule_index, groups, agent, updated) " +
        "VALUES (?, 'denied', 1, 2, 'x', 'ask', 0, '[\"managers\"]', 'bot', 3)",
    )
    .run(ID);
  store.close();
  const before = snapshot(state);
  const list = run("approvals", "list", "--json", "-c", config);
  expect(list.stderr).toBe("");
  expect(JSON.parse(list.stdout)).toMatchObject([{ id: ID, state: "denied", rule: "ask", notified: false }]);
  expect(run("approvals", "show", ID, "-c", config).stdout).toContain(`${ID}: denied (rule ask; asks managers)`);
  expect(snapshot(state)).toEqual(before);
});

test("no database: none is made", () => {
  const { dir, config } = setup();
  readOnlyCommands(config);
  expect(readdirSync(dir).sort()).toEqual(["m.toml"]);
});
