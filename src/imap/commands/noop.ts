/**
 * NOOP (RFC 3501 §6.1.2) and CHECK (§6.4.1): a NOOP upstream, then what changed meanwhile reported to the agent in
 * its own view: other sessions' flag changes (`* n FETCH (FLAGS ...)`, §7.4.2), each after the expunges upstream
 * told before it (those highest first, `SelectedMailbox.takeExpunges`), then new messages (EXISTS) and RECENT (§7.3).
 * A filtered folder relays them for visible messages only,
 * renumbered (docs/filtering.md): a hidden message's change says nothing.
 */

import type { Response } from "../wire/index.ts";
import type { CommandOf, Session } from "./context.ts";
import { forwardUntagged, relayFlagUpdate } from "./shared.ts";

export async function noop(s: Session, cmd: CommandOf<"NOOP" | "CHECK">): Promise<void> {
  if (s.up !== null && s.state !== "not-authenticated") {
    await s.upstreamRun({ name: "NOOP" }, (r) => relay(s, r));
    await s.sync(true);
  }
  s.tagged(cmd.tag, "OK", null, `${cmd.name} completed`);
}

/** One untagged response of the NOOP: a FETCH numbered after the expunges upstream sent before it. */
function relay(s: Session, r: Response): void {
  const box = s.box;
  if (box === null) return;
  if (r.type === "FETCH") {
    for (const k of box.takeExpunges()) s.sendText(`* ${k} EXPUNGE`);
    relayFlagUpdate(s, r);
  } else forwardUntagged(s, r);
}
