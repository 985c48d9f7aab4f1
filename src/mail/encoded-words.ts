/**
 * Unstructured header text (Subject) as a mail client shows it, or null (unknown) when that cannot be known
 * (docs/filtering.md "Decoding headers"). The policy engine resolves unknown to deny for any rule that tests the
 * field, so every doubt below is answered with null rather than with a guess:
 *
 * - RFC 2047 encoded words `=?charset?B|Q?text?=`, B and Q in either case, the charset in any case and with an
 *   RFC 2231 §5 language suffix (`=?utf-8*en?Q?..?=`), in any charset the runtime's TextDecoder knows. Whitespace
 *   between adjacent encoded words is dropped (RFC 2047 §6.2).
 * - Null for: an unknown charset (UTF-7 among them), base64 that is not base64, a bad `=XX`, a non-ASCII or
 *   blank octet inside a word, bytes that are not valid in their charset (overlong or truncated UTF-8, lone
 *   surrogates), and anything that starts like an encoded word but is not one (`=?utf-8?Q?se cret?=`, a word cut
 *   by a fold, a missing `?=`), because lenient clients decode those in ways of their own.
 * - Charsets that are tricks rather than text: `x-user-defined` (a browser convention, not a mail charset), and
 *   UTF-16 without a byte order mark, which RFC 2781 §4.3 reads big-endian and TextDecoder little-endian.
 * - Adjacent words in one charset: clients either decode each word alone or join their octets first. Both are
 *   computed; when they differ (a stateful charset such as ISO-2022-JP whose escape carries into the next word, a
 *   Shift_JIS lead octet that swallows the next word's first letter) the text is unknown. A UTF-8 character split
 *   between two words is the one case taken from the joined octets: UTF-8 resynchronises, so a client decoding
 *   word by word shows the same letters around replacement characters.
 *
 * `readUnstructured` then checks the decoded text as displayed: a replacement character (an octet that was not
 * UTF-8 in a raw RFC 6532 header, or one written on purpose), a control character (NUL, CR, LF, C1; TAB is kept),
 * a line or paragraph separator (U+2028, U+2029) or a bidirectional embedding, override or isolate (U+202A–U+202E,
 * U+2066–U+2069, which reorder what the reader sees) make it unknown; other default-ignorable code points (zero-width
 * spaces and joiners, byte order marks, variation selectors, soft hyphens, bidirectional marks) are removed, since
 * a client draws nothing for them; the result is put in Unicode normalization form C, so composed and decomposed
 * accents compare equal.
 * Look-alike characters (`ｓｅｃｒｅｔ`, Cyrillic `е`) are different text and are not folded.
 */

import { asciiLowerCase } from "./ascii.ts";

/** Strict: charset (with an optional `*lang`), B or Q, encoded text without `?` or whitespace (RFC 2047 §2). */
const ENCODED_WORD = /=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=/g;
/** What is left after the strict words: anything that still opens an encoded word is a malformed one. */
const MALFORMED_WORD = /=\?[^?]*\?[bBqQ]\?/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{2,3})?$/;
const LINEAR_WHITESPACE = /^[ \t\r\n]*$/;

/**
 * C0 controls but TAB, DEL, C1 controls, and the Unicode line and paragraph separators, which a client may draw as a
 * line break (some of the characters src/mail/display.ts never shows; the bidirectional ones are below).
 */
const CONTROL = /[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]/;
/** Bidirectional embeddings, overrides and isolates: the text shown is not the text in order. */
const BIDI_REORDERING = /[\u202a-\u202e\u2066-\u2069]/;
const DEFAULT_IGNORABLE = /\p{Default_Ignorable_Code_Point}/gu;
const REPLACEMENT_CHARACTER = "\ufffd";
const PRINTABLE_ASCII = /^[\t\x20-\x7e]*$/;

/**
 * How one charset label decodes: `bom` is UTF-16 whose byte order must come from a byte order mark; `not text` a label
 * TextDecoder knows whose result no mail reader shows as the same text (x-user-defined, replacement).
 */
export type Charset =
  | { readonly kind: "decoder"; readonly encoding: string; readonly decoder: TextDecoder }
  | { readonly kind: "bom" }
  | { readonly kind: "not text" };

