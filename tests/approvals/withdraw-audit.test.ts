/**
 * A link withdrawal (docs/approvals.md "Links") is a change to every held message: each gets its `APPROVAL LINK
 * WITHDRAWN` row. While the audit log cannot be written (docs/audit.md "Failure"), nothing is withdrawn, as nothing
 * is approved, denied or expired then: the check fails (serve does not start, a reload is one in part) and the
 * next check, once the log recovers, withdraws the links with their rows. Never a withdrawal without its rows.
 * And the links such a failed check left valid must not open their messages meanwhile: the page tries the check
 * again before each request, and refuses while it fails.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type ApprovalContext, withdrawExposedLinks } from "../../src/approvals/service.ts";
import { ApprovalStore } from "../../src/approvals/store.ts";
import { approvalPage } from "../../src/approvals/web.ts";
import type { AuditLog } from "../../src/audit/index.ts";
import type { Config } from "../../src/config/types.ts";
import { SealedStore } from "../../src/state/store.ts";
import { freeSpace, fullAuditLog } from "../audit/unhealthy.ts";
import { ASK_RULE, heldMessage } from "./helpers.ts";

const dir = mkdtempSync(join(tmpdir(), "mg-withdraw-audit-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The parts of a config the page and withdrawExposedLinks read: agents, their accounts, [approvals]. */
function configReading(...usernames: string[]): Config {
  return {
    revision: "test",
    agents: usernames.map((_, i) => ({ name: `agent${i}`, account: `account${i}` })),
    accounts: Object.fromEntries(usernames.map((u, i) => [`account${i}`, { username: u, identities: [] }])),
    approvals: { baseUrl: "http://127.0.0.1:1" },
  } as unknown as Config;
}

/**
 * A state database with one held message of agent `bot` whose link was checked against `bot@corp.test` reading, an
 * audit log on a full disk, and the context of a reload after which `boss@corp.test`'s mailbox is read too.
 */
async function heldWhileLogFull(
  name: string,
): Promise<{ store: ApprovalStore; audit: AuditLog; id: string; link: string; ctx: ApprovalContext; close(): void }> {
  const state = SealedStore.open(join(dir, `${name}.db`), {
    secretsFile: join(dir, `${name}.key`),
    env: {},
    create: true,
  })!;
  const store = new ApprovalStore(state);
  const audit = await fullAuditLog(join(dir, `${name}-audit.db`));
  const held = await store.hold(heldMessage(), ASK_RULE, Date.now() + 600_000);
  const link = store.token(store.row(held.id)!);
  // The first set recorded withdraws nothing (there is none to compare with).
  store.withdrawLinksForNewReaders(["bot@corp.test"]);
  const ctx = { config: configReading("bot@corp.test", "boss@corp.test"), store, audit, protocol: "smtp" } as const;
  return { store, audit, id: held.id, link, ctx, close: () => state.close() };
}

async function withdrawnWithRow(audit: AuditLog, id: string): Promise<void> {
  await audit.flush();
  const rows = audit.query({ order: "asc" }).filter((r) => r.target === id);
  expect(rows.map((r) => `${r.command} ${r.decision}`)).toEqual(["APPROVAL LINK WITHDRAWN deny"]);
}

test("no link is withdrawn while the audit log is failing; the next check withdraws it, with its row", async () => {
  const { store, audit, id, link, ctx, close } = await heldWhileLogFull("check");
  try {
    // An agent now reads the approver's mailbox, while the log is full: the check fails and nothing changes.
    expect(() => withdrawExposedLinks(ctx)).toThrow();
    expect(store.row(id)!.linkGeneration).toBe(0);
    expect(store.tokenValid(store.row(id)!, link)).toBe(true);

    // The log recovers: the next check (a reload, a start) withdraws the link, with its row.
    await freeSpace(audit);
    expect(withdrawExposedLinks(ctx)).toBe(1);
    expect(store.tokenWithdrawn(store.row(id)!, link)).toBe(true);
    await withdrawnWithRow(audit, id);
  } finally {
    await audit.close().catch(() => {});
    close();
  }
});

test("a link a failed check left valid does not open its message once the audit log recovers", async () => {
  const { store, audit, id, link, ctx, close } = await heldWhileLogFull("page");
  try {
    // The reload's check fails while the log is full, as serve's does, and serve tells the page.
    const page = approvalPage(ctx);
    expect(() => withdrawExposedLinks(ctx)).toThrow();
    page.oweLinkCheck();
    const url = `http://admin.invalid/approvals/${id}?t=${encodeURIComponent(link)}`;

    // Still failing: nothing is shown.
    const refused = await page.handle(new Request(url));
    expect(refused.status).toBe(503);
    expect(await refused.text()).not.toContain("Approve");

    // The log recovers: the next request checks the links first, and the exposed one is withdrawn, with its row.
    await freeSpace(audit);
    const after = await page.handle(new Request(url));
    expect(after.status).toBe(403);
    expect(await after.text()).toContain("Link withdrawn");
    expect(store.tokenWithdrawn(store.row(id)!, link)).toBe(true);
    await withdrawnWithRow(audit, id);
  } finally {
    await audit.close().catch(() => {});
    close();
  }
});
