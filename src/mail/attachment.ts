/**
 * What counts as an attachment (docs/smtp.md, docs/filtering.md), one definition for both proxies: an entity
 * (the message itself or any MIME part) is an attachment when its Content-Disposition is `attachment` or a type
 * that is not `inline` (RFC 2183 §2.8: an unrecognized type is treated as `attachment`), when it names a file
 * (`filename`, or Content-Type `name`, RFC 2231 forms included), or when it is a leaf whose type is not text/*
 * (images, PDFs, message/rfc822, ...). Erring towards "attachment" is the safe side for rules that
 * refuse attachments. Multiparts are containers: only their parts count.
 *
 * The SMTP proxy and the MCP reader read entities from part headers (`entityOf`, with `parseParameterized` for
 * RFC 2045 §5.1 / RFC 2183 / RFC 2231 parameters, and the enclosing multipart's `defaultPartType`); the IMAP filter
 * builds them from BODYSTRUCTURE, where Dovecot has applied the same defaults.
 */

import { asciiLowerCase } from "./ascii.ts";
import { decodeEncodedWords } from "./encoded-words.ts";
import type { HeaderField } from "./headers.ts";

export interface MimeEntity {
  /** Lower-cased `type/subtype`; "" when absent (`entityOf` gives the default type instead). */
  readonly type: string;
  /** Content-Type parameters, lower-cased names. */
  readonly typeParams: ReadonlyMap<string, string>;
  /** Lower-cased disposition type, "" when absent. */
  readonly disposition: string;
  readonly dispositionParams: ReadonlyMap<string, string>;
}

/** True when a parameter named `base` is present in any RFC 2231 form (`name`, `name*`, `name*0`, `name*0*`). */
export function hasParam(params: ReadonlyMap<string, string>, base: string): boolean {
  for (const key of params.keys()) {
    if (key === base || key.startsWith(`${base}*`)) return true;
  }
  return false;
}

/** Sections of one RFC 2231 continued parameter read; a parameter continued over more cannot be read. */
export const MAX_NAME_SECTIONS = 64;
/** Octets of a parameter's value once decoded (a file name); a longer one cannot be read. */
export const MAX_PARAMETER_OCTETS = 1024;

type Label = ConstructorParameters<typeof TextDecoder>[0];

/**
 * Octets of `%XX`-encoded text (RFC 2231 §4), whose other characters are ASCII standing for themselves; null when
 * one is not ASCII (readers differ on what it stands for).
 */
function percentDecoded(text: string): Buffer | null {
  if (/[^\x00-\x7f]/.test(text)) return null;
  return Buffer.from(
    text.replace(/%([0-9A-Fa-f]{2})/g, (_, h: string) => String.fromCharCode(Number.parseInt(h, 16))),
    "latin1",
  );
}

/**
 * The value of parameter `base` as mail clients read it (RFC 2231): the extended form `base*`
 * (`charset'language'%XX`) first, then the sections `base*0`, `base*1*`, ... (§3, §4.1), then the plain `base`
 * (RFC 2047 encoded words decoded, as clients do for file names). A client that understands RFC 2231 shows the
 * extended or continued value when both are there, so that is what is read, never the plain one beside it.
 * Undefined when the parameter is absent in every form; null when it is there but cannot be read the way every
 * reader would: an unknown charset, sections with a gap or given twice (`base*1` and `base*1*`), more than
 * MAX_NAME_SECTIONS sections, or more than MAX_PARAMETER_OCTETS octets.
 */
