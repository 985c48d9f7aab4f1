/**
 * Case folding for what mail and protocols define as ASCII-case-insensitive (MIME types and tokens, charset
 * labels). String.toLowerCase folds Unicode too, and a few characters fold into ASCII: KELVIN SIGN (U+212A) becomes
 * `k`, so `\u212Aoi8-r` would name KOI8-R and `p\u212Acs7` a real type. Folding only A-Z keeps such text what it is:
 * not a label or token anyone knows (docs/filtering.md "Deciding a message"). Logins fold otherwise (loginKey in
 * src/net/sessions.ts).
 */
export function asciiLowerCase(text: string): string {
  return text.replace(/[A-Z]+/g, (letters) => letters.toLowerCase());
}
