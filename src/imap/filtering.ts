/**
 * Per-message filtering in the session (hidden messages do not exist for the agent: docs/config.md "Operations",
 * docs/protocol.md §3, docs/filtering.md): the read decision for a filtered folder, opening a filtered mailbox at
 * SELECT (classification with the cache), classifying arrivals before the agent hears of them, and STATUS over visible
 * messages only.
 *
 * A folder is filtered when the rules for `mail:read` there depend on message fields (`messageFilter` is not null).
 * Only read operations may carry message conditions (config validation refuses the rest, src/config/rules.ts), so
 * every write is decided by the folder alone and reaches only UIDs the agent can see.
 */

import { errorMessage } from "../log.ts";
import type { Decision, Operation, Policy } from "../policy/index.ts";
import { FILTERED_OPERATIONS } from "../policy/operations.ts";
import {
  type ClassifyHelper,
  cacheKey,
  classifyArrivals,
  classifyMailbox,
  type MessageFilter,
  messageFilter,
  saveVisibility,
  type UpstreamRunner,
} from "./classify.ts";
import type { Row, Session } from "./commands/context.ts";
import { relayUpdate } from "./commands/shared.ts";
import { SelectedMailbox } from "./mailbox.ts";
import { Refusal } from "./refusal.ts";
import { withoutTimings } from "./upstream-text.ts";
import { VisibleSet } from "./view.ts";
import { type ResponseCode, SYSTEM_FLAGS } from "./wire/index.ts";

/** Operations whose rules may test message fields (config validation refuses the others, src/config/rules.ts). */
/**
 * The flags a filtered folder shows in FLAGS, the system flags only (wire/command.ts): keywords in use would tell of
 * hidden messages' keywords.
 */
export { FILTERED_OPERATIONS, SYSTEM_FLAGS };

/**
 * The decision for `op` in `folder`. When it depends on message fields (a filtered folder) and some message can be
 * allowed, reading the folder is allowed for the messages the classification lets through: the decision names the
 * first rule that can allow. Anything else undecided is denied, as `Policy.evaluate` does.
 */
export function decideInFolder(policy: Policy, op: Operation, folder: string, agent: string | null): Decision {
  const outcome = policy.evaluatePartial({ operation: op, folder, agent });
  if (outcome.decided) return outcome.decision;
  if (FILTERED_OPERATIONS.has(op) && outcome.possible.has("allow")) {
    // The first rule that can allow lies among the candidates: a possible allow is one of them.
    const rule = policy.candidateRules(op, folder, agent).find((r) => r.action === "allow");
    if (rule !== undefined) {
      return {
        action: "allow",
        rule: rule.name,
        ruleIndex: rule.index,
        reason:
          `${op} filtered per message (${[...outcome.needs].join(", ")}); ` +
          `rule ${rule.index + 1} "${rule.name}" (${rule.summary}) can allow`,
      };
    }
  }
  return policy.evaluate({ operation: op, folder, agent });
}

/**
 * Classification goes through the session, so EXISTS and EXPUNGE that arrive meanwhile update the model, and
 * another session's flag change that arrives meanwhile reaches the agent (`relayUpdate`); what the proxy
 * fetched for itself never does.
 */
export function sessionRunner(s: Session): UpstreamRunner {
  return {
    run: (command, onData) =>
      s.upstreamRun(command, (r) => {
        onData(r);
        relayUpdate(s, r);
      }),
  };
}

/**
 * Opens a filtered mailbox after the upstream SELECT/EXAMINE and `UID SEARCH ALL`: every message is classified
 * (the cache serves what it knows) before the agent hears of any. A failure throws: the caller refuses the SELECT.
 */
export async function openFiltered(
  s: Session,
  o: {
    name: string;
    policyName: string;
    readOnly: boolean;
    uids: readonly number[];
    exists: number;
    uidValidity: number;
    filter: MessageFilter;
    /** The reload generation whose rules gave `filter` (`SelectedMailbox.generation`), and its config's revision. */
    generation: number;
    revision: string;
  },
): Promise<SelectedMailbox> {
  // Nothing is classified yet, so nothing is visible: this box only follows upstream EXISTS/EXPUNGE meanwhile.
  const pending = new SelectedMailbox(o.name, o.policyName, o.readOnly, o.uids, new VisibleSet());
  if (o.uids.length < o.exists) pending.onExists(o.exists);
  // A reload meanwhile is judged against the filter this classification uses.
  pending.filter = o.filter;
  pending.filterRevision = o.revision;
  pending.generation = o.generation;
  s.box = pending;
  try {
    const result = await classifyMailbox({
      runner: sessionRunner(s),
      filter: o.filter,
      uids: o.uids,
      uidValidity: o.uidValidity,
      cache: s.ctx.cache,
      account: s.account,
      mailbox: o.name,
      helper: auxiliaryHelper(s, o.name, o.uidValidity),
    });
    const current = Array.from(pending.u.data.subarray(0, pending.known));
    result.visible.retain(current);
    const box = new SelectedMailbox(o.name, o.policyName, o.readOnly, current, result.visible);
    box.filter = o.filter;
    box.filterRevision = o.revision;
    box.generation = o.generation;
    box.uidValidity = o.uidValidity;
    box.onExists(pending.upstreamCount);
    return box;
  } finally {
    s.box = null;
  }
}

