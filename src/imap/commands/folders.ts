/**
 * Folder commands (docs/config.md "Operations": folder:read, folder:write, mail:append): LIST, LSUB, STATUS, SELECT,
 * EXAMINE, CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, APPEND. A hidden folder answers exactly as a nonexistent one
 * (docs/protocol.md §0.5): every "does not exist" reply below is the proxy's own, whichever of the two it was.
 */

import type { Operation } from "../../policy/index.ts";
import { LIST_ATTRIBUTES, PASSED_CODES } from "../capabilities.ts";
import { messageFilter } from "../classify.ts";
import {
  agentCopyUid,
  filteredStatus,
  openFiltered,
  SYSTEM_FLAGS,
  searchUids,
  sessionRunner,
  withoutKeywords,
} from "../filtering.ts";
import { SelectedMailbox } from "../mailbox.ts";
import { Refusal } from "../refusal.ts";
import type { CommandOf, ImapSession } from "../session.ts";
import type { Response, ResponseCode } from "../wire/index.ts";

type FolderCommand = CommandOf<
  | "LIST"
  | "LSUB"
  | "STATUS"
  | "SELECT"
  | "EXAMINE"
  | "CREATE"
  | "DELETE"
  | "RENAME"
  | "SUBSCRIBE"
  | "UNSUBSCRIBE"
  | "APPEND"
>;

const NONEXISTENT = new Refusal("NO", "NONEXISTENT", "Mailbox does not exist");
const TRYCREATE = new Refusal("NO", "TRYCREATE", "Mailbox does not exist");

export async function runFolderCommand(s: ImapSession, cmd: FolderCommand): Promise<void> {
  switch (cmd.name) {
    case "LIST":
    case "LSUB":
      return list(s, cmd);
    case "STATUS":
      return status(s, cmd);
    case "SELECT":
    case "EXAMINE":
      return select(s, cmd as CommandOf<"SELECT" | "EXAMINE">);
    case "CREATE":
      return create(s, cmd as CommandOf<"CREATE">);
    case "DELETE":
      return remove(s, cmd as CommandOf<"DELETE">);
    case "RENAME":
      return rename(s, cmd);
    case "SUBSCRIBE":
    case "UNSUBSCRIBE":
      return subscribe(s, cmd as CommandOf<"SUBSCRIBE" | "UNSUBSCRIBE">);
    case "APPEND":
      return append(s, cmd);
  }
}

/** Upstream response codes the agent may see. */
export function passCode(code: ResponseCode | null): ResponseCode | null {
  return code?.known && PASSED_CODES.has(code.name) ? code : null;
}

/**
 * A hidden or invalid name is refused as nonexistent, and the refusal audited with the rule that hides the
 * folder; returns the policy name otherwise.
 */
