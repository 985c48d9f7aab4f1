/**
 * What counts as an attachment (docs/smtp.md, docs/filtering.md), one definition for both proxies: an entity
 * (the message itself or any MIME part) is an attachment when its Content-Disposition is `attachment`, when it
 * names a file (`filename`, or Content-Type `name`, RFC 2231 forms included), or when it is a leaf whose type is
 * not text/* (images, PDFs, message/rfc822, ...). Erring towards "attachment" is the safe side for rules that
 * refuse attachments. Multiparts are containers: only their parts count.
 *
 * The SMTP proxy and the MCP reader read entities from part headers (`entityOf`, with `parseParameterized` for
 * RFC 2045 §5.1 / RFC 2183 / RFC 2231 parameters, and the enclosing multipart's `defaultPartType`); the IMAP filter
 * builds them from BODYSTRUCTURE, where Dovecot has applied the same defaults.
 */

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

/** Whether one non-multipart entity is an attachment. */
export function isAttachmentEntity(entity: MimeEntity): boolean {
  return (
    entity.disposition === "attachment" ||
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
  /** Lower-cased names; RFC 2231 sections (`filename*0*`) are kept as separate names; the first of a name wins. */
  readonly params: ReadonlyMap<string, string>;
}

/** Parses `value *(";" name "=" (token | quoted-string))`, dropping comments (RFC 2045 §5.1). */
export function parseParameterized(text: string): ParameterizedValue {
  const parts: string[] = [];
  let current = "";
  let quoted = false;
  let valueUnquoted = true;
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === '"' && !quoted && depth === 0 && parts.length === 0) valueUnquoted = false;
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
    if (c === '"') quoted = true;
    else if (c === "(") depth++;
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
  return { value, valueUnquoted, params };
}

/** RFC 2045 §5.1 `token`: printable US-ASCII without SPACE and tspecials. */
const TOKEN_CHARS = "[a-z0-9!#$%&'*+.^_`{|}~-]+";
const TOKEN = new RegExp(`^${TOKEN_CHARS}$`);
const MEDIA_TYPE = new RegExp(`^${TOKEN_CHARS}/${TOKEN_CHARS}$`);

/** Whether `text` is a media type name, `type/subtype` (RFC 2045 §5.1 tokens, any case), and nothing more. */
export function isMediaType(text: string): boolean {
  return MEDIA_TYPE.test(text.toLowerCase());
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
  // A type that is not `token/token`, or a disposition that is not one token (RFC 2045 §5.1, RFC 2183 §2), is
  // read one way here and another by a client (Dovecot takes such a type as text/plain): not known.
  if (t.value !== "" && (!t.valueUnquoted || !MEDIA_TYPE.test(t.value))) return null;
  if (d.value !== "" && (!d.valueUnquoted || !TOKEN.test(d.value))) return null;
  return {
    type: t.value === "" ? defaultType : t.value,
    typeParams: t.params,
    disposition: d.value,
    dispositionParams: d.params,
  };
}
