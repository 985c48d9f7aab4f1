/**
 * A link withdrawal (docs/approvals.md "Links") is a change to every held message: each gets its `APPROVAL LINK
 * WITHDRAWN` row. While the audit log cannot be written (docs/audit.md "Failure"), nothing is withdrawn, as nothing
 * is approved, denied or expired then: the check fails (serve does not start, a reload is one in part) and the
 * next check, once the log recovers, withdraws the links with their rows. Never a withdrawal without its rows.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildPreview } from "../../src/approvals/preview.ts";
import { type ApprovalContext, withdrawExposedLinks } from "../../src/approvals/service.ts";
import { ApprovalStore } from "../../src/approvals/store.ts";
import type { Config } from "../../src/config/types.ts";
import { SealedStore } from "../../src/state/store.ts";
import { freeSpace, fullAuditLog } from "../audit/unhealthy.ts";

const dir = mkdtempSync(join(tmpdir(), "mg-withdraw-audit-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The parts of a config withdrawExposedLinks reads: agents, their accounts, the revision. */
function configReading(...usernames: string[]): Config {
  return {
    revision: "test",
    agents: usernames.map((_, i) => ({ name: `agent${i}`, account: `account${i}` })),
    accounts: Object.fromEntries(usernames.map((u, i) => [`account${i}`, { username: u, identities: [] }])),
  } as unknown as Config;
}

test("no link is withdrawn while the audit log is failing; the next check withdraws it, with its row", async () => {
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
    // The first set recorded withdraws nothing (there is none to compare with).
    store.withdrawLinksForNewReaders(["bot@corp.test"]);
    const ctx = (config: Config): ApprovalContext => ({ config, store, audit, protocol: "smtp" });

    // An agent now reads the approver's mailbox, while the log is full: the check fails and nothing changes.
    const wider = configReading("bot@corp.test", "boss@corp.test");
    expect(() => withdrawExposedLinks(ctx(wider))).toThrow();
    expect(store.row(held.id)!.linkGeneration).toBe(0);
    expect(store.tokenValid(store.row(held.id)!, link)).toBe(true);

    // The log recovers: the next check (a reload, a start) withdraws the link, with its row.
    await freeSpace(audit);
    expect(withdrawExposedLinks(ctx(wider))).toBe(1);
    expect(store.tokenWithdrawn(store.row(held.id)!, link)).toBe(true);
    await audit.flush();
    const rows = audit.query({ order: "asc" }).filter((r) => r.target === held.id);
    expect(rows.map((r) => `${r.command} ${r.decision}`)).toEqual(["APPROVAL LINK WITHDRAWN deny"]);
  } finally {
    await audit.close().catch(() => {});
    state.close();
  }
});
