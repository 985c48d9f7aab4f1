/**
 * The IMAP wire layer: one grammar on bytes for agent commands (server side) and
 * upstream responses (client side). It knows the grammar and nothing about policy.
 * See docs/imap-wire.md.
 */

export {
  type AppendMessage,
  appendMessageSize,
  type CatenatePart,
  type Command,
  type CommandName,
  decodeBase64,
  parseCommand,
  type StatusItem,
  SYSTEM_FLAGS,
  type ThreadAlgorithm,
} from "./command.ts";
export { type AuthenticateLine, isIdleDone, parseAuthenticateLine } from "./continuation.ts";
export {
  Decoder,
  type DecoderOptions,
  type ImapDate,
  type ImapDateTime,
  type Section,
  type Value,
} from "./decoder.ts";
export { Encoder, type EncoderOptions } from "./encoder.ts";
export { type Parsed, WireError, type WireErrorCode } from "./errors.ts";
export { type ByteRange, FETCH_MACROS, type FetchItem, type FetchMacro, type SimpleFetchItem } from "./fetch.ts";
export {
  CLIENT_LIMITS,
  type Frame,
  Framer,
  type FramerEvent,
  type FramerLimits,
  type FramerOptions,
  findLiteralMarker,
  type Literal,
  type LiteralMarker,
  type LiteralRequest,
  SERVER_LIMITS,
} from "./framer.ts";
export * from "./limits.ts";
export { decodeMutf7, encodeMutf7, isInbox } from "./mutf7.ts";
export {
  type FetchAttr,
  type NamespaceDescr,
  parseResponse,
  type Response,
  type ResponseCode,
  type StatusKind,
} from "./response.ts";
export {
  hasModseq,
  SEARCH_CHARSETS,
  type SearchKey,
  type SearchReturnOption,
  type SortCriterion,
  type SortKey,
} from "./search.ts";
export { formatSeqSet, type SeqRange, type SeqSet, STAR, seqSetContains, seqSetFromSorted } from "./seqset.ts";
export { writeCommand, writeFetchAttr, writeFetchItem, writeResponse, writeSearchKey } from "./serialize.ts";
export { latin1 } from "./text.ts";
