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
 * every code point of the Unicode property Default_Ignorable_Code_Point (drawn as nothing, so that two texts that
 * differ look the same: the variation selectors, the Hangul fillers U+115F, U+1160, U+3164 and U+FFA0, the combining
 * grapheme joiner, U+180E, U+2065, and all of U+E0000–E0FFF, tag characters and supplementary variation
 * selectors), unassigned code points and noncharacters (general category Cn: no glyph anyone agreed on, and a
 * terminal may draw nothing), private-use characters (Co: a font may draw them as anything) and surrogates that are
 * not half of a pair (no character at all: The Unicode Standard §3.9).
 */
const UNSAFE_WITHOUT_C0 = "\\x7f-\\x9f\\u2028\\u2029\\p{Cf}\\p{Cs}\\p{Cn}\\p{Co}\\p{Default_Ignorable_Code_Point}";
const UNSAFE = new RegExp(`[\\x00-\\x08\\x0a-\\x1f${UNSAFE_WITHOUT_C0}]`, "u");
/**
 * Blanks other than the space: the space separators of general category Zs but U+0020 (the no-break spaces U+00A0
 * and U+202F, the ideographic space U+3000, the spaces of U+2000-U+200A, U+1680, U+205F) and the blank Braille
 * pattern U+2800, each drawn as a space or as nothing. In a listing of names (escapes(), terminalJson()) they make two
 * names look alike (`My Folder`, `My\u00a0Folder`), and are escaped; in a message's text shown to a person (clean(),
 * oneLine()), where text converted from HTML is full of no-break spaces, they are shown as they are.
 */
const BLANKS = "\\u00a0\\u1680\\u2000-\\u200a\\u202f\\u205f\\u3000\\u2800";
/** The same and TAB and BLANKS, for escapes(): a field on one line of a listing has no tab stops to keep. */
const UNSAFE_OR_TAB = new RegExp(`[\\x00-\\x1f${UNSAFE_WITHOUT_C0}${BLANKS}]`, "u");
/**
 * The same characters but C0: JSON.stringify already writes C0 controls and lone surrogates as escapes, and its
 * indentation is made of the only C0 characters it leaves as they are (LF, and spaces), between tokens.
 */
const UNSAFE_IN_JSON = new RegExp(`[${UNSAFE_WITHOUT_C0}${BLANKS}]`, "u");

/**
 * The most combining marks (general category M) shown on one base character: more are drawn stacked above and below
 * it, over the lines before and after (text written to bury a line such as "outside the sender's domain"). Text in
 * use needs fewer: a decomposed Vietnamese vowel has two (ệ: e, U+0323, U+0302), a Devanagari or Hebrew letter up
 * to three or four. A longer run is shown escaped, every mark of it.
 */
export const MAX_COMBINING_MARKS = 4;

const MARK = /\p{M}/u;
const WHITE_SPACE = /\p{White_Space}/u;
/** Any character the rules below may have to act on: text without one is shown as it is, unscanned. */
const SUSPECT = new RegExp(`[\\x00-\\x1f\\p{M}${UNSAFE_WITHOUT_C0}${BLANKS}]`, "u");

/**
 * Which code points of `text` are not shown as they are: the unsafe ones (`unsafe`), and the combining marks that
 * have no base to sit on or pile up on one. A mark is shown when it follows, with at most MAX_COMBINING_MARKS - 1
 * marks between, a character that is shown and is neither white space nor a mark (The Unicode Standard §3.6: a
 * combining character sequence starts with a base); at the start of the text, after white space, after a character
 * not shown (whose escape or U+FFFD it would otherwise alter) or in a run of more than MAX_COMBINING_MARKS, it is
 * not. `json`: `text` is JSON, whose quotation marks and escapes are no base for a mark either (a mark first in a
 * string value, or after a `\n`). Calls `out` with each run of code points shown and each code point not shown.
 */
