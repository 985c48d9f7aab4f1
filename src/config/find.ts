/**
 * Which config file a command reads when `-c` is not given: `MAILGATOR_CONFIG`, then `./mailgator.toml`, then
 * `/etc/mailgator/mailgator.toml`; the first that exists wins (docs/config.md "Where the config is read from").
 */

import { existsSync, lstatSync, statSync } from "node:fs";
import { resolve } from "node:path";
import { ConfigError } from "./errors.ts";
import { ownerProblem } from "./read.ts";

export const CONFIG_ENV = "MAILGATOR_CONFIG";
export const LOCAL_CONFIG = "mailgator.toml";
export const SYSTEM_CONFIG = "/etc/mailgator/mailgator.toml";

/** Which file to read, and how (`loadConfig` and `readConfigText` take it). */
export interface ConfigLocation {
  readonly path: string;
  /**
   * Found by the search path, not named by -c or MAILGATOR_CONFIG: read only when `ownerProblem` (read.ts) finds
   * none in the file opened, each time it is read (a reload too).
   */
  readonly ownedOnly: boolean;
}

/**
 * The config file to read. A `-c` value is taken as given (loading it reports a missing file); an empty one is an
 * error, never the search path. A set
 * MAILGATOR_CONFIG is taken as given too: a variable naming a file that does not exist is an error, never a
 * reason to fall back to another file. Otherwise the first of ./mailgator.toml and /etc/mailgator/mailgator.toml
 * that exists; none is an error listing where it looked. A file found so (never one named by -c or the variable) is
 * read only when it, and the symbolic link that names it if any, belongs to this process's user or to root and
 * cannot be written by others: `./mailgator.toml` in a folder other users may write (/tmp) could otherwise be theirs,
 * and a config decides which files are read as passwords and where they are sent. That is checked here, for an
 * early error, and again on the file actually opened when it is read (`ownedOnly`).
 */
export function findConfig(
  given: string | undefined,
  env: Readonly<Record<string, string | undefined>>,
  cwd = process.cwd(),
  system = SYSTEM_CONFIG,
): ConfigLocation {
  // An empty -c names no file: read as "not given", `-c "$CONFIG"` with the variable unset in a script would act
  // on ./mailgator.toml or the system file instead (approve a held message, reload a serve) without a word.
  if (given === "")
    throw new ConfigError("(no config file)", [{ message: "-c names no file (an empty value): give -c FILE" }]);
  if (given !== undefined) return { path: given, ownedOnly: false };
  const fromEnv = env[CONFIG_ENV];
  if (fromEnv !== undefined && fromEnv !== "") {
    if (existsSync(fromEnv)) return { path: fromEnv, ownedOnly: false };
    throw new ConfigError(fromEnv, [{ message: `${CONFIG_ENV} names a file that does not exist` }]);
  }
  const candidates = [resolve(cwd, LOCAL_CONFIG), system];
  const found = candidates.find((path) => existsSync(path));
  if (found !== undefined) {
    const link = lstatSync(found);
    const problem = ownerProblem(found, link.isSymbolicLink() ? link : null, statSync(found));
    if (problem !== null) throw new ConfigError(found, [{ message: problem }]);
    return { path: found, ownedOnly: true };
  }
  const looked = ["-c FILE", `${CONFIG_ENV} (not set)`, ...candidates].join(", then ");
  throw new ConfigError("(no config file)", [{ message: `no config given and none found; looked for ${looked}` }]);
}
