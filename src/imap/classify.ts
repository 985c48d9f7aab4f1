/**
 * Per-message visibility (hidden messages do not exist for the agent: docs/config.md "Operations",
 * docs/protocol.md §3, docs/filtering.md): which UIDs of a folder an agent may read, decided by the rule engine from
 * each message's headers, fetched from upstream with UID commands in chunks.
 *
 * - `messageFilter` compiles what a folder needs for one agent: the header fields the rules test
 *   (`Policy.messageDependence`), whether BODYSTRUCTURE is needed (`has_attachment`), and a fingerprint of the
 *   rules that decide, for the cache. Null when the folder alone decides (no per-message filtering).
 * - `classifyUids` fetches `UID FETCH a:b (UID BODY.PEEK[HEADER.FIELDS (...)] [BODYSTRUCTURE])` chunk by chunk and
 *   keeps only the visible UIDs; each response is parsed and dropped as it arrives, never held.
 * - `classifyMailbox` adds the cache: only UIDs above the highest cached one are fetched.
 * - Hidden UIDs are kept too, each with the slot of the rule that hid it (`MessageFilter.rules`), so that a UID
 *   command naming them can be audited with that rule (docs/filtering.md "Probes").
 *
 * Fail closed: a header that cannot be read is an unknown field, which the engine denies; a message upstream does
 * not return is not visible; a failed FETCH throws (the caller refuses the SELECT), never "assume visible".
 */

import { createHash } from "node:crypto";
import { isAttachmentEntity, type MimeEntity, parseHeaderFields, readMessageFields } from "../mail/index.ts";
import type { Decision, MessageField, Operation, Policy } from "../policy/index.ts";
import type { CacheKey, ClassificationCache } from "./cache.ts";
import {
  CLASSIFY_CHUNK,
  CLASSIFY_HEADER_OCTETS,
  CLASSIFY_PARALLEL_MIN,
  MAX_STRUCTURE_DEPTH,
  MEMO_BYTES,
  MEMO_ENTRIES,
  MEMO_KEY_OCTETS,
} from "./limits.ts";
import type { StatusResponse, UpstreamCommand } from "./upstream.ts";
import { NO_HIDING_RULE, VisibleSet } from "./view.ts";
import type { FetchItem, Response, Value } from "./wire/index.ts";

/** Part of every fingerprint: a change in how messages are read invalidates cached classifications. */
export const CLASSIFIER_VERSION = 8;

const HEADER_NAMES: Readonly<Record<Exclude<MessageField, "hasAttachment">, string>> = {
  from: "FROM",
  to: "TO",
  cc: "CC",
  bcc: "BCC",
  subject: "SUBJECT",
};

/** What one message offers the rules; fields not fetched are undefined. */
export interface MessageFacts {
  readonly from?: readonly string[] | undefined;
  readonly to?: readonly string[] | undefined;
  readonly cc?: readonly string[] | undefined;
  readonly bcc?: readonly string[] | undefined;
  readonly subject?: string | undefined;
  readonly hasAttachment?: boolean | undefined;
}

export interface MessageFilter {
  readonly operation: Operation;
  /** Policy folder name (`/`-separated). */
  readonly folder: string;
  readonly agent: string | null;
  /** The message fields the decision depends on (never empty). */
  readonly needs: ReadonlySet<MessageField>;
  /** Upper-cased header names to fetch (`FROM`, `TO`, ...), possibly empty when only has_attachment matters. */
  readonly headerFields: readonly string[];
  readonly bodyStructure: boolean;
  /** sha256 (hex) over the rules that can decide here, the operation and CLASSIFIER_VERSION. */
  readonly fingerprint: string;
  /** The FETCH items that read what `needs` asks for (UID first). */
  readonly fetchItems: readonly FetchItem[];
  /**
   * The rules that can decide here, in order (those the fingerprint covers). A hidden message's rule is kept as
   * its slot in this list, which the fingerprint keeps stable while the cache holds it (a rule inserted elsewhere
   * shifts rule indices, never slots).
   */
  readonly rules: readonly { readonly name: string; readonly index: number }[];
  /** The slot in `rules` of the rule that made a decision; NO_HIDING_RULE when no rule decided (default deny). */
  slotOf(d: Decision): number;
  /** Decides one message from what its FETCH returned. */
  decideFetched(header: Uint8Array | null | undefined, structure: Value | null | undefined): Decision;
  /** Decides one message from facts (unknown fields deny when the decision depends on them). */
  decide(facts: MessageFacts): Decision;
}

