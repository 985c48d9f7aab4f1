/**
 * What approvers are shown of a held message (docs/approvals.md "What approvers see"): sender, every envelope
 * recipient (those outside the sender's domain marked), subject, size, attachment file names, and the first lines
 * of the text. Read from the raw bytes without decoding transfer encodings: the preview is a hint for a person,
 * the decision is about the exact stored bytes, which the link is bound to by their SHA-256.
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

export function buildPreview(sender: string, recipients: readonly string[], message: Buffer): Preview {
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
  const lines = body
    .split(/\r?\n/)
    .filter((l) => !/^(--|content-[a-z-]+:)/i.test(l))
    .slice(0, PREVIEW_LINES)
    .map((l) => l.slice(0, PREVIEW_LINE_CHARS));
  const senderDomain = domainOf(sender);
  return {
    sender,
    recipients: recipients.map((address) => ({ address, external: domainOf(address) !== senderDomain })),
    subject: subject === null ? null : subject.slice(0, PREVIEW_LINE_CHARS),
    size: message.length,
    attachments: [...new Set(attachments)],
    text: lines.join("\n").trim(),
  };
}
