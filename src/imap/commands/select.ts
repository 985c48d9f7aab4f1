/**
 * SELECT and EXAMINE (RFC 3501 §6.3.1, §6.3.2; folder:read): upstream's mailbox opened read-only unless the agent
 * may change something there, a filtered folder classified before the agent hears of any message, and the untagged
 * data rewritten to the agent's view (docs/protocol.md §3).
 */

import { messageFilter } from "../classify.ts";
import { openFiltered, SearchRefused, SYSTEM_FLAGS, searchUids, sessionRunner } from "../filtering.ts";
import { SELECT_SEARCHES } from "../limits.ts";
import { SelectedMailbox } from "../mailbox.ts";
import { Refusal } from "../refusal.ts";
import type { UpstreamCommand } from "../upstream.ts";
import type { Response } from "../wire/index.ts";
import { type CommandOf, cites, type Session } from "./context.ts";
import {
  agentPermanentFlags,
  deselect,
  folderFlags,
  keywordsShown,
  readOnlyNotice,
  upstreamStatus,
  visibleFolder,
} from "./shared.ts";

/** The `error` row's reason of a SELECT whose answer upstream sent without the `[CLOSED]` it owed. */
const CLOSED_MISSING =
  "upstream closed the folder selected before without [CLOSED]: " +
  "its responses and this folder's could not be told apart";

/** The `error` row's reason of a SELECT whose answer said `what` twice (`onceInAnswer`). */
const twiceIn = (what: string): string =>
  `upstream's answer said ${what} twice: another folder's responses could not be told from this folder's`;

/** The response codes a SELECT's answer says once (`onceInAnswer`). */
const ONCE_CODES = new Set(["PERMANENTFLAGS", "UIDVALIDITY", "UIDNEXT", "UNSEEN"]);

/**
 * What a SELECT's answer says once of the folder it opens (RFC 9051 §6.3.2, RFC 3501 §6.3.1, RFC 7162 §3.1.2): FLAGS,
 * RECENT, and the PERMANENTFLAGS, UIDVALIDITY, UIDNEXT and UNSEEN codes, and one of HIGHESTMODSEQ and NOMODSEQ (either
 * counts as the other: a late HIGHESTMODSEQ beside the new folder's NOMODSEQ is said twice); null for any other
 * response. One said twice before the tagged reply means responses of the folder closed came after the point taken as
 * the boundary (`[CLOSED]`, or UNSELECT's tagged OK), where they would be taken for this folder's (docs/imap.md
 * "Switching folders").
 */
function onceInAnswer(r: Response): string | null {
  if (r.type === "FLAGS" || r.type === "RECENT") return r.type;
  if (r.type !== "status" || r.tag !== null || !r.code?.known) return null;
  const name = r.code.name;
  if (name === "HIGHESTMODSEQ" || name === "NOMODSEQ") return "[HIGHESTMODSEQ] or [NOMODSEQ]";
  return ONCE_CODES.has(name) ? `[${name}]` : null;
}

/** Puts `r` (FLAGS or PERMANENTFLAGS) in place of the one of its kind in `held`, or after them when there is none. */
function replaceFolderFlags(held: Response[], r: Response): void {
  const i = held.findIndex((h) => folderFlags(h) && (h.type === "FLAGS") === (r.type === "FLAGS"));
  if (i === -1) held.push(r);
  else held[i] = r;
}

