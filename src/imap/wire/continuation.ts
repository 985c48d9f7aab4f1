/**
 * Lines an agent sends outside the command grammar, read with `Framer.expectRawLine()`:
 * AUTHENTICATE continuations (RFC 9051 §6.2.2) and IDLE's DONE (RFC 2177, §6.3.13).
 */
import { decodeBase64 } from "./command.ts";
import { type Parsed, WireError } from "./errors.ts";
import { latin1 } from "./text.ts";

export type AuthenticateLine = { readonly cancel: true } | { readonly cancel: false; readonly data: Uint8Array };

/** A SASL continuation: base64 (empty line = empty response) or `*` to cancel. */
export function parseAuthenticateLine(line: Uint8Array): Parsed<AuthenticateLine> {
  if (line.length === 1 && line[0] === 0x2a) return { ok: true, value: { cancel: true } };
  for (let i = 0; i < line.length; i++) {
    if (line[i]! >= 0x80) return { ok: false, error: new WireError("syntax", "invalid base64 in AUTHENTICATE") };
  }
  const data = decodeBase64(latin1(line, 0, line.length));
  if (data === null) return { ok: false, error: new WireError("syntax", "invalid base64 in AUTHENTICATE") };
  return { ok: true, value: { cancel: false, data } };
}

/** True if the line is `DONE` (case-insensitive); anything else ends IDLE with BAD. */
export function isIdleDone(line: Uint8Array): boolean {
  return (
    line.length === 4 &&
    (line[0]! | 0x20) === 0x64 &&
    (line[1]! | 0x20) === 0x6f &&
    (line[2]! | 0x20) === 0x6e &&
    (line[3]! | 0x20) === 0x65
  );
}