function scan(text: string, unsafe: RegExp, json: boolean, out: (part: string, shown: boolean) => void): void {
  if (!SUSPECT.test(text)) {
    out(text, true);
    return;
  }
  const points = Array.from(text);
  let shown = "";
  let base = false;
  const hide = (c: string): void => {
    if (shown !== "") out(shown, true);
    shown = "";
    out(c, false);
  };
  for (let i = 0; i < points.length; ) {
    const c = points[i]!;
    if (unsafe.test(c)) {
      hide(c);
      base = false;
      i++;
    } else if (MARK.test(c)) {
      let end = i + 1;
      while (end < points.length && MARK.test(points[end]!) && !unsafe.test(points[end]!)) end++;
      if (base && end - i <= MAX_COMBINING_MARKS) shown += points.slice(i, end).join("");
      else for (let j = i; j < end; j++) hide(points[j]!);
      base = false;
      i = end;
    } else if (json && c === "\\") {
      // An escape: `\uXXXX`, or a backslash and one character (RFC 8259 §7).
      const end = points[i + 1] === "u" ? i + 6 : i + 2;
      shown += points.slice(i, end).join("");
      base = false;
      i = end;
    } else {
      shown += c;
      base = !WHITE_SPACE.test(c) && !(json && c === '"');
      i++;
    }
  }
  if (shown !== "") out(shown, true);
}

/** `text` with each code point not shown (`scan`) replaced by `replace(c)`. */
function rewrite(text: string, unsafe: RegExp, json: boolean, replace: (c: string) => string): string {
  let result = "";
  scan(text, unsafe, json, (part, shown) => {
    result += shown ? part : replace(part);
  });
  return result;
}

/** `\uXXXX` for each UTF-16 code unit of `c` (two for a character beyond U+FFFF), as JSON writes it (RFC 8259 §7). */
function unicodeEscape(c: string): string {
  let out = "";
  for (let i = 0; i < c.length; i++) out += `\\u${c.charCodeAt(i).toString(16).padStart(4, "0")}`;
  return out;
}

/** Text made safe to show on one line, each unsafe character marked: it becomes U+FFFD. */
export function clean(text: string): string {
  return rewrite(text, UNSAFE, false, () => "\uFFFD");
}

/**
 * Text as shown on one line, each run of unsafe characters (line breaks among them) made one space: for a header an
 * encoded word decoded to several lines (RFC 2047 §5 allows any octet), or a file name with `%0D%0A` (RFC 2231).
 */
export function oneLine(text: string): string {
  let result = "";
  let hidden = false;
  scan(text, UNSAFE, false, (part, shown) => {
    if (shown) result += part;
    else if (!hidden) result += " ";
    hidden = !shown;
  });
  return result;
}

/**
 * Text made safe to show on one line, each unsafe character or TAB written as its `\uXXXX` escape (`\u202e`,
 * `\u001b`): for the audit log and account status on a terminal (docs/audit.md), where a reader must see that a
 * character was there and which. Other text, backslashes included, is left as it is, so escaping twice changes
 * nothing more.
 */
export function escapes(text: string): string {
  return rewrite(text, UNSAFE_OR_TAB, false, unicodeEscape);
}

/**
 * Text of several lines made safe for a terminal: each line as `escapes` writes it, the line breaks kept (an error or
 * a report that quotes the config, whose rule names an `mcp --admin` edit can write, docs/mcp.md).
 */
export function escapedLines(text: string): string {
  return text.split("\n").map(escapes).join("\n");
}

/**
 * JSON for a terminal: JSON.stringify's output with the unsafe characters it leaves as they are written as `\uXXXX`
 * escapes (RFC 8259 §7), so a JSON reader gets the same values and a terminal shows none of them as it is.
 */
export function terminalJson(value: unknown, space?: number): string {
  return rewrite(JSON.stringify(value, null, space), UNSAFE_IN_JSON, true, unicodeEscape);
}
