/**
 * White space around a header value or an address is SP and HTAB only (RFC 5322 WSP). The header reader used
 * JavaScript's `trim`, which also drops VT, FF, NO-BREAK SPACE, U+FEFF, U+2028, U+3000 and the like: `To:
 * \vrcpt@corp.test` classed rcpt@corp.test as a To recipient, and a rule refusing blind copies let the message
 * through, while Postfix stores the field as written and Dovecot's ENVELOPE reads no address there (`\v` first),
 * a syntax error (`<rcpt@corp.test\v>`), or another address (`rcpt@"corp.test\u00a0"`). The same held for the
 * author: `From: <alice@…\u00a0>` was read as the login's identity. Now such a field is unknown and refused. A VT or
 * a form feed is a control character, which now refuses the message before any rule is asked (docs/smtp.md "What the
 * message says"); the reader still reads no address there, as the IMAP filter reads a fetched header.
 */

import { expect, test } from "bun:test";
import { useBlindCopyProxy } from "./blind-copy-fixture.ts";
import { marker, sinkCopies, upstreams, waitForSink } from "./helpers.ts";

const { send, expectBlindCopyRefused, expectControlRefused } = useBlindCopyProxy();
const run = marker();

const CONTROLS: Record<string, (rcpt: string) => string> = {
  "a VT before the address": (r) => `\v${r}`,
  "a VT inside the angle brackets": (r) => `<${r}\v>`,
  "a form feed after the address": (r) => `${r}\f`,
};

for (const [name, form] of Object.entries(CONTROLS)) {
  test(`To with ${name} is refused for its control character, nothing reaches Postfix`, async () => {
    const id = `${run}-${name.replaceAll(" ", "-").toLowerCase()}`;
    await expectControlRefused(id, `rcpt-${id}@corp.test`, form(`rcpt-${id}@corp.test`));
  });
}

const FORMS: Record<string, (rcpt: string) => string> = {
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
    await expectBlindCopyRefused(id, rcpt, form(rcpt));
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
