/**
 * Mail-Copies-To (no RFC defines it) is where readers that honour it (Gnus, KMail, slrn) send a copy of an answer to
 * all, besides the recipients: `Mail-Copies-To: evil@evil.test` on an allowed message to a colleague sent their
 * answer, and what they add, where the rules never let the agent write, as Mail-Followup-To did before it was checked.
 * It is held to the same rules as the other fields that send answers elsewhere (docs/smtp.md "The author in the
 * header"); its keywords `never`, `nobody`, `always` and `poster` name nobody new. Against the real Postfix.
 */

import { expect, test } from "bun:test";
import {
  CORP_ONLY_RULES,
  dataPayload,
  loggedIn,
  marker,
  nothingReachedUpstream,
  type RawClient,
  sinkCopies,
  type TestProxy,
  useTestProxy,
  waitForSink,
} from "./helpers.ts";

let p: TestProxy;
useTestProxy({ rules: CORP_ONLY_RULES }, (proxy) => (p = proxy));

const HEADER_REFUSED =
  "554 5.7.1 The From, Sender, Reply-To or a related header names someone other than this account's identities; " +
  "nothing was sent\r\n";

async function sendWith(c: RawClient, m: string, headers: string): Promise<string> {
  expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
  expect((await c.command(`RCPT TO:<ok-${m}@corp.test>`)).code).toBe(250);
  expect((await c.command("DATA")).code).toBe(354);
  c.write(
    dataPayload(`From: alice@mailgator.test\r\n${headers}\r\nTo: ok-${m}@corp.test\r\nSubject: mct ${m}\r\n\r\nx\r\n`),
  );
  return (await c.reply()).raw;
}

test("a foreign address in Mail-Copies-To, or one that cannot be read or is doubled: refused whole", async () => {
  const c = await loggedIn(p.port);
  const refused: string[] = [];
  for (const make of [
    (x: string) => `Mail-Copies-To: ${x}`,
    (x: string) => `Mail-Copies-To: alice@mailgator.test, "Alice" <${x}>`,
    (x: string) => `mail-copies-to: Team: ${x};`,
    (x: string) => `Mail-Copies-To: never, ${x}`,
    (x: string) => `Mail-Copies-To: never\r\nMail-Copies-To: ${x}`,
    () => "Mail-Copies-To: alice@mailgator.test\r\nMail-Copies-To: alice@mailgator.test",
    () => "Mail-Copies-To: <alice@mailgator.test",
    () => "Mail-Copies-To: (evil@evil.test)",
    // Only spaces and tabs are white space around a keyword: with a no-break space it is no keyword, and no address.
    () => "Mail-Copies-To: never\u00a0",
  ]) {
    const m = marker();
    const headers = make(`evil-${m}@evil.test`);
    expect(await sendWith(c, m, headers), headers).toBe(HEADER_REFUSED);
    refused.push(m);
  }
  c.close();
  await nothingReachedUpstream(p.port, refused[0]!);
  for (const m of refused) expect(sinkCopies(m)).toEqual([]);
  const row = (await p.rows()).find((r) => r.command === "DATA" && r.reason.includes(`evil-${refused[0]}@evil.test`));
  expect(row?.decision).toBe("deny");
});

test("the login, and each keyword, in Mail-Copies-To: delivered", async () => {
  const c = await loggedIn(p.port);
  const sent: string[] = [];
  for (const value of ['"Alice" <Alice@mailgator.test>', "never", "Nobody", " always ", "poster"]) {
    const m = marker();
    expect(await sendWith(c, m, `Mail-Copies-To: ${value}`), value).toStartWith("250");
    sent.push(m);
  }
  c.close();
  for (const m of sent) await waitForSink(`mct ${m}`, 1);
});
