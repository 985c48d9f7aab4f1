/**
 * RENAME (RFC 3501 §6.3.5; folder:write at both names): never INBOX, never into a hidden subtree, and refused where
 * a folder below is hidden or not the agent's to rename.
 */

import { Refusal } from "../refusal.ts";
import type { CommandOf, Session } from "./context.ts";
import { children, upstreamStatus, visibleFolder } from "./shared.ts";

/** One answer whether folders below are hidden by the rules, exist and are hidden, or exist and are read-only. */
const SUBTREE_RENAME = "Not permitted: folders below it are not all the agent's to rename";

export async function rename(s: Session, cmd: CommandOf<"RENAME">): Promise<void> {
  const p = visibleFolder(s, "RENAME", "folder:write", cmd.mailbox);
  // RENAME INBOX moves every message, hidden ones included (RFC 3501 §6.3.5, docs/protocol.md §7.25).
  if (cmd.mailbox === "INBOX") {
    s.auditRow({
      command: "RENAME",
      operation: "folder:write",
      folder: p,
      decision: "deny",
      rule: null,
      ruleIndex: null,
      reason: "RENAME INBOX is never allowed",
    });
    throw new Refusal("NO", "NOPERM", "Not permitted: RENAME INBOX");
  }
  if (s.names.invalid(cmd.newName)) {
    s.auditRow({
      command: "RENAME",
      operation: "folder:write",
      folder: p,
      target: cmd.newName,
      decision: "deny",
      rule: null,
      ruleIndex: null,
      reason: "invalid new mailbox name",
    });
    throw new Refusal("NO", "CANNOT", "Invalid mailbox name");
  }
  const np = s.names.toPolicy(cmd.newName);
  const d = s.require("RENAME", "folder:write", p, np);
  s.require("RENAME", "folder:write", np, p);
  for (const a of s.names.ancestors(cmd.newName)) {
    if (!s.rights.visible(s.names.toPolicy(a))) {
      s.auditRow({
        command: "RENAME",
        operation: "folder:write",
        folder: p,
        target: np,
        decision: "deny",
        rule: null,
        ruleIndex: null,
        reason: `new parent folder ${a} is hidden`,
      });
      throw new Refusal("NO", "NOPERM", "Not permitted: folder:write here");
    }
  }
  if (!s.rights.subtreeVisible(p)) {
    s.auditRow({
      command: "RENAME",
      operation: "folder:write",
      folder: p,
      target: np,
      decision: "deny",
      rule: null,
      ruleIndex: null,
      reason: "the rules may hide folders below it",
    });
    throw new Refusal("NO", "NOPERM", SUBTREE_RENAME);
  }
  for (const child of await children(s, cmd.mailbox)) {
    const cp = s.names.toPolicy(child);
    const moved = s.names.toPolicy(cmd.newName + child.slice(cmd.mailbox.length));
    if (!s.rights.visible(cp) || !s.rights.may("folder:write", cp) || !s.rights.may("folder:write", moved)) {
      s.auditRow({
        command: "RENAME",
        operation: "folder:write",
        folder: p,
        decision: "deny",
        rule: null,
        ruleIndex: null,
        reason: "a child folder is hidden or may not be renamed",
      });
      throw new Refusal("NO", "NOPERM", SUBTREE_RENAME);
    }
  }
  await s.auditDurable({
    command: "RENAME",
    operation: "folder:write",
    folder: p,
    target: np,
    decision: "allow",
    rule: d.rule,
    ruleIndex: d.ruleIndex,
    reason: d.reason,
  });
  const st = await s.upstreamRun({ name: "RENAME", mailbox: cmd.mailbox, newName: cmd.newName });
  upstreamStatus(s, cmd.tag, st);
}
