/**
 * Small MIME helpers for the message inspector: header fields (RFC 5322 §2.2), Content-Type and
 * Content-Disposition parameters (RFC 2045 §5.1, RFC 2183, RFC 2231), and encoded words (RFC 2047).
 * Lenient in what they read, because they only feed policy; where a value cannot be read the caller treats the
 * field as unknown, which the policy resolves to deny for any rule that depends on it.
 */

export interface HeaderField {
  /** Lower-cased field name. */
  readonly name: string;
  /** Unfolded value, leading whitespace removed. */
  readonly value: string;
}

const decoder = new TextDecoder("utf-8");

/** Splits a header section (CRLF line ends, no final blank line needed) into unfolded fields. */
export function parseHeaderSection(bytes: Uint8Array): HeaderField[] | null {
  const text = decoder.decode(bytes);
  const fields: HeaderField[] = [];
  let name: string | null = null;
  let value = "";
  for (const line of text.split("\r\n")) {
    if (line === "") continue;
    if (line[0] === " " || line[0] === "\t") {
      // Folded continuation (RFC 5322 §2.2.3); a continuation before any field is malformed.
      if (name === null) return null;
      value += line;
      continue;
    }
    if (name !== null) fields.push({ name, value: value.trim() });
    const colon = line.indexOf(":");
    if (colon <= 0) return null;
    name = line.slice(0, colon).trim().toLowerCase();
    value = line.slice(colon + 1);
  }
  if (name !== null) fields.push({ name, value: value.trim() });
  return fields;
}

export interface ParameterizedValue {
  /** Lower-cased, e.g. "multipart/mixed" or "attachment". */
  readonly value: string;
  /** Lower-cased names; RFC 2231 sections (`filename*0*`) are kept as separate names. */
  readonly params: ReadonlyMap<string, string>;
}

/** Parses `value *(";" name "=" (token | quoted-string))`, dropping comments. */
export function parseParameterized(text: string): ParameterizedValue {
  const parts: string[] = [];
  let current = "";
  let quoted = false;
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quoted) {
      if (c === "\\" && i + 1 < text.length) current += text[++i];
      else if (c === '"') quoted = false;
      else current += c;
      continue;
    }
    if (depth > 0) {
      if (c === "(") depth++;
      else if (c === ")") depth--;
      continue;
    }
    if (c === '"') {
      quoted = true;
      // Mark the start of a quoted value so `a=""` still has a value.
      current += "";
    } else if (c === "(") depth++;
    else if (c === ";") {
      parts.push(current);
      current = "";
    } else current += c;
  }
  parts.push(current);
  const value = (parts.shift() ?? "").trim().toLowerCase();
  const params = new Map<string, string>();
  for (const part of parts) {
    const eq = part.indexOf("=");
    if (eq <= 0) continue;
    const key = part.slice(0, eq).trim().toLowerCase();
    if (!params.has(key)) params.set(key, part.slice(eq + 1).trim());
  }
  return { value, params };
}

/** True when a parameter named `base` is present in any RFC 2231 form (`name`, `name*`, `name*0`, `name*0*`). */
export function hasParam(params: ReadonlyMap<string, string>, base: string): boolean {
  for (const key of params.keys()) {
    if (key === base || key.startsWith(`${base}*`)) return true;
  }
  return false;
}

const ENCODED_WORD = /=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=/g;

function decodeWord(charset: string, encoding: string, text: string): string | null {
  let bytes: Uint8Array;
  if (encoding === "b" || encoding === "B") {
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text)) return null;
    bytes = Buffer.from(text, "base64");
  } else {
    const out: number[] = [];
    for (let i = 0; i < text.length; i++) {
      const c = text[i]!;
      if (c === "_") out.push(0x20);
      else if (c === "=" && /^[0-9a-fA-F]{2}$/.test(text.slice(i + 1, i + 3))) {
        out.push(parseInt(text.slice(i + 1, i + 3), 16));
        i += 2;
      } else out.push(c.charCodeAt(0) & 0xff);
    }
    bytes = Uint8Array.from(out);
  }
  // RFC 2231 §5: a language may follow the charset after "*".
  const name = charset.split("*")[0]!;
  try {
    return new TextDecoder(name as ConstructorParameters<typeof TextDecoder>[0]).decode(bytes);
  } catch {
    return null;
  }
}

/** Decodes RFC 2047 encoded words; whitespace between adjacent encoded words is dropped (§6.2). */
export function decodeEncodedWords(text: string): string {
  let out = "";
  let last = 0;
  let previousWasWord = false;
  for (const m of text.matchAll(ENCODED_WORD)) {
    const start = m.index;
    const between = text.slice(last, start);
    const decoded = decodeWord(m[1]!, m[2]!, m[3]!);
    if (decoded === null) {
      out += between + m[0];
      previousWasWord = false;
    } else {
      if (!(previousWasWord && /^[ \t\r\n]*$/.test(between))) out += between;
      out += decoded;
      previousWasWord = true;
    }
    last = start + m[0].length;
  }
  return out + text.slice(last);
}
