/**
 * Reading a fetched message for `mailgator mcp --agent` (docs/mcp.md "Agent tools"): its headers, its text (HTML
 * turned into readable text), its attachments. Header sections and MIME entities are read by src/mail, the reader
 * both proxies decide with, so a part is an attachment here exactly when it is one for `has_attachment` rules.
 *
 * What cannot be read is said, never guessed: an unknown charset or transfer encoding, a body that is not well formed
 * in its transfer encoding or charset (read by src/mail/transfer.ts, as the approvers' preview reads it), a multipart
 * without a boundary, a part header src/mail refuses, a line that mail readers split differently
 * (src/mail/boundary.ts; the SMTP inspector calls has_attachment unknown for the same lines). Limits: MAX_MIME_DEPTH
 * and MAX_MIME_PARTS, past which the rest of the message is reported as unread. A part without Content-Type is
 * text/plain, or message/rfc822 (an attachment) in a multipart/digest (RFC 2046 §5.1.5).
 */

import {
  attachmentName,
  boundaryParameter,
  decodeEncodedWords,
  defaultPartType,
  delimiterOf,
  entityOf,
  type HeaderField,
  isAttachmentEntity,
  oneLine,
  parseHeaderFields,
  readBoundaryLine,
  readUnstructured,
  usableBoundary,
} from "../mail/index.ts";
import { decodeCharset, decodeTransferEncoding } from "../mail/transfer.ts";

/** Deepest multipart nesting read (RFC 2046 sets none; the SMTP inspector stops at a similar depth). */
export const MAX_MIME_DEPTH = 16;
/** Most MIME entities read in one message. */
export const MAX_MIME_PARTS = 500;

export interface AttachmentInfo {
  /** 1-based, in the order the parts appear: what `get_attachment` takes. */
  readonly index: number;
  readonly filename: string;
  readonly type: string;
  /** Decoded size in bytes; null when the transfer encoding is unknown. */
  readonly size: number | null;
}

export interface ReadMessage {
  readonly headers: readonly HeaderField[];
  /** The text parts (text/plain as is, text/html as readable text), in order; "" when there are none. */
  readonly text: string;
  readonly attachments: readonly AttachmentInfo[];
  /** What could not be read, for the reader to see (e.g. "a part in charset x-foo was not decoded"). */
  readonly problems: readonly string[];
}

interface Part {
  readonly headers: readonly HeaderField[] | null;
  readonly body: Uint8Array;
}

const CRLF_CRLF = /\r?\n\r?\n/;

/** Splits an entity into its header section and body (both as bytes). */
function splitEntity(bytes: Uint8Array): Part {
  const latin = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("latin1");
  if (/^\r?\n/.test(latin)) return { headers: [], body: bytes.subarray(latin.startsWith("\r\n") ? 2 : 1) };
  const m = CRLF_CRLF.exec(latin);
  if (m === null) return { headers: parseHeaderFields(bytes), body: new Uint8Array(0) };
  return { headers: parseHeaderFields(bytes.subarray(0, m.index)), body: bytes.subarray(m.index + m[0].length) };
}

/** Where an entity sits: what the multiparts around it make of it. */
interface Place {
  /** Its type when it has no Content-Type (`defaultPartType` of its multipart); undefined for the message. */
  readonly partType: string | undefined;
  /** The delimiters (`delimiterOf`) of the multiparts around it, outermost first. */
  readonly enclosing: readonly string[];
  /** The delimiter line that ended it in its multipart; null when the message ended it. */
  readonly end: string | null;
}

const MESSAGE: Place = { partType: undefined, enclosing: [], end: null };

/** One body part of a multipart, with the line that ended it. */
interface BodyPart {
  readonly bytes: Uint8Array;
  readonly end: string | null;
}

/** Said once per message when `splitMultipart` finds an ambiguous line. */
const AMBIGUOUS_BOUNDARY =
  "a line begins with a part boundary but is not that boundary's delimiter (RFC 2046 §5.1.1): mail readers split " +
  "such a message differently, and others may show parts that are not here";

