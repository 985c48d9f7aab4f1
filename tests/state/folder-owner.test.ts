// Files made by root in a folder that belongs to another user are given to that user (src/private-files.ts
// giveToFolderOwner; docs/install.md): the audit log, the state database, the secrets key and their SQLite side
// files. The end-to-end case, `mailgator account login` run as root and the service user opening what it left, is in
// tests/accounts/oauth.test.ts. These tests check what root leaves behind, so they run as root (as `npm test` does:
// the project's Dovecot and Postfix need it).
import { beforeAll, describe, expect, test } from "bun:test";
import { chownSync, mkdtempSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { AuditLog } from "../../src/audit/index.ts";
import { openStateDatabase } from "../../src/state/database.ts";
import { SealedStore } from "../../src/state/store.ts";
import { sampleEvent } from "../audit/helpers.ts";
import { tempRoot } from "../fixtures/temp.ts";

/** The service user of these tests: nobody and nogroup on Debian. */
const SERVICE_UID = 65534;
const SERVICE_GID = 65534;

const TMP = tempRoot("mg-owner-");

/** A fresh folder, owned by the service user unless `ownedByRoot`. */
function folder(ownedByRoot = false): string {
  const dir = mkdtempSync(join(TMP, "mg-owner-"));
  if (!ownedByRoot) chownSync(dir, SERVICE_UID, SERVICE_GID);
  return dir;
}

function owner(path: string): { uid: number; gid: number } {
  const stat = statSync(path);
  return { uid: stat.uid, gid: stat.gid };
}

const SERVICE = { uid: SERVICE_UID, gid: SERVICE_GID };
const ROOT = { uid: 0, gid: 0 };

beforeAll(() => {
  // What is checked is what a root process leaves: as another user these tests could not tell anything.
  expect(process.geteuid?.()).toBe(0);
});

describe("files made by root in another user's folder", () => {
  test("the audit log and its -wal and -shm are the folder owner's, and the log is written through", async () => {
    const dir = folder();
    const path = join(dir, "audit.db");
    const log = AuditLog.open(path);
    await log.durable(sampleEvent());
    for (const name of ["audit.db", "audit.db-wal", "audit.db-shm"]) expect(owner(join(dir, name))).toEqual(SERVICE);
    await log.close();
  });

  test("the state database, its side files and the secrets key are the folder owner's", () => {
    const dir = folder();
    const store = SealedStore.open(join(dir, "state.db"), {
      secretsFile: join(dir, "secrets.key"),
      env: {},
      create: true,
    })!;
    store.put("oauth2-token", "main", "a refresh token");
    for (const name of ["state.db", "state.db-wal", "state.db-shm", "secrets.key"])
      expect(owner(join(dir, name))).toEqual(SERVICE);
    store.close();
    const plain = openStateDatabase(join(dir, "counters.db"));
    // Its side files come with the first write; SQLite, run as root, gives them the database file's owner.
    plain.run("CREATE TABLE counters (n INTEGER)");
    for (const name of ["counters.db", "counters.db-wal", "counters.db-shm"])
      expect(owner(join(dir, name))).toEqual(SERVICE);
    plain.close();
  });

  test("in root's own folder they stay root's", async () => {
    const dir = folder(true);
    const log = AuditLog.open(join(dir, "audit.db"));
    await log.durable(sampleEvent());
    const store = SealedStore.open(join(dir, "state.db"), {
      secretsFile: join(dir, "secrets.key"),
      env: {},
      create: true,
    })!;
    for (const name of ["audit.db", "audit.db-wal", "state.db", "secrets.key"])
      expect(owner(join(dir, name))).toEqual(ROOT);
    store.close();
    await log.close();
  });

  test("a file found in place is never handed over, even root's in the service user's folder", async () => {
    // The folder's owner could have made it a second name of a file of root's; only what is created is given.
    const dir = folder();
    const path = join(dir, "audit.db");
    writeFileSync(path, "", { mode: 0o600 });
    const log = AuditLog.open(path);
    await log.durable(sampleEvent());
    expect(owner(path)).toEqual(ROOT);
    await log.close();
  });
});
