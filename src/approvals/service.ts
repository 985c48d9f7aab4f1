/**
 * Deciding held messages (docs/approvals.md "Deciding"): approve (claim, replay the stored bytes and envelope
 * upstream, record the reply), deny, expire, and the start-up check of messages a dead process left "sending".
 * Used by `serve` (the approval page, the expiry timer) and by `mailgator approvals` alike; every step is an audit
 * row with the message id (as target) and the rule that asked.
 */

import { randomBytes } from "node:crypto";
import { type AccountCredentials, accountLoginKey } from "../accounts/index.ts";
import type { AuditEvent, AuditLog } from "../audit/index.ts";
import { cutText, MAX_ROW_REASON } from "../audit/row.ts";
import { agentMailboxes } from "../config/index.ts";
import { ownEntry } from "../config/names.ts";
import type { AccountConfig, Config } from "../config/types.ts";
import { errorMessage, moduleLogger } from "../log.ts";
import { parseHeaderFields, readEnvelopeAddress, readOriginators } from "../mail/index.ts";
import { sameUpstream, type UpstreamTarget } from "../net/index.ts";
import { compilePolicy, type Policy } from "../policy/index.ts";
import {
  decideMessage,
  nullSenderProblem,
  originatorProblem,
  type SendFacts,
  senderNotIdentity,
  sessionIdentities,
} from "../smtp/decide.ts";
import { smtpUpstreamTarget } from "../smtp/index.ts";
import { type MessageFacts, MessageInspector, unsendable } from "../smtp/inspect.ts";
import { MAX_HEADER_BYTES, MAX_MESSAGE_BYTES, MAX_RECIPIENTS } from "../smtp/limits.ts";
import { SPOOL_BLOCK } from "../smtp/spool.ts";
import {
  CommitGate,
  checkEightBit,
  type MessageSource,
  openAccountUpstream,
  type SendResult,
  SendStopped,
  UpstreamSession,
} from "../smtp/upstream.ts";
import { SealedRecordError } from "../state/store.ts";
import type { ApprovalRow, ApprovalState, ApprovalStore, HeldDetails, HeldMessage } from "./store.ts";

export interface ApprovalContext {
  readonly config: Config;
  readonly store: ApprovalStore;
  readonly audit: AuditLog;
  /** "cli", "smtp" (the page is served by the proxy process). */
  readonly protocol: AuditEvent["protocol"];
  /**
   * The token manager of the process (src/accounts/index.ts): an OAuth2 account's replay logs in with an access
   * token from it. Without it, approving a message of an OAuth2 account is refused and the message stays held.
   */
  readonly credentials?: AccountCredentials | undefined;
  /**
   * Called once a held message is sent, refused upstream, denied or expired, with its record as read before it was
   * wiped: the sender's result notice (src/approvals/notify.ts).
   */
  readonly onDecided?: ((row: ApprovalRow, held: HeldDetails) => void) | undefined;
}

export type ApproveResult =
  /**
   * The upstream answered `reply`. `recorded` is false when its APPROVAL SENT row could not be written: the message
   * was then left "sending" (docs/approvals.md "When the audit log fails").
   */
  | { readonly outcome: "sent" | "failed"; readonly reply: string; readonly recorded: boolean }
  | { readonly outcome: "refused"; readonly state: ApprovalState | "unknown" }
  /**
   * Nothing was sent and the message is still held: the upstream login failed before the claim, the audit log
   * could not be written (AUDIT_UNAVAILABLE), before the claim or when the approval row was to go to disk, the
   * process is stopping (SHUTTING_DOWN: before the claim, or a replay cut off before its final dot went out), or
   * the upstream refused it for now (a 4xx reply) or the connection was lost before the final dot went out.
   */
  | { readonly outcome: "not-sent"; readonly reason: string }
  /**
   * The replay was cut off by `signal` (serve stopping, docs/approvals.md "What is guaranteed") after its final dot
   * went out: the upstream may or may not have the message. It stays "sending", with no row of its own, as
   * if the process had been killed; the next start marks it for a check and never sends it again.
   */
  | { readonly outcome: "interrupted" }
  /**
   * The final dot went out and the upstream's reply never came (the connection was lost): the upstream may or may
   * not have the message. It is "needs-check" (never sent again) once its APPROVAL NEEDS CHECK row is on disk;
   * `recorded` false: that row could not be written, and it stays "sending" until the next start marks it.
   */
  | { readonly outcome: "needs-check"; readonly reason: string; readonly recorded: boolean };

/** The reason given when a decision is refused or cut off because the process is stopping. */
export const SHUTTING_DOWN = "the server is shutting down";

