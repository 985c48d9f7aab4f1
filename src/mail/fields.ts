/**
 * The message fields rules test (docs/filtering.md "Deciding a message", docs/smtp.md "What the message says"),
 * read from a header section: From, To, Cc, Bcc as lower-cased addr-specs (display names and group names dropped,
 * `parseAddressList`) and the Subject as shown (`readUnstructured`). Both proxies read messages with this.
 *
 * A field that cannot be read is `undefined` (unknown), and the policy engine denies any request whose decision
 * depends on it. Beyond parse errors that means:
 * - more than one From or Subject field (RFC 5322 §3.6 allows one each): which one a client shows is not ours
 *   to guess, and a second From is how a co-author would ride along;
 * - a Subject `readUnstructured` cannot read (an undecodable or malformed encoded word, and the rest it lists);
 * - an addr-spec with a character that is not ASCII (`parseAddressList`), an octet that is not UTF-8 (U+FFFD)
 *   among them.
 * An absent From, To, Cc or Bcc is an empty list; an absent Subject is "". Several To/Cc/Bcc fields add up.
 */

import { MAX_ADDRESS_FIELD_CHARS, parseAddressList } from "./address.ts";
import { readUnstructured } from "./encoded-words.ts";
import { type HeaderField, trimWsp } from "./headers.ts";

export interface MessageFields {
  readonly from: readonly string[] | undefined;
  readonly to: readonly string[] | undefined;
  readonly cc: readonly string[] | undefined;
  readonly bcc: readonly string[] | undefined;
  readonly subject: string | undefined;
}

/** Every field unknown: what a header section that could not be parsed gives. */
export const UNKNOWN_FIELDS: MessageFields = Object.freeze({
  from: undefined,
  to: undefined,
  cc: undefined,
  bcc: undefined,
  subject: undefined,
});

const EMPTY: readonly string[] = Object.freeze([]);

/**
 * Every `name` field's addr-specs; undefined when one cannot be parsed, when `single` and there are several, or when
 * `named` and a field names no address. A field whose whole value (without SP/HTAB at its ends, any case) is one of
 * `keywords` names nobody.
 */
function addresses(
  fields: readonly HeaderField[],
  name: string,
  single: boolean,
  named = false,
  keywords?: ReadonlySet<string>,
): readonly string[] | undefined {
  let out: string[] | null = null;
  let seen = 0;
  for (const field of fields) {
    if (field.name !== name) continue;
    if (single && ++seen > 1) return undefined;
    // Spaces and tabs only (RFC 5322 WSP): `never` followed by a no-break space is no keyword for a reader either.
    if (keywords?.has(trimWsp(field.value).toLowerCase())) continue;
    const parsed = parseAddressList(field.value);
    if (!parsed.ok || (named && parsed.addresses.length === 0)) return undefined;
    if (out === null) out = [...parsed.addresses];
    else out.push(...parsed.addresses);
  }
  return out ?? EMPTY;
}

/** The one Subject as shown ("" when absent); undefined when there are several or it cannot be read. */
function subject(fields: readonly HeaderField[]): string | undefined {
  let value: string | null = null;
  for (const field of fields) {
    if (field.name !== "subject") continue;
    if (value !== null) return undefined;
    value = field.value;
  }
  return value === null ? "" : readSubject(value);
}

/**
 * A Subject field's value as rules match it; undefined when it cannot be read. As it was read before field values
 * kept the white space that is not WSP (src/mail/headers.ts): without the spaces of any kind at its ends, then
 * decoded (`readUnstructured`). `mailgator explain --subject` reads its argument with this too.
 */
export function readSubject(value: string): string | undefined {
  return readUnstructured(value.trim()) ?? undefined;
}

/**
 * The addr-specs of the originator fields and of the fields that send answers or reports somewhere (docs/smtp.md
 * "The author in the header"), lower-cased: who the message says wrote and sent it, and where a reader's answer,
 * read receipt or error report goes. Undefined when one of them cannot be parsed, names no address (an empty group
 * such as `"CEO Bob":;`, or only a comment: a reader shows the name as the author), when a field other than a resent
 * one appears more than once, or when an address has an octet that is not UTF-8. Resent blocks may repeat (one per
 * resending), so their fields may too. An absent field adds nothing.
 */
export function readOriginators(fields: readonly HeaderField[] | null): readonly string[] | undefined {
  if (fields === null) return undefined;
  const out: string[] = [];
  for (const [name, single] of ORIGINATOR_FIELDS) {
    const found = addresses(fields, name, single, true, name === "mail-copies-to" ? COPIES_KEYWORDS : undefined);
    if (found === undefined) return undefined;
    out.push(...found);
  }
  for (const name of LIST_FIELDS) {
    const found = listMailboxes(fields, name);
    if (found === undefined) return undefined;
    out.push(...found);
  }
  return out;
}

