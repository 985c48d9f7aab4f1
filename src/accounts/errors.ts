/**
 * Why an account has no credential to give: the two failures the proxies turn into a temporary refusal for the agent
 * (docs/accounts.md "When an account needs re-authorization"). Messages never hold a token.
 */

/** The provider refused the stored grant (revoked, expired, password changed): a person must log in again. */
export class AccountNeedsReauthorization extends Error {
  override name = "AccountNeedsReauthorization";
  readonly account: string;
  constructor(account: string, why: string) {
    super(`account ${account} needs re-authorization (${why}): run \`mailgator account login ${account}\``);
    this.account = account;
  }
}

/** The token endpoint cannot be reached or failed (network, 5xx, 429): retried with backoff, the token is kept. */
export class AccountTemporarilyUnavailable extends Error {
  override name = "AccountTemporarilyUnavailable";
  readonly account: string;
  /** ms since epoch of the next attempt. */
  readonly retryAt: number;
  constructor(account: string, why: string, retryAt: number) {
    super(`account ${account}: cannot get an access token (${why}); retrying`);
    this.account = account;
    this.retryAt = retryAt;
  }
}

/**
 * What an agent is told when its account has no credential to give (docs/imap.md, docs/smtp.md "OAuth2 accounts"):
 * that its owner must log in again, or to come back later. Never the token endpoint's own answer (its error code and
 * description are the owner's: the audit log, `mailgator account status`). Null for any other error.
 */
export function agentReason(error: unknown): string | null {
  if (error instanceof AccountNeedsReauthorization)
    return `Account ${error.account} needs re-authorization by its owner (mailgator account login ${error.account})`;
  if (error instanceof AccountTemporarilyUnavailable) return "Upstream login temporarily unavailable; try again later";
  return null;
}