const BOM_CHARSET: Charset = Object.freeze({ kind: "bom" });
const NOT_TEXT: Charset = Object.freeze({ kind: "not text" });
const utf16le = new TextDecoder("utf-16le", { fatal: true, ignoreBOM: true });
const utf16be = new TextDecoder("utf-16be", { fatal: true, ignoreBOM: true });

/** Resolved labels. Only labels TextDecoder knows are kept, so the map is bounded by the Encoding Standard's list. */
const charsets = new Map<string, Charset>();

/**
 * What `label` names, read as header words are (and a body's charset, src/mail/transfer.ts): null when TextDecoder
 * knows no such label.
 */
export function charsetFor(label: string): Charset | null {
  // ASCII letters only (asciiLowerCase): `\u212Aoi8-r` is no label TextDecoder knows, so the word is unknown.
  const key = asciiLowerCase(label);
  const known = charsets.get(key);
  if (known !== undefined) return known;
  let decoder: TextDecoder;
  try {
    // ignoreBOM keeps a byte order mark as U+FEFF, as a client decoding an explicit byte order shows it
    // (invisible, and removed by readUnstructured).
    decoder = new TextDecoder(key as ConstructorParameters<typeof TextDecoder>[0], { fatal: true, ignoreBOM: true });
  } catch {
    return null;
  }
  const encoding = decoder.encoding;
  // "utf-16", "ucs-2", "unicode", ...: the Encoding Standard maps them to little-endian, RFC 2781 §4.3 to
  // big-endian without a byte order mark. Only "utf-16le" and "utf-16be" say which.
  const charset: Charset =
    encoding === "x-user-defined" || encoding === "replacement"
      ? NOT_TEXT
      : encoding === "utf-16le" && key !== "utf-16le"
        ? BOM_CHARSET
        : Object.freeze({ kind: "decoder", encoding, decoder });
  charsets.set(key, charset);
  return charset;
}

function hex(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 65 && c <= 70) return c - 55;
  if (c >= 97 && c <= 102) return c - 87;
  return -1;
}

/** The octets of one word's encoded text; null when it is not valid B or Q (RFC 2047 §4). */
function wordOctets(encoding: string, text: string): Uint8Array | null {
  if (encoding === "b" || encoding === "B") {
    if (!BASE64.test(text)) return null;
    return Buffer.from(text, "base64");
  }
  const out = new Uint8Array(text.length);
  let k = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x5f) {
      out[k++] = 0x20; // "_" is a space in Q (RFC 2047 §4.2)
    } else if (c === 0x3d) {
      const hi = hex(text.charCodeAt(i + 1));
      const lo = hex(text.charCodeAt(i + 2));
      if (hi < 0 || lo < 0) return null;
      out[k++] = hi * 16 + lo;
      i += 2;
    } else if (c > 0x7e || c < 0x21) {
      return null;
    } else {
      out[k++] = c;
    }
  }
  return out.subarray(0, k);
}

/**
 * The byte order a UTF-16 text's byte order mark says (RFC 2781 §3.2), for a `bom` charset: null without one, when
 * readers differ on the order (see `Charset`).
 */
export function byteOrderOf(octets: Uint8Array): "utf-16be" | "utf-16le" | null {
  if (octets[0] === 0xfe && octets[1] === 0xff) return "utf-16be";
  if (octets[0] === 0xff && octets[1] === 0xfe) return "utf-16le";
  return null;
}

function decodeOctets(charset: Charset, octets: Uint8Array): string | null {
  try {
    if (charset.kind === "decoder") return charset.decoder.decode(octets);
    const order = byteOrderOf(octets);
    if (order === null) return null;
    return (order === "utf-16be" ? utf16be : utf16le).decode(octets.subarray(2));
  } catch {
    return null;
  }
}

interface Word {
  readonly charset: Charset;
  readonly octets: Uint8Array;
}

/** Decodes a run of adjacent words in one charset, alone and joined (see the module comment). */
function decodeRun(run: readonly Word[]): string | null {
  const charset = run[0]!.charset;
  let alone = "";
  let aloneOk = true;
  for (const word of run) {
    const text = decodeOctets(charset, word.octets);
    if (text === null) {
      aloneOk = false;
      break;
    }
    alone += text;
  }
  if (run.length === 1) return aloneOk ? alone : null;
  const joined = decodeOctets(charset, Buffer.concat(run.map((w) => w.octets)));
  if (aloneOk) return joined === alone ? alone : null;
  return charset.kind === "decoder" && charset.encoding === "utf-8" ? joined : null;
}

