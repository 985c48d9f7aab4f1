/** STORE and UID STORE (RFC 3501 §6.4.6; mail:flag, and mail:delete for `\Deleted`; docs/protocol.md §7.22). */

import { formatSeqSet, seqSetFromSorted } from "../wire/index.ts";
import { type CommandOf, cites, type Session } from "./context.ts";
import {
  agentFetch,
  auditProbe,
  checkUpstreamRest,
  type FetchShape,
  forwardUntagged,
  messageCommandCode,
  refuseReadOnly,
  requireModseq,
  target,
} from "./shared.ts";

export async function store(s: Session, cmd: CommandOf<"STORE">): Promise<void> {
  const box = s.box!;
  const p = box.policyName;
  const command = cmd.uid ? "UID STORE" : "STORE";
  // UNCHANGEDSINCE (RFC 7162 §3.1.3): unfiltered folders only.
  if (cmd.unchangedSince !== undefined) await requireModseq(s);
  // Each flag is checked: \Deleted (any case) is mail:delete, the others mail:flag. Replacing the flag list may
  // add or remove \Deleted and any other flag, so it needs both (docs/config.md "Operations", docs/protocol.md §7.22).
  const deleted = cmd.flags.some((f) => f.toUpperCase() === "\\DELETED");
  const others = cmd.flags.some((f) => f.toUpperCase() !== "\\DELETED");
  if (cmd.uid) auditProbe(s, command, deleted ? "mail:delete" : "mail:flag", cmd.set);
  const uids = target(box, cmd.uid, cmd.set);
  // The operations this STORE carries out, each with the decision that allows it: each has its own allow row,
  // citing its own rule (a row for mail:flag must not name the rule that allowed mail:delete). An empty +FLAGS or
  // -FLAGS list changes nothing and is checked as mail:flag.
  const ops: ("mail:flag" | "mail:delete")[] = [];
  if (cmd.action === "set" || others || !deleted) ops.push("mail:flag");
  if (cmd.action === "set" || deleted) ops.push("mail:delete");
  const decided = ops.map((op) => ({ op, d: s.require(command, op, p, `${uids.length} messages`) }));
  refuseReadOnly(s, command, deleted ? "mail:delete" : "mail:flag");
  const modifier = cmd.unchangedSince === undefined ? {} : { unchangedSince: cmd.unchangedSince };
  // The flags a STORE answers with are the messages' data: where the agent may not read them (mail:flag without
  // mail:read), it goes upstream .SILENT and the agent gets no FETCH, its own messages' or others' changes.
  const readable = s.decide("mail:read", p).action === "allow";
  const upstream = {
    name: "STORE",
    uid: true,
    action: cmd.action,
    silent: cmd.silent || !readable,
    flags: cmd.flags,
    ...modifier,
  } as const;
  checkUpstreamRest(s, command, deleted ? "mail:delete" : "mail:flag", { ...upstream, set: [] });
  // The messages a conditional STORE left unchanged, as UIDs: upstream's `[MODIFIED]` of each UID STORE.
  const modified: number[] = [];
  // The allow row of each operation decided, counting the messages named.
  const allowed = ({ op, d }: (typeof decided)[number]) =>
    ({
      command,
      operation: op,
      folder: p,
      target: cmd.flags.join(" "),
      decision: "allow",
      ...cites(d),
      reason: d.reason,
      count: uids.length,
    }) as const;
  // Decided and allowed, with no message to store to: the decision has its row all the same, counting none
  // (docs/audit.md "What a row records"), queued as a read's is, since nothing goes upstream.
  if (uids.length === 0) for (const one of decided) s.auditRow(allowed(one));
  if (uids.length > 0) {
    // Queued in the same turn, the rows share one commit and are never split (docs/audit.md).
    const group = {};
    await Promise.all(decided.map((one) => s.auditDurable(allowed(one), group)));
    const shape: FetchShape = { uid: cmd.uid, rfc822: false, rfc822Text: false, bodyWhole: false, bodyText: false };
    for (const set of box.upstreamSets(uids)) {
      const st = await s.upstreamWrite({ ...upstream, set }, (r) => {
        if (r.type !== "FETCH") forwardUntagged(s, r);
        // With CONDSTORE on upstream a silent STORE still reports each message it changed, with only its MODSEQ
        // (RFC 7162 §3.1.3): agentFetch drops such a report for an agent that is sent no mod-sequences.
        else if (readable) {
          const out = agentFetch(s, r, shape);
          if (out !== null) s.send(out);
        }
      });
      if (st.status !== "OK") {
        await s.sync(cmd.uid);
        return s.taggedFrom(cmd.tag, st, messageCommandCode(st.code));
      }
      if (st.code?.known && st.code.name === "MODIFIED") modified.push(...box.uidsFromUidSet(st.code.set));
    }
  }
  // The allow rows went to disk before upstream answered, counting every message named: a conditional STORE that
  // left some unchanged has a row per operation saying how many it stored (docs/audit.md "What a row records").
  if (modified.length > 0) {
    const stored = uids.length - modified.length;
    for (const { op, d } of decided) {
      s.auditRow({
        command,
        operation: op,
        folder: p,
        target: cmd.flags.join(" "),
        decision: "allow",
        ...cites(d),
        reason:
          `${modified.length} of ${uids.length} messages left unchanged, modified since UNCHANGEDSINCE ` +
          `${cmd.unchangedSince} ([MODIFIED], RFC 7162 §3.1.3); ${stored} stored`,
        count: stored,
        detail: { unchangedSince: cmd.unchangedSince!, modified: modified.length },
      });
    }
  }
  await s.sync(cmd.uid);
  // `[MODIFIED set]` in the agent's numbers: UIDs for UID STORE, its sequence numbers otherwise (RFC 7162 §3.1.3).
  const failed = modified.map((u) => (cmd.uid ? u : box.agentSeqOf(u))).filter((n) => n > 0);
  if (failed.length > 0) {
    const set = formatSeqSet(seqSetFromSorted(failed.sort((a, b) => a - b)));
    return s.tagged(cmd.tag, "OK", `MODIFIED ${set}`, "Conditional STORE failed");
  }
  s.tagged(cmd.tag, "OK", null, "Store completed");
}
