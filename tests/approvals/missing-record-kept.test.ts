/**
 * A message whose row says `held` but whose sealed `held` record is gone (deleted by hand, a partial restore) or does
 * not open (docs/approvals.md "Holding"): its parts are not taken for a store's leftovers (no `DATA` row saying it was
 * "not held"), it reads as unreadable rather than as wiped, approving it says it stays held, and the notice to its
 * approvers, which cannot be built, is an `APPROVAL NOTIFIED` error row rather than nothing (docs/approvals.md
 * "Notices").
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Notifier } from "../../src/approvals/notify.ts";
import { buildPreview } from "../../src/approvals/preview.ts";
import { type ApprovalContext, approve, expireDue, recover } from "../../src/approvals/service.ts";
import { ApprovalStore, HELD_PART_KIND, type HeldMessage, ORPHAN_PART_AGE_MS } from "../../src/approvals/store.ts";
import { AuditLog } from "../../src/audit/index.ts";
import { parseConfig } from "../../src/config/index.ts";
import { SealedRecordError, SealedStore } from "../../src/state/store.ts";

const dir = mkdtempSync(join(tmpdir(), "mg-missing-record-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function setup(name: string, damage: "delete" | "alter") {
  const config = parseConfig(
    `[smtp]\nlisten_addr = "127.0.0.1:2525"\nupstream_addr = "127.0.0.1:9"\nupstream_tls = "none"\n` +
      `[approvals]\nbase_url = "http://admin.test"\nnotify_account = "notices"\n` +
      `[accounts.notices]\nusername = "notices@corp.test"\npassword = "p"\n` +
      `[approvals.groups.managers]\nrecipients = ["boss@corp.test"]\n` +
      `[[rules]]\nname = "ask"\naction = "ask"\noperations = ["send"]\nask_groups = ["managers"]\n` +
      `[audit]\npath = "${join(dir, `${name}-audit.db`)}"\n`,
    join(dir, "mailgator.toml"),
  );
  const state = SealedStore.open(join(dir, `${name}-state.db`), {
    secretsFile: join(dir, "key"),
    env: {},
    create: true,
  })!;
  const store = new ApprovalStore(state);
  const audit = AuditLog.open(join(dir, `${name}-audit.db`), { batchMs: 5, sync: "normal" });
  const ctx: ApprovalContext = { config, store, audit, protocol: "smtp" };
  const message = Buffer.from("Subject: hi\r\n\r\nhello\r\n");
  const held: HeldMessage = {
    envelope: { from: "a@corp.test", recipients: ["b@out.test"], eightBit: false },
    message,
    account: null,
    credentials: { username: "a@corp.test", password: "pw" },
    agent: null,
    preview: buildPreview("a@corp.test", ["b@out.test"], message, false),
  };
  const row = await store.hold(held, { name: "ask", index: 0, groups: ["managers"] }, Date.now() + 3_600_000);
  if (damage === "delete") state.db.run("DELETE FROM sealed WHERE kind = 'held' AND id = ?", [row.id]);
  else state.db.run("UPDATE sealed SET box = zeroblob(length(box)) WHERE kind = 'held' AND id = ?", [row.id]);
  // Its parts as old as a dead store's leftovers would be.
  state.db.run("UPDATE sealed SET updated = ? WHERE kind = ?", [
    Date.now() - ORPHAN_PART_AGE_MS - 1000,
    HELD_PART_KIND,
  ]);
  const parts = () =>
    (state.db.query("SELECT count(*) AS n FROM sealed WHERE kind = ?").get(HELD_PART_KIND) as { n: number }).n;
  const rows = async () => {
    await audit.flush();
    return audit.query({ order: "asc" }).map((r) => ({ command: r.command, decision: r.decision, reason: r.reason }));
  };
  return { ctx, store, state, row, parts, rows, close: async () => (await audit.close(), state.close()) };
}

test("the parts of a held message whose record is missing are not removed as a store's leftovers", async () => {
  const { ctx, store, row, parts, rows, close } = await setup("orphans", "delete");
  try {
    expect(parts()).toBe(1);
    expect(store.removeOrphanParts()).toEqual([]);
    recover(ctx);
    expireDue(ctx);
    expect(parts()).toBe(1);
    expect(store.row(row.id)!.state).toBe("held");
    // No row says it was "not held": it is, and its row says so.
    expect((await rows()).filter((r) => r.command === "DATA")).toEqual([]);
  } finally {
    await close();
  }
});

test("a held message whose record is missing reads as unreadable, not wiped; approving it keeps it held", async () => {
  const { ctx, store, row, rows, close } = await setup("read", "delete");
  try {
    const { held, unreadable } = store.readDetails(row.id);
    expect(held).toBeNull();
    expect(unreadable).toBeInstanceOf(SealedRecordError);
    expect(unreadable!.message).toContain("missing");
    expect(store.readMessage(row.id)).rejects.toBeInstanceOf(SealedRecordError);
    const result = await approve(ctx, row.id, "cli:review");
    expect(result.outcome).toBe("not-sent");
    expect(store.row(row.id)!.state).toBe("held");
    const approveRows = (await rows()).filter((r) => r.command === "APPROVE");
    expect(approveRows).toHaveLength(1);
    expect(approveRows[0]!.decision).toBe("error");
    expect(approveRows[0]!.reason).toContain("not sent, still held: the stored message cannot be read");
  } finally {
    await close();
  }
});

for (const damage of ["delete", "alter"] as const) {
  const what = damage === "delete" ? "missing" : "altered";
  test(`the approvers' notice of a held message whose record is ${what} is an error row`, async () => {
    const { ctx, store, row, rows, close } = await setup(`notice-${damage}`, damage);
    try {
      const notifier = new Notifier(ctx, { retryDelaysMs: [] });
      notifier.held(row);
      await notifier.idle();
      const notified = (await rows()).filter((r) => r.command === "APPROVAL NOTIFIED");
      expect(notified).toHaveLength(1);
      expect(notified[0]!.decision).toBe("error");
      expect(notified[0]!.reason).toContain("the held message cannot be read");
      // Still owed: the next start says so again, until it is denied or expires.
      expect(store.row(row.id)!.notified).toBe(false);
      expect(store.row(row.id)!.state).toBe("held");
    } finally {
      await close();
    }
  });
}