/** One audit row about a held message. */
export function approvalEvent(
  ctx: ApprovalContext,
  row: Pick<ApprovalRow, "id" | "ruleIndex" | "agent"> & {
    readonly rule: string | null;
    readonly configRevision?: string | null;
  },
  command: string,
  decision: AuditEvent["decision"],
  reason: string,
  detail: AuditEvent["detail"] = null,
): AuditEvent {
  return {
    session: `approval-${randomBytes(4).toString("hex")}`,
    agent: row.agent,
    clientAddr: null,
    protocol: ctx.protocol,
    command,
    operation: "mail:send",
    folder: null,
    target: row.id,
    decision,
    rule: row.rule,
    ruleIndex: row.ruleIndex,
    reason: cutText(reason, MAX_ROW_REASON),
    // The config whose rule held the message, which reloads since may have replaced (docs/audit.md).
    configRevision: row.configRevision ?? ctx.config.revision,
    detail,
  };
}

/**
 * At start and after each reload: when the config in force lets an agent read a mailbox that no agent could read when
 * the links were last checked, the link of every message still held is withdrawn (ApprovalStore.
 * withdrawLinksForNewReaders), each with an `APPROVAL LINK WITHDRAWN` row: a notice sent earlier may lie, link and
 * all, in that mailbox (docs/approvals.md "Links"). Returns how many were withdrawn. While the audit log cannot be
 * written it throws and changes nothing, as no decision is made then: a withdrawal whose rows the log refused would
 * never have them, as the set of mailboxes it records then compares equal at the next check.
 */
export function withdrawExposedLinks(ctx: ApprovalContext): number {
  // Checked in the turn of the change and of its rows, so that the log takes them (short of its queue limit).
  if (!ctx.audit.healthy) throw new Error(AUDIT_UNAVAILABLE);
  const rows = ctx.store.withdrawLinksForNewReaders(agentMailboxes(ctx.config));
  for (const row of rows)
    ctx.audit.record(
      approvalEvent(
        ctx,
        row,
        "APPROVAL LINK WITHDRAWN",
        "deny",
        "an agent can now read a mailbox its notice may lie in; decide with `mailgator approvals`",
      ),
    );
  if (rows.length > 0)
    moduleLogger("approvals").warn(
      `${rows.length} approval link(s) withdrawn: an agent can now read a mailbox that may hold their notices ` +
        "(decide with `mailgator approvals`, or the links of notices sent from now on)",
    );
  return rows.length;
}

/** A held message's bytes as the replay reads them: blocks of at most SPOOL_BLOCK octets. */
function source(message: Buffer): MessageSource {
  return {
    length: message.length,
    *blocks() {
      for (let at = 0; at < message.length; at += SPOOL_BLOCK) yield message.subarray(at, at + SPOOL_BLOCK);
    },
  };
}

/** What an approval logs in upstream with: the server, and the account (null: the stored pass-through login). */
interface SenderLogin {
  readonly target: UpstreamTarget;
  readonly account: AccountConfig | null;
}

/**
 * Throws unless the config in force still lets the held message be sent as it was held: its login's mode, its agent
 * with the same token and account (vault), its account, its sender and authors among the identities, and its rules
 * (`stillAllowedByRules`). Returns what the upstream login is made with. `facts`: what the SMTP proxy's inspector
 * reads of the stored bytes (`checkMessage`).
 */
function checkSender(ctx: ApprovalContext, held: HeldMessage, facts: SendFacts): SenderLogin {
  // One read of the config in force for every check below: a reload replaces the object, never changes it.
  const config = ctx.config;
  const smtp = config.smtp;
  if (smtp === null) throw new Error("the config has no [smtp] section to send through");
  const target = smtpUpstreamTarget(smtp);
  if (held.credentials !== null) {
    // A reload to vault mode ends the pass-through sessions (docs/operations.md "Reload"); their held messages are
    // not sent with the agent's own login either.
    if (config.agents.length > 0)
      throw new Error("the proxy now takes agent tokens only: a message held in pass-through mode is not sent");
    stillAnIdentity(held, sessionIdentities(held.credentials.username, smtp.identities));
    stillAllowedByRules(config, held, facts);
    return { target, account: null };
  }
  // Vault mode: the agent that sent it must still be configured, with the same token and account, as a reload ends
  // its sessions otherwise (docs/operations.md "Reload"); a revoked agent's or token's held messages are not sent.
  if (held.agent !== null) {
    const agent = config.agents.find((a) => a.name === held.agent);
    if (agent === undefined) throw new Error(`the agent ${held.agent} is no longer configured`);
    if (agent.tokenHash !== held.tokenHash)
      throw new Error(`the agent ${held.agent}'s token changed after the message was held`);
    if (agent.account !== held.account) throw new Error(`the agent ${held.agent} now uses another account`);
  }
  const account = held.account === null ? undefined : ownEntry(config.accounts, held.account);
  if (account === undefined) throw new Error(`account ${JSON.stringify(held.account)} is no longer configured`);
  stillAnIdentity(held, sessionIdentities(account.username, account.identities));
  stillAllowedByRules(config, held, facts);
  return { target, account };
}

