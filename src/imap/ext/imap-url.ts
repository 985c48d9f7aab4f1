/**
 * The IMAP URLs an APPEND with CATENATE may name (RFC 4469 §5): the server-relative form of RFC 5092's
 * `imessagepart`, one message or a part of it, written from the server's root:
 *
 *   "/" enc-mailbox [";UIDVALIDITY=" nz-number] "/;UID=" nz-number ["/;SECTION=" enc-section]
 *   ["/;PARTIAL=" number ["." nz-number]]
 *
 * Keys are case-insensitive (RFC 5092 §11, ABNF strings). Anything else is refused (null): an absolute `imap://`
 * URL (it names a server and user the proxy cannot vouch for), a URL without `;UID=` (a mailbox or a search),
 * `;URLAUTH=`, `;EXPIRE=`, a character outside `bchar` (§11), a `%` escape that is not two hex digits, a mailbox
 * that is not UTF-8 once unescaped (§3.3: names are written in UTF-8, not modified UTF-7), and a section that is not
 * a `section-spec` of RFC 3501 §9 once unescaped. Pure: no I/O (docs/protocol.md §2 "CATENATE").
 */

import { Decoder, type Section } from "../wire/decoder.ts";
import { MAX_NUMBER } from "../wire/limits.ts";

export interface MessageUrl {
  /** The mailbox, unescaped and decoded from UTF-8. */
  readonly mailbox: string;
  readonly uidValidity: number | null;
  readonly uid: number;
  /** The whole message when the URL names no section. */
  readonly section: Section;
  /** `;PARTIAL=offset[.length]` (RFC 5092 §5): null when absent; `length` null to the end. */
  readonly partial: { readonly offset: number; readonly length: number | null } | null;
}

const WHOLE: Section = { part: [], text: "", fields: [] };

/** `bchar` (RFC 5092 §11) apart from `%`: unreserved, sub-delims-sh, `&`, `=`, `:`, `@` and `/`. */
const BCHAR = /^[A-Za-z0-9\-._~!$'()*+,&=:@/]$/;

const UTF8 = new TextDecoder("utf-8", { fatal: true });

export function parseMessageUrl(url: string): MessageUrl | null {
  if (!url.startsWith("/")) return null;
  const steps = url.slice(1).split("/;");
  // steps[0] is the mailbox reference; the rest `UID=n`, then optionally `SECTION=s`, then `PARTIAL=r`, in order.
  const ref = steps[0]!;
  let mailboxText = ref;
  let uidValidity: number | null = null;
  const semi = ref.indexOf(";");
  if (semi !== -1) {
    const key = ref.slice(semi + 1);
    if (!key.toUpperCase().startsWith("UIDVALIDITY=")) return null;
    uidValidity = nzNumber(key.slice("UIDVALIDITY=".length));
    if (uidValidity === null) return null;
    mailboxText = ref.slice(0, semi);
  }
  const mailbox = percentDecode(mailboxText);
  const name = mailbox === null || mailbox.length === 0 ? null : utf8(mailbox);
  if (name === null) return null;
  let i = 1;
  const uidStep = steps[i++];
  if (uidStep === undefined || !uidStep.toUpperCase().startsWith("UID=")) return null;
  const uid = nzNumber(uidStep.slice("UID=".length));
  if (uid === null) return null;
  let section = WHOLE;
  if (steps[i]?.toUpperCase().startsWith("SECTION=")) {
    const parsed = sectionSpec(steps[i++]!.slice("SECTION=".length));
    if (parsed === null) return null;
    section = parsed;
  }
  let partial: MessageUrl["partial"] = null;
  if (steps[i]?.toUpperCase().startsWith("PARTIAL=")) {
    const [offsetText, lengthText, more] = steps[i++]!.slice("PARTIAL=".length).split(".");
    const offset = number(offsetText ?? "");
    const length = lengthText === undefined ? null : nzNumber(lengthText);
    if (offset === null || more !== undefined || (lengthText !== undefined && length === null)) return null;
    partial = { offset, length };
  }
  return i === steps.length ? { mailbox: name, uidValidity, uid, section, partial } : null;
}

/** `number` of RFC 3501 §9: digits, at most 2^32 − 1. */
function number(text: string): number | null {
  if (!/^[0-9]{1,10}$/.test(text)) return null;
  const n = Number(text);
  return n <= MAX_NUMBER ? n : null;
}

function nzNumber(text: string): number | null {
  const n = number(text);
  return n === null || n === 0 || text.startsWith("0") ? null : n;
}

/** Octets of an `enc-mailbox` or `enc-section` with its `%XX` escapes undone; null on any other character. */
function percentDecode(text: string): Uint8Array | null {
  const out: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === "%") {
      const hex = text.slice(i + 1, i + 3);
      if (!/^[0-9A-Fa-f]{2}$/.test(hex)) return null;
      out.push(Number.parseInt(hex, 16));
      i += 2;
    } else if (BCHAR.test(c)) {
      out.push(c.charCodeAt(0));
    } else {
      return null;
    }
  }
  return Uint8Array.from(out);
}

function utf8(bytes: Uint8Array): string | null {
  try {
    return UTF8.decode(bytes);
  } catch {
    return null;
  }
}

/** An unescaped `section-spec` (`HEADER`, `1.2.MIME`, `HEADER.FIELDS (FROM)`), read by the command decoder. */
function sectionSpec(text: string): Section | null {
  const inner = percentDecode(text);
  if (inner === null || inner.length === 0) return null;
  const line = new Uint8Array(inner.length + 2);
  line[0] = 0x5b;
  line.set(inner, 1);
  line[line.length - 1] = 0x5d;
  const dec = new Decoder({ lines: [line], markers: [-1], literals: [], size: line.length }, { strict: true });
  const section = dec.section();
  return section !== null && dec.ok && dec.atEnd() ? section : null;
}
