/**
 * Reads what the policy needs from a message as it streams past (docs/smtp.md "What the message says"): the header
 * section (To, Cc, Subject, Message-ID) and, for `has_attachment`, the MIME structure. Nothing but headers is
 * kept: body lines are only looked at for MIME boundaries. Header sections, fields and attachments are read by
 * src/mail, as the IMAP filter reads them: what cannot be read is unknown, which the final decision denies for any
 * rule that depends on it. A structure that cannot be read (a multipart without a boundary, too many parts, too
 * deep, a part header that is not a header) leaves has_attachment unknown.
 */

import { entityOf, type HeaderField, isAttachmentEntity, parseHeaderFields, readMessageFields } from "../mail/index.ts";
import { MAX_HEADER_BYTES, MAX_MIME_DEPTH, MAX_MIME_PARTS, MAX_PART_HEADER_BYTES } from "./limits.ts";

const LF = 10;
const CR = 13;
const DASH = 45;

/** Body lines longer than this are only checked for a boundary within their first octets. */
const BODY_LINE_PREFIX = 1000;

export interface MessageFacts {
  /** Lower-cased addr-specs of the To and Cc headers; undefined when a header could not be parsed. */
  readonly to: readonly string[] | undefined;
  readonly cc: readonly string[] | undefined;
  /** The Subject as shown ("" when absent); undefined when there are several or it cannot be read. */
  readonly subject: string | undefined;
  readonly hasAttachment: boolean | undefined;
  /** For the audit log only (never for policy): the Message-ID as written, shortened. */
  readonly messageId: string | null;
  /** The header section exceeded MAX_HEADER_BYTES: the message must be refused. */
  readonly headerTooLarge: boolean;
}

const enum Phase {
  TopHeaders,
  Body,
  PartHeaders,
}

export class MessageInspector {
  #phase = Phase.TopHeaders;
  #line: Buffer[] = [];
  #lineLength = 0;
  #headerBytes: Buffer[] = [];
  #headerLength = 0;
  #headerTooLarge = false;
  #topFields: HeaderField[] | null = null;
  /** Open multipart boundaries, innermost last, as the bytes of "--" + boundary. */
  #boundaries: Buffer[] = [];
  #parts = 0;
  #attachment = false;
  #unknown = false;

  /** Feeds message content (after dot-unstuffing, CRLF line ends). */
  write(content: Buffer): void {
    let from = 0;
    while (from < content.length) {
      const lf = content.indexOf(LF, from);
      if (lf === -1) {
        this.#hold(content, from, content.length);
        return;
      }
      if (this.#lineLength === 0) {
        this.#onLine(content.subarray(from, lf + 1));
      } else {
        this.#hold(content, from, lf + 1);
        const line = Buffer.concat(this.#line);
        this.#line = [];
        this.#lineLength = 0;
        this.#onLine(line);
      }
      from = lf + 1;
    }
  }

  #hold(content: Buffer, from: number, to: number): void {
    const cap = this.#phase === Phase.Body ? BODY_LINE_PREFIX : MAX_HEADER_BYTES + 2;
    const room = cap - this.#lineLength;
    if (room <= 0) return;
    const end = Math.min(to, from + room);
    this.#line.push(Buffer.from(content.subarray(from, end)));
    this.#lineLength += end - from;
  }

  /** One line including its line end (CRLF, or a truncated prefix). */
  #onLine(line: Buffer): void {
    const blank = line.length === 2 && line[0] === CR;
    switch (this.#phase) {
      case Phase.TopHeaders:
        if (blank) {
          this.#endTopHeaders();
          return;
        }
        this.#addHeaderLine(line, MAX_HEADER_BYTES);
        return;
      case Phase.PartHeaders:
        if (blank) {
          this.#endPartHeaders();
          return;
        }
        this.#addHeaderLine(line, MAX_PART_HEADER_BYTES);
        return;
      case Phase.Body:
        if (this.#boundaries.length > 0 && line[0] === DASH && line[1] === DASH) this.#checkBoundary(line);
        return;
    }
  }

  #addHeaderLine(line: Buffer, cap: number): void {
    if (this.#headerLength + line.length > cap) {
      if (this.#phase === Phase.TopHeaders) this.#headerTooLarge = true;
      else this.#unknown = true;
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

  #endTopHeaders(): void {
    this.#topFields = this.#takeHeader();
    this.#phase = Phase.Body;
    if (this.#topFields === null) {
      this.#unknown = true;
      return;
    }
    this.#entity(this.#topFields);
  }

  #endPartHeaders(): void {
    const fields = this.#takeHeader();
    this.#phase = Phase.Body;
    if (fields === null) {
      this.#unknown = true;
      return;
    }
    this.#entity(fields);
  }

  /** Classifies one entity from its header fields; a multipart opens its boundary. */
  #entity(fields: readonly HeaderField[]): void {
    const entity = entityOf(fields);
    if (entity === null) {
      this.#unknown = true;
      return;
    }
    if (entity.type.startsWith("multipart/")) {
      const boundary = entity.typeParams.get("boundary");
      if (boundary === undefined || boundary === "" || boundary.length > 200) {
        this.#unknown = true;
        return;
      }
      if (this.#boundaries.length >= MAX_MIME_DEPTH) {
        this.#unknown = true;
        return;
      }
      this.#boundaries.push(Buffer.from(`--${boundary}`, "utf8"));
      return;
    }
    if (isAttachmentEntity(entity)) this.#attachment = true;
  }

  #checkBoundary(line: Buffer): void {
    for (let depth = this.#boundaries.length - 1; depth >= 0; depth--) {
      const boundary = this.#boundaries[depth]!;
      if (line.length < boundary.length || !line.subarray(0, boundary.length).equals(boundary)) continue;
      const rest = line.subarray(boundary.length).toString("latin1");
      if (/^[ \t]*\r?\n?$/.test(rest)) {
        // A delimiter: a new part of this multipart; inner ones are closed implicitly.
        this.#boundaries.length = depth + 1;
        if (++this.#parts > MAX_MIME_PARTS) {
          this.#unknown = true;
          this.#boundaries = [];
          return;
        }
        this.#phase = Phase.PartHeaders;
        return;
      }
      if (/^--[ \t]*\r?\n?$/.test(rest)) {
        // The close delimiter: what follows is the epilogue of the enclosing multipart.
        this.#boundaries.length = depth;
        return;
      }
    }
  }

  finish(): MessageFacts {
    if (this.#lineLength > 0) {
      const line = Buffer.concat(this.#line);
      this.#line = [];
      this.#lineLength = 0;
      this.#onLine(line);
    }
    // A message with no body: its header section ends at the end of the data.
    if (this.#phase === Phase.TopHeaders && !this.#headerTooLarge) this.#endTopHeaders();
    if (this.#phase === Phase.PartHeaders) this.#endPartHeaders();
    const fields = this.#topFields;
    if (fields === null) {
      return {
        to: undefined,
        cc: undefined,
        subject: undefined,
        hasAttachment: undefined,
        messageId: null,
        headerTooLarge: this.#headerTooLarge,
      };
    }
    const read = readMessageFields(fields);
    const messageId = fields.find((f) => f.name === "message-id")?.value;
    return {
      to: read.to,
      cc: read.cc,
      subject: read.subject,
      hasAttachment: this.#attachment ? true : this.#unknown ? undefined : false,
      messageId: messageId === undefined ? null : messageId.slice(0, 256),
      headerTooLarge: this.#headerTooLarge,
    };
  }
}
