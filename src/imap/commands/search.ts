/**
 * SEARCH and UID SEARCH (RFC 3501 §6.4.4; mail:read): sequence and UID keys translated to UID sets over the agent's
 * view, results confined to it.
 */

import { UPSTREAM_SET_RANGES } from "../limits.ts";
import type { SelectedMailbox } from "../mailbox.ts";
import { Refusal } from "../refusal.ts";
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

/** A search set beyond the last message matches nothing there (a search, unlike FETCH, does not fail on it). */
function clampSeq(box: SelectedMailbox, set: SeqSet): number[] {
  const n = box.agentCount;
  const clamped = set
    .map((r) => ({ start: Math.min(r.start === 0 ? n : r.start, n), stop: Math.min(r.stop === 0 ? n : r.stop, n) }))
    .filter((r) => r.start >= 1 && r.stop >= 1);
  return clamped.length === 0 ? [] : (box.uidsFromSeqSet(clamped) ?? []);
}

export async function search(s: Session, cmd: CommandOf<"SEARCH">): Promise<void> {
  const box = s.box!;
  const p = box.policyName;
  const d = s.require(cmd.name, "mail:read", p);
  // ESEARCH is not advertised: a RETURN option is a client bug.
  if (cmd.returnOptions !== null) throw new Refusal("BAD", null, "SEARCH RETURN is not supported");
  // A top-level sequence or UID set too long for one upstream command line (a filtered folder's UIDs are
  // scattered) is applied here instead: the criteria are ANDed, so intersecting the results is the same.
  const local: Array<Set<number>> = [];
  const criteria = cmd.criteria.map((k) => {
    if (k.key === "SEQ" || k.key === "UID") {
      const uids = k.key === "SEQ" ? (box.uidsFromSeqSet(k.set) ?? clampSeq(box, k.set)) : box.uidsFromUidSet(k.set);
      if (uids.length > UPSTREAM_SET_RANGES) {
        local.push(new Set(uids));
        return { key: "ALL" } as const;
      }
    }
    return translateKey(box, k);
  });
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
  const out: number[] = [];
  for (const uid of found) {
    if (local.some((set) => !set.has(uid))) continue;
    const seq = box.agentSeqOf(uid);
    if (seq > 0) out.push(cmd.uid ? uid : seq);
  }
  out.sort((a, b) => a - b);
  s.send({ type: "SEARCH", numbers: out });
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
