/** NAMESPACE (RFC 2342): one personal namespace with upstream's hierarchy delimiter, no others. */

import type { CommandOf, Session } from "./context.ts";

export async function namespace(s: Session, cmd: CommandOf<"NAMESPACE">): Promise<void> {
  const d = s.names.delimiter;
  s.sendText(`* NAMESPACE (("" ${d === null ? "NIL" : `"${d}"`})) NIL NIL`);
  s.tagged(cmd.tag, "OK", null, "NAMESPACE completed");
}
