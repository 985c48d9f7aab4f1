/**
 * A config edit never writes over a hand edit (docs/mcp.md "Config writes"): writeConfig checks that the file still
 * holds the text the edit was made from right before it renames the new file into place, after the new file and
 * FILE.bak have been written and synced. Before, it checked first and then wrote and synced both temporary files,
 * so a hand edit saved in between (an editor's save while the edit was being written) was renamed over: lost from
 * the config, and not in FILE.bak either (that holds the text the edit was made from).
 *
 * The hand edit is saved at a chosen moment of writeConfig's own writing (`WriteSteps.written`: both temporary files
 * written and synced), which no timing of a real editor can do on demand.
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { addRule, backupPath, writeConfig } from "../../src/mcp/admin-edit.ts";

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(join(tmpdir(), "mg-admin-write-race-"));
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

const before = '[audit]\npath = "audit.db"\n\n[[rules]]\nname = "r"\naction = "deny"\n';
const hand = `${before}\n[[rules]]\nname = "by hand"\naction = "deny"\nfolders = ["Private"]\n`;

test("a hand edit saved while the edit's files are being written is kept: the edit is refused", () => {
  const file = join(dir, "mailgator.toml");
  fs.writeFileSync(file, before, { mode: 0o600 });
  fs.writeFileSync(backupPath(file), "older\n", { mode: 0o600 });
  const after = addRule(before, { name: "new", action: "allow", folders: "INBOX" }, 0);
  let saved = false;
  const written = () => {
    fs.writeFileSync(file, hand);
    saved = true;
  };
  expect(() => writeConfig(file, before, after, false, { written })).toThrow(
    "the config file changed since it was read",
  );
  expect(saved).toBe(true); // the hand edit was saved during the write
  expect(fs.readFileSync(file, "utf8")).toBe(hand);
  expect(fs.readFileSync(backupPath(file), "utf8")).toBe("older\n");
  expect(fs.readdirSync(dir).sort()).toEqual(["mailgator.toml", "mailgator.toml.bak"]);
});

test("without a hand edit the edit is written, the previous text in FILE.bak", () => {
  const file = join(dir, "quiet.toml");
  fs.writeFileSync(file, before, { mode: 0o600 });
  const after = addRule(before, { name: "new", action: "allow" }, 0);
  writeConfig(file, before, after);
  expect(fs.readFileSync(file, "utf8")).toBe(after);
  expect(fs.readFileSync(backupPath(file), "utf8")).toBe(before);
});
