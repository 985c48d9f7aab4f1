/**
 * A held message's quota charge stays whatever becomes of it (docs/quotas.md "What is counted"): denied, expired or
 * sent once approved, it counts once, from when it was held. Through the SMTP proxy against Postfix.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { type ApprovalContext, approve, deny, expireDue } from "../../src/approvals/service.ts";
import {
  dataPayload,
  loggedIn,
  marker,
  message,
  type RawClient,
  startTestProxy,
  type TestProxy,
  waitForSink,
} from "../smtp/helpers.ts";

const RULES = `
[approvals]
base_url = "http://127.0.0.1:1"

[approvals.groups.managers]
recipients = ["boss@corp.test"]

[[rules]]
name = "everything needs a manager"
action = "ask"
operations = ["send"]
ask_groups = ["managers"]

[[quotas]]
name = "three"
sends_per_hour = 3
`;

let proxy: TestProxy;
let ctx: ApprovalContext;
let c: RawClient;

beforeAll(async () => {
  proxy = await startTestProxy({ rules: RULES, approvals: true, upstreamTls: "none" });
  ctx = { config: proxy.config, store: proxy.approvals!, audit: proxy.audit, protocol: "cli" };
  c = await loggedIn(proxy.port);
});

afterAll(async () => {
  await c.command("QUIT");
  await proxy.close();
});

async function send(m: string): Promise<{ code: number; text: string; id: string | null }> {
  expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
  expect((await c.command(`RCPT TO:<q-${m}@outside.example>`)).code).toBe(250);
  expect((await c.command("DATA")).code).toBe(354);
  c.write(dataPayload(message({ From: "alice@mailgator.test", Subject: `charge ${m}` }, `Hello ${m}\n`)));
  const r = await c.reply();
  const text = r.lines.join(" ");
  return { code: r.code, text, id: /Held for approval as ([0-9a-f]{32})/.exec(text)?.[1] ?? null };
}

test("denied, expired and approved held messages each count once, from their hold", async () => {
  const denied = await send(marker());
  const expired = await send(marker());
  expect([denied.code, expired.code]).toEqual([250, 250]);
  expect((await deny(ctx, denied.id!, "cli:review", null)).outcome).toBe("denied");
  // Expired by a check run as if its time had come (a day on): it is not charged back.
  expect(expireDue(ctx, Date.now() + 25 * 60 * 60 * 1000).map((r) => r.id)).toEqual([expired.id!]);

  const m = marker();
  const third = await send(m);
  expect(third.code).toBe(250);
  const over = await send(marker());
  expect(over.code).toBe(452);
  expect(over.text).toContain("sends_per_hour 3 (used 3)");

  // Approving sends it without a second charge.
  expect((await approve(ctx, third.id!, "cli:review")).outcome).toBe("sent");
  expect((await waitForSink(m, 1)).length).toBe(1);
  const still = await send(marker());
  expect(still.code).toBe(452);
  expect(still.text).toContain("sends_per_hour 3 (used 3)");
});
