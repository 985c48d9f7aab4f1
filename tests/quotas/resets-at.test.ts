/**
 * What a refusal over a quota tells the agent (docs/quotas.md "Over a limit"): "resets at" is when the request would
 * fit again. A time cut to the second before the charge's millisecond would name a moment at which it is still
 * refused; with several limits over (sends_per_hour and sends_per_day, or two entries), the one named is the one
 * that frees last, since the request fits only once all do. With explicit times, and through the SMTP proxy against
 * Postfix.
 */
import { Database } from "bun:sqlite";
import { afterAll, beforeAll, expect, test } from "bun:test";
import { parseConfig } from "../../src/config/index.ts";
import { DAY_MS, HOUR_MS, MINUTE_MS, Quotas } from "../../src/quotas/index.ts";
import {
  dataPayload,
  loggedIn,
  marker,
  message,
  type RawClient,
  startTestProxy,
  type TestProxy,
  upstreams,
  waitForSink,
} from "../smtp/helpers.ts";

const T0 = Date.UTC(2026, 0, 1, 12, 0, 0);
const ONE = { sends: 1, recipients: 1, bytes: 10 } as const;

function quotas(toml: string): Quotas {
  const config = parseConfig(`[[rules]]\nname = "all"\naction = "allow"\n${toml}`, "/tmp/m.toml");
  return new Quotas(new Database(":memory:"), config.quotas);
}

/** The time a refusal's text names, in ms since the epoch. */
function resetsAt(text: string): number {
  const m = /resets at (\S+Z)/.exec(text);
  expect(m).not.toBeNull();
  return Date.parse(m![1]!);
}

test("a charge made at .500 of a second: the time told is the next whole second, when it fits", () => {
  const q = quotas(`[[quotas]]\nname = "h"\nsends_per_hour = 1\n`);
  expect(q.charge({ login: "a" }, ONE, T0 + 500).ok).toBe(true);
  const over = q.charge({ login: "a" }, ONE, T0 + 1000);
  expect(over.ok).toBe(false);
  if (over.ok) return;
  expect(over.exceeded?.resetsAt).toBe(T0 + 500 + HOUR_MS);
  expect(over.message).toBe('quota "h" exceeded: sends_per_hour 1 (used 1); resets at 2026-01-01T13:00:01Z');
  // At the second cut down (13:00:00Z) it is still refused; at the time told it fits.
  expect(q.charge({ login: "a" }, ONE, T0 + HOUR_MS).ok).toBe(false);
  expect(q.charge({ login: "a" }, ONE, resetsAt(over.message)).ok).toBe(true);
});

test("sends_per_hour and sends_per_day both over: the day is named, and the time told is when it fits", () => {
  const q = quotas(`[[quotas]]\nname = "d"\nsends_per_hour = 2\nsends_per_day = 2\n`);
  expect(q.charge({ login: "a" }, ONE, T0).ok).toBe(true);
  expect(q.charge({ login: "a" }, ONE, T0 + MINUTE_MS).ok).toBe(true);
  const over = q.charge({ login: "a" }, ONE, T0 + 2 * MINUTE_MS);
  expect(!over.ok && over.exceeded).toEqual({
    quota: "d",
    limit: "sends_per_day",
    max: 2,
    used: 2,
    resetsAt: T0 + DAY_MS,
  });
  // An hour on, the hour has room but the day has none: still refused, as the time told said.
  expect(q.charge({ login: "a" }, ONE, T0 + HOUR_MS).ok).toBe(false);
  expect(q.charge({ login: "a" }, ONE, T0 + DAY_MS).ok).toBe(true);
});

test("two entries over: the one that frees last is named; one that never fits wins over one that will", () => {
  const q = quotas(
    `[[quotas]]\nname = "hourly"\nsends_per_hour = 1\n` +
      `[[quotas]]\nname = "daily"\nsends_per_day = 1\nrecipients_per_day = 3\n`,
  );
  expect(q.charge({ agent: "bot" }, ONE, T0).ok).toBe(true);
  const over = q.charge({ agent: "bot" }, ONE, T0 + 1000);
  expect(!over.ok && over.exceeded).toMatchObject({ quota: "daily", limit: "sends_per_day", resetsAt: T0 + DAY_MS });
  expect(!over.ok && over.message).toContain("resets at 2026-01-02T12:00:00Z");
  // Four recipients: recipients_per_day 3 can never take it, whatever else frees before.
  const never = q.charge({ agent: "bot" }, { sends: 1, recipients: 4, bytes: 10 }, T0 + 2000);
  expect(!never.ok && never.exceeded).toMatchObject({ quota: "daily", limit: "recipients_per_day", resetsAt: null });
  expect(!never.ok && never.message).toContain("this request alone is over the limit");
});

// Through the SMTP proxy against Postfix: the 452 the agent gets names the day, and a time when a send fits.
let proxy: TestProxy;
let c: RawClient;

beforeAll(async () => {
  proxy = await startTestProxy({
    rules:
      `[[rules]]\nname = "all"\naction = "allow"\noperations = ["send"]\n\n` +
      `[[quotas]]\nname = "one"\nsends_per_hour = 1\nsends_per_day = 1\n`,
    upstreamTls: "none",
  });
  c = await loggedIn(proxy.port);
});

afterAll(async () => {
  await c.command("QUIT");
  await proxy.close();
});

async function send(m: string): Promise<{ code: number; text: string }> {
  const from = upstreams().users[0]!.user;
  expect((await c.command(`MAIL FROM:<${from}>`)).code).toBe(250);
  expect((await c.command(`RCPT TO:<r-${m}@outside.example>`)).code).toBe(250);
  expect((await c.command("DATA")).code).toBe(354);
  c.write(dataPayload(message({ From: from, Subject: `reset ${m}` }, `Hello ${m}\n`)));
  const r = await c.reply();
  return { code: r.code, text: r.lines.join(" ") };
}

test("SMTP: the second send's 452 names sends_per_day and a time at which it fits, not the hour's", async () => {
  const m = marker();
  expect((await send(m)).code).toBe(250);
  expect((await waitForSink(m, 1)).length).toBe(1);
  const over = await send(marker());
  expect(over.code).toBe(452);
  expect(over.text).toContain('Quota "one" exceeded: sends_per_day 1 (used 1)');
  const db = new Database(proxy.config.state.path, { readonly: true });
  const row = db.query("SELECT at FROM quota_charges").get() as { at: number };
  db.close();
  const told = resetsAt(over.text);
  expect(told).toBeGreaterThanOrEqual(row.at + DAY_MS);
  expect(told).toBeLessThan(row.at + DAY_MS + 1000);
});
