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

import { parseAddressList } from "./address.ts";
import { readUnstructured } from "./encoded-words.ts";
import type { HeaderField } from "./headers.ts";

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
 * `named` and a field names no address.
 */
function addresses(
  fields: readonly HeaderField[],
  name: string,
  single: boolean,
  named = false,
): readonly string[] | undefined {
  let out: string[] | null = null;
  let seen = 0;
  for (const field of fields) {
    if (field.name !== name) continue;
    if (single && ++seen > 1) return undefined;
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
  if (value === null) return "";
  return readUnstructured(value) ?? undefined;
}

/**
 * The addr-specs of the originator fields (RFC 5322 §3.6.2 From, Sender and Reply-To, §3.6.6 Resent-From and
 * Resent-Sender), lower-cased: who the message says wrote and sent it, and where answers go. Undefined when one of
 * them cannot be parsed, names no address (an empty group such as `"CEO Bob":;`, or only a comment: a reader shows
 * the name as the author), when From, Sender or Reply-To appears more than once, or when an address has an octet
 * that is not UTF-8. Resent blocks may repeat (one per resending), so their fields may too. An absent field adds
 * nothing.
 */
export function readOriginators(fields: readonly HeaderField[] | null): readonly string[] | undefined {
  if (fields === null) return undefined;
  const out: string[] = [];
  for (const [name, single] of ORIGINATOR_FIELDS) {
    const found = addresses(fields, name, single, true);
    if (found === undefined) return undefined;
    out.push(...found);
  }
  return out;
}

const ORIGINATOR_FIELDS: readonly (readonly [string, boolean])[] = [
  ["from", true],
  ["sender", true],
  ["reply-to", true],
  ["resent-from", false],
  ["resent-sender", false],
];

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
