/**
 * Reads what the policy needs from a message as it streams past (docs/smtp.md "What the message says"): the header
 * section (To, Cc, Subject, Message-ID) and, for `has_attachment`, the MIME structure. Nothing but headers is
 * kept: body lines are only looked at for MIME boundaries. Header sections, fields and attachments are read by
 * src/mail, as the IMAP filter reads them: what cannot be read is unknown, which the final decision denies for any
 * rule that depends on it. A structure that cannot be read (a multipart without a boundary, too many parts, too
 * deep, a part header that is not a header, a line that readers split differently: `#checkBoundary`) leaves
 * has_attachment unknown. A part without Content-Type is text/plain, or message/rfc822 in a multipart/digest
 * (RFC 2046 §5.1.5): an attachment either way when it is a message.
 */

import { isAscii } from "node:buffer";
import { cutText, MAX_ROW_MESSAGE_ID } from "../audit/row.ts";
import {
  ADDRESS_FIELD_NAMES,
  attachmentName,
  type BoundaryLine,
  boundaryParameter,
  defaultPartType,
  delimiterOf,
  entityOf,
  type HeaderField,
  isAttachmentEntity,
  type MimeEntity,
  missingAuthorFields,
  parseHeaderFields,
  readAuthors,
  readBoundaryLine,
  readMessageFields,
  readOriginators,
  usableBoundary,
} from "../mail/index.ts";
import {
  MAX_ADDRESS_FIELD_OCTETS,
  MAX_HEADER_BYTES,
  MAX_HEADER_FIELD_OCTETS,
  MAX_HEADER_LINE_OCTETS,
  MAX_MIME_DEPTH,
  MAX_MIME_PARTS,
  MAX_PART_HEADER_BYTES,
} from "./limits.ts";

const LF = 10;
const CR = 13;
const DASH = 45;

/**
 * Body lines longer than this are only checked for a boundary within their first octets, however they arrive; one
 * that reads as a delimiter there is unknown (`#checkBoundary`): the rest, unseen, could be junk after padding.
 */
const BODY_LINE_PREFIX = 1000;

/**
 * A stretch of the message's body as the inspector split it, for the approvers' preview (src/approvals/preview.ts),
 * so that it reads the parts the rules judged: from the end of a header section, or of a close delimiter, to the
 * next delimiter line of an open multipart or the end of the message. `start` and `end` are offsets in the octets fed
 * to `write`; a segment that a delimiter ends still has the line end before it, which belongs to the delimiter
 * (RFC 2046 §5.1.1).
 * - `leaf`: the body of an entity that is not a multipart (`entity`, with its header `fields`);
 * - `preamble`, `epilogue`: what precedes a multipart's first delimiter, or follows its close delimiter; mail
 *   clients do not show it, but it goes out with the message;
 * - `unread`: a body the inspector could not place in the structure (a header it could not read, a multipart without
 *   a usable boundary or nested too deep, parts past MAX_MIME_PARTS); has_attachment is unknown then.
 */
export type BodySegment = SegmentStart & { readonly end: number };

/** A segment while it is read: where it begins, not yet where it ends. */
type SegmentStart =
  | {
      readonly kind: "leaf";
      readonly entity: MimeEntity;
      /** The values of its Content-Transfer-Encoding fields, as written (none, one, or more). */
      readonly encodings: readonly string[];
      readonly start: number;
    }
  | { readonly kind: "preamble" | "epilogue" | "unread"; readonly start: number };

