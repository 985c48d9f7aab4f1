/**
 * Creating the secrets key (src/state/key.ts, docs/accounts.md "What is stored where") must leave the key file whole
 * or not at all. It was created with O_EXCL under its own name and then written: a write that failed (a full disk;
 * here the file size limit, `ulimit -f 0`) left an empty key file, which every later start refused ("expected 32
 * bytes in base64") although no record was ever sealed with it; and a second process starting at that moment read
 * the empty file and stopped the same way.
 */
import { expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { KEY_BYTES, loadSecretsKey } from "../../src/state/key.ts";
import { tempRoot } from "../fixtures/temp.ts";

const TMP = tempRoot("mg-key-file-");

test("a key whose write fails leaves no key file: the error says so, and the next start creates the key", async () => {
  const dir = mkdtempSync(join(TMP, "k-"));
  const file = join(dir, "mailgator-secrets.key");
  const child = Bun.spawn(
    ["sh", "-c", 'ulimit -f 0 && exec "$0" "$1" "$2"', process.execPath, join(import.meta.dir, "key-child.ts"), file],
    { stdout: "pipe", stderr: "inherit" },
  );
  const out = await new Response(child.stdout).text();
  await child.exited;
  expect(out).toContain("SecretsKeyError: cannot create the secrets file");
  expect(existsSync(file)).toBe(false);
  expect(readdirSync(dir)).toEqual([]);
  expect(loadSecretsKey({ file, env: {}, mayCreate: true }).length).toBe(KEY_BYTES);
});
