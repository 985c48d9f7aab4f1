/**
 * The To and Cc headers class each envelope recipient (docs/smtp.md "Send semantics"), through the proxy against
 * the real Postfix: a header address readers cannot read must not class a recipient as named there. `To: rcpt- x@…`
 * is no addr-spec (two words without a dot between them); read as `rcpt-x@…`, it made that envelope recipient a To
 * recipient, while readers (Dovecot's ENVELOPE among them) see no such address: a blind copy that a rule refusing
 * blind copies let through. Now the To header is unknown, and the bcc rule denies.
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import {
  dataPayload,
  loggedIn,
  marker,
  type RawClient,
  sinkCopies,
  type TestProxy,
  upstreams,
  useTestProxy,
  waitForSink,
} from "./helpers.ts";

const RULES = `
[[rules]]
name = "no blind copies"
action = "deny"
operations = ["send"]
bcc = "*"

[[rules]]
name = "corp"
action = "allow"
operations = ["send"]
to = "*@corp.test"

[[rules]]
name = "nothing else"
action = "deny"
`;

let proxy: TestProxy;
useTestProxy({ rules: RULES }, (p) => (proxy = p));

let client: RawClient;
const run = marker();

beforeAll(async () => {
  client = await loggedIn(proxy.port);
});

afterAll(() => {
  client?.close();
});

/** One transaction to `rcpt`, with `to` as the To header; returns the final reply. */
async function send(id: string, rcpt: string, to: string): Promise<string> {
  const sender = upstreams().users[0]!.address;
  expect((await client.command(`MAIL FROM:<${sender}>`)).code).toBe(250);
  expect((await client.command(`RCPT TO:<${rcpt}>`)).code).toBe(250);
  expect((await client.command("DATA")).code).toBe(354);
  const text = `From: <${sender}>\r\nTo: ${to}\r\nSubject: ${id}\r\nMessage-ID: <${id}@forms.test>\r\n\r\nbody\r\n`;
  client.write(dataPayload(text));
  return (await client.reply()).raw;
}

test("a To address split by a space classes nobody: the blind copy is refused, nothing reaches Postfix", async () => {
  const id = `${run}-split`;
  expect(await send(id, `rcpt-${id}@corp.test`, `rcpt- ${id}@corp.test`)).toStartWith("554 5.7.1");
  const rows = await proxy.rows();
  const row = rows.findLast((r) => r.command === "RCPT TO" && r.target === `rcpt-${id}@corp.test`);
  expect(row).toMatchObject({ decision: "deny", rule: null });
  expect(row!.reason).toContain("undecided without bcc");
  // The control, sent after it over the same session, arrives; the refused message never did.
  const control = `${run}-control`;
  expect(await send(control, `rcpt-${control}@corp.test`, `<rcpt-${control}@corp.test>`)).toStartWith("250");
  await waitForSink(control, 1);
  expect(sinkCopies(id)).toEqual([]);
});
