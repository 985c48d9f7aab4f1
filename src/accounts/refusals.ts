/**
 * Vault accounts whose login the upstream server has just refused (docs/config.md "Who connects"): a password account's
 * password, or an OAuth2 account's fresh access token after the one it held (docs/imap.md, docs/smtp.md "OAuth2
 * accounts"). The agent that asked had the right token, so the refusal is the account's: a password changed upstream
 * and not yet in the config, a server-side limit, a mailbox whose IMAP or SMTP access is turned off for tokens. Its
 * agents' logins are then answered `NO [UNAVAILABLE]` (SMTP: 454 or 451) for ACCOUNT_REFUSAL_HOLD_MS without trying
 * the account again: a server counts failed logins per client address (Dovecot's auth penalty, a provider's block of
 * an address), and an agent retrying in a loop would otherwise have the proxy fail one login after another there,
 * slowing or shutting out every account behind the proxy's address (and, for an OAuth2 account, ask the token
 * endpoint for a new token at every attempt).
 *
 * The key (`refusalKey`) is the server and the account's login (its user name and a digest of its password, or its
 * OAuth2 client settings: `accountLoginKey`): a reload that changes them starts a new key, so the account is tried at
 * once.
 */

import type { AccountConfig } from "../config/types.ts";
import type { UpstreamTarget } from "../net/index.ts";
import { accountLoginKey } from "./identity.ts";

/** How long an account's refused login is not tried again. */
export const ACCOUNT_REFUSAL_HOLD_MS = 30_000;

export class AccountRefusals {
  readonly holdMs: number;
  readonly #now: () => number;
  /** Refused keys with the time their hold ends. At most one per account and config: the config bounds it. */
  readonly #until = new Map<string, number>();

  constructor(holdMs = ACCOUNT_REFUSAL_HOLD_MS, now: () => number = () => performance.now()) {
    this.holdMs = holdMs;
    this.#now = now;
  }

  /** The upstream server refused the login under `key` now. */
  refused(key: string): void {
    const now = this.#now();
    for (const [k, until] of this.#until) if (until <= now) this.#until.delete(k);
    this.#until.set(key, now + this.holdMs);
  }

  /**
   * Why a login of `account` under `key` is not tried upstream now ("login not tried: ..."), or null when it may be.
   * The listeners put it in the row and refuse the login (IMAP) or the send (SMTP).
   */
  notTried(key: string, account: string): string | null {
    const held = this.heldFor(key);
    if (held === 0) return null;
    return (
      `login not tried: the upstream server refused the credentials of account ${account} less than ` +
      `${Math.round(this.holdMs / 1000)} s ago (tried again in ${Math.ceil(held / 1000)} s)`
    );
  }

  /** Milliseconds until a login under `key` is tried upstream again; 0 when it may be now. */
  heldFor(key: string): number {
    const until = this.#until.get(key);
    if (until === undefined) return 0;
    const left = until - this.#now();
    if (left > 0) return left;
    this.#until.delete(key);
    return 0;
  }
}

/** The key of an account's logins to `target` (`AccountRefusals`). */
export function refusalKey(target: UpstreamTarget, account: AccountConfig): string {
  return `${target.host}\n${target.port}\n${target.tls}\n${accountLoginKey(account)}`;
}
