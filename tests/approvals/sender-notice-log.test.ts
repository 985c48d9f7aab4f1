/**
 * The log line of a sender's result notice that is not sent (`[approvals] notify_sender`, docs/approvals.md
 * "notify_sender"): it is about a message already decided, so it says what became of it, never that it "stays held",
 * which an approver's notice that is not sent says (docs/approvals.md "Notices"). `mailgator approvals deny` as a
 * process, on a message with a null sender (`<>`), which gets no notice.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AuditLog } from "../../src/audit/index.ts";
import { holdForCli, runCli } from "./cli-fixture.ts";

const dir = mkdtempSync(join(tmpdir(), "mg-sender-notice-log-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test("approvals deny: the sender's notice not sent is logged as about a denied message, not a held one", async () => {
  const held = await holdForCli(dir, Buffer.from("To: x@out.test\r\nSubject: bounce\r\n\r\nhi\r\n"), { sender: "" });
  held.state.close();
  writeFileSync(
    held.file,
    `[audit]\npath = "${join(dir, "audit.db")}"\n\n[state]\npath = "${join(dir, "state.db")}"\n` +
      `secrets_file = "${join(dir, "secrets.key")}"\n\n[approvals]\nnotify_sender = true\n\n` +
      `[approvals.groups.managers]\nrecipients = ["boss@corp.test"]\n\n` +
      `[[rules]]\nname = "ask"\naction = "ask"\noperations = ["send"]\nask_groups = ["managers"]\n`,
  );
  const r = runCli("approvals", "deny", held.id, "-c", held.file);
  expect(r.stdout).toContain(`${held.id}: denied; the message is discarded`);
  expect(r.code).toBe(0);
  const line = r.stderr.split("\n").find((l) => l.includes("not sent: the message had a null sender (<>)"));
  expect(line).toContain(`approval ${held.id}: notice to the sender not sent`);
  expect(line).not.toContain("stays held");
  expect(line).toEndWith("(the message was denied)");
  const audit = AuditLog.open(join(dir, "audit.db"));
  try {
    const rows = audit.query({ order: "asc" }).filter((row) => row.command === "APPROVAL SENDER NOTIFIED");
    expect(rows.map((row) => [row.decision, row.reason])).toEqual([
      ["error", "notice to the sender not sent: the message had a null sender (<>)"],
    ]);
  } finally {
    audit.close();
  }
});
