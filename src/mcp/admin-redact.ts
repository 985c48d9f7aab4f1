/**
 * What the admin MCP tools may show of a config (docs/mcp.md "Admin tools", "Secrets"). The rule, by key name over
 * the whole parsed file so that a key added later is covered too (isSecretKey, src/config/secret-keys.ts):
 * - a key whose name contains "password", "secret" or "token" holds a secret and its value is replaced by
 *   `REDACTED` (`password`, `client_secret`, `token_hash`, ...);
 * - except a reference to a secret, a key ending in `_env` or `_file` (`password_env`, `client_secret_file`,
 *   `secrets_file`): it is shown as written, the variable's name or the file's path; the admin tools never read the
 *   variable or the file. A `_env` value that is no variable's name (isEnvName) is taken for a secret written in
 *   the wrong key and redacted;
 * - and except keys that name no secret (`token_url` is an OAuth2 endpoint).
 * A URL with a user name or password in it (`https://user:pass@host/`) has them replaced too.
 * A key the config does not know at its place (configSchema, src/config/schema.ts) is replaced whole, whatever its
 * name: a misspelled `pasword` or `client_secert` (the very mistake that makes the file invalid) or a table the
 * config has not holds a value no rule above can tell to be a secret or not, so it is not shown (fail closed).
 * On top of that, every tool result is scrubbed of each secret value the file holds inline or names by `_env`
 * (`scrubber`), so that an error message quoting a value cannot carry it out either.
 */

import { configSchema } from "../config/schema.ts";
import { isEnvName, isSecretKey } from "../config/secret-keys.ts";

/** The value shown instead of a secret. */
export const REDACTED = "[redacted]";

/** Secret values shorter than this are not searched for in free text (they would mangle it); keys still hide them. */
export const SCRUB_MIN_LENGTH = 4;

const URL_CREDENTIALS = /^([a-z][a-z0-9+.-]*:\/\/)[^/@\s]*@/i;

/**
 * What the config takes at a place, read from its valibot schema (src/config/schema.ts): a table with known keys, a
 * table of names (`[accounts.NAME]`), a list, or a value that is none of these (LEAF). UNKNOWN: a key the config does
 * not take there.
 */
interface Shape {
  readonly type: string;
  readonly wrapped?: Shape;
  readonly entries?: Readonly<Record<string, Shape>>;
  readonly value?: Shape;
  readonly item?: Shape;
  readonly options?: readonly Shape[];
}
const LEAF: Shape = { type: "leaf" };
const UNKNOWN = null;
const CONFIG_SHAPE = configSchema as unknown as Shape;

function unwrap(shape: Shape): Shape {
  let s = shape;
  while (s.type === "optional" && s.wrapped !== undefined) s = s.wrapped;
  return s;
}

/** The shape of `key` in a table of `shape`, or UNKNOWN. */
function fieldShape(shape: Shape, key: string): Shape | typeof UNKNOWN {
  const s = unwrap(shape);
  if (s.type === "strict_object" || s.type === "object")
    return s.entries !== undefined && Object.hasOwn(s.entries, key) ? s.entries[key]! : UNKNOWN;
  if (s.type === "record") return s.value ?? UNKNOWN;
  if (s.type === "union")
    for (const o of s.options ?? []) {
      const t = unwrap(o).type;
      if (t === "strict_object" || t === "object" || t === "record") return fieldShape(o, key);
    }
  return UNKNOWN;
}

/** The shape of an item of a list of `shape`: a list where the config takes none holds values (LEAF). */
function itemShape(shape: Shape): Shape {
  const s = unwrap(shape);
  if (s.type === "array") return s.item ?? LEAF;
  if (s.type === "union") for (const o of s.options ?? []) if (unwrap(o).type === "array") return itemShape(o);
  return LEAF;
}

/** A `_env` key's string value that is no variable's name: the secret itself, most likely (isEnvName). */
function misplacedSecret(key: string | null, value: unknown): boolean {
  return typeof value === "string" && key?.toLowerCase().endsWith("_env") === true && !isEnvName(value);
}

/**
 * A copy of parsed TOML data with every secret replaced by REDACTED (the rule above), `shape` being what the config
 * takes at the value's place (the whole file by default). The TOML parser gives tables without a prototype, literal
 * objects have Object's; both are walked. A date is shown as it is; any other kind of object is not a TOML value
 * this rule knows, so it is replaced whole rather than shown unread.
 */
export function redact(value: unknown, key: string | null = null, shape: Shape | null = CONFIG_SHAPE): unknown {
  if (key !== null && isSecretKey(key)) return REDACTED;
  if (shape === UNKNOWN || misplacedSecret(key, value)) return REDACTED;
  if (typeof value === "string") return value.replace(URL_CREDENTIALS, `$1${REDACTED}@`);
  if (Array.isArray(value)) return value.map((v) => redact(v, null, itemShape(shape)));
  if (value === null || typeof value !== "object" || value instanceof Date) return value;
  const proto = Object.getPrototypeOf(value);
  if (proto !== null && proto !== Object.prototype) return REDACTED;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = redact(v, k, fieldShape(shape, k));
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
      if ((key !== null && isSecretKey(key)) || misplacedSecret(key, v)) found.add(v);
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
