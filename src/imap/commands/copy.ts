/**
 * COPY and MOVE, plain and UID (RFC 3501 §6.4.7, RFC 6851; mail:read at the source, and mail:move there for a
 * MOVE; mail:append at the destination): COPYUID passed on only where it cannot betray hidden messages, and a
 * filtered folder's MOVE over several upstream commands all or nothing (docs/imap.md "COPY carried out in parts").
 */

import { ALSO_NEEDS } from "../decide.ts";
import { agentCopyUid } from "../filtering.ts";
import { UPSTREAM_SET_RANGES } from "../limits.ts";
import { Refusal } from "../refusal.ts";
import { withoutTimings } from "../upstream-text.ts";
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
  const row = {
    command,
    operation: cmd.name === "MOVE" ? "mail:move" : "mail:read",
    folder: p,
    target: dp,
    decision: "allow",
    ...cites(d),
    reason: `${d.reason}; destination: ${dd.reason}`,
    count: uids.length,
  } as const;
  // Decided and allowed, with nothing to send upstream: the decision has its row all the same, counting no message
  // (docs/audit.md "What a row records"), queued as a read's is, since nothing changes.
  if (uids.length === 0) {
    s.auditRow(row);
    return s.tagged(cmd.tag, "OK", null, "No messages");
  }
  await s.auditDurable(row);
  const sets = box.upstreamSets(uids);
  // A filtered folder's MOVE that takes more than one upstream command goes as a COPY in parts, and the messages leave
  // the source only once every part is done (`removeMoved`): parts of MOVEs cannot be undone, and which of them were
  // carried out when a later one failed would tell the agent where the set was cut, i.e. where hidden messages lie
  // (docs/imap.md "COPY carried out in parts"). Unfiltered, where the agent's own set alone decides the parts, and
  // in one command, a MOVE is upstream's MOVE.
  const inParts = cmd.name === "MOVE" && box.visible !== null && sets.length > 1;
  const undoable = cmd.name === "COPY" || inParts;
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
    const running = s.upstreamWrite({ name: inParts ? "COPY" : cmd.name, uid: true, set, mailbox: dest }, (r) => {
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
      if (undoable && part > 0) {
        const why = `part ${part + 1} of ${sets.length} got no answer (${(error as Error).message})`;
        copiesRemain(s, command, cmd.name, dp, why);
      }
      throw error;
    }
    if (st.status !== "OK") break;
    made.push(st.code);
    tagged.push(agentCopyUid(s, passCode(st.code), dp));
  }
  // RFC 3501 §6.4.7: a COPY that fails leaves the destination as it was. One upstream command is atomic there; a
  // COPY split over several is not, so the copies its completed parts made are removed again (docs/imap.md
  // "COPY carried out in parts"). So are those of a filtered folder's MOVE in parts, which moved nothing yet.
  if (st.status !== "OK" && undoable && made.length > 0) await undoCopies(s, command, cmd.name, dp, dest, made);
  if (st.status !== "OK" && st.code?.known && (st.code.name === "TRYCREATE" || st.code.name === "NONEXISTENT")) {
    await s.sync(cmd.name === "MOVE" || cmd.uid);
    throw new Refusal("NO", "TRYCREATE", "Mailbox does not exist");
  }
  const done = st.status === "OK";
  if (done && inParts) {
    const moved = await removeMoved(s, command, { uids, sets, folder: dp, dest, made });
    if (!moved) {
      await s.sync(true);
      return s.tagged(cmd.tag, "NO", "UNAVAILABLE", "The move could not be completed");
    }
    // As upstream's MOVE answers (RFC 6851 §4.3): the COPYUID untagged, before the expunges (at sync).
    const code = mergeCopyUids(tagged);
    if (code !== null) s.send({ type: "status", tag: null, status: "OK", code, text: MOVED_UIDS });
    await s.sync(true);
    return s.tagged(cmd.tag, "OK", null, MOVE_COMPLETED);
  }
  // A MOVE's parts that were carried out (an unfiltered folder's: there its own set alone decides the parts): their
  // messages are gone from the source (the EXPUNGEs at sync say so), so the agent is told where they went even when
  // a later part failed.
  if (untagged.length > 0 && untagged.length === tagged.length) {
    const code = mergeCopyUids(untagged.map((u) => u.code));
    // In a filtered folder the proxy's own text, the same as a MOVE in parts gets.
    if (code !== null)
      s.send({ ...untagged[0]!.response, code, ...(box.visible === null ? {} : { text: MOVED_UIDS }) });
  }
  const tagCode = done ? mergeCopyUids(tagged) : agentCopyUid(s, passCode(st.code), dp);
  // MOVE reports the moved messages as expunged (RFC 6851 §3.3).
  await s.sync(cmd.name === "MOVE" || cmd.uid);
  const filteredMove = done && cmd.name === "MOVE" && box.visible !== null;
  s.taggedFrom(cmd.tag, filteredMove ? { ...st, text: MOVE_COMPLETED } : st, tagCode);
}

