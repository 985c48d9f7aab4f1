/**
 * SEARCH and UID SEARCH (RFC 3501 §6.4.4; mail:read): sequence and UID keys translated to UID sets over the agent's
 * view, results confined to it. With RETURN (...), the ESEARCH reply (RFC 4731) is computed here from that result.
 */

import { esearchResponse } from "../ext/esearch.ts";
import { UPSTREAM_SET_RANGES } from "../limits.ts";
import type { SelectedMailbox } from "../mailbox.ts";
import { Refusal } from "../refusal.ts";
import { hasModseq, type SearchKey, type SearchReturnOption, type SeqSet } from "../wire/index.ts";
import type { CommandOf, Session } from "./context.ts";
import { forwardUntagged, messageCommandCode, requireModseq } from "./shared.ts";

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

/**
 * The mod-sequence a SEARCH with a MODSEQ key reports (RFC 7162 §3.1.5): the highest of the matches, or with
 * ESEARCH's MIN and/or MAX only, of those; fetched from upstream for exactly those messages. Null when none match.
 */
async function resultModseq(
  s: Session,
  matches: readonly number[],
  options: readonly SearchReturnOption[] | null,
): Promise<number | null> {
  if (matches.length === 0) return null;
  let uids = matches;
  if (options !== null && options.length > 0 && !options.includes("ALL") && !options.includes("COUNT")) {
    uids = [
      ...new Set([
        ...(options.includes("MIN") ? [matches[0]!] : []),
        ...(options.includes("MAX") ? [matches[matches.length - 1]!] : []),
      ]),
    ];
  }
  let highest = 0;
  for (const set of s.box!.upstreamSets(uids)) {
    const st = await s.upstreamRun({ name: "FETCH", uid: true, set, items: [{ type: "MODSEQ" }], macro: null }, (r) => {
      if (r.type !== "FETCH") return forwardUntagged(s, r);
      for (const a of r.attrs) if (a.name === "MODSEQ" && a.value > highest) highest = a.value;
    });
    if (st.status !== "OK") throw new Refusal("NO", "UNAVAILABLE", "The mod-sequences could not be read");
  }
  return highest;
}

export async function search(s: Session, cmd: CommandOf<"SEARCH">): Promise<void> {
  const box = s.box!;
  const p = box.policyName;
  // MODSEQ (RFC 7162 §3.1.5): unfiltered folders only.
  const modseqKey = hasModseq(cmd.criteria);
  if (modseqKey) requireModseq(s);
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
  const matched = visibleMatches(box, found, local).sort((a, b) => a - b);
  const out = matched.map((uid) => (cmd.uid ? uid : box.agentSeqOf(uid)));
  out.sort((a, b) => a - b);
  const modseq = modseqKey ? await resultModseq(s, matched, cmd.returnOptions) : null;
  // ESEARCH (RFC 4731 §3.1): MIN, MAX, COUNT and ALL of the visible result, never upstream's own figures.
  if (cmd.returnOptions !== null) {
    const line = esearchResponse(cmd.tag, cmd.uid, out, cmd.returnOptions);
    s.sendText(modseq === null ? line : `${line} MODSEQ ${modseq}`);
  } else s.send(modseq === null ? { type: "SEARCH", numbers: out } : { type: "SEARCH", numbers: out, modseq });
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
