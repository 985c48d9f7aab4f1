/**
 * The IMAP wire layer: one grammar on bytes for agent commands (server side) and
 * upstream responses (client side). It knows the grammar and nothing about policy.
 * See docs/imap-wire.md.
 */
export * from './limits.ts';
export { WireError, type WireErrorCode, type Parsed } from './errors.ts';
export {
  Framer,
  findLiteralMarker,
  SERVER_LIMITS,
  CLIENT_LIMITS,
  type Frame,
  type FramerEvent,
  type FramerLimits,
  type FramerOptions,
  type Literal,
  type LiteralMarker,
  type LiteralRequest,
} from './framer.ts';
export { Decoder, latin1, type DecoderOptions, type ImapDate, type ImapDateTime, type Section, type Value } from './decoder.ts';
export { encodeMutf7, decodeMutf7 } from './mutf7.ts';
export { STAR, formatSeqSet, seqSetContains, seqSetFromSorted, type SeqRange, type SeqSet } from './seqset.ts';
export { parseCommand, decodeBase64, type Command, type CommandName, type StatusItem } from './command.ts';
export { FETCH_MACROS, type FetchItem, type FetchMacro, type ByteRange, type SimpleFetchItem } from './fetch.ts';
export {
  SEARCH_CHARSETS,
  type SearchKey,
  type SearchReturnOption,
  type SortCriterion,
  type SortKey,
} from './search.ts';
export { parseResponse, type Response, type ResponseCode, type FetchAttr, type NamespaceDescr, type StatusKind } from './response.ts';
export { parseAuthenticateLine, isIdleDone, type AuthenticateLine } from './continuation.ts';
export { Encoder, type EncoderOptions } from './encoder.ts';
export { writeCommand, writeResponse, writeFetchItem, writeFetchAttr, writeSearchKey } from './serialize.ts';
