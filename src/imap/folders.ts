/**
 * Folder names between the agent, the policy and the upstream server.
 *
 * The agent sees upstream's names and hierarchy delimiter; rules see `/`-separated names (docs/config.md "Globs").
 * Names arrive already decoded from modified UTF-7 and with INBOX canonicalized by the wire layer.
 */

import { readableText } from "../mail/index.ts";
import type { Operation, Policy } from "../policy/index.ts";
import { FOLDER_RIGHTS_CHARS, FOLDER_RIGHTS_ENTRIES } from "./limits.ts";
import { isInbox } from "./wire/index.ts";

/** A rule whose folder glob can never match on a server (`deadFolderRule`), and why, for its row and the log. */
export interface DeadFolderRule {
  readonly index: number;
  readonly name: string;
  readonly reason: string;
}

/**
 * The first rule that is not an allow and has a folder glob holding the server's hierarchy delimiter, where that is
 * neither `/` nor absent; null when there is none. Rules separate levels with `/` whatever the delimiter
 * (docs/config.md "Globs"): on a server whose delimiter is `.`, the folder `INBOX.Private` is `INBOX/Private` to the
 * rules, and no name they see holds a `.` between levels, so `folders = ["INBOX.Private"]` never matches. A deny or
 * ask rule that never matches lets through what its owner meant to stop or hold, and which folder it was meant for
 * is not the proxy's to guess: the login is refused instead (docs/imap.md "Decisions"). An allow rule that never
 * matches gives nothing, and is left to the rules after it.
 */
export function deadFolderRule(
  rules: readonly {
    readonly name: string;
    readonly action: string;
    readonly folders?: readonly string[] | undefined;
  }[],
  delimiter: string | null,
): DeadFolderRule | null {
  if (delimiter === null || delimiter === "/") return null;
  for (const [index, rule] of rules.entries()) {
    if (rule.action === "allow") continue;
    const glob = rule.folders?.find((g) => g.includes(delimiter));
    if (glob === undefined) continue;
    const reason =
      `rule ${index + 1} "${rule.name}" names the folder glob ${JSON.stringify(glob)}, which holds the server's ` +
      `hierarchy delimiter ${JSON.stringify(delimiter)}: rules separate levels with "/" (docs/config.md "Globs"), ` +
      `so it never matches; write it with "/"`;
    return { index, name: rule.name, reason };
  }
  return null;
}

export class FolderNames {
  /** Upstream hierarchy delimiter; null for a flat namespace. */
  readonly delimiter: string | null;

  constructor(delimiter: string | null) {
    this.delimiter = delimiter;
  }

  /**
   * The name rules match against: `/` between levels, read as subjects are (docs/config.md "Globs"): without
   * default-ignorable characters and in Unicode NFC, so that a deny rule on `Geschäft` also holds a folder whose name
   * a client wrote with a decomposed `ä` or a zero-width space. Only for names `invalid` accepts: a name with a
   * character that makes text unknown has no reading, and asking for one throws (the command fails) rather than
   * give the rules a name they would judge as something else.
   */
  toPolicy(name: string): string {
    const d = this.delimiter;
    const levels = d === null || d === "/" ? name : name.split(d).join("/");
    const read = readableText(levels);
    if (read === null) throw new Error("a folder name the rules cannot read reached the policy (FolderNames.invalid)");
    return read;
  }

  /**
   * Names the proxy refuses outright (docs/protocol.md §4, §7.13): `..` segments, empty segments, a trailing
   * delimiter, other users' or shared namespaces, a `/` where it is not the delimiter, and names the rules cannot
   * read (docs/config.md "Globs").
   */
  invalid(name: string): boolean {
    return this.invalidWhy(name) !== null;
  }

