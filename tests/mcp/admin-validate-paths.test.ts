/**
 * validate_config with `text` reads nothing of the host that the config file on disk does not name
 * (docs/mcp.md "Admin tools"): a file the text names and the file does not is neither opened nor checked, nor is a
 * variable looked up, and a warning says so. Before, the text was loaded with full access, so an assistant (or
 * whatever wrote to it) could learn, as the admin's user (root in docs/install.md's layout), whether any path on the
 * host exists, whether it is a regular file, its size bound and its mode (`"/x" is readable by group or others
 * (mode 644)`, `cannot read "/y" (ENOENT)`), and which environment variables are set.
 */

import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type AdminClient, adminEnv, startAdminClient } from "./admin-client.ts";

setDefaultTimeout(60_000);

const dir = mkdtempSync(join(tmpdir(), "mg-admin-validate-paths-"));
const file = join(dir, "mailgator.toml");
const elsewhere = join(dir, "elsewhere");
const OWN_SECRET = join(dir, "main.secret");
const PROBES = {
  private: join(elsewhere, "private.txt"),
  open: join(elsewhere, "open.txt"),
  folder: elsewhere,
  missing: join(elsewhere, "missing.txt"),
};
const SET_VAR = "MG_VALIDATE_PATHS_SET";

const config = (account: string, imap = "") => `[imap]
listen_addr = "127.0.0.1:0"
upstream_addr = "127.0.0.1:1"
upstream_tls = "none"
${imap}
[audit]
path = "${join(dir, "audit.db")}"

[accounts.main]
username = "me@example.test"
${account}

[[agents]]
name = "desk"
token_hash = "sha256:${"0".repeat(64)}"
account = "main"

[[rules]]
name = "read"
action = "allow"
operations = "read"
`;
const onDisk = config('password_file = "main.secret"');
let admin: AdminClient;

beforeAll(async () => {
  mkdirSync(elsewhere);
  writeFileSync(OWN_SECRET, "pw-on-disk\n", { mode: 0o600 });
  writeFileSync(PROBES.private, "x\n", { mode: 0o600 });
  writeFileSync(PROBES.open, "-----BEGIN CERTIFICATE-----\n", { mode: 0o644 });
  writeFileSync(file, onDisk, { mode: 0o600 });
  admin = await startAdminClient(file, [], { ...adminEnv(), [SET_VAR]: "a value" });
});

afterAll(async () => {
  await admin?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** validate_config's answer for `text`, with `path` written as PATH so that answers about paths can be compared. */
async function answer(text: string, path: string): Promise<string> {
  const r = await admin.call("validate_config", { text });
  expect(r.isError).toBe(false);
  return r.text
    .split(JSON.stringify(path).slice(1, -1))
    .join("PATH")
    .replace(/"revision": "[0-9a-f]+"/, "");
}

test("a secret, TLS or CA file the file on disk does not name: one answer, whether it exists or not", async () => {
  const shapes: [string, (p: string) => string][] = [
    ["password_file", (p) => config(`password_file = "${p}"`)],
    [
      "client_secret_file",
      (p) => config(`auth = "oauth2"\nprovider = "google"\nclient_id = "i"\nclient_secret_file = "${p}"`),
    ],
    [
      "tls_cert_file",
      (p) =>
        config('password_file = "main.secret"', `listen_tls = "tls"\ntls_cert_file = "${p}"\ntls_key_file = "${p}"\n`),
    ],
    ["upstream_ca_file", (p) => config('password_file = "main.secret"', `upstream_ca_file = "${p}"\n`)],
  ];
  for (const [key, text] of shapes) {
    const answers = new Set<string>();
    for (const p of Object.values(PROBES)) answers.add(await answer(text(p), p));
    expect(`${key}: ${answers.size}`).toBe(`${key}: 1`);
    const [only] = [...answers];
    expect(only).not.toMatch(/mode|ENOENT|EISDIR|not a regular file|does not exist|PEM/);
    expect(only).toContain("not checked");
  }
});

test("a variable the config on disk does not name is not looked up: the same answer, set or not", async () => {
  const set = await answer(config(`password_env = "${SET_VAR}"`), SET_VAR);
  const unset = await answer(config('password_env = "MG_VALIDATE_PATHS_UNSET"'), "MG_VALIDATE_PATHS_UNSET");
  expect(set).toBe(unset);
  expect(set).not.toContain("is not set");
  expect(set).toContain("not checked");
});

test("the files the config on disk names are still checked, as `mailgator check` checks them", async () => {
  const same = await admin.call("validate_config", { text: onDisk.replace('name = "read"', 'name = "reading"') });
  expect(same.json.valid).toBe(true);
  expect(same.text).not.toContain("not checked");
  chmodSync(OWN_SECRET, 0o644);
  try {
    const r = await admin.call("validate_config", { text: onDisk.replace('name = "read"', 'name = "reading"') });
    expect(r.json.valid).toBe(false);
    expect(r.json.problems[0].message).toContain("readable by group or others (mode 644)");
  } finally {
    chmodSync(OWN_SECRET, 0o600);
  }
});
