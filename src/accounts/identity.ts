/**
 * What an open session's upstream login stands on, as one comparable string: a reload that changes it ends the
 * sessions logged in with the old one (docs/operations.md "Reload"). Secrets enter only as SHA-256 digests, so the
 * key itself holds no secret.
 */

import { createHash } from "node:crypto";
import { ownEntry } from "../config/names.ts";
import type { AccountConfig, Config } from "../config/types.ts";
import { ipAllowed } from "../net/ip.ts";

const digest = (text: string): string => createHash("sha256").update(text).digest("hex");

export function accountLoginKey(account: AccountConfig): string {
  if (account.auth === "password") return `password ${account.username} ${digest(account.password.reveal())}`;
  const o = account.oauth2;
  const secret = o.clientSecret === null ? "-" : digest(o.clientSecret.reveal());
  return [
    "oauth2",
    account.username,
    o.provider,
    o.grant,
    o.clientId,
    secret,
    o.tenant ?? "-",
    o.tokenUrl,
    o.scopes.join(" "),
    o.saslMechanism,
  ].join(" ");
}

/** What a logged-in session stands on, as a reload compares it with the new config. */
export type SessionLogin =
  /** Pass-through: the agent's own upstream login. */
  | { readonly agent: null }
  /** Vault mode: the agent, its token's hash, and the account as it logged in upstream (`accountLoginKey`). */
  | {
      readonly agent: string;
      readonly tokenHash: string;
      readonly account: string;
      readonly username: string;
      readonly loginKey: string;
    };

/**
 * Why a reload ends a session logged in as `login` from `remoteAddress` (docs/operations.md "Reload"), or null when
 * it may go on; `upstreamChanged`: the listener's upstream server is another one now. One list for the IMAP and
 * SMTP sessions, in this order, so both give the same reason for the same change.
 */
export function reloadEndReason(
  config: Config,
  login: SessionLogin,
  remoteAddress: string,
  upstreamChanged: boolean,
): string | null {
  if (upstreamChanged) return "the upstream server changed";
  if (login.agent === null) return config.agents.length > 0 ? "the proxy now takes agent tokens only" : null;
  const agent = config.agents.find((a) => a.name === login.agent);
  if (agent === undefined) return "the agent was removed";
  if (agent.tokenHash !== login.tokenHash) return "the agent's token changed";
  if (!ipAllowed(remoteAddress, agent.allowedIps)) return "the client address is no longer in the agent's allowed_ips";
  const account = ownEntry(config.accounts, agent.account);
  if (agent.account !== login.account || account === undefined) return "the agent's account changed";
  if (account.username !== login.username || accountLoginKey(account) !== login.loginKey)
    return "the account's upstream credentials changed";
  return null;
}
