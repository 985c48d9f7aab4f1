/**
 * LIST and LSUB (RFC 3501 §6.3.8, §6.3.9; docs/config.md "Operations": folder:read), with LIST-EXTENDED (RFC 5258),
 * SPECIAL-USE (RFC 6154) and LIST-STATUS (RFC 5819). Upstream's folders are read once, cut to the ones the agent
 * may see, and the tree is built again over them alone (docs/protocol.md §2 "Folder listings"): a `\Noselect` (or
 * `\NonExistent`) parent, `\HasChildren`, CHILDINFO and STATUS all come from visible folders only, so a folder whose
 * only children are hidden stays a folder without children, and a name with only hidden folders below it does not
 * exist.
 */

import { LIST_ATTRIBUTES } from "../capabilities.ts";
import { messageFilter } from "../classify.ts";
import { auditedFilteredStatus } from "../filtering.ts";
import { Refusal } from "../refusal.ts";
import type { Response, StatusItem } from "../wire/index.ts";
import { type CommandOf, cites, type Session, type UpstreamStatus } from "./context.ts";
import { agentStatus, checkStatusItems, passCode } from "./shared.ts";

/** An upstream folder the agent may see. */
interface Folder {
  readonly name: string;
  /** Upstream's attributes the agent may see (LIST_ATTRIBUTES): special uses and `\Noinferiors`. */
  readonly attributes: readonly string[];
  readonly delimiter: string | null;
}

const SPECIAL_USES = new Set(["\\ALL", "\\ARCHIVE", "\\DRAFTS", "\\FLAGGED", "\\JUNK", "\\SENT", "\\TRASH"]);

/**
 * Upstream's selectable and `\Noinferiors` folders, in upstream's order. An upstream `\Noselect` or `\NonExistent`
 * entry is left out: it is a level that holds other folders (maybe only hidden ones), and the proxy computes those
 * levels itself over the visible folders. `hidden` counts the folders left out by the rules.
 */
async function upstreamFolders(
  s: Session,
): Promise<{ folders: Map<string, Folder>; hidden: number; status: UpstreamStatus }> {
  const up = s.up!;
  const folders = new Map<string, Folder>();
  let hidden = 0;
  const returnOptions = up.caps.has("LIST-EXTENDED") && up.caps.has("SPECIAL-USE") ? ["SPECIAL-USE"] : [];
  const status = await s.upstreamRun(
    { name: "LIST", reference: "", pattern: "*", selectOptions: [], returnOptions },
    (r) => {
      if (r.type !== "LIST" || r.mailbox === null) return;
      const upper = r.attributes.map((a) => a.toUpperCase());
      if (upper.includes("\\NOSELECT") || upper.includes("\\NONEXISTENT")) return;
      if (!visible(s, r.mailbox)) {
        hidden++;
        return;
      }
      const attributes = r.attributes.filter(
        (a) => LIST_ATTRIBUTES.has(a.toUpperCase()) && a.toUpperCase() !== "\\NOSELECT",
      );
      folders.set(r.mailbox, { name: r.mailbox, attributes, delimiter: r.delimiter });
    },
  );
  return { folders, hidden, status };
}

/** The visible names the agent is subscribed to, existing or not (RFC 3501 §6.3.9: LSUB "" "*"). */
async function subscriptions(s: Session): Promise<{ names: Set<string>; status: UpstreamStatus }> {
  const names = new Set<string>();
  const command = { name: "LSUB", reference: "", pattern: "*", selectOptions: [], returnOptions: [] } as const;
  const status = await s.upstreamRun(command, (r) => {
    if (r.type === "LSUB" && r.mailbox !== null && visible(s, r.mailbox)) names.add(r.mailbox);
  });
  return { names, status };
}

function visible(s: Session, name: string): boolean {
  return !s.names.invalid(name) && s.rights.visible(s.names.toPolicy(name));
}

