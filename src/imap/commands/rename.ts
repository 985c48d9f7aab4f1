/**
 * RENAME (RFC 3501 §6.3.5; folder:write at both names, and what a MOVE of every message needs: mail:read and mail:move
 * at the old name, mail:append at the new): never INBOX, never into a hidden subtree, never from or to a filtered
 * folder, and refused where a folder below is hidden, filtered or not the agent's to rename.
 */

import type { Operation } from "../../policy/index.ts";
import { Refusal } from "../refusal.ts";
import { type CommandOf, cites, type Decided, type Session } from "./context.ts";
import {
  closeForFolderWrite,
  filteringRule,
  folderWriteRefusal,
  judgedWithChildren,
  upstreamStatus,
  visibleFolder,
} from "./shared.ts";

/** One answer whether folders below are hidden by the rules, exist and are hidden, or exist and are read-only. */
const SUBTREE_RENAME = "Not permitted: folders below it are not all the agent's to rename";

/** What moving a folder's messages from `from` to `to` needs, as MOVE does: read and move there, append here. */
const MESSAGE_RIGHTS = (from: string, to: string): [Operation, string][] => [
  ["mail:read", from],
  ["mail:move", from],
  ["mail:append", to],
];

export async function rename(s: Session, cmd: CommandOf<"RENAME">): Promise<void> {
  // The folder, its new name and the folders below it, by one config across the listing (judgedWithChildren).
  const across = await judgedWithChildren(s, "RENAME", cmd.mailbox, () => judgeFolder(s, cmd));
  if (across === null) return;
  const { p, np, d } = across.judged;
  judgeChildren(s, cmd, p, np, across.below);
  await s.auditDurable({
    command: "RENAME",
    operation: "folder:write",
    folder: p,
    target: np,
    decision: "allow",
    ...cites(d),
    reason: d.reason,
  });
  // The selected folder, or one below the renamed folder, is deselected first, as DELETE does: its view and the rules
  // it was opened under belong to the old name, and Dovecot ends a session whose selected folder was renamed ("Mailbox
  // was deleted under us"). The agent is told (`[CLOSED]`); its next message command gets `BAD` (docs/protocol.md §1).
  if (s.box !== null && s.names.within(s.box.name, cmd.mailbox)) await closeForFolderWrite(s, cmd.name);
  const st = await s.upstreamWrite({ name: "RENAME", mailbox: cmd.mailbox, newName: cmd.newName });
  upstreamStatus(s, cmd.tag, st);
}

/** The folder's and the new name's own checks, by the rules in force now: their policy names and the decision. */
function judgeFolder(s: Session, cmd: CommandOf<"RENAME">): { p: string; np: string; d: Decided } {
  const p = visibleFolder(s, "RENAME", "folder:write", cmd.mailbox);
  const refuse = folderWriteRefusal(s, "RENAME", p);
  // RENAME INBOX moves every message, hidden ones included (RFC 3501 §6.3.5, docs/protocol.md §7.25).
  if (cmd.mailbox === "INBOX") refuse("RENAME INBOX is never allowed", "NOPERM", "Not permitted: RENAME INBOX", null);
  const uncreatable = s.names.uncreatableWhy(cmd.newName);
  if (uncreatable !== null)
    refuse(`invalid new mailbox name: ${uncreatable}`, "CANNOT", "Invalid mailbox name", cmd.newName);
  const np = s.names.toPolicy(cmd.newName);
  const d = s.require("RENAME", "folder:write", p, np);
  s.require("RENAME", "folder:write", np, p);
  for (const a of s.names.ancestors(cmd.newName)) {
    if (!s.rights.visible(s.names.toPolicy(a)))
      refuse(`new parent folder ${a} is hidden`, "NOPERM", "Not permitted: folder:write here", np);
  }
  // A filtered folder holds messages the agent does not see (docs/filtering.md); RENAME moves every message with the
  // folder (RFC 3501 §6.3.5), hidden ones included, as RENAME INBOX would. A filtered new name is refused as well,
  // even with the same filter: the rules, not the folder's contents, decide (docs/imap.md "Decisions").
  for (const [name, role] of [
    [p, "folder"],
    [np, "new name"],
  ] as const) {
    const f = filteringRule(s, name);
    if (f === null) continue;
    const why = `the ${role} ${name} is filtered: its messages are decided one by one, and RENAME moves them all`;
    refuse(why, "NOPERM", "Not permitted: folder:write in this folder", np, f);
  }
  // RENAME carries every message to the new name (RFC 3501 §6.3.5): a MOVE of all of them, so it needs what MOVE
  // needs (docs/config.md "Operations"): mail:read and mail:move at the old name, mail:append at the new. Else a
  // folder the agent may not read, or not empty, would be renamed to where it may read or delete its messages.
  for (const [op, name] of MESSAGE_RIGHTS(p, np)) s.require("RENAME", op, name, name === p ? np : p);
  if (!s.rights.subtreeVisible(p)) refuse("the rules may hide folders below it", "NOPERM", SUBTREE_RENAME, np);
  return { p, np, d };
}

/** The folders below `p` (`children`), and where they would go, by the rules in force now. */
function judgeChildren(
  s: Session,
  cmd: CommandOf<"RENAME">,
  p: string,
  np: string,
  below: readonly (string | null)[],
): void {
  const refuse = folderWriteRefusal(s, "RENAME", p);
  for (const child of below) {
    if (child === null) return refuse("a child folder is hidden or may not be renamed", "NOPERM", SUBTREE_RENAME, null);
    const cp = s.names.toPolicy(child);
    const moved = s.names.toPolicy(cmd.newName + child.slice(cmd.mailbox.length));
    if (!s.rights.visible(cp) || !s.rights.may("folder:write", cp) || !s.rights.may("folder:write", moved))
      refuse("a child folder is hidden or may not be renamed", "NOPERM", SUBTREE_RENAME, null);
    // A child that is filtered, or would be once renamed, moves hidden messages too: the same answer as above.
    for (const name of [cp, moved]) {
      const f = filteringRule(s, name);
      if (f === null) continue;
      const why = `folder ${name} below it is filtered: its messages are decided one by one, and RENAME moves them all`;
      refuse(why, "NOPERM", SUBTREE_RENAME, np, f);
    }
    // Its messages move too: what RENAME of the folder itself needs (above), with the words for a folder below.
    for (const [op, name] of MESSAGE_RIGHTS(cp, moved)) {
      const md = s.decide(op, name);
      if (md.action === "allow") continue;
      s.auditRow({
        command: "RENAME",
        operation: op,
        folder: name,
        target: np,
        decision: "deny",
        ...cites(md),
        reason: `folder ${cp} below it: ${md.reason}`,
      });
      throw new Refusal("NO", "NOPERM", SUBTREE_RENAME);
    }
  }
}
