/**
 * Header sections read for policy (docs/filtering.md "Decoding headers"): unfolding (RFC 5322 §2.2.3), one field
 * per name/value pair. Strict where a lenient reading could change a decision: a line that is neither a field nor a
 * continuation makes the whole section unreadable (null), which the caller turns into unknown fields. Values are
 * UTF-8 (RFC 6532); an octet that is not UTF-8 becomes U+FFFD, which the field readers treat as unknown.
 * Encoded words are decoded by the field readers, never here (src/mail/encoded-words.ts).
 */

export interface HeaderField {
  /** Lower-cased field name. */
  readonly name: string;
  /**
   * Unfolded value, surrounding white space (SP, HTAB: RFC 5322 WSP) removed. Nothing else: JavaScript's `trim` also
   * drops VT, FF, NO-BREAK SPACE, U+FEFF and the like, which Dovecot keeps in the value, so that `To: \vbob@x`
   * would be bob@x here and no address to Dovecot's ENVELOPE.
   */
  readonly value: string;
}

const utf8 = new TextDecoder("utf-8");

const CR = 13;
const LF = 10;
const SP = 32;
const TAB = 9;
const COLON = 58;

/**
 * `text` without the SP and HTAB at either end (only WSP, RFC 5322 §2.2.3, §3.2.2). Scanned from each end, in time
 * linear in the text: the regular expression `[ \t]+$` it replaces tried every run of WSP inside the text to its end,
 * so a field folded over 60,000 lines took seconds of the event loop (tests/smtp/header-limits.test.ts).
 */
export function trimWsp(text: string): string {
  let start = 0;
  let end = text.length;
  while (start < end && isWsp(text.charCodeAt(start))) start++;
  while (end > start && isWsp(text.charCodeAt(end - 1))) end--;
  return start === 0 && end === text.length ? text : text.slice(start, end);
}

function isWsp(c: number): boolean {
  return c === SP || c === TAB;
}

/**
 * Splits a header section into unfolded fields. Line ends may be CRLF or bare LF; the section may or may not end
 * with its blank line, and anything after a blank line is ignored (it is the body). Null when a line is neither a
 * field (`name:` with a printable name) nor a continuation of one.
 */
export function parseHeaderFields(bytes: Uint8Array): HeaderField[] | null {
  const fields: HeaderField[] = [];
  let name: string | null = null;
  let value = "";
  let i = 0;
  const n = bytes.length;
  while (i < n) {
    let end = bytes.indexOf(LF, i);
    if (end === -1) end = n;
    const lineEnd = end > i && bytes[end - 1] === CR ? end - 1 : end;
    if (lineEnd === i) break; // the blank line: end of the header section
    const first = bytes[i]!;
    if (first === SP || first === TAB) {
      // Folded continuation: the CRLF is removed, the whitespace kept (RFC 5322 §2.2.3).
      if (name === null) return null;
      value += utf8.decode(bytes.subarray(i, lineEnd));
    } else {
      if (name !== null) fields.push({ name, value: trimWsp(value) });
      let colon = -1;
      for (let j = i; j < lineEnd; j++) {
        const c = bytes[j]!;
        if (c === COLON) {
          colon = j;
          break;
        }
        // ftext is %d33-57 / %d59-126; obs-optional allows whitespace before the colon (RFC 5322 §4.5).
        if ((c < 33 || c > 126) && c !== SP && c !== TAB) return null;
      }
      if (colon === -1) return null;
      name = trimWsp(utf8.decode(bytes.subarray(i, colon))).toLowerCase();
      if (name === "" || /[ \t]/.test(name)) return null;
      value = utf8.decode(bytes.subarray(colon + 1, lineEnd));
    }
    i = end + 1;
  }
  if (name !== null) fields.push({ name, value: trimWsp(value) });
  return fields;
}
