/**
 * Address lists of RFC 5322 §3.4 reduced to their addr-specs: display names,
 * comments and group names are dropped, because rules match addresses only
 * (docs/config.md "Globs"). `"notifications@shop.test" <spam@evil.test>` is spam@evil.test.
 *
 * Parsing is strict where it matters for policy: an unterminated quote, comment
 * or angle bracket, or a mailbox without exactly one unquoted `@`, makes the
 * whole list unparseable, and callers must then treat the field as unknown
 * (which the engine resolves to deny) rather than guess.
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

/** A bare addr-spec from tokens (no display name): `local@domain`. */
function addrSpec(tokens: readonly Token[]): string | undefined {
  let text = "";
  let ats = 0;
  for (const t of tokens) {
    if (t.kind === "space") continue;
    if (t.kind === "angle") return undefined;
    if (t.kind === "special" && (t.text === "," || t.text === ":" || t.text === ";")) return undefined;
    if (t.kind === "special" && t.text === "@") ats++;
    text += t.text;
  }
  if (ats !== 1 || text.startsWith("@") || text.endsWith("@")) return undefined;
  return text.toLowerCase();
}

function angleSpec(inner: string): string | undefined {
  let spec = inner.trim();
  // obs-route (RFC 5322 §4.4): "<@relay1,@relay2:user@host>" delivers to user@host.
  if (spec.startsWith("@")) {
    const colon = spec.indexOf(":");
    if (colon < 0) return undefined;
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
    return angleSpec(angles[0]!.text);
  }
  return addrSpec(tokens);
}

/** Parses an address-list header value (From, To, Cc, Bcc, Reply-To). */
export function parseAddressList(value: string): ParsedAddressList {
  const tokens = tokenize(value);
  if (!tokens) return FAILED;
  const addresses: string[] = [];
  let current: Token[] = [];
  let inGroup = false;
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
    if (t.kind === "special" && t.text === ",") {
      if (!flush()) return FAILED;
    } else if (t.kind === "special" && t.text === ":" && !inGroup) {
      // "Group name:" — the display name before the colon is dropped.
      current = [];
      inGroup = true;
    } else if (t.kind === "special" && t.text === ";" && inGroup) {
      if (!flush()) return FAILED;
      inGroup = false;
    } else {
      current.push(t);
    }
  }
  if (inGroup) return FAILED;
  if (!flush()) return FAILED;
  return { addresses, ok: true };
}
