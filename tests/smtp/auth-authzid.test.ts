/**
 * AUTH PLAIN with an authorization identity other than the authentication identity (RFC 4616 §2: `authzid NUL
 * authcid NUL passwd`): a well-formed response that asks to act as someone else, which Mailgator never allows. In
 * vault mode that is one agent asking to be another, with its own token. It is a failed login like any other
 * (docs/config.md "Who connects"): `535 5.7.8` (RFC 4954 §6, not the `501` of a response that cannot be decoded), a
 * `deny` row naming the reason, the failed-login delay, and a count toward the three failures that close the
 * session, as IMAP's AUTHENTICATE does (tests/imap/vault.test.ts).
 */

import { expect, test } from "bun:test";
import { generateToken, hashToken } from "../../src/vault/token.ts";
import { RawClient, startTestProxy, upstreams } from "./helpers.ts";

const b64 = (s: string): string => Buffer.from(s).toString("base64");

test("another agent's name as the authzid: 535, a deny row without the token, counted", async () => {
  const user = upstreams().users[0]!;
  const token = generateToken();
  const proxy = await startTestProxy({
    rules: `[[rules]]
name = "all"
action = "allow"

[accounts.main]
username = "${user.user}"
password = "${user.password}"

[[agents]]
name = "bot"
token_hash = "${hashToken(token)}"
account = "main"

[[agents]]
name = "boss"
token_hash = "${hashToken(generateToken())}"
account = "main"
`,
  });
  try {
    const c = await RawClient.connect(proxy.port);
    try {
      await c.reply();
      await c.command("EHLO client.test");
      const before = (await proxy.rows()).length;
      // With the initial response, then after the 334.
      const first = await c.command(`AUTH PLAIN ${b64(`boss\0bot\0${token}`)}`);
      expect(first.raw).toStartWith("535 5.7.8 ");
      expect((await c.command("AUTH PLAIN")).raw).toStartWith("334");
      expect((await c.command(b64(`boss\0bot\0${token}`))).raw).toStartWith("535 5.7.8 ");
      const rows = (await proxy.rows()).slice(before);
      expect(rows.map((r) => [r.command, r.decision, r.target])).toEqual([
        ["AUTH", "deny", "bot"],
        ["AUTH", "deny", "bot"],
      ]);
      for (const r of rows) {
        expect(r.reason).toContain("authorization identity");
        expect(r.detail?.["delayMs"]).toBeGreaterThan(0);
      }
      expect(JSON.stringify(rows)).not.toContain(token);
      // The third failure of the session closes it, as any failed login does.
      c.write(`AUTH PLAIN ${b64(`boss\0bot\0${token}`)}\r\n`);
      expect((await c.reply()).raw).toStartWith("535 5.7.8 ");
      expect((await c.reply()).raw).toStartWith("421 4.7.0 ");
      await c.waitClosed();
    } finally {
      c.close();
    }
    // The same token without the authzid (or with its own name) logs in.
    for (const response of [`\0bot\0${token}`, `bot\0bot\0${token}`]) {
      const ok = await RawClient.connect(proxy.port);
      try {
        await ok.reply();
        await ok.command("EHLO client.test");
        expect((await ok.command(`AUTH PLAIN ${b64(response)}`)).raw).toStartWith("235 ");
      } finally {
        ok.close();
      }
    }
  } finally {
    await proxy.close();
  }
}, 60_000);
