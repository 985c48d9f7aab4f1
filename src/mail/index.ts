/** Reading messages for policy, shared by the IMAP and SMTP proxies: headers, encoded words, attachments. */
export { parseHeaderFields, decodeEncodedWords, type HeaderField } from "./headers.ts";
export { readMessageFields, UNKNOWN_FIELDS, type MessageFields } from "./fields.ts";
export { hasParam, isAttachmentEntity, type MimeEntity } from "./attachment.ts";
