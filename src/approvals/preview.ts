/**
 * What approvers are shown of a held message (docs/approvals.md "What approvers see"): sender, every envelope
 * recipient (those outside the sender's domain marked), subject, size, attachment file names with the SMTP
 * inspector's verdict beside them, and the first lines of the text, saying when there is more. The subject is read
 * by the parser the policy reads it with (src/mail: `parseHeaderFields`, `readMessageFields`), so the approver sees
 * the subject the rules judged, and is told when there was none they could read. The header is read as UTF-8, as
 * the policy reads it (RFC 6532); an octet that is not UTF-8 is shown as U+FFFD.
 *
 * The text is the message's MIME structure as the SMTP inspector splits it (src/smtp/inspect.ts `segments`): every text
 * part, an attachment of a text type included, its transfer encoding (RFC 2045 §6: base64, quoted-printable) and
 * charset decoded (src/mail/transfer.ts), each under a label naming its type (`[text/plain]`, `[text/html]`, the HTML
 * as written, tags and all; `[text/csv attachment]`), and a preamble or epilogue that is not blank, which goes out too.
 * What cannot be decoded (an unknown transfer encoding or charset, invalid base64 or quoted-printable, octets not in
 * the charset, a body the inspector could not place) is shown as written and labelled `not decoded`, and the preview
 * then says that not all of the text is shown. The preview is a hint for a person: the decision is about the exact
 * stored bytes, which the link is bound to by their SHA-256.
 */

import {
  decodeCharset,
  decodeEncodedWords,
  decodeTransferEncoding,
  type HeaderField,
  isAttachmentEntity,
  parameterValue,
  parseHeaderFields,
  readMessageFields,
} from "../mail/index.ts";
import { type BodySegment, MessageInspector } from "../smtp/inspect.ts";
import type { Preview, UnreadSubject } from "./store.ts";

/**
 * Lines shown of each text part (its label aside): each part has its own, so that a long plain part cannot push the
 * HTML part beside it, which may say something else, out of view.
 */
export const PREVIEW_LINES = 12;
/** Text parts shown (a preamble or epilogue counts as one); a part past them is not shown, and that is said. */
export const PREVIEW_TEXT_PARTS = 4;
/** Characters per shown line, and per attachment name and Subject field. */
export const PREVIEW_LINE_CHARS = 200;
/** Attachment names kept and shown; the rest are counted. */
export const PREVIEW_ATTACHMENTS = 20;
/** Subject fields shown as written when the subject cannot be read. */
export const PREVIEW_SUBJECT_FIELDS = 4;
/** Header fields shown as the recipient's client shows them (From, Sender, Reply-To, To, Cc); the rest are counted. */
export const PREVIEW_HEADER_FIELDS = 10;
/** The message's other header fields shown (all but those and Subject); the rest are counted. */
export const PREVIEW_OTHER_FIELDS = 20;
/** The fields `headerFields` shows, by their lower-cased name (RFC 5322 §3.6): the ones a mail client shows. */
const AUTHOR_FIELDS: ReadonlySet<string> = new Set(["from", "sender", "reply-to", "to", "cc"]);
/**
 * Octets of each text part (as sent, before decoding; attachments are not read) read for the preview; and of the
 * message searched for its header.
 */
export const PREVIEW_SCAN_BYTES = 256 * 1024;

/** Not fatal: an octet that is not UTF-8 becomes U+FFFD, visibly, as in src/mail/headers.ts. */
const utf8 = new TextDecoder("utf-8");

/**
 * `text` cut at PREVIEW_LINE_CHARS characters, saying so when it was (`… (what cut)`): what follows the cut is what
 * the recipient reads too, and the approver must not take the start for the whole.
 */
function cut(text: string, what: string): string {
  return text.length > PREVIEW_LINE_CHARS ? `${text.slice(0, PREVIEW_LINE_CHARS)}… (${what} cut)` : text;
}

/**
 * A field name as written in RFC 5322 and the RFCs that add fields, from the lower-cased name the parser keeps:
 * each word capitalized (`reply-to` is shown `Reply-To`, `x-customer-export` `X-Customer-Export`).
 */
function fieldName(lower: string): string {
  return lower.replace(/(^|-)([a-z])/g, (_, dash: string, c: string) => dash + c.toUpperCase());
}

