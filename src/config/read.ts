/**
 * Reading a config file's text: a regular file of at most MAX_CONFIG_BYTES, valid UTF-8 (docs/config.md "Where the
 * config is read from"). Anything else is a ConfigError, never a hang, an unbounded read or a guess: a FIFO or a
 * device named by mistake (`-c /dev/stdin`, `-c /dev/zero`) would block or fill memory, and bytes that are not UTF-8
 * would be read as U+FFFD, so a rule's glob or a password file's name would silently be another text.
 */

import { closeSync, constants, fstatSync, openSync, readSync } from "node:fs";
import { ConfigError } from "./errors.ts";

/** The largest config file read (1 MiB): some thousands of rules; a larger file is refused, not read in part. */
export const MAX_CONFIG_BYTES = 1024 * 1024;

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** The text of config file `file` (an absolute path); a ConfigError naming the file says why it cannot be. */
export function readConfigText(file: string): string {
  let fd: number;
  try {
    // O_NONBLOCK: opening a FIFO with no writer would otherwise wait for one.
    fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ConfigError(file, [
      { message: code === "ENOENT" ? "file not found" : `cannot read the file (${code ?? String(e)})` },
    ]);
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile())
      throw new ConfigError(file, [{ message: `not a regular file (${kind(stat.mode)}); a config must be a file` }]);
    if (stat.size > MAX_CONFIG_BYTES) throw tooLarge(file);
    // One byte more than the limit is asked for: a file that grew since fstat is refused too, not cut short.
    const buf = Buffer.alloc(Math.min(MAX_CONFIG_BYTES + 1, stat.size + 1));
    let length = 0;
    for (;;) {
      const n = readSync(fd, buf, length, buf.length - length, null);
      if (n === 0) break;
      length += n;
      if (length === buf.length) {
        if (length > MAX_CONFIG_BYTES) throw tooLarge(file);
        break;
      }
    }
    try {
      return utf8.decode(buf.subarray(0, length));
    } catch {
      throw new ConfigError(file, [{ message: "not valid UTF-8 text; a config is read as UTF-8 (TOML v1.0.0)" }]);
    }
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new ConfigError(file, [{ message: `cannot read the file (${code ?? String(e)})` }]);
  } finally {
    closeSync(fd);
  }
}

function tooLarge(file: string): ConfigError {
  return new ConfigError(file, [{ message: `larger than ${MAX_CONFIG_BYTES} bytes (MAX_CONFIG_BYTES); not read` }]);
}

function kind(mode: number): string {
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
