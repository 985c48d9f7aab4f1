import { describe, expect, test } from "bun:test";
import { parseAddressList } from "../../src/mail/index.ts";

describe("parseAddressList", () => {
  const ok: [string, string[]][] = [
    ["a@b.test", ["a@b.test"]],
    ["Alice <Alice@Friends.Test>", ["alice@friends.test"]],
    ['"notifications@shop.test" <spam@evil.test>', ["spam@evil.test"]],
    ["Dr. John Q. Public <John.Public@Example.test>", ["john.public@example.test"]],
    ['John "Jack" Smith (the boss) <j@x.test>', ["j@x.test"]],
    ["<@a.test,@b.test:user@host.test>", ["user@host.test"]],
    ["<@a.test,,@b.test:user@host.test>", ["user@host.test"]],
    ["=?UTF-8?B?bm90aWZpY2F0aW9uc0BzaG9wLnRlc3Q=?= <spam@evil.test>", ["spam@evil.test"]],
    ['a@b.test, "Doe, John" <john@doe.test>', ["a@b.test", "john@doe.test"]],
    ["friends: a@b.test, c@d.test;, e@f.test", ["a@b.test", "c@d.test", "e@f.test"]],
    ["undisclosed-recipients:;", []],
    ['"Friends of x@y.test". group: a@b.test;', ["a@b.test"]],
    ["a@b.test (notifications@shop.test)", ["a@b.test"]],
    ["(comment (nested)) a@b.test", ["a@b.test"]],
    ['"quoted local"@x.test', ['"quoted local"@x.test']],
    ["<@relay.test:user@host.test>", ["user@host.test"]],
    // Obsolete syntax (RFC 5322 §4.4): white space and comments around the dots and the @.
    ["john . q (x) . public @ example (y) . test", ["john.q.public@example.test"]],
    ['"a@b.test"@c.test', ['"a@b.test"@c.test']],
    // A quoted local part is the address it quotes (RFC 5322 §3.4.1), written the one way.
    ['"Boss"@corp.test', ["boss@corp.test"]],
    ['"b\\oss"@corp.test', ["boss@corp.test"]],
    ['Boss <"bo"."ss"@corp.test>', ["bo.ss@corp.test"]],
    ['"bo.ss"@corp.test', ["bo.ss@corp.test"]],
    ['a."b c"@x.test', ['"a.b c"@x.test']],
    ['"a\\ b"@x.test', ['"a b"@x.test']],
    ['"a\\"b"@x.test', ['"a\\"b"@x.test']],
    ['"a\\\\b"@x.test', ['"a\\\\b"@x.test']],
    ['"a."@x.test', ['"a."@x.test']],
    ["u@[127.0.0.1]", ["u@[127.0.0.1]"]],
    ["", []],
  ];
  for (const [input, expected] of ok) {
    test(`parses ${JSON.stringify(input)}`, () => {
      const r = parseAddressList(input);
      expect(r.ok).toBe(true);
      expect(r.addresses).toEqual(expected);
    });
  }
  const bad = [
    "a@b.test <c@d.test",
    '"unterminated <a@b.test>',
    "a@b@c.test",
    "no-at-sign",
    "<a@b.test> trailing",
    "(open a@b.test",
    "a@b.test>",
    // A display name is a phrase: an address there would be dropped as a name, while readers take it as the address.
    "notifications@shop.test <spam@evil.test>",
    "ceo@bank.test<me@mine.test>",
    "ceo@bank.test(x)<me@mine.test>",
    "ceo@bank.test; <me@mine.test>",
    "G: ceo@bank.test: <me@mine.test>;",
    '"a" ceo@bank.test <me@mine.test>',
    // A route is a list of @domain, nothing else.
    "<@bank.test,ceo@bank.test:me@mine.test>",
    "<@ceo@bank.test:me@mine.test>",
    // A group's name is a phrase: an address before the colon would be dropped as if it were a name.
    "CEO Bob <ceo@bank.test>:;",
    "<ceo@bank.test>:;",
    "ceo@bank.test:;",
    "alice@x.test, CEO <ceo@bank.test>: a@b.test;",
    ":;",
    // Words without a dot between them, and stray dots: no addr-spec. Dovecot reads the first as boss@corp.test.
    "boss@corp.test x",
    "boss@corp.test (c) x",
    "Boss <boss@corp.test x>",
    "bo ss@corp.test",
    '"bo"ss@corp.test',
    "boss@corp.test.",
    ".boss@corp.test",
    "boss.@corp.test",
    "bo..ss@corp.test",
    "boss@corp..test",
    "boss@.corp.test",
    'boss@"corp.test"',
  ];
  for (const input of bad) {
    test(`rejects ${JSON.stringify(input)}`, () => {
      expect(parseAddressList(input)).toEqual({ addresses: [], ok: false });
    });
  }
});
