/**
 * COPY and MOVE, plain and UID (RFC 3501 §6.4.7, RFC 6851; mail:read at the source, and mail:move there for a
 * MOVE; mail:append at the destination): COPYUID passed on only where it cannot betray hidden messages.
 */

import { ALSO_NEEDS } from "../decide.ts";
import { agentCopyUid } from "../filtering.ts";
import { UPSTREAM_SET_RANGES } from "../limits.ts";
import { Refusal } from "../refusal.ts";
import type { Response, ResponseCode, SeqRange } from "../wire/index.ts";
import { type CommandOf, cites, type Session, type UpstreamStatus } from "./context.ts";
import {
  auditProbe,
  checkUpstreamRest,
  forwardUntagged,
  passCode,
  refuseReadOnly,
  target,
  visibleFolder,
} from "./shared.ts";

export async function copyOrMove(s: Session, cmd: CommandOf<"COPY" | "MOVE">): Promise<void> {
  const box = s.box!;
  const p = box.policyName;
  const command = `${cmd.uid ? "UID " : ""}${cmd.name}`;
  // Source: a copy reads the messages, a move also removes them (docs/config.md "Operations"), and reads them too
  // (ALSO_NEEDS): a folder the agent may not read cannot be emptied into one it can.
  const op = cmd.name === "MOVE" ? "mail:move" : "mail:read";
  if (cmd.uid) auditProbe(s, command, op, cmd.set);
  const uids = target(box, cmd.uid, cmd.set);
  // In the order explain asks them (decide.ts): what it also needs, then the operation itself.
  for (const also of ALSO_NEEDS[op] ?? []) s.require(command, also, p, `${uids.length} messages`);
  const d = s.require(command, op, p, `${uids.length} messages`);
  // A MOVE removes the messages from the source (RFC 6851 §3.3: COPY, STORE \Deleted, EXPUNGE): not in a read-only one.
  if (cmd.name === "MOVE") refuseReadOnly(s, command, op);
  // Destination: hidden answers as nonexistent; then mail:append.
  const dest = cmd.mailbox;
  const dp = visibleFolder(s, command, "mail:append", dest, new Refusal("NO", "TRYCREATE", "Mailbox does not exist"));
  const dd = s.require(command, "mail:append", dp, `${uids.length} messages`);
  checkUpstreamRest(s, command, op, { name: cmd.name, uid: true, set: [], mailbox: dest });
  if (uids.length === 0) return s.tagged(cmd.tag, "OK", null, "No messages");
  await s.auditDurable({
    command,
    operation: cmd.name === "MOVE" ? "mail:move" : "mail:read",
    folder: p,
    target: dp,
    decision: "allow",
    ...cites(d),
    reason: `${d.reason}; destination: ${dd.reason}`,
    count: uids.length,
  });
  const sets = box.upstreamSets(uids);
  // One COPYUID for the whole command, however many upstream commands carried it out: how many that took depends
  // on where hidden messages lie (UPSTREAM_SET_RANGES ranges each), so a COPYUID per part, or none once split,
  // would tell the agent of them. Each part's is checked as it comes, while its source UIDs are still in the view
  // (a MOVE's expunges follow it).
  const tagged: (ResponseCode | null)[] = [];
  const untagged: { response: Extract<Response, { type: "status" }>; code: ResponseCode | null }[] = [];
  /** Each completed part's own COPYUID, as upstream gave it: what a COPY that fails part-way removes again. */
  const made: (ResponseCode | null)[] = [];
  let st!: UpstreamStatus;
  for (const [part, set] of sets.entries()) {
    const running = s.upstreamWrite({ name: cmd.name, uid: true, set, mailbox: dest }, (r) => {
      if (r.type === "status" && r.tag === null && r.code?.known && r.code.name === "COPYUID") {
        // MOVE's COPYUID comes untagged (RFC 6851 §4.3), before the expunges, which the agent hears of at sync.
        untagged.push({ response: r, code: agentCopyUid(s, passCode(r.code), dp) });
      } else forwardUntagged(s, r);
    });
    try {
      st = await running;
    } catch (error) {
      // No answer (the deadline, the connection lost): whether this part was carried out is unknown, so the
      // earlier parts' copies cannot be told from its own and stay; the row says so (docs/imap.md).
      if (cmd.name === "COPY" && part > 0) {
        const why = `part ${part + 1} of ${sets.length} got no answer (${(error as Error).message})`;
        copiesRemain(s, command, dp, why);
      }
      throw error;
    }
    if (st.status !== "OK") break;
    made.push(st.code);
    tagged.push(agentCopyUid(s, passCode(st.code), dp));
  }
  // RFC 3501 §6.4.7: a COPY that fails leaves the destination as it was. One upstream command is atomic there; a
  // COPY split over several is not, so the copies its completed parts made are removed again (docs/imap.md
  // "COPY carried out in parts"). A MOVE's completed parts cannot be undone that way: their messages left the
  // source, and the agent is told where they went (below).
  if (st.status !== "OK" && cmd.name === "COPY" && made.length > 0) await undoCopies(s, command, dp, dest, made);
  if (st.status !== "OK" && st.code?.known && (st.code.name === "TRYCREATE" || st.code.name === "NONEXISTENT")) {
    await s.sync(cmd.name === "MOVE" || cmd.uid);
    throw new Refusal("NO", "TRYCREATE", "Mailbox does not exist");
  }
  const done = st.status === "OK";
  // A MOVE's parts that were carried out: their messages are gone from the source (the EXPUNGEs at sync say so),
  // so the agent is told where they went even when a later part failed.
  if (untagged.length > 0 && untagged.length === tagged.length) {
    const code = mergeCopyUids(untagged.map((u) => u.code));
    if (code !== null) s.send({ ...untagged[0]!.response, code });
  }
  const tagCode = done ? mergeCopyUids(tagged) : agentCopyUid(s, passCode(st.code), dp);
  // MOVE reports the moved messages as expunged (RFC 6851 §3.3).
  await s.sync(cmd.name === "MOVE" || cmd.uid);
  s.taggedFrom(cmd.tag, st, tagCode);
}

