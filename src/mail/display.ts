/**
 * Text from a message, as a person or a model is shown it: in the approvers' notices (src/approvals/notify.ts), on
 * the terminal of `mailgator approvals` (docs/approvals.md "What approvers see") and in the MCP server's results
 * (docs/mcp.md). The sender chooses the subject, the text and the attachment names; none of it may move the cursor,
 * rewrite or hide a line, or reorder what the reader sees. The same holds for what an agent or an upstream server
 * puts in an audit row (docs/audit.md) and what an OAuth provider answers (docs/accounts.md).
 */

/**
 * Characters never shown as they are: C0 controls but TAB (ESC, CR and LF among them), DEL, C1 (CSI among them), the
 * Unicode line and paragraph separators, every format character (general category Cf: the bidirectional marks,
 * embeddings, overrides and isolates of UAX #9, which reorder what a reader sees so that a link or an address could
 * read as another; the zero-width space and joiners, which hide a difference; the tag characters, text no one sees),
 * and surrogates that are not half of a pair (no character at all: The Unicode Standard §3.9).
 */
const UNSAFE_WITHOUT_C0 = "\\x7f-\\x9f\\u2028\\u2029\\p{Cf}\\p{Cs}";
const UNSAFE = new RegExp(`[\\x00-\\x08\\x0a-\\x1f${UNSAFE_WITHOUT_C0}]`, "gu");
const UNSAFE_RUNS = new RegExp(`[\\x00-\\x08\\x0a-\\x1f${UNSAFE_WITHOUT_C0}]+`, "gu");
/** The same and TAB, for escapes(): a field on one line of a listing has no tab stops to keep. */
const UNSAFE_OR_TAB = new RegExp(`[\\x00-\\x1f${UNSAFE_WITHOUT_C0}]`, "gu");

/**
 * The same characters but C0: JSON.stringify already writes C0 controls and lone surrogates as escapes, and its
 * indentation is made of the only C0 characters it leaves as they are (LF, and spaces), between tokens.
 */
const UNSAFE_IN_JSON = new RegExp(`[${UNSAFE_WITHOUT_C0}]`, "gu");

/** `\uXXXX` for each UTF-16 code unit of `c` (two for a character beyond U+FFFF), as JSON writes it (RFC 8259 §7). */
function unicodeEscape(c: string): string {
  let out = "";
  for (let i = 0; i < c.length; i++) out += `\\u${c.charCodeAt(i).toString(16).padStart(4, "0")}`;
  return out;
}

/** Text made safe to show on one line, each unsafe character marked: it becomes U+FFFD. */
export function clean(text: string): string {
  return text.replace(UNSAFE, "\uFFFD");
}

/**
 * Text as shown on one line, each run of unsafe characters (line breaks among them) made one space: for a header an
 * encoded word decoded to several lines (RFC 2047 §5 allows any octet), or a file name with `%0D%0A` (RFC 2231).
 */
export function oneLine(text: string): string {
  return text.replace(UNSAFE_RUNS, " ");
}

/**
 * Text made safe to show on one line, each unsafe character or TAB written as its `\uXXXX` escape (`\u202e`,
 * `\u001b`): for the audit log and account status on a terminal (docs/audit.md), where a reader must see that a
 * character was there and which. Other text, backslashes included, is left as it is, so escaping twice changes
 * nothing more.
 */
export function escapes(text: string): string {
  return text.replace(UNSAFE_OR_TAB, unicodeEscape);
}

/**
 * JSON for a terminal: JSON.stringify's output with the unsafe characters it leaves as they are written as `\uXXXX`
 * escapes (RFC 8259 §7), so a JSON reader gets the same values and a terminal shows none of them as it is.
 */
export function terminalJson(value: unknown, space?: number): string {
  return JSON.stringify(value, null, space).replace(UNSAFE_IN_JSON, unicodeEscape);
}
