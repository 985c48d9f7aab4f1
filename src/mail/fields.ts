/**
 * The message fields rules test (docs/config.md "What the message fields mean"), read from a header section: From, To,
 * Cc, Bcc as lower-cased addr-specs (display names and group names dropped, `parseAddressList`) and the decoded
 * Subject.
 *
 * A field that cannot be read is `undefined` (unknown), and the policy engine denies any request whose decision
 * depends on it. Beyond parse errors that means:
 * - more than one From or Subject field (RFC 5322 §3.6 allows one each): which one a client shows is not ours
 *   to guess, and a second From is how a co-author would ride along;
 * - an encoded word in Subject that cannot be decoded.
 * An absent From, To, Cc or Bcc is an empty list; an absent Subject is "". Several To/Cc/Bcc fields add up.
 */

import { parseAddressList } from "../policy/index.ts";
import { decodeEncodedWords, type HeaderField } from "./headers.ts";

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

function addresses(fields: readonly HeaderField[], name: string, single: boolean): readonly string[] | undefined {
  let out: string[] | null = null;
  let seen = 0;
  for (const field of fields) {
    if (field.name !== name) continue;
    if (single && ++seen > 1) return undefined;
    const parsed = parseAddressList(field.value);
    if (!parsed.ok) return undefined;
    if (out === null) out = [...parsed.addresses];
    else out.push(...parsed.addresses);
  }
  return out ?? EMPTY;
}

function subject(fields: readonly HeaderField[]): string | undefined {
  let value: string | null = null;
  for (const field of fields) {
    if (field.name !== "subject") continue;
    if (value !== null) return undefined;
    value = field.value;
  }
  if (value === null) return "";
  return decodeEncodedWords(value) ?? undefined;
}

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
