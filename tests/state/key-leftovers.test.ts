/**
 * The secrets key is written as `<file>.<pid>.tmp` and linked to its name (src/state/key.ts, docs/accounts.md "What
 * is stored where"); a process stopped between the two (SIGKILL, power loss) left that file, a copy of a key, for
 * good. A process that reads or creates the key now removes such leftovers of processes that are gone, and nothing
 * else: not one whose process is alive, not one written after it started, not a file of another name, not a folder.
 * The reader is a process of its own (tests/state/key-child.ts), started after the leftovers were made, as serve is.
 */
import { expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tempRoot } from "../fixtures/temp.ts";

const TMP = tempRoot("mg-key-leftovers-");
const NAME = "mailgator-secrets.key";

/** The pid of a process that has exited (and that no process has taken since). */
async function deadPid(): Promise<number> {
  const p = Bun.spawn(["true"]);
  await p.exited;
  expect(() => process.kill(p.pid, 0)).toThrow();
  return p.pid;
}

async function readKey(file: string): Promise<string> {
  const child = Bun.spawn([process.execPath, join(import.meta.dir, "key-child.ts"), file], {
    stdout: "pipe",
    stderr: "inherit",
  });
  const out = await new Response(child.stdout).text();
  await child.exited;
  return out.trim();
}

/** Leftovers that must stay, whatever the reader does; returns their names. */
async function keepers(dir: string, dead: number): Promise<string[]> {
  const [gone, gone2] = [await deadPid(), await deadPid()];
  const future = new Date(Date.now() + 3600_000);
  const names = {
    live: `${NAME}.${process.pid}.tmp`, // this test's process is alive: it may be writing its key
    recent: `${NAME}.${gone}.tmp`, // no such process, but written after the reader started (below)
    otherFile: `other.key.${dead}.tmp`,
    suffix: `${NAME}.${dead}.tmp.bak`,
    notPid: `${NAME}.abc.tmp`,
    stale: `${NAME}.${dead}.stale`,
    prefix: `x${NAME}.${dead}.tmp`,
  };
  for (const n of Object.values(names)) writeFileSync(join(dir, n), "keep\n", { mode: 0o600 });
  utimesSync(join(dir, names.recent), future, future);
  mkdirSync(join(dir, `${NAME}.${gone2}.tmp`));
  return [...Object.values(names), `${NAME}.${gone2}.tmp`];
}

test("reading the key removes a leftover of a process that is gone, and nothing else", async () => {
  const dir = mkdtempSync(join(TMP, "read-"));
  const file = join(dir, NAME);
  expect(await readKey(file)).toBe("ok"); // creates the key
  const key = readFileSync(file, "utf8");
  const dead = await deadPid();
  const leftover = `${NAME}.${dead}.tmp`;
  writeFileSync(join(dir, leftover), "c2VjcmV0LWtleS1vZi1hLWRlYWQtcHJvY2Vzcy0xMjM0NTY=\n", { mode: 0o600 });
  const kept = await keepers(dir, dead);

  expect(await readKey(file)).toBe("ok");
  expect(existsSync(join(dir, leftover))).toBe(false);
  expect(readdirSync(dir).sort()).toEqual([NAME, ...kept].sort());
  expect(readFileSync(file, "utf8")).toBe(key);
});

test("creating the key removes a leftover too, and the key it creates is whole", async () => {
  const dir = mkdtempSync(join(TMP, "create-"));
  const file = join(dir, NAME);
  const dead = await deadPid();
  writeFileSync(join(dir, `${NAME}.${dead}.tmp`), "half", { mode: 0o600 });
  const kept = await keepers(dir, dead);

  expect(await readKey(file)).toBe("ok");
  expect(readdirSync(dir).sort()).toEqual([NAME, ...kept].sort());
  expect(readFileSync(file, "utf8")).toMatch(/^[A-Za-z0-9+/]{43}=\n$/);
});
