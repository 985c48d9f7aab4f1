/**
 * What an open session's upstream login stands on, as one comparable string: a reload that changes it ends the
 * sessions logged in with the old one (docs/operations.md "Reload"). Secrets enter only as SHA-256 digests, so the
 * key itself holds no secret.
 */
import { createHash } from "node:crypto";
import type { AccountConfig } from "../config/types.ts";

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
