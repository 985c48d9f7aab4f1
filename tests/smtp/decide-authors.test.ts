/**
 * The end-of-data decision with header authors (src/smtp/decide.ts `decideMessage`, docs/smtp.md "Identities"): a
 * message written as another author needs what that author's rules need too. When the envelope sender's rule and an
 * author's rule both ask, each asking rule is kept (`asking`), so that the groups of both are asked (the session
 * holds the message for the union of their `ask_groups`), and the row's reason names the author's rule.
 */
import { expect, test } from "bun:test";
import { compilePolicy, type RuleSpec } from "../../src/policy/index.ts";
import { decideMessage } from "../../src/smtp/decide.ts";

const RULES = [
  { name: "desk asks team", action: "ask", operations: ["mail:send"], from: ["desk@corp.test"] },
  { name: "ceo asks legal", action: "ask", operations: ["mail:send"], from: ["ceo@corp.test"] },
  { name: "interns may not", action: "deny", operations: ["mail:send"], from: ["intern@corp.test"] },
  { name: "the rest", action: "allow", operations: ["mail:send"] },
] as RuleSpec[];

function decide(sender: string, authors: string[]) {
  const facts = { to: ["x@ext.test"], cc: [], subject: "s", hasAttachment: false, authors };
  return decideMessage(compilePolicy(RULES), null, sender, ["x@ext.test"], facts);
}

test("the sender's rule and an author's rule both ask: both are kept, and the reason names the author's", () => {
  const verdict = decide("desk@corp.test", ["ceo@corp.test"]);
  expect(verdict.held).toHaveLength(1);
  const held = verdict.held[0]!;
  expect(held.decision.rule).toBe("desk asks team");
  expect(held.asking).toEqual([0, 1]);
  expect(held.decision.reason).toContain("header author <ceo@corp.test> asks too: ");
  expect(held.decision.reason).toContain("ceo asks legal");
});

test("only the author's rule asks: it decides, alone; one that denies refuses; the same rule is kept once", () => {
  const byAuthor = decide("other@corp.test", ["ceo@corp.test"]).held[0]!;
  expect(byAuthor.decision.rule).toBe("ceo asks legal");
  expect(byAuthor.asking).toEqual([1]);
  expect(decide("desk@corp.test", ["intern@corp.test"]).refused).toEqual(["x@ext.test"]);
  const same = decide("desk@corp.test", ["desk@corp.test"]).held[0]!;
  expect(same.asking).toEqual([0]);
  expect(same.decision.reason).not.toContain("asks too");
  expect(decide("other@corp.test", ["someone@corp.test"]).recipients[0]!.asking).toBeUndefined();
});