/** How a refusal by `stillAllowedByRules` begins. */
const RULES_NOW_DENY = "the rules now deny this send";

/** The policy of each config judged here: one per config object, which a reload replaces. */
const policies = new WeakMap<Config, Policy>();

function policyOf(config: Config): Policy {
  let policy = policies.get(config);
  if (policy === undefined) {
    policy = compilePolicy(config.rules);
    policies.set(config, policy);
  }
  return policy;
}

/**
 * Throws unless the rules of `config` would still let a send of the held envelope and bytes go out or hold it
 * (docs/approvals.md "Deciding", step 1): the SMTP proxy's own end-of-DATA decision (`decideMessage`, docs/smtp.md
 * "Send semantics"), with the agent as the policy sees it (its name in vault mode, null in pass-through mode), the
 * sender, each recipient and the header's facts as the proxy's inspector reads them. One recipient refused (by a
 * rule, the default deny, or a field the rules test left unknown) refuses the whole message, as it refuses a send
 * (docs/smtp.md "All or nothing"); a recipient whose rule asks is covered by the approval being made.
 */
function stillAllowedByRules(config: Config, held: HeldMessage, facts: SendFacts): void {
  const agent = held.credentials === null ? held.agent : null;
  const recipients = [...new Set(held.envelope.recipients.map((r) => r.toLowerCase()))];
  const verdict = decideMessage(policyOf(config), agent, held.envelope.from.toLowerCase(), recipients, facts);
  const first = verdict.refused[0];
  if (first === undefined) return;
  const why = verdict.recipients.find((r) => r.recipient === first)!.decision.reason;
  const more = verdict.refused.length > 1 ? ` and ${verdict.refused.length - 1} more` : "";
  throw new Error(`${RULES_NOW_DENY}: not allowed for <${first}>${more}: ${why}`);
}

/**
 * Connects and logs in upstream as the held message's sender (`checkSender` first): the agent's stored login
 * (pass-through), the account's password, or an OAuth2 access token from the token manager, refreshed when the
 * upstream refuses the cached one (openAccountUpstream, the same code the proxy's sessions log in with).
 */
async function login(
  ctx: ApprovalContext,
  held: HeldMessage,
  facts: SendFacts,
  signal: AbortSignal | null,
): Promise<{ upstream: UpstreamSession; made: SenderLogin }> {
  const made = checkSender(ctx, held, facts);
  const upstream =
    made.account === null
      ? await UpstreamSession.open(made.target, held.credentials!, signal)
      : await openAccountUpstream(made.target, made.account, ctx.credentials, signal);
  return { upstream, made };
}

/**
 * After the login, in the claim's turn: a reload that came while it connected is judged as one that came before it
 * (docs/approvals.md "Deciding"): the checks again, under the config in force, and the login made with what that
 * config still names (the same server and account login, as the proxy's sessions must keep, docs/operations.md
 * "Reload"). Throws the reason otherwise: nothing is sent.
 */
function stillSender(ctx: ApprovalContext, held: HeldMessage, facts: SendFacts, made: SenderLogin): void {
  const now = checkSender(ctx, held, facts);
  const sameAccount =
    now.account === null || made.account === null
      ? now.account === made.account
      : accountLoginKey(now.account) === accountLoginKey(made.account);
  if (!sameUpstream(now.target, made.target) || !sameAccount)
    throw new Error("a reload changed the upstream server or the account's login while the approval logged in");
}

/**
 * Throws unless the held message's reverse path, and the authors its header names, are still identities the config
 * in force gives its login or account: a reload that removed an identity refuses it to the sessions logged in before
 * (docs/smtp.md "Identities", "The author in the header"), and so to the messages held before too (docs/approvals.md
 * "Deciding").
 */
function stillAnIdentity(held: HeldMessage, identities: ReadonlySet<string>): void {
  if (senderNotIdentity(identities, held.envelope.from.toLowerCase()))
    throw new Error(`the sender ${held.envelope.from} is no longer one of this account's identities`);
  const originators = readOriginators(parseHeaderFields(held.message));
  const authors = originatorProblem(identities, originators);
  if (authors !== null) throw new Error(originators === undefined ? authors : `${authors} any more`);
}

