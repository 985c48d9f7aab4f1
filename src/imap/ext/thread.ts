/**
 * THREAD (RFC 5256 §4): ORDEREDSUBJECT and REFERENCES over a given list of messages, and the THREAD response
 * syntax (§5 `thread-list`). Pure: the caller fetches per message its INTERNALDATE, ENVELOPE (date, subject,
 * in-reply-to, message-id) and References header, and passes them in mailbox order; ids are sequence numbers or
 * UIDs, whichever the caller chose.
 *
 * Sent dates follow §2.2 (the Date header in UTC, else the internal date); equal dates keep mailbox order.
 */

import { MAX_THREAD_LINK_STEPS, MAX_THREAD_REFERENCES } from "../limits.ts";
import { type BaseSubject, baseSubject, sentDate } from "./keys.ts";

export interface ThreadMessage {
  readonly id: number;
  /** INTERNALDATE, milliseconds since the epoch. */
  readonly internalDate: number;
  /** ENVELOPE date (the Date header as sent), or null. */
  readonly date: string | null;
  /** ENVELOPE subject (the Subject header as sent), or null. */
  readonly subject: string | null;
  /** ENVELOPE message-id, or null. */
  readonly messageId: string | null;
  /** ENVELOPE in-reply-to, or null. */
  readonly inReplyTo: string | null;
  /** The References header's value, or null when there is none. */
  readonly references: string | null;
  /**
   * What threading derives from the fields above, when the caller has derived it already (`threadKeys`) and kept it
   * instead of the fields: the base subject, the message's own msg-id and the ids step 1 links.
   */
  readonly keys?: ThreadKeys;
}

/** The part of a message that THREAD reads, derived once: far smaller than the fields it comes from. */
export interface ThreadKeys {
  readonly base: BaseSubject;
  readonly own: string | undefined;
  readonly links: readonly string[];
}

/** The keys of a message, from its fields (RFC 5256 §2.1 and §4 step 1). */
export function threadKeys(m: Pick<ThreadMessage, "subject" | "messageId" | "references" | "inReplyTo">): ThreadKeys {
  return { base: baseSubject(m.subject), own: messageIds(m.messageId)[0], links: referencesOf(m) };
}

export type ThreadAlgorithm = "ORDEREDSUBJECT" | "REFERENCES";

/** A thread node: a message, or a placeholder (`id` null) for a message that is not in the set. */
export interface ThreadNode {
  readonly id: number | null;
  readonly children: readonly ThreadNode[];
}

interface Item {
  readonly id: number;
  readonly index: number;
  readonly date: number;
  readonly subject: string;
  readonly replyOrForward: boolean;
}

/** A message's keys: as the caller derived them, or derived here from its fields. */
function keysOf(m: ThreadMessage): ThreadKeys {
  return m.keys ?? threadKeys(m);
}

function items(messages: readonly ThreadMessage[], keys: readonly ThreadKeys[]): Item[] {
  return messages.map((m, index) => {
    const b = keys[index]!.base;
    return {
      id: m.id,
      index,
      date: sentDate(m.date, m.internalDate),
      subject: b.key,
      replyOrForward: b.replyOrForward,
    };
  });
}

function byDate(a: Item, b: Item): number {
  return a.date - b.date || a.index - b.index;
}

export function thread(algorithm: ThreadAlgorithm, messages: readonly ThreadMessage[]): ThreadNode[] {
  return algorithm === "ORDEREDSUBJECT" ? threadOrderedSubject(messages) : threadReferences(messages);
}

/**
 * §4 ORDEREDSUBJECT: sorted by base subject, then sent date; each run of one base subject is a thread whose first
 * message is the parent of all the others; threads in the order of their first message's sent date.
 */
