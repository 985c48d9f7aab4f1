/**
 * White space around a header value or an address is SP and HTAB only (RFC 5322 WSP). The header reader used
 * JavaScript's `trim`, which also drops VT, FF, NO-BREAK SPACE, U+FEFF, U+2028, U+3000 and the like: `To:
 * \vrcpt@corp.test` classed rcpt@corp.test as a To recipient, and a rule refusing blind copies let the message
 * through, while Postfix stores the field as written and Dovecot's ENVELOPE reads no address there (`\v` first),
 * a syntax error (`<rcpt@corp.test\v>`), or another address (`rcpt@"corp.test\u00a0"`). The same held for the
 * author: `From: <alice@…\u00a0>` was read as the login's identity. Now such a field is unknown and refused.
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

/** One transaction to `rcpt` with the given To and From fields; returns the final reply. */
async function send(id: string, rcpt: string, to: string, from?: string): Promise<string> {
  const sender = upstreams().users[0]!.address;
  expect((await client.command(`MAIL FROM:<${sender}>`)).code).toBe(250);
  expect((await client.command(`RCPT TO:<${rcpt}>`)).code).toBe(250);
  expect((await client.command("DATA")).code).toBe(354);
  const head = `From: ${from ?? `<${sender}>`}\r\nTo: ${to}\r\nSubject: ${id}\r\n`;
  const text = `${head}Message-ID: <${id}@ws.test>\r\n\r\nbody\r\n`;
  client.write(dataPayload(text));
  return (await client.reply()).raw;
}

const FORMS: Record<string, (rcpt: string) => string> = {
  "a VT before the address": (r) => `\v${r}`,
  "a VT inside the angle brackets": (r) => `<${r}\v>`,
  "a form feed after the address": (r) => `${r}\f`,
  "a no-break space after the address": (r) => `${r}\u00a0`,
  "a no-break space inside the angle brackets": (r) => `<\u00a0${r}>`,
  "a byte order mark before the address": (r) => `\ufeff${r}`,
  "an ideographic space before the address": (r) => `\u3000${r}`,
  "a line separator inside the angle brackets": (r) => `<${r}\u2028>`,
};

for (const [name, form] of Object.entries(FORMS)) {
  test(`To with ${name} classes nobody: the blind copy is refused, nothing reaches Postfix`, async () => {
    const id = `${run}-${name.replaceAll(" ", "-").toLowerCase()}`;
    const rcpt = `rcpt-${id}@corp.test`;
    expect(await send(id, rcpt, form(rcpt))).toStartWith("554 5.7.1");
    const row = (await proxy.rows()).findLast((r) => r.command === "RCPT TO" && r.target === rcpt);
    expect(row).toMatchObject({ decision: "deny", rule: null });
    expect(row!.reason).toContain("undecided without bcc");
    expect(sinkCopies(id)).toEqual([]);
  });
}

test("a From whose address ends in a no-break space is not the login's identity: refused", async () => {
  const id = `${run}-from-nbsp`;
  const sender = upstreams().users[0]!.address;
  expect(await send(id, `rcpt-${id}@corp.test`, `<rcpt-${id}@corp.test>`, `<${sender}\u00a0>`)).toStartWith("5");
  expect(sinkCopies(id)).toEqual([]);
});

test("the control: spaces and tabs around the address are white space, and the message is sent", async () => {
  const id = `${run}-control`;
  const rcpt = `rcpt-${id}@corp.test`;
  expect(await send(id, rcpt, ` \t<${rcpt}> \t`, `\t<${upstreams().users[0]!.address}> `)).toStartWith("250");
  await waitForSink(id, 1);
});
