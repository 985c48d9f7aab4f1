/**
 * Multipart delimiter lines (RFC 2046 §5.1.1), one reading for the SMTP inspector and the MCP reader
 * (docs/smtp.md "What the message says"). A line is the delimiter of a multipart when it is `--` + its boundary,
 * then only spaces or tabs; its close delimiter when `--` follows the boundary. The RFC forbids a boundary at the
 * start of any other line inside the multipart, and readers disagree on a line that breaks that rule: Dovecot,
 * whose BODYSTRUCTURE the IMAP filter reads, takes the longest open boundary a line begins with as a delimiter
 * whatever follows it (`--b junk`, `--bjunk`), a strict reader takes such a line as text, and one that tries the
 * outermost multipart first splits nested multiparts with the same boundary differently from one that tries the
 * innermost. Such a line is **ambiguous**: what follows it is a part to one reader and text to another, so the
 * caller must not claim to know the message's parts (unknown for has_attachment, a problem for the reader).
 */

export interface BoundaryLine {
  /** How many open multiparts' `--` + boundary the line begins with. */
  readonly prefixes: number;
  /**
   * Index in `open` of the multipart whose delimiter or close delimiter the line is exactly (the innermost such
   * one); -1 when it is none's.
   */
  readonly multipart: number;
  /** It is that multipart's close delimiter (`--` + boundary + `--`). */
  readonly close: boolean;
  /** It begins with an open boundary without being exactly its delimiter, or with more than one open boundary. */
  readonly ambiguous: boolean;
}

const NONE: BoundaryLine = { prefixes: 0, multipart: -1, close: false, ambiguous: false };

/** Only spaces or tabs, then the line end (if any). */
const DELIMITER_REST = /^[ \t]*\r?\n?$/;
const CLOSE_REST = /^--[ \t]*\r?\n?$/;

/**
 * RFC 2046 §5.1.1: a boundary is 1 to 70 of `bchars` (letters, digits, `'()+_,-./:=?` and space), not ending in a
 * space. Anything else makes the multipart unknown, since readers split on it differently: Dovecot cuts a longer
 * boundary at 80 characters and takes any line that begins with `--` and those 80 as a delimiter, where this reader
 * would need the whole boundary.
 */
const BOUNDARY = /^[0-9A-Za-z'()+_,\-./:=? ]*[0-9A-Za-z'()+_,\-./:=?]$/;
export const MAX_BOUNDARY_LENGTH = 70;

/**
 * A multipart's boundary from its Content-Type parameters (lower-cased names, RFC 2231 forms separate: src/mail
 * `parseParameterized`): the plain `boundary`; undefined when it is absent or given in an RFC 2231 form too
 * (`boundary*`, `boundary*0`, ...), on its own or beside the plain one. Readers split such a multipart on different
 * boundaries: Dovecot on the plain value, ignoring `boundary*`, and with the plain one beside `boundary*0` on the
 * plain one; a reader that prefers the RFC 2231 value, as for a file name (src/mail/attachment.ts
 * `parameterValue`), on the other. What is text between the delimiters of one is a part between those of the other.
 */
export function boundaryParameter(params: ReadonlyMap<string, string>): string | undefined {
  for (const name of params.keys()) if (name.startsWith("boundary*")) return undefined;
  return params.get("boundary");
}

/** Whether a multipart's `boundary` parameter is one this reader splits on (`BOUNDARY`). */
export function usableBoundary(boundary: string | undefined): boundary is string {
  return boundary !== undefined && boundary.length <= MAX_BOUNDARY_LENGTH && BOUNDARY.test(boundary);
}

/** `--` + boundary as the latin1 text of its UTF-8 octets, the form `readBoundaryLine` compares lines in. */
export function delimiterOf(boundary: string): string {
  return Buffer.from(`--${boundary}`, "utf8").toString("latin1");
}

/**
 * Reads one line (latin1 text of its octets, with or without its line end) against the open multiparts' delimiters
 * (`delimiterOf`, outermost first).
 */
export function readBoundaryLine(line: string, open: readonly string[]): BoundaryLine {
  if (!line.startsWith("--")) return NONE;
  let prefixes = 0;
  let multipart = -1;
  let close = false;
  let junk = false;
  for (let i = open.length - 1; i >= 0; i--) {
    const delimiter = open[i]!;
    if (!line.startsWith(delimiter)) continue;
    prefixes++;
    const rest = line.slice(delimiter.length);
    const isClose = CLOSE_REST.test(rest);
    if (!isClose && !DELIMITER_REST.test(rest)) junk = true;
    else if (multipart === -1) {
      multipart = i;
      close = isClose;
    }
  }
  return prefixes === 0 ? NONE : { prefixes, multipart, close, ambiguous: junk || prefixes > 1 };
}
