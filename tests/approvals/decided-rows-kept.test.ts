/**
 * How long the `approvals` table keeps a decided message's row (docs/approvals.md "Limits", docs/reliability.md
 * "Long runs"): a month, by the expiry check's clock. Every held message leaves a row, and an agent under an `ask`
 * rule can have 20 held at a time, each decided or expired in turn, for as long as `serve` runs; the expiry check
 * reads the table every minute. Moved with the clock the expiry check takes.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type ApprovalContext, expireDue } from "../../src/approvals/service.ts";
import { DECIDED_APPROVALS_KEPT_MS } from "../../src/approvals/store.ts";
import { ASK_RULE, askManagersConfig, heldMessage, openApprovalStores } from "./helpers.ts";

const dir = mkdtempSync(join(tmpdir(), "mg-decided-rows-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const HOUR = 3600_000;
const DAY = 24 * HOUR;

test("decided rows go a month after their decision; held and needs-check rows stay", async () => {
  const config = askManagersConfig(dir, join(dir, "audit.db"));
  const { state, store, audit } = openApprovalStores(join(dir, "state.db"), join(dir, "key"), join(dir, "audit.db"));
  const ctx: ApprovalContext = { config, store, audit, protocol: "smtp" };
  const held = heldMessage();
  const rule = ASK_RULE;
  const start = Date.now();
  try {
    // A day's worth of an agent's held messages: 20 at a time, each expiring after an hour, 24 times over.
    let clock = start;
    for (let hour = 0; hour < 24; hour++) {
      for (let i = 0; i < 20; i++) await store.hold(held, rule, clock + HOUR, clock);
      clock += HOUR;
      expect(expireDue(ctx, clock)).toHaveLength(20);
    }
    // One denied, one sent, one left to a person (needs-check), one still held for longer than a month.
    const denied = await store.hold(held, rule, clock + HOUR, clock);
    expect(store.deny(denied.id, "cli:test", "no", clock)).toBe("held");
    const sent = await store.hold(held, rule, clock + HOUR, clock);
    expect(store.claim(sent.id, "cli:test", clock)).toMatchObject({ ok: true });
    store.sent(sent.id, true, "250 2.0.0 Ok", clock);
    expect(store.row(sent.id)?.state).toBe("sent");
    const checked = await store.hold(held, rule, clock + HOUR, clock);
    expect(store.claim(checked.id, "cli:test", clock)).toMatchObject({ ok: true });
    expect(store.needsCheck(checked.id, "lost", clock)).toBe(true);
    const waiting = await store.hold(held, rule, clock + DECIDED_APPROVALS_KEPT_MS + 2 * DAY, clock);
    const count = () => (state.db.query("SELECT count(*) AS n FROM approvals").get() as { n: number }).n;
    expect(count()).toBe(24 * 20 + 4);

    // Within the month every row is kept, new messages held or not.
    const within = clock + DECIDED_APPROVALS_KEPT_MS - 2 * DAY;
    const early = await store.hold(held, rule, within + HOUR, within);
    expireDue(ctx, within);
    expect(count()).toBe(24 * 20 + 5);
    // A month after the last decisions, a new message is held: the decided rows of a month before go; the one left
    // to a person and those still held stay.
    const later = clock + DECIDED_APPROVALS_KEPT_MS + DAY;
    const next = await store.hold(held, rule, later + HOUR, later);
    expireDue(ctx, later);
    expect(
      store
        .list()
        .map((r) => `${r.id} ${r.state}`)
        .sort(),
    ).toEqual([`${checked.id} needs-check`, `${waiting.id} held`, `${early.id} expired`, `${next.id} held`].sort());
    // The one held past the month still expires at its time.
    const last = clock + DECIDED_APPROVALS_KEPT_MS + 2 * DAY;
    expect(
      expireDue(ctx, last)
        .map((r) => r.id)
        .sort(),
    ).toEqual([next.id, waiting.id].sort());
    expect(store.row(waiting.id)?.state).toBe("expired");
  } finally {
    await audit.close();
    state.close();
  }
}, 60_000);

test("a clock far ahead for a moment does not take rows decided by the right clock", async () => {
  const config = askManagersConfig(dir, join(dir, "audit2.db"));
  const { state, store, audit } = openApprovalStores(join(dir, "state2.db"), join(dir, "key2"), join(dir, "audit2.db"));
  const ctx: ApprovalContext = { config, store, audit, protocol: "smtp" };
  const held = heldMessage();
  const now = Date.now();
  try {
    const row = await store.hold(held, ASK_RULE, now + HOUR, now);
    expect(store.deny(row.id, "cli:test", "no", now)).toBe("held");
    // A clock a year ahead: the newest decision is a moment old by the table, so nothing goes.
    expireDue(ctx, now + 365 * DAY);
    expect(store.row(row.id)?.state).toBe("denied");
  } finally {
    await audit.close();
    state.close();
  }
});

test("a clock far ahead for a check that expires a held message takes no row decided before", async () => {
  const config = askManagersConfig(dir, join(dir, "audit3.db"));
  const { state, store, audit } = openApprovalStores(join(dir, "state3.db"), join(dir, "key3"), join(dir, "audit3.db"));
  const ctx: ApprovalContext = { config, store, audit, protocol: "smtp" };
  const held = heldMessage();
  const rule = ASK_RULE;
  const now = Date.now();
  try {
    const denied = await store.hold(held, rule, now + HOUR, now);
    expect(store.deny(denied.id, "cli:test", "no", now)).toBe("held");
    // A message still held when the clock jumps: the check that runs on the wrong clock expires it, a change made
    // at that clock; the month must still be counted from the newest change before the check.
    const waiting = await store.hold(held, rule, now + HOUR, now);
    expect(expireDue(ctx, now + 365 * DAY).map((r) => r.id)).toEqual([waiting.id]);
    expect(store.row(denied.id)?.state).toBe("denied");
  } finally {
    await audit.close();
    state.close();
  }
});
