/**
 * Send semantics (docs/smtp.md "Send semantics"): what the policy is asked for a sender and for each
 * recipient, and how those answers become the proxy's replies. Pure: no I/O. The SMTP session calls these step by
 * step as the transaction arrives; `simulateSend` runs the same steps in the same order for `mailgator explain`.
 *
 * Each envelope recipient R is decided on its own with `to = [R]`; `cc = [R]` when the Cc header names R and
 * the To header does not; `bcc = [R]` when neither does (with R's mailbox beside R when R is a subaddress:
 * `recipientAddresses`). `from` is the envelope sender (the reverse path), `[]`
 * for `<>`, so rules that name senders never match a null sender. At RCPT time the headers are not known yet
 * (cc, bcc, subject, has_attachment are `undefined`): only a decided deny refuses the recipient then; every
 * recipient is decided again, finally, once the message is in. One refused recipient refuses the whole message.
 * Finally each author in the header (From, Sender, Resent-From, Resent-Sender) other than the envelope sender is
 * decided too, as `from` with the same recipient, and the strictest decision counts (docs/smtp.md "The author in
 * the header"): a rule that lets an agent send only as desk@ is not passed by `From: ceo@`.
 */

import { subaddressMailbox } from "../mail/index.ts";
import type { Decision, Outcome, Policy, Request } from "../policy/index.ts";
import type { MessageFacts } from "./inspect.ts";

type Decided = Extract<Outcome, { decided: true }>;

export type RecipientClass = "to" | "cc" | "bcc" | "unknown";

/**
 * The header facts the final decision reads (what `MessageInspector` gives, without its audit-only fields).
 * `authors` undefined (unreadable) leaves `from` unknown for the final decision: a rule that tests it denies.
 */
export type SendFacts = Pick<MessageFacts, "to" | "cc" | "subject" | "hasAttachment" | "authors">;

/**
 * A session's identities (docs/smtp.md "Identities": MAIL FROM must be one of them, or `<>`): its upstream login
 * when that is an address, and the configured ones. Exact addresses, lower-cased: the whole address compares
 * case-insensitively, as the rules do (a local part MAY be case-sensitive, RFC 5321 §2.4, but no mail system in
 * use makes two mailboxes of `Me@x` and `me@x`, and refusing the case variant of one's own login would only
 * confuse clients).
 */
export function sessionIdentities(login: string, configured: readonly string[]): ReadonlySet<string> {
  const out = new Set<string>();
  if (login.includes("@")) out.add(login.toLowerCase());
  for (const address of configured) out.add(address.toLowerCase());
  return out;
}

/**
 * Is the reverse path (lower-cased; "" for `<>`) refused as not one of the session's identities? Bounces and DSNs
 * go to the reverse path with the message in them (RFC 3461): an address that is not the account's own would
 * receive a copy of what it may not, whatever the rules say about recipients.
 */
export function senderNotIdentity(identities: ReadonlySet<string>, senderKey: string): boolean {
  return senderKey !== "" && !identities.has(senderKey);
}

/**
 * Why the message's originator headers are refused (docs/smtp.md "The author in the header"), or null: each
 * address of From, Sender, Reply-To, their resent forms and the other fields `readOriginators` reads (where answers,
 * read receipts and error reports go; `originators`, lower-cased) must be one of the session's identities, as the
 * reverse path must. The envelope decides where bounces go; these headers are who the recipient is told wrote the
 * message and where an answer goes, so an agent allowed to send as itself must neither sign as someone else nor have
 * the answers (with what they quote) sent elsewhere. Undefined (a field that cannot be read, names no address, or
 * is doubled) is refused too. A message without any of them claims no author: allowed.
 */
export function originatorProblem(
  identities: ReadonlySet<string>,
  originators: readonly string[] | undefined,
): string | null {
  if (originators === undefined)
    return "a From, Sender, Reply-To or related header cannot be read, names no address, or is doubled";
  for (const address of originators) {
    if (!identities.has(address)) return `the header names <${address}>, not one of this account's identities`;
  }
  return null;
}

