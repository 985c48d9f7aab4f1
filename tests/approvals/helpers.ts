/**
 * The setup the in-process approvals tests share: a config that asks group `managers` for every send, a state
 * database with its approval store and an audit log, and the held message they hold (as the SMTP proxy holds it).
 */
import { join } from "node:path";
import { buildPreview } from "../../src/approvals/preview.ts";
import { ApprovalStore, type HeldMessage } from "../../src/approvals/store.ts";
import { AuditLog } from "../../src/audit/index.ts";
import { parseConfig } from "../../src/config/index.ts";
import type { Config } from "../../src/config/types.ts";
import { SealedStore } from "../../src/state/store.ts";

/** The rule the messages are held under: `ask`, the first, asking group `managers`. */
export const ASK_RULE = { name: "ask", index: 0, groups: ["managers"] };

/**
 * The config read from `<dir>/mailgator.toml`: links on http://admin.test, group `managers` (boss@corp.test), one
 * rule `ask` by which every send asks them, the audit log at `auditPath`. `before`: TOML put first (an `[smtp]`
 * section); `approvals`: lines put after `base_url` (more of `[approvals]`, then other tables).
 */
export function askManagersConfig(
  dir: string,
  auditPath: string,
  o: { before?: string; approvals?: string } = {},
): Config {
  return parseConfig(
    `${o.before ?? ""}[approvals]\nbase_url = "http://admin.test"\n${o.approvals ?? ""}` +
      `[approvals.groups.managers]\nrecipients = ["boss@corp.test"]\n` +
      `[[rules]]\nname = "ask"\naction = "ask"\noperations = ["send"]\nask_groups = ["managers"]\n` +
      `[audit]\npath = "${auditPath}"\n`,
    join(dir, "mailgator.toml"),
  );
}

/** A fresh state database at `statePath` (sealed with `secretsFile`), its approval store, and an audit log. */
export function openApprovalStores(
  statePath: string,
  secretsFile: string,
  auditPath: string,
): { state: SealedStore; store: ApprovalStore; audit: AuditLog } {
  const state = SealedStore.open(statePath, { secretsFile, env: {}, create: true })!;
  const store = new ApprovalStore(state);
  const audit = AuditLog.open(auditPath, { batchMs: 5, sync: "normal" });
  return { state, store, audit };
}

/** Agent `bot`'s message on account `main` from a@corp.test to `recipient`, with its preview. */
export function heldMessage(
  recipient = "b@out.test",
  message = Buffer.from("Subject: hi\r\n\r\nhello\r\n"),
): HeldMessage {
  return {
    envelope: { from: "a@corp.test", recipients: [recipient], eightBit: false },
    message,
    account: "main",
    credentials: null,
    agent: "bot",
    preview: buildPreview("a@corp.test", [recipient], message, false),
  };
}
