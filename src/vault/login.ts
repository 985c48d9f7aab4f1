/**
 * The vault-mode check of an agent's login, shared by the IMAP and SMTP listeners (docs/config.md "Who connects"):
 * its name, its token and its client address against `allowed_ips`. The agent always gets the same reply, whatever
 * failed; the reason returned here is for the audit row and the log line only, so that the owner can tell an unknown
 * name from a wrong token.
 */

import type { AgentConfig } from "../config/types.ts";
import { ipAllowed } from "../net/ip.ts";
import { verifyToken } from "./token.ts";

/** The hash compared when the user name is unknown, so that unknown names take as long as wrong tokens. */
const NO_AGENT_HASH = `sha256:${"0".repeat(64)}`;

export type AgentLoginResult =
  | { readonly ok: true; readonly agent: AgentConfig }
  | { readonly ok: false; readonly reason: string };

/** Checks an agent's name and token, and its client address against allowed_ips. */
export function checkAgentLogin(
  agents: readonly AgentConfig[],
  name: string,
  token: string,
  clientAddr: string,
): AgentLoginResult {
  const agent = agents.find((a) => a.name === name);
  // Verified even for an unknown name, so that the timing does not tell names apart.
  const tokenOk = verifyToken(token, agent?.tokenHash ?? NO_AGENT_HASH);
  if (agent === undefined) return { ok: false, reason: "unknown agent name" };
  if (!tokenOk) return { ok: false, reason: "wrong token" };
  if (!ipAllowed(clientAddr, agent.allowedIps))
    return { ok: false, reason: `client address ${clientAddr} is not in the agent's allowed_ips` };
  return { ok: true, agent };
}
