/**
 * NOOP (RFC 3501 §6.1.2) and CHECK (§6.4.1): a NOOP upstream, then what changed meanwhile reported to the agent
 * (new messages, expunges) in its own view.
 */

import type { CommandOf, Session } from "./context.ts";

export async function noop(s: Session, cmd: CommandOf<"NOOP" | "CHECK">): Promise<void> {
  if (s.up !== null && s.state !== "not-authenticated") {
    await s.upstreamRun({ name: "NOOP" });
    await s.sync(true);
  }
  s.tagged(cmd.tag, "OK", null, `${cmd.name} completed`);
}
