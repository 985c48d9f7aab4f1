/**
 * A reload that lets an agent read a mailbox a notice may lie in withdraws the held messages' links
 * (docs/approvals.md "Links"). When that check fails (the audit log cannot be written, so nothing is withdrawn, or
 * the state database refuses it), the links it should have withdrawn must not open their messages once the log
 * recovers: the page tries the check again before each request, and refuses while it fails.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildPreview } from "../../src/approvals/preview.ts";
import { type ApprovalContext, withdrawExposedLinks } from "../../src/approvals/service.ts";
import { ApprovalStore } from "../../src/approvals/store.ts";
import { approvalPage } from "../../src/approvals/web.ts";
import type { Config } from "../../src/config/types.ts";
import { SealedStore } from "../../src/state/store.ts";
import { freeSpace, fullAuditLog } from "../audit/unhealthy.ts";

const dir = mkdtempSync(join(tmpdir(), "mg-link-owed-"));
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

test("a link a failed check left valid does not open its message once the audit log recovers", async () => {
  const state = SealedStore.open(join(dir, "state.db"), { secretsFile: join(dir, "key"), env: {}, create: true })!;
  const store = new ApprovalStore(state);
  const audit = await fullAuditLog(join(dir, "audit.db"));
  try {
    const message = Buffer.from("Subject: hi\r\n\r\nhello\r\n");
    const held = await store.hold(
      {
        envelope: { from: "a@corp.test", recipients: ["b@out.test"], eightBit: false },
        message,
        account: "main",
        credentials: null,
        agent: "bot",
        preview: buildPreview("a@corp.test", ["b@out.test"], message, false),
      },
      { name: "ask", index: 0, groups: ["managers"] },
      Date.now() + 600_000,
    );
    const link = store.token(store.row(held.id)!);
    store.withdrawLinksForNewReaders(["bot@corp.test"]);
    // The reload: an agent now reads the approver's mailbox; the check fails while the log is full, as serve's does.
    const ctx: ApprovalContext = {
      config: configReading("bot@corp.test", "boss@corp.test"),
      store,
      audit,
      protocol: "smtp",
    };
    const page = approvalPage(ctx);
    expect(() => withdrawExposedLinks(ctx)).toThrow();
    page.oweLinkCheck();
    const url = `http://admin.invalid/approvals/${held.id}?t=${encodeURIComponent(link)}`;

    // Still failing: nothing is shown.
    const refused = await page.handle(new Request(url));
    expect(refused.status).toBe(503);
    expect(await refused.text()).not.toContain("Approve");

    // The log recovers: the next request checks the links first, and the exposed one is withdrawn, with its row.
    await freeSpace(audit);
    const after = await page.handle(new Request(url));
    expect(after.status).toBe(403);
    expect(await after.text()).toContain("Link withdrawn");
    expect(store.tokenWithdrawn(store.row(held.id)!, link)).toBe(true);
    await audit.flush();
    const rows = audit.query({ order: "asc" }).filter((r) => r.target === held.id);
    expect(rows.map((r) => `${r.command} ${r.decision}`)).toEqual(["APPROVAL LINK WITHDRAWN deny"]);
  } finally {
    await audit.close().catch(() => {});
    state.close();
  }
});
