/** SUBSCRIBE and UNSUBSCRIBE (RFC 3501 §6.3.6, §6.3.7; folder:write). */

import { type CommandOf, cites, type Session } from "./context.ts";
import { upstreamStatus, visibleFolder } from "./shared.ts";

export async function subscribe(s: Session, cmd: CommandOf<"SUBSCRIBE" | "UNSUBSCRIBE">): Promise<void> {
  const p = visibleFolder(s, cmd.name, "folder:write", cmd.mailbox);
  const d = s.require(cmd.name, "folder:write", p);
  await s.auditDurable({
    command: cmd.name,
    operation: "folder:write",
    folder: p,
    target: null,
    decision: "allow",
    ...cites(d),
    reason: d.reason,
  });
  const st = await s.upstreamWrite({ name: cmd.name, mailbox: cmd.mailbox });
  upstreamStatus(s, cmd.tag, st, true);
}
