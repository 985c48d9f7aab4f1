/**
 * A config named through a symbolic link (`/etc/mailgator/mailgator.toml` -> a file kept elsewhere) is edited where
 * the link points (docs/mcp.md "Config writes"): the link stays a link, the file it names gets the new rules, and
 * FILE.bak and the temporary files are beside that file. Before, the edit renamed its new file over the link: the
 * link became a copy, the file it named kept the old rules, and a later change made there (a deny added by hand)
 * was never read again.
 */

import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type AdminClient, startAdminClient } from "./admin-client.ts";

setDefaultTimeout(60_000);

const dir = mkdtempSync(join(tmpdir(), "mg-admin-symlink-"));
const kept = join(dir, "kept");
const real = join(kept, "mailgator.toml");
const link = join(dir, "mailgator.toml");
let admin: AdminClient;

const text =
  `[imap]\nlisten_addr = "127.0.0.1:0"\nupstream_addr = "127.0.0.1:1"\nupstream_tls = "none"\n\n` +
  `[audit]\npath = "${join(dir, "audit.db")}"\n\n` +
  `[[rules]]\nname = "hide junk"\naction = "deny"\nfolders = ["Junk"]\n`;

beforeAll(async () => {
  mkdirSync(kept);
  writeFileSync(real, text, { mode: 0o600 });
  symlinkSync(real, link);
  admin = await startAdminClient(link, ["--allow-config-writes"]);
});

afterAll(async () => {
  await admin?.close();
  rmSync(dir, { recursive: true, force: true });
});

test("an edit writes the file the link names; the link stays; FILE.bak is beside that file", async () => {
  const r = await admin.call("add_rule", { rule: { name: "read inbox", action: "allow", folders: ["INBOX"] } });
  expect(r.isError).toBe(false);
  expect(lstatSync(link).isSymbolicLink()).toBe(true);
  const now = readFileSync(real, "utf8");
  expect(now).toContain('name = "read inbox"');
  expect(readFileSync(link, "utf8")).toBe(now);
  expect(r.json.backup).toBe(`${real}.bak`);
  expect(readFileSync(`${real}.bak`, "utf8")).toBe(text);
  expect(lstatSync(real).mode & 0o777).toBe(0o600);
  // Nothing was left beside the link: no copy of the config, no temporary file.
  expect(
    readdirSync(dir)
      .filter((n) => n.includes("mailgator.toml"))
      .sort(),
  ).toEqual(["mailgator.toml"]);
  expect(readdirSync(kept).sort()).toEqual(["mailgator.toml", "mailgator.toml.bak"]);

  // The next edit reads the file the link names, as serve does.
  const again = await admin.call("remove_rule", { name: "read inbox" });
  expect(again.isError).toBe(false);
  expect(lstatSync(link).isSymbolicLink()).toBe(true);
  expect(readFileSync(real, "utf8")).toBe(text);
});

test("a temporary file a killed edit left beside the file the link names is removed at the next start", async () => {
  // A pid no process has (above the kernel's pid_max), written before the server starts.
  const leftover = join(kept, ".mailgator.toml.4999999.0123456789ab.tmp");
  writeFileSync(leftover, text, { mode: 0o600 });
  utimesSync(leftover, new Date(Date.now() - 60_000), new Date(Date.now() - 60_000));
  const next = await startAdminClient(link, ["--allow-config-writes"]);
  try {
    expect((await next.call("list_rules")).isError).toBe(false);
    expect(existsSync(leftover)).toBe(false);
  } finally {
    await next.close();
  }
});
