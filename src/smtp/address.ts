/**
 * MAIL FROM / RCPT TO arguments (RFC 5321 §4.1.2, §4.1.1.11) read strictly (docs/smtp.md): `<path>` and
 * parameters; the path must be a mailbox that `readEnvelopeAddress` (src/mail/address.ts) accepts.
 */

import { readEnvelopeAddress } from "../mail/address.ts";

export interface MailPath {
  /** As the client wrote it (case kept: a local part MAY be case-sensitive, RFC 5321 §2.4); "" for `<>`. */
  readonly address: string;
  /** Lower-cased, for the policy (rules compare case-insensitively). */
  readonly key: string;
  /** Parameters with upper-cased keywords; value null for a keyword without "=". */
  readonly params: ReadonlyMap<string, string | null>;
}

export type PathResult =
  | { readonly ok: true; readonly path: MailPath }
  | { readonly ok: false; readonly code: number; readonly status: string; readonly text: string };

const PARAM = /^([A-Za-z0-9][A-Za-z0-9-]*)(?:=([\x21-\x3c\x3e-\x7e]+))?$/;

function refuse(code: number, status: string, text: string): PathResult {
  return { ok: false, code, status, text };
}

/**
 * Parses what follows `MAIL FROM:` or `RCPT TO:`: `<path>` then optional SP-separated parameters.
 * `allowEmpty` accepts the null reverse path `<>` (MAIL only).
 */
export function parsePathArgument(text: string, allowEmpty: boolean, what: "sender" | "recipient"): PathResult {
  const badSyntax = what === "sender" ? "5.1.7" : "5.1.3";
  // Some clients put a space after the colon (not in RFC 5321); harmless to allow.
  const rest = text.replace(/^ +/, "");
  if (!rest.startsWith("<")) return refuse(501, "5.5.4", `Syntax: the ${what} must be written <address>`);
  const close = rest.indexOf(">");
  if (close === -1) return refuse(501, "5.5.4", `Syntax: missing > after the ${what}`);
  const address = rest.slice(1, close);
  const tail = rest.slice(close + 1);
  if (tail !== "" && !tail.startsWith(" ")) return refuse(501, "5.5.4", "Syntax: a space must separate parameters");
  let key = "";
  if (address === "") {
    if (!allowEmpty) return refuse(553, badSyntax, "An empty recipient is not accepted");
  } else {
    const read = readEnvelopeAddress(address);
    if (!read.ok) {
      const status = read.problem.startsWith("only ASCII") ? "5.6.7" : badSyntax;
      return refuse(553, status, `<${address}> refused: ${read.problem}`);
    }
    key = read.key;
  }
  const params = new Map<string, string | null>();
  for (const word of tail.split(" ")) {
    if (word === "") continue;
    const m = PARAM.exec(word);
    if (m === null) return refuse(501, "5.5.4", `Syntax: malformed parameter ${JSON.stringify(word.slice(0, 40))}`);
    const key = m[1]!.toUpperCase();
    if (params.has(key)) return refuse(501, "5.5.4", `Syntax: parameter ${key} given twice`);
    params.set(key, m[2] ?? null);
  }
  return { ok: true, path: { address, key, params } };
}
