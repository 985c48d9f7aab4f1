/** STATUS (RFC 3501 §6.3.10; folder:read): in a filtered folder, counts over the visible messages only. */

import { messageFilter } from "../classify.ts";
import { auditedFilteredStatus } from "../filtering.ts";
import { type CommandOf, cites, type Session } from "./context.ts";
import { agentStatus, checkStatusItems, relayUpdate, upstreamStatus, visibleFolder } from "./shared.ts";

export async function status(s: Session, cmd: CommandOf<"STATUS">): Promise<void> {
  // The items first, whatever the name: HIGHESTMODSEQ enables CONDSTORE even for a name upstream does not have, so a
  // hidden name must enable it too, and an item no STATUS takes is refused alike for both (docs/protocol.md §0.5).
  // HIGHESTMODSEQ is 0 in a filtered folder (src/imap/filtering.ts).
  await checkStatusItems(s, cmd.items);
  const p = visibleFolder(s, "STATUS", "folder:read", cmd.mailbox);
  const d = s.require("STATUS", "folder:read", p);
  const filter = messageFilter(s.ctx.policy, p, s.agent);
  const row = {
    command: "STATUS",
    operation: "folder:read",
    folder: p,
    decision: "allow",
    ...cites(d),
    reason: d.reason,
  } as const;
  if (filter !== null) {
    // A filtered folder: counts over visible messages only (docs/protocol.md §7.8). Allowed, then not counted (no
    // such mailbox upstream, say): the row of the allow, as an unfiltered folder has before upstream answers, with
    // what stopped it; then the refusal or failure as it was thrown.
    const counted = await auditedFilteredStatus(s, cmd.mailbox, cmd.items, filter, row);
    s.send({ type: "STATUS", raw: "", mailbox: cmd.mailbox, items: counted.items });
    return s.tagged(cmd.tag, "OK", null, "Status completed");
  }
  s.auditRow(row);
  const st = await s.upstreamRun({ name: "STATUS", mailbox: cmd.mailbox, items: cmd.items }, (r) => {
    if (r.type !== "STATUS") return relayUpdate(s, r);
    const out = agentStatus(r, cmd.mailbox, cmd.items);
    if (out !== null) s.send(out);
  });
  upstreamStatus(s, cmd.tag, st, true);
}
