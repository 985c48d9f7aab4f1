/**
 * What the admin MCP tools may show of a config (docs/mcp.md "Admin tools", "Secrets"). The rule, by key name over
 * the whole parsed file so that a key added later is covered too (isSecretKey, src/config/secret-keys.ts):
 * - a key whose name contains "password", "secret" or "token" holds a secret and its value is replaced by
 *   `REDACTED` (`password`, `client_secret`, `token_hash`, ...);
 * - except a reference to a secret, a key ending in `_env` or `_file` (`password_env`, `client_secret_file`,
 *   `secrets_file`): it is shown as written, the variable's name or the file's path; the admin tools never read the
 *   variable or the file;
 * - and except keys that name no secret (`token_url` is an OAuth2 endpoint).
 * A URL with a user name or password in it (`https://user:pass@host/`) has them replaced too.
 * On top of that, every tool result is scrubbed of each secret value the file holds inline or names by `_env`
 * (`scrubber`), so that an error message quoting a value cannot carry it out either.
 */

import { isSecretKey } from "../config/secret-keys.ts";

/** The value shown instead of a secret. */
export const REDACTED = "[redacted]";

/** Secret values shorter than this are not searched for in free text (they would mangle it); keys still hide them. */
export const SCRUB_MIN_LENGTH = 4;

const URL_CREDENTIALS = /^([a-z][a-z0-9+.-]*:\/\/)[^/@\s]*@/i;

/**
 * A copy of parsed TOML data with every secret replaced by REDACTED (the rule above). The TOML parser gives tables
 * without a prototype, literal objects have Object's; both are walked. A date is shown as it is; any other kind of
 * object is not a TOML value this rule knows, so it is replaced whole rather than shown unread.
 */
export function redact(value: unknown, key: string | null = null): unknown {
  if (key !== null && isSecretKey(key)) return REDACTED;
  if (typeof value === "string") return value.replace(URL_CREDENTIALS, `$1${REDACTED}@`);
  if (Array.isArray(value)) return value.map((v) => redact(v));
  if (value === null || typeof value !== "object" || value instanceof Date) return value;
  const proto = Object.getPrototypeOf(value);
  if (proto !== null && proto !== Object.prototype) return REDACTED;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = redact(v, k);
  return out;
}

/**
 * Every secret string in parsed TOML data: the values under secret keys, the values of the environment variables that
 * `_env` keys name, and the credentials of URLs.
 */
export function secretStrings(value: unknown, env: Readonly<Record<string, string | undefined>>): string[] {
  const found = new Set<string>();
  const walk = (v: unknown, key: string | null): void => {
    if (typeof v === "string") {
      if (key !== null && isSecretKey(key)) found.add(v);
      else if (key?.toLowerCase().endsWith("_env") && isSecretKey(key.slice(0, -4))) {
        const named = env[v];
        if (named !== undefined) found.add(named);
      }
      const userinfo = /^[a-z][a-z0-9+.-]*:\/\/([^/@\s]*)@/i.exec(v)?.[1];
      if (userinfo) for (const part of [userinfo, ...userinfo.split(":")]) found.add(part);
      return;
    }
    if (typeof v === "number" || typeof v === "bigint") {
      if (key !== null && isSecretKey(key)) found.add(String(v));
      return;
    }
    if (Array.isArray(v)) for (const item of v) walk(item, key);
    else if (v !== null && typeof v === "object") for (const [k, item] of Object.entries(v)) walk(item, k);
  };
  walk(value, null);
  return [...found].filter((s) => s.length >= SCRUB_MIN_LENGTH).sort((a, b) => b.length - a.length);
}

/** A function that replaces each of `secrets` in a text by REDACTED. */
export function scrubber(secrets: readonly string[]): (text: string) => string {
  return (text) => {
    let out = text;
    for (const s of secrets) out = out.split(s).join(REDACTED);
    // A secret may also appear JSON-escaped in a tool result (quotes, backslashes).
    for (const s of secrets) {
      const escaped = JSON.stringify(s).slice(1, -1);
      if (escaped !== s) out = out.split(escaped).join(REDACTED);
    }
    return out;
  };
}
