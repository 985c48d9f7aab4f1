/**
 * SEARCH and UID SEARCH (RFC 3501 §6.4.4; mail:read): sequence and UID keys translated to UID sets over the agent's
 * view, results confined to it. With RETURN (...), the ESEARCH reply (RFC 4731) is computed here from that result.
 */

import { esearchResponse } from "../ext/esearch.ts";
import { MAX_SEARCH_NESTED_RANGES, MAX_SEARCH_SETS, UPSTREAM_SET_RANGES } from "../limits.ts";
import { intersectSpans, type SelectedMailbox, type Spans } from "../mailbox.ts";
import { Refusal } from "../refusal.ts";
import { hasModseq, type SearchKey, type SearchReturnOption, type SeqRange, type SeqSet } from "../wire/index.ts";
import { type AwaitedRow, type CommandOf, cites, type Decided, type Session } from "./context.ts";
import { forwardUntagged, messageCommandCode, requireModseq } from "./shared.ts";

/** Counts what a search costs to translate: its sequence and UID sets (at any depth). */
function countSets(keys: readonly SearchKey[]): number {
  let n = 0;
  const stack = [...keys];
  for (let k = stack.pop(); k !== undefined; k = stack.pop()) {
    if (k.key === "SEQ" || k.key === "UID") n++;
    else if (k.key === "NOT") stack.push(k.operand);
    else if (k.key === "OR") stack.push(k.left, k.right);
    else if (k.key === "AND") stack.push(...k.operands);
  }
  return n;
}

/** The positions in the agent's view that a sequence or UID key names (a search never fails on a number). */
function spansOf(box: SelectedMailbox, k: { key: "SEQ" | "UID"; set: SeqSet }): Spans {
  return k.key === "SEQ" ? box.searchSeqSpans(k.set) : box.uidSpans(k.set);
}

/** A search limit passed: NO [LIMIT] (RFC 5530), nothing sent upstream. */
class SearchLimit extends Refusal {
  readonly reason: string;

  constructor(reason: string, text: string) {
    super("NO", "LIMIT", text);
    this.reason = reason;
  }
}

/**
 * Sets nested in NOT, OR or a parenthesized list become upstream UID sets over the agent's view, one range per run of
 * the view they name, from its first UID to its last (`uidRangesOf`): hidden messages between are covered too, which
 * changes nothing the agent sees, since a search key only selects and every result is confined to the view
 * (docs/protocol.md §3 "UID sets sent upstream"). So what the sets cost, and whether they pass the limit, depends
 * on the agent's view alone: counted in upstream runs, the number of hidden messages between two visible ones, and
 * its changes, could be read off the limit. Together they may put at most MAX_SEARCH_NESTED_RANGES ranges into the
 * upstream command (`budget` counts what is left).
 *
 * A set that names no message of the view is `false`, and what holds it is worked out here (`true` for a key every
 * message matches): NOT of a constant is the other one, an OR with `true` or a list with `false` is that constant,
 * and a constant that decides nothing is left out. Upstream is never sent `NOT ALL` inside NOT or OR: Dovecot
 * 2.3 answers `OR NOT (NOT ALL) NOT ALL` with no message (it should be every one, RFC 9051 §6.4.4), so `SEARCH OR
 * NOT (30) 31` in a folder of 16 messages found nothing where Dovecot, asked directly, finds all 16.
 */
function translateKey(box: SelectedMailbox, k: SearchKey, budget: { ranges: number }): SearchKey | boolean {
  switch (k.key) {
    case "SEQ":
    case "UID": {
      const spans = spansOf(box, k);
      if (spans.length === 0) return false;
      const ranges = spans.length / 2;
      if (ranges > budget.ranges) {
        throw new SearchLimit(
          `sets inside NOT, OR or parentheses need more than ${MAX_SEARCH_NESTED_RANGES} UID ranges`,
          `Too many UID ranges in sets inside NOT, OR or parentheses (limit ${MAX_SEARCH_NESTED_RANGES})`,
        );
      }
      budget.ranges -= ranges;
      const flat = box.uidRangesOf(spans);
      const set: SeqRange[] = [];
      for (let i = 0; i < flat.length; i += 2) set.push({ start: flat[i]!, stop: flat[i + 1]! });
      return { key: "UID", set };
    }
    case "NOT": {
      const operand = translateKey(box, k.operand, budget);
      return typeof operand === "boolean" ? !operand : { key: "NOT", operand };
    }
    case "OR": {
      // Both sides are translated (their sets count against the budget) before either decides.
      const left = translateKey(box, k.left, budget);
      const right = translateKey(box, k.right, budget);
      if (left === true || right === true) return true;
      if (left === false) return right;
      if (right === false) return left;
      return { key: "OR", left, right };
    }
    case "AND": {
      const operands: SearchKey[] = [];
      let none = false;
      for (const o of k.operands) {
        const t = translateKey(box, o, budget);
        if (t === false) none = true;
        else if (t !== true) operands.push(t);
      }
      if (none) return false;
      return operands.length === 0 ? true : { key: "AND", operands };
    }
    default:
      return k;
  }
}