/**
 * Why a message sent with the null reverse path (`senderKey` "") is refused, or null: the author fields it lacks
 * (`MessageFacts.missingAuthors`) the upstream writes from the reverse path, `MAILER-DAEMON`, an author that is no
 * identity (docs/smtp.md "The author in the header").
 */
export function nullSenderProblem(senderKey: string, missingAuthors: readonly string[]): string | null {
  if (senderKey !== "" || missingAuthors.length === 0) return null;
  const missing = missingAuthors.map((n) => (n === "from" ? "From" : "Resent-From")).join(" and ");
  return `sent with <> and no ${missing} field, which the upstream would fill in as MAILER-DAEMON`;
}

/** What the MAIL FROM alone says. `sender` undefined (explain without --from) leaves `from` unknown. */
export function senderOutcome(policy: Policy, agent: string | null, sender: string | undefined): Outcome {
  return policy.evaluatePartial({ operation: "mail:send", folder: null, agent, from: senderList(sender) });
}

/** A sender the rules deny on its own, before any recipient, is refused at once (553 5.7.1). */
export function senderRefused(outcome: Outcome): outcome is Decided {
  return outcome.decided && outcome.decision.action !== "allow" && outcome.decision.action !== "ask";
}

/**
 * What the rules' `to`, `cc` and `bcc` globs are matched against for one envelope recipient (lower-cased): the
 * recipient, and for a subaddress the mailbox it is delivered to (`subaddressMailbox`: `ceo+x@corp.test` is
 * `ceo@corp.test`'s). A rule that names a mailbox applies to its subaddresses too: `deny to = "ceo@corp.test"` is
 * not passed by `ceo+x@corp.test`, which Postfix, Dovecot, Gmail and Microsoft 365 deliver to the same mailbox. A
 * rule that names the subaddress still matches it as written; the first rule that matches either decides
 * (docs/smtp.md "Send semantics").
 */
export function recipientAddresses(recipient: string): readonly string[] {
  const mailbox = subaddressMailbox(recipient);
  return mailbox === null ? [recipient] : [recipient, mailbox];
}

/** What RCPT TO says before the message is known. */
export function recipientOutcome(
  policy: Policy,
  agent: string | null,
  sender: string | undefined,
  recipient: string,
): Outcome {
  return policy.evaluatePartial({
    operation: "mail:send",
    folder: null,
    agent,
    from: senderList(sender),
    to: recipientAddresses(recipient),
  });
}

/** A decided deny refuses the recipient at RCPT time (550 5.7.1); anything else waits for the message. */
export function recipientRefused(outcome: Outcome): outcome is Decided {
  return outcome.decided && outcome.decision.action === "deny";
}

/** Where the headers put a recipient; "unknown" when a To or Cc header could not be parsed. */
export function classify(recipient: string, facts: SendFacts): RecipientClass {
  if (facts.to?.includes(recipient)) return "to";
  if (facts.to === undefined || facts.cc === undefined) return "unknown";
  return facts.cc.includes(recipient) ? "cc" : "bcc";
}

/** The final request for one recipient, every field known except what the message left unreadable. */
export function finalRequest(
  agent: string | null,
  sender: string | undefined,
  recipient: string,
  facts: SendFacts,
): Request {
  const kind = classify(recipient, facts);
  const addresses = recipientAddresses(recipient);
  return {
    operation: "mail:send",
    folder: null,
    agent,
    from: senderList(sender),
    to: addresses,
    cc: kind === "unknown" ? undefined : kind === "cc" ? addresses : [],
    bcc: kind === "unknown" ? undefined : kind === "bcc" ? addresses : [],
    subject: facts.subject,
    hasAttachment: facts.hasAttachment,
  };
}