/** How a refusal by `checkMessage` begins: the reason then is the one the proxy gives such a send. */
const REFUSED_AS_SENT_NOW = "the message is refused as a send of it would be now";

/**
 * Throws unless the held envelope and bytes pass the checks the SMTP proxy makes of a send today (docs/approvals.md
 * "Deciding", step 1): each envelope address as MAIL FROM and RCPT TO read it (docs/smtp.md "Addresses"), the
 * number of recipients and the size, and what the end of DATA refuses of the message itself (docs/smtp.md "What the
 * message says": the header section's size, a NUL, a control character in a header, a field or a header line longer
 * than the upstream passes on, the null reverse path without an author). A message held by an older Mailgator, before
 * one of these was checked, is stored as it was then: approving it must not send what a send now would not. Returns
 * what the inspector read, for the rules (`stillAllowedByRules`).
 */
function checkMessage(held: HeldMessage): MessageFacts {
  const refuse = (why: string): never => {
    throw new Error(`${REFUSED_AS_SENT_NOW}: ${why}`);
  };
  const { from, recipients } = held.envelope;
  if (from !== "") {
    const read = readEnvelopeAddress(from);
    if (!read.ok) refuse(`the sender <${from}> is not accepted: ${read.problem}`);
  }
  if (recipients.length === 0) refuse("it has no recipient");
  if (recipients.length > MAX_RECIPIENTS) refuse(`more than ${MAX_RECIPIENTS} recipients`);
  for (const to of recipients) {
    const read = readEnvelopeAddress(to);
    if (!read.ok) refuse(`the recipient <${to}> is not accepted: ${read.problem}`);
  }
  if (held.message.length > MAX_MESSAGE_BYTES) refuse(`message larger than ${MAX_MESSAGE_BYTES} octets`);
  const inspector = new MessageInspector();
  for (const block of source(held.message).blocks()) inspector.write(block);
  const facts = inspector.finish();
  if (facts.headerTooLarge) refuse(`header section larger than ${MAX_HEADER_BYTES} octets`);
  const refusal = unsendable(facts);
  if (refusal !== null) refuse(refusal.reason);
  const authorless = nullSenderProblem(from, facts.missingAuthors);
  if (authorless !== null) refuse(authorless);
  return facts;
}

/** The row of a message whose parts a store that did not finish left (`removeOrphans`). */
export const ORPHAN_REASON = "not held: a store that did not finish (the process stopped) left its parts; removed";

/** Why a decision changed nothing: the audit log cannot be written (docs/approvals.md "When the audit log fails"). */
export const AUDIT_UNAVAILABLE = "the audit log cannot be written; try again later";

/**
 * Writes the row of a step, on disk before this resolves. It never rejects: the step it records is done (or was a
 * login attempt that changed nothing), so a row the log cannot take is reported in the process log instead. A commit
 * that fails leaves the row queued in the log for its retry (docs/audit.md "Failure"); a row the log refuses
 * outright (already failing) is lost, and the log line names it.
 */
async function written(ctx: ApprovalContext, ev: AuditEvent): Promise<boolean> {
  try {
    // The step is done already: the row records it as it was, never "not carried out" (DurableOptions.gate).
    await ctx.audit.durable(ev, { gate: false });
    return true;
  } catch (e) {
    moduleLogger("approvals").error(
      `approval ${ev.target}: its ${ev.command} row (${ev.reason}) is not on disk: ${errorMessage(e)}`,
    );
    return false;
  }
}

/**
 * Approves and sends, exactly once among concurrent deciders: only the caller whose claim moves the message from
 * "held" to "sending" replays it. The upstream login comes first: when it fails (an OAuth2 account that needs
 * re-authorization, an upstream that cannot be reached) nothing was sent and the message stays held. The approval
 * row is on disk before the message reaches the upstream (docs/approvals.md "Deciding"). While the audit log cannot
 * be written nothing changes: the message stays held and the caller is told why ("not-sent"). An aborted `signal`
 * stops the decision: during the login, the upstream connection is dropped and nothing changes ("not-sent"); during
 * the replay, it is dropped too, and the message is held again if the final dot had not gone out ("not-sent"), else
 * left "sending" ("interrupted").
 */