/**
 * The list fields of RFC 2369 §3: each a list of URLs in angle brackets where a reader's client sends a post, a
 * request or a question (Thunderbird's "Reply List" answers to List-Post's); a `mailto:` one sends mail there.
 */
const LIST_FIELDS = ["list-post", "list-help", "list-subscribe", "list-unsubscribe", "list-owner", "list-archive"];

/**
 * RFC 2369 §2: a comment after a URL, here without parentheses or quoted pairs in it, and without what a reader could
 * take for a URL there: no `<` or `>`, no `mailto:`, no encoded word (`=?`, which may decode to either). Thunderbird's
 * "Reply List" takes the first `<mailto:...>` it finds in List-Post's decoded text, comment or not.
 */
const LIST_COMMENT = String.raw`(?:\((?:(?![Mm][Aa][Ii][Ll][Tt][Oo]:|=\?)[^()\\<>])*\)[ \t]*)?`;
/** A URL in angle brackets, nothing but visible characters in it, and its comment. */
const LIST_ELEMENT = String.raw`<([^<>\s]*)>[ \t]*` + LIST_COMMENT;
const LIST_VALUE = new RegExp(String.raw`^${LIST_ELEMENT}(?:,[ \t]*${LIST_ELEMENT})*$`);
/** Every element of a list field's value, for `matchAll` (which works on a copy: one instance serves every call). */
const LIST_ELEMENTS = new RegExp(LIST_ELEMENT, "g");
const LIST_POST_NO = new RegExp(String.raw`^NO[ \t]*${LIST_COMMENT}$`, "i");

/**
 * The addresses the `mailto:` URLs of each `name` field send to, lower-cased; undefined when a field is doubled,
 * longer than MAX_ADDRESS_FIELD_CHARS, or not exactly read. Exact means: `<URL>` elements separated by commas, each
 * followed by at most one comment without parentheses in it (RFC 2369 §2), or List-Post's `NO` (§3.4); no
 * whitespace inside the brackets (§2 has clients ignore it, so `<mail to:x>` may be a mailto URL); a mailto URL
 * (RFC 6068 §2) whose percent-decoded addresses are each a bare addr-spec, in the path and in `to`, `cc` and `bcc`
 * header fields, with no header field but those and `subject` and `body`. Other URLs (http, https) send no mail.
 */
function listMailboxes(fields: readonly HeaderField[], name: string): readonly string[] | undefined {
  let value: string | null = null;
  for (const field of fields) {
    if (field.name !== name) continue;
    if (value !== null) return undefined;
    value = field.value;
  }
  if (value === null) return EMPTY;
  if (value.length > MAX_ADDRESS_FIELD_CHARS) return undefined;
  if (name === "list-post" && LIST_POST_NO.test(value)) return EMPTY;
  if (!LIST_VALUE.test(value)) return undefined;
  const out: string[] = [];
  for (const [, url] of value.matchAll(LIST_ELEMENTS)) {
    if (!/^mailto:/i.test(url!)) {
      if (!/^[a-z][a-z0-9+.-]*:/i.test(url!)) return undefined;
      continue;
    }
    const found = mailtoAddresses(url!.slice("mailto:".length));
    if (found === undefined) return undefined;
    out.push(...found);
  }
  return out;
}

/** The addresses of a mailto URL without its scheme (RFC 6068 §2), lower-cased; undefined unless read exactly. */
function mailtoAddresses(rest: string): readonly string[] | undefined {
  const question = rest.indexOf("?");
  const path = question === -1 ? rest : rest.slice(0, question);
  const lists = [path];
  if (question !== -1) {
    for (const hfield of rest.slice(question + 1).split("&")) {
      const eq = hfield.indexOf("=");
      if (eq === -1) return undefined;
      const hfname = decode(hfield.slice(0, eq))?.toLowerCase();
      if (hfname === "to" || hfname === "cc" || hfname === "bcc") lists.push(hfield.slice(eq + 1));
      else if (hfname !== "subject" && hfname !== "body") return undefined;
    }
  }
  const out: string[] = [];
  for (const list of lists) {
    if (list === "") continue;
    for (const encoded of list.split(",")) {
      const address = decode(encoded);
      if (address === undefined || !/^[\x21-\x7e]+$/.test(address)) return undefined;
      const parsed = parseAddressList(address);
      if (!parsed.ok || parsed.addresses.length !== 1 || parsed.addresses[0] !== address.toLowerCase())
        return undefined;
      out.push(parsed.addresses[0]);
    }
  }
  return out;
}