/**
 * The header fields `keep` takes, in the order written, at most `max` of them, and how many there are. RFC 2047
 * encoded words are decoded where they can be; a value that does not decode is shown as written. Two sets are shown:
 * - From, Sender, Reply-To, To and Cc with their display names (AUTHOR_FIELDS), as a mail client shows them: the
 *   identities the proxy checked are the addresses (docs/smtp.md "The author in the header"), but a recipient reads
 *   the name (`"CEO: urgent wire" <bot@corp.test>`), so the approver must see it too;
 * - every other field but Subject: a client keeps most of them out of sight, but they go out with the message, and
 *   an agent can write anything in them (`X-Notes: <the customer list>`).
 */
function fieldsShown(
  fields: readonly HeaderField[] | null,
  keep: (name: string) => boolean,
  max: number,
): { shown: { name: string; value: string }[]; count: number } {
  const all = (fields ?? []).filter((f) => keep(f.name));
  const shown = all.slice(0, max).map((f) => ({
    name: fieldName(f.name),
    value: cut(decodeEncodedWords(f.value) ?? f.value, "field"),
  }));
  return { shown, count: all.length };
}

function domainOf(address: string): string {
  return address.slice(address.lastIndexOf("@") + 1).toLowerCase();
}

/**
 * Why the subject cannot be read, and each Subject field as written, for a message whose subject the policy could
 * not read (src/mail/fields.ts): the header section cannot be parsed, there are several Subject fields (a reader
 * shows one, which is not ours to guess), or the one cannot be read (an encoded word that does not decode, a control
 * character, an octet that is not UTF-8).
 */
