/**
 * The audit log and the classification cache are private files (docs/audit.md "Files"): 0600 with their -wal
 * and -shm, whatever the umask, and tightened when an earlier run left them wider.
 */
import { afterAll, afterEach, expect, test } from "bun:test";
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AuditLog } from "../../src/audit/index.ts";
import { type Config, parseConfig } from "../../src/config/index.ts";
import { ClassificationCache, cachePathBeside } from "../../src/imap/cache.ts";
import { startImapProxy } from "../../src/imap/index.ts";
import { compilePolicy } from "../../src/policy/index.ts";
import { spoolDirFor, startSmtpProxy } from "../../src/smtp/index.ts";
import { openStateDatabase } from "../../src/state/database.ts";
import { sampleEvent as event } from "./helpers.ts";

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");
const root = mkdtempSync(join(tmpdir(), "mailgator-files-"));
const startUmask = process.umask();
afterEach(() => {
  process.umask(startUmask);
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

function mode(path: string): string {
  return (statSync(path).mode & 0o777).toString(8);
}

function modes(path: string): Record<string, string> {
  return Object.fromEntries(["", "-wal", "-shm"].map((s) => [s || "db", mode(path + s)]));
}

const PRIVATE = { db: "600", "-wal": "600", "-shm": "600" };

for (const umask of [0o022, 0o000]) {
  test(`a new audit log and its -wal and -shm are 0600 under umask ${umask.toString(8).padStart(3, "0")}`, async () => {
    process.umask(umask);
    const path = join(mkdtempSync(join(root, "a")), "audit.db");
    const log = AuditLog.open(path);
    try {
      await log.durable(event());
      expect(modes(path)).toEqual(PRIVATE);
    } finally {
      await log.close();
    }
  });

  test(`new classification cache, its -wal and -shm: 0600 under umask ${umask.toString(8).padStart(3, "0")}`, () => {
    process.umask(umask);
    const path = join(mkdtempSync(join(root, "c")), "mailgator-cache.db");
    const cache = ClassificationCache.open(path, () => {});
    expect(cache).not.toBeNull();
    try {
      cache!.put(
        { account: "h:1/u", folder: "INBOX", fingerprint: "f" },
        {
          uidValidity: 1,
          classifiedThrough: 3,
          highestVisible: 2,
          visible: new Uint32Array([2]),
          hidden: { uids: new Uint32Array([1, 3]), slots: new Uint16Array([0, 0]) },
        },
      );
      expect(modes(path)).toEqual(PRIVATE);
    } finally {
      cache!.close();
    }
  });
}

test("files an older build left 0644 are made 0600 when the log and the cache open", async () => {
  process.umask(0o022);
  const dir = mkdtempSync(join(root, "old"));
  const audit = join(dir, "audit.db");
  const cachePath = join(dir, "mailgator-cache.db");
  // As an older build leaves them: everything 0644, and a -wal and -shm (copied while open, as a killed process
  // leaves them behind).
  const first = AuditLog.open(audit);
  await first.durable(event());
  const firstCache = ClassificationCache.open(cachePath, () => {})!;
  for (const path of [audit, cachePath]) {
    for (const s of ["-wal", "-shm"]) copyFileSync(path + s, `${path}${s}.kept`);
  }
  await first.close();
  firstCache.close();
  for (const path of [audit, cachePath]) {
    for (const s of ["-wal", "-shm"]) renameSync(`${path}${s}.kept`, path + s);
    for (const s of ["", "-wal", "-shm"]) chmodSync(path + s, 0o644);
    expect(modes(path)).toEqual({ db: "644", "-wal": "644", "-shm": "644" });
  }
  const log = AuditLog.open(audit);
  const cache = ClassificationCache.open(cachePath, () => {});
  try {
    expect(modes(audit)).toEqual(PRIVATE);
    expect(modes(cachePath)).toEqual(PRIVATE);
    expect(log.query().length).toBe(1);
  } finally {
    await log.close();
    cache?.close();
  }
});

test("under umask 000 the proxies' own start makes the log and the cache 0600 and the spool folder 0700", async () => {
  process.umask(0o000);
  const dir = mkdtempSync(join(root, "serve"));
  const toml = `[imap]
listen_addr = "127.0.0.1:0"
upstream_addr = "127.0.0.1:1"
upstream_tls = "none"

[smtp]
listen_addr = "127.0.0.1:0"
upstream_addr = "127.0.0.1:1"
upstream_tls = "none"

[audit]
path = "${join(dir, "audit.db")}"

[[rules]]
name = "newsletters"
folders = ["INBOX"]
from = "news@*"
operations = ["read"]
action = "allow"
`;
  const parsed = parseConfig(toml, join(dir, "mailgator.toml"));
  const any = { host: "127.0.0.1", port: 0 };
  const config: Config = {
    ...parsed,
    imap: { ...parsed.imap!, listenAddr: any },
    smtp: { ...parsed.smtp!, listenAddr: any },
  };
  const audit = AuditLog.open(config.audit.path);
  const policy = compilePolicy(config.rules);
  const imap = await startImapProxy({ config, policy, audit });
  const smtp = await startSmtpProxy({ config, policy, audit });
  try {
    await audit.durable(event());
    expect(modes(join(dir, "audit.db"))).toEqual(PRIVATE);
    expect(modes(cachePathBeside(config.audit.path))).toEqual(PRIVATE);
    expect(mode(spoolDirFor(config))).toBe("700");
  } finally {
    await imap.close();
    await smtp.close();
    await audit.close();
  }
});

test("a database path that names a folder is refused, and the folder's mode is left as it was", () => {
  const dir = mkdtempSync(join(root, "folder"));
  const folder = join(dir, "logs");
  mkdirSync(folder);
  chmodSync(folder, 0o755);
  expect(() => AuditLog.open(folder)).toThrow(`${folder} is not a regular file`);
  expect(() => openStateDatabase(folder)).toThrow(`${folder} is not a regular file`);
  expect(ClassificationCache.open(folder, () => {})).toBeNull();
  expect(mode(folder)).toBe("755");
});

test("serve with [audit] path naming a folder stops with an error and leaves the folder's mode alone", () => {
  const dir = mkdtempSync(join(root, "serve-folder"));
  const folder = join(dir, "logs");
  mkdirSync(folder);
  chmodSync(folder, 0o755);
  const config = join(dir, "mailgator.toml");
  writeFileSync(
    config,
    `[smtp]\nlisten_addr = "127.0.0.1:0"\nupstream_addr = "127.0.0.1:1"\nupstream_tls = "none"\n\n` +
      `[audit]\npath = "${folder}"\n`,
  );
  const run = Bun.spawnSync([process.execPath, MAIN, "serve", "-c", config], { stdout: "pipe", stderr: "pipe" });
  expect(run.exitCode).toBe(1);
  expect(run.stderr.toString()).toContain(`${folder} is not a regular file`);
  expect(mode(folder)).toBe("755");
});
