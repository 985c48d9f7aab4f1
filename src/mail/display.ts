/**
 * Text from a message, as a person or a model is shown it: in the approvers' notices (src/approvals/notify.ts), on
 * the terminal of `mailgator approvals` (docs/approvals.md "What approvers see") and in the MCP server's results
 * (docs/mcp.md). The sender chooses the subject, the text and the attachment names; none of it may move the cursor,
 * rewrite or hide a line, or reorder what the reader sees.
 */

/**
 * Characters never shown as they are: C0 controls but TAB (ESC, CR and LF among them), DEL, C1 (CSI among them),
 * the Unicode line and paragraph separators, and the bidirectional marks (ALM, LRM, RLM), embeddings, overrides and
 * isolates, which reorder what a reader sees (a link or an address could read as another).
 */
const UNSAFE_WITHOUT_C0 = "\\x7f-\\x9f\\u061c\\u200e\\u200f\\u2028\\u2029\\u202a-\\u202e\\u2066-\\u2069";
const UNSAFE = new RegExp(`[\\x00-\\x08\\x0a-\\x1f${UNSAFE_WITHOUT_C0}]`, "g");
const UNSAFE_RUNS = new RegExp(`[\\x00-\\x08\\x0a-\\x1f${UNSAFE_WITHOUT_C0}]+`, "g");

/**
 * The same characters but C0: JSON.stringify already writes C0 controls as escapes, and its indentation is made of
 * the only C0 characters it leaves as they are (LF, and spaces), between tokens.
 */
const UNSAFE_IN_JSON = new RegExp(`[${UNSAFE_WITHOUT_C0}]`, "g");

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
 * JSON for a terminal: JSON.stringify's output with the unsafe characters it leaves as they are written as `\uXXXX`
 * escapes (RFC 8259 §7), so a JSON reader gets the same values and a terminal shows none of them as it is.
 */
export function terminalJson(value: unknown, space?: number): string {
  return JSON.stringify(value, null, space).replace(
    UNSAFE_IN_JSON,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}
