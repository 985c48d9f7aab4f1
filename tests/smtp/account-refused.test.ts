/**
 * Vault mode: the upstream server refusing an account's own password login is the account's failure, and for
 * ACCOUNT_REFUSAL_HOLD_MS after it the account is not tried again (src/accounts/refusals.ts, docs/config.md "Who
 * connects"): a server counts failed logins per client address, and an agent sending again and again would have the
 * proxy fail login after login there. The send gets 451 and an `error` row either way. Against Postfix.
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import { generateToken, hashToken } from "../../src/vault/token.ts";
import { RawClient, startTestProxy, type TestProxy, upstreams } from "./helpers.ts";

const b64 = (s: string): string => Buffer.from(s).toString("base64");
const token = generateToken();
/** ACCOUNT_REFUSAL_HOLD_MS, shortened. */
const HOLD_MS = 2000;
let proxy: TestProxy;

beforeAll(async () => {
  const user = upstreams().users[0]!;
  proxy = await startTestProxy({
    accountRefusalHoldMs: HOLD_MS,
    rules: `[[rules]]
name = "all"
action = "allow"

[accounts.stale]
username = "${user.user}"
password = "not-${user.password}"

[[agents]]
name = "bot"
token_hash = "${hashToken(token)}"
account = "stale"
`,
  });
});

afterAll(async () => {
  await proxy?.close();
});

/** One message sent by the agent; the reply to its end of data. */
async function send(): Promise<{ reply: string }> {
  const user = upstreams().users[0]!;
  const c = await RawClient.connect(proxy.port);
  try {
    await c.reply();
    await c.command("EHLO client.test");
    expect((await c.command(`AUTH PLAIN ${b64(`\0bot\0${token}`)}`)).raw).toStartWith("235");
    expect((await c.command(`MAIL FROM:<${user.user}>`)).raw).toStartWith("250");
    expect((await c.command(`RCPT TO:<${user.user}>`)).raw).toStartWith("250");
    expect((await c.command("DATA")).raw).toStartWith("354");
    const end = await c.command(`From: <${user.user}>\r\nTo: <${user.user}>\r\nSubject: held\r\n\r\nhello\r\n.`);
    return { reply: end.raw.trim() };
  } finally {
    c.close();
  }
}

test("a refused account is not tried again until the hold is over", async () => {
  const before = (await proxy.rows()).length;
  const first = await send();
  expect(first.reply).toMatch(/^451 4\.7\.0 Upstream unavailable: upstream refused the login: 535 /);
  const second = await send();
  expect(second.reply).toStartWith(
    "451 4.4.1 Upstream unavailable: login not tried: the upstream server refused the credentials of account " +
      "stale less than 2 s ago (tried again in ",
  );
  expect(second.reply).toMatch(/\(tried again in [12] s\); try again later$/);
  const failed = (await proxy.rows()).slice(before).filter((r) => r.decision === "error");
  expect(failed.map((r) => [r.command, r.reason.replace(/: 535 .*/, ": 535")])).toEqual([
    ["DATA", "upstream failed: upstream refused the login: 535"],
    ["DATA", expect.stringMatching(/^upstream failed: login not tried: the upstream server refused the credentials/)],
  ]);
  // Once the hold is over, the account is tried again (and refused again).
  await Bun.sleep(HOLD_MS + 100);
  expect((await send()).reply).toMatch(/^451 4\.7\.0 Upstream unavailable: upstream refused the login: 535 /);
}, 60_000);
