/**
 * `mailgator audit --since/--until` take a duration or an ISO 8601 date (docs/audit.md "Reading the log"), and
 * nothing else: a loose date (`Dec 5`, `10`) read as some other time would answer "no matching rows" for a period
 * full of rows. A date and time without an offset is UTC, as the lines show times, whatever the machine's zone.
 */
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type AuditEvent, AuditLog } from "../../src/audit/index.ts";
import { UsageError } from "../../src/cli/args.ts";
import { parseSince } from "../../src/cli/commands/audit.ts";

const ROOT = join(import.meta.dir, "../..");
const MAIN = join(ROOT, "src/cli/main.ts");
const dir = mkdtempSync(join(tmpdir(), "mg-audit-since-"));
const file = join(dir, "m.toml");
setDefaultTimeout(60_000);

/** A row at 2026-12-01T10:30:00Z. */
const AT = Date.UTC(2026, 11, 1, 10, 30);

function run(tz: string, ...args: string[]): { code: number; stdout: string; stderr: string } {
  const p = Bun.spawnSync([process.execPath, MAIN, "audit", "-c", file, "--json", ...args], {
    env: { PATH: process.env["PATH"] ?? "", TZ: tz },
  });
  return { code: p.exitCode ?? -1, stdout: p.stdout.toString(), stderr: p.stderr.toString() };
}

beforeAll(async () => {
  writeFileSync(file, readFileSync(join(ROOT, "examples/seed.toml")));
  const log = AuditLog.open(join(dir, "mailgator-audit.db"));
  const row: AuditEvent = {
    time: AT,
    session: "s1",
    clientAddr: "127.0.0.1",
    agent: null,
    protocol: "imap",
    command: "FETCH",
    operation: "mail:read",
    folder: "INBOX",
    target: "the-row",
    decision: "allow",
    rule: "r",
    ruleIndex: 0,
    reason: "ok",
    configRevision: "r",
  };
  log.record(row);
  await log.close();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test("what is not a duration or an ISO 8601 date is a usage error, never some other time", () => {
  for (const text of [
    "Dec 5",
    "10",
    "90",
    "0",
    "-1",
    "12/01",
    "2026",
    "2026-12",
    "2026-02-30",
    "2026-12-01T24:00",
    "2026-12-01T10:00+24:00",
    "2026-12-01T10:00z",
  ])
    expect(() => parseSince(text, AT), text).toThrow(UsageError);
  // The CLI: exit 2, not "no matching rows" for a day full of them.
  const loose = run("UTC", "--until", "Dec 5");
  expect(loose.code).toBe(2);
  expect(loose.stdout).toBe("");
});

test("ISO dates and times: a date alone and a time without an offset are UTC, as the lines show them", () => {
  expect(parseSince("2026-12-01", 0)).toBe(Date.UTC(2026, 11, 1));
  expect(parseSince("2026-12-01T10:00", 0)).toBe(Date.UTC(2026, 11, 1, 10));
  expect(parseSince("2026-12-01T10:00:05", 0)).toBe(Date.UTC(2026, 11, 1, 10, 0, 5));
  expect(parseSince("2026-12-01T10:00:05.250Z", 0)).toBe(Date.UTC(2026, 11, 1, 10, 0, 5, 250));
  expect(parseSince("2026-12-01T10:00+02:00", 0)).toBe(Date.UTC(2026, 11, 1, 8));
  expect(parseSince("90s", 100_000)).toBe(10_000);
  // The hour around the row, typed as the line shows it but without its Z, on a machine in New York.
  const hour = run("America/New_York", "--since", "2026-12-01T10:00", "--until", "2026-12-01T11:00");
  expect(hour.code).toBe(0);
  expect((JSON.parse(hour.stdout.trim()) as { target: string }).target).toBe("the-row");
});
