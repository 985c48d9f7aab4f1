/**
 * A command whose mailbox name cannot be read as a name (not valid or not canonical modified UTF-7, RFC 3501
 * §5.1.3; 8-bit, empty, a wildcard outside LIST, a control character) is well-formed otherwise: it names no mailbox
 * that exists, so it is answered as servers answer it, `NO`, not `BAD` (docs/imap.md "Decisions").
 * LIST and LSUB match nothing and complete `OK` with no data; a failed SELECT or EXAMINE deselects (§6.3.1).
 * Nothing goes upstream but the UNSELECT, and the refusal is audited.
 */

import type { Session } from "./context.ts";
import { deselect } from "./shared.ts";

/** The commands that carry a mailbox name, and the state each needs (RFC 3501 §6.3, §6.4.7). */
const NAMED: ReadonlyMap<string, "authenticated" | "selected"> = new Map([
  ["SELECT", "authenticated"],
  ["EXAMINE", "authenticated"],
  ["CREATE", "authenticated"],
  ["DELETE", "authenticated"],
  ["RENAME", "authenticated"],
  ["SUBSCRIBE", "authenticated"],
  ["UNSUBSCRIBE", "authenticated"],
  ["LIST", "authenticated"],
  ["LSUB", "authenticated"],
  ["STATUS", "authenticated"],
  ["APPEND", "authenticated"],
  ["COPY", "selected"],
  ["MOVE", "selected"],
]);

/**
 * Answers a command refused by the wire layer for its mailbox name; false when this does not apply (another
 * command, or one the session's state does not allow), and the caller answers `BAD` as for any parse error.
 */
export async function invalidName(s: Session, tag: string, command: string, reason: string): Promise<boolean> {
  const needs = NAMED.get(command);
  if (needs === undefined || s.state === "not-authenticated" || s.state === "logout") return false;
  if (needs === "selected" && s.state !== "selected") return false;
  s.auditRow({
    command,
    operation: null,
    folder: null,
    decision: "deny",
    rule: null,
    ruleIndex: null,
    reason: `invalid mailbox name: ${reason}`,
  });
  if (command === "LIST" || command === "LSUB") {
    s.tagged(tag, "OK", null, `${command} completed`);
    return true;
  }
  if (command === "SELECT" || command === "EXAMINE") await deselect(s, command);
  s.tagged(tag, "NO", "CANNOT", "Invalid mailbox name");
  return true;
}
