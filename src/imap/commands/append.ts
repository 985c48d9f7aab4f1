/** APPEND (RFC 3501 §6.3.11; mail:append, and mail:delete for a `\Deleted` flag): audited durably before upstream. */

import { agentCopyUid } from "../filtering.ts";
import { Refusal } from "../refusal.ts";
import type { CommandOf, Session } from "./context.ts";
import { TRYCREATE, upstreamStatus, visibleFolder } from "./shared.ts";

export async function append(s: Session, cmd: CommandOf<"APPEND">): Promise<void> {
  const p = visibleFolder(s, "APPEND", "mail:append", cmd.mailbox, TRYCREATE);
  const d = s.require("APPEND", "mail:append", p);
  if (cmd.flags.some((f) => f.toUpperCase() === "\\DELETED")) s.require("APPEND", "mail:delete", p);
  if (cmd.binary) throw new Refusal("BAD", null, "literal8 is not supported");
  await s.auditDurable({
    command: "APPEND",
    operation: "mail:append",
    folder: p,
    target: `${cmd.message.length} octets`,
    decision: "allow",
    rule: d.rule,
    ruleIndex: d.ruleIndex,
    reason: d.reason,
    count: 1,
  });
  const st = await s.upstreamRun({
    name: "APPEND",
    mailbox: cmd.mailbox,
    flags: cmd.flags,
    date: cmd.date,
    message: cmd.message,
    binary: false,
  });
  await s.sync(true);
  upstreamStatus(s, cmd.tag, { ...st, code: agentCopyUid(s, st.code, p) });
}
