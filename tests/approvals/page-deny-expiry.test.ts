/**
 * A deny from the page whose message reaches its expiry time while the DENY row goes to disk (the row is written
 * first, docs/approvals.md "When the audit log fails"): the store refuses to deny a message past its time, so it
 * expires then, with the APPROVAL EXPIRED row, and the page says so (410); it is never left held with its link used
 * (docs/approvals.md "Links").
 */

import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ApprovalContext } from "../../src/approvals/service.ts";
import { approvalPage } from "../../src/approvals/web.ts";
import type { AuditLog } from "../../src/audit/index.ts";
import { ASK_RULE, askManagersConfig, heldMessage, openApprovalStores } from "./helpers.ts";

const dir = mkdtempSync(join(tmpdir(), "mg-deny-expiry-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/**
 * A page over a fresh state and audit log whose DENY row takes 100 ms to reach the disk (a busy disk), long enough
 * for the message, held for 50 ms, to reach its time; `failAfterRow` makes the log fail once that row is written.
 */
async function denyAtExpiry(name: string, failAfterRow: boolean) {
  const config = askManagersConfig(dir, join(dir, `${name}-audit.db`));
  const {
    state,
    store,
    audit: log,
  } = openApprovalStores(join(dir, `${name}-state.db`), join(dir, "key"), join(dir, `${name}-audit.db`));
  let failing = false;
  const audit = new Proxy(log, {
    get(target, p) {
      if (p === "healthy") return !failing && target.healthy;
      if (p === "durable")
        return async (...args: Parameters<AuditLog["durable"]>) => {
          const id = await target.durable(...args);
          await Bun.sleep(100);
          if (failAfterRow) failing = true;
          return id;
        };
      const v = Reflect.get(target, p, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  const ctx: ApprovalContext = { config, store, audit, protocol: "smtp" };
  const row = await store.hold(heldMessage(), ASK_RULE, Date.now() + 50);
  const body = `t=${store.token(row)}&action=deny&confirm=deny`;
  const res = await approvalPage(ctx).handle(
    new Request(`http://admin.test/approvals/${row.id}`, {
      method: "POST",
      headers: {
        origin: "http://admin.test",
        "content-type": "application/x-www-form-urlencoded",
        "content-length": String(body.length),
      },
      body,
    }),
  );
  const text = await res.text();
  await log.flush();
  const rows = log
    .query({ order: "asc" })
    .filter((r) => r.target === row.id)
    .map((r) => [r.command, r.decision, r.reason]);
  const result = { status: res.status, text, state: store.row(row.id)!.state, used: store.tokenUsed(row.id), rows };
  log.close();
  state.close();
  return result;
}

test("a page deny that meets the expiry time while its row is written: expired, 410, its rows say so", async () => {
  const r = await denyAtExpiry("expires", false);
  expect(r.status).toBe(410);
  expect(r.text).toContain("Expired");
  expect(r.state).toBe("expired");
  expect(r.rows).toEqual([
    ["DENY", "deny", "denied by link:managers"],
    ["APPROVAL EXPIRED", "deny", "no decision before it expired"],
    ["DENY", "error", "denied by link:managers; not applied: it is expired"],
  ]);
});

test("the audit log failing once that DENY row is written: still held, 503, the link given back", async () => {
  const r = await denyAtExpiry("log-fails", true);
  expect(r.status).toBe(503);
  expect(r.text).toContain("This link can be used again");
  expect(r.state).toBe("held");
  expect(r.used).toBe(false);
  expect(r.rows.map(([c, d]) => `${c} ${d}`)).not.toContain("APPROVAL EXPIRED deny");
});