export function approve(
  ctx: ApprovalContext,
  id: string,
  by: string,
): Promise<Exclude<ApproveResult, { outcome: "interrupted" }>>;
export function approve(ctx: ApprovalContext, id: string, by: string, signal: AbortSignal): Promise<ApproveResult>;
export async function approve(
  ctx: ApprovalContext,
  id: string,
  by: string,
  signal?: AbortSignal,
): Promise<ApproveResult> {
  const before = ctx.store.row(id);
  if (before === null) return { outcome: "refused", state: "unknown" };
  if (before.state !== "held") return { outcome: "refused", state: before.state };
  if (!ctx.audit.healthy) return { outcome: "not-sent", reason: AUDIT_UNAVAILABLE };
  let upstream: UpstreamSession | null = null;
  let pending: HeldMessage | null;
  // Whether the stored bytes hold an 8-bit octet (`checkMessage` reads them); until read, taken as holding one.
  let eightBitContent = true;
  try {
    pending = before.expires > Date.now() ? await ctx.store.readMessage(id) : null;
  } catch (e) {
    // A part missing or altered, or the record sealed with another key (docs/approvals.md "Holding"): nothing can be
    // sent; it stays held, and can be denied (its details still open) or left to expire.
    if (!(e instanceof SealedRecordError)) throw e;
    const reason = cutText(`the stored message cannot be read: ${e.message}`, MAX_ROW_REASON);
    await written(
      ctx,
      approvalEvent(ctx, before, "APPROVE", "error", `approved by ${by}; not sent, still held: ${reason}`),
    );
    return { outcome: "not-sent", reason };
  }
  if (pending !== null) {
    try {
      // The stored bytes do not change: checked once, before anything goes upstream.
      const facts = checkMessage(pending);
      eightBitContent = facts.eightBit;
      const { upstream: opened, made } = await login(ctx, pending, facts, signal ?? null);
      if (signal?.aborted === true) {
        // Logged in just as the process began to stop: nothing is claimed.
        await opened.quit().catch(() => {});
        throw new Error(SHUTTING_DOWN);
      }
      try {
        // Nothing awaits from here to the claim: the config judged here is the one in force when it is claimed.
        stillSender(ctx, pending, facts, made);
        // 8-bit content to a server that did not offer 8BITMIME is refused before the claim (RFC 6152 §3): the
        // message stays held, to be denied, or approved again once the upstream offers 8BITMIME (docs/approvals.md).
        checkEightBit(opened, facts.eightBit);
      } catch (e) {
        await opened.quit().catch(() => {});
        throw e;
      }
      upstream = opened;
    } catch (e) {
      // A login cut off fails as a dropped connection would: the reason says why it was dropped.
      const reason = signal?.aborted === true ? SHUTTING_DOWN : cutText((e as Error).message, MAX_ROW_REASON);
      if (signal?.aborted === true) moduleLogger("approvals").warn(`approval ${id}: not sent, still held: ${reason}`);
      await written(
        ctx,
        approvalEvent(ctx, before, "APPROVE", "error", `approved by ${by}; not sent, still held: ${reason}`),
      );
      return { outcome: "not-sent", reason };
    }
  }
  // The login took time: the log may have failed meanwhile. Checked in the same turn as the claim below and the
  // queueing of its row, so that the log cannot refuse that row once the message is "sending".
  if (!ctx.audit.healthy) {
    await upstream?.quit().catch(() => {});
    return { outcome: "not-sent", reason: AUDIT_UNAVAILABLE };
  }
  // A message past its time is expired by the claim, which wipes its record: the sender's notice of the expiry
  // (onDecided, docs/approvals.md "notify_sender") needs its details, read first, as expireDue reads them.
  const now = Date.now();
  let record: HeldDetails | null;
  let claim: ReturnType<ApprovalStore["claim"]>;
  try {
    record = ctx.onDecided !== undefined && before.expires <= now ? detailsForNotice(ctx, id) : null;
    claim = ctx.store.claim(id, by, now);
  } catch (e) {
    // The state database failed (locked past its busy timeout, full, read-only): nothing was claimed or sent, and the
    // message is as it was. The connection logged in above goes too, rather than waiting for the upstream's timeout;
    // the attempt is a row, as a failed login is.
    await upstream?.quit().catch(() => {});
    await written(
      ctx,
      approvalEvent(
        ctx,
        before,
        "APPROVE",
        "error",
        `approved by ${by}; not sent, still held: the state database failed: ${errorMessage(e)}`,
      ),
    );
    throw e;
  }
  if (!claim.ok) {
    // An expiry the claim made is a state change too: its row is queued now, in the claim's turn, and then its
    // notices are asked for, as expireDue does. One made before (the expiry timer, another process, while the
    // message was read) has its row and its notices already.
    const expired =
      claim.expiredNow === true && claim.row !== null
        ? written(ctx, approvalEvent(ctx, claim.row, "APPROVAL EXPIRED", "deny", "no decision before it expired"))
        : null;
    if (expired !== null && claim.row !== null && record !== null) ctx.onDecided?.(claim.row, record);
    if (upstream !== null) await upstream.quit().catch(() => {});
    await expired;
    return { outcome: "refused", state: claim.state };
  }
  const { row, held } = claim;
  if (upstream === null || pending === null) {
    // Not reached: the login above runs whenever the claim can succeed (held, not expired, its record there).
    ctx.store.unclaim(id);
    return { outcome: "not-sent", reason: "not logged in upstream" };
  }
  const approved = approvalEvent(ctx, row, "APPROVE", "allow", `approved by ${by}`);
  const gate = new CommitGate(ctx.audit.durable(approved), () => ctx.audit.commitNow());
  let result: SendResult | null = null;
  let failure: Error | null = null;
  let endOfDataSent = false;
  try {
    result = await upstream.send(
      {
        from: held.envelope.from,
        recipients: held.envelope.recipients,
        eightBit: held.envelope.eightBit,
        eightBitContent,
      },
      source(pending.message),
      gate,
      signal ?? null,
    );
  } catch (e) {
    failure = e as Error;
  } finally {
    endOfDataSent = upstream.endOfDataSent;
    await upstream.quit().catch(() => {});
  }
  await gate.settled;
  if (gate.state() !== "committed") {
    // The APPROVE row is not on disk, so the final dot never went out (CommitGate: it waits for that commit, and a
    // failed one abandons the transaction): nothing was delivered. The message is held again, its record intact.
    ctx.store.unclaim(id);
    moduleLogger("approvals").error(
      `approval ${id}: not sent, held again: the audit log cannot be written: ` +
        `${gate.error?.message ?? failure?.message ?? "unknown error"}`,
    );
    return { outcome: "not-sent", reason: AUDIT_UNAVAILABLE };
  }
  if (failure instanceof SendStopped && !failure.endOfDataSent) {
    // Cut before the final dot went out: nothing was delivered (RFC 5321 §4.1.1.4), so it is held again, once a row
    // says so (its APPROVE row is on disk). Without that row it stays "sending", as below.
    const why = `${SHUTTING_DOWN} (the replay was stopped before its end of data)`;
    if (
      await written(ctx, approvalEvent(ctx, row, "APPROVE", "error", `approved by ${by}; not sent, held again: ${why}`))
    ) {
      ctx.store.unclaim(id);
      moduleLogger("approvals").warn(`approval ${id}: not sent, held again: ${why}`);
      return { outcome: "not-sent", reason: SHUTTING_DOWN };
    }
  }
  if (failure instanceof SendStopped) {
    // The dot may have gone out: only the upstream knows. Left "sending", as a killed process leaves it.
    moduleLogger("approvals").warn(
      `approval ${id}: the replay was cut off at shutdown: it stays sending; the next start marks it for a check`,
    );
    return { outcome: "interrupted" };
  }
  const reply =
    result !== null
      ? cutText(`${result.reply.code} ${result.reply.lines.at(-1) ?? ""}`, MAX_ROW_REASON)
      : cutText(`upstream failed: ${failure?.message ?? "unknown error"}`, MAX_ROW_REASON);
  if (result === null && endOfDataSent) {
    // The final dot went out and the reply never came (the connection was lost): only the upstream knows whether it
    // took the message. Never "failed" (the sender would be told it was not sent, and send it again): "needs-check"
    // at once, as a start after a killed process makes it, once its row is on disk (docs/approvals.md "What is
    // guaranteed"); without the row it stays "sending", which the next start turns into the same.
    const reason = `the reply to the end of data never came (${reply}): the upstream may or may not have it`;
    const recorded = await written(
      ctx,
      approvalEvent(ctx, row, "APPROVAL NEEDS CHECK", "error", `${reason}; not sent again`.slice(0, 400)),
    );
    if (recorded) ctx.store.needsCheck(id, "the reply to the end of data never came");
    moduleLogger("approvals").warn(`approval ${id}: needs a check: ${reason}`);
    return { outcome: "needs-check", reason, recorded };
  }
  // Refused for now (4xx, RFC 5321 §4.2.1), or the connection lost before the final dot went out (§4.1.1.4): nothing
  // was delivered, so the approved message is held again, once a row says so, and can be approved again when the
  // upstream takes mail; a permanent refusal (5xx) is the "failed" below.
  const temporary = result === null ? failure !== null : result.reply.code >= 400 && result.reply.code < 500;
  if (temporary) {
    const why = `not sent, held again: ${result === null ? reply : `upstream replied ${reply}`}`;
    if (await written(ctx, approvalEvent(ctx, row, "APPROVE", "error", `approved by ${by}; ${why}`))) {
      ctx.store.unclaim(id);
      moduleLogger("approvals").warn(`approval ${id}: ${why}`);
      return { outcome: "not-sent", reason: result === null ? reply : `upstream replied ${reply}` };
    }
    // Without that row it stays "sending" (the next start marks it needs-check), never "failed": nothing was
    // delivered, and a failed message's record is wiped.
    moduleLogger("approvals").error(`approval ${id}: ${why}, but its row could not be written: it stays sending`);
    return { outcome: "failed", reply, recorded: false };
  }
  const ok = result !== null && result.stage === "data" && result.reply.code >= 200 && result.reply.code < 300;
  // The outcome's row goes to disk before the state says so: a process killed in between leaves "sending", which
  // the next start turns into "needs-check" with a row of its own (recover), never a decided message without its
  // row. Only this caller moves the message out of "sending" (its claim), so the change cannot be refused.
  const recorded = await written(
    ctx,
    approvalEvent(ctx, row, "APPROVAL SENT", ok ? "allow" : "error", `upstream replied ${reply}`, {
      upstreamReply: reply,
    }),
  );
  // Not on disk: the message stays "sending", as if this process had been killed here (the next start turns it into
  // "needs-check" with its own row); the process log has the reply.
  if (!recorded) return { outcome: ok ? "sent" : "failed", reply, recorded };
  ctx.store.sent(id, ok, reply);
  const decided = ctx.store.row(id);
  if (decided !== null) ctx.onDecided?.(decided, held);
  return { outcome: ok ? "sent" : "failed", reply, recorded };
}

