/**
 * SEARCH and UID SEARCH (RFC 3501 §6.4.4; mail:read): sequence and UID keys translated to UID sets over the agent's
 * view, results confined to it. With RETURN (...), the ESEARCH reply (RFC 4731) is computed here from that result.
 */

import { esearchResponse } from "../ext/esearch.ts";
import { UPSTREAM_SET_RANGES } from "../limits.ts";
import type { SelectedMailbox } from "../mailbox.ts";
import type { SearchKey, SeqSet } from "../wire/index.ts";
import type { CommandOf, Session } from "./context.ts";
import { forwardUntagged, messageCommandCode } from "./shared.ts";

/** Sequence-number keys become UID keys over the agent's view; UID keys are confined to it. */
function translateKey(box: SelectedMailbox, k: SearchKey): SearchKey {
  switch (k.key) {
    case "SEQ":
    case "UID": {
      const uids = k.key === "SEQ" ? (box.uidsFromSeqSet(k.set) ?? clampSeq(box, k.set)) : box.uidsFromUidSet(k.set);
      if (uids.length === 0) return { key: "NOT", operand: { key: "ALL" } };
      return { key: "UID", set: box.upstreamSet(uids) };
    }
    case "NOT":
      return { key: "NOT", operand: translateKey(box, k.operand) };
    case "OR":
      return { key: "OR", left: translateKey(box, k.left), right: translateKey(box, k.right) };
    case "AND":
      return { key: "AND", operands: k.operands.map((o) => translateKey(box, o)) };
    default:
      return k;
  }
}

/**
 * A search set beyond the last message matches nothing there (a search, unlike FETCH, does not fail on it): a
 * range whose lower number is past the end matches nothing, `1000:*` included (as Dovecot answers), and one that
 * reaches past it is cut at the last message.
 */
function clampSeq(box: SelectedMailbox, set: SeqSet): number[] {
  const n = box.agentCount;
  const clamped: SeqSet = set.flatMap((r) => {
    const numbers = [r.start, r.stop].filter((x) => x !== 0);
    const lo = numbers.length === 0 ? n : Math.min(...numbers);
    const hi = numbers.length < 2 ? n : Math.min(Math.max(...numbers), n);
    return lo >= 1 && lo <= n ? [{ start: lo, stop: hi }] : [];
  });
  return clamped.length === 0 ? [] : (box.uidsFromSeqSet(clamped) ?? []);
}

/**
 * The agent's criteria as upstream criteria over its view, with the UID sets applied here: a top-level sequence or
 * UID set too long for one upstream command line (a filtered folder's UIDs are scattered) becomes ALL upstream and
 * is intersected locally; the criteria are ANDed, so that is the same. SORT and THREAD share it.
 */
export function upstreamCriteria(
  box: SelectedMailbox,
  criteria: readonly SearchKey[],
): { criteria: SearchKey[]; local: Array<Set<number>> } {
  const local: Array<Set<number>> = [];
  const out = criteria.map((k): SearchKey => {
    if (k.key === "SEQ" || k.key === "UID") {
      const uids = k.key === "SEQ" ? (box.uidsFromSeqSet(k.set) ?? clampSeq(box, k.set)) : box.uidsFromUidSet(k.set);
      if (uids.length > UPSTREAM_SET_RANGES) {
        local.push(new Set(uids));
        return { key: "ALL" };
      }
    }
    return translateKey(box, k);
  });
  return { criteria: out, local };
}

/** Upstream's matches kept when visible and in every local set, in the given order. */
export function visibleMatches(box: SelectedMailbox, found: readonly number[], local: Array<Set<number>>): number[] {
  return found.filter((uid) => box.agentSeqOf(uid) > 0 && local.every((set) => set.has(uid)));
}

export async function search(s: Session, cmd: CommandOf<"SEARCH">): Promise<void> {
  const box = s.box!;
  const p = box.policyName;
  const d = s.require(cmd.name, "mail:read", p);
  const { criteria, local } = upstreamCriteria(box, cmd.criteria);
  const found: number[] = [];
  const st = await s.upstreamRun(
    { name: "SEARCH", uid: true, returnOptions: null, charset: cmd.charset, criteria },
    (r) => {
      if (r.type === "SEARCH") for (const n of r.numbers) found.push(n);
      else forwardUntagged(s, r);
    },
  );
  if (st.status !== "OK") {
    s.auditRow({
      command: cmd.uid ? "UID SEARCH" : "SEARCH",
      operation: "mail:read",
      folder: p,
      decision: "allow",
      rule: d.rule,
      ruleIndex: d.ruleIndex,
      reason: `${d.reason}; upstream: ${st.text}`,
    });
    return s.taggedFrom(cmd.tag, st, messageCommandCode(st.code));
  }
  const out = visibleMatches(box, found, local).map((uid) => (cmd.uid ? uid : box.agentSeqOf(uid)));
  out.sort((a, b) => a - b);
  // ESEARCH (RFC 4731 §3.1): MIN, MAX, COUNT and ALL of the visible result, never upstream's own figures.
  if (cmd.returnOptions !== null) s.sendText(esearchResponse(cmd.tag, cmd.uid, out, cmd.returnOptions));
  else s.send({ type: "SEARCH", numbers: out });
  const hiddenCount = box.visible === null ? null : found.filter((uid) => !box.isVisible(uid)).length;
  s.auditRow({
    command: cmd.uid ? "UID SEARCH" : "SEARCH",
    operation: "mail:read",
    folder: p,
    decision: "allow",
    rule: d.rule,
    ruleIndex: d.ruleIndex,
    reason: d.reason,
    count: out.length,
    hiddenCount,
  });
  await s.sync(cmd.uid);
  s.tagged(cmd.tag, "OK", null, "Search completed");
}
