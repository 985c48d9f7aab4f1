/**
 * The key that seals records in the state database (docs/accounts.md "What is stored where"): 32 random bytes, from
 * the environment variable MAILGATOR_SECRETS_KEY (base64) or from the secrets file, which is created 0600 on first
 * use. A key is never created while sealed records exist: they were sealed with another key, and a fresh one would
 * silently orphan them (and with them every OAuth2 login).
 */

import { randomBytes } from "node:crypto";
import { closeSync, constants, fchmodSync, fsyncSync, linkSync, openSync, rmSync, writeSync } from "node:fs";
import { basename, dirname } from "node:path";
import { giveToFolderOwner } from "../private-files.ts";
import { removeLeftovers } from "../runtime/leftovers.ts";
import { readSecretFile } from "../runtime/secret-file.ts";

export const SECRETS_KEY_ENV = "MAILGATOR_SECRETS_KEY";
/** AES-256: 32 bytes. */
export const KEY_BYTES = 32;

/** A key that is missing, malformed, too widely readable or not the one that sealed the records: startup stops. */
export class SecretsKeyError extends Error {
  override name = "SecretsKeyError";
}

export interface KeySource {
  /** The secrets file (created when allowed and missing). */
  readonly file: string;
  readonly env: Readonly<Record<string, string | undefined>>;
  /** False when sealed records exist, or when the caller only reads: a missing key is then an error. */
  readonly mayCreate: boolean;
}

function decode(text: string, where: string): Buffer {
  const trimmed = text.trim();
  const key = Buffer.from(trimmed, "base64");
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(trimmed) || key.length !== KEY_BYTES)
    throw new SecretsKeyError(`${where}: expected ${KEY_BYTES} bytes in base64 (44 characters), got something else`);
  return key;
}

/** The secrets file is missing (and the environment gives no key) where no key may be created. */
export class SecretsKeyMissing extends SecretsKeyError {
  override name = "SecretsKeyMissing";
}

/** Reads (or creates) the key; throws SecretsKeyError with a sentence a person can act on. */
export function loadSecretsKey(source: KeySource): Buffer {
  const fromEnv = source.env[SECRETS_KEY_ENV];
  if (fromEnv !== undefined && fromEnv !== "") return decode(fromEnv, SECRETS_KEY_ENV);
  removeKeyLeftovers(source.file);
  return readOrCreate(source);
}

/**
 * Removes what a process stopped inside `createKeyFile` (killed, or the machine lost power, between writing the
 * temporary file and removing it) left beside `file`: files named `<name>.<pid>.tmp`, each a copy of a key, under the
 * rules of src/runtime/leftovers.ts (a regular file, written before this process started, by a process that is gone
 * or by an earlier one with this pid). A process creating its key now has its own pid and writes after this one
 * started, so its file is never taken. A folder that cannot be listed, or a file that cannot be removed, is left as
 * it is: the key itself is still read as usual.
 */
function removeKeyLeftovers(file: string): void {
  removeLeftovers(dirname(file), [{ prefix: `${basename(file)}.`, tail: /\.tmp/ }]);
}

function readOrCreate(source: KeySource): Buffer {
  // A symbolic link is followed (secret stores mount files that way); the file checked is the target (a regular
  // file, small, private to this user: src/runtime/secret-file.ts).
  const read = readSecretFile(source.file);
  if (typeof read === "string") return decode(read, source.file);
  if (read.code !== "ENOENT") throw new SecretsKeyError(`the secrets file: ${read.problem}`);
  if (!source.mayCreate)
    throw new SecretsKeyMissing(
      `the secrets file ${source.file} is missing and ${SECRETS_KEY_ENV} is not set, but the state database holds ` +
        `sealed records: restore the file (or set ${SECRETS_KEY_ENV}); a new key could not open them`,
    );
  return createKeyFile(source.file);
}

/**
 * Writes a new key under a temporary name (O_EXCL, 0600, synced), then links it to `file`: the key file appears
 * whole or not at all. A process that finds `file` there (EEXIST: another one starting at the same moment won) reads
 * that key, so two processes cannot each use a different one; and a write that fails (a full disk) or a process
 * stopped in the middle leaves no empty key file that every later start would refuse. On a file system without hard
 * links, the key file itself is created with O_EXCL and written.
 */
function createKeyFile(file: string): Buffer {
  const key = randomBytes(KEY_BYTES);
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    writeKeyFile(tmp, key, true);
    let linked = false;
    try {
      linkSync(tmp, file);
      linked = true;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "EEXIST") return readOrCreate({ file, env: {}, mayCreate: false });
      if (code !== "EPERM" && code !== "ENOTSUP" && code !== "EOPNOTSUPP" && code !== "ENOSYS") throw e;
    }
    if (linked) {
      syncFolder(file);
      return key;
    }
    try {
      writeKeyFile(file, key, false);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "EEXIST") return readOrCreate({ file, env: {}, mayCreate: false });
      throw e;
    }
    syncFolder(file);
    return key;
  } catch (e) {
    if (e instanceof SecretsKeyError) throw e;
    const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    throw new SecretsKeyError(`cannot create the secrets file ${file} (${code})`);
  } finally {
    rmSync(tmp, { force: true });
  }
}

/**
 * Syncs the folder of the key file just linked or created: its name is an entry of that folder, which the file's own
 * fsync does not make durable (fsync(2)). Records are sealed with the key as soon as it is returned, in a database
 * committed with synchronous = FULL; without this, power lost soon after could keep them and lose the key's name, and
 * with it every held message and OAuth2 token. A failure is the creation's failure (SecretsKeyError: this process
 * seals nothing with it; the file stays, for another process may have read it already). A file system that cannot
 * sync a folder at all (EINVAL) is left as it is.
 */
function syncFolder(file: string): void {
  try {
    const fd = openSync(dirname(file), constants.O_RDONLY | constants.O_DIRECTORY);
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch (e) {
    // EINVAL: a file system whose folders cannot be synced (fsync(2)); nothing more can be done there.
    if ((e as NodeJS.ErrnoException).code === "EINVAL") return;
    throw e;
  }
}

/**
 * Creates `file` (O_EXCL, never through a symbolic link) holding the key, mode 0600 whatever the umask, synced. With
 * `replace`, whatever had the name before (a leftover of a process with the same pid) is removed first; without it,
 * a half-written file is removed when writing fails.
 */
function writeKeyFile(file: string, key: Buffer, replace: boolean): void {
  if (replace) rmSync(file, { force: true });
  const fd = openSync(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    fchmodSync(fd, 0o600); // whatever the umask
    // Run as root in the service user's folder: the key is the service's to read (src/private-files.ts).
    giveToFolderOwner(fd, file);
    writeSync(fd, `${key.toString("base64")}\n`);
    fsyncSync(fd);
  } catch (e) {
    if (!replace) rmSync(file, { force: true });
    throw e;
  } finally {
    closeSync(fd);
  }
}
