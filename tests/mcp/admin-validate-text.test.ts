/**
 * `validate_config` with `text` validates it as if it were the file (docs/mcp.md "Admin tools"): a text past
 * MAX_CONFIG_BYTES, which every command and serve refuse to read as a file, is not valid. Before, it was answered
 * `valid: true`, and the same text written as the config would not load.
 */

import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MAX_CONFIG_BYTES } from "../../src/config/index.ts";
import { runCli } from "../e2e/serve-child.ts";
import { type AdminClient, startAdminClient } from "./admin-client.ts";

setDefaultTimeout(60_000);

const dir = mkdtempSync(join(tmpdir(), "mg-admin-validate-"));
const file = join(dir, "mailgator.toml");
const text =
  `[imap]\nlisten_addr = "127.0.0.1:0"\nupstream_addr = "127.0.0.1:1"\nupstream_tls = "none"\n\n` +
  `[audit]\npath = "${join(dir, "audit.db")}"\n\n[[rules]]\nname = "hide junk"\naction = "deny"\nfolders = ["Junk"]\n`;
let admin: AdminClient;

beforeAll(async () => {
  writeFileSync(file, text, { mode: 0o600 });
  admin = await startAdminClient(file);
});

afterAll(async () => {
  await admin?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** `text` padded with a comment to exactly `bytes` bytes. */
const padded = (bytes: number) => `${text}# ${"x".repeat(bytes - Buffer.byteLength(text) - 3)}\n`;

test("a text of MAX_CONFIG_BYTES is valid; one byte more is not, as `check` says of such a file", async () => {
  const most = padded(MAX_CONFIG_BYTES);
  expect(Buffer.byteLength(most)).toBe(MAX_CONFIG_BYTES);
  expect((await admin.call("validate_config", { text: most })).json.valid).toBe(true);

  const over = padded(MAX_CONFIG_BYTES + 1);
  const r = await admin.call("validate_config", { text: over });
  expect(r.isError).toBe(false);
  expect(r.json.valid).toBe(false);
  expect(r.json.problems[0].message).toContain(`larger than ${MAX_CONFIG_BYTES} bytes`);

  // The same text as a file: check refuses it.
  const big = join(dir, "big.toml");
  writeFileSync(big, over, { mode: 0o600 });
  const cli = runCli(["check", "-c", big], process.env);
  expect(cli.exitCode).not.toBe(0);
  expect(cli.stderr).toContain(`larger than ${MAX_CONFIG_BYTES} bytes`);
});
