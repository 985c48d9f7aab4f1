/**
 * DELETE (RFC 3501 §6.3.4; folder:write and mail:delete): refused where the rules may hide a folder below, or where
 * a folder below is not the agent's to delete, with one answer for all those cases.
 */

import { Refusal } from "../refusal.ts";
import type { CommandOf, Session } from "./context.ts";
import { children, deselect, upstreamStatus, visibleFolder } from "./shared.ts";

/** One answer whether folders below are hidden by the rules, exist and are hidden, or exist and are read-only. */
const SUBTREE_DELETE = "Not permitted: folders below it are not all the agent's to delete";

export async function remove(s: Session, cmd: CommandOf<"DELETE">): Promise<void> {
  const p = visibleFolder(s, "DELETE", "folder:write", cmd.mailbox);
  if (cmd.mailbox === "INBOX") {
    s.auditRow({
      command: "DELETE",
      operation: "folder:write",
      folder: p,
      decision: "deny",
      rule: null,
      ruleIndex: null,
      reason: "INBOX cannot be deleted (RFC 3501 §6.3.4)",
    });
    throw new Refusal("NO", "CANNOT", "INBOX cannot be deleted");
  }
  const d = s.require("DELETE", "folder:write", p);
  // DELETE destroys the messages and, upstream, may affect children: every one must be the agent's to change.
  s.require("DELETE", "mail:delete", p);
  // Whether a hidden child exists must not change the answer: where the rules could hide one, DELETE is refused
  // whatever lies below, with the words used for a child the agent sees but may not delete.
  if (!s.rights.subtreeVisible(p)) {
    s.auditRow({
      command: "DELETE",
      operation: "folder:write",
      folder: p,
      decision: "deny",
      rule: null,
      ruleIndex: null,
      reason: "the rules may hide folders below it",
    });
    throw new Refusal("NO", "NOPERM", SUBTREE_DELETE);
  }
  for (const child of await children(s, cmd.mailbox)) {
    const cp = s.names.toPolicy(child);
    if (!s.rights.visible(cp) || !s.rights.may("folder:write", cp) || !s.rights.may("mail:delete", cp)) {
      s.auditRow({
        command: "DELETE",
        operation: "folder:write",
        folder: p,
        decision: "deny",
        rule: null,
        ruleIndex: null,
        reason: "a child folder is hidden or not the agent's to delete",
      });
      throw new Refusal("NO", "NOPERM", SUBTREE_DELETE);
    }
  }
  await s.auditDurable({
    command: "DELETE",
    operation: "folder:write",
    folder: p,
    target: null,
    decision: "allow",
    rule: d.rule,
    ruleIndex: d.ruleIndex,
    reason: d.reason,
  });
  if (s.box !== null && s.box.name === cmd.mailbox) await deselect(s);
  const st = await s.upstreamRun({ name: "DELETE", mailbox: cmd.mailbox });
  upstreamStatus(s, cmd.tag, st);
}
