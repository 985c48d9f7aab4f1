/**
 * What counts as an attachment (docs/smtp.md, docs/filtering.md), one definition for both proxies: an entity
 * (the message itself or any MIME part) is an attachment when its Content-Disposition is `attachment`, when it
 * names a file (`filename`, or Content-Type `name`, RFC 2231 forms included), or when it is a leaf whose type is
 * not text/* (images, PDFs, message/rfc822, ...). Erring towards "attachment" is the safe side for rules that
 * refuse attachments. Multiparts are containers: only their parts count.
 */

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
