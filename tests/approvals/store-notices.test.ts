/**
 * The record of approvers' notices in the state database (docs/approvals.md "Notices"): an existing database gains
 * it when opened, which notices the upstream accepted is kept per message under an HMAC of the address, and it goes
 * with the sealed record once the message is decided.
 */

import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildPreview } from "../../src/approvals/preview.ts";
import { ApprovalStore, type HeldMessage } from "../../src/approvals/store.ts";
import { SealedStore } from "../../src/state/store.ts";

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function open(): { dir: string; state: SealedStore } {
  const dir = mkdtempSync(join(tmpdir(), "mg-store-notices-"));
  dirs.push(dir);
  const state = SealedStore.open(join(dir, "state.db"), { secretsFile: join(dir, "key"), env: {}, create: true })!;
  return { dir, state };
}

const MESSAGE = Buffer.from("Subject: hello\r\n\r\nHi\r\n");
const HELD: HeldMessage = {
  envelope: { from: "a@x.test", recipients: ["b@y.test"], eightBit: false },
  message: MESSAGE,
  account: "mail",
  credentials: null,
  agent: "bot",
  preview: buildPreview("a@x.test", ["b@y.test"], MESSAGE, false),
};
const RULE = { name: "hold", index: 0, groups: ["m"] };

test("a database made before notices were recorded gains the column and the table; its held rows are owed", () => {
  const { state } = open();
  try {
    // The approvals table as it was: no `notified` column.
    state.db.run(`CREATE TABLE approvals (
      id TEXT PRIMARY KEY, state TEXT NOT NULL, created INTEGER NOT NULL, expires INTEGER NOT NULL,
      sha256 TEXT NOT NULL, rule TEXT NOT NULL, rule_index INTEGER, groups TEXT NOT NULL, agent TEXT,
      decided_by TEXT, reason TEXT, upstream_reply TEXT, token_used INTEGER NOT NULL DEFAULT 0,
      updated INTEGER NOT NULL)`);
    const now = Date.now();
    state.db
      .query(
        "INSERT INTO approvals (id, state, created, expires, sha256, rule, rule_index, groups, agent, updated) " +
          "VALUES (?, ?, ?, ?, 'x', 'hold', 0, '[\"m\"]', NULL, ?)",
      )
      .run("a".repeat(32), "held", now, now + 60_000, now);
    state.db
      .query(
        "INSERT INTO approvals (id, state, created, expires, sha256, rule, rule_index, groups, agent, updated) " +
          "VALUES (?, ?, ?, ?, 'x', 'hold', 0, '[\"m\"]', NULL, ?)",
      )
      .run("b".repeat(32), "denied", now, now + 60_000, now);
    const store = new ApprovalStore(state);
    const columns = (state.db.query("PRAGMA table_info(approvals)").all() as { name: string }[]).map((c) => c.name);
    expect(columns).toContain("notified");
    expect(store.row("a".repeat(32))?.notified).toBe(false);
    expect(store.unnotified().map((r) => r.id)).toEqual(["a".repeat(32)]);
    // Opening it again (a second process, the command line) changes nothing and does not fail.
    const again = new ApprovalStore(state);
    expect(again.unnotified().map((r) => r.id)).toEqual(["a".repeat(32)]);
    expect(state.db.query("SELECT name FROM sqlite_master WHERE name = 'approval_notices'").get()).not.toBeNull();
  } finally {
    state.close();
  }
});

test("accepted notices are kept per approver, not in clear, and wiped with the message", async () => {
  const { dir, state } = open();
  try {
    const store = new ApprovalStore(state);
    const now = Date.now();
    const row = await store.hold(HELD, RULE, now + 60_000, now);
    const expiring = await store.hold(HELD, RULE, now + 1_000, now);
    expect(row.notified).toBe(false);
    expect(
      store
        .unnotified(now)
        .map((r) => r.id)
        .sort(),
    ).toEqual([row.id, expiring.id].sort());
    // Past its expiry a message owes nothing, even before the expiry check ran.
    expect(store.unnotified(now + 1_000).map((r) => r.id)).toEqual([row.id]);

    store.markNoticeSent(row.id, "Boss@Corp.test");
    expect(store.noticeSent(row.id, "boss@corp.test")).toBe(true); // addresses compare in lower case
    expect(store.noticeSent(row.id, "other@corp.test")).toBe(false);
    expect(store.noticeSent(expiring.id, "boss@corp.test")).toBe(false); // per message
    store.markNotified(row.id);
    expect(store.row(row.id)?.notified).toBe(true);
    expect(store.unnotified(now).map((r) => r.id)).toEqual([expiring.id]);

    state.db.run("PRAGMA wal_checkpoint(TRUNCATE)");
    for (const name of readdirSync(dir).filter((f) => f.startsWith("state.db")))
      expect(readFileSync(join(dir, name), "latin1").toLowerCase()).not.toContain("boss@corp.test");

    const count = (id: string) =>
      (state.db.query("SELECT count(*) AS n FROM approval_notices WHERE id = ?").get(id) as { n: number }).n;
    expect(count(row.id)).toBe(1);
    expect(store.deny(row.id, "tester", null)).toBe("held");
    expect(count(row.id)).toBe(0);
    // Once decided, nothing more is recorded for it.
    store.markNoticeSent(row.id, "boss@corp.test");
    expect(count(row.id)).toBe(0);
    store.markNoticeSent(expiring.id, "boss@corp.test");
    expect(store.expireDue(now + 1_000).map((r) => r.id)).toEqual([expiring.id]);
    expect(count(expiring.id)).toBe(0);
  } finally {
    state.close();
  }
});