export async function list(s: Session, cmd: CommandOf<"LIST" | "LSUB">): Promise<void> {
  const d = s.names.delimiter;
  const lsub = cmd.name === "LSUB";
  const patterns = cmd.patterns ?? [cmd.pattern];
  const select = new Set(cmd.selectOptions);
  const ret = new Set(cmd.returnOptions);
  if (!lsub && patterns.length === 1 && patterns[0] === "" && select.size === 0) {
    // RFC 3501 §6.3.8: the hierarchy delimiter and root.
    s.sendText(`* LIST (\\Noselect) ${d === null ? "NIL" : `"${d}"`} ""`);
    return s.tagged(cmd.tag, "OK", null, "List completed");
  }
  const statusItems = cmd.statusItems ?? null;
  // The items as STATUS checks them; HIGHESTMODSEQ enables CONDSTORE here too.
  if (statusItems !== null) await checkStatusItems(s, statusItems);
  // Any LIST-EXTENDED syntax: a level without a folder is `\NonExistent` (RFC 5258 §3.4), as Dovecot answers.
  const extended = !lsub && (select.size > 0 || ret.size > 0 || patterns.length > 1);
  const bySubscription = lsub || select.has("SUBSCRIBED");
  const bySpecialUse = select.has("SPECIAL-USE");
  const recursive = select.has("RECURSIVEMATCH");
  const showSubscribed = !lsub && (select.has("SUBSCRIBED") || ret.has("SUBSCRIBED"));

  // Written once the listing is built, with what it shows and hides; by the session if upstream never answers.
  const row = s.awaitAnswer({
    command: cmd.name,
    operation: "folder:read",
    folder: null,
    target: `${cmd.reference}${patterns.join(" ")}`,
    decision: "allow",
    rule: null,
    ruleIndex: null,
    reason: "listing filtered to visible folders",
  });
  const { folders, hidden, status } = await upstreamFolders(s);
  const subs = bySubscription || showSubscribed ? await subscriptions(s) : null;
  // A listing upstream did not complete is not shown as a shorter one: its NO or BAD, with the row saying so.
  const failed = status.status !== "OK" ? status : subs !== null && subs.status.status !== "OK" ? subs.status : null;
  if (failed !== null) {
    row.write({ reason: `listing filtered to visible folders; upstream: ${failed.text}` });
    return s.taggedFrom(cmd.tag, failed, passCode(failed.code));
  }
  const subscribed = subs?.names ?? new Set<string>();
  // Every level that holds a visible folder: those, and only those, have children (RFC 3348).
  const parents = new Set<string>();
  for (const name of folders.keys()) for (const a of s.names.ancestors(name)) parents.add(a);

  const matchers = patterns.map((p) => s.names.listMatcher(cmd.reference, p));
  const matches = (name: string) => matchers.some((m) => m(name));

  // What is listed, in upstream's order; a level without a folder comes just before the first folder below it.
  const out: string[] = [];
  const childInfo = new Map<string, string[]>();
  const listed = new Set<string>();
  const add = (name: string) => {
    if (listed.has(name)) return;
    listed.add(name);
    out.push(name);
  };
  if (bySubscription || bySpecialUse) {
    // Selection options (RFC 5258 §3, RFC 6154 §3): the folders that meet every one given.
    const meets = (name: string) =>
      (!bySubscription || subscribed.has(name)) &&
      (!bySpecialUse || (folders.get(name)?.attributes.some((a) => SPECIAL_USES.has(a.toUpperCase())) ?? false));
    const candidates = [...folders.keys(), ...[...subscribed].filter((n) => !folders.has(n))];
    const criteria = [...(bySubscription && !lsub ? ["SUBSCRIBED"] : []), ...(bySpecialUse ? ["SPECIAL-USE"] : [])];
    const above = new Set<string>();
    for (const name of candidates) {
      if (!meets(name)) continue;
      for (const a of s.names.ancestors(name)) above.add(a);
      const own = matches(name);
      // RECURSIVEMATCH (RFC 5258 §3): a matching ancestor of a folder that meets the criteria but does not match
      // itself is listed too. LSUB (RFC 3501 §6.3.9): such an ancestor is listed `\Noselect`.
      if (!own && (recursive || lsub)) for (const a of s.names.ancestors(name)) if (matches(a)) add(a);
      if (own) add(name);
    }
    // CHILDINFO (RFC 5258 §3.5): on every listed name with a descendant that meets the criteria, as Dovecot does.
    if (recursive) for (const name of out) if (above.has(name)) childInfo.set(name, criteria);
  } else {
    for (const name of folders.keys()) {
      for (const a of s.names.ancestors(name)) if (!folders.has(a) && matches(a)) add(a);
      if (matches(name)) add(name);
    }
  }

  const responses: Array<Response & { readonly type: "LIST" | "LSUB" }> = [];
  for (const name of out) {
    const folder = folders.get(name) ?? null;
    const attributes: string[] = [];
    const lsubParent = lsub && !subscribed.has(name);
    if (folder !== null && !lsubParent) attributes.push(...folder.attributes);
    if (folder === null || lsubParent) attributes.push(extended ? "\\NonExistent" : "\\Noselect");
    // CHILDREN attributes ride on LIST only (RFC 3348 §4 defines them for LIST; Dovecot's LSUB has none).
    if (!lsub && !attributes.some((a) => a.toUpperCase() === "\\NOINFERIORS")) {
      attributes.push(parents.has(name) ? "\\HasChildren" : "\\HasNoChildren");
    }
    if (showSubscribed && subscribed.has(name)) attributes.push("\\Subscribed");
    responses.push({
      type: lsub ? "LSUB" : "LIST",
      attributes,
      delimiter: folder?.delimiter ?? d,
      raw: "",
      mailbox: name,
      ...(childInfo.has(name) ? { childInfo: childInfo.get(name)! } : {}),
    });
  }
  // The listing's own row comes first: it lets the listing out, and each STATUS has its row before its data
  // (docs/imap.md "Audit before data").
  row.write({ count: responses.length, hiddenCount: hidden });
  for (const r of responses) {
    s.send(r);
    // RFC 5819 §2: a folder's STATUS follows its LIST response.
    if (statusItems !== null && folders.has(r.mailbox!)) {
      await listStatus(s, r.mailbox!, statusItems);
    }
  }
  s.tagged(cmd.tag, "OK", null, `${cmd.name} completed`);
}