export type DenyResult =
  /** Denied (a held message) or discarded (a needs-check one): `state` is the one it had. */
  | { readonly outcome: "denied"; readonly state: "held" | "needs-check" }
  /** Nothing to deny: already decided, being sent, or unknown. */
  | { readonly outcome: "refused"; readonly state: ApprovalState | "unknown" }
  /**
   * The audit log cannot be written (AUDIT_UNAVAILABLE), or the message was past its time as it was denied yet could
   * not be expired: nothing changed, the message is as it was.
   */
  | { readonly outcome: "not-denied"; readonly reason: string };

/**
 * Denies (or discards a needs-check message). The DENY row is on disk before the change, so that no process, short-
 * lived (the command) or killed, can leave a denied message without it; when it cannot be written nothing changes
 * ("not-denied"). Should the state have moved on in between (another decider), the store refuses the change and an
 * `error` row follows the DENY row, saying it was not applied.
 */
export async function deny(ctx: ApprovalContext, id: string, by: string, reason: string | null): Promise<DenyResult> {
  const found = ctx.store.row(id);
  if (found === null) return { outcome: "refused", state: "unknown" };
  if (found.state !== "held" && found.state !== "needs-check") return { outcome: "refused", state: found.state };
  if (!ctx.audit.healthy) return { outcome: "not-denied", reason: AUDIT_UNAVAILABLE };
  // Past its time but not swept yet: it expires now, with the row and the notices of an expiry, not a denial.
  if (found.state === "held" && found.expires <= Date.now()) {
    expireDue(ctx);
    return { outcome: "refused", state: "expired" };
  }
  const why = `denied by ${by}${reason === null ? "" : `: ${reason}`}`;
  try {
    await ctx.audit.durable(approvalEvent(ctx, found, "DENY", "deny", why));
  } catch (e) {
    moduleLogger("approvals").error(
      `approval ${id}: not denied, nothing changed: its DENY row is not on disk: ${errorMessage(e)}`,
    );
    return { outcome: "not-denied", reason: AUDIT_UNAVAILABLE };
  }
  // A record that does not open (altered, or sealed under another key) is denied all the same, without the
  // sender's notice: a denial is the way to discard it (the page for it says so).
  const held = ctx.onDecided === undefined ? null : detailsForNotice(ctx, id, "is denied");
  let before: ApprovalState | "unknown";
  try {
    before = ctx.store.deny(id, by, reason);
  } catch (e) {
    await written(ctx, approvalEvent(ctx, found, "DENY", "error", `${why}; not applied: ${errorMessage(e)}`));
    throw e;
  }
  if (before === "expired" && ctx.store.row(id)?.state === "held") {
    // It reached its time while its DENY row went to disk (the store refuses to deny it then): it expires now, with
    // the row and the notices of an expiry, as above; the DENY error row below says the denial was not applied.
    expireDue(ctx);
    if (ctx.store.row(id)?.state === "held") {
      // The audit log failed meanwhile, so nothing expires (expireDue); or the clock went back since: not due any
      // more. Either way the message is as it was.
      const unexpired = ctx.audit.healthy
        ? "it was past its time as it was denied, and is not due now (the clock went back): try again"
        : AUDIT_UNAVAILABLE;
      await written(ctx, approvalEvent(ctx, found, "DENY", "error", `${why}; not applied: ${unexpired}`));
      return { outcome: "not-denied", reason: unexpired };
    }
  }
  const row = ctx.store.row(id);
  if ((before !== "held" && before !== "needs-check") || row === null) {
    await written(ctx, approvalEvent(ctx, found, "DENY", "error", `${why}; not applied: it is ${before}`));
    return { outcome: "refused", state: before };
  }
  if (before === "held" && held !== null) ctx.onDecided?.(row, held);
  return { outcome: "denied", state: before };
}

