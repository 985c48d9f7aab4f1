/**
 * After a group's `;` an address list goes on only after a comma (RFC 5322 §3.4). `To: g:; rcpt@corp.test` was read
 * as naming rcpt@corp.test, so that envelope recipient was a To recipient and a rule refusing blind copies let the
 * message through, while Postfix stores the field as written and Dovecot's ENVELOPE reads the empty group `g` alone:
 * no reader is shown rcpt@corp.test. Now such a list is unparseable, and the bcc rule denies.
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import { parseAddressList } from "../../src/mail/index.ts";
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

async function send(id: string, rcpt: string, to: string): Promise<string> {
  const sender = upstreams().users[0]!.address;
  expect((await client.command(`MAIL FROM:<${sender}>`)).code).toBe(250);
  expect((await client.command(`RCPT TO:<${rcpt}>`)).code).toBe(250);
  expect((await client.command("DATA")).code).toBe(354);
  const text = `From: <${sender}>\r\nTo: ${to}\r\nSubject: ${id}\r\nMessage-ID: <${id}@group.test>\r\n\r\nbody\r\n`;
  client.write(dataPayload(text));
  return (await client.reply()).raw;
}

test("an address after a group without a comma classes nobody: the blind copy is refused", async () => {
  for (const [n, form] of [
    [1, (r: string) => `g:; ${r}`],
    [2, (r: string) => `g: other@corp.test; <${r}>`],
  ] as const) {
    const id = `${run}-after-group-${n}`;
    const rcpt = `rcpt-${id}@corp.test`;
    expect(await send(id, rcpt, form(rcpt))).toStartWith("554 5.7.1");
    const row = (await proxy.rows()).findLast((r) => r.command === "RCPT TO" && r.target === rcpt);
    expect(row).toMatchObject({ decision: "deny", rule: null });
    expect(row!.reason).toContain("undecided without bcc");
    expect(sinkCopies(id)).toEqual([]);
  }
});

test("the control: a comma after the group, and the address is a To recipient", async () => {
  const id = `${run}-group-comma`;
  const rcpt = `rcpt-${id}@corp.test`;
  expect(await send(id, rcpt, `g: other@corp.test; , ${rcpt}`)).toStartWith("250");
  await waitForSink(id, 1);
});

test("the parser: only a comma or the end after a group's semicolon", () => {
  expect(parseAddressList("g:; a@x.test").ok).toBe(false);
  expect(parseAddressList("g: a@x.test; b@x.test").ok).toBe(false);
  expect(parseAddressList("g: a@x.test; (c) ;").ok).toBe(false);
  expect(parseAddressList("g: a@x.test; (c) , b@x.test")).toEqual({ addresses: ["a@x.test", "b@x.test"], ok: true });
  expect(parseAddressList("g:;, h:;")).toEqual({ addresses: [], ok: true });
  expect(parseAddressList("g: a@x.test; ")).toEqual({ addresses: ["a@x.test"], ok: true });
});
