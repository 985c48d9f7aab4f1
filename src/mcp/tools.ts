/**
 * Which agent tools `mailgator mcp --agent` lists (docs/mcp.md "Agent tools"): a tool is listed only when some
 * request it makes could be allowed (or held, `ask`) for this agent under the rules. The question goes to the
 * policy engine with every field the tool cannot fix beforehand left unknown: the folder (any folder) and the
 * message fields for IMAP operations, the message fields for a send. A tool whose every request the rules deny
 * is not offered at all; one that is offered can still be refused request by request by the proxy.
 */

import type { Config } from "../config/index.ts";
import type { Operation, Policy } from "../policy/index.ts";

export const READ_TOOLS = ["list_folders", "list_messages", "search", "get_message", "get_attachment"] as const;
export const AGENT_TOOLS = [...READ_TOOLS, "save_draft", "send", "reply", "set_flags", "move", "delete"] as const;
export type AgentTool = (typeof AGENT_TOOLS)[number];

/** Could `operation` be allowed or held for the agent in some folder (IMAP) or for some message (send)? */
export function mayApply(policy: Policy, operation: Operation, agent: string | null): boolean {
  const outcome = policy.evaluatePartial({ operation, agent, folder: operation === "mail:send" ? null : undefined });
  if (outcome.decided) return outcome.decision.action !== "deny";
  return outcome.possible.has("allow") || outcome.possible.has("ask");
}

/**
 * The tools to list for the agent (`null`: pass-through mode, no agent name). IMAP tools need `[imap]`, sending
 * needs `[smtp]`; `reply` needs both reading (the message replied to) and sending.
 */
export function agentTools(config: Config, policy: Policy, agent: string | null): Set<AgentTool> {
  const tools = new Set<AgentTool>();
  const can = (op: Operation) => mayApply(policy, op, agent);
  const imap = config.imap !== null;
  const read = imap && (can("mail:read") || can("folder:read"));
  if (read) for (const t of READ_TOOLS) tools.add(t);
  if (imap && can("mail:append")) tools.add("save_draft");
  const send = config.smtp !== null && can("mail:send");
  if (send) tools.add("send");
  if (send && read) tools.add("reply");
  if (read && can("mail:flag")) tools.add("set_flags");
  if (read && can("mail:move")) tools.add("move");
  if (read && can("mail:delete")) tools.add("delete");
  return tools;
}
