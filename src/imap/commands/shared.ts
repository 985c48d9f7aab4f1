/**
 * Helpers shared by the command handlers of this folder: the hidden-folder check and upstream's status as the
 * proxy's own (a hidden folder answers exactly as a nonexistent one, docs/protocol.md §0.5), the UIDs a message
 * command addresses and the audit of probes for hidden ones (docs/filtering.md "Probes"), FETCH responses
 * renumbered for the agent, the response codes the agent may see, and the safe expunge.
 */

import type { Operation } from "../../policy/index.ts";
import { quotaSubject } from "../../quotas/index.ts";
import { PASSED_CODES } from "../capabilities.ts";
import { messageFilter } from "../classify.ts";
import { PROBE_TARGET_CHARS, UPSTREAM_REST_OCTETS } from "../limits.ts";
import type { SelectedMailbox } from "../mailbox.ts";
import { Refusal } from "../refusal.ts";
import type { UpstreamCommand } from "../upstream.ts";
import { withoutTimings } from "../upstream-text.ts";
import { NO_HIDING_RULE } from "../view.ts";
import {
  type Command,
  Encoder,
  type FetchAttr,
  type Response,
  type ResponseCode,
  type SeqSet,
  type StatusItem,
  SYSTEM_FLAGS,
  writeCommand,
} from "../wire/index.ts";
import { cites, type Decided, type Session, type UpstreamStatus } from "./context.ts";

export const NONEXISTENT = new Refusal("NO", "NONEXISTENT", "Mailbox does not exist");

export const TRYCREATE = new Refusal("NO", "TRYCREATE", "Mailbox does not exist");

/** Upstream response codes the agent may see. */
export function passCode(code: ResponseCode | null): ResponseCode | null {
  return code?.known && PASSED_CODES.has(code.name) ? code : null;
}

/**
 * A hidden or invalid name is refused as nonexistent, and the refusal audited with the rule that hides the
 * folder; returns the policy name otherwise.
 */
export function visibleFolder(s: Session, command: string, op: Operation, name: string, refusal = NONEXISTENT): string {
  const invalid = s.names.invalidWhy(name);
  if (invalid !== null) {
    s.auditRow({
      command,
      operation: op,
      folder: null,
      target: name,
      decision: "deny",
      rule: null,
      ruleIndex: null,
      reason: `invalid mailbox name: ${invalid}`,
    });
    throw refusal;
  }
  const p = s.names.toPolicy(name);
  if (!s.rights.visible(p)) {
    const d = s.decide(op, p);
    s.auditRow({
      command,
      operation: op,
      folder: p,
      decision: "deny",
      ...cites(d),
      reason: `hidden folder; ${d.reason}`,
    });
    throw refusal;
  }
  return p;
}

/**
 * Upstream's "no such mailbox" becomes the proxy's own reply, so it cannot differ from a hidden folder's. With
 * `uncodedIsMissing` (SELECT, EXAMINE, STATUS, SUBSCRIBE), a NO without a response code counts as "no such
 * mailbox" too: Dovecot answers those for an absent name with `NO Mailbox doesn't exist: NAME (timings)` and no code.
 */
export function upstreamStatus(
  s: Session,
  tag: string,
  st: { status: string; code: ResponseCode | null; text: string },
  uncodedIsMissing = false,
  uidCode: "APPENDUID" | null = null,
): void {
  if (st.status !== "OK" && st.code?.known && (st.code.name === "NONEXISTENT" || st.code.name === "TRYCREATE")) {
    throw st.code.name === "TRYCREATE" ? TRYCREATE : NONEXISTENT;
  }
  if (st.status === "NO" && st.code === null && uncodedIsMissing) throw NONEXISTENT;
  // COPYUID and APPENDUID only where the caller has made them the agent's (APPEND's APPENDUID through agentCopyUid);
  // UIDNEXT and UIDVALIDITY never pass (PASSED_CODES).
  const code = passCode(st.code);
  s.taggedFrom(tag, st, code !== null && MAILBOX_STATE_CODES.has(code.name) && code.name !== uidCode ? null : code);
}

/** Leaves the selected folder, upstream too (`Session.unselectUpstream`); `command` is the agent's, for its row. */
export async function deselect(s: Session, command: string): Promise<void> {
  const box = s.box;
  if (box === null) return;
  s.box = null;
  s.state = "authenticated";
  await s.unselectUpstream(command, box.policyName);
}

/**
 * DELETE or RENAME of the selected folder (or of one above it) closes it first (`deselect`; docs/protocol.md §1), and
 * the agent is told with an untagged `OK [CLOSED]` (RFC 9051 §7.1: the selected mailbox was closed implicitly) before
 * the tagged reply, whether upstream then does the DELETE or RENAME or refuses it. A client that knows the code
 * drops its selected state; one that does not ignores it (RFC 3501 §7.1).
 */