/** The keys that must all match: the criteria, with parenthesized lists among them opened. */
function conjuncts(keys: readonly SearchKey[]): SearchKey[] {
  return keys.flatMap((k) => (k.key === "AND" ? conjuncts(k.operands) : [k]));
}

/**
 * The agent's criteria as upstream criteria over its view. The sequence and UID sets among the keys that must all
 * match (the top level, and parenthesized lists there) are intersected here, range by range, into one set of
 * positions in the view: it goes upstream as a UID set when that takes at most UPSTREAM_SET_RANGES ranges (in an
 * unfiltered folder one per span; in a filtered one a range stops where a hidden message lies), and is otherwise
 * applied locally (`local`: UID ranges) with ALL upstream (a filtered folder's UIDs may be scattered, too many for
 * one command line); the criteria are ANDed, so that is the same. Sets nested in NOT or OR go upstream.
 * Cost: the sets' ranges, sorted, plus one walk of the view per nested set; at most MAX_SEARCH_SETS sets, else
 * NO [LIMIT]. SORT and THREAD share it.
 */
export function upstreamCriteria(
  box: SelectedMailbox,
  criteria: readonly SearchKey[],
): { criteria: SearchKey[]; local: number[] | null } {
  const sets = countSets(criteria);
  if (sets > MAX_SEARCH_SETS) {
    throw new SearchLimit(
      `${sets} sequence or UID sets in one search (limit ${MAX_SEARCH_SETS})`,
      `Too many sequence or UID sets in one search (limit ${MAX_SEARCH_SETS})`,
    );
  }
  let spans: Spans | null = null;
  const rest: SearchKey[] = [];
  for (const k of conjuncts(criteria)) {
    if (k.key === "SEQ" || k.key === "UID") {
      const own = spansOf(box, k);
      spans = spans === null ? own : intersectSpans(spans, own);
    } else rest.push(k);
  }
  const budget = { ranges: MAX_SEARCH_NESTED_RANGES };
  // Keys every message matches are left out; one that none matches makes the whole search match nothing, said at the
  // top level only (`translateKey`), where the other keys still go upstream to be checked.
  const out: SearchKey[] = [];
  let none = spans !== null && spans.length === 0;
  for (const k of rest) {
    const t = translateKey(box, k, budget);
    if (t === false) none = true;
    else if (t !== true) out.push(t);
  }
  if (none) return { criteria: [{ key: "NOT", operand: { key: "ALL" } }, ...out], local: null };
  if (spans === null) return { criteria: out.length === 0 ? [{ key: "ALL" }] : out, local: null };
  // The top-level set goes upstream as the nested ones do: one UID range per span of the agent's view, from its
  // first UID to its last (`uidRangesOf`), hidden messages between covered (every match is confined to the view,
  // `visibleMatches`). A range broken at each hidden message, as before, made the command sent upstream longer
  // where hidden messages lie between visible ones than where they were expunged: padded to Dovecot's line limit,
  // a search then failed in one folder and not in the other (docs/protocol.md §3 "UID sets sent upstream"). More
  // than UPSTREAM_SET_RANGES spans, which the agent's view alone decides, stay local.
  const flat = box.uidRangesOf(spans);
  if (flat.length / 2 > UPSTREAM_SET_RANGES)
    return { criteria: out.length === 0 ? [{ key: "ALL" }] : out, local: flat };
  const set: SeqRange[] = [];
  for (let i = 0; i < flat.length; i += 2) set.push({ start: flat[i]!, stop: flat[i + 1]! });
  return { criteria: [{ key: "UID", set }, ...out], local: null };
}

/**
 * The allow row of a SEARCH, SORT or THREAD decided by `d` in `folder`, registered before anything goes upstream
 * (`Session.awaitAnswer`): the command writes it with its counts once upstream has answered, the session without them
 * if the answer never comes (docs/audit.md "What a row records").
 */
export function awaitSearchRow(s: Session, command: string, folder: string, d: Decided): AwaitedRow {
  return s.awaitAnswer({ command, operation: "mail:read", folder, decision: "allow", ...cites(d), reason: d.reason });
}

/**
 * `upstreamCriteria` for a command of the session: a search past MAX_SEARCH_SETS or MAX_SEARCH_NESTED_RANGES gets
 * `NO [LIMIT]` and a deny row, and nothing goes upstream.
 */