/**
 * LIST-STATUS (RFC 5819 §2): STATUS of one listed folder, computed as the STATUS command computes it (commands/
 * status.ts): over the visible messages in a filtered folder. Left out when the agent may not read the folder, or
 * it went away meanwhile (RFC 5819 §2 lets the server omit it). Each one is audited like a STATUS.
 */
async function listStatus(s: Session, name: string, items: readonly StatusItem[]): Promise<void> {
  const p = s.names.toPolicy(name);
  const d = s.decide("folder:read", p);
  if (d.action !== "allow") return;
  const row = {
    command: "LIST",
    operation: "folder:read",
    folder: p,
    target: "RETURN (STATUS)",
    decision: "allow",
    ...cites(d),
    reason: d.reason,
  } as const;
  const filter = messageFilter(s.ctx.policy, p, s.agent);
  if (filter !== null) {
    // Every allow has its row, a folder that could not be counted too (its reason says why, as for STATUS).
    let counted: Awaited<ReturnType<typeof auditedFilteredStatus>>;
    try {
      counted = await auditedFilteredStatus(s, name, items, filter, row);
    } catch (err) {
      if (err instanceof Refusal && err.code === "NONEXISTENT") return;
      throw err;
    }
    s.send({ type: "STATUS", raw: "", mailbox: name, items: counted.items });
    return;
  }
  // Written once upstream has answered; by the session if the answer never comes.
  const written = s.awaitAnswer(row);
  let reply: Response | null = null;
  const st = await s.upstreamRun({ name: "STATUS", mailbox: name, items }, (r) => {
    if (r.type === "STATUS") reply = agentStatus(r, name, items) ?? reply;
  });
  // Not answered (the folder went away meanwhile, say): the folder's STATUS is left out, and its row says why.
  if (st.status !== "OK") return written.write({ reason: `${d.reason}; upstream: ${st.text}` });
  if (reply === null) return written.write({ reason: `${d.reason}; upstream sent no STATUS` });
  written.write();
  s.send({ ...(reply as Response & { type: "STATUS" }), mailbox: name });
}