/**
 * The details a sender's notice of an expiry needs, read before the expiry wipes them; null when the record does not
 * open (altered, or sealed with another key: docs/approvals.md "Holding"): the message still expires, without that
 * notice, which could not name it.
 */
function detailsForNotice(ctx: ApprovalContext, id: string, what = "expires"): HeldDetails | null {
  const { held, unreadable } = ctx.store.readDetails(id);
  if (unreadable !== null)
    moduleLogger("approvals").warn(`approval ${id}: ${what} without the sender's notice: ${errorMessage(unreadable)}`);
  return held;
}

/**
 * Expires what is due; one audit row each, queued in the turn of the change. While the audit log cannot be written
 * nothing expires: the next check does it (serve checks every minute, or sooner), and approve() refuses an expired
 * message even before that.
 */
export function expireDue(ctx: ApprovalContext, now = Date.now()): ApprovalRow[] {
  if (!ctx.audit.healthy) return [];
  const records = new Map<string, HeldDetails>();
  if (ctx.onDecided !== undefined)
    for (const r of ctx.store.list())
      if (r.state === "held" && r.expires <= now) {
        const held = detailsForNotice(ctx, r.id);
        if (held !== null) records.set(r.id, held);
      }
  // Rows of messages decided long ago (DECIDED_APPROVALS_KEPT_MS): the table would otherwise grow for as long as
  // serve runs, and this check reads it every minute (docs/reliability.md "Long runs"). Before the expiry below: the
  // month is counted back from the newest change in the table, and the expiries this check makes are changes at its
  // own clock, which may be far ahead for a moment (docs/approvals.md "Limits").
  const pruned = ctx.store.pruneDecided(now);
  if (pruned > 0) moduleLogger("approvals").info(`approvals: ${pruned} row(s) of messages decided long ago removed`);
  const due = ctx.store.expireDue(now);
  removeOrphans(ctx);
  // Every row is queued before anything else runs: none can be refused, and one notice cannot hold up another's row.
  for (const row of due)
    void written(ctx, approvalEvent(ctx, row, "APPROVAL EXPIRED", "deny", "no decision before it expired"));
  for (const row of due) {
    const held = records.get(row.id);
    const expired = ctx.store.row(row.id);
    if (held !== undefined && expired !== null) ctx.onDecided?.(expired, held);
  }
  return due;
}

/**
 * Parts of a message that was never recorded (ApprovalStore.removeOrphanParts), at start and with each expiry check
 * (the audit log writable): the agent got no 250. Its DATA row names the id; this one says nothing was held under it.
 */
function removeOrphans(ctx: ApprovalContext): void {
  for (const id of ctx.store.removeOrphanParts())
    void written(
      ctx,
      approvalEvent(ctx, { id, rule: null, ruleIndex: null, agent: null }, "DATA", "error", ORPHAN_REASON),
    );
}

/**
 * At start: "sending" left by a dead process becomes "needs-check" (never sent again); one audit row each, queued in
 * the turn of the change. While the audit log cannot be written nothing changes: such a message stays "sending",
 * which nothing sends either, until a start that finds the log writable.
 */
export function recover(ctx: ApprovalContext): ApprovalRow[] {
  if (!ctx.audit.healthy) return [];
  removeOrphans(ctx);
  const stuck = ctx.store.recover();
  for (const row of stuck)
    void written(
      ctx,
      approvalEvent(
        ctx,
        row,
        "APPROVAL NEEDS CHECK",
        "error",
        "the process stopped during the replay: the upstream may or may not have accepted it; not sent again",
      ),
    );
  return stuck;
}
