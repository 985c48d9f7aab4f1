/**
 * CATENATE (RFC 4469): an APPEND message made of TEXT literals and URLs of messages or parts of messages. The proxy
 * assembles it itself and sends upstream a plain APPEND of the result: upstream never resolves a URL, so it can
 * never copy a hidden message's content into a new one (docs/protocol.md §2 "CATENATE").
 *
 * A URL is resolved only against the selected folder, over the agent's view: the proxy holds the view of that
 * folder alone. It must name it (its `;UIDVALIDITY=`, if given, the folder's), a message the agent was shown, in a
 * folder whose mail the agent may read (mail:read); anything else is `NO [BADURL url]` (§5), the same for a hidden
 * message as for one that never existed. Each part is fetched with BODY.PEEK (reading sets no `\Seen`), counted by
 * reads_per_minute (docs/quotas.md) and audited as one mail:read row for the command; the message, and the command,
 * may not grow past the sizes an APPEND literal may have (`NO [TOOBIG]`).
 */

import type { Decision } from "../../policy/index.ts";
import { type MessageUrl, parseMessageUrl } from "../ext/imap-url.ts";
import { MAX_APPEND_MESSAGE, MAX_COMMAND_BYTES } from "../limits.ts";
import { Refusal } from "../refusal.ts";
import { type AppendMessage, appendMessageSize, type Response } from "../wire/index.ts";
import { type CommandOf, cites, type Session } from "./context.ts";
import { auditProbe, chargeReads, forwardUntagged, TRYCREATE } from "./shared.ts";

/** A URL the agent gave, and why it cannot be used (for the audit row), or what it names. */
type Resolved = { readonly url: string; readonly bad: string } | { readonly url: string; readonly target: MessageUrl };

/**
 * The command's messages with every CATENATE message assembled (the others as they are). `folder` is the APPEND's
 * destination (policy name), already checked visible and writable.
 */
export async function assembleCatenate(s: Session, cmd: CommandOf<"APPEND">, folder: string): Promise<AppendMessage[]> {
  const urls: Resolved[] = [];
  const named: number[] = [];
  // One decision for every URL: they are all resolved in the selected folder.
  const read = s.box === null ? null : s.decide("mail:read", s.box.policyName);
  for (const m of cmd.messages)
    for (const p of m.catenate ?? []) if (p.type === "URL") urls.push(resolve(s, p.url, read, named));
  // The UIDs the URLs name in the selected folder, hidden ones among them: a probe's row (docs/filtering.md
  // "Probes"), written before the command's own, the reply unchanged.
  if (named.length > 0)
    auditProbe(
      s,
      "APPEND",
      "mail:read",
      named.map((uid) => ({ start: uid, stop: uid })),
    );
  const bad = urls.find((u) => "bad" in u);
  if (bad !== undefined && "bad" in bad) return refuseUrl(s, cmd.mailbox, folder, bad.url, bad.bad);
  const box = s.box;
  if (urls.length > 0 && box !== null && read !== null) {
    chargeReads(s, "APPEND", box.policyName, urls.length, "nothing was appended");
    s.auditRow({
      command: "APPEND",
      operation: "mail:read",
      folder: box.policyName,
      target: `CATENATE: ${urls.length} URL part${urls.length === 1 ? "" : "s"}`,
      decision: "allow",
      ...cites(read),
      reason: `${read.reason}; parts fetched with PEEK`,
      count: urls.length,
    });
  }
  // The command's own octets, wherever they stand (literal messages, TEXT parts, before or after a URL): the parts
  // fetched have what MAX_COMMAND_BYTES leaves of them, so that the command holds no more than its literals could.
  let literalBytes = 0;
  for (const m of cmd.messages) literalBytes += appendMessageSize(m);
  let next = 0;
  let fetchedBytes = 0;
  const out: AppendMessage[] = [];
  for (const m of cmd.messages) {
    if (m.catenate === null) {
      out.push(m);
      continue;
    }
    const pieces: Uint8Array[] = [];
    let size = 0;
    for (const part of m.catenate) {
      let data: Uint8Array;
      let room = MAX_APPEND_MESSAGE - size;
      if (part.type === "TEXT") {
        data = part.data;
      } else {
        room = Math.max(0, Math.min(room, MAX_COMMAND_BYTES - literalBytes - fetchedBytes));
        const u = urls[next++] as { url: string; target: MessageUrl };
        const fetched = await fetchPart(s, u.target, room);
        if (typeof fetched === "string") return refuseUrl(s, cmd.mailbox, folder, u.url, fetched);
        data = fetched;
        fetchedBytes += data.length;
      }
      if (data.length > room) return tooBig(s, folder);
      pieces.push(data);
      size += data.length;
    }
    // Kept as the pieces they are: the encoder writes them as one literal without joining them (a second copy).
    out.push({ ...m, catenate: pieces.map((data) => ({ type: "TEXT", data })) });
  }
  return out;
}