/**
 * Classifies messages that arrived in a filtered mailbox (their UIDs are known), so that `admitNew` can let the
 * visible ones into Vagent; the cache row follows.
 */
export async function classifyNew(s: Session, box: SelectedMailbox): Promise<void> {
  const visible = box.visible;
  const filter = box.filter;
  if (visible === null || filter === null) return;
  const uids = box.unclassified();
  if (uids.length === 0) return;
  await classifyArrivals(sessionRunner(s), filter, visible, uids);
  // An arrival expunged while it was being classified: upstream answers the FETCH from the view it had (the data, or
  // NIL for a file already gone) and reports the EXPUNGE before its OK, so `onExpunge` found nothing to remove from
  // Vtrue yet. The verdict would stay behind for a message that no longer exists: a probe row naming it as hidden, or
  // a visible UID that keeps a range of hidden ones from being named (docs/filtering.md "Probes"), and the cache row.
  for (const uid of uids) if (!box.holds(uid)) visible.remove(uid);
  const cache = s.ctx.cache;
  if (cache !== null) saveVisibility(cache, cacheKey(s.account, box.name, filter), box.uidValidity, visible);
}

/** `searchUids`' refusal: upstream did not complete the search; `why` says which and how it answered, for the row. */
export class SearchRefused extends Refusal {
  readonly why: string;
  constructor(why: string) {
    super("NO", "UNAVAILABLE", "Mailbox could not be read upstream");
    this.why = why;
  }
}

/** UIDs an upstream `UID SEARCH <key>` returns in the selected mailbox; a search not completed throws SearchRefused. */
export async function searchUids(run: UpstreamRunner, key: "UNSEEN" | "RECENT" | "ALL"): Promise<number[]> {
  const out: number[] = [];
  const st = await run.run(
    { name: "SEARCH", uid: true, returnOptions: null, charset: null, criteria: [{ key }] },
    (r) => {
      if (r.type === "SEARCH") for (const n of r.numbers) out.push(n);
    },
  );
  if (st.status !== "OK")
    throw new SearchRefused(`UID SEARCH ${key} upstream: ${st.status} ${withoutTimings(st.text)}`);
  return out.sort((a, b) => a - b);
}

/**
 * A COPYUID or APPENDUID for the agent: only when it may read the destination's status (`folder:read` there: its
 * UIDVALIDITY, and the new UIDs, which tell how far UIDNEXT had moved), every source UID is one it can see, and the
 * destination is not filtered.
 */
export function agentCopyUid(s: Session, code: ResponseCode | null, destination: string): ResponseCode | null {
  if (code === null || !code.known || (code.name !== "COPYUID" && code.name !== "APPENDUID")) return code;
  // An append-only folder: STATUS there is refused, so is what these codes would tell of it.
  if (!s.rights.may("folder:read", destination)) return null;
  // In a filtered destination the new UIDs may be hidden ones there: the proxy cannot say without classifying.
  if (messageFilter(s.ctx.policy, destination, s.agent) !== null) return null;
  if (code.name === "APPENDUID") return code;
  const box = s.box;
  if (box === null || box.visible === null) return code;
  for (const r of code.source) {
    if (r.start === 0 || r.stop === 0) return null;
    for (let uid = Math.min(r.start, r.stop); uid <= Math.max(r.start, r.stop); uid++)
      if (!box.visible.has(uid)) return null;
  }
  return code;
}

export type StatusItem = "MESSAGES" | "RECENT" | "UIDNEXT" | "UIDVALIDITY" | "UNSEEN" | "HIGHESTMODSEQ";
/**
 * HIGHESTMODSEQ of a filtered folder is 0, as for any mailbox without mod-sequences (RFC 7162 §3.1.2.2, §3.1.7):
 * upstream's moves when a hidden message changes (docs/protocol.md §2).
 */
const COMPUTABLE = new Set<string>(["MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ"]);

/**
 * STATUS of a filtered folder, counted over its visible messages (docs/protocol.md §7.8): from the model when it is the
 * selected folder, else by opening it read-only on a second upstream connection (EXAMINE keeps \Recent) and
 * classifying it (the cache serves re-opens). Items that cannot be computed so are refused.
 */