export async function closeForFolderWrite(s: Session, command: string): Promise<void> {
  if (s.box === null) return;
  await deselect(s, command);
  s.sendText("* OK [CLOSED] Mailbox closed: it is being renamed or deleted");
}

/**
 * The refusals of a folder:write command (DELETE, RENAME) on `folder`: each call writes its deny row, naming
 * the rule that decides where one does (`by`), and throws the refusal the agent gets.
 */
export function folderWriteRefusal(s: Session, command: string, folder: string) {
  return (
    reason: string,
    code: "NOPERM" | "CANNOT",
    text: string,
    target: string | null = null,
    by: { rule: string | null; ruleIndex: number | null; revision?: string } = { rule: null, ruleIndex: null },
  ): never => {
    s.auditRow({ command, operation: "folder:write", folder, target, decision: "deny", ...by, reason });
    throw new Refusal("NO", code, text);
  };
}

/**
 * The rule that makes `folder` (policy name) filtered for the session's agent: the first of the rules that decide
 * its messages one by one (`MessageFilter.rules`, docs/filtering.md); null when the folder alone decides what the
 * agent reads there. DELETE and RENAME refuse a filtered folder: they would destroy or carry along the messages it
 * hides (docs/imap.md "Decisions").
 */
export function filteringRule(
  s: Session,
  folder: string,
): { rule: string | null; ruleIndex: number | null; revision: string } | null {
  const revision = s.ctx.config.revision; // of the same reload as the policy read next (docs/audit.md)
  const filter = messageFilter(s.ctx.policy, folder, s.agent);
  if (filter === null) return null;
  const first = filter.rules[0];
  return { rule: first?.name ?? null, ruleIndex: first?.index ?? null, revision };
}

/**
 * Names below `name` upstream (hidden ones included: they decide whether DELETE or RENAME is safe); null for one the
 * agent can never see, a name that cannot be decoded or that `FolderNames.invalid` refuses, which the callers take
 * for a hidden child.
 */
async function children(
  s: Session,
  name: string,
): Promise<{ below: (string | null)[]; status: UpstreamStatus | null }> {
  const d = s.names.delimiter;
  if (d === null) return { below: [], status: null };
  const below: (string | null)[] = [];
  const status = await s.upstreamRun(
    { name: "LIST", reference: "", pattern: `${name}${d}*`, selectOptions: [], returnOptions: [] },
    (r) => {
      if (r.type === "LIST") below.push(r.mailbox === null || s.names.invalid(r.mailbox) ? null : r.mailbox);
    },
  );
  return { below, status };
}

/**
 * DELETE's and RENAME's checks around the listing of the folders below `name` (`children`): `judge` (the folder's
 * own checks, by the rules in force, throwing a refusal) runs before the listing, so that a refused command sends
 * nothing upstream, and again after it, so that the folder and the children the caller then judges are decided by
 * one config, whatever a reload did meanwhile (docs/operations.md "Reload"). When that reload ends the session after
 * this command (`endingByReload`: its agent removed, its token changed), nothing more is decided for an agent, token
 * or login the config no longer has, even by a rule that names no agents: the command is refused with a deny row,
 * and the `* BYE` follows its reply. Null when the session is over.
 *
 * A session that ends during the listing (the agent hangs up, upstream is lost, the proxy stops) or at its end (a
 * reload that leaves the selected folder's view stale) leaves the command undecided and unsent: it has an `error`
 * row citing the folder's own decision, and saying so and why (docs/audit.md "What a row records").
 */
export async function judgedWithChildren<T extends { readonly p: string; readonly np?: string; readonly d: Decided }>(
  s: Session,
  command: string,
  name: string,
  judge: () => T,
): Promise<{ judged: T; below: (string | null)[] } | null> {
  const first = judge();
  const undecided = `${command} not decided (the folders below it were being listed) and not sent upstream`;
  // Written by the session, with why it ended, if it ends before the listing is answered.
  const row = s.awaitAnswer({
    command,
    operation: "folder:write",
    folder: first.p,
    target: first.np ?? null,
    decision: "error",
    ...cites(first.d),
    reason: undecided,
  });
  const { below, status } = await children(s, name);
  if (!s.followReload()) {
    row.write({ reason: `${undecided}; the session ended (${s.endReason})` });
    return null;
  }
  // A listing upstream did not complete is not an empty one: the folders below could be read-only, filtered or
  // hidden, and DELETE or RENAME would reach them unchecked. Refused (fail closed), with the row saying why.
  if (status !== null && status.status !== "OK") {
    row.write({ reason: `${undecided}; upstream did not list them: ${status.status} ${withoutTimings(status.text)}` });
    throw new Refusal("NO", "UNAVAILABLE", "The folders below it could not be listed; nothing was done");
  }
  row.drop();
  const why = s.endingByReload();
  if (why !== null) {
    s.auditRow({
      command,
      operation: "folder:write",
      folder: first.p,
      target: null,
      decision: "deny",
      rule: null,
      ruleIndex: null,
      reason: `the configuration changed while the command ran and ends this session: ${why}`,
    });
    throw new Refusal("NO", null, "Configuration changed while the command ran; nothing was done");
  }
  return { judged: judge(), below };
}

