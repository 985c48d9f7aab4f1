/**
 * Addresses, one reading for the whole program.
 *
 * `parseAddressList`: address lists of RFC 5322 §3.4 (mailboxes and groups) reduced to their addr-specs: display
 * names, comments and group names are dropped, because rules match addresses only (docs/filtering.md "Deciding a
 * message", docs/smtp.md "What the message says"). `"notifications@shop.test" <spam@evil.test>` is spam@evil.test.
 * Encoded words (RFC 2047) are never decoded here: they may stand in a display name, not in an addr-spec (RFC 2047
 * §5), so a display name that decodes to an address is still only a name.
 *
 * Parsing is strict where it matters for policy: an unterminated quote, comment or angle bracket, a mailbox
 * without exactly one unquoted `@`, or an addr-spec with a character that is not ASCII or is a control character
 * (display names may have any) makes the whole list unparseable, and callers must then treat the field as unknown
 * (which the engine resolves to deny) rather than guess.
 *
 * `mailboxProblem`: the stricter envelope form (RFC 5321 §4.1.2) that MAIL FROM / RCPT TO and configured identities
 * must have (docs/smtp.md "Identities").
 */

export interface ParsedAddressList {
  /** addr-specs in order, lower-cased (rules compare case-insensitively). */
  readonly addresses: readonly string[];
  /** False when the value could not be parsed; `addresses` is then empty. */
  readonly ok: boolean;
}

const FAILED: ParsedAddressList = Object.freeze({ addresses: Object.freeze([]), ok: false });

type Token =
  | { kind: "word"; text: string } // atom, dot-atom piece or quoted string (with quotes)
  | { kind: "angle"; text: string }
  | { kind: "special"; text: "," | ":" | ";" | "@" | "." }
  | { kind: "space" };

function tokenize(input: string): Token[] | undefined {
  const out: Token[] = [];
  let i = 0;
  while (i < input.length) {
    const c = input[i]!;
    if (c === " " || c === "\t" || c === "\r" || c === "\n") {
      i++;
      if (out.at(-1)?.kind !== "space") out.push({ kind: "space" });
    } else if (c === "(") {
      let depth = 0;
      for (; i < input.length; i++) {
        const d = input[i];
        if (d === "\\") i++;
        else if (d === "(") depth++;
        else if (d === ")" && --depth === 0) break;
      }
      if (depth !== 0) return undefined;
      i++;
      if (out.at(-1)?.kind !== "space") out.push({ kind: "space" });
    } else if (c === '"') {
      let j = i + 1;
      for (; j < input.length && input[j] !== '"'; j++) if (input[j] === "\\") j++;
      if (j >= input.length) return undefined;
      out.push({ kind: "word", text: input.slice(i, j + 1) });
      i = j + 1;
    } else if (c === "<") {
      const j = input.indexOf(">", i);
      if (j < 0) return undefined;
      const inner = input.slice(i + 1, j);
      if (inner.includes("<") || inner.includes('"')) {
        // A quoted local part inside angle brackets: parse it as its own list.
        const sub = tokenize(inner);
        if (!sub) return undefined;
      }
      out.push({ kind: "angle", text: inner });
      i = j + 1;
    } else if (c === ">" || c === ")") {
      return undefined;
    } else if (c === "," || c === ":" || c === ";" || c === "@" || c === ".") {
      out.push({ kind: "special", text: c });
      i++;
    } else {
      let j = i;
      while (j < input.length && !' \t\r\n()"<>,:;@.'.includes(input[j]!)) j++;
      out.push({ kind: "word", text: input.slice(i, j) });
      i = j;
    }
  }
  return out;
}

/**
 * A bare addr-spec from tokens (no display name): `local@domain`, each side words separated by dots (RFC 5322
 * §3.4.1, with the white space and comments around the dots and the `@` that §4.4 allows). Anything else is none:
 * two words without a dot between them (`boss@corp.test x`, which Dovecot reads as boss@corp.test while joining
 * them would give boss@corp.testx), a dot at either end or doubled (`boss@corp.test.`, which DNS reads as
 * corp.test), a quoted string in the domain.
 */