/**
 * The filter for `operation` (default mail:read: visibility) in `folder` for `agent`, or null when the folder
 * alone decides it (every message alike: the session uses the folder decision).
 */
export function messageFilter(
  policy: Policy,
  folder: string,
  agent: string | null,
  operation: Operation = "mail:read",
): MessageFilter | null {
  const depends = policy.messageDependence(operation, folder, agent);
  const needs = new Set<MessageField>();
  for (const f of depends) if (f !== "folder" && f !== "agent") needs.add(f);
  if (needs.size === 0) return null;
  const headerFields: string[] = [];
  for (const f of ["from", "to", "cc", "bcc", "subject"] as const) if (needs.has(f)) headerFields.push(HEADER_NAMES[f]);
  const bodyStructure = needs.has("hasAttachment");
  const fetchItems: FetchItem[] = [{ type: "UID" }];
  if (headerFields.length > 0) {
    fetchItems.push({
      type: "BODY[]",
      peek: true,
      section: { part: [], text: "HEADER.FIELDS", fields: headerFields },
      // One octet more than is read, to tell a section cut at the limit (`readable`).
      partial: { offset: 0, count: CLASSIFY_HEADER_OCTETS + 1 },
    });
  }
  if (bodyStructure) fetchItems.push({ type: "BODYSTRUCTURE" });
  const decide = (facts: MessageFacts): Decision => policy.evaluate({ operation, folder, agent, ...facts });
  const rules = policy.candidateRules(operation, folder, agent).map((r) => ({ name: r.name, index: r.index }));
  const slots = new Map(rules.map((r, slot) => [r.index, slot]));
  const memo = new Map<string, Decision>();
  let memoBytes = 0;
  // A section not returned, or longer than CLASSIFY_HEADER_OCTETS, is not read: its fields are unknown (denies).
  const readable = (header: Uint8Array | null | undefined): header is Uint8Array =>
    header != null && header.length <= CLASSIFY_HEADER_OCTETS;
  const fromHeader = (header: Uint8Array | null | undefined): Decision => {
    if (!readable(header)) return decide({});
    if (header.length > MEMO_KEY_OCTETS) return decide(readMessageFields(parseHeaderFields(header)));
    const key = latin1.decode(header);
    let d = memo.get(key);
    if (d === undefined) {
      d = decide(readMessageFields(parseHeaderFields(header)));
      if (memo.size >= MEMO_ENTRIES || memoBytes + key.length > MEMO_BYTES) {
        memo.clear();
        memoBytes = 0;
      }
      memo.set(key, d);
      memoBytes += key.length;
    }
    return d;
  };
  return {
    operation,
    folder,
    agent,
    needs,
    headerFields,
    bodyStructure,
    fingerprint: rulesFingerprint(policy, folder, agent, operation),
    fetchItems,
    rules,
    slotOf: (d) => (d.ruleIndex === null ? NO_HIDING_RULE : (slots.get(d.ruleIndex) ?? NO_HIDING_RULE)),
    decide,
    decideFetched(header, structure) {
      if (!bodyStructure) return fromHeader(header);
      let facts: MessageFacts = {};
      if (headerFields.length > 0) facts = readable(header) ? readMessageFields(parseHeaderFields(header)) : {};
      if (bodyStructure) facts = { ...facts, hasAttachment: structure == null ? undefined : hasAttachment(structure) };
      return decide(facts);
    },
  };
}

/**
 * A fingerprint of the rules that can decide `operation` in `folder` for `agent`, in order, up to the first one
 * without message conditions (nothing after it can decide). Names are left out: renaming a rule changes no
 * visibility. Any other change to those rules, or a new rule among them, gives a new fingerprint.
 */