/** The final outcome for one recipient; a decided `ask` holds the message for approval (docs/approvals.md). */
export function finalOutcome(policy: Policy, request: Request): Outcome {
  return policy.evaluatePartial(request);
}

export interface RecipientFinal {
  /** The recipient, lower-cased. */
  readonly recipient: string;
  readonly class: RecipientClass;
  /** `finalOutcome`: undecided only when a field the rules test is unknown. */
  readonly outcome: Outcome;
  /** What the proxy acts on: the outcome, or deny when it is undecided. */
  readonly decision: Decision;
  /**
   * When it asks: the index of every rule that asks for it, the envelope sender's and each header author's
   * (`decideMessage`); each of their groups is asked (docs/smtp.md "Identities").
   */
  readonly asking?: readonly number[];
}

/** The decision at the end of DATA: every recipient decided on its own, the message allowed only if all are. */
export interface MessageVerdict {
  readonly recipients: readonly RecipientFinal[];
  /** Recipients whose final decision is neither allow nor ask, in envelope order. */
  readonly refused: readonly string[];
  /**
   * Recipients whose final decision is ask, in envelope order. With none refused, the whole message is held for
   * approval (docs/approvals.md "Holding"); one refused recipient refuses it all the same.
   */
  readonly held: readonly RecipientFinal[];
}

/** The end-of-DATA decision over the accepted recipients (lower-cased, in envelope order). */
export function decideMessage(
  policy: Policy,
  agent: string | null,
  sender: string | undefined,
  recipients: readonly string[],
  facts: SendFacts,
): MessageVerdict {
  const out: RecipientFinal[] = [];
  const refused: string[] = [];
  const held: RecipientFinal[] = [];
  // The header's authors other than the envelope sender; unreadable ones are decided as an unknown `from`.
  const authors: (string | undefined)[] =
    facts.authors === undefined ? [undefined] : [...new Set(facts.authors)].filter((a) => a !== sender);
  for (const recipient of recipients) {
    const request = finalRequest(agent, sender, recipient, facts);
    let outcome = finalOutcome(policy, request);
    // Still undecided when the proxy must act: denied (`Policy.evaluate`).
    let decision = outcome.decided ? outcome.decision : policy.evaluate(request);
    // Every rule that asks, the sender's and the authors': a message written as another author needs that author's
    // approvers too, and the row names each rule.
    const asking = new Set<number>();
    const also: string[] = [];
    if (decision.action === "ask" && decision.ruleIndex !== null) asking.add(decision.ruleIndex);
    for (const author of authors) {
      if (strictness(decision) === 2) break;
      const byAuthor = finalRequest(agent, author, recipient, facts);
      const authorOutcome = finalOutcome(policy, byAuthor);
      const authorDecision = authorOutcome.decided ? authorOutcome.decision : policy.evaluate(byAuthor);
      const who = author === undefined ? "an author in the header that cannot be read" : `header author <${author}>`;
      if (authorDecision.action === "ask" && authorDecision.ruleIndex !== null) {
        if (strictness(decision) === 1 && !asking.has(authorDecision.ruleIndex))
          also.push(`${who} asks too: ${authorDecision.reason}`);
        asking.add(authorDecision.ruleIndex);
      }
      if (strictness(authorDecision) <= strictness(decision)) continue;
      decision = { ...authorDecision, reason: `${who}: ${authorDecision.reason}` };
      outcome = authorOutcome.decided ? { decided: true, decision } : authorOutcome;
    }
    if (decision.action === "ask" && also.length > 0) {
      decision = { ...decision, reason: [decision.reason, ...also].join("; ") };
      if (outcome.decided) outcome = { decided: true, decision };
    }
    const final: RecipientFinal = {
      recipient,
      class: classify(recipient, facts),
      outcome,
      decision,
      ...(decision.action === "ask" ? { asking: [...asking] } : {}),
    };
    if (decision.action === "ask") held.push(final);
    else if (decision.action !== "allow") refused.push(recipient);
    out.push(final);
  }
  return { recipients: out, refused, held };
}