function addrSpec(tokens: readonly Token[]): string | undefined {
  const parts: Exclude<Token, { kind: "space" }>[] = [];
  for (const t of tokens) {
    if (t.kind === "angle") return undefined;
    if (t.kind !== "space") parts.push(t);
  }
  const at = parts.findIndex((t) => t.kind === "special" && t.text === "@");
  if (at === -1 || !dotted(parts, 0, at) || !dotted(parts, at + 1, parts.length)) return undefined;
  if (parts.some((t, i) => i > at && t.text.startsWith('"'))) return undefined;
  // Each unquoted word of the local part is an atom, and the domain a dot-atom or a domain literal (RFC 5322 §3.4.1):
  // a `[`, `]` or `\` elsewhere (`a[b@corp.test, bob@x`) has Dovecot's ENVELOPE and Postfix's address rewriting
  // read the rest of the list as one quoted word, so that bob@x is no recipient a reader sees.
  if (parts.some((t, i) => i < at && t.kind === "word" && !t.text.startsWith('"') && !ATOM.test(t.text)))
    return undefined;
  const domain = parts.map((t, i) => (i > at ? t.text : "")).join("");
  if (!DOT_ATOM.test(domain) && !DOMAIN_LITERAL.test(domain)) return undefined;
  const text = localPart(parts.slice(0, at)) + parts.map((t, i) => (i < at ? "" : t.text)).join("");
  // ASCII only (docs/filtering.md "Deciding a message"), as in the envelope (`mailboxProblem`): the rules cannot
  // compare a Unicode address (no IDNA, no normalization), and lower-casing one can make it another: KELVIN SIGN
  // (U+212A) lower-cases to `k`, so `\u212Aate@corp.test` would have been read as kate@corp.test.
  // Nor a control character (RFC 5322 atext and qtext have none; obs-qtext's are obsolete): Dovecot reads
  // `\vbob@corp.test` as no address at all, `bob@corp.test\v` as a syntax error.
  if (NOT_PRINTABLE.test(text)) return undefined;
  return text.toLowerCase();
}

/** Anything but printable ASCII and the space (which a quoted local part may hold). */
const NOT_PRINTABLE = /[^\x20-\x7e]/;

/** atext (RFC 5322 §3.2.3), as a character class's contents (`mailboxProblem`'s envelope form allows less). */
const ATEXT_CLASS = "A-Za-z0-9!#$%&'*+/=?^_`{|}~-";
/** dot-atom-text (RFC 5322 §3.2.3), as a pattern's source. */
const DOT_ATOM_TEXT = `[${ATEXT_CLASS}]+(?:\\.[${ATEXT_CLASS}]+)*`;
const DOT_ATOM = new RegExp(`^${DOT_ATOM_TEXT}$`);
const ATOM = new RegExp(`^[${ATEXT_CLASS}]+$`);
/** `[` dtext `]` (RFC 5322 §3.4.1), as the tokenizer joins it (white space inside dropped). */
const DOMAIN_LITERAL_TEXT = "\\[[\\x21-\\x5a\\x5e-\\x7e]*\\]";
const DOMAIN_LITERAL = new RegExp(`^${DOMAIN_LITERAL_TEXT}$`);
/** A word of a phrase outside quotes: atext, or any character beyond ASCII (RFC 6532 §3.2). */
const PHRASE_ATOM = new RegExp(`^(?:[${ATEXT_CLASS}]|[^\\x00-\\x7f])+$`);

/**
 * A local part (words and dots) written the one way: a quoted string and the same text unquoted are the same
 * local part when that text is a dot-atom (RFC 5322 §3.4.1), and a quoted-pair is the character it quotes (§3.2.4),
 * so `"boss"`, `"b\oss"` and `"bo"."ss"` are `boss`, `boss` and `bo.ss` (Dovecot reads the first two so). Other
 * text is quoted again, `\` and `"` with a backslash: `"a\ b"` is `"a b"`.
 */
