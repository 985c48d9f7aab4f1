/**
 * The pid file serve claims at start (src/runtime/state-files.ts, docs/operations.md "One serve per folder"), in
 * this process: created when absent, refused while a live process holds it, and never taken over when it holds no
 * pid (another serve may be writing it, or it is damaged): the claim fails and the file is left as it was.
 */
import { afterAll, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { claimPidFile, readStatusFile, releasePidFile, writeStatusFile } from "../../src/runtime/state-files.ts";

const dir = mkdtempSync(join(tmpdir(), "mailgator-pid-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test("absent: created with this pid and the config file; released, it is gone", () => {
  const file = join(dir, "a.pid");
  const claim = claimPidFile(file, "/etc/mailgator/a.toml");
  expect(claim.held).toBe(true);
  expect(readFileSync(file, "utf8")).toStartWith(`${process.pid} `);
  expect(readFileSync(file, "utf8")).toEndWith("\n/etc/mailgator/a.toml\n");
  if (claim.held) releasePidFile(file, claim.text);
  expect(existsSync(file)).toBe(false);
});

test("held by a live process (the parent of this one): not taken", () => {
  const file = join(dir, "b.pid");
  writeFileSync(file, `${process.ppid}\n/etc/mailgator/other.toml\n`);
  const claim = claimPidFile(file, "/etc/mailgator/b.toml");
  expect(claim).toMatchObject({ held: false, pid: process.ppid, config: "/etc/mailgator/other.toml" });
  expect(readFileSync(file, "utf8")).toBe(`${process.ppid}\n/etc/mailgator/other.toml\n`);
});

for (const [what, text] of [
  ["empty", ""],
  ["damaged", "not a pid\n"],
] as const)
  test(`${what}: never taken over; the claim fails and the file is left as it was`, () => {
    const file = join(dir, `${what}.pid`);
    writeFileSync(file, text);
    expect(() => claimPidFile(file, "/etc/mailgator/c.toml")).toThrow("holds no pid");
    expect(readFileSync(file, "utf8")).toBe(text);
  });

test("a symbolic link planted at a temporary file's name is not written through", () => {
  // The pid file and the reload status file are first written as `<file>.<pid>.tmp`, a name anyone who can write
  // in the folder can guess: a link there must not make serve write its text into the file it points at.
  const victim = join(dir, "victim");
  writeFileSync(victim, "precious\n");
  const pidFile = join(dir, "linked.pid");
  symlinkSync(victim, `${pidFile}.${process.pid}.tmp`);
  const claim = claimPidFile(pidFile, "/etc/mailgator/l.toml");
  expect(claim.held).toBe(true);
  expect(readFileSync(pidFile, "utf8")).toStartWith(`${process.pid} `);
  if (claim.held) releasePidFile(pidFile, claim.text);
  const statusFile = join(dir, "linked.status");
  symlinkSync(victim, `${statusFile}.${process.pid}.tmp`);
  const errors: string[] = [];
  const result = { ok: true, at: "", revision: "r", previousRevision: "r", errors: [], warnings: [], sessionsEnded: 0 };
  writeStatusFile(statusFile, "/etc/mailgator/l.toml", result, (m) => errors.push(m));
  expect(errors).toEqual([]);
  expect(readStatusFile(statusFile)?.pid).toBe(process.pid);
  expect(readFileSync(victim, "utf8")).toBe("precious\n");
});
