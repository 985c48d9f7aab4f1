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
