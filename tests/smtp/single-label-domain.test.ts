/**
 * An envelope address whose domain is one label (`boss@hr`) was accepted and matched by the rules as written, while
 * the upstream may complete it into another domain: Postfix's append_dot_mydomain (on by default below compatibility
 * level 1) delivers it to boss@hr.$mydomain, and a resolver's search list does the same to the MX it finds. The
 * Postfix of scripts/upstreams, with append_dot_mydomain = yes, delivers `RCPT TO:<alice@mailgator>` to
 * alice@mailgator.mailgator.test; so `deny to = "*@hr.mailgator.test"` was passed by `RCPT TO:<boss@hr>`. RFC 5321
 * §2.3.5 allows only fully-qualified domain names; now a domain of one label is refused with 553 (docs/smtp.md
 * "Addresses"), in MAIL FROM, RCPT TO and configured identities alike.
 */

import { expect, test } from "bun:test";
import { parseConfig } from "../../src/config/index.ts";
import { mailboxProblem, readEnvelopeAddress } from "../../src/mail/index.ts";
import { loggedIn, marker, nothingReachedUpstream, type TestProxy, useTestProxy } from "./helpers.ts";

const RULES = `
[[rules]]
name = "not hr"
action = "deny"
operations = ["send"]
to = "*@hr.mailgator.test"

[[rules]]
name = "the rest"
action = "allow"
operations = ["send"]
`;

let proxy: TestProxy;
useTestProxy({ rules: RULES }, (p) => (proxy = p));

test("RCPT TO a domain of one label gets 553 5.1.3, and nothing of the message reaches Postfix", async () => {
  const m = marker();
  const c = await loggedIn(proxy.port);
  expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
  const rcpt = await c.command(`RCPT TO:<boss-${m}@hr>`);
  expect(rcpt.raw).toStartWith("553 5.1.3");
  expect(rcpt.raw).toContain("not fully qualified");
  expect((await c.command("DATA")).code).toBe(554);
  await c.command("QUIT");
  c.close();
  await nothingReachedUpstream(proxy.port, m);
});

test("MAIL FROM a domain of one label gets 553 5.1.7", async () => {
  const c = await loggedIn(proxy.port);
  expect((await c.command("MAIL FROM:<alice@mailgator>")).raw).toStartWith("553 5.1.7");
  await c.command("QUIT");
  c.close();
});

test("the reading: two labels or more, whatever their case", () => {
  for (const bad of ["boss@hr", "boss@HR", "boss@localhost", "a@b-c"]) {
    expect(mailboxProblem(bad)).toBe("a domain of one label (not fully qualified) is not accepted");
    expect(readEnvelopeAddress(bad).ok).toBe(false);
  }
  expect(mailboxProblem("boss@hr.corp.test")).toBeNull();
  expect(mailboxProblem("boss@xn--bcher-kva.test")).toBeNull();
});

test("an identity of one label is a config error", () => {
  const toml = (identity: string) =>
    `[smtp]\nlisten_addr = "127.0.0.1:2525"\nupstream_addr = "127.0.0.1:587"\nidentities = ["${identity}"]\n`;
  expect(() => parseConfig(toml("me@localhost"), "/tmp/mailgator.toml")).toThrow("not fully qualified");
  expect(parseConfig(toml("me@mail.test"), "/tmp/mailgator.toml").smtp?.identities).toEqual(["me@mail.test"]);
});
