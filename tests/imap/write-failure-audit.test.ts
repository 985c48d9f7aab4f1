/**
 * A write's `allow` row is on disk before the write goes upstream (docs/audit.md "Durable before it takes effect"),
 * so it records the decision before anyone knows whether the server will carry it out. When the server then refuses
 * it (`NO`, `BAD`), the log must say so: an `error` row with the allow row's fields, naming that row
 * (`detail.row`) and the reply the agent got. Before, the allow row stood alone, and the log read as if the folder
 * had been created, deleted, copied to or appended to.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { AuditRow } from "../../src/audit/index.ts";
import { createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { ALLOW_ALL, auditCursor, RawImap, startTestProxy, statusOf, type TestProxy, upstreamState } from "./helpers.ts";

let mailbox: TestMailbox;
let proxy: TestProxy;

beforeAll(async () => {
  mailbox = await createMailbox({ seed: { folders: { INBOX: 3, Archive: 1 }, seed: 74 } });
  proxy = await startTestProxy({ rules: ALLOW_ALL });
});

afterAll(async () => {
  await proxy?.close();
});

const brief = (r: AuditRow) => [r.command, r.operation, r.decision, r.rule, r.count];

test("a write upstream refuses after its allow row gets an error row naming that row and the reply", async () => {
  const before = await upstreamState(mailbox);
  const rows = auditCursor(proxy);
  const raw = await RawImap.login(proxy.port, mailbox);
  try {
    expect(statusOf(await raw.command("s", "SELECT INBOX"), "s")).toStartWith("s OK [READ-WRITE]");
    await rows();
    const cases: [string, string, string, number | null][] = [
      ["CREATE Archive", "CREATE", "folder:write", null],
      ["DELETE Missing", "DELETE", "folder:write", null],
      ["RENAME Missing Other", "RENAME", "folder:write", null],
      ["COPY 1:2 Missing", "COPY", "mail:read", 2],
      ["UID MOVE 1 Missing", "UID MOVE", "mail:move", 1],
      ["APPEND Missing {5+}\r\nhello", "APPEND", "mail:append", 1],
    ];
    for (const [i, [command, name, operation, count]] of cases.entries()) {
      const tag = `c${i}`;
      const status = statusOf(await raw.command(tag, command), tag);
      expect(status, command).toMatch(new RegExp(`^${tag} NO `));
      const written = (await rows()).filter((r) => r.command === name && r.operation === operation);
      const allow = written.filter((r) => r.decision === "allow");
      const failed = written.filter((r) => r.decision === "error");
      expect(allow.map(brief), command).toEqual([[name, operation, "allow", "everything", count]]);
      expect(failed.map(brief), command).toEqual([[name, operation, "error", "everything", count]]);
      expect(failed[0]!.folder).toBe(allow[0]!.folder);
      expect(failed[0]!.detail, command).toEqual({ row: allow[0]!.id });
      const reply = status.slice(tag.length + 1);
      expect(failed[0]!.reason, command).toBe(
        `failed after row ${allow[0]!.id} allowed it: the command was answered ${reply}`,
      );
    }
    // A write carried out has no such row.
    expect(statusOf(await raw.command("t", "STORE 1 +FLAGS (\\Flagged)"), "t")).toStartWith("t OK");
    expect((await rows()).map((r) => r.decision)).toEqual(["allow"]);
    // Nor does a refusal that came before any allow row (the proxy's own, here a sequence number out of range): it
    // has its deny row, as every refusal does (docs/audit.md).
    expect(statusOf(await raw.command("u", "STORE 9 +FLAGS (\\Flagged)"), "u")).toStartWith("u BAD");
    expect((await rows()).map((r) => r.decision)).toEqual(["deny"]);
  } finally {
    raw.close();
  }
  const after = await upstreamState(mailbox);
  expect(after.folders).toEqual(before.folders);
  expect(after.messages["Archive"]).toEqual(before.messages["Archive"]!);
});
