/**
 * Which config file a command reads when `-c` is not given: `MAILGATOR_CONFIG`, then `./mailgator.toml`, then
 * `/etc/mailgator/mailgator.toml`; the first that exists wins (docs/config.md "Where the config is read from").
 */

import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { ConfigError } from "./errors.ts";

export const CONFIG_ENV = "MAILGATOR_CONFIG";
export const LOCAL_CONFIG = "mailgator.toml";
export const SYSTEM_CONFIG = "/etc/mailgator/mailgator.toml";

/**
 * The config file to read. A `-c` value is taken as given (loading it reports a missing file). A set
 * MAILGATOR_CONFIG is taken as given too: a variable naming a file that does not exist is an error, never a
 * reason to fall back to another file. Otherwise the first of ./mailgator.toml and /etc/mailgator/mailgator.toml
 * that exists; none is an error listing where it looked.
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
  if (found !== undefined) return found;
  const looked = ["-c FILE", `${CONFIG_ENV} (not set)`, ...candidates].join(", then ");
  throw new ConfigError("(no config file)", [{ message: `no config given and none found; looked for ${looked}` }]);
}