export async function filteredStatus(
  s: Session,
  mailbox: string,
  items: readonly string[],
  filter: MessageFilter,
): Promise<{ items: Array<[string, number]>; visible: number; hidden: number }> {
  if (items.some((i) => !COMPUTABLE.has(i))) throw new Refusal("BAD", null, "Unsupported STATUS item");
  const box = s.box;
  if (box !== null && box.name === mailbox && box.visible !== null) {
    const runner = sessionRunner(s);
    const unseen = items.includes("UNSEEN") ? box.countKnown(await searchUids(runner, "UNSEEN")) : 0;
    const recent = items.includes("RECENT") ? box.countKnown(await searchUids(runner, "RECENT")) : 0;
    const values = {
      MESSAGES: box.agentCount,
      RECENT: recent,
      UIDNEXT: box.visible.uidNext,
      UIDVALIDITY: box.uidValidity,
      UNSEEN: unseen,
      HIGHESTMODSEQ: 0,
    };
    return {
      items: items.map((i) => [i, values[i as StatusItem]]),
      visible: box.agentCount,
      hidden: box.upstreamCount - box.agentCount,
    };
  }
  return s.withAuxiliary(async (up) => {
    let uidValidity = 0;
    const st = await up.run({ name: "EXAMINE", mailbox }, (r) => {
      if (r.type === "status" && r.code?.known && r.code.name === "UIDVALIDITY") uidValidity = r.code.value;
    });
    if (st.status !== "OK") throw new Refusal("NO", "NONEXISTENT", "Mailbox does not exist");
    try {
      const all = await searchUids(up, "ALL");
      const result = await classifyMailbox({
        runner: up,
        filter,
        uids: all,
        uidValidity,
        cache: s.ctx.cache,
        account: s.account,
        mailbox,
      });
      const visible = result.visible;
      const unseen = items.includes("UNSEEN") ? visible.countAmong(await searchUids(up, "UNSEEN")) : 0;
      const recent = items.includes("RECENT") ? visible.countAmong(await searchUids(up, "RECENT")) : 0;
      const values = {
        MESSAGES: visible.size,
        RECENT: recent,
        UIDNEXT: visible.uidNext,
        UIDVALIDITY: uidValidity,
        UNSEEN: unseen,
        HIGHESTMODSEQ: 0,
      };
      return {
        items: items.map((i): [string, number] => [i, values[i as StatusItem]]),
        visible: visible.size,
        hidden: all.length - visible.size,
      };
    } finally {
      await up.run({ name: "UNSELECT" }, () => {});
    }
  });
}

/**
 * filteredStatus() with its audit row (docs/audit.md: every decision has a row), for STATUS and LIST-STATUS alike:
 * `row`, the allow, with the visible and hidden counts; or, when the folder cannot be counted (no such mailbox
 * upstream, say), `row` with `; not counted: <why>` after its reason, and then the refusal or failure as thrown.
 */
export async function auditedFilteredStatus(
  s: Session,
  mailbox: string,
  items: readonly string[],
  filter: MessageFilter,
  row: Row,
): Promise<Awaited<ReturnType<typeof filteredStatus>>> {
  let counted: Awaited<ReturnType<typeof filteredStatus>>;
  try {
    counted = await filteredStatus(s, mailbox, items, filter);
  } catch (error) {
    s.auditRow({ ...row, reason: `${row.reason}; not counted: ${errorMessage(error)}` });
    throw error;
  }
  s.auditRow({ ...row, count: counted.visible, hiddenCount: counted.hidden });
  return counted;
}

/**
 * The helper of a large first classification (`ClassifyHelper`): the session's auxiliary upstream session opens
 * the same folder read-only; it helps only when upstream gives the same UIDVALIDITY there. Besides the UID
 * FETCHes it sends EXAMINE and UNSELECT (and its login, when it is opened); nothing it receives reaches the agent.
 * A stalled second connection delays the SELECT as a stalled first one would: up to the command timeout.
 */
function auxiliaryHelper(s: Session, mailbox: string, uidValidity: number): ClassifyHelper {
  const warn = (error: unknown) => {
    if (!s.closed)
      s.log.warn(`session ${s.id}: classifying ${mailbox} over one upstream connection: ${(error as Error).message}`);
  };
  return (use) =>
    s
      .withAuxiliary(async (up) => {
        let seen = 0;
        const st = await up.run({ name: "EXAMINE", mailbox }, (r) => {
          if (r.type === "status" && r.code?.known && r.code.name === "UIDVALIDITY") seen = r.code.value;
        });
        if (st.status !== "OK") return warn(new Error(`EXAMINE on the second connection: ${st.text}`));
        try {
          // Only the same folder: a UIDVALIDITY, and the one the first session got.
          if (seen !== 0 && seen === uidValidity) await use(up);
          else warn(new Error(`the second connection got UIDVALIDITY ${seen}, the first ${uidValidity}`));
        } finally {
          await up.run({ name: "UNSELECT" }, () => {});
        }
      })
      .catch(warn);
}
