/**
 * AUTH (RFC 4954) on the agent side: SASL PLAIN (RFC 4616) and LOGIN decoding, and the vault-mode check of an
 * agent's token (docs/config.md "Who connects"). Pass-through logins are checked by the upstream server instead
 * (session.ts).
 */

import { saslText } from "../net/sasl.ts";

export type Mechanism = "PLAIN" | "LOGIN";

export interface LoginAttempt {
  readonly username: string;
  readonly password: string;
  /**
   * A PLAIN response that asked to act as another identity (RFC 4616 §2 authzid): never allowed, so the login fails
   * (docs/config.md "Who connects"), as a wrong password does; not a malformed response.
   */
  readonly otherAuthzid?: true;
}

/** Strict base64 (RFC 4648 §4, padding required); null when the text is not base64. */
export function decodeBase64(text: string): Buffer | null {
  if (text.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) return null;
  return Buffer.from(text, "base64");
}

/**
 * `authzid NUL authcid NUL passwd`; null for a response that is not that, or not UTF-8 (501). An authzid other than
 * the authcid is marked `otherAuthzid`: there is no proxy authorization, so that login fails (535).
 */
export function decodePlain(response: string): LoginAttempt | null {
  const bytes = response === "=" ? Buffer.alloc(0) : decodeBase64(response);
  const text = bytes === null ? null : saslText(bytes);
  if (text === null) return null;
  const parts = text.split("\0");
  if (parts.length !== 3) return null;
  const [authzid, username, password] = parts as [string, string, string];
  if (username === "") return null;
  if (authzid !== "" && authzid !== username) return { username, password, otherAuthzid: true };
  return { username, password };
}

/**
 * One LOGIN step (a base64 user name or password, in UTF-8); null (501) for one that holds a NUL. RFC 4616 §2 allows
 * none in PLAIN's authcid or passwd, and a pass-through login goes upstream as PLAIN (`NUL name NUL password`): a NUL
 * in the name would move the line between name and password, a name and password the agent did not send.
 */
export function decodeLoginStep(response: string): string | null {
  const bytes = response === "=" ? Buffer.alloc(0) : decodeBase64(response);
  const text = bytes === null ? null : saslText(bytes);
  return text === null || text.includes("\0") ? null : text;
}
