/** ENABLE (RFC 5161): nothing this proxy advertises can be enabled; an empty ENABLED is the correct answer. */

import type { CommandOf, Session } from "./context.ts";

export async function enable(s: Session, cmd: CommandOf<"ENABLE">): Promise<void> {
  s.sendText("* ENABLED");
  s.tagged(cmd.tag, "OK", null, "ENABLE completed");
}