/**
 * The body parts of a multipart body (RFC 2046 §5.1.1), split at the exact delimiters of `delimiter`; `ambiguous`
 * when a line is one src/mail/boundary.ts calls ambiguous while this multipart is open, as the SMTP inspector reads
 * them: a line of the body against this and the enclosing multiparts' delimiters, and, when the body has no close
 * delimiter, the line that ended it (the multipart was still open there).
 */
function splitMultipart(body: Uint8Array, delimiter: string, place: Place): { parts: BodyPart[]; ambiguous: boolean } {
  const latin = Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString("latin1");
  const open = [...place.enclosing, delimiter];
  const own = open.length - 1;
  const parts: BodyPart[] = [];
  let ambiguous = false;
  let start = -1;
  let pos = 0;
  while (pos <= latin.length) {
    const lineEnd = latin.indexOf("\n", pos);
    const end = lineEnd === -1 ? latin.length : lineEnd;
    const line = latin.slice(pos, end).replace(/\r$/, "");
    const read = readBoundaryLine(line, open);
    if (read.ambiguous) ambiguous = true;
    if (read.multipart === own) {
      if (start !== -1) {
        // The CRLF before the delimiter belongs to the delimiter (RFC 2046 §5.1.1).
        let stop = pos;
        if (stop > start && latin[stop - 1] === "\n") stop--;
        if (stop > start && latin[stop - 1] === "\r") stop--;
        parts.push({ bytes: body.subarray(start, stop), end: line });
      }
      if (read.close) return { parts, ambiguous };
      start = end + 1;
    }
    if (lineEnd === -1) break;
    pos = lineEnd + 1;
  }
  if (start !== -1 && start < body.length) parts.push({ bytes: body.subarray(start), end: place.end });
  if (place.end !== null && readBoundaryLine(place.end, [delimiter]).prefixes > 0) ambiguous = true;
  return { parts, ambiguous };
}

function field(headers: readonly HeaderField[], name: string): string | undefined {
  return headers.find((f) => f.name === name)?.value;
}

const ENTITIES: Readonly<Record<string, string>> = {
  amp: "&",
  lt: "<",
  gt: ">",
  quot: '"',
  apos: "'",
  nbsp: " ",
};

/** Elements whose content is not text to read (RFC 2854 defers to HTML: script and style are not rendered). */
const HIDDEN_ELEMENTS: ReadonlySet<string> = new Set(["script", "style", "head", "title"]);
const BLOCK_ENDS: ReadonlySet<string> = new Set([
  "p",
  "div",
  "h1",
  "h2",
  "h3",
  "h4",
  "h5",
  "h6",
  "tr",
  "table",
  "ul",
  "ol",
  "blockquote",
  "section",
  "article",
]);
const TAG_NAME = /^(\/?)([a-z][a-z0-9]*)/i;
const HREF = /\bhref\s*=\s*["']([^"']*)["']/i;

/** Trailing spaces and tabs of each line removed, without a regular expression (a long run would backtrack). */
function trimLineEnds(text: string): string {
  return text
    .split("\n")
    .map((line) => {
      let e = line.length;
      while (e > 0 && (line[e - 1] === " " || line[e - 1] === "\t")) e--;
      return line.slice(0, e);
    })
    .join("\n");
}

/**
 * HTML as readable text: no comments, scripts, styles or tags; block ends and <br> as line breaks; links with their
 * targets; entities decoded. One pass over the text, each part read once: HTML from a sender must not be able to
 * make it slow (regular expressions over the whole text backtrack quadratically on unclosed comments and tags). A
 * comment or hidden element without its end is a tag like any other.
 */
