/**
 * A held message whose `approvals` row is there but whose sealed `held` record is gone (deleted from the state
 * database by hand, a restore of a partial backup): docs/approvals.md "Holding" treats it as a record that cannot be
 * read. Approving it sends nothing, keeps it held and writes an `APPROVE` row of decision `error` (the command line,
 * the page and approve() alike); `show` and the page say it cannot be read; deny still discards it.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildPreview } from "../../src/approvals/preview.ts";
import { type ApprovalContext, approve } from "../../src/approvals/service.ts";
import { ApprovalStore } from "../../src/approvals/store.ts";
import { approvalPage } from "../../src/approvals/web.ts";
import { AuditLog } from "../../src/audit/index.ts";
import { parseConfig } from "../../src/config/index.ts";
import { SealedStore } from "../../src/state/store.ts";
import { holdForCli, runCli as run } from "./cli-fixture.ts";

const dir = mkdtempSync(join(tmpdir(), "mg-missing-record-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A held message of `name`, its `held` record deleted (its parts and its row kept). */
async function setup(name: string) {
  const config = parseConfig(
    `[approvals]\nbase_url = "http://admin.test"\n` +
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
  const row = await store.hold(
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
  state.db.run("DELETE FROM sealed WHERE kind = 'held' AND id = ?", [row.id]);
  const rows = async () => {
    await audit.flush();
    return audit.query({ order: "asc" }).map((r) => `${r.command} ${r.decision} ${r.reason ?? ""}`);
  };
  return { ctx, store, audit, id: row.id, rows, close: async () => (await audit.close(), state.close()) };
}

test("approve() of a held message whose record is missing: not sent, still held, an APPROVE error row", async () => {
  const { ctx, store, id, rows, close } = await setup("service");
  const result = await approve(ctx, id, "cli:review");
  const state = store.row(id)!.state;
  const written = await rows();
  await close();
  expect(result.outcome).toBe("not-sent");
  expect(state).toBe("held");
  expect(written.length).toBe(1);
  expect(written[0]).toStartWith("APPROVE error approved by cli:review; not sent, still held: the stored message");
  expect(written[0]).toContain("missing");
});

test("the page of a held message whose record is missing: cannot be read, and an approval is recorded", async () => {
  const { ctx, store, id, rows, close } = await setup("page");
  const token = store.token(store.row(id)!);
  const page = approvalPage(ctx);
  const viewed = await page.handle(new Request(`http://admin.test/approvals/${id}?t=${token}`));
  const viewedText = await viewed.text();
  const body = `t=${encodeURIComponent(token)}&action=approve`;
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
  const written = await rows();
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
