/**
 * The audit row of a rule edit says what changed (docs/mcp.md "Config writes"): the rule as added, as removed, as
 * it was and became (as JSON: a row's detail holds scalars), and where, in `detail`. Before, the row said only
 * `updated rule "x"` with the two revisions; the previous file is kept for one edit only (FILE.bak), so after two
 * edits no one could tell from the log what the first had done to the rules.
 */

import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type AdminClient, startAdminClient } from "./admin-client.ts";

setDefaultTimeout(60_000);

const dir = mkdtempSync(join(tmpdir(), "mg-admin-write-audit-"));
const file = join(dir, "mailgator.toml");
const text =
  `[imap]\nlisten_addr = "127.0.0.1:0"\nupstream_addr = "127.0.0.1:1"\nupstream_tls = "none"\n\n` +
  `[audit]\npath = "${join(dir, "audit.db")}"\n\n[[rules]]\nname = "hide private"\naction = "deny"\n` +
  `folders = ["Private"]\n`;
let admin: AdminClient;

beforeAll(async () => {
  writeFileSync(file, text, { mode: 0o600 });
  admin = await startAdminClient(file, ["--allow-config-writes"]);
});

afterAll(async () => {
  await admin?.close();
  rmSync(dir, { recursive: true, force: true });
});

test("each CONFIG WRITE row's detail holds the rule before and after the edit, and where", async () => {
  const calls: [string, Record<string, unknown>][] = [
    ["add_rule", { rule: { name: "read all", action: "allow", operations: "read" } }],
    ["update_rule", { name: "hide private", changes: { folders: null, operations: "read", from: ["*@spam.test"] } }],
    ["move_rule", { name: "read all", to: 0 }],
    ["remove_rule", { index: 1 }],
  ];
  for (const [tool, args] of calls) {
    const r = await admin.call(tool, args);
    expect(`${tool}: ${r.isError ? r.text : "done"}`).toBe(`${tool}: done`);
  }
  const rows = (await admin.call("query_audit", { command: "CONFIG WRITE" })).json.rows;
  const details = rows.map((r: { detail: Record<string, unknown> }) => {
    const { previousRevision: _, ...rest } = r.detail;
    return rest;
  });
  expect(details).toEqual([
    {
      tool: "add_rule",
      index: 1,
      before: null,
      after: JSON.stringify({ name: "read all", action: "allow", operations: "read" }),
    },
    {
      tool: "update_rule",
      index: 0,
      before: JSON.stringify({ name: "hide private", action: "deny", folders: ["Private"] }),
      after: JSON.stringify({ name: "hide private", action: "deny", operations: "read", from: ["*@spam.test"] }),
    },
    { tool: "move_rule", index: 1, to: 0, rule: "read all" },
    {
      tool: "remove_rule",
      index: 1,
      before: JSON.stringify({ name: "hide private", action: "deny", operations: "read", from: ["*@spam.test"] }),
      after: null,
    },
  ]);
});

test("a removed rule's key that rules do not take is not written to the log", async () => {
  // A config that does not load because of a rule with a misspelled key: removing that rule makes it load.
  writeFileSync(file, `${text}\n[[rules]]\nname = "odd"\naction = "deny"\npasword = "Odd-Value-4b1e"\n`);
  const r = await admin.call("remove_rule", { name: "odd" });
  expect(r.isError).toBe(false);
  const rows = (await admin.call("query_audit", { command: "CONFIG WRITE" })).json.rows;
  expect(rows.at(-1).detail.before).toBe(JSON.stringify({ name: "odd", action: "deny", pasword: "[redacted]" }));
});