export function htmlToText(html: string): string {
  const out: string[] = [];
  /** Closing tags known to be absent past some point, so never searched for again. */
  const absent = new Set<string>();
  const closing = (name: string, from: number): { start: number; end: number } | null => {
    if (absent.has(name)) return null;
    const re = new RegExp(`<\\/${name}\\s*>`, "gi");
    re.lastIndex = from;
    const m = re.exec(html);
    if (m === null) {
      absent.add(name);
      return null;
    }
    return { start: m.index, end: m.index + m[0].length };
  };
  let anchor: { href: string; at: number; close: number } | null = null;
  let i = 0;
  while (i < html.length) {
    const lt = html.indexOf("<", i);
    if (lt === -1) {
      out.push(html.slice(i));
      break;
    }
    out.push(html.slice(i, lt));
    if (html.startsWith("<!--", lt) && !absent.has("-->")) {
      const end = html.indexOf("-->", lt + 4);
      if (end !== -1) {
        i = end + 3;
        continue;
      }
      absent.add("-->");
    }
    const gt = html.indexOf(">", lt);
    if (gt === -1) {
      out.push(html.slice(lt));
      break;
    }
    i = gt + 1;
    const tag = html.slice(lt + 1, gt);
    const m = TAG_NAME.exec(tag);
    if (m === null) continue;
    const isEnd = m[1] === "/";
    const name = m[2]!.toLowerCase();
    if (!isEnd && HIDDEN_ELEMENTS.has(name)) {
      const close = closing(name, i);
      if (close !== null) i = close.end;
    } else if (name === "br") out.push("\n");
    else if (name === "li" && !isEnd) out.push("\n- ");
    else if (isEnd && BLOCK_ENDS.has(name)) out.push("\n");
    else if (name === "a" && !isEnd && anchor === null) {
      const href = HREF.exec(tag);
      const close = href === null ? null : closing("a", i);
      if (href !== null && close !== null) anchor = { href: href[1]!, at: out.length, close: close.start };
    } else if (name === "a" && isEnd && anchor !== null && lt === anchor.close) {
      const label = out.splice(anchor.at).join("");
      const href = anchor.href;
      out.push(label.trim() === "" || label.includes(href) ? `${label} ${href}` : `${label} (${href})`);
      anchor = null;
    }
  }
  const text = out.join("").replace(/&(#x[0-9a-f]+|#\d+|[a-z]+);/gi, (whole, name: string) => {
    if (name.startsWith("#")) {
      const code = name[1] === "x" || name[1] === "X" ? Number.parseInt(name.slice(2), 16) : Number(name.slice(1));
      return code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : whole;
    }
    return ENTITIES[name.toLowerCase()] ?? whole;
  });
  return trimLineEnds(text)
    .replace(/\n{3,}/g, "\n\n")
    .trim();
}

interface Walk {
  readonly texts: string[];
  readonly attachments: (AttachmentInfo & { readonly bytes: Uint8Array | null })[];
  readonly problems: string[];
  parts: number;
}