export function rulesFingerprint(policy: Policy, folder: string, agent: string | null, operation: Operation): string {
  const relevant = policy.candidateRules(operation, folder, agent).map((rule) => {
    const src = (list: readonly { source: string }[] | null) =>
      list === null ? null : list.map((g) => g.source.toLowerCase());
    const conditions = {
      from: src(rule.from),
      to: src(rule.to),
      cc: src(rule.cc),
      bcc: src(rule.bcc),
      subject: src(rule.subject),
      hasAttachment: rule.hasAttachment,
    };
    return { action: rule.action, ...conditions };
  });
  const text = JSON.stringify({ v: CLASSIFIER_VERSION, operation, rules: relevant });
  return createHash("sha256").update(text).digest("hex");
}

// ---- BODYSTRUCTURE → has_attachment (RFC 3501 §7.4.2; the definition is src/mail/attachment.ts) -------------

const latin1 = new TextDecoder("latin1");

function str(v: Value | undefined): string | null {
  if (v === undefined) return null;
  if (v.type === "string") return latin1.decode(v.value).toLowerCase();
  if (v.type === "atom") return v.value.toLowerCase();
  if (v.type === "nil") return "";
  return null;
}

/** `body-fld-param`: ("name" "value" ...) or NIL; null when malformed. */
function params(v: Value | undefined): Map<string, string> | null {
  const out = new Map<string, string>();
  if (v === undefined || v.type === "nil") return out;
  if (v.type !== "list" || v.value.length % 2 !== 0) return null;
  for (let i = 0; i < v.value.length; i += 2) {
    const name = str(v.value[i]);
    const value = str(v.value[i + 1]);
    if (name === null || value === null) return null;
    if (!out.has(name)) out.set(name, value);
  }
  return out;
}

/**
 * Whether a multipart's `body-fld-param` names its boundary once, plainly: no `boundary*` (RFC 2231, which Dovecot
 * passes on without splitting on it) and not `boundary` twice. Absent or NIL is fine; a list that is no parameter
 * list is not.
 */
function singleBoundary(v: Value | undefined): boolean {
  if (v === undefined || v.type === "nil") return true;
  if (v.type !== "list") return false;
  let plain = 0;
  for (let i = 0; i < v.value.length; i += 2) {
    const name = str(v.value[i]);
    if (name === null || name.startsWith("boundary*")) return false;
    if (name === "boundary") plain++;
  }
  return plain <= 1;
}

/** `body-fld-dsp`: ("attachment" ("filename" "x")) or NIL. */
function disposition(v: Value | undefined): { type: string; params: Map<string, string> } | null {
  if (v === undefined || v.type === "nil") return { type: "", params: new Map() };
  if (v.type !== "list" || v.value.length < 1) return null;
  const type = str(v.value[0]);
  const p = params(v.value[1]);
  return type === null || p === null ? null : { type, params: p };
}

/** true / false, or undefined when the structure cannot be read. */
export function hasAttachment(structure: Value, depth = 0): boolean | undefined {
  if (structure.type !== "list" || depth > MAX_STRUCTURE_DEPTH) return undefined;
  const items = structure.value;
  if (items.length === 0) return undefined;
  if (items[0]!.type === "list") {
    // body-type-mpart: 1*body SP media-subtype [SP body-ext-mpart]; only its parts count. Its parameters come
    // first (body-ext-mpart): a boundary given in an RFC 2231 form too (`boundary*`, or `boundary` twice where
    // Dovecot joined `boundary*0` beside a plain one) is one Dovecot split on and another reader would not
    // (src/mail/boundary.ts `boundaryParameter`): the parts below are one reading of several.
    const subtype = items.findIndex((item) => item.type !== "list");
    if (subtype !== -1 && !singleBoundary(items[subtype + 1])) return undefined;
    let unknown = false;
    for (const part of items) {
      if (part.type !== "list") break;
      const a = hasAttachment(part, depth + 1);
      if (a === true) return true;
      if (a === undefined) unknown = true;
    }
    return unknown ? undefined : false;
  }
  // body-type-1part: type subtype params id description encoding size ...
  const type = str(items[0]);
  const subtype = str(items[1]);
  const typeParams = params(items[2]);
  if (type === null || subtype === null || typeParams === null) return undefined;
  // The extension data after the fixed fields: text/* has `lines` (index 7), message/rfc822 has envelope, body and
  // lines (7..9); then md5 and the disposition.
  const fixed = type === "text" ? 8 : type === "message" && subtype === "rfc822" ? 10 : 7;
  const dsp = disposition(items[fixed + 1]);
  if (dsp === null) return type === "text" ? undefined : true;
  const entity: MimeEntity = {
    type: `${type}/${subtype}`,
    typeParams,
    disposition: dsp.type,
    dispositionParams: dsp.params,
  };
  return isAttachmentEntity(entity);
}