/**
 * Decodes the RFC 2047 encoded words of an unstructured value; null when one cannot be decoded or when something
 * looks like an encoded word and is not one. Text without `=?` is returned as it is.
 */
export function decodeEncodedWords(text: string): string | null {
  if (!text.includes("=?")) return text;
  let out = "";
  let last = 0;
  /** Adjacent words of one charset not decoded yet; non-empty exactly when the last thing seen was a word. */
  let run: Word[] = [];
  const flush = (): boolean => {
    if (run.length === 0) return true;
    const decoded = decodeRun(run);
    run = [];
    if (decoded === null) return false;
    out += decoded;
    return true;
  };
  for (const m of text.matchAll(ENCODED_WORD)) {
    const between = text.slice(last, m.index);
    last = m.index + m[0].length;
    const charset = charsetFor(m[1]!.split("*")[0]!);
    const octets = charset === null ? null : wordOctets(m[2]!, m[3]!);
    if (charset === null || charset.kind === "not text" || octets === null) return null;
    const word: Word = { charset, octets };
    // Whitespace between two encoded words is dropped (RFC 2047 §6.2); any other text ends the run.
    const adjacent = run.length > 0 && LINEAR_WHITESPACE.test(between);
    if (adjacent && sameDecoder(run[0]!.charset, charset)) {
      run.push(word);
      continue;
    }
    if (!flush()) return null;
    if (!adjacent) {
      if (MALFORMED_WORD.test(between)) return null;
      out += between;
    }
    run.push(word);
  }
  if (!flush()) return null;
  const rest = text.slice(last);
  if (MALFORMED_WORD.test(rest)) return null;
  return out + rest;
}

/** Words whose octets may be joined: one encoding, and not UTF-16 read by its byte order mark (one per word). */
function sameDecoder(a: Charset, b: Charset): boolean {
  return a.kind === "decoder" && b.kind === "decoder" && a.encoding === b.encoding;
}

/**
 * Why a glob could never match text read by `readableText` (subjects, and folder names: docs/config.md "Globs"), or
 * null: a character that makes such text unknown, a default-ignorable one (removed in every reading) or text not in
 * NFC (every reading is). A rule written so would never match, and a deny rule would let everything through.
 * `what` names the text in the message: "subject" or "folder name".
 */
export function unreadableGlobText(text: string, what: "subject" | "folder name"): string | null {
  const read = readableText(text);
  if (read === text) return null;
  if (read === null)
    return (
      "holds a control character, a line or paragraph separator, a bidirectional override or U+FFFD, which make a " +
      (what === "subject" ? "subject unknown" : "folder not exist for an agent")
    );
  const ignorable = [...text].find((c) => c.replace(DEFAULT_IGNORABLE, "") === "");
  if (ignorable !== undefined) {
    const code = ignorable.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0");
    return `holds U+${code}, an invisible character ${what}s are read without`;
  }
  return `is not in Unicode NFC, the form ${what}s are compared in; write it composed: ${JSON.stringify(read)}`;
}

/**
 * A Subject (or any unstructured field) as its reader sees it, for matching; null when unknown. `value` is the
 * unfolded field value.
 */
export function readUnstructured(value: string): string | null {
  const decoded = decodeEncodedWords(value);
  return decoded === null ? null : readableText(decoded);
}

/**
 * Decoded text as subjects and folder names are compared: null when a character makes it unknown (a control, a line
 * or paragraph separator, a bidirectional reordering character, U+FFFD); otherwise without default-ignorable
 * characters, in NFC.
 */
export function readableText(text: string): string | null {
  // Printable ASCII (and TAB) has nothing to check, remove or normalize: the common case, kept cheap.
  if (PRINTABLE_ASCII.test(text)) return text;
  if (text.includes(REPLACEMENT_CHARACTER) || CONTROL.test(text) || BIDI_REORDERING.test(text)) return null;
  return text.replace(DEFAULT_IGNORABLE, "").normalize("NFC");
}
