/**
 * A reload during a transaction (docs/audit.md "What a row records"): the MAIL FROM row, written at the end of DATA
 * with the send's other rows, names the rule that decided the sender at MAIL FROM, by name and position, and the
 * revision of the config whose rules those were, not the revision in force at the end of DATA. Through the real
 * Postfix: a reload that puts one more rule first (every other rule moves down one place) and ends no session.
 * Likewise the rows about a held message, written when it is decided, name the rule that held it, in the config
 * that held it.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { type ApprovalContext, approve } from "../../src/approvals/service.ts";
import { heldId } from "../fixtures/index.ts";
import {
  askManagersRules,
  dataPayload,
  loggedIn,
  marker,
  startTestProxy,
  type TestProxy,
  waitForSink,
} from "./helpers.ts";

const RULES = `
[[rules]]
name = "Alice sends"
action = "allow"
operations = ["send"]
from = "alice@mailgator.test"

[[rules]]
name = "nothing else"
action = "deny"
`;

/** A rule that decides nothing for alice, put first: "Alice sends" is rule 1 here, rule 0 before. */
const SHIFTED = `
[[rules]]
name = "Bob sends"
action = "allow"
operations = ["send"]
from = "bob@mailgator.test"
${RULES}`;

let proxy: TestProxy;

beforeAll(async () => {
  proxy = await startTestProxy({ rules: RULES });
});

afterAll(async () => {
  await proxy?.close();
});

test("MAIL FROM decided before a reload: its row at the end of DATA carries the revision that decided", async () => {
  const before = proxy.config;
  const m = marker();
  const c = await loggedIn(proxy.port);
  expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
  const after = proxy.reload(SHIFTED);
  expect(after.revision).not.toBe(before.revision);
  expect((await c.command(`RCPT TO:<rev-${m}@example.test>`)).code).toBe(250);
  expect((await c.command("DATA")).code).toBe(354);
  c.write(dataPayload(`From: alice@mailgator.test\r\nTo: rev-${m}@example.test\r\nSubject: ${m}\r\n\r\nhello\r\n`));
  expect((await c.reply()).code).toBe(250);
  await c.command("QUIT");
  c.close();
  await waitForSink(m, 1);

  const rows = (await proxy.rows()).filter((r) => r.protocol === "smtp" && r.rule !== null);
  const configs = new Map([before, after].map((config) => [config.revision, config]));
  const cited = rows.map((r) => ({
    command: r.command,
    rule: r.rule,
    ruleIndex: r.ruleIndex,
    atThatIndex: configs.get(r.configRevision)?.rules[r.ruleIndex ?? -1]?.name ?? null,
  }));
  // Each row's rule is the one at its index in its revision's rules.
  for (const r of cited) expect(r.atThatIndex).toBe(r.rule);
  const mail = rows.find((r) => r.command === "MAIL FROM")!;
  expect([mail.configRevision, mail.ruleIndex]).toEqual([before.revision, 0]);
  // The recipient and the message were decided at the end of DATA, by the reloaded rules.
  const rcpt = rows.find((r) => r.command === "RCPT TO")!;
  expect([rcpt.configRevision, rcpt.ruleIndex]).toEqual([after.revision, 1]);
});

const ASK_RULES = askManagersRules("http://127.0.0.1:1");

/** A rule that decides nothing for alice, put first: the ask rule is rule 1 here, rule 0 before. */
const ASK_SHIFTED = ASK_RULES.replace(
  "[[rules]]",
  `[[rules]]
name = "Bob sends"
action = "allow"
operations = ["send"]
from = "bob@mailgator.test"

[[rules]]`,
);

test("a message held, then a reload: the rows of its approval name its rule in the config that held it", async () => {
  const held = await startTestProxy({ rules: ASK_RULES, approvals: true });
  try {
    const before = held.config;
    const m = marker();
    const c = await loggedIn(held.port);
    expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
    expect((await c.command(`RCPT TO:<held-${m}@example.test>`)).code).toBe(250);
    expect((await c.command("DATA")).code).toBe(354);
    c.write(dataPayload(`From: alice@mailgator.test\r\nTo: held-${m}@example.test\r\nSubject: ${m}\r\n\r\nhi\r\n`));
    const reply = await c.reply();
    expect(reply.code).toBe(250);
    await c.command("QUIT");
    c.close();
    const id = heldId(reply.lines.join(" "));

    const after = held.reload(ASK_SHIFTED);
    expect(after.rules.map((r) => r.name)).toEqual(["Bob sends", "outside needs a manager"]);
    const ctx: ApprovalContext = { config: after, store: held.approvals!, audit: held.audit, protocol: "cli" };
    expect((await approve(ctx, id, "test")).outcome).toBe("sent");
    await waitForSink(m, 1);

    const configs = new Map([before, after].map((config) => [config.revision, config]));
    const about = (await held.rows()).filter((r) => r.target === id && r.rule !== null);
    expect(about.map((r) => r.command)).toContain("APPROVAL SENT");
    for (const r of about) {
      const atThatIndex = configs.get(r.configRevision)?.rules[r.ruleIndex ?? -1]?.name ?? null;
      expect({ command: r.command, rule: r.rule, atThatIndex }).toEqual({
        command: r.command,
        rule: "outside needs a manager",
        atThatIndex: "outside needs a manager",
      });
      expect([r.configRevision, r.ruleIndex]).toEqual([before.revision, 0]);
    }
  } finally {
    await held.close();
  }
});
