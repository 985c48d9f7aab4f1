/**
 * Header sections and encoded words, read for policy (docs/config.md "What the message fields mean"): unfolding
 * (RFC 5322 §2.2.3) and RFC 2047 encoded words. Strict where a lenient reading could change a decision: a line that
 * is not a field, or an encoded word that cannot be decoded (unknown charset, bad base64, bad `=XX`), makes the
 * caller treat the field as unknown, which the policy engine resolves to deny.
 */

export interface HeaderField {
  /** Lower-cased field name. */
  readonly name: string;
  /** Unfolded value, surrounding whitespace removed. */
  readonly value: string;
}

const utf8 = new TextDecoder("utf-8");

const CR = 13;
const LF = 10;
const SP = 32;
const TAB = 9;
const COLON = 58;

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
      if (name !== null) fields.push({ name, value: value.trim() });
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
      name = utf8.decode(bytes.subarray(i, colon)).trim().toLowerCase();
      if (name === "" || /[ \t]/.test(name)) return null;
      value = utf8.decode(bytes.subarray(colon + 1, lineEnd));
    }
    i = end + 1;
  }
  if (name !== null) fields.push({ name, value: value.trim() });
  return fields;
}

const ENCODED_WORD = /=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=/g;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{2,3})?$/;
const decoders = new Map<string, TextDecoder | null>();

function decoderFor(charset: string): TextDecoder | null {
  // RFC 2231 §5: a language may follow the charset after "*".
  const label = charset.split("*")[0]!.toLowerCase();
  let d = decoders.get(label);
  if (d === undefined) {
    try {
      d = new TextDecoder(label as ConstructorParameters<typeof TextDecoder>[0]);
    } catch {
      d = null;
    }
    decoders.set(label, d);
  }
  return d;
}

function hex(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 65 && c <= 70) return c - 55;
  if (c >= 97 && c <= 102) return c - 87;
  return -1;
}

function decodeWord(charset: string, encoding: string, text: string): string | null {
  const decoder = decoderFor(charset);
  if (decoder === null) return null;
  let bytes: Uint8Array;
  if (encoding === "b" || encoding === "B") {
    if (!BASE64.test(text)) return null;
    bytes = Buffer.from(text, "base64");
  } else {
    const out = new Uint8Array(text.length);
    let k = 0;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c === 0x5f)
        out[k++] = 0x20; // "_" is a space in Q (RFC 2047 §4.2)
      else if (c === 0x3d) {
        const hi = hex(text.charCodeAt(i + 1));
        const lo = hex(text.charCodeAt(i + 2));
        if (hi < 0 || lo < 0) return null;
        out[k++] = hi * 16 + lo;
        i += 2;
      } else if (c > 0x7e || c < 0x21) return null;
      else out[k++] = c;
    }
    bytes = out.subarray(0, k);
  }
  return decoder.decode(bytes);
}

/**
 * Decodes RFC 2047 encoded words; whitespace between adjacent encoded words is dropped (§6.2). Null when an
 * encoded word cannot be decoded: the caller must treat the value as unknown rather than match the raw text
 * (a deny rule on a subject must not be sidestepped with an unknown charset).
 */
export function decodeEncodedWords(text: string): string | null {
  if (!text.includes("=?")) return text;
  let out = "";
  let last = 0;
  let previousWasWord = false;
  for (const m of text.matchAll(ENCODED_WORD)) {
    const start = m.index;
    const between = text.slice(last, start);
    const decoded = decodeWord(m[1]!, m[2]!, m[3]!);
    if (decoded === null) return null;
    if (!(previousWasWord && /^[ \t\r\n]*$/.test(between))) out += between;
    out += decoded;
    previousWasWord = true;
    last = start + m[0].length;
  }
  return out + text.slice(last);
}