export async function select(s: Session, cmd: CommandOf<"SELECT" | "EXAMINE">): Promise<void> {
  let p: string;
  // The rules this SELECT is decided by: a reload while it waits for upstream is caught by the check of the view
  // they make (`Session.followReload`, at the sync below and at every later command). `revision` is their config's:
  // the filter taken from them names its rules in the box's probe rows (docs/audit.md).
  const { policy, generation } = s.ctx;
  const revision = s.ctx.config.revision;
  // SELECT/EXAMINE (CONDSTORE) enables CONDSTORE (RFC 7162 §3.1.8), where it is offered.
  if (cmd.condstore === true && !s.capabilities().includes("CONDSTORE")) {
    throw new Refusal("BAD", null, `${cmd.name} parameters are not supported`);
  }
  // Before the name is looked at: upstream enables CONDSTORE for such a command even when it names no mailbox (Dovecot
  // does), and a hidden name must leave the session as an absent one does (docs/protocol.md §0.5).
  if (cmd.condstore === true) s.condstore = true;
  try {
    s.requireAudit();
    p = visibleFolder(s, cmd.name, "folder:read", cmd.mailbox);
    s.require(cmd.name, "folder:read", p);
  } catch (refusal) {
    // A failed SELECT deselects (RFC 3501 §6.3.1): upstream too.
    await deselect(s, cmd.name);
    throw refusal;
  }
  const d = s.decide("folder:read", p);
  // Open upstream read-only unless the agent may change something here: EXAMINE keeps \Recent (RFC 3501 §6.3.2,
  // docs/protocol.md §1).
  const mayChange = s.rights.may("mail:flag", p) || s.rights.may("mail:delete", p) || s.rights.may("mail:move", p);
  let readOnly = cmd.name === "EXAMINE" || !mayChange;
  const previous = s.box?.policyName ?? null;
  // The folder closed hid messages: upstream's [UNSEEN] is not passed on in the next one (`respond`).
  const afterFiltered = s.box !== null && s.box.visible !== null;
  s.box = null;
  s.state = "authenticated";
  const up = s.up!;
  // The folder selected upstream is closed by this SELECT, and the responses upstream still sends of it come before
  // the new folder's: only a `* OK [CLOSED]` between them tells where the new folder's begin (RFC 9051 §7.1), and
  // without it a filtered folder's FLAGS (its hidden messages' keywords), RECENT, UIDNEXT or EXISTS would be taken for
  // the new folder's. Where upstream does not owe one (`closedAtSelect`), the folder is closed with UNSELECT first:
  // what comes before its tagged OK is the closed folder's, and reaches the agent no more than at the agent's own
  // UNSELECT. The SELECT is pipelined behind it (below), except on a server whose boundary failed before (it left out
  // a `[CLOSED]` it owed, or sent a closed folder's responses past the boundary, `boundaryDistrusted`): its UNSELECT
  // is answered before the SELECT goes (docs/imap.md "Switching folders"). An UNSELECT refused while the folder stays
  // open ends the session (`unselectUpstream`).
  let unselecting = up.mailboxSelected && !up.closedAtSelect(cmd.mailbox);
  if (unselecting && up.boundaryDistrusted) {
    await s.unselectUpstream(cmd.name, previous);
    unselecting = false;
  }
  // Upstream owes a `[CLOSED]` in this SELECT's answer (checked below).
  const closing = up.mailboxSelected && !unselecting;
  let closed = false;
  // Written once the mailbox is open, with the counts (or what stopped it); by the session if no answer comes.
  const row = s.awaitAnswer({
    command: cmd.name,
    operation: "folder:read",
    folder: p,
    decision: "allow",
    ...cites(d),
    reason: d.reason,
  });
  const held: Response[] = [];
  let exists = 0;
  // The messages upstream had told of when the search in use began to be answered (`checkListing`).
  let told = 0;
  let uidValidity = 0;
  // No mailbox is modelled yet: every untagged reply is held and rewritten below.
  const upCmd = { name: readOnly ? ("EXAMINE" as const) : ("SELECT" as const), mailbox: cmd.mailbox };
  const selectCmd = s.condstore ? { ...upCmd, condstore: true } : upCmd;
  // What the answer said that it says once (`onceInAnswer`), and the first said twice.
  const said = new Set<string>();
  let twice: string | null = null;
  const onSelected = (r: Response) => {
    // Everything before `[CLOSED]` was about the folder selected before (RFC 9051 §7.1), perhaps a filtered one: its
    // FLAGS, RECENT, UIDNEXT or EXISTS would be taken for this folder's and some sent to the agent as they are.
    if (r.type === "status" && r.tag === null && r.code?.known && r.code.name === "CLOSED") {
      // One boundary per answer (RFC 9051 §7.1): a second leaves what came between the two unplaced.
      if (closed) {
        twice ??= "[CLOSED]";
        return;
      }
      held.length = 0;
      told = exists = uidValidity = 0;
      said.clear();
      twice = null;
      closed = true;
      return;
    }
    const once = onceInAnswer(r);
    if (once !== null) {
      if (said.has(once)) twice ??= once;
      said.add(once);
    }
    if (r.type === "EXISTS") told = exists = r.n;
    if (r.type === "status" && r.code?.known && r.code.name === "UIDVALIDITY") uidValidity = r.code.value;
    held.push(r);
  };
  // Every UID of the folder, asked right behind the SELECT (one round trip for both): Dovecot answers it from the
  // session's view, then reports what changed since (another session's EXPUNGE, an arrival) before its OK. A search
  // during which upstream reported an EXPUNGE is not used: its UIDs and the sequence numbers upstream counts in from
  // then on would differ, and every later FETCH or EXPUNGE by number would land on the wrong message, a hidden one
  // among them. The search is run again, up to SELECT_SEARCHES times (docs/imap.md "Round trips upstream").
  let uids: number[] = [];
  let changed = false;
  const collect = (r: Response) => {
    if (r.type === "SEARCH") for (const n of r.numbers) uids.push(n);
    // An arrival only adds at the end: the UIDs listed keep their numbers, and `onExists` learns the new ones.
    else if (r.type === "EXISTS") exists = r.n;
    else if (r.type === "EXPUNGE") {
      exists = Math.max(0, exists - 1);
      changed = true;
    } else if (folderFlags(r)) replaceFolderFlags(held, r);
  };
  const searchAll: UpstreamCommand = {
    name: "SEARCH",
    uid: true,
    returnOptions: null,
    charset: null,
    criteria: [{ key: "ALL" }],
  };
  // The SELECT and its search in one write, behind the UNSELECT when one goes first. The server carries them out in
  // order (RFC 9051 §5.5: each changes what the next acts on), so the SELECT's own responses are those after
  // UNSELECT's tagged OK, as when it was sent once that OK had come. The search goes through no model: no mailbox is
  // modelled yet, and `collect` watches for the changes.
  const sent = up.together(() => {
    const unselected = unselecting ? s.upstreamRun({ name: "UNSELECT" }) : null;
    const selected = unselected === null ? up.run(selectCmd, onSelected) : up.pipeline(selectCmd, onSelected);
    return { unselected, selected, searched: selected === null ? null : up.pipeline(searchAll, collect) };
  });
  const searched = sent.searched;
  searched?.catch(() => {}); // a lost connection rejects the SELECT too, which reports it
  let selected = sent.selected;
  if (sent.unselected !== null) {
    // Nothing of the SELECT is used unless UNSELECT is answered OK: refused, it ends the session.
    selected?.catch(() => {});
    await s.unselectUpstream(cmd.name, previous, sent.unselected);
  }
  // Not pipelined (a name sent as a literal waits for `+`): sent now that UNSELECT is answered.
  selected ??= up.run(selectCmd, onSelected);
  const st = await selected;
  if (st.status !== "OK") {
    await searched?.catch(() => {});
    row.write({ reason: `${d.reason}; upstream: ${st.text}` });
    return upstreamStatus(s, cmd.tag, st, true);
  }
  // Upstream closed a folder without the `[CLOSED]` it owed, or sent responses of the folder closed after the
  // boundary (its answer said twice what it says once): what it sent of that folder cannot be told from this one's,
  // so none of it is used. The SELECT fails closed, and this upstream session closes a folder with UNSELECT, answered
  // before the SELECT goes, before every later SELECT (docs/imap.md "Switching folders").
  const unbounded = closing && !closed ? CLOSED_MISSING : twice === null ? null : twiceIn(twice);
  if (unbounded !== null) {
    await searched?.catch(() => {});
    up.distrustBoundary();
    row.write({ decision: "error", reason: unbounded });
    await s.unselectUpstream(cmd.name, p).catch(() => {});
    throw new Refusal("NO", "UNAVAILABLE", "The mailbox could not be opened; try again later");
  }
  // A SELECT upstream opened read-only (RFC 3501 §6.3.1: `OK [READ-ONLY]`; an ACL without write rights, a folder it
  // cannot write) is read-only for the agent too: told `[READ-ONLY]`, its writes refused (refuseReadOnly), bodies
  // fetched with PEEK. Told `[READ-WRITE]`, its STOREs would be allowed and audited and then ignored upstream.
  if (st.code?.known && st.code.name === "READ-ONLY") readOnly = true;
  // The same said untagged among its responses (RFC 3501 §7.1).
  if (held.some(readOnlyNotice)) readOnly = true;
  let listed = searched !== null && (await searched).status === "OK";
  for (let searches = searched === null ? 0 : 1; !listed || changed; searches++) {
    if (searches >= SELECT_SEARCHES) {
      const why = listed ? "it changed during each search" : "upstream refused the search";
      row.write({ decision: "error", reason: `the folder's UIDs could not be listed: ${why}` });
      await s.unselectUpstream(cmd.name, p).catch(() => {});
      throw new Refusal("NO", "UNAVAILABLE", "The mailbox could not be opened; try again later");
    }
    uids = [];
    changed = false;
    told = exists;
    listed = (await up.run(searchAll, collect)).status === "OK";
  }
  uids.sort((a, b) => a - b);
  const wrong = checkListing(uids, told, exists);
  if (wrong !== null) {
    row.write({ decision: "error", reason: `the folder's UIDs could not be listed: ${wrong}` });
    await s.unselectUpstream(cmd.name, p).catch(() => {});
    throw new Refusal("NO", "UNAVAILABLE", "The mailbox could not be opened: the server listed its messages wrongly");
  }
  const filter = messageFilter(policy, p, s.agent);
  let box: SelectedMailbox;
  if (filter === null) {
    box = new SelectedMailbox(cmd.mailbox, p, readOnly, uids);
    box.generation = generation;
    box.uidValidity = uidValidity;
    if (uids.length < exists) box.onExists(exists);
  } else {
    try {
      const o = { name: cmd.mailbox, policyName: p, readOnly, uids, exists, uidValidity, filter, generation, revision };
      box = await openFiltered(s, o);
    } catch (error) {
      // The session ended under the classification for another reason than upstream's (the agent hung up, the proxy
      // is stopping): not a classification failure but an answer that never came, and the dispatch writes the allow
      // row saying so (docs/audit.md "What a row records"). Upstream lost (a BYE answering the FETCH) is one.
      if (s.closed && !s.upstreamLost) throw error;
      // Nothing may be shown that was not classified: the SELECT fails, and deselects upstream too (§6.3.1).
      row.write({
        operation: "mail:read",
        decision: "error",
        reason: `classification failed: ${(error as Error).message}`,
      });
      // An upstream that failed with BYE (Dovecot's default on a failed FETCH) is gone, and the session ends with
      // it; UNSELECT can only fail then, and the refusal below is its one answer (no second audit row).
      await s.unselectUpstream(cmd.name, p).catch(() => {});
      throw new Refusal("NO", "UNAVAILABLE", "The mailbox could not be filtered; try again later");
    }
  }
  // The allow row before anything of the mailbox reaches the agent (docs/imap.md "Audit before data"); a SELECT
  // that cannot be audited fails, and deselects upstream too.
  try {
    row.write({ count: box.agentCount, hiddenCount: box.upstreamCount - box.agentCount });
  } catch (error) {
    await s.unselectUpstream(cmd.name, p).catch(() => {});
    throw error;
  }
  box.opening = true;
  s.box = box;
  // Before anything runs under this box: its sync checks the view against the rules (Session.followReload).
  box.keywordsShown = keywordsShown(s);
  s.state = "selected";
  try {
    await respond(s, box, held, p, afterFiltered);
  } catch (error) {
    // A SELECT that fails leaves no mailbox selected (RFC 3501 §6.3.1), upstream too: the agent that is told NO must
    // not find the folder open at its next command. Upstream did not complete a search of a filtered folder's unseen
    // or recent messages (`searchUids`): an `error` row says so after the allow row written above.
    if (s.box === box) {
      s.box = null;
      s.state = "authenticated";
      if (error instanceof SearchRefused)
        s.auditRow({
          command: cmd.name,
          operation: "folder:read",
          folder: p,
          decision: "error",
          ...cites(d),
          reason: `${d.reason}; opened, then closed again: ${error.why}`,
        });
      if (!s.closed) await s.unselectUpstream(cmd.name, p).catch(() => {});
    }
    throw error;
  } finally {
    box.opening = false;
    box.openingUpdates.length = 0;
  }
  // A filtered folder has no mod-sequences (RFC 7162 §3.1.2.2): upstream's move when a hidden message changes.
  if (box.visible !== null && s.capabilities().includes("CONDSTORE")) {
    s.sendText("* OK [NOMODSEQ] No mod-sequences in a filtered folder");
  }
  s.tagged(cmd.tag, "OK", readOnly ? "READ-ONLY" : "READ-WRITE", `${cmd.name} completed`);
}

