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
