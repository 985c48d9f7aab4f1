/**
 * Commands on the selected mailbox: FETCH, SEARCH, STORE, COPY, MOVE, EXPUNGE, CLOSE, UNSELECT. The agent's
 * sequence numbers and UID sets are translated to explicit UID sets (docs/protocol.md §0.3, §3); responses are
 * translated back, and FETCH items the agent did not ask for are dropped.
 */

import { agentCopyUid } from "../filtering.ts";
import { type SelectedMailbox, UPSTREAM_SET_RANGES } from "../mailbox.ts";
import { Refusal } from "../refusal.ts";
import type { CommandOf, ImapSession } from "../session.ts";
import { NO_HIDING_RULE } from "../view.ts";
import type { FetchAttr, FetchItem, Response, ResponseCode, SearchKey, SeqSet } from "../wire/index.ts";
import { passCode, visibleFolder } from "./folders.ts";

type MessageCommand = CommandOf<"FETCH" | "SEARCH" | "STORE" | "COPY" | "MOVE" | "EXPUNGE" | "CLOSE" | "UNSELECT">;

export async function runMessageCommand(s: ImapSession, cmd: MessageCommand): Promise<void> {
  switch (cmd.name) {
    case "FETCH":
      return fetch(s, cmd);
    case "SEARCH":
      return search(s, cmd);
    case "STORE":
      return store(s, cmd);
    case "COPY":
    case "MOVE":
      return copyOrMove(s, cmd);
    case "EXPUNGE":
      return expunge(s, cmd);
    case "CLOSE":
      return close(s, cmd.tag);
    case "UNSELECT":
      s.box = null;
      s.state = "authenticated";
      await s.upstreamRun({ name: "UNSELECT" });
      return s.tagged(cmd.tag, "OK", null, "Unselect completed");
  }
}

/** The UIDs a command addresses, or a BAD refusal for a sequence number out of range (as Dovecot answers). */
function target(box: SelectedMailbox, uid: boolean, set: SeqSet): number[] {
  if (uid) return box.uidsFromUidSet(set);
  const uids = box.uidsFromSeqSet(set);
  if (uids === null) throw new Refusal("BAD", null, "Invalid messageset");
  return uids;
}

/**
 * The longest list of hidden UIDs a probe row's `target` holds (docs/filtering.md "Probes"): UIDs past it are
 * counted in `hiddenCount`, not listed, and the list ends in `…`.
 */
export const PROBE_TARGET_CHARS = 512;

/**
 * A UID command that names messages hidden from the agent (docs/filtering.md "Probes", `hiddenNamed`) gets one
 * `deny` row: `hiddenCount` how many, `target` which, and the rule that hid the lowest of them (the reason names
 * the others' rules too). Nothing changes for the agent: hidden UIDs were cut from the command, and it gets the
 * reply a nonexistent UID gets. Sequence numbers are positions among the messages the agent sees: they cannot
 * name a hidden one.
 */