/**
 * Why upstream's `UID SEARCH ALL` at SELECT cannot be the folder's sequence map (U, src/imap/mailbox.ts), or null
 * when it can. `uids` are sorted (RFC 3501 §7.2.5 sets no order); `told` is how many messages upstream had reported
 * (EXISTS, less the EXPUNGEs before) when it began to answer the search, `exists` how many once it had answered.
 * A search during which upstream reported an EXPUNGE is never used (it is run again), and every message upstream
 * told of is still there until it reports its EXPUNGE, so the search lists each of them: at least `told` UIDs. It
 * lists no message upstream does not report in its answer: at most `exists` (Dovecot lists exactly `told`, and
 * reports an arrival after them, `tests/imap/select-race.test.ts`). A UID missing, repeated or added would put every
 * later sequence number on another message's UID, a hidden one among them: the SELECT fails closed instead
 * (`tests/imap/select-uid-list.test.ts`).
 */
function checkListing(uids: readonly number[], told: number, exists: number): string | null {
  for (let i = 1; i < uids.length; i++)
    if (uids[i] === uids[i - 1]) return `upstream listed UID ${uids[i]} twice in UID SEARCH ALL`;
  if (uids.length >= told && uids.length <= exists) return null;
  const count = told === exists ? `${told}` : `${told} to ${exists}`;
  return `upstream listed ${uids.length} UIDs in UID SEARCH ALL for ${count} messages it reported`;
}

