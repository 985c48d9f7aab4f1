/**
 * Send semantics (docs/smtp.md "Send semantics"): what the policy is asked for a sender and for each recipient.
 *
 * Each envelope recipient R is decided on its own with `to = [R]`; `cc = [R]` when the Cc header names R and
 * the To header does not; `bcc = [R]` when neither does. `from` is the envelope sender (the reverse path), `[]`
 * for `<>`, so rules that name senders never match a null sender. At RCPT time the headers are not known yet
 * (cc, bcc, subject, has_attachment are `undefined`): only a decided deny refuses the recipient then; every
 * recipient is decided again, finally, once the message is in.
 */

import type { Decision, Outcome, Policy, Request } from "../policy/index.ts";
import type { MessageFacts } from "./inspect.ts";

export type RecipientClass = "to" | "cc" | "bcc" | "unknown";

/** What the MAIL FROM alone says: denied senders are refused at once (553 5.7.1). */
export function senderOutcome(policy: Policy, agent: string | null, sender: string): Outcome {
  return policy.evaluatePartial({ operation: "mail:send", folder: null, agent, from: senderList(sender) });
}

/** What RCPT TO says before the message is known: a decided deny refuses the recipient at once (550 5.7.1). */
export function recipientOutcome(policy: Policy, agent: string | null, sender: string, recipient: string): Outcome {
  return policy.evaluatePartial({
    operation: "mail:send",
    folder: null,
    agent,
    from: senderList(sender),
    to: [recipient],
  });
}

/** Where the headers put a recipient; "unknown" when a To or Cc header could not be parsed. */
export function classify(recipient: string, facts: MessageFacts): RecipientClass {
  if (facts.to?.includes(recipient)) return "to";
  if (facts.to === undefined || facts.cc === undefined) return "unknown";
  return facts.cc.includes(recipient) ? "cc" : "bcc";
}

/** The final request for one recipient, every field known except what the message left unreadable. */
export function finalRequest(agent: string | null, sender: string, recipient: string, facts: MessageFacts): Request {
  const kind = classify(recipient, facts);
  return {
    operation: "mail:send",
    folder: null,
    agent,
    from: senderList(sender),
    to: [recipient],
    cc: kind === "unknown" ? undefined : kind === "cc" ? [recipient] : [],
    bcc: kind === "unknown" ? undefined : kind === "bcc" ? [recipient] : [],
    subject: facts.subject,
    hasAttachment: facts.hasAttachment,
  };
}

/** Final decision; `evaluate` turns anything still undecided into deny, and `ask` is never allow. */
export function finalDecision(policy: Policy, request: Request): Decision {
  const decision = policy.evaluate(request);
  if (decision.action === "ask") {
    return {
      ...decision,
      action: "deny",
      reason: `${decision.reason}; approvals are not available yet, so ask refuses`,
    };
  }
  return decision;
}

function senderList(sender: string): string[] {
  return sender === "" ? [] : [sender];
}
