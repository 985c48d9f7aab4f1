/**
 * The text edits behind the admin write tools (docs/mcp.md "Config writes"), on config texts alone: the rest of the
 * file stays byte for byte, comments above a rule travel with it, and a layout that cannot be edited precisely is
 * refused rather than guessed at. The tools themselves are tested end to end in admin.test.ts. And the file write
 * (writeConfig): the config keeps its owner, group and mode, and an owner it cannot keep refuses the edit.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  chmodSync,
  chownSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse } from "smol-toml";
import {
  addRule,
  backupPath,
  EditRefused,
  moveRule,
  patchRule,
  rawRules,
  removeRule,
  replaceRule,
  writeConfig,
} from "../../src/mcp/admin-edit.ts";

const BASE = `# top comment
[audit]
path = "a.db" # where

# first: junk
[[rules]]
name = "junk"
action = "deny"
folders = ["Junk"]

[[rules]]
name = "inbox"   # inline comment
action = "allow"
folders = ["INBOX"]

[approvals]
timeout = "1h"
`;

const names = (text: string) => rawRules(text).map((r) => r["name"]);

test("add at the front, at a position, at the end; the rest of the text is unchanged", () => {
  const front = addRule(BASE, { name: "new", action: "allow", folders: "Drafts" }, 0);
  expect(names(front)).toEqual(["new", "junk", "inbox"]);
  expect(front.replace('[[rules]]\nname = "new"\naction = "allow"\nfolders = "Drafts"\n\n', "")).toBe(BASE);
  expect(names(addRule(BASE, { name: "new", action: "deny" }, 1))).toEqual(["junk", "new", "inbox"]);
  const end = addRule(BASE, { name: "new", action: "deny" });
  expect(names(end)).toEqual(["junk", "inbox", "new"]);
  // Appended after the last rule, before the [approvals] table that follows it.
  expect(end.indexOf('name = "new"')).toBeLessThan(end.indexOf("[approvals]"));
  expect(() => addRule(BASE, { name: "new", action: "deny" }, 3)).toThrow(EditRefused);
});

test("a file without rules gets them at its end", () => {
  const text = '[audit]\npath = "a.db"\n';
  expect(addRule(text, { name: "r", action: "deny" })).toBe(`${text}\n[[rules]]\nname = "r"\naction = "deny"\n`);
});

test("move keeps the comment above a rule with it; remove of the moved rule restores the file", () => {
  const moved = moveRule(BASE, 0, 1);
  expect(names(moved)).toEqual(["inbox", "junk"]);
  expect(moved.indexOf("# first: junk")).toBeGreaterThan(moved.indexOf('name = "inbox"'));
  expect(moved.indexOf("# first: junk")).toBeLessThan(moved.indexOf('name = "junk"'));
  expect(moved).toContain("# top comment\n");
  expect(moved).toContain('path = "a.db" # where\n');
  expect(moveRule(moved, 1, 0)).toBe(BASE);
  const added = addRule(BASE, { name: "x", action: "deny" }, 1);
  expect(removeRule(added, 1)).toBe(BASE);
});

test("replace rewrites only the rule's table; patch removes with null and drops a singular alias", () => {
  const r = patchRule({ name: "inbox", action: "allow", folder: "INBOX" }, { folders: ["A", "B"], action: null });
  expect(r).toEqual({ name: "inbox", folders: ["A", "B"] });
  const out = replaceRule(BASE, 1, { name: "inbox", action: "deny", folders: ["INBOX"] });
  expect(out).toBe(
    BASE.replace(
      'name = "inbox"   # inline comment\naction = "allow"\nfolders = ["INBOX"]',
      'name = "inbox"\naction = "deny"\nfolders = [ "INBOX" ]',
    ),
  );
});

test("rules not written as [[rules]] tables are refused, never guessed at", () => {
  const inline = 'rules = [{ name = "a", action = "deny" }]\n';
  expect(() => addRule(inline, { name: "b", action: "deny" })).toThrow(EditRefused);
  expect(() => removeRule(inline, 0)).toThrow(EditRefused);
});

test("a header-like line inside a multi-line string is not a table", () => {
  const text = `[approvals]\nbase_url = """\n[[rules]]\n"""\n\n[[rules]]\nname = "a"\naction = "deny"\n`;
  expect(() => parse(text)).not.toThrow();
  const out = addRule(text, { name: "b", action: "deny" }, 0);
  expect(names(out)).toEqual(["b", "a"]);
  expect((parse(out) as { approvals: { base_url: string } }).approvals.base_url).toBe("[[rules]]\n");
});

test("CRLF files keep CRLF line ends", () => {
  const crlf = BASE.replaceAll("\n", "\r\n");
  const out = removeRule(crlf, 0);
  expect(names(out)).toEqual(["inbox"]);
  expect(out.replaceAll("\r\n", "")).not.toContain("\n");
});

test("triple quotes inside a one-line string or a comment open no multi-line string", () => {
  // A rule named with `'''` (or a glob with `"""`) once made every later [[rules]] header read as string content,
  // and every later edit was refused.
  const text =
    `[[rules]]\nname = "n'''x"\naction = "deny"\nfolders = ['Junk"""'] # a comment with '''\n\n` +
    `[[rules]]\nname = "b"\naction = "deny"\n`;
  expect(names(text)).toEqual(["n'''x", "b"]);
  expect(names(removeRule(text, 1))).toEqual(["n'''x"]);
  expect(names(removeRule(text, 0))).toEqual(["b"]);
  const added = addRule(text, { name: 'c"""', action: "deny" });
  expect(names(added)).toEqual(["n'''x", "b", 'c"""']);
  expect(names(moveRule(added, 2, 0))).toEqual(['c"""', "n'''x", "b"]);
  // Real multi-line strings still hide what looks like a header, whatever quotes they hold.
  const multi =
    `[approvals]\nbase_url = """\n"quoted" \\""" '''\n[[rules]]\n"""\n\n` + `[[rules]]\nname = "a"\naction = "deny"\n`;
  expect(names(addRule(multi, { name: "z", action: "deny" }, 0))).toEqual(["z", "a"]);
});

test("a multi-line string's last line that begins with # is not a comment of the next header", () => {
  const text =
    `[[rules]]\nname = "a"\naction = "deny"\nnote = '''\nfirst line\n# last line'''\n` +
    `[[rules]]\nname = "b"\naction = "deny"\n`;
  expect(names(removeRule(text, 1))).toEqual(["a"]);
  expect(names(removeRule(text, 0))).toEqual(["b"]);
  expect(names(addRule(text, { name: "c", action: "deny" }, 1))).toEqual(["a", "c", "b"]);
  expect((parse(removeRule(text, 1)) as { rules: { note: string }[] }).rules[0]!.note).toBe("first line\n# last line");
});

describe("writeConfig: owner, group and mode", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "mailgator-admin-edit-"));
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  const before = '[audit]\npath = "audit.db"\n\n[[rules]]\nname = "r"\naction = "deny"\n';
  const after = addRule(before, { name: "new", action: "allow", folders: "INBOX" }, 0);
  /** The service's group of docs/install.md (`root:mailgator 0640`); gid 1 stands for `mailgator`. */
  const SERVICE_GID = 1;
  const NOBODY = 65534;

  // Run as root, as the suite is (chown needs it, and so do the project's test servers).
  test("the config and FILE.bak keep the config's owner, group and mode (root:mailgator 0640)", () => {
    const file = join(dir, "kept.toml");
    writeFileSync(file, before);
    chownSync(file, 0, SERVICE_GID);
    chmodSync(file, 0o640);
    const { backup } = writeConfig(file, before, after);
    expect(readFileSync(file, "utf8")).toBe(after);
    expect(readFileSync(backup, "utf8")).toBe(before);
    for (const written of [file, backup]) {
      const st = statSync(written);
      expect([st.uid, st.gid, st.mode & 0o777]).toEqual([0, SERVICE_GID, 0o640]);
    }
  });

  // A user that is not root may only give a file a group it is in: the edit is refused and nothing changes. The
  // writer runs as `nobody` (in no group but its own) on a config `nobody:SERVICE_GID`; root to set that up.
  test("a group the writer cannot give refuses the edit: config, FILE.bak and folder unchanged", () => {
    const folder = join(dir, "not-in-group");
    const file = join(folder, "mailgator.toml");
    chmodSync(dir, 0o711); // mkdtemp's 0700 would keep `nobody` out
    mkdirSync(folder);
    chownSync(folder, NOBODY, NOBODY);
    writeFileSync(file, before);
    writeFileSync(backupPath(file), "older\n");
    for (const f of [file, backupPath(file)]) {
      chownSync(f, NOBODY, SERVICE_GID);
      chmodSync(f, 0o640);
    }
    const script =
      `import { writeConfig } from ${JSON.stringify(join(import.meta.dir, "../../src/mcp/admin-edit.ts"))};\n` +
      `try { writeConfig(${JSON.stringify(file)}, ${JSON.stringify(before)}, ${JSON.stringify(after)}); ` +
      `console.log("written"); } catch (e) { console.log("refused:", e.code, e.syscall); }\n`;
    const run = Bun.spawnSync([process.execPath, "-e", script], { uid: NOBODY, gid: NOBODY, cwd: folder });
    expect(run.stdout.toString().trim()).toBe("refused: EPERM fchown");
    expect(readFileSync(file, "utf8")).toBe(before);
    expect(readFileSync(backupPath(file), "utf8")).toBe("older\n");
    expect(readdirSync(folder).sort()).toEqual(["mailgator.toml", "mailgator.toml.bak"]);
    expect(statSync(file).gid).toBe(SERVICE_GID);
  });
});
