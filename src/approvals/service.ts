/**
 * Deciding held messages (docs/approvals.md "Deciding"): approve (claim, replay the stored bytes and envelope
 * upstream, record the reply), deny, expire, and the start-up check of messages a dead process left "sending".
 * Used by `serve` (the approval page, the expiry timer) and by `mailgator approvals` alike; every step is an audit
 * row with the message id (as target) and the rule that asked.
 */

import { randomBytes } from "node:crypto";
import type { AccountCredentials } from "../accounts/index.ts";
import type { AuditEvent, AuditLog } from "../audit/index.ts";
import type { Config } from "../config/types.ts";
import { smtpUpstreamTarget } from "../smtp/index.ts";
import { SPOOL_BLOCK } from "../smtp/spool.ts";
import { CommitGate, type MessageSource, openAccountUpstream, UpstreamSession } from "../smtp/upstream.ts";
import type { ApprovalRow, ApprovalState, ApprovalStore, HeldMessage } from "./store.ts";

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
  readonly onDecided?: ((row: ApprovalRow, held: HeldMessage) => void) | undefined;
}

export type ApproveResult =
  | { readonly outcome: "sent" | "failed"; readonly reply: string }
  | { readonly outcome: "refused"; readonly state: ApprovalState | "unknown" }
  /** The upstream login failed before the claim: nothing was sent and the message is still held. */
  | { readonly outcome: "not-sent"; readonly reason: string };

/** One audit row about a held message. */
export function approvalEvent(
  ctx: ApprovalContext,
  row: Pick<ApprovalRow, "id" | "rule" | "ruleIndex" | "agent">,
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
    reason: reason.slice(0, 300),
    configRevision: ctx.config.revision,
    detail,
  };
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

/**
 * Connects and logs in upstream as the held message's sender: the agent's stored login (pass-through), the
 * account's password, or an OAuth2 access token from the token manager, refreshed when the upstream refuses the
 * cached one (openAccountUpstream, the same code the proxy's sessions log in with).
 */
async function login(ctx: ApprovalContext, held: HeldMessage): Promise<UpstreamSession> {
  const smtp = ctx.config.smtp;
  if (smtp === null) throw new Error("the config has no [smtp] section to send through");
  const target = smtpUpstreamTarget(smtp);
  if (held.credentials !== null) return UpstreamSession.open(target, held.credentials);
  const account = held.account === null ? undefined : ctx.config.accounts[held.account];
  if (account === undefined) throw new Error(`account ${JSON.stringify(held.account)} is no longer configured`);
  return openAccountUpstream(target, account, ctx.credentials);
}

/**
 * Approves and sends, exactly once among concurrent deciders: only the caller whose claim moves the message from
 * "held" to "sending" replays it. The upstream login comes first: when it fails (an OAuth2 account that needs
 * re-authorization, an upstream that cannot be reached) nothing was sent and the message stays held. The approval
 * row is on disk before the message reaches the upstream (docs/approvals.md "Deciding").
 */
export async function approve(ctx: ApprovalContext, id: string, by: string): Promise<ApproveResult> {
  let upstream: UpstreamSession | null = null;
  const before = ctx.store.row(id);
  const pending = before?.state === "held" && before.expires > Date.now() ? ctx.store.message(id) : null;
  if (before !== null && pending !== null) {
    try {
      upstream = await login(ctx, pending);
    } catch (e) {
      const reason = (e as Error).message.slice(0, 300);
      ctx.audit.record(
        approvalEvent(ctx, before, "APPROVE", "error", `approved by ${by}; not sent, still held: ${reason}`),
      );
      return { outcome: "not-sent", reason };
    }
  }
  const claim = ctx.store.claim(id, by);
  if (!claim.ok) {
    if (upstream !== null) await upstream.quit().catch(() => {});
    if (claim.state === "expired" && claim.row !== null)
      ctx.audit.record(approvalEvent(ctx, claim.row, "APPROVAL EXPIRED", "deny", "no decision before it expired"));
    return { outcome: "refused", state: claim.state };
  }
  const { row, held } = claim;
  const approved = approvalEvent(ctx, row, "APPROVE", "allow", `approved by ${by}`);
  const gate = new CommitGate(ctx.audit.durable(approved), () => ctx.audit.commitNow());
  let reply: string;
  let ok: boolean;
  try {
    upstream ??= await login(ctx, held);
    try {
      const result = await upstream.send(
        { from: held.envelope.from, recipients: held.envelope.recipients, eightBit: held.envelope.eightBit },
        source(held.message),
        gate,
      );
      ok = result.stage === "data" && result.reply.code >= 200 && result.reply.code < 300;
      reply = `${result.reply.code} ${result.reply.lines.at(-1) ?? ""}`.slice(0, 300);
    } finally {
      await upstream.quit().catch(() => {});
    }
  } catch (e) {
    ok = false;
    reply = `upstream failed: ${(e as Error).message}`.slice(0, 300);
  }
  ctx.store.sent(id, ok, reply);
  ctx.audit.record(
    approvalEvent(ctx, row, "APPROVAL SENT", ok ? "allow" : "error", `upstream replied ${reply}`, {
      upstreamReply: reply,
    }),
  );
  const decided = ctx.store.row(id);
  if (decided !== null) ctx.onDecided?.(decided, held);
  return { outcome: ok ? "sent" : "failed", reply };
}

/** Denies (or discards a needs-check message); returns the state found before. */
export function deny(ctx: ApprovalContext, id: string, by: string, reason: string | null): ApprovalState | "unknown" {
  const held = ctx.onDecided === undefined ? null : ctx.store.message(id);
  const before = ctx.store.deny(id, by, reason);
  const row = ctx.store.row(id);
  if ((before === "held" || before === "needs-check") && row !== null)
    ctx.audit.record(approvalEvent(ctx, row, "DENY", "deny", `denied by ${by}${reason === null ? "" : `: ${reason}`}`));
  if (before === "held" && row !== null && held !== null) ctx.onDecided?.(row, held);
  return before;
}

/** Expires what is due; one audit row each. */
export function expireDue(ctx: ApprovalContext, now = Date.now()): ApprovalRow[] {
  const records = new Map<string, HeldMessage>();
  if (ctx.onDecided !== undefined)
    for (const r of ctx.store.list())
      if (r.state === "held" && r.expires <= now) {
        const held = ctx.store.message(r.id);
        if (held !== null) records.set(r.id, held);
      }
  const due = ctx.store.expireDue(now);
  for (const row of due) {
    ctx.audit.record(approvalEvent(ctx, row, "APPROVAL EXPIRED", "deny", "no decision before it expired"));
    const held = records.get(row.id);
    const expired = ctx.store.row(row.id);
    if (held !== undefined && expired !== null) ctx.onDecided?.(expired, held);
  }
  return due;
}

/** At start: "sending" left by a dead process becomes "needs-check" (never sent again); one audit row each. */
export function recover(ctx: ApprovalContext): ApprovalRow[] {
  const stuck = ctx.store.recover();
  for (const row of stuck)
    ctx.audit.record(
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
