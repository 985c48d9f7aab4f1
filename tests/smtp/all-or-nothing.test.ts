/**
 * All or nothing (docs/smtp.md "All or nothing"), against the real Postfix: after any refused RCPT of a transaction
 * (the quota's recipients_per_message, MAX_RECIPIENTS, a malformed address, a parameter, a syntax error) DATA is
 * refused, nothing reaches Postfix, the audit log says why, and RSET or a new MAIL starts a transaction that is
 * delivered. A transaction refused at DATA is not charged to the sends quota.
 */

import { describe, expect, test } from "bun:test";
import { MAX_COMMAND_LINE, MAX_RECIPIENTS } from "../../src/smtp/limits.ts";
import {
  barrier,
  CORP_ONLY_RULES,
  dataPayload,
  loggedIn,
  marker,
  message,
  nothingReachedUpstream,
  postfixLog,
  type RawClient,
  sinkCopies,
  startTestProxy,
  type TestProxy,
  useTestProxy,
  waitForSink,
} from "./helpers.ts";

const QUOTA_RECIPIENTS = 5;

let p: TestProxy;
useTestProxy({ rules: CORP_ONLY_RULES }, (proxy) => (p = proxy));

/**
 * DATA for the transaction under way. When it is accepted anyway (the defect), the message is sent to its end, so
 * that what it would deliver is delivered and the checks after it see it. Returns DATA's reply.
 */
async function dataFor(c: RawClient, m: string, to: string[]): Promise<string> {
  const data = await c.command("DATA");
  if (data.code === 354) {
    c.write(dataPayload(message({ Subject: `partial ${m}`, To: to.join(",\r\n ") }, `body ${m}\n`)));
    await c.reply();
  }
  return data.raw;
}

/** MAIL and RCPTs in one write (PIPELINING); the RCPT replies. */
async function envelope(c: RawClient, to: string[]): Promise<string[]> {
  c.write(`MAIL FROM:<alice@mailgator.test>\r\n${to.map((r) => `RCPT TO:<${r}>\r\n`).join("")}`);
  expect((await c.reply()).code).toBe(250);
  const replies: string[] = [];
  for (let i = 0; i < to.length; i++) replies.push((await c.reply()).raw);
  return replies;
}

async function deliver(c: RawClient, m: string, to: string[]): Promise<void> {
  expect((await c.command("DATA")).code).toBe(354);
  c.write(dataPayload(message({ Subject: `whole ${m}`, To: to.join(",\r\n ") }, `body ${m}\n`)));
  expect((await c.reply()).raw).toStartWith("250");
}

describe("recipients_per_message", () => {
  test("the 6th of 6 recipients over a quota of 5 refuses DATA; nothing delivered, nothing charged", async () => {
    // sends_per_hour = 1: the clean send after RSET goes only if the refused transaction did not take the send.
    const quoted = await startTestProxy({
      rules: `${CORP_ONLY_RULES}
[[quotas]]
name = "q"
recipients_per_message = ${QUOTA_RECIPIENTS}
sends_per_hour = 1
`,
    });
    try {
      const m = marker();
      const to = Array.from({ length: QUOTA_RECIPIENTS + 1 }, (_, i) => `q${i + 1}-${m}@corp.test`);
      const c = await loggedIn(quoted.port);
      const replies = await envelope(c, to);
      for (const r of replies.slice(0, QUOTA_RECIPIENTS)) expect(r).toStartWith("250 2.1.5");
      expect(replies[QUOTA_RECIPIENTS]).toStartWith("452 4.7.1");
      expect(replies[QUOTA_RECIPIENTS]).toContain(`recipients_per_message ${QUOTA_RECIPIENTS}`);
      const data = await dataFor(c, m, to);
      expect(data).toStartWith("554 5.5.3 Message refused: 1 recipient(s) refused at RCPT");
      expect(data).toContain(`more than ${QUOTA_RECIPIENTS} recipients`);
      expect(data).toContain(`send it again to at most ${QUOTA_RECIPIENTS} recipients`);

      // RSET starts clean: the first five, the same session, delivered to each.
      expect((await c.command("RSET")).code).toBe(250);
      const clean = to.slice(0, QUOTA_RECIPIENTS);
      for (const r of await envelope(c, clean)) expect(r).toStartWith("250");
      const m2 = marker();
      await deliver(c, m2, clean);
      await c.command("QUIT");
      const copies = await waitForSink(m2, QUOTA_RECIPIENTS);
      expect(copies.map((x) => x.recipient).sort()).toEqual(clean);

      // Every copy of these recipients is the clean message's; the 6th got nothing.
      await barrier(p.port);
      expect(sinkCopies(m).every((x) => x.text.includes(m2))).toBe(true);
      expect(sinkCopies(m)).toHaveLength(QUOTA_RECIPIENTS);
      expect(postfixLog()).not.toContain(to[QUOTA_RECIPIENTS]!);

      const rows = await quoted.rows();
      const refused = rows.find((r) => r.command === "DATA" && r.decision === "deny");
      expect(refused?.reason).toContain("recipients refused at RCPT");
      expect(refused?.reason).toContain(to[QUOTA_RECIPIENTS]!);
      // One send went upstream, the clean one.
      expect(rows.filter((r) => r.command === "DATA" && r.reason.startsWith("upstream replied 250"))).toHaveLength(1);
    } finally {
      await quoted.close();
    }
  });
});

