/**
 * A database file or SQLite side file that is a symbolic link is refused, never followed (src/private-files.ts
 * restrictDatabaseFiles; docs/audit.md "Files"). Whoever may write the folder (the service user, when root runs
 * `mailgator account login` in the service's state folder as docs/install.md allows) could otherwise point
 * `mailgator-state.db-wal` at a file of root's: the chmod meant for the side file would take its group and other bits
 * away (an /etc/passwd made 0600 stops every login), and a dangling link for the database file would have SQLite
 * create a root-owned file wherever it points.
 */
import { Database } from "bun:sqlite";
import { expect, test } from "bun:test";
import {
  existsSync,
  linkSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { AuditLog } from "../../src/audit/index.ts";
import { restrictDatabaseFiles, restrictSteps } from "../../src/private-files.ts";
import { openStateDatabase } from "../../src/state/database.ts";
import { tempRoot } from "../fixtures/temp.ts";

const TMP = tempRoot("mg-db-links-");

function victim(): string {
  const file = join(mkdtempSync(join(TMP, "v-")), "victim");
  writeFileSync(file, "root:x:0:0:root:/root:/bin/bash\n", { mode: 0o644 });
  return file;
}

const mode = (file: string) => (statSync(file).mode & 0o777).toString(8);

for (const side of ["-wal", "-shm", "-journal"]) {
  test(`a state database whose ${side} is a symbolic link is refused; the link's target is left as it was`, () => {
    const dir = mkdtempSync(join(TMP, "s-"));
    const target = victim();
    const path = join(dir, "mailgator-state.db");
    symlinkSync(target, path + side);
    expect(() => openStateDatabase(path)).toThrow("is a symbolic link");
    expect(mode(target)).toBe("644");
    expect(readFileSync(target, "utf8")).toBe("root:x:0:0:root:/root:/bin/bash\n");
  });
}

test("an audit log whose -wal is a symbolic link is refused; the target keeps its mode", () => {
  const dir = mkdtempSync(join(TMP, "a-"));
  const target = victim();
  const path = join(dir, "audit.db");
  symlinkSync(target, `${path}-wal`);
  expect(() => AuditLog.open(path)).toThrow("is a symbolic link");
  expect(mode(target)).toBe("644");
});

test("a dangling symbolic link as the database file is refused: nothing is created where it points", () => {
  const dir = mkdtempSync(join(TMP, "d-"));
  const elsewhere = join(mkdtempSync(join(TMP, "e-")), "created-by-root");
  const path = join(dir, "mailgator-state.db");
  symlinkSync(elsewhere, path);
  expect(() => openStateDatabase(path)).toThrow("is a symbolic link");
  expect(existsSync(elsewhere)).toBe(false);
});

test("a database or side file with a second name (a hard link) is refused; the other name keeps its mode", () => {
  // A file the test owns stands for root's: linking another user's file needs fs.protected_hardlinks=0.
  for (const side of ["", "-wal"]) {
    const dir = mkdtempSync(join(TMP, "h-"));
    const target = victim();
    const path = join(dir, "audit.db");
    linkSync(target, path + side);
    expect(() => AuditLog.open(path)).toThrow("has 2 names (hard links)");
    expect(mode(target)).toBe("644");
    expect(() => openStateDatabase(path)).toThrow("has 2 names (hard links)");
    expect(mode(target)).toBe("644");
  }
});

test("a side file swapped for a link after its check: the file checked is made 0600, the link's target is not", () => {
  // Before, the files were checked with lstat and changed by path: a link put in place between the two had the chmod
  // follow it to whatever it named.
  const dir = mkdtempSync(join(TMP, "r-"));
  const target = victim();
  const path = join(dir, "audit.db");
  writeFileSync(path, "", { mode: 0o644 });
  writeFileSync(`${path}-wal`, "", { mode: 0o644 });
  restrictSteps.checked = () => {
    renameSync(`${path}-wal`, `${path}-wal.checked`);
    symlinkSync(target, `${path}-wal`);
  };
  try {
    restrictDatabaseFiles(path);
  } finally {
    restrictSteps.checked = null;
  }
  expect(mode(target)).toBe("644");
  expect(mode(`${path}-wal.checked`)).toBe("600");
  expect(mode(path)).toBe("600");
});

test("the check leaves SQLite's locks on an open database in place", () => {
  // Closing a descriptor opened for reading drops every POSIX lock the process holds on the file: another process
  // could then checkpoint and truncate the WAL under a reader of this one (and rebuild its index under a writer).
  const dir = mkdtempSync(join(TMP, "l-"));
  const path = join(dir, "audit.db");
  writeFileSync(path, "", { mode: 0o644 });
  const db = new Database(path);
  try {
    db.exec("PRAGMA journal_mode = WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1)");
    db.exec("BEGIN");
    expect(db.query("SELECT count(*) AS n FROM t").get()).toEqual({ n: 1 });
    restrictDatabaseFiles(path);
    expect(mode(`${path}-wal`)).toBe("600");
    const script =
      `const { Database } = require("bun:sqlite"); const d = new Database(${JSON.stringify(path)});` +
      `d.exec("INSERT INTO t VALUES (2)"); console.log(d.query("PRAGMA wal_checkpoint(TRUNCATE)").get().busy);`;
    const child = Bun.spawnSync([process.execPath, "-e", script]);
    expect(child.stderr.toString()).toBe("");
    // Busy: this process's read lock still holds the WAL.
    expect(child.stdout.toString().trim()).toBe("1");
  } finally {
    db.close();
  }
});