/** The UIDs a command addresses, or a BAD refusal for a sequence number out of range (as Dovecot answers). */
export function target(box: SelectedMailbox, uid: boolean, set: SeqSet): number[] {
  if (uid) return box.uidsFromUidSet(set);
  const uids = box.uidsFromSeqSet(set);
  if (uids === null) throw new Refusal("BAD", null, "Invalid messageset");
  return uids;
}

/**
 * A UID command that names messages hidden from the agent (docs/filtering.md "Probes", `hiddenNamed`) gets one
 * `deny` row: `hiddenCount` how many, `target` which, and the rule that hid the lowest of them (the reason names
 * the others' rules too). Nothing changes for the agent: hidden UIDs were cut from the command, and it gets the
 * reply a nonexistent UID gets. Sequence numbers are positions among the messages the agent sees: they cannot
 * name a hidden one.
 */
export function auditProbe(s: Session, command: string, operation: string, set: SeqSet): void {
  const box = s.box!;
  const named = box.hiddenNamed(set);
  const n = named.uids.length;
  if (n === 0) return;
  const rules = box.filter?.rules ?? [];
  const ruleAt = (slot: number) => (slot === NO_HIDING_RULE ? null : (rules[slot] ?? null));
  const describe = (slot: number) => {
    const r = ruleAt(slot);
    return r === null
      ? "no rule (the default deny, or a field that could not be read)"
      : `rule ${r.index + 1} "${r.name}"`;
  };
  const bySlot = new Map<number, number>();
  for (const slot of named.slots) bySlot.set(slot, (bySlot.get(slot) ?? 0) + 1);
  const first = named.slots[0]!;
  let reason = `${n} hidden message${n === 1 ? "" : "s"} named, answered as nonexistent; hidden by ${describe(first)}`;
  if (bySlot.size > 1) {
    reason += ` (${bySlot.get(first)} of them)`;
    for (const [slot, count] of bySlot) if (slot !== first) reason += `; ${count} by ${describe(slot)}`;
  }
  const rule = ruleAt(first);
  s.auditRow({
    command,
    operation,
    folder: box.policyName,
    target: probeTarget(named.uids),
    decision: "deny",
    rule: rule?.name ?? null,
    ruleIndex: rule?.index ?? null,
    // The rules of the filter that hid them, which a reload may have replaced since (docs/audit.md).
    ...(box.filterRevision === null ? {} : { revision: box.filterRevision }),
    reason,
    count: 0,
    hiddenCount: n,
  });
}

/**
 * `UIDs 4,7:9` for ascending UIDs (consecutive numbers as ranges): at most PROBE_TARGET_CHARS characters, then `…`
 * when some did not fit.
 */
export function probeTarget(uids: readonly number[]): string {
  let out = uids.length === 1 ? "UID " : "UIDs ";
  let i = 0;
  while (i < uids.length) {
    let j = i;
    while (j + 1 < uids.length && uids[j + 1] === uids[j]! + 1) j++;
    const part = (i === 0 ? "" : ",") + (i === j ? String(uids[i]) : `${uids[i]}:${uids[j]}`);
    if (out.length + part.length > PROBE_TARGET_CHARS) return `${out}…`;
    out += part;
    i = j + 1;
  }
  return out;
}

export interface FetchShape {
  /** The agent asked for UID (or used UID FETCH). */
  readonly uid: boolean;
  /** RFC822 was sent upstream as BODY.PEEK[] and is renamed back. */
  readonly rfc822: boolean;
  readonly rfc822Text: boolean;
  /** The agent also asked for BODY[] / BODY[TEXT] itself. */
  readonly bodyWhole: boolean;
  readonly bodyText: boolean;
}

export function isSection(a: FetchAttr, text: "" | "TEXT"): boolean {
  return a.name === "BODY[]" && a.origin === null && a.section.part.length === 0 && a.section.text === text;
}

/**
 * Mod-sequences reach the agent: CONDSTORE is enabled and the selected folder is unfiltered. A filtered folder has
 * none (`[NOMODSEQ]`, RFC 7162 §3.1.2.2): its mod-sequences move when hidden messages change (docs/protocol.md §2).
 */
export function modseqRelayed(s: Session): boolean {
  return s.condstore && s.box !== null && s.box.visible === null;
}