/**
 * The COPYUIDs of the upstream commands that carried out one COPY or MOVE, as one (RFC 4315 §3): their source sets
 * and their destination sets each written one after the other. The parts ran in ascending source UID order and each
 * was given destination UIDs above the last part's, so the n-th source UID still pairs with the n-th destination
 * UID. Null unless every part had one, all with the same UIDVALIDITY; a single part's code as it came.
 * Where one part's set ends on the UID before the next part's begins, the two ranges are written as one (`joinRuns`),
 * as one upstream command writes them: the destination UIDs of the parts follow on, and `1:1462,1463:1482` where one
 * command gives `1:1482` told the agent that its set had been cut, which hidden messages between its own decide.
 */
function mergeCopyUids(codes: readonly (ResponseCode | null)[]): ResponseCode | null {
  if (codes.length === 1) return codes[0] ?? null;
  const source: SeqRange[] = [];
  const destination: SeqRange[] = [];
  let uidValidity: number | null = null;
  for (const code of codes) {
    if (code === null || !code.known || code.name !== "COPYUID") return null;
    if (uidValidity !== null && code.uidValidity !== uidValidity) return null;
    uidValidity = code.uidValidity;
    joinRuns(source, code.source);
    joinRuns(destination, code.destination);
  }
  if (uidValidity === null) return null;
  return { known: true, name: "COPYUID", uidValidity, source, destination };
}

/**
 * Appends `ranges` to `into`, the first joined to the last of `into` when both ascend (no `*`) and it begins on the UID
 * after that one's end: the same UIDs in the same order (RFC 4315 §3 pairs source and destination by position), written
 * as a single command's set is.
 */
