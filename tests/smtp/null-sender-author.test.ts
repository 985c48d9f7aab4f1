/**
 * A message sent with the null reverse path `<>` and no author field. docs/smtp.md "The author in the
 * header": every author the recipients are shown must be one of the session's identities. An upstream that fills in
 * a missing From (Postfix for local and authenticated clients, RFC 5322 §3.6.2 makes From mandatory) writes the
 * reverse path there, and for `<>` that is `MAILER-DAEMON`; a resent block without Resent-From gets
 * `Resent-From: MAILER-DAEMON` the same way. So with `<>` the message must name its authors itself.
 */

import { describe, expect, test } from "bun:test";
import {
  CORP_ONLY_RULES,
  dataPayload,
  loggedIn,
  marker,
  message,
  nothingReachedUpstream,
  type TestProxy,
  useTestProxy,
  waitForSink,
} from "./helpers.ts";

let proxy: TestProxy;
useTestProxy({ rules: CORP_ONLY_RULES }, (p) => (proxy = p));

async function send(sender: string, headers: Record<string, string>, m: string): Promise<string> {
  const c = await loggedIn(proxy.port);
  expect((await c.command(`MAIL FROM:<${sender}>`)).code).toBe(250);
  expect((await c.command(`RCPT TO:<ok-${m}@corp.test>`)).code).toBe(250);
  expect((await c.command("DATA")).code).toBe(354);
  c.write(dataPayload(message(headers, `body ${m}`)));
  const r = (await c.reply(15_000)).raw;
  c.close();
  return r;
}

describe("null reverse path without an author field", () => {
  test("no From: refused, nothing reaches Postfix (it would write From: MAILER-DAEMON)", async () => {
    const m = marker();
    const r = await send("", { To: `ok-${m}@corp.test`, Subject: `no author ${m}` }, m);
    expect(r).toStartWith("554 5.7.1");
    await nothingReachedUpstream(proxy.port, m);
    const row = (await proxy.rows()).find(
      (x) => x.command === "DATA" && x.decision === "deny" && /From/.test(x.reason),
    );
    expect(row?.reason).toContain("From");
  });

  test("a resent block without Resent-From: refused (it would get Resent-From: MAILER-DAEMON)", async () => {
    const m = marker();
    const headers = {
      From: "alice@mailgator.test",
      To: `ok-${m}@corp.test`,
      "Resent-To": `ok-${m}@corp.test`,
      Subject: `resent ${m}`,
    };
    expect(await send("", headers, m)).toStartWith("554 5.7.1");
    await nothingReachedUpstream(proxy.port, m);
  });

  test("with From (and Resent-From) naming the login, <> is delivered; a named sender may omit From", async () => {
    const m = marker();
    const headers = { From: "alice@mailgator.test", To: `ok-${m}@corp.test`, Subject: `named ${m}` };
    expect(await send("", headers, m)).toStartWith("250");
    const resent = {
      ...headers,
      "Resent-From": "alice@mailgator.test",
      "Resent-To": `ok-${m}@corp.test`,
      Subject: `named resent ${m}`,
    };
    expect(await send("", resent, m)).toStartWith("250");
    // The reverse path is an identity: the upstream's From is that address.
    expect(await send("alice@mailgator.test", { To: `ok-${m}@corp.test`, Subject: `implicit ${m}` }, m)).toStartWith(
      "250",
    );
    const copies = await waitForSink(m, 3);
    const implicit = copies.find((c) => c.text.includes(`implicit ${m}`))!;
    expect(implicit.text).toMatch(/^From: alice@mailgator\.test$/m);
  });
});