/**
 * A command that names mod-sequences (MODSEQ, CHANGEDSINCE, UNCHANGEDSINCE): BAD where CONDSTORE is not offered
 * and in a filtered folder, which answered `[NOMODSEQ]` (RFC 7162 §3.1.2.2); otherwise it enables CONDSTORE
 * (RFC 7162 §3.1), upstream too, before the command runs: the command itself may send nothing upstream (a set that
 * names no message the agent knows), and CONDSTORE must be on there all the same, for the `[HIGHESTMODSEQ]` it
 * answers now and the MODSEQ of every later untagged FETCH (§3.1.4).
 */
export async function requireModseq(s: Session): Promise<void> {
  if (!s.capabilities().includes("CONDSTORE")) throw new Refusal("BAD", null, "Mod-sequences are not supported");
  if (s.box === null || s.box.visible !== null) {
    throw new Refusal("BAD", null, "This folder has no mod-sequences (NOMODSEQ)");
  }
  await enableCondstore(s);
}

/** Enables CONDSTORE for the session and upstream (RFC 7162 §3.1), once; true when this call enabled it. */
export async function enableCondstore(s: Session): Promise<boolean> {
  if (s.condstore) return false;
  const upstreamHad = s.up?.condstore === true;
  // Upstream's `* OK [HIGHESTMODSEQ n]` for a selected folder (RFC 7162 §3.1) is relayed once CONDSTORE is on for
  // the agent too: forwardUntagged drops it before.
  const untagged: Response[] = [];
  const st = await s.upstreamRun({ name: "ENABLE", capabilities: ["CONDSTORE"] }, (r) => untagged.push(r));
  if (st.status === "OK") s.condstore = true;
  for (const r of untagged) forwardUntagged(s, r);
  if (st.status !== "OK") throw new Refusal("NO", "UNAVAILABLE", "CONDSTORE could not be enabled");
  const announced = untagged.some((r) => r.type === "status" && r.code?.known && r.code.name === "HIGHESTMODSEQ");
  if (upstreamHad && !announced) await announceHighestModseq(s);
  return true;
}

/**
 * The agent's first CONDSTORE-enabling command in a selected folder gets `* OK [HIGHESTMODSEQ n]` (RFC 7162 §3.1).
 * Upstream sends it for its own first one only, so an upstream session that already had CONDSTORE on (one taken
 * from the pool, src/imap/upstream-pool.ts, docs/imap.md "Upstream sessions kept for the next login") sends none:
 * the proxy asks for the selected folder's STATUS HIGHESTMODSEQ (RFC 7162 §3.1.7, RFC 9051 §6.3.11) and sends it
 * itself, where mod-sequences are relayed. Nothing when upstream does not answer it.
 */
async function announceHighestModseq(s: Session): Promise<void> {
  const box = s.box;
  if (box === null || !modseqRelayed(s)) return;
  let highest: number | null = null;
  const st = await s.upstreamRun({ name: "STATUS", mailbox: box.name, items: ["HIGHESTMODSEQ"] }, (r) => {
    if (r.type !== "STATUS") return relayUpdate(s, r);
    const own = agentStatus(r, box.name, ["HIGHESTMODSEQ"]);
    if (own?.type === "STATUS") for (const [, value] of own.items) highest = value;
  });
  if (st.status === "OK" && highest !== null && s.box === box) s.sendText(`* OK [HIGHESTMODSEQ ${highest}] Highest`);
}

/**
 * The items of a STATUS command or of LIST's `RETURN (STATUS (...))` (RFC 3501 §6.3.10, RFC 5819 §2), checked the
 * same way for both: SIZE and rev2's DELETED are not offered (docs/protocol.md §2); HIGHESTMODSEQ only where
 * CONDSTORE is offered (upstream has it), and asking for it enables CONDSTORE for the session and upstream
 * (RFC 7162 §3.1: STATUS with HIGHESTMODSEQ is a CONDSTORE-enabling command, and LIST-STATUS asks STATUS).
 */
export async function checkStatusItems(s: Session, items: readonly StatusItem[]): Promise<void> {
  if (items.some((i) => i === "SIZE" || i === "DELETED")) throw new Refusal("BAD", null, "Unsupported STATUS item");
  if (!items.includes("HIGHESTMODSEQ")) return;
  if (!s.capabilities().includes("CONDSTORE")) throw new Refusal("BAD", null, "Unsupported STATUS item");
  await enableCondstore(s);
}

/**
 * Upstream's STATUS response (RFC 3501 §7.2.4) as the agent gets it: null unless it is of `mailbox`, the folder asked
 * about (another folder's counts, a hidden one's among them, would go out under that name), and with only the `items`
 * asked for: anything else upstream puts in it is dropped, not relayed (docs/protocol.md §2).
 */
