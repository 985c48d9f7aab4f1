/**
 * APPEND (RFC 3501 §6.3.11; mail:append, and mail:delete for a `\Deleted` flag), MULTIAPPEND (RFC 3502), literal8
 * messages (BINARY, RFC 3516 §4.4) and CATENATE messages (RFC 4469, assembled by the proxy: catenate.ts). Every message
 * is checked before anything is written; the allow rows, one per message, are on disk before the messages go upstream
 * as one APPEND, which RFC 3502 §6.3.11 makes atomic: if any message is refused, here or upstream, none is appended
 * (docs/protocol.md §2 "MULTIAPPEND"). The command's first line goes upstream while the rows are written.
 */

import { agentCopyUid } from "../filtering.ts";
import { Refusal } from "../refusal.ts";
import { appendMessageSize } from "../wire/index.ts";
import { assembleCatenate } from "./catenate.ts";
import { type CommandOf, cites, type Session } from "./context.ts";
import { TRYCREATE, upstreamStatus, visibleFolder } from "./shared.ts";

export async function append(s: Session, cmd: CommandOf<"APPEND">): Promise<void> {
  const p = visibleFolder(s, "APPEND", "mail:append", cmd.mailbox, TRYCREATE);
  const n = cmd.messages.length;
  // Offered only when upstream offers them (src/imap/capabilities.ts): its MULTIAPPEND is what makes this atomic.
  const caps = s.up?.caps;
  if (n > 1 && !caps?.has("MULTIAPPEND")) throw new Refusal("BAD", null, "MULTIAPPEND is not supported");
  if (cmd.messages.some((m) => m.binary) && !caps?.has("BINARY")) {
    throw new Refusal("BAD", null, "literal8 is not supported");
  }
  const d = s.require("APPEND", "mail:append", p);
  // One refused message refuses the command before any row of it says allow: nothing is appended.
  if (cmd.messages.some((m) => m.flags.some((f) => f.toUpperCase() === "\\DELETED"))) {
    s.require("APPEND", "mail:delete", p);
  }
  // CATENATE messages are assembled here (catenate.ts); upstream only ever gets literals.
  const messages = cmd.messages.some((m) => m.catenate !== null) ? await assembleCatenate(s, cmd, p) : cmd.messages;
  // Rows queued in the same turn share one commit, and as one group they are never split (docs/audit.md).
  const group = {};
  const written = Promise.all(
    messages.map((m, i) =>
      s.auditDurable(
        {
          command: "APPEND",
          operation: "mail:append",
          folder: p,
          target:
            n === 1 ? `${appendMessageSize(m)} octets` : `message ${i + 1} of ${n}, ${appendMessageSize(m)} octets`,
          decision: "allow",
          ...cites(d),
          reason: d.reason,
          count: 1,
        },
        group,
      ),
    ),
  );
  // The command line goes upstream while the rows are made durable; the messages only once they are (docs/audit.md
  // "Writing: batches and durability"): the server's `+` round trip overlaps the fdatasync, nothing appended before.
  const appended = s.upstreamWrite({ name: "APPEND", mailbox: cmd.mailbox, messages, ...messages[0]! }, null, written);
  // Handled at once: the upstream session may fail while the rows are written (the agent or upstream gone); its
  // rejection is awaited below, after theirs.
  appended.catch(() => {});
  // A row that could not be written is the answer: the messages were never sent, and the upstream session fails
  // with the literal it announced (BYE follows).
  await written;
  const st = await appended;
  await s.sync(true);
  upstreamStatus(s, cmd.tag, { ...st, code: agentCopyUid(s, st.code, p) }, false, "APPENDUID");
}
