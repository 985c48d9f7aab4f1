/**
 * The domains of a route in angle brackets (obs-route, RFC 5322 §4.4: `<@a,@b:user@host>`) were taken as any run of
 * characters but white space, `@`, `,`, `:`, `<` and `>`, after the brackets had been found. A `(` or `[` there is
 * the start of a comment or a domain literal to Dovecot and Postfix, which runs past the colon and the address after
 * it: `To: <@a(:rcpt@corp.test>` was read as rcpt@corp.test, so that envelope recipient was a To recipient and a rule
 * refusing blind copies let the message through, while Dovecot's ENVELOPE reads `<@MISSING_DOMAIN` and Postfix's
 * header rewriting stores `"<"@a (:rcpt@corp.test>`: no reader is shown rcpt@corp.test. The same way, `Reply-To:
 * <@evil.test(:alice@…>` passed the identity check as the login's address and reached readers as `"<"@evil.test`,
 * where their answers would go. Now each route domain must be a dot-atom or a domain literal, or the list is
 * unparseable.
 */

import { expect, test } from "bun:test";
import { parseAddressList } from "../../src/mail/index.ts";
import { useBlindCopyProxy } from "./blind-copy-fixture.ts";
import {
  CORP_ONLY_RULES,
  marker,
  sendHead,
  sinkCopies,
  type TestProxy,
  upstreams,
  useTestProxy,
  waitForSink,
} from "./helpers.ts";

const { send, expectBlindCopyRefused } = useBlindCopyProxy();
const run = marker();

const REFUSED: Record<string, (rcpt: string) => string> = {
  "comment-open": (r) => `<@a(:${r}>`,
  "comment-open-later": (r) => `<@relay.test,@a(b:${r}>`,
  "bracket-open": (r) => `<@a[:${r}>`,
  "literal-unclosed": (r) => `<@[a:${r}>`,
};

for (const [name, form] of Object.entries(REFUSED)) {
  test(`To with a route domain ${name} classes nobody: the blind copy is refused, nothing sent`, async () => {
    const id = `${run}-${name}`;
    const rcpt = `rcpt-${id}@corp.test`;
    await expectBlindCopyRefused(id, rcpt, form(rcpt));
  });
}

test("the control: a route of a domain and a domain literal is read as the address after it; sent", async () => {
  const id = `${run}-control`;
  const rcpt = `rcpt-${id}@corp.test`;
  expect(await send(id, rcpt, `<@relay.test, @[10.0.0.1]:${rcpt}>`)).toStartWith("250");
  await waitForSink(id, 1);
});

let proxy: TestProxy;
useTestProxy({ rules: CORP_ONLY_RULES }, (p) => (proxy = p));

test("Reply-To with a comment opened in its route is refused, not read as the login's address", async () => {
  const id = `${run}-reply-to`;
  const me = upstreams().users[0]!.address;
  const head = `From: <${me}>\r\nReply-To: <@evil.test(:${me}>\r\nTo: rcpt-${id}@corp.test\r\nSubject: ${id}\r\n`;
  const reply = await sendHead(proxy.port, [`rcpt-${id}@corp.test`], head);
  expect(reply).toStartWith("554 5.7.1 The From, Sender, Reply-To or a related header");
  expect(sinkCopies(id)).toEqual([]);
});

test("the parser: a route domain is a dot-atom or a domain literal", () => {
  for (const bad of ["<@a(:x@y.test>", "<@a(b):x@y.test>", "<@a[:x@y.test>", "<@[a:x@y.test>", "<@a\\:x@y.test>"])
    expect(parseAddressList(bad).ok).toBe(false);
  for (const bad of ["<@a;:x@y.test>", "<@a.:x@y.test>", "<@.a:x@y.test>", "<@a..b:x@y.test>"])
    expect(parseAddressList(bad).ok).toBe(false);
  expect(parseAddressList("<@a.test, ,@[10.0.0.1],:x@y.test>")).toEqual({ addresses: ["x@y.test"], ok: true });
  expect(parseAddressList("Name <@a#b.test\t:x@y.test>")).toEqual({ addresses: ["x@y.test"], ok: true });
});