export interface MessageFacts {
  /** Lower-cased addr-specs of the To and Cc headers; undefined when a header could not be parsed. */
  readonly to: readonly string[] | undefined;
  readonly cc: readonly string[] | undefined;
  /** The Subject as shown ("" when absent); undefined when there are several or it cannot be read. */
  readonly subject: string | undefined;
  readonly hasAttachment: boolean | undefined;
  /**
   * Each attachment found, in order, by its file name (src/mail/attachment.ts `attachmentName`; null: none), for
   * the approvers' preview; `attachmentsComplete` is false when part of the structure could not be read, so that
   * more may be there than the list says.
   */
  readonly attachments: readonly (string | null)[];
  readonly attachmentsComplete: boolean;
  /**
   * The body's segments, in order (`BodySegment`): at most one per part, and a preamble and epilogue each. Kept only
   * when asked for (`keepSegments`): the SMTP session does not need them for each message it inspects.
   */
  readonly segments: readonly BodySegment[];
  /**
   * Lower-cased addr-specs of the From, Sender, Reply-To and Resent- headers and of those that direct answers,
   * receipts and reports (`readOriginators`), checked against the session's identities; undefined when one could not
   * be read, names no address or is doubled.
   */
  readonly originators: readonly string[] | undefined;
  /**
   * Lower-cased addr-specs of From, Sender, Resent-From and Resent-Sender (`readAuthors`), which the send rules'
   * `from` conditions judge as they judge the reverse path; undefined as `originators`.
   */
  readonly authors: readonly string[] | undefined;
  /**
   * The author fields the header lacks that an upstream server writes in from the reverse path (`missingAuthorFields`:
   * `from`, `resent-from`); refused with the null reverse path, where what it writes is `MAILER-DAEMON`. Empty
   * when the header could not be read (`originators` is undefined then, which refuses the message anyway).
   */
  readonly missingAuthors: readonly string[];
  /** For the audit log only (never for policy): the Message-ID as written, shortened. */
  readonly messageId: string | null;
  /** The header section exceeded MAX_HEADER_BYTES: the message must be refused. */
  readonly headerTooLarge: boolean;
  /**
   * The first header field longer than its limit (MAX_ADDRESS_FIELD_OCTETS, MAX_HEADER_FIELD_OCTETS), as
   * `name (octets)`: the message must be refused. Null when none is.
   */
  readonly fieldTooLarge: string | null;
  /**
   * The first line of the message's header longer than MAX_HEADER_LINE_OCTETS before its CRLF, as `name (octets)`
   * (the field it belongs to): a server may cut it where the rules did not (src/smtp/limits.ts). The message must be
   * refused. Null when none is.
   */
  readonly lineTooLong: string | null;
  /**
   * The message holds a NUL octet, which no message may (RFC 5322 §2.2, §3.5; RFC 6152 §3 for 8BITMIME; only
   * BINARYMIME, not offered, would allow it): Postfix cuts a header line at it, after the rules read all of it. The
   * message must be refused.
   */
  readonly hasNul: boolean;
  /**
   * The first control character in a header line the inspector reads (the message's header section and each MIME
   * part's): a C0 control other than HTAB, or DEL, as `0xNN in the header field name` (`in a MIME part's header field
   * name` for a part's), or a C1 control in UTF-8 as `U+00NN ...` (`controlIn`). RFC 5322 allows none in a field body
   * outside its obsolete syntax (§3.2.2, §4: obs-NO-WS-CTL in obs-utext, obs-ctext, obs-qtext), which must not be
   * generated, and none at all in a msg-id (§3.6.4); a reader may act on it as it likes (a terminal on an escape
   * sequence). The message must be refused (docs/smtp.md "What the message says"). Null when there is none. The CRLF
   * ending a line is not one. A bare CR or LF cannot reach the inspector in a send (src/smtp/data.ts closes the
   * connection); a bare CR that does (a held message's bytes) is one.
   */
  readonly headerControl: string | null;
  /**
   * The message holds an 8-bit octet (0x80 or above, anywhere in it). Such a message may go only to an upstream server
   * that offers 8BITMIME (RFC 6152 §3); to any other the replay refuses it (src/smtp/upstream.ts, docs/smtp.md
   * "Replay"). Not a reason to refuse it at the end of DATA: Mailgator offers 8BITMIME itself.
   */
  readonly eightBit: boolean;
}

const enum Phase {
  TopHeaders,
  Body,
  PartHeaders,
}