function localPart(parts: readonly Exclude<Token, { kind: "space" }>[]): string {
  if (!parts.some((t) => t.text.startsWith('"'))) return parts.map((t) => t.text).join("");
  let text = "";
  for (const t of parts) text += t.text.startsWith('"') ? t.text.slice(1, -1).replace(/\\(.)/gs, "$1") : t.text;
  return DOT_ATOM.test(text) ? text : `"${text.replace(/[\\"]/g, "\\$&")}"`;
}

/** Whether `parts[from..to)` is word *("." word): at least one word, each dot between two words. */
function dotted(parts: readonly Token[], from: number, to: number): boolean {
  if (to <= from || (to - from) % 2 === 0) return false;
  for (let i = from; i < to; i++) {
    const t = parts[i]!;
    if ((i - from) % 2 === 0 ? t.kind !== "word" : t.kind !== "special" || t.text !== ".") return false;
  }
  return true;
}

/**
 * obs-domain-list (RFC 5322 §4.4): `@domain`, then more of them after commas (which may stand empty). Each domain a
 * dot-atom or a domain literal (§3.4.1), nothing else: the angle brackets are found before the route is read, so a
 * `(` or `[` there opened a comment or a domain literal for Dovecot and Postfix that ran past the colon and the
 * address after it (`<@a(:rcpt@corp.test>` is `"<"@a` and a comment to both), while it was read as rcpt@corp.test.
 */
const ROUTE_DOMAIN = `(?:${DOT_ATOM_TEXT}|${DOMAIN_LITERAL_TEXT})`;
const ROUTE = new RegExp(`^@${ROUTE_DOMAIN}(?:[ \\t\\r\\n]*,[ \\t\\r\\n]*(?:@${ROUTE_DOMAIN})?)*$`);

/**
 * `text` without the white space the tokenizer skips (SP, HTAB, CR, LF) at its ends; no other space character.
 * Scanned from each end, in linear time: the regular expression `[ \t\r\n]+$` tried every inner run to the end.
 */
function trimFws(text: string): string {
  let start = 0;
  let end = text.length;
  while (start < end && isFws(text.charCodeAt(start))) start++;
  while (end > start && isFws(text.charCodeAt(end - 1))) end--;
  return start === 0 && end === text.length ? text : text.slice(start, end);
}

function isFws(c: number): boolean {
  return c === 32 || c === 9 || c === 13 || c === 10;
}

function angleSpec(inner: string): string | undefined {
  // White space as the tokenizer reads it, nothing else: `<\u00a0bob@x>` is no bob@x to Dovecot.
  let spec = trimFws(inner);
  // obs-route (RFC 5322 §4.4): "<@relay1,@relay2:user@host>" delivers to user@host. Anything else before the colon
  // (`<@x,ceo@bank.test:me@mine.test>`) is refused, not dropped: some readers take an address from it.
  if (spec.startsWith("@")) {
    const colon = spec.indexOf(":");
    if (colon < 0 || !ROUTE.test(trimFws(spec.slice(0, colon)))) return undefined;
    spec = spec.slice(colon + 1);
  }
  const tokens = tokenize(spec);
  return tokens ? addrSpec(tokens) : undefined;
}

function mailbox(tokens: readonly Token[]): string | undefined {
  const angles = tokens.filter((t) => t.kind === "angle");
  if (angles.length > 1) return undefined;
  if (angles.length === 1) {
    const last = tokens.findLastIndex((t) => t.kind !== "space");
    if (tokens[last]?.kind !== "angle") return undefined; // text after <...>
    // The display name is a phrase (RFC 5322 §3.4), or absent: `ceo@bank.test <me@x>` would have an address read
    // as a name here while readers (Python's email package among them) take it as the address.
    const name = tokens.slice(0, last);
    if (name.some((t) => t.kind !== "space") && !isPhrase(name)) return undefined;
    return angleSpec(angles[0]!.text);
  }
  return addrSpec(tokens);
}

