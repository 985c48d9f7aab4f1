/**
 * Which config keys hold a secret, by name, so that a key added later is covered too (docs/mcp.md "Secrets",
 * docs/config.md "Errors"): a key whose name contains "password", "secret" or "token" (`password`,
 * `client_secret`, `token_hash`, ...), except a reference to a secret (a key ending in `_env` or `_file`, which
 * names a variable or a file) and the keys in PUBLIC_KEYS, which name no secret (`token_url` is an endpoint).
 */

/** Keys whose names look like a secret's but are not one. */
const PUBLIC_KEYS: ReadonlySet<string> = new Set(["token_url"]);

export function isSecretKey(key: string): boolean {
  const k = key.toLowerCase();
  if (PUBLIC_KEYS.has(k) || k.endsWith("_env") || k.endsWith("_file")) return false;
  return k.includes("password") || k.includes("secret") || k.includes("token");
}

/** The longest environment variable name a `_env` key may give (no real name comes near it). */
export const ENV_NAME_MAX = 255;

const ENV_NAME = new RegExp(`^[A-Za-z_][A-Za-z0-9_]{0,${ENV_NAME_MAX - 1}}$`);

/**
 * Whether a `_env` key's value is an environment variable's name (POSIX's portable form: letters, digits and `_`,
 * not starting with a digit). Anything else is most likely the secret itself written in the wrong key, and is
 * treated as one: refused by the loader without being quoted, redacted by the admin tools (docs/config.md).
 */
export function isEnvName(value: string): boolean {
  return ENV_NAME.test(value);
}

/** A word that could be a key or a part of a dotted or quoted one. */
const WORD = /[A-Za-z0-9_-]+/g;

/**
 * Whether config text names a secret anywhere (a word that isSecretKey takes as a secret's key). A TOML syntax error
 * quotes the lines around it, and which of them hold a secret's value cannot be told from the lines alone: the
 * error is often in that value's own line (an unclosed quote, a missing `=`), a multi-line string puts it on lines
 * without its key, and a quoted key may hold anything. So a file that names one gets no quoted lines in its errors,
 * only their line and column (docs/config.md "Errors").
 */
export function namesSecret(text: string): boolean {
  for (const t of [text, unescaped(text)]) for (const m of t.matchAll(WORD)) if (isSecretKey(m[0])) return true;
  return false;
}

/**
 * `text` with the escapes of TOML's basic strings that spell a character by its number decoded (`\uXXXX`,
 * `\UXXXXXXXX`, and TOML 1.1's `\xHH`), so that a quoted key written with them (`"pass\u0077ord"`, which is
 * `password`) is seen as the word it is.
 */
function unescaped(text: string): string {
  return text.replace(/\\(?:u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|x([0-9a-fA-F]{2}))/g, (written, u, U, x) => {
    const code = Number.parseInt(u ?? U ?? x, 16);
    return code <= 0x10ffff ? String.fromCodePoint(code) : written;
  });
}
