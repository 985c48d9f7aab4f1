/**
 * A `[`, `]`, `\` or control character outside quotes in an address list (in a display name, a local part or a
 * domain that is no domain literal) was read past by the address parser: `To: a[b <x@corp.test>, rcpt@corp.test`
 * named x@corp.test and rcpt@corp.test, so rcpt@corp.test was a To recipient and a rule refusing blind copies let
 * the message through. Dovecot's ENVELOPE reads such a list as `a` with no domain and nothing after it, and Postfix's
 * address rewriting turns the rest of the field into one quoted local part (`"[b <x@corp.test>, rcpt@corp.test]"@…`):
 * no reader is shown rcpt@corp.test. The same for a display name that begins with a dot (`.a <x@corp.test>, …`).
 * Now such a list is unparseable, and the bcc rule denies. A control character (0x01, DEL) now refuses the message
 * before any rule is asked (docs/smtp.md "What the message says"); the list is still unparseable.
 */

import { expect, test } from "bun:test";
import { parseAddressList } from "../../src/mail/index.ts";
import { useBlindCopyProxy } from "./blind-copy-fixture.ts";
import { marker, waitForSink } from "./helpers.ts";

const { send, expectBlindCopyRefused, expectControlRefused } = useBlindCopyProxy();
const run = marker();

const REFUSED: Record<string, (rcpt: string) => string> = {
  "bracket-name": (r) => `a[b <other@corp.test>, ${r}`,
  "close-bracket-name": (r) => `a]b <other@corp.test>, ${r}`,
  "backslash-name": (r) => `a\\b <other@corp.test>, ${r}`,
  "bracket-local": (r) => `a[b@corp.test, ${r}`,
  "backslash-local": (r) => `a\\b@corp.test, ${r}`,
  "bracket-domain": (r) => `a@corp[.test, ${r}`,
  "backslash-domain": (r) => `a@co\\rp.test, ${r}`,
  "bracket-angle": (r) => `<a]b@corp.test>, ${r}`,
  "dot-first-name": (r) => `.a <other@corp.test>, ${r}`,
};

for (const [name, form] of Object.entries(REFUSED)) {
  test(`To with ${name} classes nobody: the blind copy is refused, nothing reaches Postfix`, async () => {
    const id = `${run}-${name}`;
    const rcpt = `rcpt-${id}@corp.test`;
    await expectBlindCopyRefused(id, rcpt, form(rcpt));
  });
}

// A control character now refuses the message before any rule is asked (docs/smtp.md "What the message says"); the
// reader still reads no address after it, as the IMAP filter reads a fetched header.
const CONTROLS: Record<string, (rcpt: string) => string> = {
  "control-name": (r) => `a\x01b <other@corp.test>, ${r}`,
  "delete-name": (r) => `a\x7fb <other@corp.test>, ${r}`,
};

for (const [name, form] of Object.entries(CONTROLS)) {
  test(`To with ${name} is refused for its control character, nothing reaches Postfix`, async () => {
    const id = `${run}-${name}`;
    await expectControlRefused(id, `rcpt-${id}@corp.test`, form(`rcpt-${id}@corp.test`));
  });
}

test("the controls: names beyond ASCII, quoted specials, a domain literal are read; the message is sent", async () => {
  const id = `${run}-control`;
  const rcpt = `rcpt-${id}@corp.test`;
  expect(await send(id, rcpt, `\u00e9t\u00e9 <a@[127.0.0.1]>, "a[b\\\\c" <other@corp.test>, ${rcpt}`)).toStartWith(
    "250",
  );
  await waitForSink(id, 1);
});

test("the parser: atoms, quoted strings and domain literals only", () => {
  expect(parseAddressList("a[b <x@y.test>, z@y.test").ok).toBe(false);
  expect(parseAddressList("a\\b@y.test, z@y.test").ok).toBe(false);
  expect(parseAddressList("a@y[.test, z@y.test").ok).toBe(false);
  expect(parseAddressList(".a <x@y.test>, z@y.test").ok).toBe(false);
  expect(parseAddressList("a. b.c <x@y.test>")).toEqual({ addresses: ["x@y.test"], ok: true });
  expect(parseAddressList('"a[b\\\\c" <x@y.test>, (a[b) z@[10.0.0.1]')).toEqual({
    addresses: ["x@y.test", "z@[10.0.0.1]"],
    ok: true,
  });
  expect(parseAddressList("\u00e9t\u00e9 <x@y.test>")).toEqual({ addresses: ["x@y.test"], ok: true });
});