/**
 * A display name: at least one word, and only words, white space and dots, a word first; an unquoted word only
 * atext or characters beyond ASCII. A control character, `[`, `]` or `\` in it (`a[b <x@y>, bob@z`) has Dovecot's
 * ENVELOPE read no address after it, or Postfix's rewriting turn the rest of the list into one quoted local part.
 */
function isPhrase(tokens: readonly Token[]): boolean {
  let words = 0;
  for (const t of tokens) {
    if (t.kind === "word" && !t.text.startsWith('"') && !PHRASE_ATOM.test(t.text)) return false;
    if (t.kind === "word") words++;
    else if (t.kind !== "space" && !(t.kind === "special" && t.text === ".")) return false;
    // obs-phrase (RFC 5322 §4.1) begins with a word: Dovecot reads nothing after `.a <x@y>`.
    else if (t.kind === "special" && words === 0) return false;
  }
  return words > 0;
}

/**
 * Characters of one address field's value (unfolded; octets, for the ASCII addresses are written in) that are
 * parsed: a longer one fails to parse, and its readers deny as for any field that does not parse (the MCP reply
 * tool refuses to read it). Parsing an address list costs some 0.1–0.2 s of the proxy's one thread per MiB, and
 * whoever writes the message chooses its length: an agent, for the SMTP proxy's checks, or anyone who mails the
 * account, for IMAP's classification (which reads at most CLASSIFY_HEADER_OCTETS of the fields anyway). A list of
 * 1,000 addresses is some 30 KB; the SMTP proxy takes 100 recipients per message (MAX_RECIPIENTS).
 */
export const MAX_ADDRESS_FIELD_CHARS = 64 * 1024;

/** Parses an address-list header value (From, To, Cc, Bcc, Reply-To); longer than MAX_ADDRESS_FIELD_CHARS fails. */
export function parseAddressList(value: string): ParsedAddressList {
  if (value.length > MAX_ADDRESS_FIELD_CHARS) return FAILED;
  const tokens = tokenize(value);
  if (!tokens) return FAILED;
  const addresses: string[] = [];
  let current: Token[] = [];
  let inGroup = false;
  /** A group has just ended: only a comma (or the end) may follow (RFC 5322 §3.4, address-list). */
  let groupEnded = false;
  const flush = (): boolean => {
    const meaningful = current.some((t) => t.kind !== "space");
    if (meaningful) {
      const spec = mailbox(current);
      if (!spec) return false;
      addresses.push(spec);
    }
    current = [];
    return true;
  };
  for (const t of tokens) {
    if (groupEnded && t.kind !== "space" && !(t.kind === "special" && t.text === ",")) {
      // `g: ; bob@x`: an address after a group without a comma, which Dovecot's ENVELOPE drops (it shows the
      // group alone): read as bob@x, it classed a blind copy as a To recipient.
      return FAILED;
    }
    if (t.kind === "special" && t.text === ",") {
      groupEnded = false;
      if (!flush()) return FAILED;
    } else if (t.kind === "special" && t.text === ":" && !inGroup) {
      // "Group name:" — the display name before the colon is dropped. It must be a phrase (RFC 5322 §3.4: words, and
      // the dots obs-phrase allows): an address there (`<ceo@x>:;`, `ceo@x:;`) would be read as a name and vanish,
      // while a reader may show it as the sender, so the list is unparseable.
      if (!isPhrase(current)) return FAILED;
      current = [];
      inGroup = true;
    } else if (t.kind === "special" && t.text === ";" && inGroup) {
      if (!flush()) return FAILED;
      inGroup = false;
      groupEnded = true;
    } else {
      current.push(t);
    }
  }
  if (inGroup) return FAILED;
  if (!flush()) return FAILED;
  return { addresses, ok: true };
}

