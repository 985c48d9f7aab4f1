/**
 * docs/protocol.md §7 case 38. A rule that names a mailbox applies to its subaddresses (src/smtp/decide.ts
 * `recipientAddresses`, docs/smtp.md "Send semantics"). `ceo+x@corp.test` is delivered to `ceo@corp.test`'s
 * mailbox by Postfix and Dovecot with their usual `+` delimiter, Gmail and Microsoft 365 (RFC 5233); before,
 * `deny to = "ceo@corp.test"` ahead of `allow to = "*@corp.test"` let `RCPT TO:<ceo+x@corp.test>` through, and an
 * `ask` rule on the mailbox was passed the same way.
 */

import { expect, test } from "bun:test";
import { subaddressMailbox } from "../../src/mail/index.ts";
import { compilePolicy, type RuleSpec } from "../../src/policy/index.ts";
import { decideMessage, recipientOutcome, simulateSend } from "../../src/smtp/decide.ts";
import { loggedIn, marker, nothingReachedUpstream, sinkCopies, startTestProxy, upstreams } from "./helpers.ts";

const RULES = [
  { name: "not the ceo", action: "deny", operations: ["mail:send"], to: ["ceo@corp.test"] },
  { name: "board asks", action: "ask", operations: ["mail:send"], to: ["board@corp.test"] },
  { name: "no blind copies to hr", action: "deny", operations: ["mail:send"], bcc: ["hr@corp.test"] },
  { name: "one inbox of the bot", action: "allow", operations: ["mail:send"], to: ["bot+inbox@ext.test"] },
  { name: "corp", action: "allow", operations: ["mail:send"], to: ["*@corp.test"] },
] as RuleSpec[];
const policy = compilePolicy(RULES);

function final(recipient: string, to: string[] = [recipient]) {
  const facts = { to, cc: [], subject: "s", hasAttachment: false, authors: [] };
  return decideMessage(policy, null, "me@corp.test", [recipient], facts).recipients[0]!.decision;
}

test("subaddressMailbox: the part after the first + of the local part goes; a leading + separates nothing", () => {
  expect(subaddressMailbox("ceo+x@corp.test")).toBe("ceo@corp.test");
  expect(subaddressMailbox("ceo+x+y@corp.test")).toBe("ceo@corp.test");
  expect(subaddressMailbox("Ceo+X@Corp.test")).toBe("Ceo@Corp.test");
  expect(subaddressMailbox("ceo+@corp.test")).toBe("ceo@corp.test");
  expect(subaddressMailbox("+x@corp.test")).toBeNull();
  expect(subaddressMailbox("ceo@corp.test")).toBeNull();
  expect(subaddressMailbox("ceo")).toBeNull();
});

test("a deny rule on a mailbox refuses its subaddresses, at RCPT and after the final dot", () => {
  for (const r of ["ceo+x@corp.test", "ceo+@corp.test", "ceo+a+b@corp.test"]) {
    const atRcpt = recipientOutcome(policy, null, "me@corp.test", r);
    expect(atRcpt.decided && atRcpt.decision.rule).toBe("not the ceo");
    expect(final(r).rule).toBe("not the ceo");
  }
  // Not the mailbox: another local part that merely begins the same way.
  expect(final("ceox@corp.test").rule).toBe("corp");
  expect(final("+ceo@corp.test").rule).toBe("corp");
});

test("an ask rule on a mailbox asks for its subaddresses; a bcc rule sees the subaddress's mailbox too", () => {
  const asked = final("board+q3@corp.test");
  expect([asked.action, asked.rule]).toEqual(["ask", "board asks"]);
  expect(final("hr+x@corp.test", []).rule).toBe("no blind copies to hr");
  expect(final("hr+x@corp.test").rule).toBe("corp");
});

test("a rule that names the subaddress still matches it as written, and only it", () => {
  expect(final("bot+inbox@ext.test").action).toBe("allow");
  expect(final("bot+other@ext.test").action).toBe("deny");
  expect(final("bot@ext.test").action).toBe("deny");
});

test("mailgator explain's simulation decides the same way", () => {
  const sim = simulateSend(policy, null, "me@corp.test", ["ceo+x@corp.test"], {
    to: ["ceo+x@corp.test"],
    cc: [],
    subject: "s",
    hasAttachment: false,
    authors: [],
  });
  expect(sim.stoppedAt).toBe("rcpt");
  expect(sim.recipients[0]!.rcpt).toBe("refused");
});

test("§7 case 38: RCPT TO a denied mailbox's subaddress gets 550 5.7.1, nothing reaches Postfix", async () => {
  const m = marker();
  const p = await startTestProxy({
    rules: `
[[rules]]
name = "not the ceo"
action = "deny"
operations = ["send"]
to = "ceo-${m}@corp.test"

[[rules]]
name = "corp"
action = "allow"
operations = ["send"]
to = "*@corp.test"
`,
  });
  try {
    const c = await loggedIn(p.port);
    const sender = upstreams().users[0]!.address;
    c.write(`MAIL FROM:<${sender}>\r\nRCPT TO:<ceo-${m}+hidden@corp.test>\r\nDATA\r\n`);
    expect((await c.reply()).code).toBe(250);
    expect((await c.reply()).raw).toStartWith(`550 5.7.1 Recipient <ceo-${m}+hidden@corp.test> is not allowed`);
    expect((await c.reply()).raw).toStartWith("554 5.7.1");
    c.close();
    await nothingReachedUpstream(p.port, m);
    expect(sinkCopies(`ceo-${m}`)).toEqual([]);
    const row = (await p.rows()).find((r) => r.command === "RCPT TO");
    expect([row?.target, row?.decision, row?.rule]).toEqual([`ceo-${m}+hidden@corp.test`, "deny", "not the ceo"]);
  } finally {
    await p.close();
  }
});