/**
 * Checks a URL against the selected folder and the agent's view of it (no I/O), `read` being the folder's mail:read
 * decision; adds the UID to `named` when the URL names the selected folder (and its UIDVALIDITY, if given).
 */
function resolve(s: Session, url: string, read: Decision | null, named: number[]): Resolved {
  const target = parseMessageUrl(url);
  if (target === null) return { url, bad: "not a server-relative IMAP URL of a message the proxy resolves" };
  const box = s.box;
  if (box === null) return { url, bad: "no folder is selected (a URL is resolved in the selected folder only)" };
  // The URL's mailbox is UTF-8 once unescaped (RFC 5092 §3.3), the selected folder's name already decoded from
  // modified UTF-7 (RFC 3501 §5.1.3): both Unicode, and INBOX's level in any ASCII case (`FolderNames.same`).
  if (!s.names.same(target.mailbox, box.name))
    return { url, bad: "names a folder other than the selected one (a URL is resolved there only)" };
  if (target.uidValidity !== null && target.uidValidity !== box.uidValidity)
    return { url, bad: "its UIDVALIDITY is not the folder's" };
  named.push(target.uid);
  if (read?.action !== "allow") return { url, bad: `mail:read denied: ${read?.reason ?? "no decision"}` };
  if (box.agentSeqOf(target.uid) === 0) return { url, bad: "names no message of the agent's view (hidden or none)" };
  return { url, target };
}

/**
 * The octets a URL names: `UID FETCH uid (BODY.PEEK[section]<offset.count>)`, asking for at most `room + 1` octets
 * so that a part past the room is known without reading it all. A string says why there is none: upstream refused
 * the fetch, the message is gone, or the part does not exist (NIL).
 */
async function fetchPart(s: Session, url: MessageUrl, room: number): Promise<Uint8Array | string> {
  const want = room + 1;
  const offset = url.partial?.offset ?? 0;
  const count = url.partial?.length == null ? want : Math.min(url.partial.length, want);
  let data: Uint8Array | null = null;
  let found = false;
  const onData = (r: Response) => {
    if (r.type === "FETCH" && !found && r.attrs.some((a) => a.name === "UID" && a.value === url.uid)) {
      for (const a of r.attrs) {
        if (a.name === "BODY[]") {
          found = true;
          data = a.data;
        }
      }
    }
    // Another session's flag change, or the part's own report of one, relayed as during any FETCH.
    forwardUntagged(s, r);
  };
  const st = await s.upstreamRun(
    {
      name: "FETCH",
      uid: true,
      set: [{ start: url.uid, stop: url.uid }],
      items: [{ type: "BODY[]", peek: true, section: url.section, partial: { offset, count } }],
      macro: null,
    },
    onData,
  );
  if (st.status !== "OK") return `upstream refused the fetch: ${st.status} ${st.text}`;
  const got = data as Uint8Array | null;
  if (!found) return "the message is no longer there";
  if (got === null) return "the message has no such part";
  // A literal cannot carry NUL (RFC 3501 §4.3): the assembled message goes upstream as one.
  if (got.indexOf(0) !== -1) return "the part holds a NUL octet";
  return got;
}

/**
 * `NO [BADURL url]` (RFC 4469 §5) with a deny row, unless the destination does not exist: then `NO [TRYCREATE]`, as
 * for an APPEND of a literal (Dovecot answers so whatever the URLs; the upstream STATUS tells no agent anything).
 */
async function refuseUrl(s: Session, mailbox: string, folder: string, url: string, why: string): Promise<never> {
  const st = await s.upstreamRun({ name: "STATUS", mailbox, items: ["UIDNEXT"] }).catch(() => null);
  // As upstreamStatus reads it: Dovecot answers an absent name with a NO without a code.
  const code = st?.code?.known ? st.code.name : null;
  const missing = st?.status === "NO" && (st.code === null || code === "NONEXISTENT" || code === "TRYCREATE");
  s.auditRow({
    command: "APPEND",
    operation: "mail:read",
    folder: s.box?.policyName ?? null,
    target: url,
    decision: "deny",
    rule: null,
    ruleIndex: null,
    reason: `CATENATE URL refused: ${why}; nothing appended to ${folder}`,
  });
  if (missing) throw TRYCREATE;
  // The code's text is the URL itself (url-resp-text: no `]`); one the agent wrote with a `]` gets a NO without it.
  throw new Refusal("NO", url.includes("]") ? null : `BADURL ${url}`, "CATENATE URL cannot be used");
}

function tooBig(s: Session, folder: string): never {
  s.auditRow({
    command: "APPEND",
    operation: "mail:append",
    folder,
    target: null,
    decision: "deny",
    rule: null,
    ruleIndex: null,
    reason: `CATENATE message past ${MAX_APPEND_MESSAGE} octets, or the command past ${MAX_COMMAND_BYTES}`,
  });
  throw new Refusal("NO", "TOOBIG", "The CATENATE message is too large; nothing was appended");
}