  /** Why `name` is `invalid`, in words for its audit row; null when it is valid. */
  invalidWhy(name: string): string | null {
    if (name.startsWith("#") || name.startsWith("~")) return "another user's or a shared namespace (# or ~)";
    const d = this.delimiter;
    // Rules read `/` as a level whatever the server's delimiter (docs/config.md "Globs"): where `/` is not the
    // delimiter, a `/` inside a name would make the rules see levels the server does not (`Agent/x` at the top of
    // a `.` server read as below `Agent`), so such a name does not exist for the agent.
    if (d !== "/" && name.includes("/")) return "a / where the server's hierarchy delimiter is another";
    // A control character, a line separator, a bidirectional override or U+FFFD makes the name unknown to the rules,
    // as it makes a subject unknown; a level made only of invisible characters would be empty in their reading.
    const read = readableText(name);
    if (read === null) return 'a character the rules cannot read (docs/config.md "Globs")';
    if (d === null) return null;
    const level = "an empty, . or .. level (a trailing delimiter among them)";
    const parts = name.split(d);
    if (parts.some((p) => p === "" || p === "." || p === "..")) return level;
    const unread =
      read !== name &&
      this.toPolicy(name)
        .split("/")
        .some((p) => p === "" || p === "." || p === "..");
    return unread ? `${level} as the rules read it` : null;
  }

  /**
   * Why `name` may not be given to a new folder (CREATE, a RENAME target), in words for its audit row; null when it
   * may: valid, and written as the rules read it (NFC, without default-ignorable characters). Another spelling of a
   * name would be judged as that name while the server makes a folder apart, which looks like it: `Agent` + U+200B at
   * the top, for an agent confined to `Agent/**`.
   */
  uncreatableWhy(name: string): string | null {
    const invalid = this.invalidWhy(name);
    if (invalid !== null) return invalid;
    return readableText(name) === name ? null : "not written as the rules read it (NFC, no invisible characters)";
  }

  /** Every ancestor of `name`, nearest last (`a/b/c` → `a`, `a/b`). */
  ancestors(name: string): string[] {
    const d = this.delimiter;
    if (d === null) return [];
    const parts = name.split(d);
    const out: string[] = [];
    for (let i = 1; i < parts.length; i++) out.push(parts.slice(0, i).join(d));
    return out;
  }

  /**
   * True when `a` and `b` name the same folder upstream: equal, or equal but for the ASCII case of a leading INBOX
   * level (`INBOX/Sub` and `inbox/Sub`). INBOX is case-insensitive (RFC 3501 §5.1) and the wire layer writes it as
   * `INBOX` only when it is the whole name; below it the agent's spelling goes upstream as written, and Dovecot takes
   * both spellings for the one folder.
   */
  same(a: string, b: string): boolean {
    return a === b || this.#canonical(a) === this.#canonical(b);
  }

  /** True when `name` is `folder` or lies below it (`same`'s spellings of a leading INBOX level). */
  within(name: string, folder: string): boolean {
    const n = this.#canonical(name);
    const f = this.#canonical(folder);
    return n === f || (this.delimiter !== null && n.startsWith(f + this.delimiter));
  }

  /** `name` with a leading INBOX level in any ASCII case (the whole name, or the first level) written `INBOX`. */
  #canonical(name: string): string {
    if (!isInbox(name.slice(0, 5))) return name;
    if (name.length === 5) return "INBOX";
    const d = this.delimiter;
    return d !== null && name.startsWith(d, 5) ? `INBOX${name.slice(5)}` : name;
  }

  /**
   * Matches a LIST reference + pattern locally (RFC 3501 §6.3.8): `*` matches anything, `%` anything but the
   * delimiter. The reference is simply prefixed, which is what Dovecot does for a personal namespace. Matched by
   * `globMatch`, in time bounded by the pattern's length times the name's: a regular expression built from the
   * pattern backtracked exponentially (`*a*a*a*a*a*a*a*a*b` against a name of 60 `a`: 17 s of the proxy's thread).
   */
  listMatcher(reference: string, pattern: string): (name: string) => boolean {
    const tokens = globTokens(reference + pattern);
    const d = this.delimiter;
    // INBOX is case-insensitive (RFC 3501 §5.1), and only INBOX: in INBOX and the names below it, the five characters
    // of `INBOX` match the pattern's in any ASCII case (so `i*`, `%nbox` and `inbox/%` find them, as at Dovecot);
    // the rest of the name keeps its case.
    return (name) => {
      const inbox = name === "INBOX" || (d !== null && name.startsWith("INBOX" + d));
      return globMatch(tokens, [...name], d, inbox ? 5 : 0);
    };
  }
}

/**
 * A LIST pattern's tokens: `*`, `%`, or one character (a code point) that matches itself. A run of wildcards is one
 * token, `*` if it holds one and `%` otherwise (they match the same names), so that the matching's work is bounded by
 * the name's length times the pattern's characters, not its wildcards (`%*%*...` of 64 KiB would otherwise cost
 * each folder 64 K rows).
 */