export function threadOrderedSubject(messages: readonly ThreadMessage[]): ThreadNode[] {
  const sorted = items(messages, messages.map(keysOf)).sort((a, b) =>
    a.subject < b.subject ? -1 : a.subject > b.subject ? 1 : byDate(a, b),
  );
  const threads: Item[][] = [];
  for (const m of sorted) {
    const last = threads.at(-1);
    if (last !== undefined && last[0]!.subject === m.subject) last.push(m);
    else threads.push([m]);
  }
  threads.sort((a, b) => byDate(a[0]!, b[0]!));
  return threads.map((t) => ({ id: t[0]!.id, children: t.slice(1).map((m) => ({ id: m.id, children: [] })) }));
}

/** A node of the REFERENCES algorithm (JWZ's container). */
interface Container {
  item: Item | null;
  parent: Container | null;
  children: Container[];
}

/** The msg-ids of a header value in order (RFC 5322 §3.6.4), without angle brackets; only ones with an `@`. */
export function messageIds(value: string | null): string[] {
  if (value === null) return [];
  const out: string[] = [];
  for (const m of value.replace(/\([^()]*\)/g, " ").matchAll(/<([^<>]*)>/g)) {
    const id = m[1]!.replace(/\s+/g, "");
    if (id.includes("@") && !id.startsWith("@") && !id.endsWith("@")) out.push(id);
  }
  return out;
}

/**
 * The msg-ids step 1 links for a message: its References (the last MAX_THREAD_REFERENCES of them), or else the
 * first msg-id of In-Reply-To.
 */
export function referencesOf(m: Pick<ThreadMessage, "references" | "inReplyTo">): string[] {
  const refs = messageIds(m.references);
  if (refs.length > 0) return refs.slice(-MAX_THREAD_REFERENCES);
  return messageIds(m.inReplyTo).slice(0, 1);
}

/**
 * True when `a` is `b` or one of its ancestors. A container without children is an ancestor of nothing but itself:
 * answered at once, so a reply chain read in order (each message new, naming the one before) costs no walk up the
 * chain per message.
 */
function isAncestorOrSelf(a: Container, b: Container, budget: LinkBudget): boolean {
  if (a.children.length === 0) return a === b;
  for (let c: Container | null = b; c !== null; c = c.parent) {
    budget.spend(1);
    if (c === a) return true;
  }
  return false;
}

function unlink(c: Container, budget: LinkBudget): void {
  const p = c.parent;
  if (p === null) return;
  budget.spend(p.children.length);
  p.children.splice(p.children.indexOf(c), 1);
  c.parent = null;
}

/** THREAD REFERENCES took more than MAX_THREAD_LINK_STEPS steps linking containers: the command is refused. */
export class ThreadTooLarge extends Error {
  constructor() {
    super(`THREAD would take more than ${MAX_THREAD_LINK_STEPS} steps on these messages`);
  }
}

