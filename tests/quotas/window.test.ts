/** Sliding windows with explicit times (docs/quotas.md "Windows"), and the charge on a state database in memory. */
import { Database } from "bun:sqlite";
import { expect, test } from "bun:test";
import { parseConfig } from "../../src/config/index.ts";
import { type Charge, DAY_MS, fitsAt, HOUR_MS, MINUTE_MS, Quotas, quotaUse, used } from "../../src/quotas/index.ts";

const T0 = Date.UTC(2026, 0, 1, 12, 0, 0);

function send(at: number, recipients = 1, bytes = 100): Charge {
  return { at, sends: 1, recipients, bytes, reads: 0 };
}

test("a charge counts while it is less than a window old, not at the window's end", () => {
  const charges = [send(T0)];
  expect(used(charges, "sends_per_hour", T0 + HOUR_MS - 1)).toBe(1);
  expect(used(charges, "sends_per_hour", T0 + HOUR_MS)).toBe(0);
  expect(used(charges, "sends_per_day", T0 + HOUR_MS)).toBe(1);
  // A charge dated after now (the clock stepped back) still counts.
  expect(used(charges, "sends_per_hour", T0 - 5000)).toBe(1);
});

test("fitsAt: the time enough counted charges leave the window; null when the request alone is over", () => {
  const charges = [send(T0, 3), send(T0 + 10_000, 4), send(T0 + 20_000, 1)];
  // recipients_per_day 8, used 8: one more fits when the first charge (3) leaves the day.
  expect(fitsAt(charges, "recipients_per_day", 8, 1, T0 + 30_000)).toBe(T0 + 24 * HOUR_MS);
  // Five more need the first two gone.
  expect(fitsAt(charges, "recipients_per_day", 8, 5, T0 + 30_000)).toBe(T0 + 10_000 + 24 * HOUR_MS);
  expect(fitsAt(charges, "recipients_per_day", 8, 9, T0 + 30_000)).toBeNull();
  expect(fitsAt([], "recipients_per_day", 8, 8, T0)).toBe(T0);
});

function quotas(toml: string): Quotas {
  const config = parseConfig(`[[rules]]\nname = "all"\naction = "allow"\n${toml}`, "/tmp/m.toml");
  return new Quotas(new Database(":memory:"), config.quotas);
}

test("sends_per_hour slides: N pass, the (N+1)th is refused until the oldest charge leaves the hour", () => {
  const q = quotas(`[[quotas]]\nname = "h"\nsends_per_hour = 2\n`);
  expect(q.charge({ login: "a" }, { sends: 1, recipients: 1, bytes: 10 }, T0).ok).toBe(true);
  expect(q.charge({ login: "a" }, { sends: 1, recipients: 1, bytes: 10 }, T0 + MINUTE_MS).ok).toBe(true);
  const over = q.charge({ login: "a" }, { sends: 1, recipients: 1, bytes: 10 }, T0 + 2 * MINUTE_MS);
  expect(over.ok).toBe(false);
  if (over.ok) return;
  expect(over.exceeded).toEqual({ quota: "h", limit: "sends_per_hour", max: 2, used: 2, resetsAt: T0 + HOUR_MS });
  expect(over.message).toBe('quota "h" exceeded: sends_per_hour 2 (used 2); resets at 2026-01-01T13:00:00Z');
  // A refused send is not charged; another client has its own count.
  expect(q.charge({ login: "b" }, { sends: 1, recipients: 1, bytes: 10 }, T0 + 2 * MINUTE_MS).ok).toBe(true);
  expect(q.charge({ login: "a" }, { sends: 1, recipients: 1, bytes: 10 }, T0 + HOUR_MS - 1).ok).toBe(false);
  expect(q.charge({ login: "a" }, { sends: 1, recipients: 1, bytes: 10 }, T0 + HOUR_MS).ok).toBe(true);
});

test("a row goes once a day old by the clock and by the newest stored charge: at the edge, not a ms before", () => {
  const db = new Database(":memory:");
  const config = parseConfig(
    `[[rules]]\nname = "all"\naction = "allow"\n[[quotas]]\nname = "d"\nsends_per_day = 9\n`,
    "/tmp/m.toml",
  );
  const q = new Quotas(db, config.quotas);
  const one = { sends: 1, recipients: 1, bytes: 10 };
  const stored = (): number[] =>
    (db.query("SELECT at FROM quota_charges ORDER BY at").all() as { at: number }[]).map((r) => r.at);
  for (const at of [T0, T0 + 1]) expect(q.charge({ agent: "bot" }, one, at).ok).toBe(true);
  // A day after T0 by the clock, but the newest stored charge is T0 + 1: nothing goes.
  expect(q.charge({ agent: "bot" }, one, T0 + DAY_MS).ok).toBe(true);
  expect(stored()).toEqual([T0, T0 + 1, T0 + DAY_MS]);
  // Now the newest stored is T0 + DAY_MS: T0 is exactly a day before it and goes, T0 + 1 stays.
  expect(q.charge({ agent: "bot" }, one, T0 + DAY_MS + 5 * MINUTE_MS).ok).toBe(true);
  expect(stored()).toEqual([T0 + 1, T0 + DAY_MS, T0 + DAY_MS + 5 * MINUTE_MS]);
});

