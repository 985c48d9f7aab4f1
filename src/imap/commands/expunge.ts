/** EXPUNGE and UID EXPUNGE (RFC 3501 §6.4.3, RFC 4315 §2.1; mail:delete): only the agent's visible messages. */

import { type CommandOf, cites, type Session } from "./context.ts";
import { auditedExpunge, auditProbe, refuseReadOnly } from "./shared.ts";

export async function expunge(s: Session, cmd: CommandOf<"EXPUNGE">): Promise<void> {
  const box = s.box!;
  const p = box.policyName;
  const command = cmd.uid ? "UID EXPUNGE" : "EXPUNGE";
  if (cmd.set !== null) auditProbe(s, command, "mail:delete", cmd.set);
  const d = s.require(command, "mail:delete", p);
  refuseReadOnly(s, command, "mail:delete");
  const within = cmd.set === null ? null : box.uidsFromUidSet(cmd.set);
  await s.auditDurable({
    command,
    operation: "mail:delete",
    folder: p,
    target: null,
    decision: "allow",
    ...cites(d),
    reason: d.reason,
  });
  await auditedExpunge(s, command, d, within);
  await s.sync(true);
  s.tagged(cmd.tag, "OK", null, "Expunge completed");
}
