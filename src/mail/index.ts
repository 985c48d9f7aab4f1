/** Reading messages for policy, shared by the IMAP and SMTP proxies: headers, encoded words, attachments. */

export { hasParam, isAttachmentEntity, type MimeEntity } from "./attachment.ts";
export { type MessageFields, readMessageFields, UNKNOWN_FIELDS } from "./fields.ts";
export { decodeEncodedWords, type HeaderField, parseHeaderFields } from "./headers.ts";
