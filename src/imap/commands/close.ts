/** CLOSE (RFC 3501 §6.4.2) and UNSELECT (RFC 3691): back to the authenticated state. */

import { type CommandOf, cites, type Session } from "./context.ts";
import { auditedExpunge } from "./shared.ts";

/** CLOSE expunges silently (RFC 3501 §6.4.2): never forwarded; the safe expunge if allowed, then UNSELECT. */
export async function close(s: Session, cmd: CommandOf<"CLOSE">): Promise<void> {
  const box = s.box!;
  const p = box.policyName;
  if (box.readOnly) {
    s.auditRow({
      command: "CLOSE",
      operation: null,
      folder: p,
      target: null,
      decision: "allow",
      rule: null,
      ruleIndex: null,
      reason: "read-only mailbox: closed without expunging",
    });
  } else {
    const d = s.decide("mail:delete", p);
    if (d.action === "allow") {
      await s.auditDurable({
        command: "CLOSE",
        operation: "mail:delete",
        folder: p,
        target: null,
        decision: "allow",
        ...cites(d),
        reason: d.reason,
      });
      await auditedExpunge(s, "CLOSE", d, null);
    } else {
      s.auditRow({
        command: "CLOSE",
        operation: "mail:delete",
        folder: p,
        target: null,
        decision: "deny",
        ...cites(d),
        reason: `${d.reason}; closed without expunging`,
      });
    }
  }
  s.box = null;
  s.state = "authenticated";
  await s.unselectUpstream("CLOSE", p);
  s.tagged(cmd.tag, "OK", null, "Close completed");
}

export async function unselect(s: Session, cmd: CommandOf<"UNSELECT">): Promise<void> {
  const p = s.box?.policyName ?? null;
  s.box = null;
  s.state = "authenticated";
  await s.unselectUpstream("UNSELECT", p);
  s.tagged(cmd.tag, "OK", null, "Unselect completed");
}
