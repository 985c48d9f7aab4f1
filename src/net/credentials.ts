/**
 * Sizes of the credentials an agent logs in with, on both listeners (docs/config.md "Who connects"). RFC 4616 §2
 * has servers accept an authentication identity and a password of up to 255 octets each; an agent's token is far
 * shorter, and a pass-through login's name and password go to the upstream server, which refuses or breaks on
 * kilobytes of them (Dovecot answers a 60 KB `AUTHENTICATE PLAIN` line as a broken session). Past these the login
 * fails here, as a wrong password does, and nothing goes upstream.
 */

/** Octets of a login name (LOGIN's user name, SASL PLAIN's or LOGIN's authentication identity). */
export const MAX_LOGIN_NAME_BYTES = 255;

/**
 * Octets of a password or token: in pass-through mode it is the upstream's password, which for a server that takes
 * OAuth2 access tokens as passwords (Dovecot's oauth2 passdb, for one) is a token of 1 to 3 KB; 4 KiB keeps them
 * and an SMTP `AUTH PLAIN` line within MAX_COMMAND_LINE.
 */
export const MAX_LOGIN_PASSWORD_BYTES = 4096;

/** Why these credentials are refused for their size, or null when they are within the limits. */
export function overlongCredentials(username: string, password: string): string | null {
  if (Buffer.byteLength(username) > MAX_LOGIN_NAME_BYTES) return `login name over ${MAX_LOGIN_NAME_BYTES} octets`;
  if (Buffer.byteLength(password) > MAX_LOGIN_PASSWORD_BYTES) return `password over ${MAX_LOGIN_PASSWORD_BYTES} octets`;
  return null;
}
