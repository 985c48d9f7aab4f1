/**
 * What counts as an attachment (docs/smtp.md, docs/filtering.md), one definition for both proxies: an entity
 * (the message itself or any MIME part) is an attachment when its Content-Disposition is `attachment`, when it
 * names a file (`filename`, or Content-Type `name`, RFC 2231 forms included), or when it is a leaf whose type is
 * not text/* (images, PDFs, message/rfc822, ...). Erring towards "attachment" is the safe side for rules that
 * refuse attachments. Multiparts are containers: only their parts count.
 *
 * The SMTP proxy reads entities from part headers (`entityOf`, with `parseParameterized` for RFC 2045 §5.1 /
 * RFC 2183 / RFC 2231 parameters); the IMAP filter builds them from BODYSTRUCTURE.
 */

import type { HeaderField } from "./headers.ts";

export interface MimeEntity {
  /** Lower-cased `type/subtype`, "" when absent. */
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
  /** Lower-cased names; RFC 2231 sections (`filename*0*`) are kept as separate names; the first of a name wins. */
  readonly params: ReadonlyMap<string, string>;
}

/** Parses `value *(";" name "=" (token | quoted-string))`, dropping comments (RFC 2045 §5.1). */
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
  return { value, params };
}

/**
 * The entity an unfolded header section describes (Content-Type defaults to text/plain, RFC 2045 §5.2); null when
 * it names its Content-Type or Content-Disposition more than once, since which one a client follows is a guess.
 */
export function entityOf(fields: readonly HeaderField[]): MimeEntity | null {
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
  const t = parseParameterized(type ?? "text/plain");
  const d = parseParameterized(disposition ?? "");
  return { type: t.value, typeParams: t.params, disposition: d.value, dispositionParams: d.params };
}
