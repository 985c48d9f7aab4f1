/**
 * Creating the secrets key (src/state/key.ts, docs/accounts.md "What is stored where") must leave the key file whole
 * or not at all. It was created with O_EXCL under its own name and then written: a write that failed (a full disk;
 * here the file size limit, `ulimit -f 0`) left an empty key file, which every later start refused ("expected 32
 * bytes in base64") although no record was ever sealed with it; and a second process starting at that moment read
 * the empty file and stopped the same way.
 */
import { expect, spyOn, test } from "bun:test";
import * as fs from "node:fs";
import { existsSync, mkdtempSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { KEY_BYTES, loadSecretsKey } from "../../src/state/key.ts";
import { tempRoot } from "../fixtures/temp.ts";

const TMP = tempRoot("mg-key-file-");
const realOpen = fs.openSync;
const realLink = fs.linkSync;
const realFsync = fs.fsyncSync;

test("a key whose write fails leaves no key file: the error says so, and the next start creates the key", async () => {
  const dir = mkdtempSync(join(TMP, "k-"));
  const file = join(dir, "mailgator-secrets.key");
  const child = Bun.spawn(
    ["sh", "-c", 'ulimit -f 0 && exec "$0" "$1" "$2"', process.execPath, join(import.meta.dir, "key-child.ts"), file],
    { stdout: "pipe", stderr: "inherit" },
  );
  const out = await new Response(child.stdout).text();
  await child.exited;
  expect(out).toContain("SecretsKeyError: cannot create the secrets file");
  expect(existsSync(file)).toBe(false);
  expect(readdirSync(dir)).toEqual([]);
  expect(loadSecretsKey({ file, env: {}, mayCreate: true }).length).toBe(KEY_BYTES);
});

/**
 * The key's name is an entry of its folder, which the file's fsync does not make durable (fsync(2)): the folder is
 * synced once the name is linked, before any record is sealed with the key. Without it, power lost soon after the first
 * start could keep the state database's sealed records (committed with synchronous = FULL) and lose the key file.
 * The calls are watched as they reach node:fs: a power cut cannot be made in a test.
 */
test("the key file's folder is synced after the key is linked to its name", () => {
  const dir = mkdtempSync(join(TMP, "s-"));
  const file = join(dir, "mailgator-secrets.key");
  const calls: string[] = [];
  const folders = new Set<number>();
  const open = spyOn(fs, "openSync").mockImplementation(((path: fs.PathLike, flags: fs.OpenMode, mode?: fs.Mode) => {
    const fd = realOpen(path, flags, mode);
    if (String(path) === dir) folders.add(fd);
    return fd;
  }) as typeof fs.openSync);
  const link = spyOn(fs, "linkSync").mockImplementation(((from: fs.PathLike, to: fs.PathLike) => {
    realLink(from, to);
    if (String(to) === file) calls.push("link");
  }) as typeof fs.linkSync);
  const sync = spyOn(fs, "fsyncSync").mockImplementation(((fd: number) => {
    realFsync(fd);
    calls.push(folders.has(fd) ? "fsync folder" : "fsync file");
  }) as typeof fs.fsyncSync);
  try {
    expect(loadSecretsKey({ file, env: {}, mayCreate: true }).length).toBe(KEY_BYTES);
  } finally {
    open.mockRestore();
    link.mockRestore();
    sync.mockRestore();
  }
  expect(calls).toEqual(["fsync file", "link", "fsync folder"]);
});