export function agentStatus(r: Response, mailbox: string, items: readonly StatusItem[]): Response | null {
  if (r.type !== "STATUS" || r.mailbox !== mailbox) return null;
  return { ...r, items: r.items.filter(([item]) => items.includes(item as StatusItem)) };
}

/** Re-numbers one upstream FETCH for the agent; null when it concerns a message the agent does not know. */
export function agentFetch(
  s: Session,
  r: Extract<Response, { type: "FETCH" }>,
  shape: FetchShape | null,
): Response | null {
  const box = s.box;
  if (box === null) return null;
  let uid = box.uidOf(r.seq);
  for (const a of r.attrs) if (a.name === "UID") uid = a.value;
  if (uid === 0) return null;
  const seq = box.agentSeqOf(uid);
  if (seq === 0) return null;
  const attrs: FetchAttr[] = [];
  let modseqDropped = false;
  for (const a of r.attrs) {
    switch (a.name) {
      case "unknown":
        continue; // X-GM-*, EMAILID...: never passed on (docs/protocol.md §2)
      case "MODSEQ":
        if (modseqRelayed(s)) attrs.push(a);
        else modseqDropped = true;
        continue;
      case "FLAGS":
        if (!box.keywordsShown) tellKeywords(s, box, a.flags);
        attrs.push(a);
        continue;
      case "UID":
        if (shape === null || shape.uid) attrs.push(a);
        continue;
      case "BODY[]":
        if (shape?.rfc822 && isSection(a, "")) {
          attrs.push({ name: "RFC822", data: a.data });
          if (!shape.bodyWhole) continue;
        } else if (shape?.rfc822Text && isSection(a, "TEXT")) {
          attrs.push({ name: "RFC822.TEXT", data: a.data });
          if (!shape.bodyText) continue;
        }
        attrs.push(a);
        continue;
      default:
        attrs.push(a);
    }
  }
  // A report that was only a mod-sequence (a silent STORE's, with CONDSTORE on upstream, RFC 7162 §3.1.3: a session
  // taken from the pool may have it on while its agent has not) is nothing to an agent sent none: not even its UID.
  if (attrs.length === 0 || (modseqDropped && attrs.every((a) => a.name === "UID"))) return null;
  return { type: "FETCH", seq, attrs };
}

/**
 * Where the folder's FLAGS listed the system flags only (a filtered folder, `keywordsShown`), the keywords of a
 * message the agent is about to be shown that its FLAGS did not list yet: a `* FLAGS` update listing them goes out
 * first, as a client learns the keywords in use from FLAGS before seeing them on a message (RFC 3501 §7.2.6). Only
 * keywords of messages the agent sees are ever listed, never upstream's list, which counts hidden messages' too
 * (docs/protocol.md §3, "Keywords of a filtered folder").
 */
function tellKeywords(s: Session, box: SelectedMailbox, flags: readonly string[]): void {
  let grew = false;
  for (const f of flags) if (!f.startsWith("\\") && box.tellKeyword(f)) grew = true;
  if (grew) s.send({ type: "FLAGS", flags: [...SYSTEM_FLAGS, ...box.keywordsTold] });
}

/**
 * Codes that carry UIDs or mailbox state. SELECT writes UIDNEXT and UIDVALIDITY itself (select.ts; PASSED_CODES has
 * neither), and COPY/MOVE/APPEND pass their COPYUID or APPENDUID on, remapped to the agent's view (agentCopyUid);
 * anywhere else (FETCH, SEARCH, STORE, EXPUNGE, CREATE, DELETE, RENAME, SUBSCRIBE, STATUS, and untagged data during
 * any command) a COPYUID would tell of UIDs the agent was not given, so they are dropped.
 */
export const MAILBOX_STATE_CODES: ReadonlySet<string> = new Set(["UIDNEXT", "UIDVALIDITY", "COPYUID", "APPENDUID"]);

/**
 * An upstream response code the agent may see in a reply where no mailbox state belongs: a message command's (FETCH,
 * SEARCH, STORE...), CREATE's.
 */
export function messageCommandCode(code: ResponseCode | null): ResponseCode | null {
  const passed = passCode(code);
  return passed !== null && MAILBOX_STATE_CODES.has(passed.name) ? null : passed;
}

/**
 * Another session's flag change that upstream reported (RFC 3501 §7.4.2: a server may send it with any command's
 * reply, and during IDLE): its FLAGS, with its UID and, where mod-sequences are relayed, its MODSEQ, renumbered to
 * the agent's view; nothing for a message the agent does not know, in a folder whose mail it may not read, or while
 * the folder is being opened (`SelectedMailbox.opening`), and nothing else of the response (data a classification
 * or a THREAD fetched for the proxy itself stays with the proxy).
 */
