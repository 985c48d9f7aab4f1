/**
 * A rule edit through the admin tools that leaves a rule unable to match says so (docs/mcp.md "Config writes"), as
 * `mailgator check` and `serve` do: a deny appended behind an allow without conditions, or an allow without
 * conditions put in front of a deny, is done, and the result's `warnings` name the rule that can never match.
 * `validate_config` and `get_config` warn the same way, being the checks of `mailgator check`.
 */

import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type AdminClient, startAdminClient } from "./admin-client.ts";

setDefaultTimeout(60_000);

const dir = mkdtempSync(join(tmpdir(), "mg-admin-shadowed-"));
const file = join(dir, "mailgator.toml");
let admin: AdminClient;

beforeAll(async () => {
  writeFileSync(
    file,
    `[imap]\nlisten_addr = "127.0.0.1:0"\nupstream_addr = "127.0.0.1:1"\nupstream_tls = "none"\n\n` +
      `[audit]\npath = "${join(dir, "audit.db")}"\n\n` +
      `[[rules]]\nname = "hide junk"\naction = "deny"\nfolders = ["Junk"]\n\n` +
      `[[rules]]\nname = "read everything"\naction = "allow"\noperations = ["read"]\n`,
    { mode: 0o600 },
  );
  admin = await startAdminClient(file, ["--allow-config-writes"]);
});

afterAll(async () => {
  await admin?.close();
  rmSync(dir, { recursive: true, force: true });
});

const shadowWarnings = (warnings: string[]) => warnings.filter((w) => w.includes("can never match"));

test("a deny appended behind an allow without conditions is done with a warning that it can never match", async () => {
  const r = await admin.call("add_rule", {
    rule: { name: "no reading Private", action: "deny", operations: ["read"], folders: ["Private"] },
  });
  expect(r.isError).toBe(false);
  expect(r.json.rules.map((x: { name: string }) => x.name)).toEqual([
    "hide junk",
    "read everything",
    "no reading Private",
  ]);
  expect(shadowWarnings(r.json.warnings)).toEqual([
    'rule 2 "no reading Private" can never match: rule 1 "read everything" decides first',
  ]);
  // The file's own checks say the same.
  for (const tool of ["validate_config", "get_config"]) {
    const v = await admin.call(tool);
    expect(shadowWarnings(v.json.warnings)).toEqual(shadowWarnings(r.json.warnings));
  }
  // Moved in front of the allow, it matches again: no warning.
  const moved = await admin.call("move_rule", { name: "no reading Private", to: 1 });
  expect(moved.isError).toBe(false);
  expect(shadowWarnings(moved.json.warnings)).toEqual([]);
});

test("an allow without conditions moved in front of a deny is done with a warning about the deny", async () => {
  const moved = await admin.call("move_rule", { name: "read everything", to: 0 });
  expect(moved.isError).toBe(false);
  expect(shadowWarnings(moved.json.warnings)).toEqual([
    'rule 2 "no reading Private" can never match: rule 0 "read everything" decides first',
  ]);
  const updated = await admin.call("update_rule", { name: "hide junk", changes: { operations: ["read"] } });
  expect(updated.isError).toBe(false);
  expect(shadowWarnings(updated.json.warnings)).toEqual([
    'rule 1 "hide junk" can never match: rule 0 "read everything" decides first',
    'rule 2 "no reading Private" can never match: rule 0 "read everything" decides first',
  ]);
});
