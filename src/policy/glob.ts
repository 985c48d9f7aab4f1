/**
 * Globs of DESIGN.md §3, compiled once per config load.
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
}

/** A glob that cannot be compiled; `message` says what is wrong with it. */
export class GlobError extends Error {
  override name = "GlobError";
}

const REGEX_SPECIAL = /[.+^${}()|[\]\\]/g;

function escapeLiteral(text: string): string {
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
    throw new GlobError(`address glob "${pattern}": expected local@domain (wildcards allowed, e.g. "*@corp.test") or "*"`);
  }
  if (/[\s<>()[\]{}\\,;:"]/.test(pattern)) {
    throw new GlobError(`address glob "${pattern}": must be a bare address pattern, without display name, brackets or quotes`);
  }
  if (pattern.includes("**")) throw new GlobError(`address glob "${pattern}": "**" is not meaningful here; use "*"`);
  return wildcards(pattern, "[^]", "[^]");
}

function compileSubject(pattern: string): string {
  return wildcards(pattern, "[^]", "[^]");
}

export function compileGlob(kind: GlobKind, pattern: string): Glob {
  if (pattern.length === 0) throw new GlobError(`${kind} glob is empty`);
  const matchesAll = pattern === "*" ? kind !== "folder" : kind === "folder" && pattern === "**";
  let body: string;
  if (kind === "folder") body = compileFolder(pattern);
  else if (kind === "address") body = compileAddress(pattern);
  else body = compileSubject(pattern);
  const re = new RegExp(`^${body}$`, "iu");
  return {
    source: pattern,
    matchesAll,
    test: matchesAll ? () => true : (value: string) => re.test(value),
  };
}
