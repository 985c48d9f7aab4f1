/**
 * DATA's audit reason after refused RCPTs (docs/smtp.md "All or nothing"): as many refusals as fit in
 * MAX_ROW_REASON are named, and the count of the others always ends it, however long the named ones are. Before, the
 * whole text was cut at 300 characters: twelve refused recipients named four and lost the "and N more".
 */
import { expect, test } from "bun:test";
import { MAX_ROW_REASON } from "../../src/smtp/limits.ts";
import { refusedReason } from "../../src/smtp/session.ts";
import { CORP_ONLY_RULES, loggedIn, marker, type TestProxy, useTestProxy } from "./helpers.ts";

const HEAD = "refused before the message was read: recipients refused at RCPT: ";
const refusal = (target: string) => ({ target, text: `550 5.7.1 Recipient <${target}> is not allowed` });

/** The refusals a reason names, and the count after them. */
function parse(reason: string): { named: number; more: number } {
  const more = /^(.*) and (\d+) more$/.exec(reason);
  const list = (more?.[1] ?? reason).slice(HEAD.length);
  return { named: list === "" ? 0 : list.split("; <").length, more: Number(more?.[2] ?? 0) };
}

test("twelve refused, ten kept: those that fit are named, the rest counted, within MAX_ROW_REASON", () => {
  const kept = Array.from({ length: 10 }, (_, i) => refusal(`nobody-${i}@evil.test`));
  const reason = refusedReason(kept, 12);
  expect(reason.length).toBeLessThanOrEqual(MAX_ROW_REASON);
  expect(reason).toStartWith(`${HEAD}<nobody-0@evil.test>: 550 5.7.1 Recipient <nobody-0@evil.test> is not allowed`);
  const { named, more } = parse(reason);
  expect(named).toBeGreaterThanOrEqual(1);
  expect(named + more).toBe(12);
});

test("a reason of exactly MAX_ROW_REASON names all; one octet more moves the last into the count", () => {
  const first = refusal("a@evil.test");
  const base = `${HEAD}<a@evil.test>: ${first.text}; <`;
  // A second refusal whose part brings the whole reason to MAX_ROW_REASON exactly.
  const fill = MAX_ROW_REASON - base.length - ">: 550 x".length;
  const second = { target: "b".repeat(fill), text: "550 x" };
  const exact = refusedReason([first, second], 2);
  expect(exact.length).toBe(MAX_ROW_REASON);
  expect(parse(exact)).toEqual({ named: 2, more: 0 });
  const over = refusedReason([first, { ...second, target: `${second.target}b` }], 2);
  expect(over).toBe(`${HEAD}<a@evil.test>: ${first.text} and 1 more`);
});

test("a first refusal too long to fit is cut, and the count still ends the reason", () => {
  const long = { target: "x".repeat(256), text: "550 5.7.1 not allowed" };
  const reason = refusedReason([long, refusal("b@evil.test")], 3);
  expect(reason.length).toBe(MAX_ROW_REASON);
  expect(reason).toStartWith(`${HEAD}<xxxx`);
  expect(reason).toEndWith(" and 2 more");
  expect(refusedReason([refusal("only@evil.test")], 1)).toBe(
    `${HEAD}<only@evil.test>: 550 5.7.1 Recipient <only@evil.test> is not allowed`,
  );
});

let p: TestProxy;
useTestProxy({ rules: CORP_ONLY_RULES }, (proxy) => (p = proxy));

test("end to end: twelve recipients refused by the rules, DATA's row counts all twelve", async () => {
  const m = marker();
  const c = await loggedIn(p.port);
  expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
  for (let i = 0; i < 12; i++) expect((await c.command(`RCPT TO:<r${i}-${m}@evil.test>`)).code).toBe(550);
  expect((await c.command("DATA")).raw).toStartWith("554 5.7.1 Message refused: 12 recipient(s) refused at RCPT");
  c.close();
  const row = (await p.rows()).find((r) => r.command === "DATA" && r.decision === "deny" && r.reason.includes(m));
  expect(row).toBeDefined();
  expect(row!.reason.length).toBeLessThanOrEqual(MAX_ROW_REASON);
  const { named, more } = parse(row!.reason);
  expect(named).toBeGreaterThanOrEqual(1);
  expect(named + more).toBe(12);
});

test("a reason cut at MAX_ROW_REASON never keeps half of a surrogate pair (cutText)", () => {
  // One refusal too long to fit, its text placing U+1F600 (two UTF-16 units) across the cut.
  const target = "t@corp.test";
  const fill = MAX_ROW_REASON - 1 - `${HEAD}<${target}>: `.length;
  const reason = refusedReason([{ target, text: `${"x".repeat(fill)}\u{1f600}tail` }], 1);
  expect(reason.length).toBe(MAX_ROW_REASON - 1);
  expect(reason.endsWith("x")).toBe(true);
  expect(reason.isWellFormed()).toBe(true);
});