type GlobToken = string;

function globTokens(pattern: string): GlobToken[] {
  const out: GlobToken[] = [];
  for (const ch of pattern) {
    const last = out[out.length - 1];
    if ((ch === "*" || ch === "%") && (last === "*" || last === "%")) {
      if (ch === "*") out[out.length - 1] = "*";
    } else out.push(ch);
  }
  return out;
}

/**
 * Whether `name` (its code points) matches the tokens, `%` not matching `delimiter` (anything, when there is none),
 * the first `caseless` characters of the name (upper-case ASCII) matching a pattern's character in either case.
 * Row by row over the tokens, each row saying which prefixes of the name the tokens so far match: at most
 * tokens × name steps, and it stops as soon as no prefix matches.
 */
export function globMatch(
  tokens: readonly GlobToken[],
  name: readonly string[],
  delimiter: string | null,
  caseless = 0,
): boolean {
  const n = name.length;
  let row = new Uint8Array(n + 1);
  row[0] = 1;
  for (const t of tokens) {
    const next = new Uint8Array(n + 1);
    let any = 0;
    if (t === "*" || (t === "%" && delimiter === null)) {
      for (let j = 0; j <= n; j++) any |= next[j] = row[j]! | (j > 0 ? next[j - 1]! : 0);
    } else if (t === "%") {
      for (let j = 0; j <= n; j++) any |= next[j] = row[j]! | (j > 0 && name[j - 1] !== delimiter ? next[j - 1]! : 0);
    } else {
      // The name's first `caseless` characters (INBOX's, upper-case) also match the pattern's ASCII lower case.
      const upper = t >= "a" && t <= "z" ? t.toUpperCase() : t;
      for (let j = 1; j <= n; j++)
        any |= next[j] = row[j - 1]! & (name[j - 1] === t || (j <= caseless && name[j - 1] === upper) ? 1 : 0);
    }
    if (any === 0) return false;
    row = next;
  }
  return row[n] === 1;
}

/**
 * What the agent may do in one folder, evaluated once per folder and session while FOLDER_RIGHTS_ENTRIES and
 * FOLDER_RIGHTS_CHARS allow: past either, what was remembered is forgotten (docs/reliability.md "Long runs").
 */
export class FolderRights {
  readonly #policy: Policy;
  readonly #agent: string | null;
  readonly #cache = new Map<string, boolean>();
  #chars = 0;

  constructor(policy: Policy, agent: string | null) {
    this.#policy = policy;
    this.#agent = agent;
  }

  /** Listed at all: some operation on it can be allowed (docs/config.md "Operations"). Hidden means nonexistent. */
  visible(policyName: string): boolean {
    return this.#remembered(`visible\0${policyName}`, () => this.#policy.folderVisible(policyName, this.#agent));
  }

  /** Is every folder below this one visible, whatever its name (the rules alone decide; `Policy.subtreeVisible`)? */
  subtreeVisible(policyName: string): boolean {
    return this.#remembered(`subtree\0${policyName}`, () => this.#policy.subtreeVisible(policyName, this.#agent));
  }

  #remembered(key: string, compute: () => boolean): boolean {
    let v = this.#cache.get(key);
    if (v === undefined) {
      v = compute();
      if (this.#cache.size >= FOLDER_RIGHTS_ENTRIES || this.#chars + key.length > FOLDER_RIGHTS_CHARS) {
        this.#cache.clear();
        this.#chars = 0;
      }
      // A name longer than the whole bound is evaluated each time, never remembered.
      if (key.length <= FOLDER_RIGHTS_CHARS) {
        this.#cache.set(key, v);
        this.#chars += key.length;
      }
    }
    return v;
  }

  /** Folder answers remembered now, and the characters of their keys (tests; docs/reliability.md "Long runs"). */
  get remembered(): { readonly entries: number; readonly chars: number } {
    return { entries: this.#cache.size, chars: this.#chars };
  }

  /** May the agent do `op` in this folder (folder-level rules only; message rules are refused at start). */
  may(op: Operation, policyName: string): boolean {
    return this.#policy.evaluate({ operation: op, folder: policyName, agent: this.#agent }).action === "allow";
  }
}
