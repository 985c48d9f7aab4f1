/**
 * Reading messages for policy, one reader for the IMAP and SMTP proxies and for the config: header sections,
 * encoded words, address lists and envelope mailboxes, MIME parameters and attachments (docs/filtering.md).
 */

export {
  type EnvelopeAddress,
  MAX_ADDRESS_FIELD_CHARS,
  mailboxProblem,
  type ParsedAddressList,
  parseAddressList,
  readEnvelopeAddress,
  subaddressMailbox,
} from "./address.ts";
export {
  attachmentName,
  defaultPartType,
  entityOf,
  hasParam,
  isAttachmentEntity,
  isMediaType,
  type MimeEntity,
  type ParameterizedValue,
  parameterValue,
  parseParameterized,
} from "./attachment.ts";
export {
  type BoundaryLine,
  boundaryParameter,
  delimiterOf,
  MAX_BOUNDARY_LENGTH,
  readBoundaryLine,
  usableBoundary,
} from "./boundary.ts";
export { clean, escapedLines, escapes, oneLine, terminalJson } from "./display.ts";
export { decodeEncodedWords, readableText, readUnstructured, unreadableGlobText } from "./encoded-words.ts";
export {
  ADDRESS_FIELD_NAMES,
  type MessageFields,
  missingAuthorFields,
  readAuthors,
  readMessageFields,
  readOriginators,
  readSubject,
  UNKNOWN_FIELDS,
} from "./fields.ts";
export { type HeaderField, parseHeaderFields } from "./headers.ts";
export { type Decoded, decodeCharset, decodeTransferEncoding } from "./transfer.ts";
