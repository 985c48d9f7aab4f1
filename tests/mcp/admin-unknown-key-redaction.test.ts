/**
 * get_config on a config that does not validate (docs/mcp.md "Secrets"): a key the config does not know is shown
 * as `[redacted]`, whatever its name, since whether its value is a secret cannot be told. Before, redaction knew
 * only the right key names, so a misspelled `pasword = "..."` or `client_secert = "..."` (the very mistake that makes
 * the file invalid) was returned in the clear to the MCP client.
 */

import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse as parseToml } from "smol-toml";
import { REDACTED, redact, secretStrings } from "../../src/mcp/admin-redact.ts";
import { type AdminClient, startAdminClient } from "./admin-client.ts";

setDefaultTimeout(60_000);

const dir = mkdtempSync(join(tmpdir(), "mg-admin-unknown-key-"));
const file = join(dir, "mailgator.toml");
const MARKERS = ["Misspelt-Pw-71d2", "Misspelt-Cs-93ab", "Stray-Table-5e0c", "Stray-Array-c41f", "Wrong-Shape-8d3a"];
const text = `[imap]
listen_addr = "127.0.0.1:0"
upstream_addr = "127.0.0.1:1"
upstream_tls = "none"

[audit]
path = "${join(dir, "audit.db")}"

[accounts.main]
username = "me@example.test"
pasword = "${MARKERS[0]}"

[accounts.cloud]
username = "cloud@example.test"
auth = "oauth2"
provider = "google"
client_id = "id-1"
client_secert = "${MARKERS[1]}"

[smtp_login]
pass = "${MARKERS[2]}"

[[rules]]
name = "hide junk"
action = "deny"
folders = ["Junk"]
extra = ["${MARKERS[3]}"]

[admin]
listen_addr = { pw = "${MARKERS[4]}" }
`;
let admin: AdminClient;

beforeAll(async () => {
  writeFileSync(file, text, { mode: 0o600 });
  admin = await startAdminClient(file);
});

afterAll(async () => {
  await admin?.close();
  rmSync(dir, { recursive: true, force: true });
});

test("get_config shows no value of a key the config does not know, valid or not", async () => {
  const r = await admin.call("get_config");
  expect(r.isError).toBe(false);
  expect(r.json.valid).toBe(false);
  for (const m of MARKERS) expect(r.text).not.toContain(m);
  const c = r.json.config;
  expect(c.accounts.main).toEqual({ username: "me@example.test", pasword: REDACTED });
  expect(c.accounts.cloud.client_secert).toBe(REDACTED);
  expect(c.accounts.cloud.client_id).toBe("id-1");
  expect(c.smtp_login).toBe(REDACTED);
  expect(c.rules[0]).toEqual({ name: "hide junk", action: "deny", folders: ["Junk"], extra: REDACTED });
  // A table where the config takes a string: its keys are unknown too.
  expect(c.admin.listen_addr).toEqual({ pw: REDACTED });
  // The problems name the keys, never their values.
  const paths = r.json.problems.map((p: { path: string }) => p.path);
  expect(paths).toContain("accounts.main.pasword");
  expect(paths).toContain("accounts.cloud.client_secert");
});

test("the redaction rule: known keys shown (dates too), account and group names kept, unknown keys hidden", () => {
  const parsed = parseToml(
    '[accounts.o]\nusername = 1979-05-27T07:32:00Z\npasswd = "p"\n' +
      '[approvals.groups.team]\nrecipients = ["a@x.test"]\nrecipientz = ["b@x.test"]\n',
  );
  const shown = redact(parsed) as Record<string, Record<string, Record<string, unknown>>>;
  expect(shown["accounts"]!["o"]!["username"]).toBeInstanceOf(Date);
  expect(shown["accounts"]!["o"]!["passwd"]).toBe(REDACTED);
  expect(shown["approvals"]!["groups"]).toEqual({ team: { recipients: ["a@x.test"], recipientz: REDACTED } });
});

test("a `_env` value that is no variable's name is redacted and scrubbed, a name shown", () => {
  const parsed = parseToml('[accounts.a]\npassword_env = "Hunter2 Pw!9x"\n[accounts.b]\npassword_env = "MAIL_PW"\n');
  const shown = redact(parsed) as Record<string, Record<string, Record<string, unknown>>>;
  expect(shown["accounts"]!["a"]!["password_env"]).toBe(REDACTED);
  expect(shown["accounts"]!["b"]!["password_env"]).toBe("MAIL_PW");
  // An error text quoting it is scrubbed too.
  expect(secretStrings(parsed, {})).toContain("Hunter2 Pw!9x");
  expect(secretStrings(parsed, {})).not.toContain("MAIL_PW");
});
