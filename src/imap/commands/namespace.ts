/** NAMESPACE (RFC 2342): one personal namespace with upstream's hierarchy delimiter, no others. */

import type { CommandOf, Session } from "./context.ts";

export async function namespace(s: Session, cmd: CommandOf<"NAMESPACE">): Promise<void> {
  const d = s.names.delimiter;
  // A quoted string (RFC 3501 §9: QUOTED-CHAR): a backslash or a double quote is escaped with a backslash.
  const quoted = d === null ? "NIL" : d === "\\" || d === '"' ? `"\\${d}"` : `"${d}"`;
  s.sendText(`* NAMESPACE (("" ${quoted})) NIL NIL`);
  s.tagged(cmd.tag, "OK", null, "NAMESPACE completed");
}
