/**
 * Globs of docs/config.md "Globs", compiled once per config load.
 *
 * - Folder globs are `/`-separated; `*` and `?` stay within one level, a `**`
 *   segment spans any number of levels. `Archive/**` matches everything below
 *   Archive but not Archive itself; `**` alone matches every folder.
 * - Address globs match a parsed addr-spec (`local@domain`); `*` and `?` may
 *   cross the `@`.
 * - Subject globs match the whole (unfolded, decoded) subject.
 *
 * Every glob is case-insensitive. For folders that is wider than RFC 3501 asks
 * (only INBOX is case-insensitive there), on purpose: Gmail and Exchange fold
 * case, so a case-sensitive deny rule on `Secret` would let `SECRET` through.
 * Glob and value are both compared after foldCase(), on every path.
 */

export type GlobKind = "folder" | "address" | "subject";

export interface Glob {
  readonly source: string;
  /** True when the glob matches every value (`*`, or `**` for folders). */
  readonly matchesAll: boolean;
  test(value: string): boolean;
  /** The same, for a value already passed through foldCase() (the engine folds each request field once). */
  testFolded(folded: string): boolean;
}

/** A glob that cannot be compiled; `message` says what is wrong with it. */
export class GlobError extends Error {
  override name = "GlobError";
}

/**
 * Lower-case letters that Unicode simple case folding (CaseFolding.txt, statuses C and S) maps to another letter, and
 * what they fold to: the characters lower-casing leaves apart but a case-insensitive Unicode regular expression (flags
 * `iu`, which compares by simple case folding) treats as equal. tests/policy/fold.test.ts checks every character
 * against such an expression, so the comparison of text and of regular expressions cannot disagree.
 */
const FOLD: Readonly<Record<string, string>> = {
  "\u00b5": "\u03bc", // µ MICRO SIGN, μ
  "\u017f": "\u0073", // ſ LONG S, s
  "\u0345": "\u03b9", // COMBINING GREEK YPOGEGRAMMENI, ι
  "\u03c2": "\u03c3", // ς FINAL SIGMA, σ
  "\u03d0": "\u03b2", // ϐ, β
  "\u03d1": "\u03b8", // ϑ, θ
  "\u03d5": "\u03c6", // ϕ, φ
  "\u03d6": "\u03c0", // ϖ, π
  "\u03f0": "\u03ba", // ϰ, κ
  "\u03f1": "\u03c1", // ϱ, ρ
  "\u03f5": "\u03b5", // ϵ, ε
  "\u1c80": "\u0432", // U+1C80–U+1C88, variant forms of Cyrillic small letters, to the ordinary letters
  "\u1c81": "\u0434",
  "\u1c82": "\u043e",
  "\u1c83": "\u0441",
  "\u1c84": "\u0442",
  "\u1c85": "\u0442",
  "\u1c86": "\u044a",
  "\u1c87": "\u0463",
  "\u1c88": "\ua64b",
  "\u1e9b": "\u1e61", // ẛ, ṡ
  "\u1fbe": "\u03b9", // GREEK PROSGEGRAMMENI, ι
  "\u1fd3": "\u0390", // ΐ, its canonical equivalent U+0390
  "\u1fe3": "\u03b0", // ΰ, U+03B0
  "\ufb05": "\ufb06", // ligature long s t, ligature st
};
const FOLD_CHARS = new RegExp(`[${Object.keys(FOLD).join("")}]`, "gu");

/**
 * Text as globs compare it (docs/config.md "Globs"): lower-cased, then the letters of FOLD replaced, so that `ſ`
 * equals `s`, `K` (KELVIN SIGN) `k` and `ς` `σ`. `ß` and `ẞ` are equal and `ss` is not (no full case folding); dotless
 * `ı` stays apart from `i`, and `İ` lower-cases to `i` with a combining dot above, as simple case folding has it.
 */
export function foldCase(text: string): string {
  const lower = text.toLowerCase();
  // Every letter of FOLD is past U+007F: ASCII text, most of what is folded, needs no second pass.
  return NON_ASCII.test(lower) ? lower.replace(FOLD_CHARS, (c) => FOLD[c]!) : lower;
}

const NON_ASCII = /[^\x00-\x7f]/;

const REGEX_SPECIAL = /[.+^${}()|[\]\\]/g;

export function escapeLiteral(text: string): string {
  return text.replace(REGEX_SPECIAL, "\\$&");
}

/** `*` and `?` inside one folder level, or anywhere in an address or subject. */
function wildcards(text: string, any: string, one: string): string {
  let out = "";
  for (const part of text.split(/([*?])/)) {
    if (part === "*") out += `${any}*`;
    else if (part === "?") out += one;
    else out += escapeLiteral(part);
  }
  return out;
}

function compileFolder(pattern: string): string {
  if (/[[\]{}\\%]/.test(pattern)) {
    throw new GlobError(`folder glob "${pattern}": only * ? and ** are special; [ ] { } \\ % are not allowed`);
  }
  const segments = pattern.split("/");
  if (segments.some((s) => s === "")) {
    throw new GlobError(`folder glob "${pattern}": empty level (leading, trailing or double "/")`);
  }
  let re = "";
  let needSep = false;
  segments.forEach((seg, i) => {
    const last = i === segments.length - 1;
    if (seg === "**") {
      if (last) re += needSep ? "/[^]+" : "[^]+";
      else {
        re += `${needSep ? "/" : ""}(?:[^]+/)?`;
        needSep = false;
        return;
      }
    } else {
      if (seg.includes("**")) {
        throw new GlobError(`folder glob "${pattern}": "**" must be a whole level, as in "Archive/**"`);
      }
      re += (needSep ? "/" : "") + wildcards(seg, "[^/]", "[^/]");
    }
    needSep = true;
  });
  return re;
}

