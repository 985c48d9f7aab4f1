/**
 * Rule edits for the admin MCP tools (docs/mcp.md "Admin tools", "Config writes"): the config text is edited in
 * place, one `[[rules]]` table at a time, so that the rest of the file (comments, order, layout) stays byte for byte;
 * the edited table is written anew by smol-toml (comments inside it are lost, the comment lines directly above its
 * header are kept). Every edit is checked by parsing the result: the rules must be exactly the ones asked for and
 * everything else exactly as before, otherwise the edit is refused (a file whose rules are not `[[rules]]` tables,
 * say). Writes are atomic (a temporary file in the same folder, fsync, rename) and keep the previous file as
 * `FILE.bak`.
 */

import { randomBytes } from "node:crypto";
import {
  closeSync,
  fchmodSync,
  fchownSync,
  fsyncSync,
  openSync,
  realpathSync,
  renameSync,
  statSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";
import { parse as parseToml, stringify } from "smol-toml";
import { ConfigError, readConfigText } from "../config/index.ts";
import { removeLeftovers } from "../runtime/leftovers.ts";

/** A rule as written in the file (TOML key names). */
export type RawRule = Record<string, unknown>;

/** The order keys are written in; others (none the schema allows) after them. */
const KEY_ORDER = [
  "name",
  "action",
  "operations",
  "operation",
  "folders",
  "folder",
  "from",
  "to",
  "cc",
  "bcc",
  "subject",
  "has_attachment",
  "agents",
  "ask_groups",
];

/** The singular spellings the config also accepts (docs/config.md): setting the plural drops them. */
const ALIASES: Readonly<Record<string, string>> = { folders: "folder", operations: "operation" };

export class EditRefused extends Error {
  override name = "EditRefused";
}

/** The text of one `[[rules]]` table. */
export function ruleText(rule: RawRule): string {
  const ordered: RawRule = {};
  for (const k of KEY_ORDER) if (rule[k] !== undefined) ordered[k] = rule[k];
  for (const [k, v] of Object.entries(rule)) if (!(k in ordered) && v !== undefined) ordered[k] = v;
  return stringify({ rules: [ordered] }).trimEnd();
}

/** `rule` with `changes` applied: a key set to null is removed; a plural key replaces its singular alias. */
export function patchRule(rule: RawRule, changes: Readonly<Record<string, unknown>>): RawRule {
  const out: RawRule = { ...rule };
  for (const [k, v] of Object.entries(changes)) {
    if (v === undefined) continue;
    const alias = ALIASES[k];
    if (alias !== undefined) delete out[alias];
    if (v === null) delete out[k];
    else out[k] = v;
  }
  return out;
}

interface Block {
  /** First line: the comment lines directly above the header, else the header. */
  readonly start: number;
  readonly header: number;
  /** One past the last line, trailing blank lines left out. */
  readonly end: number;
}

const HEADER = /^\s*\[/;
const RULES_HEADER = /^\s*\[\[\s*rules\s*\]\]\s*(#.*)?$/;
const COMMENT = /^\s*#/;

/** The `[[rules]]` tables of a config text, in order. Lines inside multi-line strings are not headers. */
function ruleBlocks(lines: readonly string[]): Block[] {
  const headers: { line: number; rules: boolean }[] = [];
  /** Whether each line begins inside a multi-line string (then it is content, never a header or a comment). */
  const inside: boolean[] = [];
  let inString: MultiLine = null;
  lines.forEach((line, i) => {
    inside.push(inString !== null);
    if (inString === null && HEADER.test(line)) headers.push({ line: i, rules: RULES_HEADER.test(line) });
    inString = multiLineAfter(line, inString);
  });
  // The comments just above a header travel with it: lines that begin outside a string and hold only a comment.
  const lead = (h: number): number => {
    let s = h;
    while (s > 0 && !inside[s - 1] && COMMENT.test(lines[s - 1]!)) s--;
    return s;
  };
  const blocks: Block[] = [];
  headers.forEach((h, i) => {
    if (!h.rules) return;
    const next = headers[i + 1];
    let end = next === undefined ? lines.length : lead(next.line);
    while (end > h.line + 1 && lines[end - 1]!.trim() === "") end--;
    blocks.push({ start: lead(h.line), header: h.line, end });
  });
  return blocks;
}

/** The multi-line string (TOML 1.0 "String") a line leaves open: basic `"""`, literal `'''`, or none. */
type MultiLine = '"""' | "'''" | null;

/**
 * Which multi-line string is open after `line`, given the one open before it. The line is read as TOML reads it:
 * single-line strings (basic with their escapes, literal) and comments are skipped, so the `'''` of `"n'''x"` opens
 * nothing; in a multi-line basic string a backslash escapes the next character; a closing delimiter may be
 * followed by up to two quotes that end the content (`""""` closes after one `"` of content).
 */
function multiLineAfter(line: string, open: MultiLine): MultiLine {
  let i = 0;
  let state = open;
  while (i < line.length) {
    if (state !== null) {
      if (state === '"""' && line[i] === "\\") {
        i += 2;
      } else if (line.startsWith(state, i)) {
        i += 3;
        for (let extra = 0; extra < 2 && line[i] === state[0]; extra++) i++;
        state = null;
      } else {
        i++;
      }
      continue;
    }
    const c = line[i]!;
    if (c === "#") break;
    if (line.startsWith('"""', i) || line.startsWith("'''", i)) {
      state = line.slice(i, i + 3) as MultiLine;
      i += 3;
    } else if (c === '"') {
      for (i++; i < line.length && line[i] !== '"'; i++) if (line[i] === "\\") i++;
      i++;
    } else if (c === "'") {
      const close = line.indexOf("'", i + 1);
      i = close === -1 ? line.length : close + 1;
    } else {
      i++;
    }
  }
  return state;
}

function parse(text: string): Record<string, unknown> {
  return parseToml(text) as Record<string, unknown>;
}

/** The rules of a config text as written (TOML key names). */
export function rawRules(text: string): RawRule[] {
  const rules = parse(text)["rules"];
  return Array.isArray(rules) ? (rules as RawRule[]) : [];
}

function lineBreak(text: string): string {
  return text.includes("\r\n") ? "\r\n" : "\n";
}

/**
 * Rewrites the `[[rules]]` tables of `text` so that the rules become `wanted` (the old ones with one edit applied),
 * by `edit` on the text's lines. Refused when the result does not parse to exactly `wanted` with everything else
 * unchanged.
 */
function rewrite(
  text: string,
  wanted: readonly RawRule[],
  edit: (lines: string[], blocks: readonly Block[]) => void,
): string {
  const before = parse(text);
  const rules = Array.isArray(before["rules"]) ? (before["rules"] as RawRule[]) : [];
  const nl = lineBreak(text);
  const lines = text.split(/\r?\n/);
  const blocks = ruleBlocks(lines);
  if (blocks.length !== rules.length || (before["rules"] !== undefined && !Array.isArray(before["rules"])))
    throw new EditRefused(
      `the file holds ${rules.length} rule(s) but ${blocks.length} [[rules]] table(s): only rules written as ` +
        "[[rules]] tables can be edited here; edit the file by hand",
    );
  edit(lines, blocks);
  const out = lines.join(nl);
  let after: Record<string, unknown>;
  try {
    after = parse(out);
  } catch (e) {
    throw new EditRefused(`the edited text does not parse (${(e as Error).message.split("\n")[0]}); nothing written`);
  }
  const { rules: _old, ...restBefore } = before;
  const { rules: newRules, ...restAfter } = after;
  if (!Bun.deepEquals(restAfter, restBefore, true) || !Bun.deepEquals(newRules ?? [], wanted, true))
    throw new EditRefused("the file's layout cannot be edited precisely here (the result differs); edit it by hand");
  return out;
}

function insertLines(lines: string[], blocks: readonly Block[], index: number, rule: RawRule): void {
  const added = ruleText(rule).split("\n");
  if (index < blocks.length) {
    lines.splice(blocks[index]!.start, 0, ...added, "");
    return;
  }
  if (blocks.length > 0) {
    lines.splice(blocks.at(-1)!.end, 0, "", ...added);
    return;
  }
  // No rules yet: at the end of the file, after one blank line.
  while (lines.length > 0 && lines.at(-1)!.trim() === "") lines.pop();
  if (lines.length > 0) lines.push("");
  lines.push(...added, "");
}

function removeLines(lines: string[], block: Block): string[] {
  let { start, end } = block;
  // The blank line that separated it from what precedes (else from what follows) goes with it.
  if (start > 0 && lines[start - 1]!.trim() === "") start--;
  else if (end < lines.length - 1 && lines[end]!.trim() === "") end++;
  const taken = lines.splice(start, end - start);
  while (taken.length > 0 && taken[0]!.trim() === "") taken.shift();
  while (taken.length > 0 && taken.at(-1)!.trim() === "") taken.pop();
  return taken;
}

export function addRule(text: string, rule: RawRule, index?: number): string {
  const rules = rawRules(text);
  const at = index ?? rules.length;
  if (!Number.isInteger(at) || at < 0 || at > rules.length)
    throw new EditRefused(`index ${at} is out of range: 0 to ${rules.length} (the number of rules appends)`);
  const wanted = [...rules.slice(0, at), rule, ...rules.slice(at)];
  return rewrite(text, wanted, (lines, blocks) => insertLines(lines, blocks, at, rule));
}

export function replaceRule(text: string, index: number, rule: RawRule): string {
  const rules = rawRules(text);
  const wanted = rules.map((r, i) => (i === index ? rule : r));
  return rewrite(text, wanted, (lines, blocks) => {
    const b = blocks[index]!;
    lines.splice(b.header, b.end - b.header, ...ruleText(rule).split("\n"));
  });
}

export function removeRule(text: string, index: number): string {
  const rules = rawRules(text);
  const wanted = rules.filter((_, i) => i !== index);
  return rewrite(text, wanted, (lines, blocks) => {
    removeLines(lines, blocks[index]!);
  });
}

/** Moves rule `from` so that it ends up at index `to` (both counted from 0 in the file as it is). */
export function moveRule(text: string, from: number, to: number): string {
  const rules = rawRules(text);
  if (!Number.isInteger(to) || to < 0 || to >= rules.length)
    throw new EditRefused(`to: ${to} is out of range: 0 to ${rules.length - 1}`);
  const wanted = [...rules];
  const [moved] = wanted.splice(from, 1);
  wanted.splice(to, 0, moved!);
  return rewrite(text, wanted, (lines, blocks) => {
    const taken = removeLines(lines, blocks[from]!);
    const rest = ruleBlocks(lines);
    if (to < rest.length) lines.splice(rest[to]!.start, 0, ...taken, "");
    else if (rest.length > 0) lines.splice(rest.at(-1)!.end, 0, "", ...taken);
    else {
      while (lines.length > 0 && lines.at(-1)!.trim() === "") lines.pop();
      lines.push("", ...taken, "");
    }
  });
}

/** Where `writeConfig` keeps the file as it was before the last write. */
export function backupPath(file: string): string {
  return `${file}.bak`;
}

/** The random part of a temporary file's name (`writeTemp`): this many bytes, in hex. */
const TEMP_RANDOM_BYTES = 6;

/**
 * Removes what a process stopped inside `writeConfig` (killed, or the machine lost power, before the rename) left
 * beside the config file `file`: `.<name>.<pid>.<hex>.tmp` and `.<name>.bak.<pid>.<hex>.tmp`, copies of the config
 * (which may hold secrets), under the rules of src/runtime/leftovers.ts: only a regular file of exactly such a name,
 * written before this process started, by a process that is gone. Never throws (docs/operations.md "Leftovers").
 */
export function removeConfigWriteLeftovers(file: string): void {
  const tail = new RegExp(`\\.[0-9a-f]{${TEMP_RANDOM_BYTES * 2}}\\.tmp`);
  // Beside the file a symbolic link names, too: writeConfig writes there.
  let real = file;
  try {
    real = realpathSync(file);
  } catch {}
  for (const f of real === file ? [file] : [file, real])
    removeLeftovers(dirname(f), [
      { prefix: `.${basename(f)}.`, tail },
      { prefix: `.${basename(backupPath(f))}.`, tail },
    ]);
}

/** The owner, group and mode a written file gets: the config's. */
interface Ownership {
  readonly uid: number;
  readonly gid: number;
  readonly mode: number;
}

/**
 * Writes `data` to a new file beside `target` with `owner`'s owner, group and mode, fsynced; returns its path. A new
 * file belongs to the user that writes it: without the chown a config that is `root:mailgator 0640` (docs/install.md)
 * would become `root:root` and unreadable to `serve`. When the owner or group cannot be given (a user that is not
 * root and not in the config's group), the file is removed and the error thrown.
 */
function writeTemp(target: string, data: string, owner: Ownership): string {
  const temp = join(
    dirname(target),
    `.${basename(target)}.${process.pid}.${randomBytes(TEMP_RANDOM_BYTES).toString("hex")}.tmp`,
  );
  const fd = openSync(temp, "wx", owner.mode);
  try {
    try {
      fchownSync(fd, owner.uid, owner.gid);
      fchmodSync(fd, owner.mode); // the umask may have cleared bits of the mode asked for
      const bytes = Buffer.from(data, "utf8");
      for (let off = 0; off < bytes.length; ) off += writeSync(fd, bytes, off);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch (e) {
    removeQuietly(temp);
    throw e;
  }
  return temp;
}

function errorCode(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? String(e);
}

function removeQuietly(file: string): void {
  try {
    unlinkSync(file);
  } catch {}
}

function fsyncFolder(dir: string): void {
  const dfd = openSync(dir, "r");
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}

/** Points in writeConfig's work a caller can run code at (tests: a hand edit saved at a chosen moment). */
export interface WriteSteps {
  /** After both temporary files (the new config, FILE.bak) are written and synced, before the last comparison. */
  readonly written?: () => void;
}

/**
 * Replaces the config file's text `before` by `after`: refused when the file no longer holds `before` (changed
 * since it was read), checked first and again right before the renames; the old text goes to FILE.bak first.
 * Both files get the config's owner, group and mode (0600 when it had group or other bits, which the admin tools
 * refuse anyway). Both are written in full before either is
 * renamed into place, so an owner or group that cannot be given changes nothing, FILE.bak included. With
 * `ownedOnly` (a file the search path found), the file read again must pass the owner check (src/config/read.ts):
 * one swapped for another user's copy of the same text since it was read would otherwise give both files its owner.
 * A `file` that is a symbolic link is written where it points: the link stays, and FILE.bak and the temporary files
 * are beside the file it names (docs/mcp.md "Config writes").
 */
export function writeConfig(
  file: string,
  before: string,
  after: string,
  ownedOnly = false,
  steps: WriteSteps = {},
): { backup: string } {
  // The file itself, where `file` is a symbolic link to it: renamed over, the link would become a copy, and the file
  // it names (the one kept, say, in a repository) would keep the old text, and later changes to it would be unread.
  let target: string;
  try {
    target = realpathSync(file);
  } catch (e) {
    throw new EditRefused(`the config file cannot be read again (${errorCode(e)}); nothing written`);
  }
  // Both names must still hold `before`: the link (with the owner check of a file the search path found), and the
  // file it names, which is replaced.
  const unchanged = (): void => {
    for (const name of target === file ? [file] : [file, target]) {
      let now: string;
      try {
        now = readConfigText(name, ownedOnly);
      } catch (e) {
        const why = e instanceof ConfigError ? `: ${e.problems[0]?.message ?? e.message}` : "";
        throw new EditRefused(`the config file cannot be read again${why}; nothing written`);
      }
      if (now !== before)
        throw new EditRefused("the config file changed since it was read; nothing written, try again");
    }
  };
  unchanged();
  const st = statSync(target);
  const mode = st.mode & 0o777;
  const owner = { uid: st.uid, gid: st.gid, mode: mode & 0o022 ? 0o600 : mode };
  const backup = backupPath(target);
  const oldTemp = writeTemp(backup, before, owner);
  let newTemp: string;
  try {
    newTemp = writeTemp(target, after, owner);
  } catch (e) {
    removeQuietly(oldTemp);
    throw e;
  }
  steps.written?.();
  // Again, as the last thing before the renames: writing and syncing both files takes time, and a hand edit saved
  // meanwhile (an editor's save) would be renamed over, kept neither in the config nor in FILE.bak.
  try {
    unchanged();
  } catch (e) {
    removeQuietly(oldTemp);
    removeQuietly(newTemp);
    throw e;
  }
  try {
    renameSync(oldTemp, backup);
  } catch (e) {
    removeQuietly(oldTemp);
    removeQuietly(newTemp);
    throw e;
  }
  try {
    renameSync(newTemp, target);
  } catch (e) {
    removeQuietly(newTemp);
    throw e;
  }
  fsyncFolder(dirname(target));
  return { backup };
}
