/**
 * The seeder's command line (scripts/upstreams/seed.ts): every option checked, `--count` and `--folder` not taken
 * together (one of them would be ignored), and a refused command line seeds nothing.
 */
import { expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { seedArguments } from "../../scripts/upstreams/seed.ts";

test("folders and counts are taken as given", () => {
  expect(seedArguments(["--maildir", "/m", "--folder", "INBOX=3", "--folder", "Archive/2025=0"])).toEqual({
    maildir: "/m",
    options: { folders: { INBOX: 3, "Archive/2025": 0 } },
  });
  expect(seedArguments(["--user", "a@b.test", "--dir", "/d", "--count", "7", "--seed", "2"])).toEqual({
    user: "a@b.test",
    dir: "/d",
    options: { count: 7, seed: 2, owner: "a@b.test" },
  });
  // A folder name may hold "=": the count is after the last one.
  expect(seedArguments(["--maildir", "/m", "--folder", "a=b=4"]).options.folders).toEqual({ "a=b": 4 });
});

test("a command line that would be half ignored or guessed is refused", () => {
  const refused: [string[], RegExp][] = [
    [["--maildir", "/m", "--count", "5", "--folder", "INBOX=2"], /--count or --folder, not both/],
    [["--maildir", "/m", "--folder", "INBOX"], /NAME=N/],
    [["--maildir", "/m", "--folder", "=4"], /NAME=N/],
    [["--maildir", "/m", "--folder", "INBOX=-1"], /whole number/],
    [["--maildir", "/m", "--count", "ten"], /whole number/],
    [["--maildir", "/m", "--count", "1e3"], /whole number/],
    [["--maildir", "/m", "--count"], /needs a value/],
    [["--maildir", "--count", "3"], /needs a value/],
    [["--maildir", "/m", "--counts", "3"], /unknown option/],
    [["--maildir", "/m", "--seed", "1", "--seed", "2"], /given twice/],
    [["--count", "3"], /one of --user and --maildir/],
    [["--user", "a@b.test", "--maildir", "/m"], /one of --user and --maildir/],
    [["--maildir", "/m", "--folder", "INBOX=1", "--folder", "INBOX=2"], /--folder INBOX given twice/],
    [["--maildir", "/m", "--dir", "/d"], /--dir goes with --user/],
  ];
  for (const [args, why] of refused) expect(() => seedArguments(args), args.join(" ")).toThrow(why);
});

test("the CLI exits 2 with the reason and writes nothing", () => {
  const dir = mkdtempSync(join(tmpdir(), "mg-seed-args-"));
  try {
    const maildir = join(dir, "Maildir");
    const run = Bun.spawnSync(
      [process.execPath, "scripts/upstreams/seed.ts", "--maildir", maildir, "--count", "5", "--folder", "INBOX=2"],
      { stderr: "pipe", stdout: "pipe" },
    );
    expect(run.exitCode).toBe(2);
    expect(run.stderr.toString()).toContain("seed: give --count or --folder, not both");
    expect(existsSync(maildir)).toBe(false);
    expect(readdirSync(dir)).toEqual([]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the CLI seeds the folders it is given", () => {
  const dir = mkdtempSync(join(tmpdir(), "mg-seed-args-"));
  try {
    const maildir = join(dir, "Maildir");
    const run = Bun.spawnSync(
      [process.execPath, "scripts/upstreams/seed.ts", "--maildir", maildir, "--folder", "INBOX=3", "--seed", "4"],
      { stderr: "pipe", stdout: "pipe" },
    );
    expect(run.stderr.toString()).toContain("seed: 3 messages into");
    expect(run.exitCode).toBe(0);
    expect(readdirSync(join(maildir, "cur")).length).toBe(3);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
