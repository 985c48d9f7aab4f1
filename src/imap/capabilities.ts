/**
 * What the proxy advertises to agents (docs/protocol.md §2): only what it implements itself. That section
 * gives the reason for each extension offered or not.
 */

/** Before login. LOGINDISABLED and STARTTLS are added by the session when the listener offers STARTTLS. */
export const PRE_AUTH_CAPABILITIES: readonly string[] = [
  "IMAP4rev1",
  "LITERAL+",
  "SASL-IR",
  "ID",
  "ENABLE",
  "IDLE",
  "AUTH=PLAIN",
];

/** After login. */
export const AUTH_CAPABILITIES: readonly string[] = [
  "IMAP4rev1",
  "LITERAL+",
  "ID",
  "ENABLE",
  "IDLE",
  "UIDPLUS",
  "MOVE",
  "UNSELECT",
  "SPECIAL-USE",
  "LIST-EXTENDED",
  "LIST-STATUS",
  "CHILDREN",
  "NAMESPACE",
  "WITHIN",
  "ESEARCH",
  "THREAD=ORDEREDSUBJECT",
  "THREAD=REFERENCES",
  "COMPRESS=DEFLATE",
  // Assembled by the proxy from the agent's view of the selected folder (src/imap/commands/catenate.ts).
  "CATENATE",
];

/**
 * After login, when upstream sorts (the proxy keeps the visible part of upstream's `UID SORT`, and computes ESORT's
 * RETURN items from it): SORT and ESORT, and SORT=DISPLAY (RFC 5957) when upstream has it too.
 */
export function sortCapabilities(upstream: ReadonlySet<string>): string[] {
  if (!upstream.has("SORT")) return [];
  return upstream.has("SORT=DISPLAY") ? ["SORT", "SORT=DISPLAY", "ESORT"] : ["SORT", "ESORT"];
}

/**
 * After login, offered only when upstream offers them too: the proxy relays them rather than implementing them
 * (docs/protocol.md §2). MULTIAPPEND's atomicity is upstream's (RFC 3502 §6.3.11); BINARY's decoding is upstream's
 * (RFC 3516), and its literal8 is accepted in APPEND only. CONDSTORE's mod-sequences are upstream's, relayed in
 * unfiltered folders only; a filtered folder answers `[NOMODSEQ]` (RFC 7162 §3.1.2.2, docs/protocol.md §2).
 */
export const RELAYED_CAPABILITIES: readonly string[] = ["MULTIAPPEND", "BINARY", "CONDSTORE"];

/** What an agent is offered after login, given the upstream session's capabilities. */
export function authCapabilities(upstream: ReadonlySet<string> | null): string[] {
  const caps = [...AUTH_CAPABILITIES];
  for (const c of RELAYED_CAPABILITIES) if (upstream?.has(c)) caps.push(c);
  caps.push(...sortCapabilities(upstream ?? new Set()));
  return caps;
}

/**
 * LIST attributes passed on (the CHILDREN ones are recomputed over visible folders). `\Marked` and `\UnMarked` are
 * not: they say whether mail arrived since the folder was last selected (RFC 3501 §7.2.2), hidden mail included, and
 * by the human's client too; a server MAY leave them out, so dropping them is always correct.
 */
export const LIST_ATTRIBUTES = new Set([
  "\\NOINFERIORS",
  "\\NOSELECT",
  "\\ALL",
  "\\ARCHIVE",
  "\\DRAFTS",
  "\\FLAGGED",
  "\\JUNK",
  "\\SENT",
  "\\TRASH",
]);

/** Response codes passed on from upstream; the others are dropped (docs/protocol.md §2 "Response codes"). */
export const PASSED_CODES = new Set([
  "ALERT",
  "PARSE",
  "READ-ONLY",
  "READ-WRITE",
  "TRYCREATE",
  "UIDNOTSTICKY",
  "TOOBIG",
  "UNAVAILABLE",
  "EXPIRED",
  "PRIVACYREQUIRED",
  "CONTACTADMIN",
  "NOPERM",
  "INUSE",
  "EXPUNGEISSUED",
  "CORRUPTION",
  "SERVERBUG",
  "CLIENTBUG",
  "CANNOT",
  "LIMIT",
  "OVERQUOTA",
  "ALREADYEXISTS",
  "NONEXISTENT",
  // UIDNEXT and UIDVALIDITY are not passed: they belong to SELECT's untagged data, which select.ts reads and writes
  // itself (a filtered folder's UIDNEXT is the proxy's own); in any other reply the agent would take them for the
  // selected folder's, and a filtered folder's real UIDNEXT counts its hidden messages.
  "APPENDUID",
  "COPYUID",
  "BADCHARSET",
  "CLOSED",
  // RFC 3516 §4.2: a BINARY section upstream cannot decode; the FETCH names visible messages only.
  "UNKNOWN-CTE",
]);