function walk(part: Part, depth: number, state: Walk, place: Place): void {
  if (++state.parts > MAX_MIME_PARTS) {
    if (state.parts === MAX_MIME_PARTS + 1)
      state.problems.push(`more than ${MAX_MIME_PARTS} parts: the rest was not read`);
    return;
  }
  if (part.headers === null) {
    state.problems.push("a part whose header could not be read was left out");
    return;
  }
  const entity = entityOf(part.headers, place.partType);
  if (entity === null) {
    state.problems.push("a part with two Content-Type or Content-Disposition fields, or a malformed one, was left out");
    return;
  }
  if (entity.type.startsWith("multipart/")) {
    if (depth >= MAX_MIME_DEPTH) {
      state.problems.push(`parts nested deeper than ${MAX_MIME_DEPTH} were not read`);
      return;
    }
    const boundary = boundaryParameter(entity.typeParams);
    const delimiter = usableBoundary(boundary) ? delimiterOf(boundary) : null;
    const split = delimiter === null ? null : splitMultipart(part.body, delimiter, place);
    if (split?.ambiguous && !state.problems.includes(AMBIGUOUS_BOUNDARY)) state.problems.push(AMBIGUOUS_BOUNDARY);
    if (delimiter === null || split === null || split.parts.length === 0) {
      state.problems.push("a multipart part without a usable boundary was not read");
      return;
    }
    const partType = defaultPartType(entity.type);
    const enclosing = [...place.enclosing, delimiter];
    const children = split.parts.map((p) => ({
      part: splitEntity(p.bytes),
      place: { partType, enclosing, end: p.end },
    }));
    if (entity.type === "multipart/alternative") {
      // RFC 2046 §5.1.4: the parts say the same thing; show the plain one when there is one.
      const typeOf = (p: Part) => (p.headers === null ? undefined : entityOf(p.headers, partType)?.type);
      const chosen = children.find((c) => typeOf(c.part) === "text/plain") ?? children[children.length - 1];
      if (chosen !== undefined) walk(chosen.part, depth + 1, state, chosen.place);
      for (const other of children) {
        const type = typeOf(other.part);
        if (other === chosen || type === undefined) continue;
        if (!type.startsWith("text/") && !type.startsWith("multipart/"))
          walk(other.part, depth + 1, state, other.place);
      }
      return;
    }
    for (const child of children) walk(child.part, depth + 1, state, child.place);
    return;
  }
  // Read as the approvers' preview reads a body (src/mail/transfer.ts): base64 with a character outside its alphabet,
  // a quoted-printable `=` that is no escape, an unknown or byte-order-less charset, or octets that are not text in
  // theirs are not decoded, since readers differ on what they stand for.
  // A view of the part's octets, not a copy (Buffer.from of a Uint8Array copies it; a part may be megabytes).
  const body = Buffer.from(part.body.buffer, part.body.byteOffset, part.body.byteLength);
  const decoded = decodeTransferEncoding(body, field(part.headers, "content-transfer-encoding"));
  const octets = "octets" in decoded ? decoded.octets : null;
  const isText = entity.type === "text/plain" || entity.type === "text/html";
  if (!isAttachmentEntity(entity)) {
    // text/plain and text/html, or another text/* leaf (text/calendar, ...): shown as text too.
    const read = "octets" in decoded ? decodeCharset(decoded.octets, entity.typeParams.get("charset")) : decoded;
    if ("problem" in read) {
      state.problems.push(`a ${isText ? "text" : entity.type} part was not decoded: ${read.problem}`);
      return;
    }
    if (entity.type === "text/html") state.texts.push(htmlToText(read.text));
    else state.texts.push(read.text.replace(/\r\n/g, "\n").trimEnd());
    return;
  }
  // Content-Disposition `filename`, else Content-Type `name`, RFC 2231 forms and continuations included.
  const named = attachmentName(entity);
  state.attachments.push({
    index: state.attachments.length + 1,
    filename: named ?? `part-${state.attachments.length + 1}`,
    type: entity.type || "application/octet-stream",
    size: octets === null ? null : octets.length,
    bytes: octets,
  });
}

function walkMessage(raw: Uint8Array): { read: ReadMessage; bytes: (Uint8Array | null)[] } {
  const top = splitEntity(raw);
  const state: Walk = { texts: [], attachments: [], problems: [], parts: 0 };
  walk(top, 0, state, MESSAGE);
  return {
    read: {
      headers: top.headers ?? [],
      text: state.texts.join("\n\n"),
      attachments: state.attachments.map(({ bytes: _bytes, ...info }) => info),
      problems: top.headers === null ? ["the message header could not be read", ...state.problems] : state.problems,
    },
    bytes: state.attachments.map((a) => a.bytes),
  };
}

/** Reads a whole message (RFC 5322 bytes, as fetched). */
export function readMessage(raw: Uint8Array): ReadMessage {
  return walkMessage(raw).read;
}

/** The decoded bytes of attachment `index` (1-based, as `readMessage` numbers them); undefined when there is none. */
export function attachmentBytes(
  raw: Uint8Array,
  index: number,
): { info: AttachmentInfo; bytes: Uint8Array | null } | undefined {
  const { read, bytes } = walkMessage(raw);
  const info = read.attachments[index - 1];
  return info === undefined ? undefined : { info, bytes: bytes[index - 1] ?? null };
}

/**
 * A header as shown: encoded words decoded where they can be, else the raw value; always one line, so that a
 * decoded CR LF cannot make it read as another header or another listing line.
 */
export function headerText(headers: readonly HeaderField[], name: string): string | undefined {
  const values = headers.filter((f) => f.name === name).map((f) => f.value);
  if (values.length === 0) return undefined;
  return values.map((v) => oneLine(readUnstructured(v) ?? decodeEncodedWords(v) ?? v)).join(", ");
}
