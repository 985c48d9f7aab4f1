/**
 * FETCH and UID FETCH (RFC 3501 §6.4.5; mail:read): bodies fetched with PEEK unless the agent may set \Seen (and
 * then the \Seen they set is a mail:flag write, audited durably first), content reads charged to reads_per_minute
 * (docs/quotas.md), responses renumbered to the agent's view.
 */

import { Refusal } from "../refusal.ts";
import type { FetchItem, Response, SeqSet } from "../wire/index.ts";
import { type CommandOf, cites, type Session } from "./context.ts";
import {
  agentFetch,
  auditProbe,
  chargeReads,
  checkUpstreamRest,
  type FetchShape,
  forwardUntagged,
  messageCommandCode,
  requireModseq,
  target,
} from "./shared.ts";

const WHOLE = { part: [], text: "", fields: [] } as const;

const TEXT = { part: [], text: "TEXT", fields: [] } as const;

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

/** FETCH items that set \Seen (RFC 3501 §6.4.5, RFC 3516 §4.2): a body section without PEEK, RFC822, RFC822.TEXT. */
function setsSeen(item: FetchItem): boolean {
  return (
    ((item.type === "BODY[]" || item.type === "BINARY[]") && !item.peek) ||
    item.type === "RFC822" ||
    item.type === "RFC822.TEXT"
  );
}

function isModseq(item: FetchItem): boolean {
  return item.type === "MODSEQ";
}

function isBinary(item: FetchItem): boolean {
  return item.type === "BINARY[]" || item.type === "BINARY.SIZE";
}

function isUid(item: FetchItem): boolean {
  return item.type === "UID";
}

/** The UID FETCH that goes upstream for `set`: `items` as rewritten, CHANGEDSINCE when the agent gave it. */
function upstreamFetch(set: SeqSet, items: readonly FetchItem[], changedSince: number | undefined) {
  const fetch = { name: "FETCH", uid: true, set, items, macro: null } as const;
  return changedSince === undefined ? fetch : { ...fetch, changedSince };
}

export async function fetch(s: Session, cmd: CommandOf<"FETCH">): Promise<void> {
  const box = s.box!;
  const p = box.policyName;
  // MODSEQ and CHANGEDSINCE (RFC 7162 §3.1.4): unfiltered folders only.
  if (cmd.changedSince !== undefined || cmd.items.some(isModseq)) await requireModseq(s);
  // BINARY[...] and BINARY.SIZE only where BINARY is offered (upstream has it, src/imap/capabilities.ts): an
  // extension not offered is refused here, not relayed for upstream to answer (RFC 3516 §4).
  if (cmd.items.some(isBinary) && !s.capabilities().includes("BINARY"))
    throw new Refusal("BAD", null, "BINARY is not supported");
  if (cmd.uid) auditProbe(s, "UID FETCH", "mail:read", cmd.set);
  const d = s.require(cmd.name, "mail:read", p);
  const uids = target(box, cmd.uid, cmd.set);
  // Without mail:flag, reading must not set \Seen (RFC 3501 §6.4.5, docs/config.md "Operations"): PEEK upstream.
  // The one decision is also the one the \Seen row below names.
  const flag = box.readOnly ? null : s.decide("mail:flag", p);
  const peekOnly = flag?.action !== "allow";
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
    // Each item that would set \Seen goes upstream as its PEEK form; the reply is named back (`shape`).
    if (!peekOnly || !setsSeen(item)) {
      items.push(item);
    } else if (item.type === "RFC822") {
      rfc822 = true;
      items.push({ type: "BODY[]", peek: true, section: WHOLE, partial: null });
    } else if (item.type === "RFC822.TEXT") {
      rfc822Text = true;
      items.push({ type: "BODY[]", peek: true, section: TEXT, partial: null });
    } else if (item.type === "BODY[]" || item.type === "BINARY[]") {
      items.push({ ...item, peek: true });
    }
  }
  if (!cmd.items.some(isUid)) items.push({ type: "UID" });
  checkUpstreamRest(s, cmd.uid ? "UID FETCH" : "FETCH", "mail:read", upstreamFetch([], items, cmd.changedSince));
  if (cmd.items.some(readsContent)) chargeReads(s, cmd.uid ? "UID FETCH" : "FETCH", p, uids.length);
  const shape: FetchShape = { uid: uidAsked, rfc822, rfc822Text, bodyWhole, bodyText };
  // With mail:flag the fetch goes as asked, and a body item without PEEK sets \Seen upstream: a flag write like
  // STORE +FLAGS (\Seen), so it has its own mail:flag row, on disk before anything goes upstream (docs/imap.md
  // "Decisions").
  const writes = flag !== null && !peekOnly && uids.length > 0 && cmd.items.some(setsSeen);
  if (writes) {
    const f = flag;
    await s.auditDurable({
      command: cmd.uid ? "UID FETCH" : "FETCH",
      operation: "mail:flag",
      folder: p,
      target: "\\Seen",
      decision: "allow",
      ...cites(f),
      reason: `${f.reason}; a body fetched without PEEK sets \\Seen`,
      count: uids.length,
    });
  }
  s.auditRow({
    command: cmd.uid ? "UID FETCH" : "FETCH",
    operation: "mail:read",
    folder: p,
    target: null,
    decision: "allow",
    ...cites(d),
    reason: peekOnly ? `${d.reason}; bodies fetched with PEEK` : d.reason,
    count: uids.length,
  });
  // Upstream's responses too large to read (a BODYSTRUCTURE past MAX_LIST_DEPTH, MAX_LITERALS_PER_RESPONSE or
  // MAX_RESPONSE_LINE: a message of many MIME parts) come with nothing read (wire/response.ts).
  let unreadable = 0;
  const onData = (r: Response) => {
    if (r.type === "FETCH") {
      if (r.unreadable === true) unreadable++;
      const out = agentFetch(s, r, shape);
      if (out !== null) s.send(out);
    } else forwardUntagged(s, r);
  };
  // One upstream command per UPSTREAM_SET_RANGES ranges (a filtered folder's UIDs are scattered).
  for (const set of uids.length > 0 ? box.upstreamSets(uids) : []) {
    // Setting \Seen, it is a write: if the session ends before the answer, its row is followed by one saying so.
    const fetch = upstreamFetch(set, items, cmd.changedSince);
    const st = await (writes ? s.upstreamWrite(fetch, onData) : s.upstreamRun(fetch, onData));
    if (st.status !== "OK") {
      await s.sync(cmd.uid);
      return s.taggedFrom(cmd.tag, st, messageCommandCode(st.code));
    }
  }
  await s.sync(cmd.uid);
  if (unreadable > 0) {
    s.auditRow({
      command: cmd.uid ? "UID FETCH" : "FETCH",
      operation: "mail:read",
      folder: p,
      target: null,
      decision: "error",
      rule: null,
      ruleIndex: null,
      reason: `upstream FETCH responses past the wire layer's limits, not read: ${unreadable}`,
    });
    throw new Refusal("NO", "LIMIT", "A message's structure is too large to be read; its data was left out");
  }
  s.tagged(cmd.tag, "OK", null, "Fetch completed");
}