export function relayFlagUpdate(s: Session, r: Extract<Response, { type: "FETCH" }>): void {
  let flags = false;
  for (const a of r.attrs) if (a.name === "FLAGS") flags = true;
  const box = s.box;
  if (!flags || box === null || box.opening) return;
  // Flags are the messages' data: none where the agent may not read them (FETCH FLAGS would be refused).
  if (s.decide("mail:read", box.policyName).action !== "allow") return;
  const attrs = r.attrs.filter((a) => a.name === "FLAGS" || a.name === "UID" || a.name === "MODSEQ");
  const out = agentFetch(s, { type: "FETCH", seq: r.seq, attrs }, null);
  if (out !== null) s.send(out);
}

/**
 * Whether the selected folder's keywords are shown (FLAGS and PERMANENTFLAGS; otherwise the system flags only): not
 * in a filtered folder, where a keyword may come from a hidden message, nor where the agent may not read the mail,
 * as keywords are the messages' data.
 */
export function keywordsShown(s: Session): boolean {
  const box = s.box;
  return box !== null && box.visible === null && s.decide("mail:read", box.policyName).action === "allow";
}

/** A folder's FLAGS (RFC 3501 §7.2.6) or `* OK [PERMANENTFLAGS ...]` (§7.1): what SELECT reports of its flags. */
export function folderFlags(r: Response): boolean {
  if (r.type === "FLAGS") return true;
  return (
    r.type === "status" &&
    r.tag === null &&
    r.status === "OK" &&
    r.code?.known === true &&
    r.code.name === "PERMANENTFLAGS"
  );
}

/**
 * PERMANENTFLAGS for the agent (RFC 3501 §7.1): the flags it may set in folder `p` (`\Deleted` only with
 * mail:delete, the others with mail:flag), keywords only where they are shown (`keywordsShown`).
 */
export function agentPermanentFlags(s: Session, p: string, flags: readonly string[]): string[] {
  const flag = s.rights.may("mail:flag", p);
  const del = s.rights.may("mail:delete", p);
  const keywords = keywordsShown(s);
  return flags.filter((f) => {
    if (f.toUpperCase() === "\\DELETED") return del;
    return flag && (keywords || f.startsWith("\\"));
  });
}

/**
 * What another session changed that upstream reports with any command's reply: a message's flags
 * (`relayFlagUpdate`), and when a new keyword came into use the folder's FLAGS, which must reach the agent before
 * the first FETCH that shows the keyword (RFC 3501 §7.2.6), and its PERMANENTFLAGS (cut as at SELECT).
 */
export function relayUpdate(s: Session, r: Response): void {
  const box = s.box;
  if (box === null) return;
  // While SELECT opens the folder its own FLAGS and PERMANENTFLAGS are yet to come: newer ones replace them.
  if (box.opening) {
    if (folderFlags(r)) box.openingUpdates.push(r);
    return;
  }
  if (r.type === "FETCH") return relayFlagUpdate(s, r);
  // Only where keywords are shown: elsewhere the lists the agent was given cannot change, and their coming again
  // would tell that some message (perhaps a hidden one) has a new keyword.
  if (!folderFlags(r) || !keywordsShown(s)) return;
  if (r.type === "status" && r.code?.known && r.code.name === "PERMANENTFLAGS")
    s.send({ ...r, code: { ...r.code, flags: agentPermanentFlags(s, box.policyName, r.code.flags) } });
  else s.send(r);
}

/** Other untagged data during a command: flag changes and allowlisted status codes. */
export function forwardUntagged(s: Session, r: Response): void {
  if (r.type === "FETCH" || folderFlags(r)) relayUpdate(s, r);
  else if (r.type === "status" && r.tag === null && (r.status === "OK" || r.status === "NO")) {
    // HIGHESTMODSEQ after the first CONDSTORE-enabling command (RFC 7162 §3.1), in an unfiltered folder only.
    if (r.code?.known && r.code.name === "HIGHESTMODSEQ") {
      if (modseqRelayed(s)) s.send(r);
      return;
    }
    const code = messageCommandCode(r.code);
    // A folder read-only for the agent stays so until it is selected again (`SelectedMailbox.readOnly`): upstream's
    // `[READ-WRITE]` would tell it otherwise.
    if (code?.known && code.name === "READ-WRITE" && s.box?.readOnly === true) return;
    // Told now (the model made the folder read-only already), not again before the tagged reply (`tellReadOnly`).
    if (code?.known && code.name === "READ-ONLY" && s.box !== null) s.box.readOnlyUntold = false;
    if (code !== null) s.send({ ...r, code });
  }
}

