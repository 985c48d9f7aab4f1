/**
 * Text from the wire's bytes (RFC 9051 §9: the protocol's syntax is ASCII; anything else read here is taken a byte
 * to a code point): short tokens through a small cache of recently seen ones, and Latin-1 runs (docs/imap-wire.md
 * "Decisions").
 */

/** Tokens up to this long are looked up in TOKENS before a new string is built. */
const TOKEN_MAX = 16;
/**
 * Recently seen short tokens (`FETCH`, `UID`, `BODY`, `FLAGS`, flag names...), by a hash of their bytes: a
 * response stream repeats the same few words, and building each one again was a tenth of the parse. A hit is
 * checked byte by byte, so the cache can only save work, never change a result; it holds at most TOKEN_SLOTS
 * strings of at most TOKEN_MAX characters. It is shared by the process's sessions; what one session could learn
 * of another's tokens from it is a hit or a miss, nanoseconds inside a network round trip.
 */
const TOKEN_SLOTS = 256;
const TOKENS: (string | undefined)[] = new Array<string | undefined>(TOKEN_SLOTS);

export function token(buf: Uint8Array, start: number, end: number): string {
  const n = end - start;
  if (n === 0) return "";
  if (n > TOKEN_MAX) return latin1(buf, start, end);
  let h = n;
  for (let i = start; i < end; i++) h = (h * 31 + buf[i]!) | 0;
  const slot = h & (TOKEN_SLOTS - 1);
  const hit = TOKENS[slot];
  if (hit !== undefined && hit.length === n) {
    let same = true;
    for (let i = 0; i < n; i++) {
      if (hit.charCodeAt(i) !== buf[start + i]) {
        same = false;
        break;
      }
    }
    if (same) return hit;
  }
  const fresh = latin1(buf, start, end);
  TOKENS[slot] = fresh;
  return fresh;
}

/**
 * Runs up to this long are built a character at a time (as fast, and at most three intermediate strings); longer
 * ones, a tag such as `a0012` among them, by the runtime in one step, one string.
 */
export const LATIN1_LOOP_MAX = 4;

/** The runtime's Latin-1 decoding of a byte range, one string in one step (docs/imap-wire.md "Decisions"). */
const bufferToString = Buffer.prototype.toString as (this: Uint8Array, enc: "latin1", s: number, e: number) => string;

/**
 * Latin-1 bytes to a string, each byte its own code point (0x80-0x9F included, unlike a TextDecoder's "latin1",
 * which is windows-1252). A short run is built a character at a time; a longer one (a status text, a quoted string)
 * by Buffer's Latin-1 decoding applied to the bytes as they are, which makes one string where appending makes one
 * per character.
 */
export function latin1(buf: Uint8Array, start: number, end: number): string {
  if (end - start <= LATIN1_LOOP_MAX) {
    let s = "";
    for (let i = start; i < end; i++) s += String.fromCharCode(buf[i]!);
    return s;
  }
  return bufferToString.call(buf, "latin1", start, end);
}
