/**
 * Files that hold a secret (docs/config.md "Vault mode", docs/accounts.md "What is stored where"): read only when
 * they are private to the process's user, regular, and small.
 */

import { closeSync, constants, fstatSync, openSync, readSync } from "node:fs";

/**
 * The largest secret file (`password_file`, `client_secret_file`, the secrets key file): a password, a client secret
 * or a key is a line, not a document.
 */
export const SECRET_FILE_MAX_BYTES = 64 * 1024;

/**
 * A secret file's text, or why it cannot be one: not a regular file (a FIFO or a device such as /dev/zero would
 * block or never end), longer than SECRET_FILE_MAX_BYTES, or readable by group or others, which the secrets key file
 * is refused for too. Opened without blocking and checked with fstat on the open descriptor, so
 * what is read is what was checked; a symbolic link is followed and its target checked.
 */
export function readSecretFile(file: string): string | { problem: string; code: string | null } {
  const name = JSON.stringify(file);
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? null;
    return { problem: `cannot read ${name} (${code ?? "error"})`, code };
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) return { problem: `${name} is not a regular file`, code: null };
    if (stat.size > SECRET_FILE_MAX_BYTES)
      return { problem: `${name} is larger than ${SECRET_FILE_MAX_BYTES} bytes: not a password or secret`, code: null };
    if ((stat.mode & 0o077) !== 0)
      return {
        problem: `${name} is readable by group or others (mode ${(stat.mode & 0o777).toString(8)}): chmod 600 it`,
        code: null,
      };
    // Read at most one byte past the limit, in case the file grew since fstat.
    const buffer = Buffer.alloc(SECRET_FILE_MAX_BYTES + 1);
    let length = 0;
    for (;;) {
      const n = readSync(fd, buffer, length, buffer.length - length, null);
      if (n === 0) break;
      length += n;
      if (length === buffer.length)
        return {
          problem: `${name} is larger than ${SECRET_FILE_MAX_BYTES} bytes: not a password or secret`,
          code: null,
        };
    }
    return buffer.subarray(0, length).toString("utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? null;
    return { problem: `cannot read ${name} (${code ?? "error"})`, code };
  } finally {
    closeSync(fd);
  }
}