test("a row of reads goes once a minute old (its only window): fetches at the limit keep a minute of rows", () => {
  const db = new Database(":memory:");
  const config = parseConfig(
    `[[rules]]\nname = "all"\naction = "allow"\n[[quotas]]\nname = "r"\nreads_per_minute = 120\n` +
      "sends_per_day = 5\n",
    "/tmp/m.toml",
  );
  const q = new Quotas(db, config.quotas);
  const stored = (): number[] =>
    (db.query("SELECT at FROM quota_charges ORDER BY at").all() as { at: number }[]).map((r) => r.at);
  // A send's row stays for the day; reads' rows by the same rule as a day's (the older of the clock and the newest
  // stored charge), a minute: exactly a minute before it goes, a ms later stays.
  expect(q.charge({ agent: "bot" }, { sends: 1, recipients: 1, bytes: 10 }, T0).ok).toBe(true);
  for (const at of [T0 + 1, T0 + 2]) expect(q.chargeReads({ agent: "bot" }, 1, at).ok).toBe(true);
  expect(q.chargeReads({ agent: "bot" }, 1, T0 + 1 + MINUTE_MS).ok).toBe(true);
  expect(stored()).toEqual([T0, T0 + 1, T0 + 2, T0 + 1 + MINUTE_MS]);
  expect(q.chargeReads({ agent: "bot" }, 1, T0 + 1 + MINUTE_MS).ok).toBe(true);
  expect(stored()).toEqual([T0, T0 + 2, T0 + 1 + MINUTE_MS, T0 + 1 + MINUTE_MS]);
  // An hour of one-message fetches at the limit (one every half second): each charge reads and keeps about a
  // minute of them, not the hour (a day of them would be 172,800 rows read at each fetch and send).
  for (let at = T0 + HOUR_MS; at < T0 + 2 * HOUR_MS; at += 500) {
    expect(q.chargeReads({ agent: "bot" }, 1, at).ok).toBe(true);
  }
  // The send, the minute's 120 and the one made a minute before the newest stored (pruned at the next charge).
  expect(stored().length).toBe(122);
  expect(stored()[0]).toBe(T0);
  // The send still counts in its day, the reads of the last minute in theirs.
  const use = quotaUse(db, config.quotas, { agent: "bot" }, T0 + 2 * HOUR_MS - 500)[0]!.limits;
  expect(use.map((l) => [l.limit, l.used])).toEqual([
    ["sends_per_day", 1],
    ["reads_per_minute", 120],
  ]);
});

test("a clock stepped more than a day ahead for one request and back does not give a client a fresh day", () => {
  const db = new Database(":memory:");
  const config = parseConfig(
    `[[rules]]\nname = "all"\naction = "allow"\n[[quotas]]\nname = "d"\nsends_per_day = 2\n`,
    "/tmp/m.toml",
  );
  const q = new Quotas(db, config.quotas);
  const one = { sends: 1, recipients: 1, bytes: 10 };
  expect(q.charge({ agent: "bot" }, one, T0).ok).toBe(true);
  expect(q.charge({ agent: "bot" }, one, T0 + MINUTE_MS).ok).toBe(true);
  expect(q.charge({ agent: "bot" }, one, T0 + 2 * MINUTE_MS).ok).toBe(false);
  // The clock is a day and ten minutes ahead for a moment, and a fetch is charged (nothing counts reads here, so it
  // is not recorded; it prunes all the same). The day's sends stay.
  expect(q.chargeReads({ agent: "bot" }, 1, T0 + DAY_MS + 10 * MINUTE_MS).ok).toBe(true);
  expect(db.query("SELECT at FROM quota_charges ORDER BY at").all()).toEqual([{ at: T0 }, { at: T0 + MINUTE_MS }]);
  // The clock is right again, three minutes after T0: the day's two sends still count.
  const back = q.charge({ agent: "bot" }, one, T0 + 3 * MINUTE_MS);
  expect(back.ok).toBe(false);
  expect(!back.ok && back.exceeded).toMatchObject({ limit: "sends_per_day", used: 2 });
});