const ATEXT = /^[A-Za-z0-9#$&'*+/=?^_`{|}~-]+$/;
const LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/**
 * Why an envelope mailbox (`local@domain`, no angle brackets) is refused, or null when it is acceptable.
 *
 * Only plain `local@domain` is accepted: a local part of dot-atom text without `%` or `!` (old routing hacks:
 * `evil%x@corp.com` is delivered to x by some relays), a domain of two or more LDH labels without a trailing dot
 * (`boss@hr` is completed by the upstream, `boss@hr.corp.test` under Postfix's append_dot_mydomain). Refused:
 * source routes (`@a:u@d`, RFC 5321 §4.1.1.3), quoted local parts (`"ok@corp.com"@x`), address literals
 * (`[1.2.3.4]`, and `1.2.3.4` without brackets: a numeric top-level label), and any non-ASCII octet, since
 * SMTPUTF8 is not offered (so U-label look-alikes such as `corр.test` with a Cyrillic `р` never reach the matcher;
 * A-labels are plain ASCII and compare as such).
 */
export function mailboxProblem(mailbox: string): string | null {
  if (/[\x00-\x20\x7f]/.test(mailbox)) return "spaces and control characters are not allowed in an address";
  if (/[^\x21-\x7e]/.test(mailbox)) return "only ASCII addresses are accepted (SMTPUTF8 is not offered)";
  if (mailbox.startsWith("@")) return "source routes are not accepted";
  if (mailbox.includes('"') || mailbox.includes("\\")) return "quoted local parts are not accepted";
  const at = mailbox.lastIndexOf("@");
  if (at <= 0 || mailbox.indexOf("@") !== at) return "an address needs exactly one @ between local part and domain";
  const local = mailbox.slice(0, at);
  const domain = mailbox.slice(at + 1);
  if (local.length > 64) return "local part longer than 64 octets";
  if (mailbox.length > 254) return "address longer than 254 octets";
  if (local.includes("%") || local.includes("!")) return "% and ! routing in local parts is not accepted";
  for (const atom of local.split(".")) {
    if (!ATEXT.test(atom)) return "malformed local part";
  }
  if (domain.startsWith("[")) return "address literals are not accepted";
  if (domain.endsWith(".")) return "a domain with a trailing dot is not accepted";
  for (const label of domain.split(".")) {
    if (!LABEL.test(label)) return "malformed domain";
  }
  // RFC 1123 §2.1: a top-level label is not all digits; `u@192.0.2.1` is an address literal without its brackets,
  // which some resolvers read as the address (getaddrinfo), so a rule on domains would not see where it goes.
  if (/^[0-9]+$/.test(domain.slice(domain.lastIndexOf(".") + 1)))
    return "a domain ending in a numeric label (an IP address without brackets) is not accepted";
  // RFC 5321 §2.3.5: only fully-qualified domain names. The upstream may complete one of a single label as it likes
  // (Postfix's append_dot_mydomain, on by default before compatibility level 1, delivers `boss@hr` to
  // boss@hr.$mydomain; a resolver's search list does the same to its MX), so a rule on `*@hr.corp.test` would not
  // see where it goes.
  if (!domain.includes(".")) return "a domain of one label (not fully qualified) is not accepted";
  return null;
}

/**
 * The mailbox a subaddress is delivered to: `user+detail@domain` is `user@domain` (RFC 5233 §1), or null when
 * `address` has no detail. `+` is the delimiter of Postfix's and Dovecot's usual setup, Gmail and Microsoft 365; a
 * server set up with another, or an alias, cannot be known from here. A `+` that begins the local part separates
 * nothing. Case is kept.
 */
export function subaddressMailbox(address: string): string | null {
  const at = address.lastIndexOf("@");
  const plus = address.indexOf("+");
  return plus > 0 && plus < at ? address.slice(0, plus) + address.slice(at) : null;
}

export type EnvelopeAddress =
  | { readonly ok: true; readonly key: string }
  | { readonly ok: false; readonly problem: string };

/**
 * An envelope mailbox (the address inside `MAIL FROM:<...>` / `RCPT TO:<...>`) as the SMTP proxy reads it: the
 * lower-cased key the rules are asked about (rules compare case-insensitively), or why it is refused.
 */
export function readEnvelopeAddress(mailbox: string): EnvelopeAddress {
  const problem = mailboxProblem(mailbox);
  return problem === null ? { ok: true, key: mailbox.toLowerCase() } : { ok: false, problem };
}
