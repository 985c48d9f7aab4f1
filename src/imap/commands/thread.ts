/**
 * THREAD and UID THREAD (RFC 5256 §4: ORDEREDSUBJECT and REFERENCES; mail:read). Computed here, over the agent's
 * visible matches only, never asked of upstream: a hidden reply must neither link two visible messages nor change
 * the order of threads, and a hidden message's Message-ID is not there to fill a placeholder. Upstream searches
 * (`UID SEARCH` over the translated criteria), then the matches' Date, Subject, Message-ID, In-Reply-To and
 * References headers (their first THREAD_HEADER_OCTETS octets) and internal dates are fetched with `BODY.PEEK`
 * (docs/filtering.md).
 */

import { type ThreadMessage, ThreadTooLarge, thread, threadKeys, threadResponse } from "../ext/thread.ts";
import { THREAD_HEADER_OCTETS } from "../limits.ts";
import type { SelectedMailbox } from "../mailbox.ts";
import { Refusal } from "../refusal.ts";
import type { ImapDateTime, Response } from "../wire/index.ts";
import type { CommandOf, Session } from "./context.ts";
import { awaitSearchRow, sessionCriteria, visibleMatches } from "./search.ts";
import { forwardUntagged, messageCommandCode } from "./shared.ts";

/** The header fields RFC 5256 §2.2 and §4 read. */
const FIELDS = ["DATE", "SUBJECT", "MESSAGE-ID", "IN-REPLY-TO", "REFERENCES"] as const;

const utf8 = new TextDecoder("utf-8", { fatal: true });
const latin1 = new TextDecoder("latin1");

/** Header block bytes as text: UTF-8 when valid (RFC 6532), else each octet as one character. */
function headerText(bytes: Uint8Array): string {
  try {
    return utf8.decode(bytes);
  } catch {
    return latin1.decode(bytes);
  }
}

/** The first occurrence of each field (lower-cased name), unfolded (RFC 5322 §2.2.3), leading blanks removed. */
export function headerFields(raw: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of raw.replace(/\r?\n(?=[ \t])/g, "").split(/\r?\n/)) {
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    if (!out.has(name)) out.set(name, line.slice(colon + 1).replace(/^[ \t]+/, ""));
  }
  return out;
}

function epochMs(d: ImapDateTime): number {
  return Date.UTC(d.year, d.month - 1, d.day, d.hour, d.minute, d.second) - d.zone * 60_000;
}

/** The fetched data of one message, or null when the FETCH response is not one of ours (an unsolicited update). */
function threadData(r: Response & { type: "FETCH" }): { uid: number; data: Omit<ThreadMessage, "id"> } | null {
  let uid: number | null = null;
  let internalDate: number | null = null;
  let header: Uint8Array | null = null;
  for (const a of r.attrs) {
    if (a.name === "UID") uid = a.value;
    else if (a.name === "INTERNALDATE") internalDate = epochMs(a.date);
    else if (a.name === "BODY[]" && a.section.text === "HEADER.FIELDS") header = a.data ?? new Uint8Array(0);
  }
  if (uid === null || internalDate === null || header === null) return null;
  const h = headerFields(headerText(header));
  // Held for every match until the threads are built: only what threading reads (the base subject, the msg-ids it
  // links), derived now, not up to THREAD_HEADER_OCTETS of text per message.
  const fields = {
    subject: h.get("subject") ?? null,
    messageId: h.get("message-id") ?? null,
    inReplyTo: h.get("in-reply-to") ?? null,
    references: h.get("references") ?? null,
  };
  return {
    uid,
    data: {
      internalDate,
      date: h.get("date")?.slice(0, 256) ?? null,
      subject: null,
      messageId: null,
      inReplyTo: null,
      references: null,
      keys: threadKeys(fields),
    },
  };
}

export async function threadCommand(s: Session, cmd: CommandOf<"THREAD">): Promise<void> {
  const box: SelectedMailbox = s.box!;
  const p = box.policyName;
  const command = cmd.uid ? "UID THREAD" : "THREAD";
  const d = s.require(cmd.name, "mail:read", p);
  const { criteria, local } = sessionCriteria(s, command, cmd.criteria);
  // Written once upstream has answered (the search, then the headers), with the counts; by the session if an answer
  // never comes.
  const row = awaitSearchRow(s, command, p, d);
  const found: number[] = [];
  const st = await s.upstreamRun(
    { name: "SEARCH", uid: true, returnOptions: null, charset: cmd.charset, criteria },
    (r) => {
      if (r.type === "SEARCH") for (const n of r.numbers) found.push(n);
      else forwardUntagged(s, r);
    },
  );
  if (st.status !== "OK") {
    row.write({ reason: `${d.reason}; upstream: ${st.text}` });
    return s.taggedFrom(cmd.tag, st, messageCommandCode(st.code));
  }
  // Mailbox order is UID order.
  const uids = visibleMatches(box, found, local).sort((a, b) => a - b);
  const data = new Map<number, Omit<ThreadMessage, "id">>();
  const items = [
    { type: "UID" },
    { type: "INTERNALDATE" },
    {
      type: "BODY[]",
      peek: true,
      section: { part: [], text: "HEADER.FIELDS", fields: FIELDS },
      partial: { offset: 0, count: THREAD_HEADER_OCTETS },
    },
  ] as const;
  for (const set of uids.length > 0 ? box.upstreamSets(uids) : []) {
    const fst = await s.upstreamRun({ name: "FETCH", uid: true, set, items, macro: null }, (r) => {
      const got = r.type === "FETCH" ? threadData(r) : null;
      if (got !== null) data.set(got.uid, got.data);
      else forwardUntagged(s, r);
    });
    if (fst.status !== "OK") {
      row.write({ reason: `${d.reason}; upstream: ${fst.text}` });
      return s.taggedFrom(cmd.tag, fst, messageCommandCode(fst.code));
    }
  }
  // A message expunged meanwhile by another session has no data: it is left out, as if gone before the search.
  const messages: ThreadMessage[] = [];
  for (const uid of uids) {
    const m = data.get(uid);
    const seq = box.agentSeqOf(uid);
    if (m !== undefined && seq > 0) messages.push({ ...m, id: cmd.uid ? uid : seq });
  }
  let threads: ReturnType<typeof thread>;
  try {
    threads = thread(cmd.algorithm, messages);
  } catch (error) {
    if (!(error instanceof ThreadTooLarge)) throw error;
    row.write({ decision: "deny", reason: `${error.message} (MAX_THREAD_LINK_STEPS)` });
    throw new Refusal("NO", "LIMIT", "Too much to thread; narrow the search");
  }
  s.sendText(threadResponse(threads));
  const hiddenCount = box.visible === null ? null : found.filter((uid) => !box.isVisible(uid)).length;
  row.write({ count: messages.length, hiddenCount });
  await s.sync(cmd.uid);
  s.tagged(cmd.tag, "OK", null, "Thread completed");
}
