/**
 * Subjects that say "secret" in every way a mail client would show it, and ways the reader cannot be sure of, for
 * the reader's unit table (tests/mail/reader.test.ts) and for both proxies end to end (tests/smtp/encodings.test.ts,
 * tests/imap/encodings.test.ts). `shown` is what `readUnstructured` returns for the unfolded value: the text as a
 * client shows it (every one contains "secret" in some case), or null (unknown, which a subject rule denies).
 * `raw` is what stands after "Subject:" on the wire, folds (CRLF + space) included.
 */

export interface EncodingCase {
  readonly name: string;
  /** The field value as written in the message, possibly folded. */
  readonly raw: string;
  /** How `raw` becomes octets: UTF-8 (the default, RFC 6532) or Latin-1 (octets that are not UTF-8). */
  readonly octets?: "utf8" | "latin1";
  readonly shown: string | null;
  /** The IMAP side cannot append it (Dovecot refuses NUL in a message). */
  readonly smtpOnly?: boolean;
}

const b64 = (bytes: ArrayLike<number> | string): string =>
  Buffer.from(typeof bytes === "string" ? Buffer.from(bytes, "latin1") : Uint8Array.from(bytes)).toString("base64");
const utf16be = (text: string): number[] => [...text].flatMap((c) => [c.charCodeAt(0) >> 8, c.charCodeAt(0) & 0xff]);
const utf16le = (text: string): number[] => [...text].flatMap((c) => [c.charCodeAt(0) & 0xff, c.charCodeAt(0) >> 8]);
const ESC = "\x1b";

