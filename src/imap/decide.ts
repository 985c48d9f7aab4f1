/**
 * The IMAP proxy's decision path for one request, without a connection (docs/imap.md, docs/filtering.md): what
 * `mailgator explain` answers for a folder or message operation. Pure: no I/O. Built only from the functions the
 * session itself calls, in the order its commands reach them:
 *
 * 1. `Policy.folderVisible` (through `FolderRights.visible`): LIST shows the folder, and every command that names
 *    it finds it; a hidden folder does not exist for the agent, whatever the operation.
 * 2. `decideInFolder` (through `ImapSession.require`): the operation check of each command. Operations on the
 *    selected mailbox (`mail:read`, `mail:flag`, `mail:delete`, `mail:move`) need SELECT or EXAMINE first, which
 *    checks `folder:read` (RFC 9051 §6.3.2: those commands are valid only in the selected state).
 * 3. `messageFilter(...).decide` (the classification of a filtered folder): which messages exist for the agent.
 *    Every command on the selected mailbox reaches visible messages only, so this step applies to all four.
 */

import type { Decision, Field, Operation, Outcome, Policy } from "../policy/index.ts";
import { type MessageFacts, messageFilter } from "./classify.ts";
import { decideInFolder } from "./filtering.ts";

/** Operations on the selected mailbox: SELECT or EXAMINE (folder:read) comes first, and hidden messages are absent. */
export const SELECTED_MAILBOX_OPERATIONS: ReadonlySet<Operation> = new Set<Operation>([
  "mail:read",
  "mail:flag",
  "mail:delete",
  "mail:move",
]);

/**
 * What an operation on the selected mailbox needs there besides itself: a MOVE carries the messages whole into the
 * destination, so it reads them (commands/copy.ts; docs/config.md "Operations").
 */
export const ALSO_NEEDS: Readonly<Partial<Record<Operation, readonly Operation[]>>> = { "mail:move": ["mail:read"] };

export interface ImapStep {
  readonly operation: Operation;
  /** `decideInFolder`: the proxy goes on only when this allows. */
  readonly decision: Decision;
}

export interface ImapVerdict {
  readonly operation: Operation;
  readonly folder: string;
  /** Step 1: the folder is listed and can be named. */
  readonly visible: boolean;
  /** Step 2, in order: SELECT's folder:read (for operations on the selected mailbox), then the operation's own. */
  readonly steps: readonly ImapStep[];
  /** True when which messages the agent sees here depends on message fields (a filtered folder). */
  readonly filtered: boolean;
  /**
   * Step 3 for a message with the given facts: the filter's decision when it could run; undecided when a field it
   * tests was not given; null when the folder alone decides, or an earlier step already refused.
   */
  readonly message: Outcome | null;
  /** allow, deny, or undecided (a message field the answer depends on was not given). */
  readonly action: "allow" | "deny" | "undecided";
  /** The decision that settles it (the refusing one, or the last that allowed); null when undecided. */
  readonly decision: Decision | null;
  /**
   * folder:write only: whether DELETE and RENAME find every folder below visible (`Policy.subtreeVisible`, as
   * `FolderRights.subtreeVisible`), whether DELETE's mail:delete check allows, whether RENAME's mail:read and
   * mail:move checks at the old name allow (commands/rename.ts: it moves every message, as MOVE would), and whether
   * the folder is filtered (DELETE and RENAME refuse it: commands/shared.ts `filteringRule`); null for other
   * operations.
   */
  readonly subtree: {
    readonly visible: boolean;
    readonly mailDelete: Decision;
    readonly mailRead: Decision;
    readonly mailMove: Decision;
    readonly filtered: boolean;
  } | null;
}

/**
 * The proxy's answer to `operation` in `folder` (rule syntax: `/`-separated) for `agent`, for a message with
 * `facts` (fields left undefined are unknown). `ask` is not allow: the proxy refuses it (approvals are not
 * available yet), and a read it leaves undecided hides the message.
 */
export function decideImap(
  policy: Policy,
  operation: Operation,
  folder: string,
  agent: string | null,
  facts: MessageFacts = {},
): ImapVerdict {
  const visible = policy.folderVisible(folder, agent);
  const subtree =
    operation === "folder:write" && visible
      ? {
          visible: policy.subtreeVisible(folder, agent),
          mailDelete: notAllowed(decideInFolder(policy, "mail:delete", folder, agent)),
          mailRead: notAllowed(decideInFolder(policy, "mail:read", folder, agent)),
          mailMove: notAllowed(decideInFolder(policy, "mail:move", folder, agent)),
          filtered: messageFilter(policy, folder, agent) !== null,
        }
      : null;
  const base = { operation, folder, visible, subtree };
  if (!visible) {
    // The proxy audits a hidden folder with the operation's own decision (commands/shared.ts visibleFolder).
    const decision = decideInFolder(policy, operation, folder, agent);
    return { ...base, steps: [], filtered: false, message: null, action: "deny", decision: hidden(decision) };
  }
  const selected = SELECTED_MAILBOX_OPERATIONS.has(operation);
  const ops: Operation[] = selected ? ["folder:read", ...(ALSO_NEEDS[operation] ?? []), operation] : [operation];
  const steps: ImapStep[] = [];
  for (const op of ops) {
    const decision = decideInFolder(policy, op, folder, agent);
    steps.push({ operation: op, decision });
    if (decision.action !== "allow") {
      return { ...base, steps, filtered: false, message: null, action: "deny", decision: notAllowed(decision) };
    }
  }
  const last = steps[steps.length - 1]!.decision;
  const filter = selected ? messageFilter(policy, folder, agent) : null;
  if (filter === null) return { ...base, steps, filtered: false, message: null, action: "allow", decision: last };
  const missing: Field[] = [...filter.needs].filter((field) => facts[field] === undefined);
  if (missing.length > 0) {
    const partial = policy.evaluatePartial({ operation: filter.operation, folder, agent, ...facts });
    if (!partial.decided) {
      return { ...base, steps, filtered: true, message: partial, action: "undecided", decision: null };
    }
  }
  const decision = filter.decide(facts);
  const shown = decision.action === "allow";
  return {
    ...base,
    steps,
    filtered: true,
    message: { decided: true, decision },
    action: shown ? "allow" : "deny",
    decision: shown ? decision : { ...notAllowed(decision), reason: `message hidden: ${decision.reason}` },
  };
}

function hidden(decision: Decision): Decision {
  return { ...decision, action: "deny", reason: `hidden folder; ${decision.reason}` };
}

function notAllowed(decision: Decision): Decision {
  if (decision.action !== "ask") return decision;
  return { ...decision, action: "deny", reason: `${decision.reason}; approvals are not available yet, so ask refuses` };
}