export class MessageInspector {
  readonly #keepSegments: boolean;

  constructor(options: { readonly keepSegments?: boolean } = {}) {
    this.#keepSegments = options.keepSegments ?? false;
  }

  #phase = Phase.TopHeaders;
  #line: Buffer[] = [];
  #lineLength = 0;
  #headerBytes: Buffer[] = [];
  #headerLength = 0;
  #headerTooLarge = false;
  #fieldTooLarge: string | null = null;
  #lineTooLong: string | null = null;
  #nul = false;
  #eightBit = false;
  /** `MessageFacts.headerControl`, once found. */
  #headerControl: string | null = null;
  /** The line that began the header field being read, which a continuation line belongs to (named by `fieldName`). */
  #fieldLine: Buffer | null = null;
  /** A control found in the part of a header line #hold cut off (past its cap): named when the line ends. */
  #controlPastCap = -1;
  /** The last octet #hold was given: one of a UTF-8 pair that a piece boundary or the cap splits (`controlIn`). */
  #lastOctet = -1;
  #topFields: HeaderField[] | null = null;
  /** The open multiparts (whose close delimiter has not been seen), innermost last: `delimiterOf` their boundary. */
  #delimiters: string[] = [];
  /** Their parts' type when a part has no Content-Type (`defaultPartType`). */
  #partTypes: string[] = [];
  #parts = 0;
  #attachment = false;
  /** The attachments' names (`MessageFacts.attachments`), at most one per part (MAX_MIME_PARTS bounds them). */
  #attachments: (string | null)[] = [];
  #unknown = false;
  /** Octets fed to `write` so far; the offset in the message of the line held in `#line`. */
  #written = 0;
  #lineStart = 0;
  /** The body's segments closed so far, and the one being read (none while a header section is). */
  #segments: BodySegment[] = [];
  #segment: SegmentStart | null = null;
  /** Something in the part header being read left has_attachment unknown: its body is `unread`. */
  #partHeaderUnread = false;