export function parameterValue(params: ReadonlyMap<string, string>, base: string): string | null | undefined {
  const pieces: { text: string; encoded: boolean }[] = [];
  const extended = params.get(`${base}*`);
  // Every section, numbered or not as RFC 2231 §3 says (`base*00` is one too, and is never read: cannot be read).
  let sections = 0;
  for (const key of params.keys()) {
    if (key.startsWith(`${base}*`) && /^\d+\*?$/.test(key.slice(base.length + 1))) sections++;
  }
  if (extended !== undefined) {
    // Both forms at once: readers pick either.
    if (sections > 0) return null;
    pieces.push({ text: extended, encoded: true });
  } else {
    if (sections > MAX_NAME_SECTIONS) return null;
    for (let n = 0; n < sections; n++) {
      const raw = params.get(`${base}*${n}`);
      const encoded = params.get(`${base}*${n}*`);
      if (raw === undefined && encoded === undefined) break;
      if (raw !== undefined && encoded !== undefined) return null;
      pieces.push(raw !== undefined ? { text: raw, encoded: false } : { text: encoded!, encoded: true });
    }
    if (pieces.length !== sections) return null;
  }
  if (pieces.length === 0) {
    const plain = params.get(base);
    if (plain === undefined) return undefined;
    if (plain.length > MAX_PARAMETER_OCTETS) return null;
    return decodeEncodedWords(plain) ?? plain;
  }
  let raw = 0;
  for (const p of pieces) raw += p.text.length;
  // Percent-encoding takes three characters an octet, charset'language' aside: what cannot fit is not decoded.
  if (raw > 3 * MAX_PARAMETER_OCTETS + 200) return null;
  let charset: string | null = null;
  const octets: Buffer[] = [];
  for (let i = 0; i < pieces.length; i++) {
    let { text } = pieces[i]!;
    const { encoded } = pieces[i]!;
    if (i === 0 && encoded) {
      // The first encoded section starts with charset'language' (§4, §4.1).
      const m = /^([^']*)'[^']*'(.*)$/s.exec(text);
      if (m === null) return null;
      charset = m[1]!;
      text = m[2]!;
    }
    const piece = encoded ? percentDecoded(text) : Buffer.from(text, "utf8");
    if (piece === null) return null;
    octets.push(piece);
  }
  const all = Buffer.concat(octets);
  if (all.length > MAX_PARAMETER_OCTETS) return null;
  try {
    const label = charset === null || charset === "" || charset.toLowerCase() === "us-ascii" ? "utf-8" : charset;
    return new TextDecoder(label as Label).decode(all);
  } catch {
    return null;
  }
}

/**
 * An attachment's file name as mail clients show it: Content-Disposition `filename` in any form
 * (`parameterValue`), else Content-Type `name`; null when it has none, or one that cannot be read. A `filename`
 * that cannot be read is not replaced by the `name` beside it: a client may show either.
 */
export function attachmentName(entity: MimeEntity): string | null {
  const filename = parameterValue(entity.dispositionParams, "filename");
  if (filename !== undefined) return filename;
  return parameterValue(entity.typeParams, "name") ?? null;
}

/** Whether one non-multipart entity is an attachment. */
export function isAttachmentEntity(entity: MimeEntity): boolean {
  return (
    // RFC 2183 §2.8: a disposition type other than `inline` and `attachment` is treated as `attachment`.
    (entity.disposition !== "" && entity.disposition !== "inline") ||
    hasParam(entity.dispositionParams, "filename") ||
    hasParam(entity.typeParams, "name") ||
    !(entity.type === "" || entity.type.startsWith("text/"))
  );
}

export interface ParameterizedValue {
  /** Lower-cased, e.g. "multipart/mixed" or "attachment". */
  readonly value: string;
  /** False when the value itself held a quoted string (`"multipart/mixed"`, `x"; a="b`): not a token. */
  readonly valueUnquoted: boolean;
  /**
   * Lower-cased names; RFC 2231 forms and sections (`filename*`, `filename*0*`) are separate names. A name given
   * twice makes the value malformed.
   */
  readonly params: ReadonlyMap<string, string>;
  /**
   * True when the parameters do not follow `*(";" attribute "=" (token / quoted-string))` exactly, comments and
   * white space aside, or a quoted string or comment is not closed: `boundary=a b`, `boundary=a"b"`,
   * `boundary="b" junk`, or a name is given twice. Readers disagree on what such a value is (one stops at the
   * space, another keeps it; one takes the first of two, another the last), so the entity is not known (`entityOf`).
   */
  readonly malformed: boolean;
}

/** RFC 2045 §5.1 tspecials, which end a token. */
const TSPECIALS = '()<>@,;:\\"/[]?=';

/** A token octet: printable US-ASCII but tspecials; in a parameter's value also 8-bit text (a raw UTF-8 name). */
function tokenChar(c: string, eightBit: boolean): boolean {
  const code = c.charCodeAt(0);
  if (code >= 0x80) return eightBit;
  return code > 0x20 && code < 0x7f && !TSPECIALS.includes(c);
}

/**
 * Parses `value *(";" attribute "=" (token / quoted-string))` (RFC 2045 §5.1), dropping comments and the white
 * space around each part; anything else between parameters makes the result `malformed`. An empty parameter (a
 * trailing `;`, as many mailers write) is skipped.
 */
export function parseParameterized(text: string): ParameterizedValue {
  let at = 0;
  let malformed = false;
  /** Skips white space and comments (nested, with quoted-pairs); an unclosed comment is malformed. */
  const skipCfws = (): void => {
    while (at < text.length) {
      const c = text[at]!;
      if (c === " " || c === "\t" || c === "\r" || c === "\n") {
        at++;
        continue;
      }
      if (c !== "(") return;
      let depth = 0;
      for (; at < text.length; at++) {
        const d = text[at]!;
        if (d === "\\") at++;
        else if (d === "(") depth++;
        else if (d === ")" && --depth === 0) break;
      }
      if (depth !== 0) {
        malformed = true;
        return;
      }
      at++;
    }
  };
  /** A quoted string from its opening quote; null when it is not closed. */
  const quotedString = (): string | null => {
    let out = "";
    for (at++; at < text.length; at++) {
      const c = text[at]!;
      if (c === "\\" && at + 1 < text.length) out += text[++at];
      else if (c === '"') {
        at++;
        return out;
      } else out += c;
    }
    return null;
  };
  // The value: up to the first `;` outside quoted strings and comments, comments dropped (checked by the caller).
  let value = "";
  let valueUnquoted = true;
  while (at < text.length && text[at] !== ";" && !malformed) {
    const c = text[at]!;
    if (c === "(") {
      // A comment separates (`text/plain(c)x` is not `text/plainx`).
      value += " ";
      skipCfws();
    } else if (c === '"') {
      valueUnquoted = false;
      const q = quotedString();
      if (q === null) malformed = true;
      else value += q;
    } else {
      value += c;
      at++;
    }
  }
  const params = new Map<string, string>();
  while (at < text.length && !malformed) {
    at++; // the `;`
    skipCfws();
    if (at >= text.length || text[at] === ";") continue;
    const nameStart = at;
    while (at < text.length && tokenChar(text[at]!, false)) at++;
    const name = text.slice(nameStart, at).toLowerCase();
    skipCfws();
    if (name === "" || text[at] !== "=") {
      malformed = true;
      break;
    }
    at++;
    skipCfws();
    let paramValue: string | null;
    if (text[at] === '"') paramValue = quotedString();
    else {
      const valueStart = at;
      while (at < text.length && tokenChar(text[at]!, true)) at++;
      paramValue = at > valueStart ? text.slice(valueStart, at) : null;
    }
    skipCfws();
    if (paramValue === null || (at < text.length && text[at] !== ";")) {
      malformed = true;
      break;
    }
    // A name given twice (`boundary="a"; boundary="b"`): Dovecot takes the first, other readers the last, so the
    // entity is not known, as for any parameter readers read differently.
    if (params.has(name)) {
      malformed = true;
      break;
    }
    params.set(name, paramValue);
  }
  // ASCII letters only (asciiLowerCase): a type or disposition with a character that is not ASCII must stay one that
  // is not a token (`entityOf` then reads the entity as unknown).
  return {
    value: asciiLowerCase(value.trim()),
    valueUnquoted,
    params,
    malformed,
  };
}

/** Whether `text` is one RFC 2045 §5.1 `token` (`tokenChar` octets, at least one). */
function isToken(text: string): boolean {
  if (text === "") return false;
  for (const c of text) if (!tokenChar(c, false)) return false;
  return true;
}

/** Whether `text` is a media type name, `type/subtype` (RFC 2045 §5.1 tokens, any case), and nothing more. */
export function isMediaType(text: string): boolean {
  const slash = text.indexOf("/");
  return slash !== -1 && isToken(text.slice(0, slash)) && isToken(text.slice(slash + 1));
}

/** The type of an entity without Content-Type (RFC 2045 §5.2), and of such a part of a digest (RFC 2046 §5.1.5). */
const DEFAULT_TYPE = "text/plain";
const DIGEST_DEFAULT_TYPE = "message/rfc822";

/** The default type of the parts of a multipart of type `multipartType` (lower-cased `type/subtype`). */
export function defaultPartType(multipartType: string): string {
  return multipartType === "multipart/digest" ? DIGEST_DEFAULT_TYPE : DEFAULT_TYPE;
}

/**
 * The entity an unfolded header section describes; null when it names its Content-Type or Content-Disposition
 * more than once, or gives one whose value is not a media type or a disposition token, since which reading a
 * client follows is a guess. Without a Content-Type, or with one whose value is
 * empty, the type is `defaultType`: text/plain for a message and for a part of most multiparts (RFC 2045 §5.2),
 * message/rfc822 for a part of a multipart/digest (`defaultPartType`), which then counts as an attachment as an
 * explicit message/rfc822 does (docs/smtp.md "What the message says").
 */
export function entityOf(fields: readonly HeaderField[], defaultType = DEFAULT_TYPE): MimeEntity | null {
  let type: string | undefined;
  let disposition: string | undefined;
  for (const field of fields) {
    if (field.name === "content-type") {
      if (type !== undefined) return null;
      type = field.value;
    } else if (field.name === "content-disposition") {
      if (disposition !== undefined) return null;
      disposition = field.value;
    }
  }
  const t = parseParameterized(type ?? defaultType);
  const d = parseParameterized(disposition ?? "");
  if (t.malformed || d.malformed) return null;
  // A type that is not `token/token`, or a disposition that is not one token (RFC 2045 §5.1, RFC 2183 §2), is
  // read one way here and another by a client (Dovecot takes such a type as text/plain): not known.
  if (t.value !== "" && (!t.valueUnquoted || !isMediaType(t.value))) return null;
  if (d.value !== "" && (!d.valueUnquoted || !isToken(d.value))) return null;
  return {
    type: t.value === "" ? defaultType : t.value,
    typeParams: t.params,
    disposition: d.value,
    dispositionParams: d.params,
  };
}
