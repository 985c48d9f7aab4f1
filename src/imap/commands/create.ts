/** CREATE (RFC 3501 §6.3.3; folder:write): never in a hidden subtree nor of a hidden name (docs/protocol.md §7.15). */

import { Refusal } from "../refusal.ts";
import { type CommandOf, cites, type Session } from "./context.ts";
import { messageCommandCode } from "./shared.ts";

export async function create(s: Session, cmd: CommandOf<"CREATE">): Promise<void> {
  // The same words as `require`'s refusal: a hidden ancestor must not be told apart from a denied name (§7.15 of
  // docs/protocol.md).
  const denied = new Refusal("NO", "NOPERM", "Not permitted: folder:write in this folder");
  // `CREATE a/b/` declares that names will be created below `a/b` (RFC 3501 §6.3.3): the folder is `a/b`, and the
  // rules and the checks below judge that name; upstream gets the name as the agent wrote it.
  const delimiter = s.names.delimiter;
  const name =
    delimiter !== null && cmd.mailbox.endsWith(delimiter) ? cmd.mailbox.slice(0, -delimiter.length) : cmd.mailbox;
  const uncreatable = s.names.uncreatableWhy(name);
  if (uncreatable !== null) {
    s.auditRow({
      command: "CREATE",
      operation: "folder:write",
      folder: null,
      target: cmd.mailbox,
      decision: "deny",
      rule: null,
      ruleIndex: null,
      reason: `invalid mailbox name: ${uncreatable}`,
    });
    throw new Refusal("NO", "CANNOT", "Invalid mailbox name");
  }
  const p = s.names.toPolicy(name);
  // CREATE in a hidden subtree, or of a hidden name, is refused the same way whether or not it exists
  // (docs/protocol.md §7.15).
  for (const a of s.names.ancestors(name)) {
    if (!s.rights.visible(s.names.toPolicy(a))) {
      s.auditRow({
        command: "CREATE",
        operation: "folder:write",
        folder: p,
        decision: "deny",
        rule: null,
        ruleIndex: null,
        reason: `parent folder ${a} is hidden`,
      });
      throw denied;
    }
  }
  const d = s.require("CREATE", "folder:write", p);
  await s.auditDurable({
    command: "CREATE",
    operation: "folder:write",
    folder: p,
    target: null,
    decision: "allow",
    ...cites(d),
    reason: d.reason,
  });
  const st = await s.upstreamWrite({ name: "CREATE", mailbox: cmd.mailbox });
  s.taggedFrom(cmd.tag, st, messageCommandCode(st.code));
}