describe("MAX_RECIPIENTS", () => {
  test(`${MAX_RECIPIENTS} recipients: delivered to each`, async () => {
    const m = marker();
    const to = Array.from({ length: MAX_RECIPIENTS }, (_, i) => `r${i}-${m}@corp.test`);
    const c = await loggedIn(p.port);
    for (const r of await envelope(c, to)) expect(r).toStartWith("250");
    await deliver(c, m, to);
    c.close();
    expect((await waitForSink(m, MAX_RECIPIENTS, 30_000)).map((x) => x.recipient).sort()).toEqual([...to].sort());
  });

  test(`one past it: RCPT number ${MAX_RECIPIENTS + 1} gets 452 4.5.3, DATA is refused, none delivered`, async () => {
    const m = marker();
    const to = Array.from({ length: MAX_RECIPIENTS + 1 }, (_, i) => `r${i}-${m}@corp.test`);
    const c = await loggedIn(p.port);
    const replies = await envelope(c, to);
    for (const r of replies.slice(0, MAX_RECIPIENTS)) expect(r).toStartWith("250");
    expect(replies[MAX_RECIPIENTS]).toStartWith("452 4.5.3 Too many recipients");
    const data = await dataFor(c, m, to);
    expect(data).toStartWith("554 5.5.3");
    expect(data).toContain(`send it again to at most ${MAX_RECIPIENTS} recipients`);
    c.close();
    await nothingReachedUpstream(p.port, m);
  });
});

describe("refused arguments", () => {
  const cases: [string, (m: string) => string, string][] = [
    ["a malformed address (553)", (m) => `RCPT TO:<two..dots-${m}@corp.test>`, "553 5.1.3"],
    ["a parameter (555)", (m) => `RCPT TO:<p-${m}@corp.test> NOTIFY=NEVER`, "555 5.5.4"],
    ["a syntax error (501)", (m) => `RCPT <s-${m}@corp.test>`, "501 5.5.4"],
  ];
  for (const [what, line, code] of cases)
    test(`${what} after an accepted recipient refuses DATA; nothing delivered`, async () => {
      const m = marker();
      const c = await loggedIn(p.port);
      expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
      expect((await c.command(`RCPT TO:<ok-${m}@corp.test>`)).code).toBe(250);
      expect((await c.command(line(m))).raw).toStartWith(code);
      const data = await dataFor(c, m, [`ok-${m}@corp.test`]);
      expect(data).toStartWith("554 5.5.4 Message refused: 1 recipient(s) refused at RCPT");
      c.close();
      await nothingReachedUpstream(p.port, m);
      const rows = await p.rows();
      const row = rows.find((r) => r.command === "DATA" && r.decision === "deny" && r.reason.includes(m));
      expect(row?.reason).toContain("refused before the message was read");
    });

  // It may have been an RCPT the client takes as refused: DATA must not go to the others.
  const unread: [string, (m: string) => string, string][] = [
    ["a line past MAX_COMMAND_LINE", (m) => `RCPT TO:<long-${m}@corp.test> ${"x".repeat(MAX_COMMAND_LINE)}`, "long"],
    ["RCPT with a tab for the space", (m) => `RCPT\tTO:<tab-${m}@corp.test>`, "unrecognized"],
  ];
  for (const [what, line, reason] of unread)
    test(`${what} (500) during a transaction refuses its DATA; nothing delivered`, async () => {
      const m = marker();
      const c = await loggedIn(p.port);
      expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
      expect((await c.command(`RCPT TO:<ok-${m}@corp.test>`)).code).toBe(250);
      expect((await c.command(line(m))).raw).toStartWith("500 5.5.2");
      const data = await dataFor(c, m, [`ok-${m}@corp.test`]);
      expect(data).toStartWith("554 5.5.4 Message refused: 1 recipient(s) refused at RCPT");
      c.close();
      await nothingReachedUpstream(p.port, m);
      const row = (await p.rows()).findLast((r) => r.command === "DATA" && r.decision === "deny");
      expect(row?.reason).toContain(reason);
    });

  test("a new MAIL after a refused RCPT starts clean: its message is delivered", async () => {
    const m = marker();
    const c = await loggedIn(p.port);
    expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
    expect((await c.command(`RCPT TO:<bad..${m}@corp.test>`)).code).toBe(553);
    expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
    expect((await c.command(`RCPT TO:<new-${m}@corp.test>`)).code).toBe(250);
    await deliver(c, m, [`new-${m}@corp.test`]);
    c.close();
    expect((await waitForSink(m, 1)).map((x) => x.recipient)).toEqual([`new-${m}@corp.test`]);
  });
});
