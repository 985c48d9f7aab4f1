/**
 * Agent tokens for vault mode (docs/config.md "Vault mode"). A token is 32 random bytes in
 * base64url behind a `mgt_` prefix (so it is recognisable in a leaked file);
 * the config stores only `sha256:<hex>` of it. A plain hash is enough because
 * the token has 256 bits of entropy: there is nothing to brute-force.
 */

import { createHash, randomBytes, timingSafeEqual } from "node:crypto";

export const TOKEN_PREFIX = "mgt_";

export function generateToken(): string {
  return TOKEN_PREFIX + randomBytes(32).toString("base64url");
}

export function hashToken(token: string): string {
  return `sha256:${createHash("sha256").update(token, "utf8").digest("hex")}`;
}

/** Constant-time comparison of a presented token against a stored hash. */
export function verifyToken(token: string, storedHash: string): boolean {
  const presented = Buffer.from(hashToken(token));
  const stored = Buffer.from(storedHash);
  return presented.length === stored.length && timingSafeEqual(presented, stored);
}

/** What the audit log and the log record instead of a login name that is an agent token (`recordedLoginName`). */
export const TOKEN_AS_LOGIN_NAME = "mgt_REDACTED";

/**
 * A failed login's name as the audit row and the log line record it (docs/config.md "Who connects"): a name that is
 * an agent token (fields swapped, or a client that sends its token as the user name) is replaced, since a token is
 * never written there (docs/audit.md). A token is recognised by its prefix, in any case, or by being one of
 * `tokenHashes`.
 */
export function recordedLoginName<T extends string | null>(name: T, tokenHashes: readonly string[] = []): T {
  if (name === null) return name;
  if (name.slice(0, TOKEN_PREFIX.length).toLowerCase() === TOKEN_PREFIX) return TOKEN_AS_LOGIN_NAME as T;
  if (tokenHashes.length > 0) {
    const hash = hashToken(name);
    if (tokenHashes.includes(hash)) return TOKEN_AS_LOGIN_NAME as T;
  }
  return name;
}
