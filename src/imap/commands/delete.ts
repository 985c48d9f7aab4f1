/**
 * DELETE (RFC 3501 §6.3.4; folder:write and mail:delete): refused for a filtered folder, and where the rules may hide
 * a folder below, or where a folder below is filtered or not the agent's to delete, with one answer for all those.
 */

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
const SUBTREE_DELETE = "Not permitted: folders below it are not all the agent's to delete";

export async function remove(s: Session, cmd: CommandOf<"DELETE">): Promise<void> {
  // The folder and the folders below it, by one config across the listing (judgedWithChildren).
  const across = await judgedWithChildren(s, "DELETE", cmd.mailbox, () => judgeFolder(s, cmd));
  if (across === null) return;
  const { p, d } = across.judged;
  judgeChildren(s, p, across.below);
  await s.auditDurable({
    command: "DELETE",
    operation: "folder:write",
    folder: p,
    target: null,
    decision: "allow",
    ...cites(d),
    reason: d.reason,
  });
  // The selected folder in any spelling of its INBOX level: upstream would end the session for a deleted selected one.
  if (s.box !== null && s.names.same(s.box.name, cmd.mailbox)) await closeForFolderWrite(s, cmd.name);
  const st = await s.upstreamWrite({ name: "DELETE", mailbox: cmd.mailbox });
  upstreamStatus(s, cmd.tag, st);
}

/** The folder's own checks, by the rules in force now: its policy name and the decision that allows it. */
function judgeFolder(s: Session, cmd: CommandOf<"DELETE">): { p: string; d: Decided } {
  const p = visibleFolder(s, "DELETE", "folder:write", cmd.mailbox);
  const refuse = folderWriteRefusal(s, "DELETE", p);
  if (cmd.mailbox === "INBOX") refuse("INBOX cannot be deleted (RFC 3501 §6.3.4)", "CANNOT", "INBOX cannot be deleted");
  const d = s.require("DELETE", "folder:write", p);
  // DELETE destroys the messages and, upstream, may affect children: every one must be the agent's to change.
  s.require("DELETE", "mail:delete", p);
  // A filtered folder holds messages the agent does not see (docs/filtering.md): DELETE would destroy them. The rules
  // decide, whether or not a hidden message is there now (docs/imap.md "Decisions").
  const filtered = filteringRule(s, p);
  if (filtered !== null) {
    const why = "the folder is filtered: its messages are decided one by one, and DELETE destroys them all";
    refuse(why, "NOPERM", "Not permitted: folder:write in this folder", null, filtered);
  }
  // Whether a hidden child exists must not change the answer: where the rules could hide one, DELETE is refused
  // whatever lies below, with the words used for a child the agent sees but may not delete.
  if (!s.rights.subtreeVisible(p)) refuse("the rules may hide folders below it", "NOPERM", SUBTREE_DELETE);
  return { p, d };
}

/** The folders below `p` (`children`), by the rules in force now: each must be the agent's to delete. */
function judgeChildren(s: Session, p: string, below: readonly (string | null)[]): void {
  const refuse = folderWriteRefusal(s, "DELETE", p);
  for (const child of below) {
    if (child === null)
      return refuse("a child folder is hidden or not the agent's to delete", "NOPERM", SUBTREE_DELETE);
    const cp = s.names.toPolicy(child);
    if (!s.rights.visible(cp) || !s.rights.may("folder:write", cp) || !s.rights.may("mail:delete", cp))
      refuse("a child folder is hidden or not the agent's to delete", "NOPERM", SUBTREE_DELETE);
    const f = filteringRule(s, cp);
    if (f !== null) {
      const why = `folder ${cp} below it is filtered: its messages are decided one by one, and DELETE destroys them`;
      refuse(why, "NOPERM", SUBTREE_DELETE, null, f);
    }
  }
}