/**
 * `UID EXPUNGE` of the agent's own visible `\Deleted` messages, never a bare EXPUNGE (docs/protocol.md §1); returns
 * how many of the agent's messages upstream then expunged. UID EXPUNGE removes only the `\Deleted` messages among
 * the UIDs it names (RFC 4315 §2.1), so it is sent over UIDs the agent may see, in one round trip where that set is
 * short: the agent's own set (`within`, already limited to its view) as it is; for a bare EXPUNGE in an unfiltered
 * folder `1:<highest UID in the agent's view>`, which holds no message the agent was not told of (a later arrival
 * has a higher UID). A filtered folder's bare EXPUNGE first asks upstream which messages are `\Deleted`
 * (`UID SEARCH DELETED`), as its view is scattered among hidden UIDs; a search upstream did not complete refuses the
 * command (`command` names it in the `error` row).
 *
 * When the session ends before the last of its upstream commands is answered (`UPSTREAM_SET_RANGES` ranges each),
 * or one of them is answered NO or BAD, `partial` is told how many of the agent's messages upstream had reported
 * expunged by then (the earlier parts' at least), and why it stopped: those are gone, whatever became of the rest
 * (docs/audit.md "What a row records").
 */
async function safeExpunge(
  s: Session,
  command: string,
  within: readonly number[] | null,
  partial: (reported: number, why: string) => void,
): Promise<number> {
  const box = s.box!;
  let uids: readonly number[];
  if (within !== null)
    uids = within; // already in the agent's view, sorted (SelectedMailbox.uidsFromUidSet)
  else if (box.visible === null) uids = box.agentCount === 0 ? [] : [box.v.get(box.agentCount - 1)];
  else {
    const deleted: number[] = [];
    const searched = await s.upstreamRun(
      { name: "SEARCH", uid: true, returnOptions: null, charset: null, criteria: [{ key: "DELETED" }] },
      (r) => {
        if (r.type === "SEARCH") for (const n of r.numbers) deleted.push(n);
        else forwardUntagged(s, r);
      },
    );
    // A search upstream did not complete is not "none is \Deleted": the command would be answered OK with nothing
    // expunged. Refused, nothing expunged, with a row saying why (docs/imap.md "Decisions").
    if (searched.status !== "OK") {
      const why = withoutTimings(searched.text);
      s.auditRow({
        command,
        operation: "mail:delete",
        folder: box.policyName,
        target: null,
        decision: "error",
        rule: null,
        ruleIndex: null,
        reason: `the deleted messages could not be listed; nothing expunged: upstream: ${searched.status} ${why}`,
      });
      throw new Refusal("NO", "UNAVAILABLE", "The deleted messages could not be listed; nothing was expunged");
    }
    uids = deleted.filter((u) => box.agentSeqOf(u) > 0).sort((a, b) => a - b);
  }
  if (uids.length === 0) return 0;
  const sets = within === null && box.visible === null ? [[{ start: 1, stop: uids[0]! }]] : box.upstreamSets([...uids]);
  const before = box.pendingExpunges.length;
  // The expunges reported meanwhile include other sessions' (RFC 9051 §7.5.1): relayed, but counted as the agent's
  // only when the command asked for the UID. An unfiltered EXPUNGE asks for every \Deleted message up to the last
  // UID the agent sees, and each reported one counts.
  const counted = (): number => {
    const reported = box.pendingExpunges.slice(before);
    if (within === null && box.visible === null) return reported.length;
    const asked = new Set(uids);
    let n = 0;
    for (const uid of reported) if (asked.has(uid)) n++;
    return n;
  };
  for (const [part, set] of sets.entries()) {
    let st: UpstreamStatus;
    try {
      st = await s.upstreamWrite({ name: "EXPUNGE", uid: true, set });
    } catch (error) {
      if (s.closed)
        partial(counted(), `before the session ended (${s.endReason}): whether it expunged more is not known`);
      throw error;
    }
    if (st.status !== "OK") {
      // The parts answered OK before it were carried out, and so was whatever upstream reported expunged before
      // this answer: those messages are gone, and counted (docs/audit.md "What a row records").
      const text = withoutTimings(st.text);
      partial(counted(), `before upstream answered part ${part + 1} of ${sets.length} ${st.status} (${text})`);
      throw new Refusal("NO", null, text);
    }
  }
  return counted();
}

/**
 * The safe expunge of EXPUNGE, UID EXPUNGE and CLOSE (`safeExpunge`; the `allow` row `d` made durable before), and
 * the `expunged` row after it, counting the agent's messages upstream reported expunged. One stopped part-way (the
 * session ended, a part answered NO or BAD) counts those reported until then, saying why, and throws as before.
 */
export async function auditedExpunge(
  s: Session,
  command: string,
  d: Decided,
  within: readonly number[] | null,
): Promise<number> {
  const folder = s.box!.policyName;
  const expunged = (count: number, reason: string) =>
    s.auditRow({
      command,
      operation: "mail:delete",
      folder,
      target: null,
      decision: "allow",
      ...cites(d),
      reason,
      count,
    });
  const n = await safeExpunge(s, command, within, (reported, why) => {
    // With none reported, nothing is known to count.
    if (reported > 0) expunged(reported, `expunged as upstream reported ${why}`);
  });
  expunged(n, "expunged");
  return n;
}