/**
 * The opened folder's own responses, in the agent's view: what arrived meanwhile (sync, expunges not yet), then
 * upstream's SELECT responses as held, renumbered (RECENT and UNSEEN over the visible messages of a filtered folder).
 * `afterFiltered`: the folder closed by this SELECT hid messages. Then an unfiltered folder's answer goes without
 * upstream's `[UNSEEN]`: one the closed folder's answer sent late, past the boundary, where this folder's says none,
 * would be taken for this folder's and tell where a hidden unseen message is (`onceInAnswer` catches it only where
 * this folder's answer says one too). RFC 3501 §6.3.1 lets the answer leave it out (the client then searches), and
 * RFC 9051 has none.
 */
async function respond(
  s: Session,
  box: SelectedMailbox,
  held: Response[],
  p: string,
  afterFiltered: boolean,
): Promise<void> {
  // Expunges upstream reported since the search wait for the next command: before the EXISTS below the agent knows
  // of no message, and cannot apply `* n EXPUNGE` (RFC 9051 §7.5.1). Until then they are in its count.
  await s.sync(false);
  const filtered = box.visible !== null;
  const keywords = box.keywordsShown;
  // In a filtered folder RECENT and UNSEEN are computed over the visible messages (docs/protocol.md §3).
  const unseenSeq = filtered ? box.firstAgentSeqAmong(await searchUids(sessionRunner(s), "UNSEEN")) : 0;
  // A keyword that came into use meanwhile: upstream's newer FLAGS and PERMANENTFLAGS go out in place of the first.
  for (const r of box.openingUpdates.splice(0)) replaceFolderFlags(held, r);
  for (const r of held) {
    switch (r.type) {
      case "FLAGS":
        s.send(keywords ? r : { ...r, flags: [...SYSTEM_FLAGS] });
        break;
      case "EXISTS":
        s.sendText(`* ${box.agentCount} EXISTS`);
        break;
      case "RECENT":
        if (filtered) {
          box.recent = box.countKnown(await searchUids(sessionRunner(s), "RECENT"));
          box.recentDue = false;
          s.sendText(`* ${box.recent} RECENT`);
        } else s.send(r);
        break;
      case "status": {
        const code = r.code;
        if (code === null || !code.known) break;
        if (code.name === "PERMANENTFLAGS") {
          s.send({ ...r, code: { ...code, flags: agentPermanentFlags(s, p, code.flags) } });
        } else if (code.name === "UNSEEN") {
          if (!filtered && afterFiltered) break;
          const k = filtered ? unseenSeq : box.agentSeqOf(box.uidOf(code.value));
          if (k > 0) s.send({ ...r, code: { ...code, value: k } });
        } else if (code.name === "UIDNEXT") {
          s.send(filtered ? { ...r, code: { ...code, value: box.uidNext(code.value) } } : r);
        } else if (code.name === "UIDVALIDITY") {
          s.send(r);
        } else if (code.name === "HIGHESTMODSEQ" || code.name === "NOMODSEQ") {
          // Upstream's mod-sequences in an unfiltered folder only (RFC 7162 §3.1.2.1); see NOMODSEQ below.
          if (!filtered && s.condstore) s.send(r);
        }
        break;
      }
    }
  }
  // Dovecot sends UNSEEN only when some message is unseen; a filtered folder's first unseen may be visible anyway.
  if (
    filtered &&
    unseenSeq > 0 &&
    !held.some((r) => r.type === "status" && r.code?.known && r.code.name === "UNSEEN")
  ) {
    s.sendText(`* OK [UNSEEN ${unseenSeq}] First unseen`);
  }
}