/**
 * The texts of a filtered folder's MOVE (Dovecot's own, without its timings): the proxy's, whether upstream's MOVE or
 * a COPY in parts carried it out, so that the reply does not tell which.
 */
const MOVED_UIDS = "Moved UIDs.";
const MOVE_COMPLETED = "Move completed";

/**
 * The second half of a filtered folder's MOVE carried out as a COPY in parts, once every part's copies exist: the moved
 * messages leave the source as RFC 6851 §3.3 describes MOVE's emulation, `UID STORE +FLAGS.SILENT (\Deleted)` then
 * `UID EXPUNGE` of exactly the moved UIDs (RFC 4315 §2.1: no other `\Deleted` message goes), in the COPY's parts. The
 * MOVE's allow row, on disk before its first part, covers them: they are the move, and ask nothing more of the agent
 * (no mail:delete). Returns whether the messages were moved.
 *
 * Before, `UID SEARCH DELETED` tells which of them were `\Deleted` already. When that search, a STORE or an EXPUNGE
 * is answered NO or BAD (nothing the agent's commands bring about: the source is selected read-write, as MOVE asks),
 * the messages are put back as far as can be: `\Deleted` is taken off again those that did not have it, after a
 * durable row, and when every one is still in the source its copies are removed (`undoCopies`): the agent gets NO
 * and nothing moved. A message no longer in the source (expunged by a part that went through, or by another
 * session) keeps its copy, and the agent gets its EXPUNGE; so does every copy stay when taking `\Deleted` off fails.
 * An `error` row says what stayed. A step with no answer ends the session, and a row says the copies stay.
 */
async function removeMoved(
  s: Session,
  command: string,
  m: {
    readonly uids: readonly number[];
    readonly sets: readonly SeqRange[][];
    /** The destination: its policy name (rows) and its upstream name. */
    readonly folder: string;
    readonly dest: string;
    readonly made: readonly (ResponseCode | null)[];
  },
): Promise<boolean> {
  const box = s.box!;
  const source = box.policyName;
  const deleted = new Set<number>();
  let failure: string | null = null;
  let flagged = false;
  const answered = (step: string, st: UpstreamStatus) => `${step} answered ${st.status} ${withoutTimings(st.text)}`;
  try {
    const searched = await s.upstreamRun(
      { name: "SEARCH", uid: true, returnOptions: null, charset: null, criteria: [{ key: "DELETED" }] },
      (r) => {
        if (r.type === "SEARCH") for (const n of r.numbers) deleted.add(n);
        else forwardUntagged(s, r);
      },
    );
    if (searched.status !== "OK") failure = answered("UID SEARCH DELETED", searched);
    for (const [part, set] of m.sets.entries()) {
      if (failure !== null) break;
      flagged = true;
      const st = await s.upstreamWrite(
        { name: "STORE", uid: true, set, action: "add", silent: true, flags: ["\\Deleted"] },
        (r) => forwardUntagged(s, r),
      );
      if (st.status !== "OK") failure = answered(`UID STORE part ${part + 1} of ${m.sets.length}`, st);
    }
    for (const [part, set] of m.sets.entries()) {
      if (failure !== null) break;
      const st = await s.upstreamWrite({ name: "EXPUNGE", uid: true, set });
      if (st.status !== "OK") failure = answered(`UID EXPUNGE part ${part + 1} of ${m.sets.length}`, st);
    }
  } catch (error) {
    moveStays(s, command, m.folder, `removing them from ${source} got no answer (${(error as Error).message})`);
    throw error;
  }
  if (failure === null) return true;
  s.log.warn(`session ${s.id}: ${command} to ${m.folder} could not remove its messages from ${source}: ${failure}`);
  const gone = m.uids.filter((u) => !box.holds(u)).length;
  const restore = flagged ? m.uids.filter((u) => !deleted.has(u) && box.holds(u)) : [];
  if (restore.length > 0) {
    await s.auditDurable(
      {
        command,
        operation: "mail:flag",
        folder: source,
        target: "\\Deleted",
        decision: "allow",
        rule: null,
        ruleIndex: null,
        reason: `undo: the MOVE failed after its copies were made (${failure}); \\Deleted is taken off again`,
        count: restore.length,
      },
      undefined,
      false, // the proxy undoing its own work, as undoCopies
    );
    try {
      for (const set of box.upstreamSets(restore)) {
        const st = await s.upstreamWrite(
          { name: "STORE", uid: true, set, action: "remove", silent: true, flags: ["\\Deleted"] },
          (r) => forwardUntagged(s, r),
        );
        if (st.status !== "OK") {
          const why = `${failure}; then ${answered("UID STORE -FLAGS", st)}`;
          moveStays(s, command, m.folder, `${why}: \\Deleted stays on the moved messages in ${source}`);
          return false;
        }
      }
    } catch (error) {
      const why = `${failure}; then taking \\Deleted off again got no answer (${(error as Error).message})`;
      moveStays(s, command, m.folder, why);
      throw error;
    }
  }
  if (gone === 0) await undoCopies(s, command, "MOVE", m.folder, m.dest, m.made, failure);
  else moveStays(s, command, m.folder, `${failure}: ${gone} of ${m.uids.length} messages left ${source}`);
  return false;
}