/**
 * Refuses (`NO [LIMIT]`, a deny row) a command of a filtered folder whose upstream form is longer than
 * UPSTREAM_REST_OCTETS besides its message set: with the rest that long, whether the whole fits upstream's command
 * line would depend on how many hidden messages break the set into ranges (docs/protocol.md §3). The length is the
 * command's with a one-UID set: what the agent chose, the same whatever is hidden. An unfiltered folder has no hidden
 * message to tell of.
 */
export function checkUpstreamRest(s: Session, command: string, operation: Operation, up: UpstreamCommand): void {
  const box = s.box!;
  if (box.visible === null) return;
  // One encoder for every measure, taken while in use: one that threw half-way is not used again.
  const enc = restEncoder ?? new Encoder({ side: "client" });
  restEncoder = null;
  writeCommand(enc, { ...up, set: ONE_UID, tag: "A" } as Command);
  let octets = 0;
  for (const round of enc.finish()) for (const part of round) octets += part.byteLength;
  restEncoder = enc;
  if (octets <= UPSTREAM_REST_OCTETS) return;
  s.auditRow({
    command,
    operation,
    folder: box.policyName,
    decision: "deny",
    rule: null,
    ruleIndex: null,
    reason: `command of ${octets} octets besides its message set (limit ${UPSTREAM_REST_OCTETS} in a filtered folder)`,
  });
  throw new Refusal("NO", "LIMIT", `Command too long (limit ${UPSTREAM_REST_OCTETS} octets besides its message set)`);
}

const ONE_UID: SeqSet = [{ start: 1, stop: 1 }];
let restEncoder: Encoder | null = null;

/**
 * Charges `messages` reads (each message of the set the agent can see, once per FETCH; each URL part of an APPEND
 * with CATENATE, commands/catenate.ts) before anything is fetched; over reads_per_minute the whole command is refused
 * with NO [LIMIT] (RFC 5530) and a deny row; the reply ends with `nothing`, what did not happen.
 */
export function chargeReads(
  s: Session,
  command: string,
  folder: string,
  messages: number,
  nothing = "nothing was fetched",
): void {
  if (messages === 0) return;
  // Counted per agent, or per upstream login without case (docs/quotas.md "Who is counted").
  const charged = s.ctx.quotas.chargeReads(quotaSubject(s.agent, s.user), messages);
  if (charged.ok) return;
  const over = charged.exceeded;
  s.auditRow({
    command,
    operation: "mail:read",
    folder,
    target: null,
    decision: over === null ? "error" : "deny",
    rule: null,
    ruleIndex: null,
    reason: charged.message,
    count: messages,
    ...(over === null ? {} : { detail: { quota: over.quota, limit: over.limit, max: over.max } }),
  });
  if (over === null) throw new Refusal("NO", "UNAVAILABLE", "Quota state unavailable; try again later");
  const text = charged.message.charAt(0).toUpperCase() + charged.message.slice(1);
  throw new Refusal("NO", "LIMIT", `${text}; ${nothing}`);
}

/**
 * An untagged `* OK [READ-ONLY]` (RFC 3501 §7.1, RFC 9051 §7.1): upstream says the selected mailbox is now read-only,
 * whether it comes during a command, between two or in IDLE (`ImapSession.model`), or among a SELECT's responses.
 */
export function readOnlyNotice(r: Response): boolean {
  return (
    r.type === "status" && r.tag === null && r.status === "OK" && r.code?.known === true && r.code.name === "READ-ONLY"
  );
}

/**
 * Refuses a write to the selected folder when it is open read-only (RFC 3501 §6.3.2: EXAMINE permits no change to
 * the mailbox's permanent state): the agent's EXAMINE, a SELECT opened upstream with EXAMINE or answered
 * `[READ-ONLY]`, or a folder upstream has since said is read-only (`readOnlyNotice`; docs/imap.md "Decisions").
 * Refused here, with its `deny` row, before any `allow` row is written or anything goes upstream: Dovecot answers a
 * STORE there `OK` and ignores it, and carries a MOVE out.
 */
export function refuseReadOnly(s: Session, command: string, operation: Operation): void {
  const box = s.box!;
  if (!box.readOnly) return;
  s.auditRow({
    command,
    operation,
    folder: box.policyName,
    target: null,
    decision: "deny",
    rule: null,
    ruleIndex: null,
    reason: "read-only mailbox: selected with EXAMINE, or opened read-only; SELECT it again to write",
  });
  throw new Refusal("NO", "CANNOT", "Mailbox is read-only");
}
