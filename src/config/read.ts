/**
 * Reading a config file's text: a regular file of at most MAX_CONFIG_BYTES, valid UTF-8 (docs/config.md "Where the
 * config is read from"). Anything else is a ConfigError, never a hang, an unbounded read or a guess: a FIFO or a
 * device named by mistake (`-c /dev/stdin`, `-c /dev/zero`) would block or fill memory, and bytes that are not UTF-8
 * would be read as U+FFFD, so a rule's glob or a password file's name would silently be another text.
 */

import { closeSync, constants, fstatSync, lstatSync, openSync, type Stats } from "node:fs";
import { fileKind, readWhole } from "../runtime/whole-file.ts";
import { ConfigError } from "./errors.ts";

/** Test hook between the checks of `readConfigText` and its read (a file that changes then must be refused). */
export const configReadSteps: { checked: ((file: string) => void) | null } = { checked: null };

/** The largest config file read (1 MiB): some thousands of rules; a larger file is refused, not read in part. */
export const MAX_CONFIG_BYTES = 1024 * 1024;

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * The text of config file `file` (an absolute path); a ConfigError naming the file says why it cannot be. With
 * `ownedOnly` (a file the search path found, find.ts), the owner and mode are those of the file actually opened
 * (`fstat` of the descriptor read from, `ownerProblem`), and the name must still name what was checked once it is
 * open: checking by name and then opening by name would read whatever replaced the file in between.
 */
export function readConfigText(file: string, ownedOnly = false): string {
  return readConfigFile(file, ownedOnly).text;
}

/** As readConfigText, with the mode bits of the file read (its `fstat`: what loadConfig warns of, load.ts). */
export function readConfigFile(file: string, ownedOnly = false): { readonly text: string; readonly mode: number } {
  let fd: number;
  let link: Stats | null = null;
  try {
    if (ownedOnly) link = lstatSync(file);
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
    if (link !== null) {
      const problem = ownerProblem(file, link.isSymbolicLink() ? link : null, stat);
      if (problem !== null) throw new ConfigError(file, [{ message: problem }]);
      // The name still names what was checked: the same link, or the same file when it is no link.
      const now = lstatSync(file);
      const checked = link.isSymbolicLink() ? link : stat;
      if (now.dev !== checked.dev || now.ino !== checked.ino)
        throw new ConfigError(file, [{ message: "replaced while it was being opened; not read" }]);
    }
    if (!stat.isFile())
      throw new ConfigError(file, [
        { message: `not a regular file (${fileKind(stat.mode)}); a config must be a file` },
      ]);
    if (stat.size > MAX_CONFIG_BYTES) throw tooLarge(file);
    configReadSteps.checked?.(file);
    // A file that grew since fstat (past the limit or not) is refused, not cut short at the size fstat gave, and so is
    // one that reads less (being rewritten, or made up by the kernel).
    const whole = readWhole(fd, stat.size);
    if (!Buffer.isBuffer(whole)) {
      throw new ConfigError(file, [
        {
          message:
            `read ${whole.read} bytes where its size is ${stat.size}: changed while it was read (or made up by the ` +
            "kernel as it is read); not read",
        },
      ]);
    }
    try {
      return { text: utf8.decode(whole), mode: stat.mode };
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

/**
 * Why a config file found by the search path must not be read, or null: `file` (the file itself), or `link` (the
 * symbolic link that names it, if any), belongs to a user other than this process's and root, or its group or
 * others may write it (docs/config.md "Where the config is read from").
 */
export function ownerProblem(path: string, link: Stats | null, file: Stats): string | null {
  const uid = process.geteuid?.();
  if (uid === undefined) return null;
  const mine = (stat: Stats) => stat.uid === uid || stat.uid === 0;
  const advice = `not read without -c (another user could have put it there); give -c ${path} if it is meant`;
  if (!mine(file)) return `belongs to user ${file.uid}, not to this user (${uid}) or root: ${advice}`;
  if (link !== null && !mine(link)) return `belongs to user ${link.uid}, not to this user (${uid}) or root: ${advice}`;
  // Its group may be another user's too (a service account's): a member could change what root reads next.
  if ((file.mode & 0o022) !== 0)
    return `can be written by users other than its owner (mode ${(file.mode & 0o777).toString(8)}): ${advice}`;
  return null;
}

/** Why a text past MAX_CONFIG_BYTES is refused: a file here, and a text validate_config is given (src/mcp/admin.ts). */
export const TOO_LARGE = `larger than ${MAX_CONFIG_BYTES} bytes (MAX_CONFIG_BYTES); not read`;

function tooLarge(file: string): ConfigError {
  return new ConfigError(file, [{ message: TOO_LARGE }]);
}