  /** Feeds message content (after dot-unstuffing, CRLF line ends). */
  write(content: Buffer): void {
    if (!this.#nul && content.indexOf(0) !== -1) this.#nul = true;
    if (!this.#eightBit && !isAscii(content)) this.#eightBit = true;
    const base = this.#written;
    this.#written += content.length;
    let from = 0;
    while (from < content.length) {
      // A body outside any multipart (a single part, or the epilogue after the last close delimiter) has nothing
      // left to say: nothing in it can open a part. It is not read line by line.
      if (this.#phase === Phase.Body && this.#delimiters.length === 0) return;
      const lf = content.indexOf(LF, from);
      if (lf === -1) {
        this.#hold(content, from, content.length, base);
        return;
      }
      if (this.#lineLength === 0) {
        if (this.#phase !== Phase.Body) {
          this.#onLine(content.subarray(from, lf + 1), base + from, base + lf + 1);
        } else if (content[from] === DASH && content[from + 1] === DASH) {
          // Only a body line that begins with "--" can be a boundary: the others get no view of their own. It is
          // read as far as BODY_LINE_PREFIX whether it came in one write or several, so that how the client's data
          // was split never changes what the inspector says (#hold keeps the same prefix).
          this.#onLine(content.subarray(from, Math.min(lf + 1, from + BODY_LINE_PREFIX)), base + from, base + lf + 1);
        }
      } else {
        this.#hold(content, from, lf + 1, base);
        const line = Buffer.concat(this.#line);
        this.#line = [];
        this.#lineLength = 0;
        this.#onLine(line, this.#lineStart, base + lf + 1);
      }
      from = lf + 1;
    }
  }

  #hold(content: Buffer, from: number, to: number, base: number): void {
    if (this.#lineLength === 0) this.#lineStart = base + from;
    const cap = this.#phase === Phase.Body ? BODY_LINE_PREFIX : MAX_HEADER_BYTES + 2;
    const room = cap - this.#lineLength;
    const end = Math.min(to, from + Math.max(room, 0));
    // The part of a header line past its cap is not kept, but a control in it still refuses the message.
    if (this.#phase !== Phase.Body && end < to && this.#headerControl === null && this.#controlPastCap === -1)
      this.#controlPastCap = controlIn(content, end, to, end > from ? content[end - 1]! : this.#lastOctet);
    this.#lastOctet = content[to - 1]!;
    if (room <= 0) return;
    this.#line.push(Buffer.from(content.subarray(from, end)));
    this.#lineLength += end - from;
  }

  /**
   * One line including its line end (CRLF, or a truncated prefix); `start` and `end`: where the whole line begins in
   * the message, and where the next one does.
   */
  #onLine(line: Buffer, start: number, end: number): void {
    const blank = line.length === 2 && line[0] === CR;
    switch (this.#phase) {
      case Phase.TopHeaders:
        if (blank) {
          this.#endTopHeaders(end);
          return;
        }
        this.#checkControls(line, "the header");
        this.#addHeaderLine(line, MAX_HEADER_BYTES);
        return;
      case Phase.PartHeaders:
        if (blank) {
          this.#endPartHeaders(end);
          return;
        }
        // `--b: x` is a header field to src/mail, but a delimiter to a reader that takes any line beginning with the
        // boundary as one and ends this header section there (src/mail/boundary.ts).
        if (line[0] === DASH && line[1] === DASH && this.#readBoundaryLine(line).prefixes > 0) this.#partUnread();
        this.#checkControls(line, "a MIME part's header");
        this.#addHeaderLine(line, MAX_PART_HEADER_BYTES);
        return;
      case Phase.Body:
        if (this.#delimiters.length > 0 && line[0] === DASH && line[1] === DASH) this.#checkBoundary(line, start, end);
        return;
    }
  }

  /**
   * Notes the first control character of a header line (`MessageFacts.headerControl`), or of the part of it #hold cut
   * off, naming the field the line begins or continues (RFC 5322 §2.2.3).
   */
  #checkControls(line: Buffer, where: string): void {
    const past = this.#controlPastCap;
    this.#controlPastCap = -1;
    if (this.#headerControl !== null) return;
    if (line[0] !== 0x20 && line[0] !== 0x09) this.#fieldLine = line;
    let code = controlIn(line, 0, line.length, -1);
    if (code === -1) code = past;
    if (code === -1) return;
    // The field is named only now: most messages have no control, and their lines need no name.
    const name = this.#fieldLine === null ? "" : fieldName(this.#fieldLine);
    const digits = code.toString(16).toUpperCase();
    const hex = code < 0x80 ? `0x${digits.padStart(2, "0")}` : `U+${digits.padStart(4, "0")}`;
    this.#headerControl = `${hex} in ${where}${name === "" ? "" : ` field ${name}`}`;
  }

  /** has_attachment is unknown because of the part header being read. */
  #partUnread(): void {
    this.#unknown = true;
    this.#partHeaderUnread = true;
  }

  /** Opens the body segment that begins at `start`, closing the one before (`BodySegment`). */
  #openSegment(segment: SegmentStart | null, start: number): void {
    if (this.#segment !== null && this.#keepSegments) this.#segments.push({ ...this.#segment, end: start });
    this.#segment = segment;
  }

  #addHeaderLine(line: Buffer, cap: number): void {
    // A part's header line past the limit leaves has_attachment unknown: cut downstream, its type or disposition may
    // read otherwise (src/smtp/limits.ts). The line's length includes its CRLF.
    if (line.length > MAX_HEADER_LINE_OCTETS + 2 && this.#phase === Phase.PartHeaders) this.#partUnread();
    if (this.#headerLength + line.length > cap) {
      if (this.#phase === Phase.TopHeaders) this.#headerTooLarge = true;
      else this.#partUnread();
      return;
    }
    this.#headerBytes.push(Buffer.from(line));
    this.#headerLength += line.length;
  }

  #takeHeader(): HeaderField[] | null {
    const fields = parseHeaderFields(Buffer.concat(this.#headerBytes, this.#headerLength));
    this.#headerBytes = [];
    this.#headerLength = 0;
    return fields;
  }

  /** The header section ends; its body begins at `bodyStart`. */
  #endTopHeaders(bodyStart: number): void {
    const over = overLimits(this.#headerBytes);
    this.#fieldTooLarge = over.field;
    this.#lineTooLong = over.line;
    this.#topFields = this.#takeHeader();
    this.#phase = Phase.Body;
    if (this.#topFields === null) {
      this.#unknown = true;
      this.#openSegment({ kind: "unread", start: bodyStart }, bodyStart);
      return;
    }
    this.#openSegment(this.#entity(this.#topFields, bodyStart), bodyStart);
  }

  #endPartHeaders(bodyStart: number): void {
    const fields = this.#takeHeader();
    this.#phase = Phase.Body;
    const unread = this.#partHeaderUnread;
    this.#partHeaderUnread = false;
    if (fields === null) {
      this.#unknown = true;
      this.#openSegment({ kind: "unread", start: bodyStart }, bodyStart);
      return;
    }
    const segment = this.#entity(fields, bodyStart, this.#partTypes.at(-1));
    this.#openSegment(unread ? { kind: "unread", start: bodyStart } : segment, bodyStart);
  }

  /**
   * Classifies one entity from its header fields (`partType`: the enclosing multipart's default type, none for the
   * message itself); a multipart opens its boundary. The segment its body, from `start`, is.
   */
  #entity(fields: readonly HeaderField[], start: number, partType?: string): SegmentStart {
    const unread = { kind: "unread", start } as const;
    const entity = entityOf(fields, partType);
    if (entity === null) {
      this.#unknown = true;
      return unread;
    }
    if (entity.type.startsWith("multipart/")) {
      // RFC 2045 §6.4: a multipart's own encoding is 7bit, 8bit or binary. Under another (base64, say) its parts are
      // not lines of this body, and a reader that decodes it first shows them: unknown.
      if (!identityEncoding(fields)) {
        this.#unknown = true;
        return unread;
      }
      // The plain boundary alone (`boundaryParameter`): beside an RFC 2231 form, readers split on different ones.
      const boundary = boundaryParameter(entity.typeParams);
      if (!usableBoundary(boundary)) {
        this.#unknown = true;
        return unread;
      }
      if (this.#delimiters.length >= MAX_MIME_DEPTH) {
        this.#unknown = true;
        return unread;
      }
      this.#delimiters.push(delimiterOf(boundary));
      this.#partTypes.push(defaultPartType(entity.type));
      return { kind: "preamble", start };
    }
    if (isAttachmentEntity(entity)) {
      this.#attachment = true;
      this.#attachments.push(attachmentName(entity));
    }
    const encodings = fields.filter((f) => f.name === "content-transfer-encoding").map((f) => f.value);
    return { kind: "leaf", entity, encodings, start };
  }

  /**
   * A body line that starts with "--": a delimiter or close delimiter of an open multipart, or text. A line that
   * readers split differently (src/mail/boundary.ts: `--b junk`, `--bjunk`, a line that begins with two open
   * boundaries) leaves has_attachment unknown; the scan goes on with exact delimiters only, the innermost first.
   */
  #checkBoundary(line: Buffer, start: number, end: number): void {
    const read = this.#readBoundaryLine(line);
    if (read.ambiguous) this.#unknown = true;
    if (read.multipart === -1) return;
    // Cut at BODY_LINE_PREFIX: the rest of the line, unseen, could be junk after the padding.
    if (line.length >= BODY_LINE_PREFIX && line[line.length - 1] !== LF) this.#unknown = true;
    this.#openSegment(null, start);
    if (read.close) {
      // The close delimiter: what follows is the epilogue of the enclosing multipart.
      this.#open(read.multipart);
      this.#openSegment({ kind: "epilogue", start: end }, end);
      return;
    }
    // A delimiter: a new part of this multipart; inner ones are closed implicitly.
    this.#open(read.multipart + 1);
    if (++this.#parts > MAX_MIME_PARTS) {
      this.#unknown = true;
      this.#open(0);
      this.#openSegment({ kind: "unread", start: end }, end);
      return;
    }
    this.#phase = Phase.PartHeaders;
  }

  #readBoundaryLine(line: Buffer): BoundaryLine {
    return readBoundaryLine(line.toString("latin1"), this.#delimiters);
  }

  /** Keeps the outermost `count` multiparts open. */
  #open(count: number): void {
    this.#delimiters.length = count;
    this.#partTypes.length = count;
  }

  finish(): MessageFacts {
    if (this.#lineLength > 0) {
      const line = Buffer.concat(this.#line);
      this.#line = [];
      this.#lineLength = 0;
      this.#onLine(line, this.#lineStart, this.#written);
    }
    // A message with no body: its header section ends at the end of the data.
    if (this.#phase === Phase.TopHeaders && !this.#headerTooLarge) this.#endTopHeaders(this.#written);
    if (this.#phase === Phase.PartHeaders) this.#endPartHeaders(this.#written);
    this.#openSegment(null, this.#written);
    const segments = this.#segments;
    const fields = this.#topFields;
    if (fields === null) {
      return {
        to: undefined,
        cc: undefined,
        subject: undefined,
        hasAttachment: undefined,
        attachments: this.#attachments,
        attachmentsComplete: false,
        segments,
        originators: undefined,
        authors: undefined,
        missingAuthors: [],
        messageId: null,
        headerTooLarge: this.#headerTooLarge,
        fieldTooLarge: this.#fieldTooLarge,
        lineTooLong: this.#lineTooLong,
        hasNul: this.#nul,
        headerControl: this.#headerControl,
        eightBit: this.#eightBit,
      };
    }
    const read = readMessageFields(fields);
    const messageId = fields.find((f) => f.name === "message-id")?.value;
    return {
      to: read.to,
      cc: read.cc,
      subject: read.subject,
      hasAttachment: this.#attachment ? true : this.#unknown ? undefined : false,
      attachments: this.#attachments,
      attachmentsComplete: !this.#unknown,
      segments,
      originators: readOriginators(fields),
      authors: readAuthors(fields),
      missingAuthors: missingAuthorFields(fields),
      messageId: messageId === undefined ? null : cutText(messageId, MAX_ROW_MESSAGE_ID),
      headerTooLarge: this.#headerTooLarge,
      fieldTooLarge: this.#fieldTooLarge,
      lineTooLong: this.#lineTooLong,
      hasNul: this.#nul,
      headerControl: this.#headerControl,
      eightBit: this.#eightBit,
    };
  }
}

/** Why a message must be refused, as the SMTP reply gives it and as its audit row says it. */
export interface Unsendable {
  readonly code: number;
  readonly status: string;
  readonly reason: string;
}

/**
 * Why the message may not go upstream as it is (docs/smtp.md "What the message says"), or null: a NUL, a field longer
 * than the server keeps, or a header line longer than it sends on whole would let it cut an address the rules saw;
 * a control character in a header is syntax RFC 5322 forbids to generate (§3.2.2, §4), which readers may act on in
 * ways the rules never saw. The session refuses such a message at the end of DATA, and an approval such a held
 * message (docs/approvals.md "Deciding").
 */
export function unsendable(facts: MessageFacts): Unsendable | null {
  if (facts.hasNul) return { code: 554, status: "5.6.0", reason: "NUL octet in the message" };
  if (facts.headerControl !== null)
    return { code: 554, status: "5.6.0", reason: `control character ${facts.headerControl}` };
  if (facts.fieldTooLarge !== null)
    return { code: 552, status: "5.3.4", reason: `header field too long: ${facts.fieldTooLarge}` };
  if (facts.lineTooLong !== null)
    return { code: 554, status: "5.6.0", reason: `header line too long: ${facts.lineTooLong}` };
  return null;
}

/**
 * The header section's limits, in one pass over its lines (each with its line end): the first field longer than its
 * limit, and the first line longer than MAX_HEADER_LINE_OCTETS before its CRLF, each as `name (octets)` (the line's
 * as the name of the field it is part of), null when none is. A line that begins with a space or tab continues the
 * field before it (RFC 5322 §2.2.3).
 */
function overLimits(lines: readonly Buffer[]): { field: string | null; line: string | null } {
  let name = "";
  let octets = 0;
  let field: string | null = null;
  let line: string | null = null;
  const check = (): string | null => {
    const limit = ADDRESS_FIELD_NAMES.has(name) ? MAX_ADDRESS_FIELD_OCTETS : MAX_HEADER_FIELD_OCTETS;
    return octets > limit ? `${name} (${octets} octets, at most ${limit})` : null;
  };
  for (const l of lines) {
    if (l[0] !== 0x20 && l[0] !== 0x09) {
      field ??= check();
      name = fieldName(l);
      octets = 0;
    }
    octets += l.length;
    const text = l.length - 2;
    if (line === null && text > MAX_HEADER_LINE_OCTETS)
      line = `${name} (${text} octets, at most ${MAX_HEADER_LINE_OCTETS})`;
  }
  field ??= check();
  return { field, line };
}

/**
 * The first control character in `bytes[from, to)` that no generator may write in a header line, as its code point,
 * or -1: a C0 control other than HTAB, or DEL (RFC 5322 §2.2, §3.2.2 and §4.1: obs-NO-WS-CTL is obsolete syntax), or
 * a C1 control written in UTF-8 (U+0080-U+009F, the octets 0xC2 0x80-0x9F: RFC 6532 §3.1 lets a field hold UTF-8,
 * and RFC 5198 §2 allows no C1 control in text for interchange). The CRLF (or the LF) that ends the range is the
 * line's end, not a control; a CR anywhere else is. Other octets of 0x80 and above are read as they are today.
 * `before` is the octet before `from` (-1 for none), so that a pair split there is still read.
 */
function controlIn(bytes: Uint8Array, from: number, to: number, before: number): number {
  let end = to;
  if (end > from && bytes[end - 1] === LF) end--;
  if (end > from && bytes[end - 1] === CR) end--;
  let previous = before;
  for (let i = from; i < end; i++) {
    const c = bytes[i]!;
    if ((c < 0x20 && c !== 0x09) || c === 0x7f) return c;
    if (previous === 0xc2 && c >= 0x80 && c <= 0x9f) return c;
    previous = c;
  }
  return -1;
}

/** The name of the field a header line begins, lower-cased, as it may be shown; "" when the line has no colon. */
function fieldName(line: Buffer): string {
  const colon = line.indexOf(0x3a);
  // Printable ASCII only: the name goes into the reply and the audit row (a field name is printable, RFC 5322 §2.2).
  return (colon === -1 ? "" : line.toString("latin1", 0, Math.min(colon, 80)))
    .trim()
    .toLowerCase()
    .replace(/[^\x21-\x7e]/g, "?");
}

/** The encodings that leave an entity's octets as they are (RFC 2045 §6.2). */
const IDENTITY_ENCODINGS: ReadonlySet<string> = new Set(["7bit", "8bit", "binary"]);

/**
 * True when `fields` give an entity no Content-Transfer-Encoding or one of the identity encodings (RFC 2045 §6.2:
 * 7bit, 8bit, binary; any case). Two such fields, or anything else after the name (a comment included), are not.
 */
function identityEncoding(fields: readonly HeaderField[]): boolean {
  const encodings = fields.filter((f) => f.name === "content-transfer-encoding");
  if (encodings.length === 0) return true;
  if (encodings.length > 1) return false;
  return IDENTITY_ENCODINGS.has(encodings[0]!.value.trim().toLowerCase());
}