function auditProbe(s: ImapSession, command: string, operation: string, set: SeqSet): void {
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

interface FetchShape {
  /** The agent asked for UID (or used UID FETCH). */
  readonly uid: boolean;
  /** RFC822 was sent upstream as BODY.PEEK[] and is renamed back. */
  readonly rfc822: boolean;
  readonly rfc822Text: boolean;
  /** The agent also asked for BODY[] / BODY[TEXT] itself. */
  readonly bodyWhole: boolean;
  readonly bodyText: boolean;
}

const WHOLE = { part: [], text: "", fields: [] } as const;
const TEXT = { part: [], text: "TEXT", fields: [] } as const;

function isSection(a: FetchAttr, text: "" | "TEXT"): boolean {
  return a.name === "BODY[]" && a.origin === null && a.section.part.length === 0 && a.section.text === text;
}

/** Re-numbers one upstream FETCH for the agent; null when it concerns a message the agent does not know. */
export function agentFetch(
  s: ImapSession,
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
  for (const a of r.attrs) {
    switch (a.name) {
      case "unknown":
        continue; // MODSEQ, X-GM-*, ...: never passed on (docs/protocol.md §2)
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
  if (attrs.length === 0) return null;
  return { type: "FETCH", seq, attrs };
}

/**
 * FETCH items that return a message's content, counted by reads_per_minute (docs/quotas.md "What is counted"):
 * BODY[...] and BODY.PEEK[...] (any section, headers included), BINARY[...], RFC822, RFC822.HEADER and RFC822.TEXT.
 * ENVELOPE, BODYSTRUCTURE, FLAGS, sizes and dates are a listing, not a read.
 */
function readsContent(item: FetchItem): boolean {
  return (
    item.type === "BODY[]" ||
    item.type === "BINARY[]" ||
    item.type === "RFC822" ||
    item.type === "RFC822.HEADER" ||
    item.type === "RFC822.TEXT"
  );
}

/**
 * Charges `messages` reads (each message of the set the agent can see, once per FETCH) before anything is fetched;
 * over reads_per_minute the whole FETCH is refused with NO [LIMIT] (RFC 5530) and a deny row.
 */
function chargeReads(s: ImapSession, command: string, folder: string, messages: number): void {
  if (messages === 0) return;
  const charged = s.ctx.quotas.chargeReads(s.user, messages);
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
  throw new Refusal("NO", "LIMIT", `${text}; nothing was fetched`);
}

async function fetch(s: ImapSession, cmd: CommandOf<"FETCH">): Promise<void> {
  const box = s.box!;
  const p = box.policyName;
  if (cmd.uid) auditProbe(s, "UID FETCH", "mail:read", cmd.set);
  const d = s.require(cmd.name, "mail:read", p);
  const uids = target(box, cmd.uid, cmd.set);
  // Without mail:flag, reading must not set \Seen (RFC 3501 §6.4.5, docs/config.md "Operations"): PEEK upstream.
  const peekOnly = box.readOnly || !s.rights.may("mail:flag", p);
  let uidAsked = cmd.uid;
  let rfc822 = false;
  let rfc822Text = false;
  let bodyWhole = false;
  let bodyText = false;
  const items: FetchItem[] = [];
  for (const item of cmd.items) {
    if (item.type === "UID") uidAsked = true;
    if (item.type === "BODY[]" && item.partial === null && item.section.part.length === 0) {
      if (item.section.text === "") bodyWhole = true;
      if (item.section.text === "TEXT") bodyText = true;
    }
    if (!peekOnly) {
      items.push(item);
      continue;
    }
    if (item.type === "RFC822") {
      rfc822 = true;
      items.push({ type: "BODY[]", peek: true, section: WHOLE, partial: null });
    } else if (item.type === "RFC822.TEXT") {
      rfc822Text = true;
      items.push({ type: "BODY[]", peek: true, section: TEXT, partial: null });
    } else if ((item.type === "BODY[]" || item.type === "BINARY[]") && !item.peek) {
      items.push({ ...item, peek: true });
    } else {
      items.push(item);
    }
  }
  if (!cmd.items.some((i) => i.type === "UID")) items.push({ type: "UID" });
  if (cmd.items.some(readsContent)) chargeReads(s, cmd.uid ? "UID FETCH" : "FETCH", p, uids.length);
  const shape: FetchShape = { uid: uidAsked, rfc822, rfc822Text, bodyWhole, bodyText };
  s.auditRow({
    command: cmd.uid ? "UID FETCH" : "FETCH",
    operation: "mail:read",
    folder: p,
    target: null,
    decision: "allow",
    rule: d.rule,
    ruleIndex: d.ruleIndex,
    reason: peekOnly ? `${d.reason}; bodies fetched with PEEK` : d.reason,
    count: uids.length,
  });
  const onData = (r: Response) => {
    if (r.type === "FETCH") {
      const out = agentFetch(s, r, shape);
      if (out !== null) s.send(out);
    } else forwardUntagged(s, r);
  };
  // One upstream command per UPSTREAM_SET_RANGES ranges (a filtered folder's UIDs are scattered).
  for (const set of uids.length > 0 ? box.upstreamSets(uids) : []) {
    const st = await s.upstreamRun({ name: "FETCH", uid: true, set, items, macro: null }, onData);
    if (st.status !== "OK") {
      await s.sync(cmd.uid);
      return s.taggedFrom(cmd.tag, st, messageCommandCode(st.code));
    }
  }
  await s.sync(cmd.uid);
  s.tagged(cmd.tag, "OK", null, "Fetch completed");
}

/**
 * Codes that carry UIDs or mailbox state. SELECT and COPY/MOVE/APPEND pass them on deliberately, remapped to
 * the agent's view; anywhere else (FETCH, SEARCH, STORE, EXPUNGE, and untagged data during any command) a real
 * UIDNEXT or COPYUID of a filtered folder would reveal hidden messages, so they are dropped.
 */
const MAILBOX_STATE_CODES: ReadonlySet<string> = new Set(["UIDNEXT", "UIDVALIDITY", "COPYUID", "APPENDUID"]);

/** An upstream response code the agent may see in the reply to a message command (FETCH, SEARCH, STORE...). */
export function messageCommandCode(code: ResponseCode | null): ResponseCode | null {
  const passed = passCode(code);
  return passed !== null && MAILBOX_STATE_CODES.has(passed.name) ? null : passed;
}

/** Other untagged data during a command: flag changes and allowlisted status codes. */
function forwardUntagged(s: ImapSession, r: Response): void {
  // A filtered folder's FLAGS stay the system flags: a new keyword may come from a hidden message.
  if (r.type === "FLAGS") {
    if (s.box?.visible == null) s.send(r);
  } else if (r.type === "status" && r.tag === null && (r.status === "OK" || r.status === "NO")) {
    const code = messageCommandCode(r.code);
    if (code !== null) s.send({ ...r, code });
  }
}

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

async function search(s: ImapSession, cmd: CommandOf<"SEARCH">): Promise<void> {
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

async function store(s: ImapSession, cmd: CommandOf<"STORE">): Promise<void> {
  const box = s.box!;
  const p = box.policyName;
  const command = cmd.uid ? "UID STORE" : "STORE";
  // Each flag is checked: \Deleted (any case) is mail:delete, the others mail:flag. Replacing the flag list may
  // add or remove \Deleted and any other flag, so it needs both (docs/config.md "Operations", docs/protocol.md §7.22).
  const deleted = cmd.flags.some((f) => f.toUpperCase() === "\\DELETED");
  const others = cmd.flags.some((f) => f.toUpperCase() !== "\\DELETED");
  if (cmd.uid) auditProbe(s, command, deleted ? "mail:delete" : "mail:flag", cmd.set);
  const uids = target(box, cmd.uid, cmd.set);
  let d = null;
  if (cmd.action === "set" || others) d = s.require(command, "mail:flag", p, `${uids.length} messages`);
  if (cmd.action === "set" || deleted) d = s.require(command, "mail:delete", p, `${uids.length} messages`);
  if (d === null) d = s.require(command, "mail:flag", p, `${uids.length} messages`);
  if (uids.length > 0) {
    await s.auditDurable({
      command,
      operation: deleted ? "mail:delete" : "mail:flag",
      folder: p,
      target: cmd.flags.join(" "),
      decision: "allow",
      rule: d.rule,
      ruleIndex: d.ruleIndex,
      reason: d.reason,
      count: uids.length,
    });
    const shape: FetchShape = { uid: cmd.uid, rfc822: false, rfc822Text: false, bodyWhole: false, bodyText: false };
    for (const set of box.upstreamSets(uids)) {
      const st = await s.upstreamRun(
        { name: "STORE", uid: true, set, action: cmd.action, silent: cmd.silent, flags: cmd.flags },
        (r) => {
          if (r.type === "FETCH") {
            const out = agentFetch(s, r, shape);
            if (out !== null) s.send(out);
          } else forwardUntagged(s, r);
        },
      );
      if (st.status !== "OK") {
        await s.sync(cmd.uid);
        return s.taggedFrom(cmd.tag, st, messageCommandCode(st.code));
      }
    }
  }
  await s.sync(cmd.uid);
  s.tagged(cmd.tag, "OK", null, "Store completed");
}

async function copyOrMove(s: ImapSession, cmd: CommandOf<"COPY" | "MOVE">): Promise<void> {
  const box = s.box!;
  const p = box.policyName;
  const command = `${cmd.uid ? "UID " : ""}${cmd.name}`;
  if (cmd.uid) auditProbe(s, command, cmd.name === "MOVE" ? "mail:move" : "mail:read", cmd.set);
  const uids = target(box, cmd.uid, cmd.set);
  // Source: a copy reads the messages, a move also removes them (docs/config.md "Operations").
  const d = s.require(command, cmd.name === "MOVE" ? "mail:move" : "mail:read", p, `${uids.length} messages`);
  // Destination: hidden answers as nonexistent; then mail:append.
  const dest = cmd.mailbox;
  const dp = visibleFolder(s, command, "mail:append", dest, new Refusal("NO", "TRYCREATE", "Mailbox does not exist"));
  const dd = s.require(command, "mail:append", dp, `${uids.length} messages`);
  if (uids.length === 0) return s.tagged(cmd.tag, "OK", null, "No messages");
  await s.auditDurable({
    command,
    operation: cmd.name === "MOVE" ? "mail:move" : "mail:read",
    folder: p,
    target: dp,
    decision: "allow",
    rule: d.rule,
    ruleIndex: d.ruleIndex,
    reason: `${d.reason}; destination: ${dd.reason}`,
    count: uids.length,
  });
  let tagCode = null;
  const sets = box.upstreamSets(uids);
  let st!: Awaited<ReturnType<ImapSession["upstreamRun"]>>;
  for (const set of sets) {
    st = await s.upstreamRun({ name: cmd.name, uid: true, set, mailbox: dest }, (r) => {
      if (r.type === "FETCH") {
        const out = agentFetch(s, r, null);
        if (out !== null) s.send(out);
      } else if (r.type === "status" && r.tag === null && r.code?.known && r.code.name === "COPYUID") {
        // MOVE's COPYUID comes untagged (RFC 6851 §4.3): the same check as the tagged one.
        const code = agentCopyUid(s, passCode(r.code), dp);
        if (code !== null) s.send({ ...r, code });
      } else forwardUntagged(s, r);
    });
    if (st.status !== "OK") break;
  }
  if (st.status !== "OK" && st.code?.known && (st.code.name === "TRYCREATE" || st.code.name === "NONEXISTENT")) {
    await s.sync(cmd.name === "MOVE" || cmd.uid);
    throw new Refusal("NO", "TRYCREATE", "Mailbox does not exist");
  }
  // Split over several commands, the last COPYUID would describe only the last part: none then.
  tagCode =
    sets.length > 1 && st.code?.known && st.code.name === "COPYUID" ? null : agentCopyUid(s, passCode(st.code), dp);
  // MOVE reports the moved messages as expunged (RFC 6851 §3.3).
  await s.sync(cmd.name === "MOVE" || cmd.uid);
  s.taggedFrom(cmd.tag, st, tagCode);
}

/** `UID EXPUNGE` of the agent's own visible `\Deleted` messages, never a bare EXPUNGE (docs/protocol.md §1). */
async function safeExpunge(s: ImapSession, within: readonly number[] | null): Promise<number> {
  const box = s.box!;
  const deleted: number[] = [];
  await s.upstreamRun(
    { name: "SEARCH", uid: true, returnOptions: null, charset: null, criteria: [{ key: "DELETED" }] },
    (r) => {
      if (r.type === "SEARCH") for (const n of r.numbers) deleted.push(n);
    },
  );
  const allowed = new Set(within ?? box.allUids());
  const mine = deleted.filter((u) => allowed.has(u) && box.agentSeqOf(u) > 0).sort((a, b) => a - b);
  if (mine.length === 0) return 0;
  for (const set of box.upstreamSets(mine)) {
    const st = await s.upstreamRun({ name: "EXPUNGE", uid: true, set });
    if (st.status !== "OK") throw new Refusal("NO", null, st.text);
  }
  return mine.length;
}

async function expunge(s: ImapSession, cmd: CommandOf<"EXPUNGE">): Promise<void> {
  const box = s.box!;
  const p = box.policyName;
  const command = cmd.uid ? "UID EXPUNGE" : "EXPUNGE";
  if (cmd.set !== null) auditProbe(s, command, "mail:delete", cmd.set);
  const d = s.require(command, "mail:delete", p);
  if (box.readOnly) throw new Refusal("NO", "CANNOT", "Mailbox is read-only");
  const within = cmd.set === null ? null : box.uidsFromUidSet(cmd.set);
  await s.auditDurable({
    command,
    operation: "mail:delete",
    folder: p,
    target: null,
    decision: "allow",
    rule: d.rule,
    ruleIndex: d.ruleIndex,
    reason: d.reason,
  });
  const n = await safeExpunge(s, within);
  s.auditRow({
    command,
    operation: "mail:delete",
    folder: p,
    target: null,
    decision: "allow",
    rule: d.rule,
    ruleIndex: d.ruleIndex,
    reason: "expunged",
    count: n,
  });
  await s.sync(true);
  s.tagged(cmd.tag, "OK", null, "Expunge completed");
}

/** CLOSE expunges silently (RFC 3501 §6.4.2): never forwarded; the safe expunge if allowed, then UNSELECT. */
async function close(s: ImapSession, tag: string): Promise<void> {
  const box = s.box!;
  const p = box.policyName;
  if (box.readOnly) {
    s.auditRow({
      command: "CLOSE",
      operation: null,
      folder: p,
      target: null,
      decision: "allow",
      rule: null,
      ruleIndex: null,
      reason: "read-only mailbox: closed without expunging",
    });
  } else {
    const d = s.decide("mail:delete", p);
    if (d.action === "allow") {
      await s.auditDurable({
        command: "CLOSE",
        operation: "mail:delete",
        folder: p,
        target: null,
        decision: "allow",
        rule: d.rule,
        ruleIndex: d.ruleIndex,
        reason: d.reason,
      });
      await safeExpunge(s, null);
    } else {
      s.auditRow({
        command: "CLOSE",
        operation: "mail:delete",
        folder: p,
        target: null,
        decision: "deny",
        rule: d.rule,
        ruleIndex: d.ruleIndex,
        reason: `${d.reason}; closed without expunging`,
      });
    }
  }
  s.box = null;
  s.state = "authenticated";
  await s.upstreamRun({ name: "UNSELECT" });
  s.tagged(tag, "OK", null, "Close completed");
}
