/**
 * A held message whose `approvals` row is there but whose sealed `held` record is gone (deleted from the state
 * database by hand, a restore of a partial backup) or does not open: docs/approvals.md "Holding" treats it as a
 * record that cannot be read, never as a message already decided. Its parts are not taken for a store's leftovers
 * (no `DATA` row saying it was "not held"); approving it sends nothing, keeps it held and writes an `APPROVE` row of
 * decision `error` (the command line, the page and approve() alike); `show` and the page say it cannot be read; deny
 * still discards it; and the notice to its approvers, which cannot be built, is an `APPROVAL NOTIFIED` error row
 * rather than nothing (docs/approvals.md "Notices").
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Notifier } from "../../src/approvals/notify.ts";
import { type ApprovalContext, approve, expireDue, recover } from "../../src/approvals/service.ts";
import { HELD_PART_KIND, type HeldMessage, ORPHAN_PART_AGE_MS } from "../../src/approvals/store.ts";
import { approvalPage } from "../../src/approvals/web.ts";
import { AuditLog } from "../../src/audit/index.ts";
import { SealedRecordError } from "../../src/state/store.ts";
import { holdForCli, runCli as run } from "./cli-fixture.ts";
import { ASK_RULE, askManagersConfig, heldMessage, openApprovalStores } from "./helpers.ts";

const dir = mkdtempSync(join(tmpdir(), "mg-missing-record-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A held message of `name`, its `held` record deleted or altered (its parts and its row kept). */
async function setup(name: string, damage: "delete" | "alter" = "delete") {
  const config = askManagersConfig(dir, join(dir, `${name}-audit.db`), {
    before: `[smtp]\nlisten_addr = "127.0.0.1:2525"\nupstream_addr = "127.0.0.1:9"\nupstream_tls = "none"\n`,
    approvals: `notify_account = "notices"\n[accounts.notices]\nusername = "notices@corp.test"\npassword = "p"\n`,
  });
  const { state, store, audit } = openApprovalStores(
    join(dir, `${name}-state.db`),
    join(dir, "key"),
    join(dir, `${name}-audit.db`),
  );
  const ctx: ApprovalContext = { config, store, audit, protocol: "smtp" };
  // Held in pass-through: the agent's own credentials, no account or agent name.
  const held: HeldMessage = {
    ...heldMessage(),
    account: null,
    credentials: { username: "a@corp.test", password: "pw" },
    agent: null,
  };
  const row = await store.hold(held, ASK_RULE, Date.now() + 3_600_000);
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
  /** The rows as `command decision reason` lines. */
  const lines = async () => (await rows()).map((r) => `${r.command} ${r.decision} ${r.reason ?? ""}`);
  return { ctx, store, row, id: row.id, parts, rows, lines, close: async () => (await audit.close(), state.close()) };
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

test("a held message whose record is missing reads as unreadable, not wiped", async () => {
  const { store, id, close } = await setup("read");
  try {
    const { held, unreadable } = store.readDetails(id);
    expect(held).toBeNull();
    expect(unreadable).toBeInstanceOf(SealedRecordError);
    expect(unreadable!.message).toContain("missing");
    expect(store.readMessage(id)).rejects.toBeInstanceOf(SealedRecordError);
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

test("approve() of a held message whose record is missing: not sent, still held, an APPROVE error row", async () => {
  const { ctx, store, id, lines, close } = await setup("service");
  const result = await approve(ctx, id, "cli:review");
  const state = store.row(id)!.state;
  const written = await lines();
  await close();
  expect(result.outcome).toBe("not-sent");
  expect(state).toBe("held");
  expect(written.length).toBe(1);
  expect(written[0]).toStartWith("APPROVE error approved by cli:review; not sent, still held: the stored message");
  expect(written[0]).toContain("missing");
});

test("the page of a held message whose record is missing: cannot be read, and an approval is recorded", async () => {
  const { ctx, store, id, lines, close } = await setup("page");
  const token = store.token(store.row(id)!);
  const page = approvalPage(ctx);
  const viewed = await page.handle(new Request(`http://admin.test/approvals/${id}?t=${token}`));
  const viewedText = await viewed.text();
  const body = `t=${encodeURIComponent(token)}&action=approve&confirm=approve`;
  const posted = await page.handle(
    new Request(`http://admin.test/approvals/${id}`, {
      method: "POST",
      headers: {
        origin: "http://admin.test",
        "content-type": "application/x-www-form-urlencoded",
        "content-length": String(body.length),
      },
      body,
    }),
  );
  const postedText = await posted.text();
  const used = store.tokenUsed(id);
  const state = store.row(id)!.state;
  const written = await lines();
  await close();
  // Not an empty preview with the two buttons: nothing of the message is known.
  expect(viewed.status).toBe(500);
  expect(viewedText).toContain("Cannot be read");
  expect(viewedText).not.toContain('value="approve"');
  // The approval is refused as one of a record that does not open, not as a message already decided.
  expect(posted.status).toBe(503);
  expect(postedText).toContain("still held");
  expect(used).toBe(false);
  expect(state).toBe("held");
  expect(written.length).toBe(2);
  expect(written[0]).toStartWith("APPROVAL VIEWED error");
  expect(written[1]).toStartWith("APPROVE error");
});

test("`mailgator approvals` of a held message whose record is missing: show says so, approve records it", async () => {
  const sub = mkdtempSync(join(dir, "cli-"));
  const { file, id, state } = await holdForCli(sub, Buffer.from("Subject: quarterly numbers\r\n\r\nhello\r\n"));
  state.db.run("DELETE FROM sealed WHERE kind = 'held' AND id = ?", [id]);
  state.close();

  const shown = run("approvals", "show", id, "-c", file);
  expect(shown.code).toBe(1);
  expect(shown.stdout).toContain(`${id}: held`);
  expect(shown.stdout).not.toContain("discarded or sent");
  expect(shown.stdout).toContain("missing");

  const approved = run("approvals", "approve", id, "-c", file);
  expect(approved.code).toBe(1);
  expect(approved.stdout).toContain(`${id}: not sent, still held: the stored message cannot be read`);
  const audit = AuditLog.open(join(sub, "audit.db"), { batchMs: 5, sync: "normal" });
  const written = audit.query({ order: "asc" }).map((r) => `${r.command} ${r.decision} ${r.target}`);
  await audit.close();
  expect(written).toEqual([`APPROVE error ${id}`]);

  // Deny discards it, as it discards a record that does not open.
  expect(run("approvals", "deny", id, "-c", file).code).toBe(0);
  expect(run("approvals", "show", id, "-c", file).stdout).toContain(`${id}: denied`);
});
