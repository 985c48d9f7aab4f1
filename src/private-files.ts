/**
 * Files only the proxy's own user may read: the audit log (who mailed whom), the classification cache, the state
 * database, the secrets key, and the databases' SQLite side files. Created 0600 whatever the umask; group and other
 * bits an earlier run left are taken away (docs/audit.md "Files"). Created by root in a folder that belongs to
 * another user, they are given to that user (`giveToFolderOwner`).
 */

import { chmodSync, closeSync, constants, fchmodSync, fchownSync, fstatSync, openSync, statSync } from "node:fs";
import { dirname, resolve } from "node:path";

/** Owner read and write, nothing for group or others. */
export const PRIVATE_FILE_MODE = 0o600;

/** SQLite's companions of a database file in WAL mode (the rollback journal for a file not yet in WAL mode). */
const SQLITE_SIDE_FILES = ["-wal", "-shm", "-journal"] as const;

/**
 * Before SQLite opens `path` for writing: creates it empty with mode 0600 if it is missing (SQLite takes an empty
 * file as an empty database, and creates its -wal and -shm files with the database file's mode), and takes the
 * group and other bits off it and any side file already there. Throws on any failure but "already exists".
 */
export function preparePrivateDatabase(path: string): void {
  let fd: number | null = null;
  try {
    fd = openSync(path, "wx", PRIVATE_FILE_MODE);
    // The umask may have cleared bits of the mode asked for; never added any. fchmod sets exactly 0600.
    fchmodSync(fd, PRIVATE_FILE_MODE);
    giveToFolderOwner(fd, path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
  } finally {
    if (fd !== null) closeSync(fd);
  }
  restrictDatabaseFiles(path);
}

/**
 * Linux's open(2) O_PATH (not in node:fs's constants): a descriptor that names a file without opening it for reading or
 * writing. Closing one leaves the process's POSIX locks on the file alone (they are released by the close of a
 * descriptor opened for I/O only), so SQLite's locks survive it while the database is open.
 */
const O_PATH = 0o10000000;

/** Test hooks between the checks and the mode changes of `restrictDatabaseFiles` (a swap made there must not count). */
export const restrictSteps: { checked: (() => void) | null } = { checked: null };

/**
 * Clears the group and other bits of `path` and its SQLite side files where they exist (0644 becomes 0600). Throws,
 * changing nothing, when one of them is not a regular file: a path that names a folder (`path = "."`, or a folder
 * given where a file name belongs) must be refused, never made 0700; so is a file with more than one name (a hard
 * link). A symbolic link is refused too, never followed: whoever may write the folder (the service user, when root
 * runs a command there) could point `audit.db-wal` at a file of root's, which a chmod through the link would change
 * and SQLite would then write.
 *
 * Each file is held by an O_PATH descriptor opened without following a link, checked through it (fstat), and its mode
 * changed through it (`/proc/self/fd/N` names the very file the descriptor holds): a file swapped for a link after
 * the check is not the one changed. Never a descriptor opened for I/O: this runs while SQLite has the files open, and
 * closing such a descriptor drops every POSIX lock the process holds on the file, SQLite's included (another process
 * then took the WAL index for unused and rebuilt it under this one: `Audit log unavailable` at the next commit).
 */
export function restrictDatabaseFiles(path: string): void {
  inspectDatabaseFiles(path, true);
}

/**
 * The checks of `restrictDatabaseFiles` without its changes, for a command that only reads the database: a link or a
 * second name is refused as by every other, and no mode is changed
 * (docs/operations.md "Commands that only read the state database").
 */
export function checkDatabaseFiles(path: string): void {
  inspectDatabaseFiles(path, false);
}

function inspectDatabaseFiles(path: string, restrict: boolean): void {
  const files = [path, ...SQLITE_SIDE_FILES.map((suffix) => path + suffix)];
  /** Every descriptor opened, closed at the end; `found` holds those of the files checked, with their modes. */
  const fds: number[] = [];
  const found: { fd: number; mode: number }[] = [];
  try {
    for (const file of files) {
      let fd: number;
      try {
        fd = openSync(file, O_PATH | constants.O_NOFOLLOW);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "ENOENT") continue;
        throw e;
      }
      fds.push(fd);
      const stat = fstatSync(fd);
      if (stat.isSymbolicLink()) throw new Error(`${file} is a symbolic link: name the database file itself`);
      if (!stat.isFile()) throw new Error(`${file} is not a regular file`);
      // A second name for the file (a hard link the folder's writer made to a file of root's, where the system lets
      // users link files they do not own: fs.protected_hardlinks=0) would have the chmod below change that file.
      if (stat.nlink > 1)
        throw new Error(`${file} has ${stat.nlink} names (hard links): name a database file of its own`);
      found.push({ fd, mode: stat.mode & 0o777 });
    }
    if (!restrict) return;
    restrictSteps.checked?.();
    for (const { fd, mode } of found) {
      // Group and other bits are taken away; the owner's are left as they are (a write-protected log stays so).
      if ((mode & 0o077) !== 0) chmodSync(`/proc/self/fd/${fd}`, mode & 0o700);
    }
  } finally {
    for (const fd of fds) closeSync(fd);
  }
}

/**
 * Run as root, gives the file just created on `fd` at `file` to the owner and group of its folder when that folder
 * belongs to another user. The folder's owner is the one the service runs as (docs/install.md: the state folder is
 * the service user's), and a 0600 file of root's there is one the service cannot open: `mailgator account login` run
 * as root would otherwise leave a state database and a secrets key that stop the service at its next start. SQLite,
 * run as root, gives the -wal and -shm files it creates the database file's owner. Only a file this process has just
 * created (O_EXCL) is handed over, by its descriptor: never one found in place, which the folder's owner could have
 * made a second link to a file of root's.
 */
export function giveToFolderOwner(fd: number, file: string): void {
  if (process.geteuid?.() !== 0) return;
  const folder = statSync(dirname(resolve(file)));
  if (folder.uid === 0) return;
  fchownSync(fd, folder.uid, folder.gid);
}
