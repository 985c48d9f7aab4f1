/** CAPABILITY (RFC 3501 §6.1.1) and ID (RFC 2971): answered by the proxy; nothing about upstream is revealed. */

import type { CommandOf, Session } from "./context.ts";

export async function capability(s: Session, cmd: CommandOf<"CAPABILITY">): Promise<void> {
  s.sendText(`* CAPABILITY ${s.capabilities().join(" ")}`);
  s.tagged(cmd.tag, "OK", null, "Capability completed");
}

export async function id(s: Session, cmd: CommandOf<"ID">): Promise<void> {
  s.sendText('* ID ("name" "Mailgator")');
  s.tagged(cmd.tag, "OK", null, "ID completed");
}