/** Percent-decoded (RFC 3986 §2.1) as UTF-8; undefined when it cannot be. */
function decode(text: string): string | undefined {
  try {
    return decodeURIComponent(text);
  } catch {
    return undefined;
  }
}

/**
 * The addr-specs of the author fields, lower-cased: From and Sender (RFC 5322 §3.6.2), Resent-From and
 * Resent-Sender (§3.6.6), who the recipients are told wrote and sent the message; the send rules' `from` conditions
 * apply to each (docs/smtp.md "The author in the header"). Undefined as for `readOriginators`.
 */
export function readAuthors(fields: readonly HeaderField[] | null): readonly string[] | undefined {
  if (fields === null) return undefined;
  const out: string[] = [];
  for (const [name, single] of ORIGINATOR_FIELDS) {
    if (!AUTHOR_FIELDS.has(name)) continue;
    const found = addresses(fields, name, single, true);
    if (found === undefined) return undefined;
    out.push(...found);
  }
  return out;
}

const AUTHOR_FIELDS: ReadonlySet<string> = new Set(["from", "sender", "resent-from", "resent-sender"]);

/**
 * The author fields a header lacks that an upstream server writes in itself from the reverse path (docs/smtp.md "The
 * author in the header"): `from` when there is no From field (RFC 5322 §3.6 makes it mandatory; Postfix adds it for
 * its local and authenticated clients), and `resent-from` when a resent block (any Resent- field, §3.6.6) has no
 * Resent-From. With the null reverse path `<>` what the server writes there is `MAILER-DAEMON`, an author that is
 * no identity.
 */
export function missingAuthorFields(fields: readonly HeaderField[]): string[] {
  const names = new Set(fields.map((f) => f.name));
  const out: string[] = [];
  if (!names.has("from")) out.push("from");
  if (!names.has("resent-from") && [...names].some((n) => n.startsWith("resent-"))) out.push("resent-from");
  return out;
}

/** Each field's name and whether it may appear only once. */
const ORIGINATOR_FIELDS: readonly (readonly [string, boolean])[] = [
  // RFC 5322 §3.6.2: the author, the sender, where replies go.
  ["from", true],
  ["sender", true],
  ["reply-to", true],
  // RFC 5322 §3.6.6, one block per resending.
  ["resent-from", false],
  ["resent-sender", false],
  // RFC 822 §4.4.3, still read by readers (RFC 5322 §4.5.6 keeps it as obsolete syntax); a resent field.
  ["resent-reply-to", false],
  // Where a reader's answer goes in place of Reply-To, or its answer to all: no RFC defines them, readers honour them.
  ["mail-reply-to", true],
  ["mail-followup-to", true],
  // RFC 8098 §2.1: the reader's client sends a read receipt there, naming the message and its subject.
  ["disposition-notification-to", true],
  // No RFC defines these; some software still sends receipts and error reports there (X-Confirm-Reading-To is
  // Pegasus Mail's read-receipt request, honoured by a few readers besides).
  ["return-receipt-to", true],
  ["errors-to", true],
  ["x-confirm-reading-to", true],
  // Where readers that honour it (Gnus, KMail, slrn) add a copy of an answer to all, besides its recipients; no RFC
  // defines it. Its keywords name nobody new (COPIES_KEYWORDS).
  ["mail-copies-to", true],
];

/**
 * The values of Mail-Copies-To that are no address: `never` and `nobody` ask for no copy, `always` and `poster` for
 * one to the author (From, Reply-To, Mail-Reply-To), whose fields are checked themselves.
 */
const COPIES_KEYWORDS: ReadonlySet<string> = new Set(["never", "nobody", "always", "poster"]);

/**
 * Names of the fields read as address lists here (To, Cc, Bcc and the originator fields), and their resent
 * counterparts: the fields whose every address a decision may rest on.
 */
export const ADDRESS_FIELD_NAMES: ReadonlySet<string> = new Set([
  "to",
  "cc",
  "bcc",
  "resent-to",
  "resent-cc",
  "resent-bcc",
  ...ORIGINATOR_FIELDS.map(([name]) => name),
  ...LIST_FIELDS,
]);

/** Reads the message fields from parsed header fields; null (an unparseable section) gives every field unknown. */
export function readMessageFields(fields: readonly HeaderField[] | null): MessageFields {
  if (fields === null) return UNKNOWN_FIELDS;
  return {
    from: addresses(fields, "from", true),
    to: addresses(fields, "to", false),
    cc: addresses(fields, "cc", false),
    bcc: addresses(fields, "bcc", false),
    subject: subject(fields),
  };
}