/** One recipient of a simulated send. */
export interface SimulatedRecipient {
  readonly recipient: string;
  /** The RCPT TO reply: refused (550), accepted (250), or never asked because MAIL FROM was refused. */
  readonly rcpt: "accepted" | "refused" | "not-reached";
  /** The RCPT-time outcome (headers unknown). */
  readonly rcptOutcome: Outcome;
  /** The recipient decided on its own with the message's facts (even when another recipient stops the message). */
  readonly final: RecipientFinal;
  /** The decision that settles this recipient: the RCPT-time one when it refused, else the final one. */
  readonly deciding: Outcome;
}

/** What the SMTP proxy would do with one whole message. */
export interface SimulatedSend {
  readonly sender: string | undefined;
  readonly senderOutcome: Outcome;
  /** MAIL FROM refused by the rules (553). */
  readonly senderRefused: boolean;
  readonly recipients: readonly SimulatedRecipient[];
  /**
   * Where the message stops: "mail" (MAIL FROM refused), "rcpt" (a recipient refused at RCPT: DATA gets 554 before
   * the message is read), "data" (a recipient refused at the end of DATA: 554), "held" (a recipient's rule asks
   * and none is refused: 250 held for approval, docs/approvals.md), or null when it is accepted.
   * `undecided` is true when no stop was found but a final outcome depends on a field left unknown.
   */
  readonly stoppedAt: "mail" | "rcpt" | "data" | "held" | null;
  readonly undecided: boolean;
}

/**
 * The proxy's decision path for one transaction, run without a connection: MAIL FROM, each RCPT in order (a
 * repeated recipient is accepted once, as the session does), then the end-of-DATA decision. Recipients and sender
 * lower-cased; sender "" for `<>`, undefined when not known.
 */
export function simulateSend(
  policy: Policy,
  agent: string | null,
  sender: string | undefined,
  recipients: readonly string[],
  facts: SendFacts,
): SimulatedSend {
  const senderOut = senderOutcome(policy, agent, sender);
  const mailRefused = senderRefused(senderOut);
  const unique = [...new Set(recipients)];
  const rcpts = unique.map((recipient) => {
    const outcome = recipientOutcome(policy, agent, sender, recipient);
    return { recipient, outcome, refused: recipientRefused(outcome) };
  });
  const verdict = decideMessage(policy, agent, sender, unique, facts);
  const list: SimulatedRecipient[] = rcpts.map((r, i) => {
    const final = verdict.recipients[i]!;
    return {
      recipient: r.recipient,
      rcpt: mailRefused ? "not-reached" : r.refused ? "refused" : "accepted",
      rcptOutcome: r.outcome,
      final,
      deciding: r.refused ? r.outcome : final.outcome,
    };
  });
  const stoppedAt = mailRefused
    ? "mail"
    : rcpts.some((r) => r.refused)
      ? "rcpt"
      : verdict.refused.some((r) => verdict.recipients.find((f) => f.recipient === r)?.outcome.decided)
        ? "data"
        : verdict.held.length > 0 && verdict.refused.length === 0
          ? "held"
          : null;
  const undecided = stoppedAt === null && verdict.recipients.some((r) => !r.outcome.decided);
  return {
    sender,
    senderOutcome: senderOut,
    senderRefused: mailRefused,
    recipients: list,
    stoppedAt,
    undecided,
  };
}

/** allow 0, ask 1, anything else (a refusal) 2. */
function strictness(decision: Decision): number {
  return decision.action === "allow" ? 0 : decision.action === "ask" ? 1 : 2;
}

function senderList(sender: string | undefined): string[] | undefined {
  if (sender === undefined) return undefined;
  return sender === "" ? [] : [sender];
}