export function visibleFolder(
  s: ImapSession,
  command: string,
  op: Operation,
  name: string,
  refusal = NONEXISTENT,
): string {
  if (s.names.invalid(name)) {
    s.auditRow({
      command,
      operation: op,
      folder: null,
      target: name,
      decision: "deny",
      rule: null,
      ruleIndex: null,
      reason: "invalid mailbox name (.., empty level, trailing delimiter, # or ~ namespace)",
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
      rule: d.rule,
      ruleIndex: d.ruleIndex,
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
function upstreamStatus(
  s: ImapSession,
  tag: string,
  st: { status: string; code: ResponseCode | null; text: string },
  uncodedIsMissing = false,
): void {
  if (st.status !== "OK" && st.code?.known && (st.code.name === "NONEXISTENT" || st.code.name === "TRYCREATE")) {
    throw st.code.name === "TRYCREATE" ? TRYCREATE : NONEXISTENT;
  }
  if (st.status === "NO" && st.code === null && uncodedIsMissing) throw NONEXISTENT;
  s.taggedFrom(tag, st, passCode(st.code));
}

interface Entry {
  readonly name: string;
  readonly attributes: readonly string[];
  readonly delimiter: string | null;
  subscribed: boolean;
  exists: boolean;
}

/** Every upstream folder with its attributes and subscription state. */
async function upstreamFolders(s: ImapSession): Promise<Map<string, Entry>> {
  const up = s.up!;
  const entries = new Map<string, Entry>();
  const extended = up.caps.has("LIST-EXTENDED");
  const returnOptions = extended ? (up.caps.has("SPECIAL-USE") ? ["SUBSCRIBED", "SPECIAL-USE"] : ["SUBSCRIBED"]) : [];
  await s.upstreamRun({ name: "LIST", reference: "", pattern: "*", selectOptions: [], returnOptions }, (r) => {
    if (r.type !== "LIST" || r.mailbox === null) return;
    const upper = r.attributes.map((a) => a.toUpperCase());
    entries.set(r.mailbox, {
      name: r.mailbox,
      attributes: r.attributes,
      delimiter: r.delimiter,
      subscribed: upper.includes("\\SUBSCRIBED"),
      exists: !upper.includes("\\NONEXISTENT"),
    });
  });
  if (!extended) {
    await s.upstreamRun({ name: "LSUB", reference: "", pattern: "*", selectOptions: [], returnOptions: [] }, (r) => {
      if (r.type !== "LSUB" || r.mailbox === null) return;
      const e = entries.get(r.mailbox);
      if (e !== undefined) e.subscribed = true;
      else
        entries.set(r.mailbox, {
          name: r.mailbox,
          attributes: ["\\Noselect"],
          delimiter: r.delimiter,
          subscribed: true,
          exists: false,
        });
    });
  }
  return entries;
}

async function list(s: ImapSession, cmd: CommandOf<"LIST" | "LSUB">): Promise<void> {
  const d = s.names.delimiter;
  if (cmd.name === "LIST" && cmd.pattern === "") {
    // RFC 3501 §6.3.8: the hierarchy delimiter and root.
    s.sendText(`* LIST (\\Noselect) ${d === null ? "NIL" : `"${d}"`} ""`);
    return s.tagged(cmd.tag, "OK", null, "List completed");
  }
  const all = await upstreamFolders(s);
  const visible: Entry[] = [];
  for (const e of all.values()) {
    if (s.names.invalid(e.name) || !s.rights.visible(s.names.toPolicy(e.name))) continue;
    visible.push(e);
  }
  const match = s.names.listMatcher(cmd.reference, cmd.pattern);
  const lsub = cmd.name === "LSUB";
  const onlySubscribed = lsub || cmd.selectOptions.includes("SUBSCRIBED");
  const showSubscribed =
    !lsub && (cmd.selectOptions.includes("SUBSCRIBED") || cmd.returnOptions.includes("SUBSCRIBED"));
  let count = 0;
  for (const e of visible) {
    if (!match(e.name)) continue;
    if (onlySubscribed ? !e.subscribed : !e.exists) continue;
    const attributes: string[] = [];
    let noInferiors = false;
    for (const a of e.attributes) {
      const upper = a.toUpperCase();
      if (upper === "\\NOINFERIORS") noInferiors = true;
      if (LIST_ATTRIBUTES.has(upper)) attributes.push(a);
    }
    if (!e.exists) attributes.push("\\Noselect");
    if (!noInferiors) {
      // CHILDREN (RFC 3348), recomputed over visible folders only (docs/protocol.md §2).
      const hasChildren = visible.some((c) => c !== e && c.exists && s.names.isBelow(c.name, e.name));
      attributes.push(hasChildren ? "\\HasChildren" : "\\HasNoChildren");
    }
    if (showSubscribed && e.subscribed) attributes.push("\\Subscribed");
    const r: Response = {
      type: lsub ? "LSUB" : "LIST",
      attributes,
      delimiter: e.delimiter ?? d,
      raw: "",
      mailbox: e.name,
    };
    s.send(r);
    count++;
  }
  s.auditRow({
    command: cmd.name,
    operation: "folder:read",
    folder: null,
    target: `${cmd.reference}${cmd.pattern}`,
    decision: "allow",
    rule: null,
    ruleIndex: null,
    reason: "listing filtered to visible folders",
    count,
    hiddenCount: all.size - visible.length,
  });
  s.tagged(cmd.tag, "OK", null, `${cmd.name} completed`);
}

async function status(s: ImapSession, cmd: CommandOf<"STATUS">): Promise<void> {
  const p = visibleFolder(s, "STATUS", "folder:read", cmd.mailbox);
  const d = s.require("STATUS", "folder:read", p);
  // STATUS=SIZE and rev2's DELETED are not advertised (docs/protocol.md §2).
  if (cmd.items.some((i) => i === "SIZE" || i === "DELETED")) throw new Refusal("BAD", null, "Unsupported STATUS item");
  const filter = messageFilter(s.ctx.policy, p, s.agent);
  if (filter !== null) {
    // A filtered folder: counts over visible messages only (docs/protocol.md §7.8).
    const counted = await filteredStatus(s, cmd.mailbox, cmd.items, filter);
    s.auditRow({
      command: "STATUS",
      operation: "folder:read",
      folder: p,
      decision: "allow",
      rule: d.rule,
      ruleIndex: d.ruleIndex,
      reason: d.reason,
      count: counted.visible,
      hiddenCount: counted.hidden,
    });
    s.send({ type: "STATUS", raw: "", mailbox: cmd.mailbox, items: counted.items });
    return s.tagged(cmd.tag, "OK", null, "Status completed");
  }
  s.auditRow({
    command: "STATUS",
    operation: "folder:read",
    folder: p,
    decision: "allow",
    rule: d.rule,
    ruleIndex: d.ruleIndex,
    reason: d.reason,
  });
  const st = await s.upstreamRun({ name: "STATUS", mailbox: cmd.mailbox, items: cmd.items }, (r) => {
    if (r.type === "STATUS" && r.mailbox !== null) s.send({ ...r, mailbox: cmd.mailbox });
  });
  upstreamStatus(s, cmd.tag, st, true);
}

/** Flags the agent may set in this folder, for PERMANENTFLAGS. */
function permittedFlags(s: ImapSession, p: string, flags: readonly string[]): string[] {
  const flag = s.rights.may("mail:flag", p);
  const del = s.rights.may("mail:delete", p);
  return flags.filter((f) => (f.toUpperCase() === "\\DELETED" ? del : flag));
}

async function deselect(s: ImapSession): Promise<void> {
  if (s.box === null) return;
  s.box = null;
  s.state = "authenticated";
  await s.upstreamRun({ name: "UNSELECT" });
}

async function select(s: ImapSession, cmd: CommandOf<"SELECT" | "EXAMINE">): Promise<void> {
  let p: string;
  try {
    s.requireAudit();
    p = visibleFolder(s, cmd.name, "folder:read", cmd.mailbox);
    s.require(cmd.name, "folder:read", p);
  } catch (refusal) {
    // A failed SELECT deselects (RFC 3501 §6.3.1): upstream too.
    await deselect(s);
    throw refusal;
  }
  const d = s.decide("folder:read", p);
  // Open upstream read-only unless the agent may change something here: EXAMINE keeps \Recent (RFC 3501 §6.3.2,
  // docs/protocol.md §1).
  const mayChange = s.rights.may("mail:flag", p) || s.rights.may("mail:delete", p) || s.rights.may("mail:move", p);
  const readOnly = cmd.name === "EXAMINE" || !mayChange;
  s.box = null;
  s.state = "authenticated";
  const held: Response[] = [];
  let exists = 0;
  let uidValidity = 0;
  // No mailbox is modelled yet: every untagged reply is held and rewritten below.
  const st = await s.up!.run({ name: readOnly ? "EXAMINE" : "SELECT", mailbox: cmd.mailbox }, (r) => {
    if (r.type === "EXISTS") exists = r.n;
    if (r.type === "status" && r.code?.known && r.code.name === "UIDVALIDITY") uidValidity = r.code.value;
    held.push(r);
  });
  if (st.status !== "OK") {
    s.auditRow({
      command: cmd.name,
      operation: "folder:read",
      folder: p,
      decision: "allow",
      rule: d.rule,
      ruleIndex: d.ruleIndex,
      reason: `${d.reason}; upstream: ${st.text}`,
    });
    return upstreamStatus(s, cmd.tag, st, true);
  }
  const uids: number[] = [];
  await s.upstreamRun(
    { name: "SEARCH", uid: true, returnOptions: null, charset: null, criteria: [{ key: "ALL" }] },
    (r) => {
      if (r.type === "SEARCH") for (const n of r.numbers) uids.push(n);
    },
  );
  uids.sort((a, b) => a - b);
  const filter = messageFilter(s.ctx.policy, p, s.agent);
  let box: SelectedMailbox;
  if (filter === null) {
    box = new SelectedMailbox(cmd.mailbox, p, readOnly, uids);
    if (uids.length < exists) box.onExists(exists);
  } else {
    try {
      box = await openFiltered(s, { name: cmd.mailbox, policyName: p, readOnly, uids, exists, uidValidity, filter });
    } catch (error) {
      // Nothing may be shown that was not classified: the SELECT fails, and deselects upstream too (§6.3.1).
      s.auditRow({
        command: cmd.name,
        operation: "mail:read",
        folder: p,
        decision: "error",
        rule: d.rule,
        ruleIndex: d.ruleIndex,
        reason: `classification failed: ${(error as Error).message}`,
      });
      // An upstream that failed with BYE (Dovecot's default on a failed FETCH) is gone, and the session ends with
      // it; UNSELECT can only fail then, and the refusal below is its one answer (no second audit row).
      await s.upstreamRun({ name: "UNSELECT" }).catch(() => {});
      throw new Refusal("NO", "UNAVAILABLE", "The mailbox could not be filtered; try again later");
    }
  }
  // The allow row before anything of the mailbox reaches the agent (docs/imap.md "Audit before data"); a SELECT
  // that cannot be audited fails, and deselects upstream too.
  try {
    s.auditRow({
      command: cmd.name,
      operation: "folder:read",
      folder: p,
      decision: "allow",
      rule: d.rule,
      ruleIndex: d.ruleIndex,
      reason: d.reason,
      count: box.agentCount,
      hiddenCount: box.upstreamCount - box.agentCount,
    });
  } catch (error) {
    await s.upstreamRun({ name: "UNSELECT" }).catch(() => {});
    throw error;
  }
  s.box = box;
  s.state = "selected";
  await s.sync(true);
  const filtered = box.visible !== null;
  // In a filtered folder RECENT and UNSEEN are computed over the visible messages (docs/protocol.md §3).
  const unseenSeq = filtered ? box.firstAgentSeqAmong(await searchUids(sessionRunner(s), "UNSEEN")) : 0;
  for (const r of held) {
    switch (r.type) {
      case "FLAGS":
        s.send(filtered ? { ...r, flags: [...SYSTEM_FLAGS] } : r);
        break;
      case "EXISTS":
        s.sendText(`* ${box.agentCount} EXISTS`);
        break;
      case "RECENT":
        if (filtered) s.sendText(`* ${box.countKnown(await searchUids(sessionRunner(s), "RECENT"))} RECENT`);
        else s.send(r);
        break;
      case "status": {
        const code = r.code;
        if (code === null || !code.known) break;
        if (code.name === "PERMANENTFLAGS") {
          const flags = permittedFlags(s, p, code.flags);
          s.send({ ...r, code: { ...code, flags: filtered ? withoutKeywords(flags) : flags } });
        } else if (code.name === "UNSEEN") {
          const k = filtered ? unseenSeq : box.agentSeqOf(box.uidOf(code.value));
          if (k > 0) s.send({ ...r, code: { ...code, value: k } });
        } else if (code.name === "UIDNEXT") {
          s.send(filtered ? { ...r, code: { ...code, value: box.uidNext(code.value) } } : r);
        } else if (code.name === "UIDVALIDITY") {
          s.send(r);
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
  s.tagged(cmd.tag, "OK", readOnly ? "READ-ONLY" : "READ-WRITE", `${cmd.name} completed`);
}

/** Names below `name` upstream (hidden ones included: they decide whether DELETE or RENAME is safe). */
async function children(s: ImapSession, name: string): Promise<string[]> {
  const d = s.names.delimiter;
  if (d === null) return [];
  const out: string[] = [];
  await s.upstreamRun(
    { name: "LIST", reference: "", pattern: `${name}${d}*`, selectOptions: [], returnOptions: [] },
    (r) => {
      if (r.type === "LIST") out.push(r.mailbox ?? "\0invalid");
    },
  );
  return out;
}

async function create(s: ImapSession, cmd: CommandOf<"CREATE">): Promise<void> {
  // The same words as `require`'s refusal: a hidden ancestor must not be told apart from a denied name (§7.15 of
  // docs/protocol.md).
  const denied = new Refusal("NO", "NOPERM", "Not permitted: folder:write in this folder");
  if (s.names.invalid(cmd.mailbox)) {
    s.auditRow({
      command: "CREATE",
      operation: "folder:write",
      folder: null,
      target: cmd.mailbox,
      decision: "deny",
      rule: null,
      ruleIndex: null,
      reason: "invalid mailbox name",
    });
    throw new Refusal("NO", "CANNOT", "Invalid mailbox name");
  }
  const p = s.names.toPolicy(cmd.mailbox);
  // CREATE in a hidden subtree, or of a hidden name, is refused the same way whether or not it exists
  // (docs/protocol.md §7.15).
  for (const a of s.names.ancestors(cmd.mailbox)) {
    if (!s.rights.visible(s.names.toPolicy(a))) {
      s.auditRow({
        command: "CREATE",
        operation: "folder:write",
        folder: p,
        decision: "deny",
        rule: null,
        ruleIndex: null,
        reason: `parent folder ${a} is hidden`,
      });
      throw denied;
    }
  }
  const d = s.require("CREATE", "folder:write", p);
  await s.auditDurable({
    command: "CREATE",
    operation: "folder:write",
    folder: p,
    target: null,
    decision: "allow",
    rule: d.rule,
    ruleIndex: d.ruleIndex,
    reason: d.reason,
  });
  const st = await s.upstreamRun({ name: "CREATE", mailbox: cmd.mailbox });
  s.taggedFrom(cmd.tag, st, passCode(st.code));
}

/** One answer whether folders below are hidden by the rules, exist and are hidden, or exist and are read-only. */
const SUBTREE_DELETE = "Not permitted: folders below it are not all the agent's to delete";
const SUBTREE_RENAME = "Not permitted: folders below it are not all the agent's to rename";

async function remove(s: ImapSession, cmd: CommandOf<"DELETE">): Promise<void> {
  const p = visibleFolder(s, "DELETE", "folder:write", cmd.mailbox);
  if (cmd.mailbox === "INBOX") {
    s.auditRow({
      command: "DELETE",
      operation: "folder:write",
      folder: p,
      decision: "deny",
      rule: null,
      ruleIndex: null,
      reason: "INBOX cannot be deleted (RFC 3501 §6.3.4)",
    });
    throw new Refusal("NO", "CANNOT", "INBOX cannot be deleted");
  }
  const d = s.require("DELETE", "folder:write", p);
  // DELETE destroys the messages and, upstream, may affect children: every one must be the agent's to change.
  s.require("DELETE", "mail:delete", p);
  // Whether a hidden child exists must not change the answer: where the rules could hide one, DELETE is refused
  // whatever lies below, with the words used for a child the agent sees but may not delete.
  if (!s.rights.subtreeVisible(p)) {
    s.auditRow({
      command: "DELETE",
      operation: "folder:write",
      folder: p,
      decision: "deny",
      rule: null,
      ruleIndex: null,
      reason: "the rules may hide folders below it",
    });
    throw new Refusal("NO", "NOPERM", SUBTREE_DELETE);
  }
  for (const child of await children(s, cmd.mailbox)) {
    const cp = s.names.toPolicy(child);
    if (!s.rights.visible(cp) || !s.rights.may("folder:write", cp) || !s.rights.may("mail:delete", cp)) {
      s.auditRow({
        command: "DELETE",
        operation: "folder:write",
        folder: p,
        decision: "deny",
        rule: null,
        ruleIndex: null,
        reason: "a child folder is hidden or not the agent's to delete",
      });
      throw new Refusal("NO", "NOPERM", SUBTREE_DELETE);
    }
  }
  await s.auditDurable({
    command: "DELETE",
    operation: "folder:write",
    folder: p,
    target: null,
    decision: "allow",
    rule: d.rule,
    ruleIndex: d.ruleIndex,
    reason: d.reason,
  });
  if (s.box !== null && s.box.name === cmd.mailbox) await deselect(s);
  const st = await s.upstreamRun({ name: "DELETE", mailbox: cmd.mailbox });
  upstreamStatus(s, cmd.tag, st);
}

async function rename(s: ImapSession, cmd: CommandOf<"RENAME">): Promise<void> {
  const p = visibleFolder(s, "RENAME", "folder:write", cmd.mailbox);
  // RENAME INBOX moves every message, hidden ones included (RFC 3501 §6.3.5, docs/protocol.md §7.25).
  if (cmd.mailbox === "INBOX") {
    s.auditRow({
      command: "RENAME",
      operation: "folder:write",
      folder: p,
      decision: "deny",
      rule: null,
      ruleIndex: null,
      reason: "RENAME INBOX is never allowed",
    });
    throw new Refusal("NO", "NOPERM", "Not permitted: RENAME INBOX");
  }
  if (s.names.invalid(cmd.newName)) {
    s.auditRow({
      command: "RENAME",
      operation: "folder:write",
      folder: p,
      target: cmd.newName,
      decision: "deny",
      rule: null,
      ruleIndex: null,
      reason: "invalid new mailbox name",
    });
    throw new Refusal("NO", "CANNOT", "Invalid mailbox name");
  }
  const np = s.names.toPolicy(cmd.newName);
  const d = s.require("RENAME", "folder:write", p, np);
  s.require("RENAME", "folder:write", np, p);
  for (const a of s.names.ancestors(cmd.newName)) {
    if (!s.rights.visible(s.names.toPolicy(a))) {
      s.auditRow({
        command: "RENAME",
        operation: "folder:write",
        folder: p,
        target: np,
        decision: "deny",
        rule: null,
        ruleIndex: null,
        reason: `new parent folder ${a} is hidden`,
      });
      throw new Refusal("NO", "NOPERM", "Not permitted: folder:write here");
    }
  }
  if (!s.rights.subtreeVisible(p)) {
    s.auditRow({
      command: "RENAME",
      operation: "folder:write",
      folder: p,
      target: np,
      decision: "deny",
      rule: null,
      ruleIndex: null,
      reason: "the rules may hide folders below it",
    });
    throw new Refusal("NO", "NOPERM", SUBTREE_RENAME);
  }
  for (const child of await children(s, cmd.mailbox)) {
    const cp = s.names.toPolicy(child);
    const moved = s.names.toPolicy(cmd.newName + child.slice(cmd.mailbox.length));
    if (!s.rights.visible(cp) || !s.rights.may("folder:write", cp) || !s.rights.may("folder:write", moved)) {
      s.auditRow({
        command: "RENAME",
        operation: "folder:write",
        folder: p,
        decision: "deny",
        rule: null,
        ruleIndex: null,
        reason: "a child folder is hidden or may not be renamed",
      });
      throw new Refusal("NO", "NOPERM", SUBTREE_RENAME);
    }
  }
  await s.auditDurable({
    command: "RENAME",
    operation: "folder:write",
    folder: p,
    target: np,
    decision: "allow",
    rule: d.rule,
    ruleIndex: d.ruleIndex,
    reason: d.reason,
  });
  const st = await s.upstreamRun({ name: "RENAME", mailbox: cmd.mailbox, newName: cmd.newName });
  upstreamStatus(s, cmd.tag, st);
}

async function subscribe(s: ImapSession, cmd: CommandOf<"SUBSCRIBE" | "UNSUBSCRIBE">): Promise<void> {
  const p = visibleFolder(s, cmd.name, "folder:write", cmd.mailbox);
  const d = s.require(cmd.name, "folder:write", p);
  await s.auditDurable({
    command: cmd.name,
    operation: "folder:write",
    folder: p,
    target: null,
    decision: "allow",
    rule: d.rule,
    ruleIndex: d.ruleIndex,
    reason: d.reason,
  });
  const st = await s.upstreamRun({ name: cmd.name, mailbox: cmd.mailbox });
  upstreamStatus(s, cmd.tag, st, true);
}

async function append(s: ImapSession, cmd: CommandOf<"APPEND">): Promise<void> {
  const p = visibleFolder(s, "APPEND", "mail:append", cmd.mailbox, TRYCREATE);
  const d = s.require("APPEND", "mail:append", p);
  if (cmd.flags.some((f) => f.toUpperCase() === "\\DELETED")) s.require("APPEND", "mail:delete", p);
  if (cmd.binary) throw new Refusal("BAD", null, "literal8 is not supported");
  await s.auditDurable({
    command: "APPEND",
    operation: "mail:append",
    folder: p,
    target: `${cmd.message.length} octets`,
    decision: "allow",
    rule: d.rule,
    ruleIndex: d.ruleIndex,
    reason: d.reason,
    count: 1,
  });
  const st = await s.upstreamRun({
    name: "APPEND",
    mailbox: cmd.mailbox,
    flags: cmd.flags,
    date: cmd.date,
    message: cmd.message,
    binary: false,
  });
  await s.sync(true);
  upstreamStatus(s, cmd.tag, { ...st, code: agentCopyUid(s, st.code, p) });
}
