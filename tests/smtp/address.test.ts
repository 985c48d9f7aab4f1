/** MAIL FROM / RCPT TO arguments (docs/protocol.md §6, §7 case 29). */

import { expect, test } from "bun:test";
import { parsePathArgument } from "../../src/smtp/address.ts";

test("plain addresses pass; case is kept for upstream and folded for policy", () => {
  const r = parsePathArgument("<Ok.Name+tag@Corp.Test>", false, "recipient");
  expect(r.ok).toBe(true);
  if (r.ok) {
    expect(r.path.address).toBe("Ok.Name+tag@Corp.Test");
    expect(r.path.key).toBe("ok.name+tag@corp.test");
  }
});

test("the null reverse path is for MAIL only", () => {
  expect(parsePathArgument("<>", true, "sender").ok).toBe(true);
  expect(parsePathArgument("<>", false, "recipient").ok).toBe(false);
});

test.each([
  ["<@corp.test:evil@x.test>", "source route"],
  ["<@a.test,@b.test:evil@x.test>", "source route"],
  ['<"ok@corp.test"@x.test>', "quoted"],
  ['<"evil"@corp.test>', "quoted"],
  ["<evil%x.test@corp.test>", "percent hack"],
  ["<evil!x.test@corp.test>", "bang path"],
  ["<ok@corp.test.>", "trailing dot"],
  ["<ok@[127.0.0.1]>", "address literal"],
  ["<ok@127.0.0.1>", "address literal without brackets"],
  ["<ok@corp.123>", "numeric top-level label"],
  ["<ok@corр.test>", "Cyrillic look-alike"],
  ["<ok@@corp.test>", "two @"],
  ["<ok@corp..test>", "empty label"],
  ["<.ok@corp.test>", "leading dot"],
  ["<ok@-corp.test>", "hyphen label"],
  ["<ok>", "no domain"],
  [`<${"a".repeat(65)}@corp.test>`, "local part over 64"],
])("%s is refused (%s)", (arg) => {
  const r = parsePathArgument(arg, false, "recipient");
  expect(r.ok).toBe(false);
  if (!r.ok) expect(r.code).toBe(553);
});

test("a numeric label is a label where it is not the last one", () => {
  expect(parsePathArgument("<ok@123.corp.test>", false, "recipient").ok).toBe(true);
  expect(parsePathArgument("<ok@corp.test1>", false, "recipient").ok).toBe(true);
});

test("syntax errors and parameters", () => {
  expect(parsePathArgument("ok@corp.test", false, "recipient")).toMatchObject({ ok: false, code: 501 });
  expect(parsePathArgument("<ok@corp.test", false, "recipient")).toMatchObject({ ok: false, code: 501 });
  expect(parsePathArgument("<ok@corp.test>x", false, "recipient")).toMatchObject({ ok: false, code: 501 });
  const r = parsePathArgument("<a@b.test> SIZE=10 body=8BITMIME", true, "sender");
  expect(r.ok && [...r.path.params]).toEqual([
    ["SIZE", "10"],
    ["BODY", "8BITMIME"],
  ]);
  expect(parsePathArgument("<a@b.test> SIZE=1 SIZE=2", true, "sender")).toMatchObject({ ok: false, code: 501 });
});
