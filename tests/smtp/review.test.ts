/**
 * Findings of an adversarial review of the SMTP proxy (docs/smtp.md, "Review notes"). Each test asserts what
 * reached the upstream server (Postfix's log and sink, or the fake upstream), not only the replies.
 */

import { describe, expect, test } from "bun:test";
import {
  dataPayload,
  loggedIn,
  marker,
  message,
  postfixLog,
  sinkCopies,
  type TestProxy,
  useTestProxy,
} from "./helpers.ts";

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
  test("a chosen MAIL FROM is refused at once, so no bounce can carry the message there", async () => {
    // The agent may only write to its own domain. It names an outside address as the reverse path and a
    // recipient that would fail after acceptance: the non-delivery report would carry the whole message to that
    // address. Since MAIL FROM must be one of the account's identities, the transaction never starts.
    const m = marker();
    const c = await loggedIn(p.port);
    expect((await c.command(`MAIL FROM:<evil-${m}@x.test>`)).raw).toStartWith(
      `553 5.7.1 Sender <evil-${m}@x.test> is not one of this account's identities`,
    );
    expect((await c.command(`RCPT TO:<nobody-${m}@mailgator.test>`)).raw).toStartWith("503 5.5.1");
    expect((await c.command("DATA")).raw).toStartWith("503 5.5.1");
    // Barrier: the same session sends to the login's own mailbox; once Postfix is done with it, it has seen
    // nothing of the refused transaction.
    const b = marker();
    expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
    expect((await c.command("RCPT TO:<alice@mailgator.test>")).code).toBe(250);
    expect((await c.command("DATA")).code).toBe(354);
    c.write(dataPayload(message({ Subject: `barrier ${b}`, To: "alice@mailgator.test" }, `barrier ${b}`)));
    const final = await c.reply();
    c.close();
    expect(final.code).toBe(250);
    const queueId = /queued as ([0-9A-F]+)/.exec(final.raw)?.[1];
    expect(queueId).toBeDefined();
    const log = await waitForLog(`${queueId}: removed`);
    expect(log).not.toContain(`evil-${m}`);
    expect(log).not.toContain(`nobody-${m}`);
    expect(sinkCopies(m)).toEqual([]);
    const rows = (await p.rows()).filter((row) => row.command === "MAIL FROM" && row.target === `evil-${m}@x.test`);
    expect(rows.map((row) => [row.decision, row.operation, row.rule])).toEqual([["deny", "mail:send", null]]);
    expect(rows[0]!.reason).toContain("not one of this account's identities");
  });

  test("the account's own address, in any case, still gets its bounces", async () => {
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
