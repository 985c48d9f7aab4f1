/**
 * Modified UTF-7 mailbox names (RFC 3501 §5.1.3, RFC 9051 §5.1.3).
 *
 * Decoding is strict: only the canonical encoding of a name is accepted, so every name
 * has exactly one spelling on the wire and a policy written for `INBOX` cannot be
 * bypassed with `&AEk-NBOX` (docs/protocol.md §4, §7.13).
 */

/**
 * True for `INBOX` in any ASCII case (RFC 3501 §5.1: INBOX is case-insensitive; the RFC's case is ASCII's). Not with
 * Unicode case folding: `ınbox` (a dotless i, `&ATE-nbox`) upper-cases to `INBOX` but is another folder at the server.
 */
export function isInbox(name: string): boolean {
  return name.length === 5 && /^inbox$/i.test(name);
}

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";
const DECODE = new Int8Array(128).fill(-1);
for (let i = 0; i < ALPHABET.length; i++) DECODE[ALPHABET.charCodeAt(i)] = i;

/** Encodes a Unicode mailbox name to modified UTF-7. */
export function encodeMutf7(name: string): string {
  let out = "";
  let i = 0;
  const n = name.length;
  while (i < n) {
    const c = name.charCodeAt(i);
    if (c >= 0x20 && c <= 0x7e) {
      out += c === 0x26 ? "&-" : name[i];
      i++;
      continue;
    }
    let j = i;
    while (j < n) {
      const d = name.charCodeAt(j);
      if (d >= 0x20 && d <= 0x7e) break;
      j++;
    }
    out += "&" + base64Units(name, i, j) + "-";
    i = j;
  }
  return out;
}

function base64Units(s: string, start: number, end: number): string {
  let out = "";
  let bits = 0;
  let nbits = 0;
  for (let i = start; i < end; i++) {
    bits = (bits << 16) | s.charCodeAt(i);
    nbits += 16;
    while (nbits >= 6) {
      nbits -= 6;
      out += ALPHABET[(bits >>> nbits) & 0x3f];
    }
    bits &= (1 << nbits) - 1;
  }
  if (nbits > 0) out += ALPHABET[(bits << (6 - nbits)) & 0x3f];
  return out;
}

/**
 * Decodes a modified UTF-7 name; null if it is invalid or not canonical: bytes outside
 * printable ASCII, an unterminated or empty shift, padding or non-zero leftover bits,
 * an encoded printable ASCII character, two adjacent shifts, or broken UTF-16.
 */
export function decodeMutf7(encoded: string): string | null {
  let out = "";
  let i = 0;
  const n = encoded.length;
  let afterShift = false;
  while (i < n) {
    const c = encoded.charCodeAt(i);
    if (c < 0x20 || c > 0x7e) return null;
    if (c !== 0x26) {
      out += encoded[i];
      i++;
      afterShift = false;
      continue;
    }
    const end = encoded.indexOf("-", i + 1);
    if (end === -1) return null;
    if (end === i + 1) {
      out += "&";
      i = end + 1;
      afterShift = false;
      continue;
    }
    // `&Ab-&Cd-` must have been written as one shift.
    if (afterShift) return null;
    let bits = 0;
    let nbits = 0;
    let high = 0;
    for (let k = i + 1; k < end; k++) {
      const code = encoded.charCodeAt(k);
      const v = code < 128 ? DECODE[code]! : -1;
      if (v < 0) return null;
      bits = ((bits << 6) | v) & 0xffffff;
      nbits += 6;
      if (nbits >= 16) {
        nbits -= 16;
        const unit = (bits >>> nbits) & 0xffff;
        if (unit >= 0x20 && unit <= 0x7e) return null; // must have been written directly
        if (unit >= 0xd800 && unit <= 0xdbff) {
          if (high !== 0) return null;
          high = unit;
        } else if (unit >= 0xdc00 && unit <= 0xdfff) {
          if (high === 0) return null;
          out += String.fromCharCode(high, unit);
          high = 0;
        } else {
          if (high !== 0) return null;
          out += String.fromCharCode(unit);
        }
      }
    }
    // Canonical: fewer than 6 leftover bits, all zero, and at least one code unit.
    if (high !== 0 || nbits >= 6 || (bits & ((1 << nbits) - 1)) !== 0 || end - i - 1 < 3) return null;
    i = end + 1;
    afterShift = true;
  }
  return out;
}
