/**
 * A held message past its time whose sealed record no longer opens (altered, or sealed with another key:
 * docs/approvals.md "Holding") still expires, by approve() and by the expiry check, without the sender's notice
 * (which would need its details); one such record never keeps the others from expiring.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type ApprovalContext, approve, deny, expireDue } from "../../src/approvals/service.ts";
import { ASK_RULE, askManagersConfig, heldMessage, openApprovalStores } from "./helpers.ts";

const dir = mkdtempSync(join(tmpdir(), "mg-expire-unreadable-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function setup(name: string, expiresInMs = 30) {
  const config = askManagersConfig(dir, join(dir, `${name}-audit.db`), { approvals: "notify_sender = true\n" });
  const { state, store, audit } = openApprovalStores(
    join(dir, `${name}-state.db`),
    join(dir, "key"),
    join(dir, `${name}-audit.db`),
  );
  const decided: string[] = [];
  const ctx: ApprovalContext = {
    config,
    store,
    audit,
    protocol: "smtp",
    onDecided: (row) => decided.push(`${row.id} ${row.state}`),
  };
  const row = await store.hold(heldMessage(), ASK_RULE, Date.now() + expiresInMs);
  if (expiresInMs < 1000) await Bun.sleep(2 * expiresInMs);
  // The held record no longer opens (altered on disk, or sealed with another key).
  state.db.run("UPDATE sealed SET box = zeroblob(length(box)) WHERE kind = 'held' AND id = ?", [row.id]);
  return { ctx, store, audit, id: row.id, decided, close: () => (audit.close(), state.close()) };
}

test("approve of a message past its time whose record does not open expires it, without a notice", async () => {
  const setupDecided = await setup("approve");
  const { ctx, store, id, close } = setupDecided;
  let result: unknown;
  try {
    result = await approve(ctx, id, "cli:review");
  } catch (e) {
    result = `threw: ${(e as Error).message}`;
  }
  const state = store.row(id)!.state;
  // The expiry check cannot expire it either (it reads the same record), so nothing ever does.
  let check: string;
  try {
    check = `expired ${expireDue(ctx).length}`;
  } catch (e) {
    check = `expiry check threw: ${(e as Error).message}`;
  }
  const { decided } = setupDecided;
  close();
  expect(result).toEqual({ outcome: "refused", state: "expired" });
  expect(state).toBe("expired");
  expect(check).toBe("expired 0");
  // onDecided is asked only with details to notify with: none here.
  expect(decided).toEqual([]);
});

test("one unreadable record past its time does not keep the others from expiring", async () => {
  const { ctx, store, id, close } = await setup("blocks");
  const message = Buffer.from("Subject: other\r\n\r\nx\r\n");
  const other = await store.hold(heldMessage("c@out.test", message), ASK_RULE, Date.now() + 20);
  await Bun.sleep(40);
  let threw = "";
  try {
    expireDue(ctx);
  } catch (e) {
    threw = (e as Error).message;
  }
  const states = [store.row(id)!.state, store.row(other.id)!.state];
  close();
  expect(threw).toBe("");
  expect(states).toEqual(["expired", "expired"]);
});

test("deny of a held message whose record does not open denies it, without a notice (docs/approvals.md)", async () => {
  // Not due: the way to discard it before its time is a denial (`mailgator approvals deny`, whose ctx has onDecided).
  const { ctx, store, audit, id, decided, close } = await setup("deny", 60 * 60 * 1000);
  let result: unknown;
  try {
    result = await deny(ctx, id, "cli:review", null);
  } catch (e) {
    result = `threw: ${(e as Error).message}`;
  }
  await audit.flush();
  const rows = audit.query({ order: "asc" }).map((r) => [r.command, r.decision]);
  const state = store.row(id)!.state;
  close();
  expect(result).toEqual({ outcome: "denied", state: "held" });
  expect(state).toBe("denied");
  // Its DENY row is followed by no error: the denial it records took effect.
  expect(rows).toEqual([["DENY", "deny"]]);
  expect(decided).toEqual([]);
});
