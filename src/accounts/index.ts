/**
 * Upstream credentials per account (docs/accounts.md). The proxies create one AccountCredentials at startup
 * (`openAccountCredentials`) and, for each vault-mode login upstream:
 *
 *   const credential = await credentials.credentialFor(agent.account);
 *   // { kind: "password", username, password } → LOGIN / AUTH PLAIN as before
 *   // { kind: "oauth2", username, accessToken } → SASL XOAUTH2 or OAUTHBEARER (RFC 7628)
 *
 * credentialFor never returns an expired access token. It throws AccountNeedsReauthorization (the grant was revoked;
 * the message names `mailgator account login NAME`) or AccountTemporarilyUnavailable (the token endpoint is down;
 * retried with backoff): the proxies answer the agent with a temporary failure in the words of `agentReason(error)`,
 * never the message, which holds the token endpoint's answer and is for the owner's log and audit. When the
 * upstream refuses an access token that had not expired, call `reportRejected(account, token)` and ask again once:
 * the next credentialFor fetches a new token. Refreshes are single-flight per account and happen ahead of expiry.
 */

export type { Credential, CredentialsOptions } from "./credentials.ts";
export { AccountCredentials } from "./credentials.ts";
export { AccountNeedsReauthorization, AccountTemporarilyUnavailable, agentReason } from "./errors.ts";
export { accountLoginKey, reloadEndReason, type SessionLogin } from "./identity.ts";
export { openAccountCredentials } from "./open.ts";
