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
 */

export type GlobKind = "folder" | "address" | "subject";

export interface Glob {
  readonly source: string;
  /** True when the glob matches every value (`*`, or `**` for folders). */
  readonly matchesAll: boolean;
  test(value: string): boolean;
  /** The same, for a value already lower-cased (the engine folds each request field once). */
  testFolded(lower: string): boolean;
}

/** A glob that cannot be compiled; `message` says what is wrong with it. */
export class GlobError extends Error {
  override name = "GlobError";
}

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
  return wildcards(pattern, "[^]", "[^]");
}

function compileSubject(pattern: string): string {
  return wildcards(pattern, "[^]", "[^]");
}

/**
 * A matcher for globs whose only wildcard is `*` (and, for folders, whose `*`
 * cannot meet a `/`): the value, lower-cased, must start with the first
 * piece, end with the last and hold the others in order. Most real globs
 * (`notifications@*`, `*@corp.test`, `INBOX`, `[JIRA] *`) take this path,
 * which is several times faster than a regular expression. The matcher
 * takes the value already lower-cased.
 */
function starMatcher(pattern: string): ((lower: string) => boolean) | undefined {
  if (pattern.includes("?")) return undefined;
  const pieces = pattern.toLowerCase().split("*");
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
 * Is this folder glob matched by its regular expression (flags `iu`: Unicode case folding, `?` one code point)
 * rather than by comparing lower-cased text? The two agree on ASCII only.
 */
export function folderGlobUsesRegex(pattern: string): boolean {
  return /[*?]/.test(pattern.replace(/\/\*\*$/, ""));
}

/** Folder globs that are plain names, or a plain prefix followed by `/**`. */
function folderMatcher(pattern: string): ((lower: string) => boolean) | undefined {
  if (folderGlobUsesRegex(pattern)) return undefined;
  if (pattern.endsWith("/**")) {
    const prefix = pattern.slice(0, -2).toLowerCase();
    return (v) => v.length > prefix.length && v.startsWith(prefix);
  }
  return starMatcher(pattern);
}

export function compileGlob(kind: GlobKind, pattern: string): Glob {
  if (pattern.length === 0) throw new GlobError(`${kind} glob is empty`);
  const matchesAll = pattern === "*" ? kind !== "folder" : kind === "folder" && pattern === "**";
  const compile = kind === "folder" ? compileFolder : kind === "address" ? compileAddress : compileSubject;
  compile(pattern); // errors name the glob as written
  // Values arrive lower-cased (the engine folds each field once), so the expression is built from the lower-cased
  // glob too: lower-casing is not Unicode case folding (`İ` becomes `i̇`, which /İ/iu does not match), and a
  // deny rule must match exactly what it names.
  const re = new RegExp(`^${compile(pattern.toLowerCase())}$`, "iu");
  const fast = kind === "folder" ? folderMatcher(pattern) : starMatcher(pattern);
  const testFolded = matchesAll ? () => true : (fast ?? ((lower: string) => re.test(lower)));
  return {
    source: pattern,
    matchesAll,
    testFolded,
    test: (value: string) => testFolded(value.toLowerCase()),
  };
}
