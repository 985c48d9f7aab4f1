/**
 * A MIME body's octets and text, read strictly (RFC 2045 §6, §5.1): what readers could read differently is not
 * read at all, so that a caller shows it as written instead of one reading of it. Used for the approvers' preview
 * (docs/approvals.md "What approvers see").
 */

import { asciiLowerCase } from "./ascii.ts";
import { byteOrderOf, charsetFor } from "./encoded-words.ts";

type Label = ConstructorParameters<typeof TextDecoder>[0];

/** The octets of a body, or why they cannot be read. */
export type Decoded = { readonly octets: Buffer } | { readonly problem: string };

/**
 * `body` decoded from Content-Transfer-Encoding `encoding` (the field's value; undefined without one: 7bit,
 * RFC 2045 §6.1). 7bit, 8bit and binary are the octets as they are; base64 (§6.8) and quoted-printable (§6.7) are
 * decoded. `partial`: the body is only the start of the part, so an unfinished base64 quantum or `=` escape at its end
 * is dropped instead of refused. Not read: another encoding, base64 with a character outside its alphabet (line ends,
 * spaces and tabs aside) or wrong padding, quoted-printable with an `=` that is neither a soft line break nor two
 * hexadecimal digits (readers differ on what those stand for).
 */
export function decodeTransferEncoding(body: Buffer, encoding: string | undefined, partial = false): Decoded {
  const e = asciiLowerCase((encoding ?? "7bit").trim());
  if (e === "7bit" || e === "8bit" || e === "binary") return { octets: body };
  if (e === "base64") return base64(body.toString("latin1"), partial);
  if (e === "quoted-printable") return quotedPrintable(body.toString("latin1"), partial);
  return { problem: `unknown transfer encoding ${JSON.stringify(encoding)}` };
}

function base64(text: string, partial: boolean): Decoded {
  let chars = text.replace(/[\r\n \t]/g, "");
  if (partial) chars = chars.slice(0, chars.length - (chars.length % 4));
  if (!/^[A-Za-z0-9+/]*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(chars) || chars.length % 4 !== 0)
    return { problem: "invalid base64" };
  return { octets: Buffer.from(chars, "base64") };
}

function quotedPrintable(text: string, partial: boolean): Decoded {
  // Soft line breaks (§6.7 rule 5), with the whitespace a gateway may have added before the line end (rule 3).
  let unfolded = text.replace(/=[ \t]*\r?\n/g, "");
  if (partial) unfolded = unfolded.replace(/=[0-9A-Fa-f]?$/, "");
  else if (/=[ \t]*$/.test(unfolded)) unfolded = unfolded.replace(/=[ \t]*$/, "");
  const out = Buffer.alloc(unfolded.length);
  let n = 0;
  for (let i = 0; i < unfolded.length; i++) {
    const c = unfolded.charCodeAt(i);
    if (c !== 61) {
      out[n++] = c;
      continue;
    }
    const hex = unfolded.slice(i + 1, i + 3);
    if (!/^[0-9A-Fa-f]{2}$/.test(hex)) return { problem: "invalid quoted-printable" };
    out[n++] = Number.parseInt(hex, 16);
    i += 2;
  }
  return { octets: out.subarray(0, n) };
}

/**
 * `octets` as text in `charset` (a Content-Type parameter; undefined or empty without one), or why not. Without a
 * charset, and for us-ascii (RFC 2045 §5.2's default), the text is read as UTF-8, its superset, as the policy reads
 * messages (RFC 6532). Any other charset WHATWG's TextDecoder knows (iso-8859-1 and latin1 read as windows-1252, as
 * browsers and mail clients read them). Not read: an unknown charset, x-user-defined, UTF-16 without its byte order
 * (a mark or the name), or octets that are not text in it (fatal: never shown as U+FFFD in place of what another
 * reader could show). `partial`: the octets are only the start of the text, so a character cut at their end is
 * dropped.
 */
export function decodeCharset(
  octets: Uint8Array,
  charset: string | undefined,
  partial = false,
): { readonly text: string } | { readonly problem: string } {
  const label = asciiLowerCase((charset ?? "").trim());
  // The label read as a header's encoded words read it (src/mail/encoded-words.ts): x-user-defined and replacement
  // are not text; "UTF-16" and the labels WHATWG reads as it (ucs-2, unicode, ...) do not say the byte order, which
  // RFC 2781 §4.3 reads big-endian without a mark and WHATWG's decoder little-endian: only a byte order mark, or
  // `utf-16le` and `utf-16be`, say which; without either, readers differ, and it is not read.
  const known = charsetFor(label === "" || label === "us-ascii" || label === "ascii" ? "utf-8" : label);
  if (known === null) return { problem: `unknown charset ${JSON.stringify(charset)}` };
  if (known.kind === "not text") return { problem: `charset ${JSON.stringify(charset)} is not text` };
  let text = octets;
  let encoding: string;
  if (known.kind === "bom") {
    const order = byteOrderOf(text);
    if (order === null)
      return { problem: `charset ${JSON.stringify(charset)} without a byte order mark: its byte order is not known` };
    encoding = order;
    text = text.subarray(2);
  } else encoding = known.encoding;
  // A decoder of its own: `partial` leaves a cut character in it, which the shared one must never carry over.
  const decoder = new TextDecoder(encoding as Label, { fatal: true, ignoreBOM: known.kind === "bom" });
  try {
    return { text: decoder.decode(text, { stream: partial }) };
  } catch {
    return { problem: `not valid ${encoding}` };
  }
}
