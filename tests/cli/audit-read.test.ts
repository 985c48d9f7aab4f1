/**
 * `mailgator audit` as a person reads it: an empty result says so, rows left out by --limit are counted, JSON times
 * are ISO 8601 like the text, and the --until, --protocol and --command filters (docs/audit.md "Reading the log").
 */
import { Database } from "bun:sqlite";
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type AuditEvent, AuditLog } from "../../src/audit/index.ts";
import { MAX_LIMIT } from "../../src/cli/commands/audit.ts";

const ROOT = join(import.meta.dir, "../..");
const MAIN = join(ROOT, "src/cli/main.ts");
const dir = mkdtempSync(join(tmpdir(), "mg-audit-read-"));
const file = join(dir, "m.toml");
const HOUR = 3_600_000;
const now = Date.now();
setDefaultTimeout(60_000); // each test runs the command line several times, on a loaded machine

function run(...args: string[]): { code: number; stdout: string; stderr: string; lines: string[] } {
  const p = Bun.spawnSync([process.execPath, MAIN, "audit", "-c", file, ...args], {
    env: { PATH: process.env["PATH"] ?? "" },
  });
  const stdout = p.stdout.toString();
  return { code: p.exitCode ?? -1, stdout, stderr: p.stderr.toString(), lines: stdout.trim().split("\n") };
}