test("heldCount counts an agent's held and sending messages, a login's spellings together, not decided", async () => {
  const { state } = open();
  try {
    const store = new ApprovalStore(state);
    const now = Date.now();
    const first = await store.hold({ ...HELD, agent: "Me@Corp.test" }, RULE, now + 60_000, now, "c".repeat(32));
    await store.hold({ ...HELD, agent: "me@corp.test" }, RULE, now + 60_000, now, "d".repeat(32));
    await store.hold({ ...HELD, agent: "other@corp.test" }, RULE, now + 60_000, now, "e".repeat(32));
    expect(store.heldCount("ME@corp.TEST")).toBe(2);
    expect(store.heldCount(null)).toBe(0);
    store.deny(first.id, "tester", null);
    expect(store.heldCount("me@corp.test")).toBe(1);
  } finally {
    state.close();
  }
});

test("reservePlace counts places taken beside the stored messages, folding case as quotas do", async () => {
  const { state } = open();
  try {
    const store = new ApprovalStore(state);
    const now = Date.now();
    await store.hold({ ...HELD, agent: "Me@Corp.test" }, RULE, now + 60_000, now, "f".repeat(32));
    const place = store.reservePlace("ME@corp.test", 3);
    expect(place).not.toBeNull();
    expect(store.reservePlace("me@corp.test", 2)).toBeNull();
    // Folded as quotas and max_sessions_per_agent fold a login (loginKey, docs/quotas.md "Who is counted"), every
    // letter's case, not only ASCII's: a login spelled with another case of Ö is the same login here too.
    await store.hold({ ...HELD, agent: "Jörg@corp.test" }, RULE, now + 60_000, now, "a".repeat(32));
    expect(store.heldCount("JÖRG@corp.test")).toBe(1);
    const jorg = store.reservePlace("jörg@corp.test", 2);
    expect(jorg).not.toBeNull();
    expect(store.reservePlace("JÖRG@corp.test", 2)).toBeNull();
    jorg!();
    place!();
    place!(); // given back once only
    expect(store.reservePlace("me@corp.test", 2)).not.toBeNull();
    expect(store.reservePlace("me@corp.test", 2)).toBeNull();
  } finally {
    state.close();
  }
});

test("links are withdrawn when a mailbox agents read joins the recorded set, not at the first record", async () => {
  const { state } = open();
  try {
    const store = new ApprovalStore(state);
    const now = Date.now();
    const held = await store.hold(HELD, RULE, now + 60_000, now);
    const decided = await store.hold(HELD, RULE, now + 60_000, now);
    expect(store.deny(decided.id, "boss", null, now)).toBe("held");
    expect(store.row(decided.id)!.state).toBe("denied");
    const link = store.token(store.row(held.id)!);
    // The first set recorded has nothing to be compared with; the same set again, or a smaller one, withdraws nothing.
    expect(store.withdrawLinksForNewReaders(["bot@corp.test"])).toEqual([]);
    expect(store.withdrawLinksForNewReaders(["bot@corp.test"])).toEqual([]);
    expect(store.withdrawLinksForNewReaders([])).toEqual([]);
    expect(store.tokenValid(store.row(held.id)!, link)).toBe(true);
    // A mailbox not in the set recorded last (the shrunk one): every held message's link, and only those.
    const withdrawn = store.withdrawLinksForNewReaders(["bot@corp.test"]);
    expect(withdrawn.map((r) => [r.id, r.linkGeneration])).toEqual([[held.id, 1]]);
    expect(store.row(decided.id)!.linkGeneration).toBe(0);
    const row = store.row(held.id)!;
    expect(store.tokenValid(row, link)).toBe(false);
    expect(store.tokenWithdrawn(row, link)).toBe(true);
    const next = store.token(row);
    expect(next).not.toBe(link);
    expect(store.tokenValid(row, next)).toBe(true);
    expect(store.tokenWithdrawn(row, next)).toBe(false);
    expect(store.tokenWithdrawn(row, "x".repeat(next.length))).toBe(false);
    // Recorded: the same set again withdraws nothing more.
    expect(store.withdrawLinksForNewReaders(["bot@corp.test"])).toEqual([]);
    // The addresses are not kept in clear.
    const kept = state.db.query("SELECT reader FROM approval_link_readers").all() as { reader: string }[];
    expect(kept.map((r) => r.reader)).not.toContain("bot@corp.test");
    expect(kept).toHaveLength(2);
  } finally {
    state.close();
  }
});