function joinRuns(into: SeqRange[], ranges: readonly SeqRange[]): void {
  for (const r of ranges) {
    const last = into.at(-1);
    if (
      last !== undefined &&
      last.start >= 1 &&
      last.start <= last.stop &&
      r.start <= r.stop &&
      last.stop + 1 === r.start
    ) {
      into[into.length - 1] = { start: last.start, stop: r.stop };
    } else into.push(r);
  }
}

/**
 * Removes from `dest` the copies that the completed parts of a COPY made (their COPYUIDs in `made`), on the
 * auxiliary upstream session: `UID STORE +FLAGS.SILENT (\Deleted)` and `UID EXPUNGE` of exactly those UIDs (RFC
 * 4315), after a durable row says so. Not the agent's operation but the proxy undoing its own partial work, so no
 * rule is asked. When a part gave no COPYUID, or the destination's UIDVALIDITY changed, or the removal fails, the
 * copies stay and an `error` row says so; the agent's NO is upstream's either way.
 */
async function undoCopies(
  s: Session,
  command: string,
  folder: string,
  dest: string,
  made: readonly (ResponseCode | null)[],
): Promise<void> {
  const copies: SeqRange[] = [];
  let uidValidity: number | null = null;
  let count = 0;
  for (const code of made) {
    if (code === null || !code.known || code.name !== "COPYUID")
      return copiesRemain(s, command, folder, "a completed part gave no COPYUID to find its copies by");
    if ((uidValidity ?? code.uidValidity) !== code.uidValidity)
      return copiesRemain(s, command, folder, "the parts' COPYUIDs name different UIDVALIDITYs of the destination");
    uidValidity = code.uidValidity;
    copies.push(...code.destination);
    for (const r of code.destination) count += r.stop - r.start + 1;
  }
  await s.auditDurable(
    {
      command,
      operation: "mail:delete",
      folder,
      target: null,
      decision: "allow",
      rule: null,
      ruleIndex: null,
      reason: "undo: the COPY failed part-way; the copies its completed parts made are removed (RFC 3501 §6.4.7)",
      count,
    },
    undefined,
    false, // the proxy undoing its own work: the COPY's NO gets its `error` row after the COPY's own allow row
  );
  try {
    await s.withAuxiliary(async (up) => {
      let selected: number | null = null;
      const st = await up.run({ name: "SELECT", mailbox: dest }, (r) => {
        if (r.type === "status" && r.code?.known && r.code.name === "UIDVALIDITY") selected = r.code.value;
      });
      if (st.status !== "OK") throw new Error(`SELECT failed: ${st.text}`);
      try {
        if (selected !== uidValidity) throw new Error("the destination's UIDVALIDITY changed");
        for (let i = 0; i < copies.length; i += UPSTREAM_SET_RANGES) {
          const set = copies.slice(i, i + UPSTREAM_SET_RANGES);
          const flagged = await up.run(
            { name: "STORE", uid: true, set, action: "add", silent: true, flags: ["\\Deleted"] },
            () => {},
          );
          if (flagged.status !== "OK") throw new Error(`UID STORE failed: ${flagged.text}`);
          const expunged = await up.run({ name: "EXPUNGE", uid: true, set }, () => {});
          if (expunged.status !== "OK") throw new Error(`UID EXPUNGE failed: ${expunged.text}`);
        }
      } finally {
        await up.run({ name: "UNSELECT" }, () => {});
      }
    });
  } catch (error) {
    copiesRemain(s, command, folder, (error as Error).message);
  }
}

function copiesRemain(s: Session, command: string, folder: string, why: string): void {
  s.log.warn(`session ${s.id}: ${command} failed part-way and its copies in ${folder} stay: ${why}`);
  s.auditRow({
    command,
    operation: "mail:delete",
    folder,
    target: null,
    decision: "error",
    rule: null,
    ruleIndex: null,
    reason: `the COPY failed part-way and the copies its completed parts made stay: ${why}`,
  });
}