beforeAll(async () => {
  writeFileSync(file, readFileSync(join(ROOT, "examples/seed.toml")));
  const log = AuditLog.open(join(dir, "mailgator-audit.db"));
  const base: AuditEvent = {
    session: "s1",
    clientAddr: "127.0.0.1",
    agent: null,
    protocol: "imap",
    command: "UID FETCH",
    operation: "mail:read",
    folder: "INBOX",
    target: null,
    decision: "allow",
    rule: "r",
    ruleIndex: 0,
    reason: "ok",
    configRevision: "r",
  };
  log.record({ ...base, time: now - 3 * HOUR, target: "three-hours" });
  log.record({ ...base, time: now - 2 * HOUR, command: "SELECT", target: "two-hours" });
  log.record({ ...base, time: now - HOUR, protocol: "smtp", command: "RCPT TO", target: "one-hour" });
  log.record({ ...base, time: now - 1000, command: "uid fetch", target: "now" });
  await log.close();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test("an empty result says so, on stdout as text and on stderr with --json", () => {
  expect(run("--since", "2999-01-01")).toMatchObject({ code: 0, stdout: "no matching rows\n" });
  const json = run("--since", "2999-01-01", "--json");
  expect(json.stdout).toBe("");
  expect(json.stderr).toBe("no matching rows\n");
});

test("no log file yet: said on stdout as text, on stderr with --json (stdout holds only JSON rows)", () => {
  const none = join(dir, "none.toml");
  writeFileSync(none, `[audit]\npath = "${join(dir, "never-written.db")}"\n`);
  const cli = (...args: string[]) =>
    Bun.spawnSync([process.execPath, MAIN, "audit", "-c", none, ...args], { env: { PATH: process.env["PATH"] ?? "" } });
  const said = `no audit log yet at ${join(dir, "never-written.db")}\n`;
  const text = cli();
  expect([text.exitCode, text.stdout.toString(), text.stderr.toString()]).toEqual([0, said, ""]);
  const json = cli("--json");
  expect([json.exitCode, json.stdout.toString(), json.stderr.toString()]).toEqual([0, "", said]);
});

test("rows left out by --limit are counted; at the limit exactly, nothing is said", () => {
  const two = run("--limit", "2");
  expect(two.lines).toHaveLength(3);
  expect(two.lines[0]).toContain('target="one-hour"');
  expect(two.lines[1]).toContain('target="now"');
  expect(two.lines[2]).toBe("2 more rows not shown; raise --limit (now 2)");
  expect(run("--limit", "3").lines[3]).toBe("1 more row not shown; raise --limit (now 3)");
  const four = run("--limit", "4");
  expect(four.lines).toHaveLength(4);
  expect(four.stdout).not.toContain("not shown");
  const json = run("--limit", "2", "--json");
  expect(json.lines).toHaveLength(2);
  expect(json.stderr).toBe("2 more rows not shown; raise --limit (now 2)\n");
});

test("--json times are ISO 8601 UTC, the same instant the text line shows", () => {
  const text = run("--limit", "1").lines[0]!;
  const row = JSON.parse(run("--limit", "1", "--json").lines[0]!) as { time: string; target: string };
  expect(row.target).toBe("now");
  expect(row.time).toBe(new Date(now - 1000).toISOString());
  expect(text.startsWith(row.time)).toBe(true);
});

test("--until excludes rows from that time on; durations and ISO dates both work", () => {
  const targets = (r: { lines: string[] }) => r.lines.map((l) => (JSON.parse(l) as { target: string }).target);
  expect(targets(run("--until", "90m", "--json"))).toEqual(["three-hours", "two-hours"]);
  expect(targets(run("--since", "150m", "--until", "30m", "--json"))).toEqual(["two-hours", "one-hour"]);
  expect(targets(run("--until", new Date(now - 2 * HOUR).toISOString(), "--json"))).toEqual(["three-hours"]);
  expect(run("--until", "soon").code).toBe(2);
});

test("--protocol and --command filter; --command ignores case", () => {
  const targets = (r: { lines: string[] }) => r.lines.map((l) => (JSON.parse(l) as { target: string }).target);
  expect(targets(run("--protocol", "smtp", "--json"))).toEqual(["one-hour"]);
  expect(targets(run("--command", "UID FETCH", "--json"))).toEqual(["three-hours", "now"]);
  expect(targets(run("--command", "rcpt to", "--json"))).toEqual(["one-hour"]);
  expect(run("--protocol", "pop3")).toMatchObject({ code: 2 });
  expect(run("--command", "NOOP").stdout).toBe("no matching rows\n");
});

test("--limit takes a whole number up to MAX_LIMIT; one past it is a usage error, not an unreadable log", () => {
  const at = run("--limit", String(MAX_LIMIT));
  expect(at.code).toBe(0);
  expect(at.lines).toHaveLength(4);
  for (const past of [String(MAX_LIMIT + 1), "99999999999999999999"]) {
    const r = run("--limit", past);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`--limit: expected a whole number from 1 to ${MAX_LIMIT}, got "${past}"`);
  }
});

test("a row another program wrote with no valid time or a detail that is not JSON is shown; the rest still are", () => {
  // The file is SQLite's: any program can write it. Before, such a row failed the whole listing (`Invalid Date`,
  // `JSON Parse error`), hiding every other row from the operator.
  const own = mkdtempSync(join(tmpdir(), "mg-audit-foreign-"));
  try {
    const config = join(own, "m.toml");
    writeFileSync(config, `[audit]\npath = "${join(own, "audit.db")}"\n`);
    const db = new Database(join(own, "audit.db"));
    db.exec(
      "CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL, session TEXT NOT NULL, " +
        "agent TEXT, client_addr TEXT, protocol TEXT NOT NULL, command TEXT NOT NULL, operation TEXT, folder TEXT, " +
        "target TEXT, decision TEXT NOT NULL, rule TEXT, rule_index INTEGER, reason TEXT NOT NULL, " +
        "config_revision TEXT NOT NULL, count INTEGER, hidden_count INTEGER, detail TEXT); PRAGMA user_version = 2",
    );
    const insert = db.prepare(
      "INSERT INTO audit (time, session, protocol, command, decision, reason, config_revision, detail) " +
        "VALUES (?, 's', 'imap', ?, 'allow', 'r', 'x', ?)",
    );
    insert.run(now, "FIRST", null);
    insert.run("yesterday", "BADTIME", null);
    insert.run(now, "BADDETAIL", '{"a": "\x1b[2J');
    insert.run(now, "LAST", '{"ok":1}');
    db.close();
    const p = (...args: string[]) =>
      Bun.spawnSync([process.execPath, MAIN, "audit", "-c", config, ...args], {
        env: { PATH: process.env["PATH"] ?? "" },
      });
    const text = p();
    expect(text.exitCode).toBe(0);
    const lines = text.stdout.toString().trim().split("\n");
    expect(lines.map((l) => /imap (\w+)/.exec(l)?.[1])).toEqual(["FIRST", "BADTIME", "BADDETAIL", "LAST"]);
    expect(lines[1]).toStartWith("(no valid time) #2 ALLOW ");
    const json = p("--json");
    expect(json.exitCode).toBe(0);
    const rows = json.stdout
      .toString()
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(rows.map((r) => [r["command"], r["time"] === null, r["detail"]])).toEqual([
      ["FIRST", false, null],
      ["BADTIME", true, null],
      ["BADDETAIL", false, { unreadable: '{"a": "\x1b[2J' }],
      ["LAST", false, { ok: 1 }],
    ]);
    expect(json.stdout.toString()).not.toContain("\x1b");
  } finally {
    rmSync(own, { recursive: true, force: true });
  }
});
