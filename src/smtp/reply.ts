/** SMTP replies (RFC 5321 §4.2) with enhanced status codes (RFC 2034, RFC 3463). */

import { MAX_REPLY_TEXT } from "./limits.ts";

export interface Reply {
  readonly code: number;
  /** Lines of text, each without the code; the enhanced status code, when present, is part of each line. */
  readonly lines: readonly string[];
}

/** Formats a reply; every line but the last uses "-" after the code. */
export function formatReply(code: number, lines: readonly string[]): string {
  let out = "";
  for (let i = 0; i < lines.length; i++) out += `${code}${i === lines.length - 1 ? " " : "-"}${lines[i]}\r\n`;
  return out;
}

/** One line: `code status text`. */
export function reply(code: number, status: string, text: string): string {
  return `${code} ${status} ${clean(text)}\r\n`;
}

/** Text from elsewhere (upstream replies, addresses) made safe for one reply line. */
export function clean(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[^\x20-\x7e]/g, "?").slice(0, MAX_REPLY_TEXT);
}
