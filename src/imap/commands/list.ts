/**
 * LIST and LSUB (RFC 3501 §6.3.8, §6.3.9; docs/config.md "Operations": folder:read): upstream's folders, filtered to
 * the ones the agent may see, with CHILDREN attributes recomputed over them (docs/protocol.md §2).
 */

import { LIST_ATTRIBUTES } from "../capabilities.ts";
import type { Response } from "../wire/index.ts";
import type { CommandOf, Session } from "./context.ts";

interface Entry {
  readonly name: string;
  readonly attributes: readonly string[];
  readonly delimiter: string | null;
  subscribed: boolean;
  exists: boolean;
}

/** Every upstream folder with its attributes and subscription state. */
async function upstreamFolders(s: Session): Promise<Map<string, Entry>> {
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

export async function list(s: Session, cmd: CommandOf<"LIST" | "LSUB">): Promise<void> {
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