export function sessionCriteria(
  s: Session,
  command: string,
  criteria: readonly SearchKey[],
): { criteria: SearchKey[]; local: number[] | null } {
  const box = s.box!;
  try {
    return upstreamCriteria(box, criteria);
  } catch (error) {
    if (!(error instanceof SearchLimit)) throw error;
    s.auditRow({
      command,
      operation: "mail:read",
      folder: box.policyName,
      decision: "deny",
      rule: null,
      ruleIndex: null,
      reason: error.reason,
    });
    throw error;
  }
}

/** Whether `uid` lies in one of `ranges` (flat, ascending, disjoint `[first, last]` pairs). */
function inRanges(ranges: readonly number[], uid: number): boolean {
  let lo = 0;
  let hi = ranges.length / 2 - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    if (uid < ranges[2 * mid]!) hi = mid - 1;
    else if (uid > ranges[2 * mid + 1]!) lo = mid + 1;
    else return true;
  }
  return false;
}

/** Upstream's matches kept when visible and within the local ranges (if any), in the given order. */
export function visibleMatches(
  box: SelectedMailbox,
  found: readonly number[],
  local: readonly number[] | null,
): number[] {
  return found.filter((uid) => box.agentSeqOf(uid) > 0 && (local === null || inRanges(local, uid)));
}

/**
 * The mod-sequence a SEARCH with a MODSEQ key reports (RFC 7162 §3.1.5): the highest of the matches, or with
 * ESEARCH's MIN and/or MAX only, of those; fetched from upstream for exactly those messages. Null when none match.
 */
async function resultModseq(
  s: Session,
  command: string,
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
      forwardUntagged(s, r);
      if (r.type !== "FETCH") return;
      for (const a of r.attrs) if (a.name === "MODSEQ" && a.value > highest) highest = a.value;
    });
    if (st.status !== "OK") {
      // The search's own row is written: this one says why its answer did not reach the agent.
      s.auditRow({
        command,
        operation: "mail:read",
        folder: s.box!.policyName,
        decision: "error",
        rule: null,
        ruleIndex: null,
        reason: `the mod-sequences could not be read: upstream: ${st.text}`,
      });
      throw new Refusal("NO", "UNAVAILABLE", "The mod-sequences could not be read");
    }
  }
  return highest;
}

export async function search(s: Session, cmd: CommandOf<"SEARCH">): Promise<void> {
  const box = s.box!;
  const p = box.policyName;
  // MODSEQ (RFC 7162 §3.1.5): unfiltered folders only.
  const modseqKey = hasModseq(cmd.criteria);
  if (modseqKey) await requireModseq(s);
  const d = s.require(cmd.name, "mail:read", p);
  const command = cmd.uid ? "UID SEARCH" : "SEARCH";
  const { criteria, local } = sessionCriteria(s, command, cmd.criteria);
  // Written once upstream has answered, with the counts; by the session if the answer never comes.
  const row = awaitSearchRow(s, command, p, d);
  const found: number[] = [];
  const st = await s.upstreamRun(
    { name: "SEARCH", uid: true, returnOptions: null, charset: cmd.charset, criteria },
    (r) => {
      if (r.type === "SEARCH") for (const n of r.numbers) found.push(n);
      else forwardUntagged(s, r);
    },
  );
  if (st.status !== "OK") {
    row.write({ reason: `${d.reason}; upstream: ${st.text}` });
    return s.taggedFrom(cmd.tag, st, messageCommandCode(st.code));
  }
  const matched = visibleMatches(box, found, local).sort((a, b) => a - b);
  const out = matched.map((uid) => (cmd.uid ? uid : box.agentSeqOf(uid)));
  out.sort((a, b) => a - b);
  const hiddenCount = box.visible === null ? null : found.filter((uid) => !box.isVisible(uid)).length;
  // The search was answered: its row now, before the mod-sequences are asked for (another round trip).
  row.write({ count: out.length, hiddenCount });
  const modseq = modseqKey ? await resultModseq(s, command, matched, cmd.returnOptions) : null;
  // ESEARCH (RFC 4731 §3.1): MIN, MAX, COUNT and ALL of the visible result, never upstream's own figures.
  if (cmd.returnOptions !== null) {
    const line = esearchResponse(cmd.tag, cmd.uid, out, cmd.returnOptions);
    s.sendText(modseq === null ? line : `${line} MODSEQ ${modseq}`);
  } else s.send(modseq === null ? { type: "SEARCH", numbers: out } : { type: "SEARCH", numbers: out, modseq });
  await s.sync(cmd.uid);
  s.tagged(cmd.tag, "OK", null, "Search completed");
}