/** Every one of these is read as text containing "secret". */
export const DECODED: readonly EncodingCase[] = [
  { name: "plain ASCII", raw: "Top secret plan", shown: "Top secret plan" },
  { name: "Q, UTF-8", raw: "=?UTF-8?Q?Top_secret_plan?=", shown: "Top secret plan" },
  { name: "q in lower case, upper-case text", raw: "=?utf-8?q?TOP_SECRET?=", shown: "TOP SECRET" },
  { name: "b, mixed-case charset", raw: `=?UtF-8?b?${b64("the secret")}?=`, shown: "the secret" },
  { name: "B without padding", raw: `=?UTF-8?B?${b64("secret").replace(/=+$/, "")}?=`, shown: "secret" },
  { name: "Q, every octet escaped", raw: "=?utf-8?Q?=73=65=63=72=65=74?=", shown: "secret" },
  { name: "Q, lower-case hex", raw: "=?utf-8?Q?=73=65=63ret?=", shown: "secret" },
  { name: "ISO-8859-1 (decoded as windows-1252)", raw: "=?ISO-8859-1?Q?d=E9j=E0_secret?=", shown: "déjà secret" },
  { name: "windows-1252, B", raw: `=?windows-1252?B?${b64("\x93secret\x94")}?=`, shown: "“secret”" },
  { name: "KOI8-R", raw: `=?koi8-r?B?${b64("\xf3\xc5\xcb\xd2\xc5\xd4 secret")}?=`, shown: "Секрет secret" },
  { name: "GB18030", raw: `=?gb18030?B?${b64("secret")}?=`, shown: "secret" },
  { name: "Shift_JIS", raw: `=?Shift_JIS?B?${b64("secret")}?=`, shown: "secret" },
  { name: "Big5", raw: `=?big5?Q?secret?=`, shown: "secret" },
  { name: "EUC-KR", raw: `=?euc-kr?Q?secret?=`, shown: "secret" },
  { name: "UTF-16BE", raw: `=?UTF-16BE?B?${b64(utf16be("secret"))}?=`, shown: "secret" },
  { name: "UTF-16LE", raw: `=?utf-16le?B?${b64(utf16le("secret"))}?=`, shown: "secret" },
  {
    name: "UTF-16, big-endian byte order mark",
    raw: `=?utf-16?B?${b64([0xfe, 0xff, ...utf16be("secret")])}?=`,
    shown: "secret",
  },
  {
    name: "UTF-16, little-endian byte order mark",
    raw: `=?UTF-16?B?${b64([0xff, 0xfe, ...utf16le("secret")])}?=`,
    shown: "secret",
  },
  {
    name: "ISO-2022-JP, escapes inside the word",
    raw: `=?ISO-2022-JP?B?${b64(`s${ESC}(Bec${ESC}(Jret`)}?=`,
    shown: "secret",
  },
  {
    name: "ISO-2022-JP, kanji then ASCII",
    raw: `=?iso-2022-jp?B?${b64(`${ESC}$B4A;z${ESC}(B secret`)}?=`,
    shown: "漢字 secret",
  },
  { name: "RFC 2231 language suffix", raw: "=?utf-8*en?Q?secret?=", shown: "secret" },
  { name: "language suffix with a region", raw: `=?UTF-8*en-US?B?${b64("secret")}?=`, shown: "secret" },
  { name: "adjacent words joined", raw: "=?utf-8?Q?se?= =?utf-8?Q?cr?=  =?utf-8?Q?et?=", shown: "secret" },
  {
    name: "adjacent words in different charsets",
    raw: `=?iso-8859-1?Q?sec?= =?UTF-16BE?B?${b64(utf16be("ret"))}?=`,
    shown: "secret",
  },
  { name: "adjacent words on folded lines", raw: "=?utf-8?Q?sec?=\r\n =?utf-8?Q?ret?=", shown: "secret" },
  { name: "adjacent words folded with a tab", raw: `=?utf-8?B?${b64("sec")}?=\r\n\t=?UTF-8?Q?ret?=`, shown: "secret" },
  {
    name: "a UTF-8 character split between two words",
    raw: "=?utf-8?Q?=C3?= =?utf-8?Q?=A9_secret?=",
    shown: "é secret",
  },
  { name: "word glued to text", raw: "top=?utf-8?Q?secr?=et", shown: "topsecret" },
  { name: "word inside a quoted string", raw: '"=?utf-8?Q?secret?="', shown: '"secret"' },
  { name: "word inside a comment", raw: "(=?utf-8?Q?secret?=)", shown: "(secret)" },
  { name: "raw UTF-8 (RFC 6532)", raw: "Überweisung secret", shown: "Überweisung secret" },
  { name: "zero-width space, raw", raw: "se\u200bcret", shown: "secret" },
  { name: "zero-width joiner, encoded", raw: "=?utf-8?Q?se=E2=80=8Dcret?=", shown: "secret" },
  { name: "soft hyphen", raw: "=?iso-8859-1?Q?sec=ADret?=", shown: "secret" },
  { name: "byte order mark inside the text", raw: "=?utf-8?Q?sec=EF=BB=BFret?=", shown: "secret" },
  { name: "a left-to-right mark", raw: "se\u200ecret", shown: "secret" },
  {
    name: "a very long header of encoded words",
    raw:
      `${Array.from({ length: 400 }, (_, i) => `=?utf-8?B?${b64(`filler ${i} `)}?=`).join("\r\n ")}` +
      "\r\n =?utf-8?Q?secret?=",
    shown: `${Array.from({ length: 400 }, (_, i) => `filler ${i} `).join("")}secret`,
  },
];

/** Every one of these is unknown. */
export const UNKNOWN: readonly EncodingCase[] = [
  { name: "UTF-7 (TextDecoder does not know it)", raw: "=?utf-7?Q?+AHMAZQBjAHIAZQB0-?=", shown: null },
  { name: "an unknown charset", raw: "=?x-unknown?Q?secret?=", shown: null },
  // KELVIN SIGN lower-cases to `k` in JavaScript; no charset label is spelled with it.
  {
    name: "KELVIN SIGN in a charset label",
    raw: `=?\u212Aoi8-r?B?${b64("\xf3\xc5\xcb\xd2\xc5\xd4 secret")}?=`,
    shown: null,
  },
  { name: "an empty charset", raw: "=??Q?secret?=", shown: null },
  { name: "x-user-defined", raw: "=?x-user-defined?Q?secret?=", shown: null },
  { name: "UTF-16 without a byte order mark", raw: `=?utf-16?B?${b64(utf16be("secret"))}?=`, shown: null },
  { name: "UCS-2 without a byte order mark", raw: `=?ucs-2?B?${b64(utf16le("secret"))}?=`, shown: null },
  {
    name: "UTF-16 cut in the middle of a unit",
    raw: `=?UTF-16BE?B?${b64(utf16be("secret").slice(0, 5))}?=`,
    shown: null,
  },
  { name: "lone surrogate in UTF-16BE", raw: `=?utf-16be?B?${b64([0xd8, 0x00, ...utf16be("secret")])}?=`, shown: null },
  { name: "bad base64", raw: "=?utf-8?B?c2Vj*cmV0?=", shown: null },
  { name: "base64 of impossible length", raw: "=?utf-8?B?c2VjcmV0c?=", shown: null },
  { name: "bad =XX in Q", raw: "=?utf-8?Q?secr=ZZet?=", shown: null },
  { name: "raw 8-bit octet inside a Q word", raw: "=?utf-8?Q?sécret?=", shown: null },
  { name: "a space inside a word", raw: "=?utf-8?Q?se cret?=", shown: null },
  { name: "a word cut by a fold", raw: `=?utf-8?B?${b64("sec")}\r\n ${b64("ret")}?=`, shown: null },
  { name: "no closing ?=", raw: "=?utf-8?Q?secret", shown: null },
  { name: "overlong UTF-8", raw: "=?utf-8?Q?=C1=B3ecret?=", shown: null },
  { name: "truncated UTF-8", raw: "=?utf-8?Q?secret=E2=80?=", shown: null },
  { name: "encoded surrogate in UTF-8", raw: "=?utf-8?Q?=ED=A0=80secret?=", shown: null },
  { name: "NUL from decoding", raw: "=?utf-8?Q?sec=00ret?=", shown: null },
  { name: "CR LF from decoding", raw: "=?utf-8?Q?sec=0D=0Aret?=", shown: null },
  { name: "a C1 control from decoding", raw: "=?utf-8?Q?sec=C2=85ret?=", shown: null },
  {
    name: "ISO-2022-JP escape that would carry into the next word",
    raw: `=?iso-2022-jp?B?${b64(`se${ESC}$B`)}?= =?iso-2022-jp?Q?cret?=`,
    shown: null,
  },
  { name: "Shift_JIS lead octet before the next word", raw: "=?shift_jis?Q?se=83?= =?shift_jis?Q?cret?=", shown: null },
  { name: "right-to-left override, encoded", raw: "=?utf-8?Q?=E2=80=AEterces?=", shown: null },
  { name: "right-to-left isolate, raw", raw: "\u2067terces\u2069", shown: null },
  { name: "line separator, raw", raw: "sec\u2028ret", shown: null },
  { name: "paragraph separator, encoded", raw: "=?utf-8?Q?sec=E2=80=A9ret?=", shown: null },
  { name: "a replacement character, raw", raw: "sec\ufffdret", shown: null },
  { name: "an octet that is not UTF-8 (Latin-1 é)", raw: "s\xe9cret", octets: "latin1", shown: null },
  { name: "a raw NUL", raw: "sec\x00ret", shown: null, smtpOnly: true },
];

/** Subjects about something else, for the allowed control messages. */
export const CONTROL_SUBJECT = "=?utf-8?Q?Quarterly_plan_=E2=80=93_caf=C3=A9?=";
export const CONTROL_SHOWN = "Quarterly plan – café";

/** The header line `Subject: <raw>` as octets. */
export function subjectLine(c: EncodingCase): Buffer {
  return Buffer.from(`Subject: ${c.raw}\r\n`, c.octets ?? "utf8");
}
