/**
 * SORT and UID SORT (RFC 5256 §3; mail:read), with RETURN (...) for ESORT (RFC 5267 §3.2). Upstream sorts with
 * `UID SORT` over the translated criteria; only the agent's visible messages are kept, in upstream's order, then
 * renumbered. The order of two visible messages never depends on a hidden one (each key compares the two messages
 * alone, ties keep mailbox order), so the result equals upstream's SORT of a folder holding only the visible
 * messages (docs/filtering.md). Offered only when upstream offers SORT.
 */

import type { SelectedMailbox } from "../mailbox.ts";
import { Refusal } from "../refusal.ts";
import type { SearchReturnOption } from "../wire/index.ts";
import type { CommandOf, Session } from "./context.ts";
import { awaitSearchRow, sessionCriteria, visibleMatches } from "./search.ts";
import { forwardUntagged, messageCommandCode } from "./shared.ts";

/**
 * ESORT's `* ESEARCH` line (RFC 5267 §3.2, RFC 4731 §3.1): MIN and MAX are the first and last message in sort
 * order, ALL lists the result in sort order (ascending runs written as ranges), COUNT is always there when asked.
 */
export function esortResponse(
  tag: string,
  uid: boolean,
  sorted: readonly number[],
  options: readonly SearchReturnOption[],
): string {
  let out = `* ESEARCH (TAG "${tag}")`;
  if (uid) out += " UID";
  const first = sorted[0];
  const last = sorted.at(-1);
  if (options.includes("MIN") && first !== undefined) out += ` MIN ${first}`;
  if (options.includes("MAX") && last !== undefined) out += ` MAX ${last}`;
  if (options.includes("ALL") && sorted.length > 0) out += ` ALL ${sortedSet(sorted)}`;
  if (options.includes("COUNT")) out += ` COUNT ${sorted.length}`;
  return out;
}

/** `5,1:3,9`: the numbers in the given order, each run of consecutive ascending numbers as a range. */
function sortedSet(numbers: readonly number[]): string {
  const parts: string[] = [];
  let i = 0;
  while (i < numbers.length) {
    let j = i;
    while (j + 1 < numbers.length && numbers[j + 1] === numbers[j]! + 1) j++;
    parts.push(j === i ? String(numbers[i]) : `${numbers[i]}:${numbers[j]}`);
    i = j + 1;
  }
  return parts.join(",");
}

export async function sort(s: Session, cmd: CommandOf<"SORT">): Promise<void> {
  const box: SelectedMailbox = s.box!;
  const p = box.policyName;
  const command = cmd.uid ? "UID SORT" : "SORT";
  // Not advertised without upstream SORT (src/imap/capabilities.ts): asking anyway is a client bug.
  if (s.up?.caps.has("SORT") !== true) throw new Refusal("BAD", null, "SORT is not supported");
  // DISPLAYFROM and DISPLAYTO (RFC 5957) only with SORT=DISPLAY, which is offered only when upstream has it.
  if (cmd.sortCriteria.some((c) => c.key === "DISPLAYFROM" || c.key === "DISPLAYTO") && !s.up.caps.has("SORT=DISPLAY"))
    throw new Refusal("BAD", null, "SORT=DISPLAY is not supported");
  const d = s.require(cmd.name, "mail:read", p);
  const { criteria, local } = sessionCriteria(s, command, cmd.criteria);
  // Written once upstream has answered, with the counts; by the session if the answer never comes.
  const row = awaitSearchRow(s, command, p, d);
  const found: number[] = [];
  const st = await s.upstreamRun(
    { name: "SORT", uid: true, returnOptions: null, sortCriteria: cmd.sortCriteria, charset: cmd.charset, criteria },
    (r) => {
      if (r.type === "SORT") for (const n of r.numbers) found.push(n);
      else forwardUntagged(s, r);
    },
  );
  if (st.status !== "OK") {
    row.write({ reason: `${d.reason}; upstream: ${st.text}` });
    return s.taggedFrom(cmd.tag, st, messageCommandCode(st.code));
  }
  const out = visibleMatches(box, found, local).map((uid) => (cmd.uid ? uid : box.agentSeqOf(uid)));
  if (cmd.returnOptions !== null) s.sendText(esortResponse(cmd.tag, cmd.uid, out, cmd.returnOptions));
  else s.send({ type: "SORT", numbers: out });
  const hiddenCount = box.visible === null ? null : found.filter((uid) => !box.isVisible(uid)).length;
  row.write({ count: out.length, hiddenCount });
  await s.sync(cmd.uid);
  s.tagged(cmd.tag, "OK", null, "Sort completed");
}
