/**
 * Files that hold a secret (docs/config.md "Vault mode", docs/accounts.md "What is stored where"): read only when
 * they are private to the process's user, regular, and small.
 */

import { closeSync, constants, fstatSync, openSync, readSync, statfsSync } from "node:fs";

/**
 * The largest secret file (`password_file`, `client_secret_file`, the secrets key file): a password, a client secret
 * or a key is a line, not a document.
 */
export const SECRET_FILE_MAX_BYTES = 64 * 1024;

/**
 * Linux's file systems whose regular files the kernel makes up as they are read (statfs(2) f_type, linux/magic.h):
 * /proc (`/proc/self/environ` is the process's environment, every secret given in a variable included), /sys and
 * the other views of the kernel. Such a file's size says nothing of what it reads, and its text is no secret anyone
 * wrote.
 */
const KERNEL_FILE_SYSTEMS: ReadonlyMap<number, string> = new Map([
  [0x9fa0, "proc"],
  [0x62656572, "sysfs"],
  [0x64626720, "debugfs"],
  [0x74726163, "tracefs"],
  [0x73636673, "securityfs"],
  [0x0027e0eb, "cgroup"],
  [0x63677270, "cgroup2"],
  [0x62656570, "configfs"],
  [0xde5e81e4, "efivarfs"],
  [0xcafe4a11, "bpf"],
  [0x6165676c, "pstore"],
  [0x42494e4d, "binfmt_misc"],
  [0xf97cff8c, "selinuxfs"],
]);

/** Test hook between the checks of `readSecretFile` and its read (a file written to then must be refused). */
export const secretFileSteps: { checked: ((file: string) => void) | null } = { checked: null };

/** The name of the kernel file system the open `fd` is on (KERNEL_FILE_SYSTEMS), else null. */
function kernelFileSystem(fd: number, file: string): string | null {
  let type: number;
  try {
    // The file the descriptor holds, whatever links its path went through: what was opened is what is checked.
    type = statfsSync(`/proc/self/fd/${fd}`).type;
  } catch {
    type = statfsSync(file).type;
  }
  return KERNEL_FILE_SYSTEMS.get(type) ?? null;
}

/**
 * A secret file's text, or why it cannot be one: not a regular file (a FIFO or a device such as /dev/zero would
 * block or never end), a file the kernel makes up as it is read (under /proc or /sys: KERNEL_FILE_SYSTEMS, and any
 * file that reads other than its size, which no stored file does), longer than SECRET_FILE_MAX_BYTES, or readable
 * by group or others, which the secrets key file is refused for too. Opened without blocking and checked with fstat
 * on the open descriptor, so what is read is what was checked; a symbolic link is followed and its target checked.
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
    const kernel = kernelFileSystem(fd, file);
    if (kernel !== null)
      return {
        problem: `${name} is on the kernel's ${kernel} file system: made up as it is read, not a secret file`,
        code: null,
      };
    if (stat.size > SECRET_FILE_MAX_BYTES)
      return { problem: `${name} is larger than ${SECRET_FILE_MAX_BYTES} bytes: not a password or secret`, code: null };
    if ((stat.mode & 0o077) !== 0)
      return {
        problem: `${name} is readable by group or others (mode ${(stat.mode & 0o777).toString(8)}): chmod 600 it`,
        code: null,
      };
    secretFileSteps.checked?.(file);
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
    // A stored file reads its size; one that does not is made up as it is read (a /proc file reads more than its
    // size of 0, a /sys file less than its 4096) on a file system not named above, or was being rewritten.
    if (length !== stat.size)
      return {
        problem:
          `${name} read ${length} bytes where its size is ${stat.size}: a file the kernel makes up as it is read ` +
          "(as under /proc or /sys), or one being written, is not a secret file",
        code: null,
      };
    return buffer.subarray(0, length).toString("utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? null;
    return { problem: `cannot read ${name} (${code ?? "error"})`, code };
  } finally {
    closeSync(fd);
  }
}
