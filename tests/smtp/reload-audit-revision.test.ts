/**
 * A reload during a transaction (docs/audit.md "What a row records"): the MAIL FROM row, written at the end of DATA
 * with the send's other rows, names the rule that decided the sender at MAIL FROM, by name and position, and the
 * revision of the config whose rules those were, not the revision in force at the end of DATA. Through the real
 * Postfix: a reload that puts one more rule first (every other rule moves down one place) and ends no session.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { dataPayload, loggedIn, marker, startTestProxy, type TestProxy, waitForSink } from "./helpers.ts";

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
