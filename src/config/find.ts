/**
 * Which config file a command reads when `-c` is not given: `MAILGATOR_CONFIG`, then `./mailgator.toml`, then
 * `/etc/mailgator/mailgator.toml`; the first that exists wins (docs/config.md "Where the config is read from").
 */

import { existsSync, lstatSync, type Stats, statSync } from "node:fs";
import { resolve } from "node:path";
import { ConfigError } from "./errors.ts";

export const CONFIG_ENV = "MAILGATOR_CONFIG";
export const LOCAL_CONFIG = "mailgator.toml";
export const SYSTEM_CONFIG = "/etc/mailgator/mailgator.toml";

/**
 * The config file to read. A `-c` value is taken as given (loading it reports a missing file). A set
 * MAILGATOR_CONFIG is taken as given too: a variable naming a file that does not exist is an error, never a
 * reason to fall back to another file. Otherwise the first of ./mailgator.toml and /etc/mailgator/mailgator.toml
 * that exists; none is an error listing where it looked. A file found so (never one named by -c or the variable) is
 * read only when it, and the symbolic link that names it if any, belongs to this process's user or to root and
 * cannot be written by others: `./mailgator.toml` in a folder other users may write (/tmp) could otherwise be theirs,
 * and a config decides which files are read as passwords and where they are sent.
 */
export function findConfig(
  given: string | undefined,
  env: Readonly<Record<string, string | undefined>>,
  cwd = process.cwd(),
  system = SYSTEM_CONFIG,
): string {
  if (given !== undefined && given !== "") return given;
  const fromEnv = env[CONFIG_ENV];
  if (fromEnv !== undefined && fromEnv !== "") {
    if (existsSync(fromEnv)) return fromEnv;
    throw new ConfigError(fromEnv, [{ message: `${CONFIG_ENV} names a file that does not exist` }]);
  }
  const candidates = [resolve(cwd, LOCAL_CONFIG), system];
  const found = candidates.find((path) => existsSync(path));
  if (found !== undefined) {
    const problem = foreignProblem(found);
    if (problem !== null) throw new ConfigError(found, [{ message: problem }]);
    return found;
  }
  const looked = ["-c FILE", `${CONFIG_ENV} (not set)`, ...candidates].join(", then ");
  throw new ConfigError("(no config file)", [{ message: `no config given and none found; looked for ${looked}` }]);
}

/**
 * Why a config file found by the search path must not be read, or null: it (or the link to it) belongs to a user
 * other than this process's and root, or its group or others may write it (docs/config.md "Where the config is read
 * from").
 */
function foreignProblem(path: string): string | null {
  const uid = process.geteuid?.();
  if (uid === undefined) return null;
  const mine = (stat: Stats) => stat.uid === uid || stat.uid === 0;
  const link = lstatSync(path);
  const file = statSync(path);
  const advice = `not read without -c (another user could have put it there); give -c ${path} if it is meant`;
  if (!mine(link) || !mine(file)) {
    const owner = mine(file) ? link.uid : file.uid;
    return `belongs to user ${owner}, not to this user (${uid}) or root: ${advice}`;
  }
  // Its group may be another user's too (a service account's): a member could change what root reads next.
  if ((file.mode & 0o022) !== 0)
    return `can be written by users other than its owner (mode ${(file.mode & 0o777).toString(8)}): ${advice}`;
  return null;
}
