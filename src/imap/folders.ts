/**
 * Folder names between the agent, the policy and the upstream server.
 *
 * The agent sees upstream's names and hierarchy delimiter; rules see `/`-separated names (docs/config.md "Globs").
 * Names arrive already decoded from modified UTF-7 and with INBOX canonicalized by the wire layer.
 */

import type { Operation, Policy } from "../policy/index.ts";

export class FolderNames {
  /** Upstream hierarchy delimiter; null for a flat namespace. */
  readonly delimiter: string | null;

  constructor(delimiter: string | null) {
    this.delimiter = delimiter;
  }

  /** The name rules match against. */
  toPolicy(name: string): string {
    const d = this.delimiter;
    if (d === null || d === "/") return name;
    return name.split(d).join("/");
  }

  /**
   * Names the proxy refuses outright (docs/protocol.md §4, §7.13): `..` segments, empty segments, a trailing
   * delimiter, and other users' or shared namespaces.
   */
  invalid(name: string): boolean {
    if (name.startsWith("#") || name.startsWith("~")) return true;
    const d = this.delimiter;
    if (d === null) return false;
    const parts = name.split(d);
    return parts.some((p) => p === "" || p === "." || p === "..");
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

  /** True when `child` lies below `parent`. */
  isBelow(child: string, parent: string): boolean {
    const d = this.delimiter;
    if (d === null) return false;
    if (parent === "INBOX") return child.toUpperCase().startsWith("INBOX" + d);
    return child.startsWith(parent + d);
  }

  /**
   * Matches a LIST reference + pattern locally (RFC 3501 §6.3.8): `*` matches anything, `%` anything but the
   * delimiter. The reference is simply prefixed, which is what Dovecot does for a personal namespace.
   */
  listMatcher(reference: string, pattern: string): (name: string) => boolean {
    const full = reference + pattern;
    const d = this.delimiter;
    let re = "^";
    for (const ch of full) {
      if (ch === "*") re += "[\\s\\S]*";
      else if (ch === "%") re += d === null ? "[\\s\\S]*" : `[^${escapeClass(d)}]*`;
      else re += escapeChar(ch);
    }
    re += "$";
    const exact = new RegExp(re, "u");
    // INBOX is case-insensitive (RFC 3501 §5.1): match it (and names below it) with INBOX written as the pattern
    // wrote it.
    const inboxRe = /^inbox/i.test(full) ? new RegExp(re, "iu") : null;
    return (name) => {
      if (exact.test(name)) return true;
      if (inboxRe !== null && (name === "INBOX" || (d !== null && name.startsWith("INBOX" + d))))
        return inboxRe.test(name);
      return false;
    };
  }
}

/**
 * One character of a name as a literal in a Unicode-mode regular expression, outside a character class: the
 * syntax characters are escaped, and nothing else is, since the `u` flag refuses any other escape (`\-` included).
 */
function escapeChar(ch: string): string {
  return ch.replace(/[\\^$.*+?()[\]{}|]/g, "\\$&");
}

/** One character as a literal inside a character class of a Unicode-mode regular expression. */
function escapeClass(ch: string): string {
  return ch.replace(/[\\\]^-]/g, "\\$&");
}

/** What the agent may do in one folder, evaluated once per folder and session. */
export class FolderRights {
  readonly #policy: Policy;
  readonly #agent: string | null;
  readonly #cache = new Map<string, boolean>();

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
      this.#cache.set(key, v);
    }
    return v;
  }

  /** May the agent do `op` in this folder (folder-level rules only; message rules are refused at start). */
  may(op: Operation, policyName: string): boolean {
    return this.#policy.evaluate({ operation: op, folder: policyName, agent: this.#agent }).action === "allow";
  }
}
