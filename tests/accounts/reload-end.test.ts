/**
 * reloadEndReason (src/accounts/identity.ts): the one list of reasons a reload ends an IMAP or SMTP session
 * (docs/operations.md "Reload"), each change alone against a vault and a pass-through login.
 */

import { expect, test } from "bun:test";
import { accountLoginKey, reloadEndReason, type SessionLogin } from "../../src/accounts/index.ts";
import { type Config, parseConfig } from "../../src/config/index.ts";
import { hashToken } from "../../src/vault/token.ts";

const vault = (edit: { token?: string; account?: string; password?: string; ips?: string; agent?: string } = {}) =>
  parseConfig(
    `[imap]
listen_addr = "127.0.0.1:1143"
upstream_addr = "127.0.0.1:143"
upstream_tls = "none"

[[agents]]
name = "${edit.agent ?? "bot"}"
token_hash = "${hashToken(edit.token ?? "mg_first-token-0123456789")}"
account = "${edit.account ?? "main"}"
${edit.ips === undefined ? "" : `allowed_ips = ["${edit.ips}"]`}

[accounts.main]
username = "alice@corp.test"
password = "${edit.password ?? "first"}"

[accounts.other]
username = "alice@corp.test"
password = "first"

[[rules]]
name = "all"
action = "allow"
`,
    "mailgator.toml",
  );

const passThrough = (): Config =>
  parseConfig(
    `[imap]
listen_addr = "127.0.0.1:1143"
upstream_addr = "127.0.0.1:143"
upstream_tls = "none"

[[rules]]
name = "all"
action = "allow"
`,
    "mailgator.toml",
  );

const before = vault();
const login: SessionLogin = {
  agent: "bot",
  tokenHash: before.agents[0]!.tokenHash,
  account: "main",
  username: "alice@corp.test",
  loginKey: accountLoginKey(before.accounts["main"]!),
};
const client = "192.0.2.7";

test("a vault session: each change alone, and none", () => {
  expect(reloadEndReason(vault(), login, client, false)).toBeNull();
  expect(reloadEndReason(vault(), login, client, true)).toBe("the upstream server changed");
  expect(reloadEndReason(vault({ agent: "other-bot" }), login, client, false)).toBe("the agent was removed");
  expect(reloadEndReason(vault({ token: "mg_second-token-0123456789" }), login, client, false)).toBe(
    "the agent's token changed",
  );
  expect(reloadEndReason(vault({ ips: "198.51.100.0/24" }), login, client, false)).toBe(
    "the client address is no longer in the agent's allowed_ips",
  );
  expect(reloadEndReason(vault({ ips: "192.0.2.0/24" }), login, client, false)).toBeNull();
  expect(reloadEndReason(vault({ account: "other" }), login, client, false)).toBe("the agent's account changed");
  expect(reloadEndReason(vault({ password: "second" }), login, client, false)).toBe(
    "the account's upstream credentials changed",
  );
});

test("a pass-through session: ended when the proxy takes agent tokens only, or the upstream changed", () => {
  expect(reloadEndReason(passThrough(), { agent: null }, client, false)).toBeNull();
  expect(reloadEndReason(passThrough(), { agent: null }, client, true)).toBe("the upstream server changed");
  expect(reloadEndReason(vault(), { agent: null }, client, false)).toBe("the proxy now takes agent tokens only");
});
