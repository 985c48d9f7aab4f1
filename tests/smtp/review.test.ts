/**
 * Findings of an adversarial review of the SMTP proxy (docs/smtp.md, "Review notes"). Each test asserts what
 * reached the upstream server (Postfix's log and sink, or the fake upstream), not only the replies.
 */

import { describe, expect, test } from "bun:test";
import { dataPayload, loggedIn, marker, message, postfixLog, sinkCopies, useTestProxy, type TestProxy } from "./helpers.ts";

const RULES = `
[[rules]]
name = "own domain"
action = "allow"
operations = ["send"]
to = "*@mailgator.test"

[[rules]]
name = "nothing else"
action = "deny"
`;

let p: TestProxy;
useTestProxy({ rules: RULES }, (proxy) => (p = proxy));

/** Waits until Postfix logged `needle`. */
async function waitForLog(needle: string, timeoutMs = 15_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const log = postfixLog();
    if (log.includes(needle)) return log;
    if (Date.now() > deadline) throw new Error(`Postfix never logged ${needle}`);
    await Bun.sleep(50);
  }
}

describe("bounces to a reverse path the rules never judged", () => {
  test("a failing allowed recipient does not bounce the message to a chosen MAIL FROM", async () => {
    // The agent may only write to its own domain. It names an outside address as the reverse path and a
    // recipient that will fail after acceptance; the non-delivery report would carry the whole message there.
    const m = marker();
    const c = await loggedIn(p.port);
    expect((await c.command(`MAIL FROM:<evil-${m}@x.test>`)).code).toBe(250);
    expect((await c.command(`RCPT TO:<nobody-${m}@mailgator.test>`)).code).toBe(250);
    expect((await c.command("DATA")).code).toBe(354);
    c.write(dataPayload(message({ Subject: `report ${m}`, To: `nobody-${m}@mailgator.test` }, `stolen mail ${m}`)));
    const final = await c.reply();
    c.close();
    expect(final.code).toBe(250);
    const queueId = /queued as ([0-9A-F]+)/.exec(final.raw)?.[1];
    expect(queueId).toBeDefined();
    // The original leaves the queue once its delivery failed and any report was queued.
    const log = await waitForLog(`${queueId}: removed`);
    expect(log.includes(`to=<nobody-${m}@mailgator.test>`)).toBe(true);
    expect(log.includes(`${queueId}: sender non-delivery notification`)).toBe(false);
    await Bun.sleep(500);
    expect(sinkCopies(m)).toEqual([]);
  });

  test("the account's own address still gets its bounces (no NOTIFY=NEVER)", async () => {
    const m = marker();
    const c = await loggedIn(p.port);
    expect((await c.command("MAIL FROM:<Alice@Mailgator.test>")).code).toBe(250);
    expect((await c.command(`RCPT TO:<nobody-${m}@mailgator.test>`)).code).toBe(250);
    expect((await c.command("DATA")).code).toBe(354);
    c.write(dataPayload(message({ Subject: `own ${m}`, To: `nobody-${m}@mailgator.test` }, `own ${m}`)));
    const final = await c.reply();
    c.close();
    const queueId = /queued as ([0-9A-F]+)/.exec(final.raw)?.[1];
    expect(queueId).toBeDefined();
    const log = await waitForLog(`${queueId}: removed`);
    expect(log.includes(`${queueId}: sender non-delivery notification`)).toBe(true);
  });
});
