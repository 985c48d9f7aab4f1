/**
 * The SASL mechanisms the proxies log in upstream with for an OAuth2 account (docs/imap.md and docs/smtp.md
 * "OAuth2 accounts"): OAUTHBEARER (RFC 7628) and Google's XOAUTH2, which Microsoft also accepts.
 *
 * Which one: `sasl_mechanism = "auto"` (the default) takes OAUTHBEARER when the server offers both (it is the
 * standard, and its error exchange is specified), XOAUTH2 when only that is offered; "xoauth2" or "oauthbearer"
 * forces one and fails when the server does not offer it.
 */

export type OAuthMechanism = "XOAUTH2" | "OAUTHBEARER";

const SASL_TEXT = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * The text of an agent's SASL response (PLAIN's fields, LOGIN's steps): UTF-8 (RFC 4616 §2), or null. Octets that
 * are not UTF-8 are never read as U+FFFD, which would be a name or password the agent did not send, and go upstream
 * in pass-through mode; a leading BOM is kept as the octets it is. Both listeners decode with it.
 */
export function saslText(bytes: Uint8Array): string | null {
  try {
    return SASL_TEXT.decode(bytes);
  } catch {
    return null;
  }
}
export type MechanismSetting = "auto" | "xoauth2" | "oauthbearer";

/** The mechanism to use given what the server offers (upper-case names), or null when none fits. */
export function chooseOAuthMechanism(
  offered: (name: string) => boolean,
  setting: MechanismSetting,
): OAuthMechanism | null {
  if (setting === "xoauth2") return offered("XOAUTH2") ? "XOAUTH2" : null;
  if (setting === "oauthbearer") return offered("OAUTHBEARER") ? "OAUTHBEARER" : null;
  if (offered("OAUTHBEARER")) return "OAUTHBEARER";
  if (offered("XOAUTH2")) return "XOAUTH2";
  return null;
}

/** RFC 6750 §2.1 b64token: what a Bearer token may be (no spaces, no controls, nothing that could end a field). */
export function isBearerToken(token: string): boolean {
  return /^[A-Za-z0-9\-._~+/]+=*$/.test(token);
}

/**
 * The initial client response, not yet base64: XOAUTH2 is `user=U ^A auth=Bearer T ^A ^A`; OAUTHBEARER is the GS2
 * header `n,a=U,` (RFC 7628 §3.1, the authzid escaped as an RFC 5801 saslname) then `^A auth=Bearer T ^A ^A`.
 * A username or token with a control character or a comma-less injection cannot be sent: throws.
 */
export function oauthInitialResponse(mechanism: OAuthMechanism, username: string, accessToken: string): Uint8Array {
  // RFC 6750 §2.1 b64token: no spaces or controls in a bearer token; no control in the user either.
  if (!isBearerToken(accessToken)) throw new Error("the access token is not an RFC 6750 b64token");
  if (username === "" || /[\x00-\x1f\x7f]/.test(username)) throw new Error("the upstream username cannot be sent");
  const bearer = `\x01auth=Bearer ${accessToken}\x01\x01`;
  const text =
    mechanism === "XOAUTH2"
      ? `user=${username}${bearer}`
      : `n,a=${username.replaceAll("=", "=3D").replaceAll(",", "=2C")},${bearer}`;
  return new TextEncoder().encode(text);
}

/**
 * What the client answers to a server challenge during an OAuth2 login, which only comes when the token was
 * refused (the challenge is base64 JSON: `{"status":"401",...}`): XOAUTH2 answers an empty response (Google's
 * documentation of the mechanism), OAUTHBEARER a single %x01 (RFC 7628 §3.2.3). The server then fails the exchange.
 * Not base64 yet.
 */
export function oauthFailureAnswer(mechanism: OAuthMechanism): Uint8Array {
  return mechanism === "XOAUTH2" ? new Uint8Array(0) : new Uint8Array([0x01]);
}
