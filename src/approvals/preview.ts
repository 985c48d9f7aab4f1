/**
 * What approvers are shown of a held message (docs/approvals.md "What approvers see"): sender, every envelope
 * recipient (those outside the sender's domain marked), subject, size, attachment file names with the SMTP
 * inspector's verdict beside them, and the first lines of the text, saying when there is more. Read from the raw
 * bytes without decoding transfer encodings: the preview is a hint for a person, the decision is about the exact
 * stored bytes, which the link is bound to by their SHA-256.
 */

import { readUnstructured } from "../mail/encoded-words.ts";
import type { Preview } from "./store.ts";

/** Lines of text shown. */
export const PREVIEW_LINES = 12;
/** Characters per shown line, and per attachment name. */
export const PREVIEW_LINE_CHARS = 200;
/** Octets of the message searched for the preview. */
const PREVIEW_SCAN_BYTES = 256 * 1024;

function domainOf(address: string): string {
  return address.slice(address.lastIndexOf("@") + 1).toLowerCase();
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
): Preview {
  const text = message.subarray(0, PREVIEW_SCAN_BYTES).toString("latin1");
  const split = text.search(/\r?\n\r?\n/);
  const header = split === -1 ? text : text.slice(0, split);
  const unfolded = header.replace(/\r?\n[ \t]+/g, " ");
  const subjectRaw = /^subject:[ \t]*(.*)$/im.exec(unfolded)?.[1];
  const subject = subjectRaw === undefined ? null : (readUnstructured(subjectRaw) ?? subjectRaw);
  const attachments = [...text.matchAll(/\bfilename\*?="?([^";\r\n]+)"?/gi)].map((m) =>
    m[1]!.slice(0, PREVIEW_LINE_CHARS),
  );
  const body = split === -1 ? "" : text.slice(split).replace(/^\r?\n\r?\n/, "");
  const bodyLines = body.split(/\r?\n/);
  const all = bodyLines.filter((l) => !/^(--|content-[a-z-]+:)/i.test(l));
  const lines = all.slice(0, PREVIEW_LINES).map((l) => l.slice(0, PREVIEW_LINE_CHARS));
  const senderDomain = domainOf(sender);
  return {
    sender,
    recipients: recipients.map((address) => ({ address, external: domainOf(address) !== senderDomain })),
    subject: subject === null ? null : subject.slice(0, PREVIEW_LINE_CHARS),
    size: message.length,
    attachments: [...new Set(attachments)],
    hasAttachment,
    text: lines.join("\n").trim(),
    // Lines left out (MIME boundaries, part headers) count too: a sender can write text that looks like them.
    textCut:
      message.length > PREVIEW_SCAN_BYTES ||
      all.length < bodyLines.length ||
      all.slice(PREVIEW_LINES).some((l) => l.trim() !== "") ||
      all.slice(0, PREVIEW_LINES).some((l) => l.length > PREVIEW_LINE_CHARS),
  };
}

/**
 * The attachments of a preview in words, the names shown with `show` (each display escapes them its own way).
 * Without a name found, the inspector's verdict says whether there is none, one without a name, or no telling.
 */
export function attachmentsShown(p: Preview, show: (name: string) => string): string {
  // The names are a scan of the raw text (a body can write `filename=` too): they never stand for "unknown".
  const unread = "unknown: the message's parts could not be read";
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
 * Said after the shown lines when the text goes on, a shown line was cut, or lines were left out as MIME structure:
 * the approver has not seen it all.
 */
export const MORE_TEXT = "(not all of the message's text is shown here)";
