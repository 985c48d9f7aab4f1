/**
 * After a group's `;` an address list goes on only after a comma (RFC 5322 §3.4). `To: g:; rcpt@corp.test` was read
 * as naming rcpt@corp.test, so that envelope recipient was a To recipient and a rule refusing blind copies let the
 * message through, while Postfix stores the field as written and Dovecot's ENVELOPE reads the empty group `g` alone:
 * no reader is shown rcpt@corp.test. Now such a list is unparseable, and the bcc rule denies.
 */

import { expect, test } from "bun:test";
import { parseAddressList } from "../../src/mail/index.ts";
import { useBlindCopyProxy } from "./blind-copy-fixture.ts";
import { marker, waitForSink } from "./helpers.ts";

const { send, expectBlindCopyRefused } = useBlindCopyProxy();
const run = marker();

test("an address after a group without a comma classes nobody: the blind copy is refused", async () => {
  for (const [n, form] of [
    [1, (r: string) => `g:; ${r}`],
    [2, (r: string) => `g: other@corp.test; <${r}>`],
  ] as const) {
    const id = `${run}-after-group-${n}`;
    const rcpt = `rcpt-${id}@corp.test`;
    await expectBlindCopyRefused(id, rcpt, form(rcpt));
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