function unreadSubject(fields: readonly HeaderField[] | null, header: string): UnreadSubject {
  let values: string[];
  let reason: string;
  if (fields === null) {
    // The fields as a lenient reader would find them, so that the approver sees what a recipient may be shown.
    const unfolded = header.replace(/\r?\n[ \t]+/g, " ");
    values = [...unfolded.matchAll(/^subject[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$/gim)].map((m) => m[1]!);
    reason = "the header section cannot be read";
  } else {
    values = fields.filter((f) => f.name === "subject").map((f) => f.value);
    reason =
      values.length > 1
        ? `${values.length} Subject fields; readers differ on which they show`
        : "it cannot be decoded, or has a control character in it";
  }
  return {
    reason,
    fields: values.slice(0, PREVIEW_SUBJECT_FIELDS).map((v) => cut(v, "field")),
    count: values.length,
  };
}

/**
 * `hasAttachment`: the SMTP inspector's verdict on the same bytes (null: unknown), so that a part without a file
 * name, or a structure the inspector could not read, is not shown as "none".
 */
export function buildPreview(
  sender: string,
  recipients: readonly string[],
  message: Buffer,
  hasAttachment: boolean | null,
  inspected?: { readonly names: readonly (string | null)[]; readonly complete: boolean },
): Preview {
  const text = utf8.decode(message.subarray(0, PREVIEW_SCAN_BYTES));
  const split = text.search(/\r?\n\r?\n/);
  const header = split === -1 ? text : text.slice(0, split);
  const fields = parseHeaderFields(message);
  // As the policy reads it (src/mail/fields.ts): "" when absent, undefined when it cannot be read. Shown: null when
  // absent or unread, and then `subjectUnread` says why.
  const read = fields === null ? undefined : readMessageFields(fields).subject;
  const unread = read === undefined ? unreadSubject(fields, header) : null;
  const subject = read === undefined || !fields!.some((f) => f.name === "subject") ? null : read;
  // The inspector's list when there is one (every attachment part, its name read as clients read it); otherwise a
  // scan of the raw text, a hint only.
  const attachments =
    inspected === undefined
      ? [...new Set([...text.matchAll(/\bfilename\*?="?([^";\r\n]+)"?/gi)].map((m) => m[1]!))]
      : inspected.names.filter((n) => n !== null).slice(0, PREVIEW_ATTACHMENTS);
  const shown = textShown(message);
  const senderDomain = domainOf(sender);
  const authors = fieldsShown(fields, (name) => AUTHOR_FIELDS.has(name), PREVIEW_HEADER_FIELDS);
  const others = fieldsShown(fields, (name) => !AUTHOR_FIELDS.has(name) && name !== "subject", PREVIEW_OTHER_FIELDS);
  return {
    sender,
    recipients: recipients.map((address) => ({ address, external: domainOf(address) !== senderDomain })),
    subject: subject === null ? null : cut(subject, "subject"),
    ...(unread === null ? {} : { subjectUnread: unread }),
    size: message.length,
    // A name cut here says so: what follows the cut (`.exe`) is what the approver must not miss.
    attachments: attachments.map((name) => cut(name, "name")),
    hasAttachment,
    ...(inspected === undefined
      ? {}
      : { attachmentParts: inspected.names.length, attachmentsComplete: inspected.complete }),
    text: shown.text,
    textCut: shown.cut,
    headerFields: authors.shown,
    headerFieldCount: authors.count,
    otherHeaderFields: others.shown,
    otherHeaderFieldCount: others.count,
  };
}

const LF = 10;
const CR = 13;

/**
 * The text of `message` as approvers are shown it (see the top of this file): of at most PREVIEW_TEXT_PARTS text
 * parts, each one's first PREVIEW_LINES lines read from its first PREVIEW_SCAN_BYTES octets, each line cut at
 * PREVIEW_LINE_CHARS characters, a label before each part's; `cut` when anything was left out: a line or a part past
 * those shown, a line cut, a part past PREVIEW_SCAN_BYTES octets, a part not decoded, or a structure the inspector
 * could not read all of (other readers may split it into other parts).
 */
function textShown(message: Buffer): { text: string; cut: boolean } {
  const inspector = new MessageInspector({ keepSegments: true });
  inspector.write(message);
  const facts = inspector.finish();
  let left = !facts.attachmentsComplete;
  let parts = 0;
  const shown: string[] = [];
  for (const segment of facts.segments) {
    // An attachment of a text type is shown too (a list written out as `customers.csv`): it is the agent's text
    // as much as the body is. Other attachments are named above, not shown.
    const attachment = segment.kind === "leaf" && isAttachmentEntity(segment.entity);
    if (attachment && !segment.entity.type.startsWith("text/")) continue;
    // The line end before a delimiter belongs to the delimiter (RFC 2046 §5.1.1).
    let end = segment.end;
    if (end < message.length && end > segment.start && message[end - 1] === LF) end--;
    if (end < message.length && end > segment.start && message[end - 1] === CR) end--;
    const whole = message.subarray(segment.start, end);
    const octets = whole.subarray(0, PREVIEW_SCAN_BYTES);
    const partial = octets.length < whole.length;
    if (partial) left = true;
    const part = partShown(segment, octets, partial, attachment);
    const lines = part.text.split(/\r?\n/);
    while (lines.length > 0 && lines.at(-1)!.trim() === "") lines.pop();
    if (lines.length === 0) continue;
    if (!part.decoded || parts === PREVIEW_TEXT_PARTS) left = true;
    if (parts === PREVIEW_TEXT_PARTS) continue;
    parts++;
    // The type and the reason name what the agent wrote (a charset, an encoding): cut as a line is.
    shown.push(cut(part.label, "label"));
    for (const line of lines.slice(0, PREVIEW_LINES)) {
      if (line.length > PREVIEW_LINE_CHARS) left = true;
      const kept = line.slice(0, PREVIEW_LINE_CHARS);
      // Only labels start with `[`: a line of the text that does is shown after a `\`, so that it cannot pass for
      // the label of a part that is not there (or not shown).
      shown.push(kept.startsWith("[") ? `\\${kept}` : kept);
    }
    if (lines.length > PREVIEW_LINES) left = true;
  }
  return { text: shown.join("\n"), cut: left };
}

/**
 * One segment of the body (`octets`, the start of it when `partial`) as shown: a text part decoded, under its type
 * (`text/csv attachment` for an `attachment`); a preamble or epilogue as written (nothing in it is decoded by a
 * reader); what cannot be decoded as written, as UTF-8 with U+FFFD for what is not, labelled so (`decoded` false).
 */
function partShown(
  segment: BodySegment,
  octets: Buffer,
  partial: boolean,
  attachment: boolean,
): { label: string; text: string; decoded: boolean } {
  const asWritten = utf8.decode(octets);
  const notDecoded = (what: string, why: string) => ({
    label: `[${what}: not decoded (${why}); shown as written]`,
    text: asWritten,
    decoded: false,
  });
  if (segment.kind !== "leaf") {
    if (segment.kind === "unread") return notDecoded("a part", "the message's structure could not be read here");
    return { label: `[MIME ${segment.kind}: mail clients do not show it; it is sent]`, text: asWritten, decoded: true };
  }
  const type = attachment ? `${segment.entity.type} attachment` : segment.entity.type;
  const encodings = segment.encodings;
  if (encodings.length > 1) return notDecoded(type, `${encodings.length} Content-Transfer-Encoding fields`);
  const body = decodeTransferEncoding(octets, encodings[0], partial);
  if ("problem" in body) return notDecoded(type, body.problem);
  // The charset in any RFC 2231 form (`charset*=utf-8''`), as readers that know it read it.
  const charset = parameterValue(segment.entity.typeParams, "charset");
  if (charset === null) return notDecoded(type, "its charset parameter cannot be read");
  const text = decodeCharset(body.octets, charset, partial);
  if ("problem" in text) return notDecoded(type, text.problem);
  return { label: `[${type}]`, text: text.text, decoded: true };
}

/**
 * The header fields of a preview that a mail client shows (`headerFields`), or all the others (`otherHeaderFields`), as
 * lines `Name: value`, with `show` applied to the values (each caller escapes them its own way), and a last line
 * counting those left out; none for records sealed before they were kept.
 */
export function headerFieldLines(p: Preview, show: (text: string) => string): string[] {
  return fieldLines(p.headerFields, p.headerFieldCount, show, "more such fields");
}

export function otherFieldLines(p: Preview, show: (text: string) => string): string[] {
  return fieldLines(p.otherHeaderFields, p.otherHeaderFieldCount, show, "more header fields");
}

function fieldLines(
  fields: readonly { readonly name: string; readonly value: string }[] = [],
  count: number | undefined,
  show: (text: string) => string,
  more: string,
): string[] {
  const lines = fields.map((f) => `${f.name}: ${show(f.value)}`);
  const left = (count ?? fields.length) - fields.length;
  if (left > 0) lines.push(`(and ${left} ${more})`);
  return lines;
}

/**
 * The subject of a preview in words, with `show` applied to what the agent wrote (each display escapes it its own
 * way): "(none)" only when there is no Subject field; one that cannot be read says so, with the fields as written.
 */
export function subjectShown(p: Preview, show: (text: string) => string): string {
  const u = p.subjectUnread;
  if (u === undefined) return p.subject === null ? "(none)" : show(p.subject);
  const more = u.count > u.fields.length ? ` and ${u.count - u.fields.length} more` : "";
  const written = u.fields.length === 0 ? "" : `; as written: ${u.fields.map((f) => `"${show(f)}"`).join(", ")}`;
  return `${UNREADABLE_SUBJECT} (${u.reason})${written}${more}`;
}

/** Said in place of a subject that cannot be read; a notice's own subject line says it alone. */
export const UNREADABLE_SUBJECT = "UNREADABLE";

/**
 * The attachments of a preview in words, the names shown with `show` (each display escapes them its own way).
 * Without a name found, the inspector's verdict says whether there is none, one without a name, or no telling.
 */
export function attachmentsShown(p: Preview, show: (name: string) => string): string {
  const unread = "unknown: the message's parts could not be read";
  if (p.attachmentParts !== undefined) {
    // The inspector's list: every attachment part it read, named or not, and whether it read them all.
    const names = p.attachments.map(show).join(", ");
    const rest = p.attachmentParts - p.attachments.length;
    const others = rest === 0 ? "" : p.attachments.length === 0 ? `${rest} without a file name` : `${rest} more`;
    const listed = [names, others].filter((t) => t !== "").join("; and ");
    if (p.attachmentsComplete === true) return listed === "" ? "none" : listed;
    return listed === "" ? unread : `${listed}; possibly more: the message's parts could not all be read`;
  }
  // Records sealed before the inspector's list was kept. The names are a scan of the raw text (a body can write
  // `filename=` too): they never stand for "unknown".
  if (p.attachments.length > 0) {
    const names = p.attachments.map(show).join(", ");
    return p.hasAttachment === false || p.hasAttachment === true ? names : `${names}; ${unread}`;
  }
  // Records sealed before the verdict was kept have none: not known either.
  if (p.hasAttachment === false) return "none";
  if (p.hasAttachment === true) return "yes, without a file name";
  return unread;
}

/**
 * The text of a preview as plain-text lines (a notice, `mailgator approvals show`), each after `| `, with `show`
 * applied (`(empty)` for none): the text is the agent's, up to PREVIEW_TEXT_PARTS parts of PREVIEW_LINES lines each,
 * and printed as it is its lines could pass for the lines around them (`to: boss@corp.test`, a second summary that
 * pushes the real one off the screen). The page shows it in a box of its own.
 */
export function quotedTextLines(p: Preview, show: (text: string) => string): string[] {
  return p.text === "" ? ["| (empty)"] : p.text.split("\n").map((l) => `| ${show(l)}`);
}

/**
 * Said after the shown lines when the text goes on, a shown line was cut, or lines were left out as MIME structure:
 * the approver has not seen it all.
 */
export const MORE_TEXT = "(not all of the message's text is shown here)";