// ---- fetching -------------------------------------------------------------------------------------------

/** How classification reaches upstream: `UpstreamSession.run`, or the session's `upstreamRun` (which models). */
export interface UpstreamRunner {
  run(command: UpstreamCommand, onData: (r: Response) => void): Promise<StatusResponse>;
}

/** Counters, for tests and the benchmark. */
export interface ClassifyStats {
  /** UID FETCH commands sent. */
  commands: number;
  /** FETCH responses classified, in commands that ended OK. */
  messages: number;
}

export class ClassifyError extends Error {
  override name = "ClassifyError";
}

/**
 * A second upstream session lent for one large classification (`CLASSIFY_PARALLEL_MIN`): `lend(use)` opens the
 * same folder there (read-only, same UIDVALIDITY), calls `use` with it at most once (a second call does nothing),
 * and closes the folder again. It may resolve without calling `use` (no session to lend, another UIDVALIDITY); it
 * may reject. Either way the classification goes on over the first session alone: a helper can only speed it up,
 * never make it fail.
 */
export type ClassifyHelper = (use: (runner: UpstreamRunner) => Promise<void>) => Promise<void>;

/**
 * The visible UIDs among `uids` (ascending), fetched in chunks of `chunk` UIDs. Each chunk is one
 * `UID FETCH first:last`, which may return messages between the asked UIDs: those are ignored. A UID upstream
 * does not answer for (expunged meanwhile) is not visible.
 *
 * With a `helper`, both sessions take the next chunk from one queue as they finish their last one. A chunk counts
 * only when its FETCH ended OK; a chunk the helper could not finish goes back to the queue for the first session,
 * which alone decides success: its failure throws, the helper's never does.
 */
export async function classifyUids(
  runner: UpstreamRunner,
  filter: MessageFilter,
  uids: ArrayLike<number>,
  stats?: ClassifyStats,
  chunk = CLASSIFY_CHUNK,
  helper?: ClassifyHelper,
): Promise<Uint32Array> {
  return (await classifyVerdicts(runner, filter, uids, stats, chunk, helper)).visible;
}

/** What `classifyVerdicts` found: the visible UIDs, and the hidden ones with the slot of the rule that hid each. */
export interface Verdicts {
  readonly visible: Uint32Array;
  readonly hidden: { readonly uids: Uint32Array; readonly slots: Uint16Array };
}

/**
 * `classifyUids`, also returning the hidden UIDs upstream answered for, each with the slot (`MessageFilter.rules`)
 * of the rule that hid it. A UID upstream did not answer for is in neither list: it does not exist.
 */