test("every matching entry applies, the tightest first; agents lists select clients", () => {
  const q = quotas(
    `[[quotas]]\nname = "all"\nrecipients_per_day = 10\nbytes_per_day = 1000\n` +
      `[[quotas]]\nname = "bot"\nagents = ["bot"]\nrecipients_per_day = 3\nrecipients_per_message = 2\n`,
  );
  expect(q.checkRecipients({ login: "bot" }, 2)).toBeNull();
  expect(q.checkRecipients({ login: "bot" }, 3)?.limit).toBe("recipients_per_message");
  expect(q.checkRecipients({ login: "other" }, 3)).toBeNull();
  expect(q.charge({ login: "bot" }, { sends: 1, recipients: 2, bytes: 10 }, T0).ok).toBe(true);
  const r = q.charge({ login: "bot" }, { sends: 1, recipients: 2, bytes: 10 }, T0 + 1);
  expect(!r.ok && r.exceeded?.quota).toBe("bot");
  expect(q.charge({ login: "other" }, { sends: 1, recipients: 1, bytes: 1000 }, T0).ok).toBe(true);
  const b = q.charge({ login: "other" }, { sends: 1, recipients: 1, bytes: 1 }, T0 + 1);
  expect(!b.ok && b.exceeded?.limit).toBe("bytes_per_day");
});

test("a pass-through login is one client in any case, in its window and its agents entries; agents are exact", () => {
  const q = quotas(
    `[[quotas]]\nname = "day"\nsends_per_day = 1\n` +
      `[[quotas]]\nname = "ann"\nagents = ["Ann@Corp.test"]\nrecipients_per_message = 1\n`,
  );
  const one = { sends: 1, recipients: 1, bytes: 10 };
  expect(q.charge({ login: "ann@corp.test" }, one, T0).ok).toBe(true);
  const again = q.charge({ login: "ANN@CORP.TEST" }, one, T0 + 1);
  expect(!again.ok && again.exceeded?.quota).toBe("day");
  expect(q.checkRecipients({ login: "aNN@corp.TEST" }, 2)?.quota).toBe("ann");
  expect(q.checkRecipients({ login: "bob@corp.test" }, 2)).toBeNull();
  // Vault agents are their configured names, compared exactly, as at login.
  expect(q.checkRecipients({ agent: "ann@corp.test" }, 2)).toBeNull();
  expect(q.checkRecipients({ agent: "Ann@Corp.test" }, 2)?.quota).toBe("ann");
  expect(q.charge({ agent: "Bot" }, one, T0).ok).toBe(true);
  expect(q.charge({ agent: "bot" }, one, T0).ok).toBe(true);
  expect(q.charge({ agent: "bot" }, one, T0 + 1).ok).toBe(false);
});

test("reads_per_minute counts messages, and the use explain shows comes from the same table", () => {
  const db = new Database(":memory:");
  const config = parseConfig(`[[quotas]]\nname = "r"\nreads_per_minute = 3\n`, "/tmp/m.toml");
  const q = new Quotas(db, config.quotas);
  expect(q.chargeReads({ login: "a" }, 2, T0).ok).toBe(true);
  expect(q.chargeReads({ login: "a" }, 2, T0 + 1000).ok).toBe(false);
  expect(q.chargeReads({ login: "a" }, 1, T0 + 1000).ok).toBe(true);
  expect(quotaUse(db, config.quotas, { login: "a" }, T0 + 2000)).toEqual([
    { quota: "r", agents: null, limits: [{ limit: "reads_per_minute", max: 3, used: 3, windowSeconds: 60 }] },
  ]);
  expect(quotaUse(db, config.quotas, { login: "a" }, T0 + MINUTE_MS)[0]!.limits[0]!.used).toBe(1);
  expect(q.chargeReads({ login: "a" }, 2, T0 + MINUTE_MS).ok).toBe(true);
});

test("a state database that cannot be written refuses (fail closed)", () => {
  const db = new Database(":memory:");
  const config = parseConfig(`[[quotas]]\nname = "h"\nsends_per_day = 5\n`, "/tmp/m.toml");
  const q = new Quotas(db, config.quotas);
  db.run("DROP TABLE quota_charges");
  const r = q.charge({ login: "a" }, { sends: 1, recipients: 1, bytes: 1 }, T0);
  expect(r.ok).toBe(false);
  expect(!r.ok && r.exceeded).toBeNull();
});

test("config: no limit, duplicate names, an empty or unknown agents list are errors at file:line:col", () => {
  const base = `[[rules]]\nname = "all"\naction = "allow"\n`;
  const err = (toml: string) => {
    try {
      parseConfig(base + toml, "/tmp/m.toml");
    } catch (e) {
      return (e as Error).message;
    }
    return "no error";
  };
  expect(err(`[[quotas]]\nname = "q"\n`)).toContain('/tmp/m.toml:5:8: quotas[0].name: quota "q" sets no limit');
  expect(err(`[[quotas]]\nname = "q"\nsends_per_day = 0\n`)).toContain("/tmp/m.toml:6:17: quotas[0].sends_per_day");
  expect(err(`[[quotas]]\nname = "q"\nsends_per_day = 1\n[[quotas]]\nname = "q"\nsends_per_day = 2\n`)).toContain(
    'quotas[1].name: duplicate quota name "q"',
  );
  expect(err(`[[quotas]]\nname = "q"\nagents = []\nsends_per_day = 1\n`)).toContain("quotas[0].agents: an empty list");
  expect(err(`[[quotas]]\nname = "q"\nhourly = 1\n`)).toContain('unknown key "hourly"');
});
