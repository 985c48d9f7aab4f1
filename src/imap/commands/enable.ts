/**
 * ENABLE (RFC 5161): CONDSTORE (RFC 7162 §3.1) when it is offered, enabled upstream too; anything else is left out
 * of the `* ENABLED` answer, as RFC 5161 §3.1 has it for extensions a server does not enable.
 */

import type { CommandOf, Session } from "./context.ts";
import { enableCondstore } from "./shared.ts";

export async function enable(s: Session, cmd: CommandOf<"ENABLE">): Promise<void> {
  // ENABLED names what this command enabled (RFC 5161 §3.2): CONDSTORE once.
  const now =
    cmd.capabilities.includes("CONDSTORE") && s.capabilities().includes("CONDSTORE") && (await enableCondstore(s));
  s.sendText(now ? "* ENABLED CONDSTORE" : "* ENABLED");
  s.tagged(cmd.tag, "OK", null, "ENABLE completed");
}