export async function classifyVerdicts(
  runner: UpstreamRunner,
  filter: MessageFilter,
  uids: ArrayLike<number>,
  stats?: ClassifyStats,
  chunk = CLASSIFY_CHUNK,
  helper?: ClassifyHelper,
): Promise<Verdicts> {
  // 0 not yet known, 1 visible, 2 + slot hidden by that rule (NO_HIDING_RULE when none); a chunk's entries are
  // final once its FETCH ended OK.
  const verdict = new Uint32Array(uids.length);
  const chunks = Math.ceil(uids.length / chunk);
  const returned: number[] = [];
  let next = 0;
  let stopped = false;
  const take = (): number | undefined => returned.pop() ?? (next < chunks ? next++ : undefined);
  const wantsHeader = filter.headerFields.length > 0;
  const wantsStructure = filter.bodyStructure;
  const fetchChunk = async (r: UpstreamRunner, c: number): Promise<StatusResponse> => {
    const start = c * chunk;
    const end = Math.min(start + chunk, uids.length);
    const lo = uids[start]!;
    const hi = uids[end - 1]!;
    let answered = 0;
    // A message whose items came in part so far: a server may send one message's items in several FETCH responses
    // (RFC 9051 §7.5.2), and a response without any of them (another session's flag change, which a server may send
    // with the UID) is no answer at all: neither may decide in place of the data.
    const partial = new Map<number, { header: Uint8Array | null | undefined; structure: Value | undefined }>();
    const decided = new Set<number>();
    const decideAt = (i: number, header: Uint8Array | null | undefined, structure: Value | undefined): void => {
      answered++;
      const d = filter.decideFetched(header, structure);
      verdict[i] = d.action === "allow" ? 1 : 2 + filter.slotOf(d);
    };
    if (stats) stats.commands++;
    const status = await r
      .run(
        { name: "FETCH", uid: true, set: [{ start: lo, stop: hi }], items: filter.fetchItems, macro: null },
        (resp) => {
          if (resp.type !== "FETCH") return;
          let uid = 0;
          let header: Uint8Array | null | undefined;
          let structure: Value | undefined;
          // Only the items asked for: another (a BODYSTRUCTURE nobody asked for) is no part of the answer.
          for (const a of resp.attrs) {
            if (a.name === "UID") uid = a.value;
            else if (wantsHeader && a.name === "BODY[]" && a.section.text === "HEADER.FIELDS") header = a.data;
            else if (wantsStructure && a.name === "BODYSTRUCTURE") structure = a.value;
          }
          if (uid < lo || uid > hi || (header === undefined && structure === undefined)) return;
          const i = indexOf(uids, uid, start, end);
          // A message is decided once, on its first whole answer: a second answer is no reason to decide again.
          if (i === -1 || decided.has(i)) return;
          const before = partial.get(i);
          if (before !== undefined) {
            if (header === undefined) header = before.header;
            if (structure === undefined) structure = before.structure;
          }
          if ((wantsHeader && header === undefined) || (wantsStructure && structure === undefined)) {
            partial.set(i, { header, structure });
            return;
          }
          partial.delete(i);
          decided.add(i);
          decideAt(i, header, structure);
        },
      )
      .catch((error: unknown) => {
        verdict.fill(0, start, end);
        throw error;
      });
    // What never came whole is decided on what came: an item missing is unknown, which denies (decideFetched).
    for (const [i, got] of partial) decideAt(i, got.header, got.structure);
    if (status.status !== "OK") verdict.fill(0, start, end);
    else if (stats) stats.messages += answered;
    return status;
  };

  // The helper's chunk in flight: the first session waits for it before concluding that the queue is empty.
  let helping: Promise<void> | null = null;
  if (helper !== undefined && chunks > 1) {
    let lentOnce = false;
    const lent = helper(async (r) => {
      // One helper at a time: the queue has one `helping` slot.
      if (lentOnce) return;
      lentOnce = true;
      for (let c = take(); c !== undefined && !stopped; c = take()) {
        let finished!: () => void;
        helping = new Promise<void>((resolve) => (finished = resolve));
        try {
          const status = await fetchChunk(r, c).catch(() => null);
          if (status?.status !== "OK") {
            returned.push(c);
            return;
          }
        } finally {
          helping = null;
          finished();
        }
      }
    });
    lent.catch(() => {});
  }
  try {
    for (;;) {
      const c = take();
      if (c === undefined) {
        const waiting: Promise<void> | null = helping;
        if (waiting === null) break;
        await waiting;
        continue;
      }
      const status = await fetchChunk(runner, c);
      if (status.status !== "OK")
        throw new ClassifyError(`imap: classifying ${filter.folder}: UID FETCH failed upstream: ${status.text}`);
    }
  } finally {
    stopped = true;
  }
  const out = new Uint32Array(uids.length);
  const hidden = new Uint32Array(uids.length);
  const slots = new Uint16Array(uids.length);
  let visibleCount = 0;
  let hiddenCount = 0;
  for (let i = 0; i < verdict.length; i++) {
    const v = verdict[i]!;
    if (v === 1) out[visibleCount++] = uids[i]!;
    else if (v >= 2) {
      slots[hiddenCount] = Math.min(v - 2, NO_HIDING_RULE);
      hidden[hiddenCount++] = uids[i]!;
    }
  }
  return {
    visible: out.slice(0, visibleCount),
    hidden: { uids: hidden.slice(0, hiddenCount), slots: slots.slice(0, hiddenCount) },
  };
}

