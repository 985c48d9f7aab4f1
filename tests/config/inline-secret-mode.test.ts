/**
 * An account secret written in a config file its group or others may read (docs/config.md "Vault mode"): a warning
 * that names the account and the fix, as `check` and serve print them; none once the file is private, or when the
 * secret comes from a file or a variable. Before, such a config drew no word, though a `password_file` with that
 * mode is refused.
 */

import { afterAll, expect, test } from "bun:test";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../../src/config/index.ts";

const dir = mkdtempSync(join(tmpdir(), "mg-inline-secret-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const config = (account: string) =>
  `[imap]\nlisten_addr = "127.0.0.1:0"\nupstream_addr = "127.0.0.1:993"\n\n[audit]\npath = "${join(dir, "a.db")}"\n\n` +
  `[accounts.main]\nusername = "me@example.org"\n${account}\n\n[[agents]]\nname = "bot"\n` +
  `token_hash = "sha256:${"a".repeat(64)}"\naccount = "main"\n\n[[rules]]\nname = "all"\naction = "allow"\n`;

const exposed = (warnings: readonly string[]) => warnings.filter((w) => w.includes("is written in the config"));

test("an inline password in a file others may read is warned of; 600, or a password_file, is not", () => {
  const file = join(dir, "inline.toml");
  writeFileSync(file, config('password = "hunter2"'));
  chmodSync(file, 0o644);
  expect(exposed(loadConfig(file).warnings)).toEqual([
    "[accounts.main] password is written in the config, which users other than its owner may read (mode 644): " +
      "chmod 600 it, or give the secret by password_file or password_env",
  ]);
  chmodSync(file, 0o640);
  expect(exposed(loadConfig(file).warnings)).toHaveLength(1);
  chmodSync(file, 0o600);
  expect(exposed(loadConfig(file).warnings)).toEqual([]);
  // The secret never appears in the warning.
  chmodSync(file, 0o604);
  expect(loadConfig(file).warnings.join("\n")).not.toContain("hunter2");

  const secret = join(dir, "password");
  writeFileSync(secret, "hunter2\n", { mode: 0o600 });
  const fromFile = join(dir, "from-file.toml");
  writeFileSync(fromFile, config(`password_file = "${secret}"`));
  chmodSync(fromFile, 0o644);
  expect(exposed(loadConfig(fromFile).warnings)).toEqual([]);
});