/** Steps left of MAX_THREAD_LINK_STEPS for one THREAD REFERENCES. */
class LinkBudget {
  #left = MAX_THREAD_LINK_STEPS;
  spend(steps: number): void {
    this.#left -= steps;
    if (this.#left < 0) throw new ThreadTooLarge();
  }
}

function link(parent: Container, child: Container): void {
  child.parent = parent;
  parent.children.push(child);
}

/**
 * The date and mailbox position a container sorts by: its own, or its first child's for a placeholder (§4), once
 * its children are sorted.
 */
function sortItem(c: Container): Item | null {
  let k: Container = c;
  while (k.item === null) {
    const first = k.children[0];
    if (first === undefined) return null;
    k = first;
  }
  return k.item;
}

function compareItems(x: Item | null, y: Item | null): number {
  if (x === null || y === null) return x === null ? (y === null ? 0 : 1) : -1;
  return byDate(x, y);
}

/** Sorts one set of siblings in place by `sortItem`, each key computed once (not once per comparison). */
function sortSiblings(level: Container[]): void {
  if (level.length < 2) return;
  const keyed = level.map((c) => ({ c, key: sortItem(c) }));
  keyed.sort((a, b) => compareItems(a.key, b.key));
  for (let i = 0; i < keyed.length; i++) level[i] = keyed[i]!.c;
}

/**
 * Every container below `roots`, each after all of its descendants (reversed pre-order). The passes over the tree
 * walk this list instead of recursing: a reply chain thousands of messages long, which any sender can mail, is as
 * deep as it is long and would exhaust the call stack (docs/imap.md "Decisions").
 */
function descendantsFirst(roots: readonly Container[]): Container[] {
  const order: Container[] = [];
  const stack = [...roots];
  for (let c = stack.pop(); c !== undefined; c = stack.pop()) {
    order.push(c);
    for (const child of c.children) stack.push(child);
  }
  return order.reverse();
}

/** The subject of a thread: its root's, or its first child's for a placeholder (§4 step 5.B.i). */
function threadSubject(c: Container): string {
  return (c.item ?? c.children[0]?.item)?.subject ?? "";
}

/** §4 REFERENCES, steps 1 to 6. */
export function threadReferences(messages: readonly ThreadMessage[]): ThreadNode[] {
  const keys = messages.map(keysOf);
  const list = items(messages, keys);
  const table = new Map<string, Container>();
  const containerFor = (id: string): Container => {
    let c = table.get(id);
    if (c === undefined) {
      c = { item: null, parent: null, children: [] };
      table.set(id, c);
    }
    return c;
  };
  const all: Container[] = [];
  const budget = new LinkBudget();
  // (1) Link messages by their references.
  keys.forEach(({ own, links: refs }, i) => {
    // (1.A) A missing, invalid or duplicate Message-ID gets a unique one: a container of its own.
    let c: Container;
    if (own !== undefined && (table.get(own)?.item ?? null) === null) {
      c = containerFor(own);
      c.item = list[i]!;
    } else {
      c = { item: list[i]!, parent: null, children: [] };
    }
    all.push(c);
    // (1.B) Link each reference to the next unless it has a parent already or that would make a loop.
    for (let k = 0; k + 1 < refs.length; k++) {
      const parent = containerFor(refs[k]!);
      const child = containerFor(refs[k + 1]!);
      if (child.parent === null && !isAncestorOrSelf(child, parent, budget)) link(parent, child);
    }
    // (1.C) The last reference becomes the message's parent: any earlier parent (presumed from another message's
    // References) is dropped first, even when the new link is not added because it would make a loop.
    const last = refs.length > 0 ? containerFor(refs[refs.length - 1]!) : null;
    unlink(c, budget);
    if (last !== null && !isAncestorOrSelf(c, last, budget)) link(last, c);
  });
  // (2) The root set: containers without a parent.
  const roots: Container[] = [];
  for (const c of new Set([...table.values(), ...all])) if (c.parent === null) roots.push(c);
  // (3) Prune placeholders.
  const pruned = prune(roots);
  // (4) Sort the root set (a placeholder by its first child, once its children are sorted).
  for (const c of pruned) if (c.item === null) sortSiblings(c.children);
  sortSiblings(pruned);
  // (5) Gather the root set's threads by base subject.
  const merged = mergeBySubject(pruned);
  // (6) Sort every set of siblings, deepest first.
  sortTree(merged);
  return toNodes(merged);
}

/**
 * §4 step 3: (A) a placeholder without children goes; (B) one with children is replaced by them, except at the
 * root, where that happens only when it has a single child. Children are pruned before their parent, as the
 * recursive definition does, but from a list (`descendantsFirst`), not by recursion.
 */
function prune(roots: Container[]): Container[] {
  for (const c of descendantsFirst(roots)) c.children = pruneLevel(c.children, c);
  return pruneLevel(roots, null);
}

/** Step 3 on one set of siblings whose own children are pruned already. */
function pruneLevel(level: Container[], parent: Container | null): Container[] {
  const out: Container[] = [];
  for (const c of level) {
    if (c.item === null) {
      if (c.children.length === 0) continue;
      if (parent !== null || c.children.length === 1) {
        for (const child of c.children) {
          child.parent = parent;
          out.push(child);
        }
        continue;
      }
    }
    out.push(c);
  }
  return out;
}

function mergeBySubject(roots: Container[]): Container[] {
  const subjects = new Map<string, Container>();
  // (5.B) One container per base subject: a placeholder wins over a message, a non-reply over a reply.
  for (const c of roots) {
    const s = threadSubject(c);
    if (s === "") continue;
    const old = subjects.get(s);
    if (old === undefined) subjects.set(s, c);
    else if (old.item !== null && (c.item === null || (old.item.replyOrForward && !c.item.replyOrForward)))
      subjects.set(s, c);
  }
  // (5.C) Merge the others into it.
  const out = [...roots];
  // Where each root stands in `out`, for the one a placeholder takes the place of (found once per base subject).
  const place = new Map<Container, number>();
  for (let i = 0; i < roots.length; i++) place.set(roots[i]!, i);
  const drop = new Set<Container>();
  for (const c of roots) {
    // Already merged below another (a table entry a placeholder took over).
    if (c.parent !== null) continue;
    const s = threadSubject(c);
    if (s === "") continue;
    const old = subjects.get(s)!;
    if (old === c) continue;
    drop.add(c);
    if (old.item === null && c.item === null) {
      for (const child of c.children) link(old, child);
      c.children = [];
    } else if (old.item === null) {
      link(old, c);
    } else if (c.item!.replyOrForward && !old.item.replyOrForward) {
      link(old, c);
    } else {
      const dummy: Container = { item: null, parent: null, children: [] };
      out[place.get(old)!] = dummy;
      link(dummy, old);
      link(dummy, c);
      subjects.set(s, dummy);
    }
  }
  return out.filter((c) => !drop.has(c));
}

/** §4 step 6: every set of siblings sorted, deepest first (a placeholder sorts by its first child once sorted). */
function sortTree(roots: Container[]): void {
  for (const c of descendantsFirst(roots)) sortSiblings(c.children);
  sortSiblings(roots);
}

/** The containers as ThreadNodes, built from an explicit stack (see `descendantsFirst`). */
function toNodes(roots: readonly Container[]): ThreadNode[] {
  const out: ThreadNode[] = [];
  const stack: { c: Container; into: ThreadNode[] }[] = [];
  for (let i = roots.length - 1; i >= 0; i--) stack.push({ c: roots[i]!, into: out });
  for (let top = stack.pop(); top !== undefined; top = stack.pop()) {
    const children: ThreadNode[] = [];
    top.into.push({ id: top.c.item?.id ?? null, children });
    for (let i = top.c.children.length - 1; i >= 0; i--) stack.push({ c: top.c.children[i]!, into: children });
  }
  return out;
}

/**
 * The THREAD response line (without CRLF): `* THREAD (1 2)(3 (4)(5))`; `* THREAD` when there is no message.
 * §5 `thread-list`: a node's single child follows it in the same list (`thread-members`), several children are
 * each a parenthesized list (`thread-nested`). Written from an explicit stack: a thread nests as deep as its
 * branches, and the answer stays complete however deep that is.
 */
export function threadResponse(threads: readonly ThreadNode[]): string {
  const out: string[] = ["* THREAD"];
  if (threads.length > 0) out.push(" ");
  // Strings are written as they are, nodes as their members.
  const stack: (string | ThreadNode)[] = [];
  for (let i = threads.length - 1; i >= 0; i--) stack.push(")", threads[i]!, "(");
  for (let top = stack.pop(); top !== undefined; top = stack.pop()) {
    if (typeof top === "string") {
      out.push(top);
      continue;
    }
    const n = top.children.length;
    if (top.id !== null) out.push(n > 0 ? `${top.id} ` : String(top.id));
    if (n === 1) stack.push(top.children[0]!);
    else for (let i = n - 1; i >= 0; i--) stack.push(")", top.children[i]!, "(");
  }
  return out.join("");
}
