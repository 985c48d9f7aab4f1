/**
 * Reading a small file whole through an open descriptor (the config, the TLS files, the secret files: docs/config.md
 * "Errors"): exactly the size `fstat` gave, or nothing. One byte more than that size is asked for, so that a file
 * that grew since (being written) is refused rather than cut short, and so is one that reads less; a file the kernel
 * makes up as it is read (under /proc or /sys) reads other than its size too.
 */

import { constants, readSync } from "node:fs";

/** The file's `size` bytes, or how many it read instead (`more than SIZE`, or the count) when that differs. */
export function readWhole(fd: number, size: number): Buffer | { readonly read: string } {
  const buf = Buffer.alloc(size + 1);
  let length = 0;
  for (;;) {
    const n = readSync(fd, buf, length, buf.length - length, null);
    if (n === 0 || (length += n) === buf.length) break;
  }
  if (length !== size) return { read: length === buf.length ? `more than ${size}` : String(length) };
  return buf.subarray(0, length);
}

/** What a file that is not a regular one is, in words (`a pipe`, `a character device`). */
export function fileKind(mode: number): string {
  switch (mode & constants.S_IFMT) {
    case constants.S_IFDIR:
      return "a folder";
    case constants.S_IFIFO:
      return "a pipe";
    case constants.S_IFCHR:
      return "a character device";
    case constants.S_IFBLK:
      return "a block device";
    case constants.S_IFSOCK:
      return "a socket";
    default:
      return "not a file";
  }
}