function compileAddress(pattern: string): string {
  if (pattern !== "*" && !pattern.includes("@")) {
    throw new GlobError(
      `address glob "${pattern}": expected local@domain (wildcards allowed, e.g. "*@corp.test") or "*"`,
    );
  }
  if (/[\s<>()[\]{}\\,;:"]/.test(pattern)) {
    throw new GlobError(
      `address glob "${pattern}": must be a bare address pattern, without display name, brackets or quotes`,
    );
  }
  if (pattern.includes("**")) throw new GlobError(`address glob "${pattern}": "**" is not meaningful here; use "*"`);
  const never = impossibleAddress(pattern);
  if (never !== null) throw new GlobError(`address glob "${pattern}": ${never}, so it could never match`);
  return wildcards(pattern, "[^]", "[^]");
}

/**
 * Why an address glob could never match an address the rules are asked about, or null. Those addresses are a local
 * part, `@` and a domain (docs/filtering.md "Deciding a message"): never empty on either side, a domain neither
 * beginning nor ending with a dot (a trailing dot makes a header's address unknown and the envelope refuses it) and
 * no two dots in a row, nor a dot before the `@`, nor a second `@`, outside a quoted local part (`"a..b"@x`, which
 * keeps its quotes in the reading: a glob cannot write quotes, and reaches one only through a wildcard, as `*..*@x`
 * would; such globs are refused too, which fails closed). A deny rule on `*@evil.test.` or `*@.evil.test` would
 * otherwise let all of evil.test's mail through.
 */
function impossibleAddress(pattern: string): string | null {
  if (pattern.startsWith("@")) return 'it has an empty local part (for any local part write "*@domain")';
  if (pattern.endsWith("@")) return 'it has an empty domain (for any domain write "local@*")';
  // An addr-spec has one `@` outside quotes (RFC 5322 §3.4.1; docs/filtering.md "Deciding a message"): another one
  // stands only inside a quoted local part, which a glob reaches only through a wildcard, as with `..` below.
  if (pattern.indexOf("@") !== pattern.lastIndexOf("@"))
    return "it has more than one @ (an address has one outside a quoted local part; a glob cannot write quotes)";
  if (pattern.endsWith(".")) return "it ends with a dot, and addresses are compared without a trailing dot";
  if (pattern.includes("@.")) return 'its domain begins with a dot (for subdomains write "*@*.domain")';
  if (pattern.includes("..")) return "it has two dots in a row";
  if (pattern.includes(".@")) return "its local part ends with a dot";
  return null;
}

function compileSubject(pattern: string): string {
  return wildcards(pattern, "[^]", "[^]");
}

/**
 * A matcher for globs whose only wildcard is `*` (and, for folders, whose `*`
 * cannot meet a `/`): the value, case-folded, must start with the first
 * piece, end with the last and hold the others in order. Most real globs
 * (`notifications@*`, `*@corp.test`, `INBOX`, `[JIRA] *`) take this path,
 * which is several times faster than a regular expression. Both the pattern
 * and the value it takes are already passed through foldCase().
 */
function starMatcher(folded: string): ((value: string) => boolean) | undefined {
  if (folded.includes("?")) return undefined;
  const pieces = folded.split("*");
  const first = pieces[0]!;
  if (pieces.length === 1) return (v) => v === first;
  const last = pieces[pieces.length - 1]!;
  const middle = pieces.slice(1, -1).filter((p) => p !== "");
  const minLength = pieces.reduce((n, p) => n + p.length, 0);
  return (v) => {
    if (v.length < minLength) return false;
    if (!v.startsWith(first) || !v.endsWith(last)) return false;
    let at = first.length;
    const end = v.length - last.length;
    for (const piece of middle) {
      const found = v.indexOf(piece, at);
      if (found < 0 || found + piece.length > end) return false;
      at = found + piece.length;
    }
    return true;
  };
}

/**
 * Is this folder glob matched by its regular expression (`?` one code point) rather than by comparing case-folded
 * text? Both compare foldCase() of glob and value.
 */
export function folderGlobUsesRegex(pattern: string): boolean {
  return /[*?]/.test(pattern.replace(/\/\*\*$/, ""));
}

/** Folder globs that are plain names, or a plain prefix followed by `/**`; `folded` is passed through foldCase(). */
function folderMatcher(folded: string): ((value: string) => boolean) | undefined {
  if (folderGlobUsesRegex(folded)) return undefined;
  if (folded.endsWith("/**")) {
    const prefix = folded.slice(0, -2);
    return (v) => v.length > prefix.length && v.startsWith(prefix);
  }
  return starMatcher(folded);
}

export function compileGlob(kind: GlobKind, pattern: string): Glob {
  if (pattern.length === 0) throw new GlobError(`${kind} glob is empty`);
  const matchesAll = pattern === "*" ? kind !== "folder" : kind === "folder" && pattern === "**";
  const compile = kind === "folder" ? compileFolder : kind === "address" ? compileAddress : compileSubject;
  compile(pattern); // errors name the glob as written
  // Values arrive case-folded (the engine folds each field once), so the expression is built from the folded glob
  // too: lower-casing is not simple case folding (`İ` becomes `i̇`, which /İ/iu does not match), and a deny rule must
  // match exactly what it names. Its flag `i` finds equal only what foldCase() already made equal.
  const folded = foldCase(pattern);
  const re = new RegExp(`^${compile(folded)}$`, "iu");
  const fast = kind === "folder" ? folderMatcher(folded) : starMatcher(folded);
  const testFolded = matchesAll ? () => true : (fast ?? ((value: string) => re.test(value)));
  return {
    source: pattern,
    matchesAll,
    testFolded,
    test: (value: string) => testFolded(foldCase(value)),
  };
}