/** The `error` row of a MOVE in parts whose copies in `folder` stay after it failed (`removeMoved`). */
function moveStays(s: Session, command: string, folder: string, why: string): void {
  copiesStay(s, command, folder, `the MOVE failed after its copies were made, and they stay: ${why}`);
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
 * Removes from `dest` the copies that the completed parts of a COPY made (their COPYUIDs in `made`), or of a filtered
 * folder's MOVE carried out as a COPY in parts (`name`; `after`: what failed once every part was done,
 * `removeMoved`), on the auxiliary upstream session: `UID STORE +FLAGS.SILENT (\Deleted)` and `UID EXPUNGE` of exactly
 * those UIDs (RFC 4315), after a durable row says so. Not the agent's operation but the proxy undoing its own partial
 * work, so no rule is asked. When a part gave no COPYUID, or the destination's UIDVALIDITY changed, or the removal
 * fails, the copies stay and an `error` row says so; the agent's NO is the same either way.
 */
async function undoCopies(
  s: Session,
  command: string,
  name: "COPY" | "MOVE",
  folder: string,
  dest: string,
  made: readonly (ResponseCode | null)[],
  after: string | null = null,
): Promise<void> {
  const copies: SeqRange[] = [];
  let uidValidity: number | null = null;
  let count = 0;
  for (const code of made) {
    if (code === null || !code.known || code.name !== "COPYUID")
      return copiesRemain(s, command, name, folder, "a completed part gave no COPYUID to find its copies by");
    if ((uidValidity ?? code.uidValidity) !== code.uidValidity)
      return copiesRemain(
        s,
        command,
        name,
        folder,
        "the parts' COPYUIDs name different UIDVALIDITYs of the destination",
      );
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
      reason:
        after !== null
          ? `undo: the MOVE failed after its copies were made (${after}) and moved nothing; the copies are removed`
          : name === "COPY"
            ? "undo: the COPY failed part-way; the copies its completed parts made are removed (RFC 3501 §6.4.7)"
            : "undo: the MOVE failed part-way and moved nothing; the copies its completed parts made are removed",
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
    copiesRemain(s, command, name, folder, (error as Error).message);
  }
}

function copiesRemain(s: Session, command: string, name: "COPY" | "MOVE", folder: string, why: string): void {
  copiesStay(s, command, folder, `the ${name} failed part-way and the copies its completed parts made stay: ${why}`);
}

/** The `error` row and log line of copies in `folder` that a failed COPY or MOVE leaves there; `reason` says why. */
function copiesStay(s: Session, command: string, folder: string, reason: string): void {
  s.log.warn(`session ${s.id}: ${command} to ${folder}: ${reason}`);
  s.auditRow({
    command,
    operation: "mail:delete",
    folder,
    target: null,
    decision: "error",
    rule: null,
    ruleIndex: null,
    reason,
  });
}