function indexOf(uids: ArrayLike<number>, uid: number, lo: number, end: number): number {
  let hi = end - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const v = uids[mid]!;
    if (v === uid) return mid;
    if (v < uid) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

export interface MailboxClassification {
  readonly visible: VisibleSet;
  /** UIDs classified by fetching (the rest came from the cache). */
  readonly fetched: number;
  readonly fromCache: boolean;
}

export interface ClassifyMailboxOptions {
  readonly runner: UpstreamRunner;
  readonly filter: MessageFilter;
  /** Every UID in the folder, ascending (`UID SEARCH ALL` after SELECT/EXAMINE). */
  readonly uids: ArrayLike<number>;
  readonly uidValidity: number;
  readonly cache: ClassificationCache | null;
  /** Upstream server and user (`host:port/user`), and the folder's upstream name. */
  readonly account: string;
  readonly mailbox: string;
  readonly stats?: ClassifyStats;
  readonly chunk?: number;
  /** A second session for the fetch when at least `CLASSIFY_PARALLEL_MIN` UIDs are to be classified. */
  readonly helper?: ClassifyHelper;
}

export function cacheKey(account: string, mailbox: string, filter: MessageFilter): CacheKey {
  return { account, folder: mailbox, fingerprint: filter.fingerprint };
}

/**
 * Classifies a just-selected folder: what the cache holds for this UIDVALIDITY and these rules, less what was
 * expunged since, plus a fetch of every UID above the highest cached one. The result is stored back.
 */
export async function classifyMailbox(o: ClassifyMailboxOptions): Promise<MailboxClassification> {
  const key = cacheKey(o.account, o.mailbox, o.filter);
  const cached = o.cache?.get(key, o.uidValidity) ?? null;
  const visible =
    cached === null
      ? new VisibleSet()
      : new VisibleSet(cached.visible, cached.classifiedThrough, cached.highestVisible, cached.hidden);
  const before = visible.size;
  if (cached !== null) visible.retain(o.uids);
  const pruned = visible.size !== before;
  const from = firstAbove(o.uids, visible.classifiedThrough);
  const rest = Array.prototype.slice.call(o.uids, from) as number[];
  if (rest.length > 0) {
    const helper = rest.length >= CLASSIFY_PARALLEL_MIN ? o.helper : undefined;
    const found = await classifyVerdicts(o.runner, o.filter, rest, o.stats, o.chunk, helper);
    visible.extend(found.visible, rest[rest.length - 1]!, found.hidden);
  }
  if (o.cache !== null && (cached === null || rest.length > 0 || pruned))
    saveVisibility(o.cache, key, o.uidValidity, visible);
  return { visible, fetched: rest.length, fromCache: cached !== null };
}

/** Classifies the arrivals of a selected folder (`box.unclassified()`) into its VisibleSet. */
export async function classifyArrivals(
  runner: UpstreamRunner,
  filter: MessageFilter,
  visible: VisibleSet,
  uids: readonly number[],
  stats?: ClassifyStats,
): Promise<void> {
  if (uids.length === 0) return;
  const found = await classifyVerdicts(runner, filter, uids, stats);
  visible.extend(found.visible, uids[uids.length - 1]!, found.hidden);
}

/** Stores a VisibleSet (e.g. after arrivals were classified, or when the folder is closed). */
export function saveVisibility(
  cache: ClassificationCache,
  key: CacheKey,
  uidValidity: number,
  visible: VisibleSet,
): boolean {
  return cache.put(key, {
    uidValidity,
    classifiedThrough: visible.classifiedThrough,
    highestVisible: visible.highestEver,
    visible: visible.uids(),
    hidden: visible.hidden(),
  });
}

function firstAbove(uids: ArrayLike<number>, uid: number): number {
  let lo = 0;
  let hi = uids.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (uids[mid]! <= uid) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
