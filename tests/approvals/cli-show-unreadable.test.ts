/**
 * `mailgator approvals show` of a held message whose sealed record does not open (altered on disk, or sealed with
 * another key: docs/approvals.md "Deciding"): the row is shown, with what cannot be, and the command fails; then
 * deny still discards it.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { holdForCli, runCli as run } from "./cli-fixture.ts";

const dir = mkdtempSync(join(tmpdir(), "mg-show-unreadable-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test("show of a record that does not open: the row, a clear line, exit 1; deny then discards it", async () => {
  const message = Buffer.from("Subject: quarterly numbers\r\n\r\nhello\r\n");
  const { file, id, state } = await holdForCli(dir, message, { rule: "ask outside" });
  state.db.run("UPDATE sealed SET box = zeroblob(length(box)) WHERE kind = 'held' AND id = ?", [id]);
  state.close();

  const shown = run("approvals", "show", id, "-c", file);
  expect(shown.code).toBe(1);
  expect(shown.stdout).toContain(`${id}: held (rule ask outside; asks managers)`);
  expect(shown.stdout).toContain("its sealed record does not open");
  expect(shown.stdout).not.toContain("quarterly");

  const json = run("approvals", "show", id, "-c", file, "--json");
  expect(json.code).toBe(1);
  const parsed = JSON.parse(json.stdout) as Record<string, unknown>;
  expect(parsed["id"]).toBe(id);
  expect(parsed["state"]).toBe("held");
  expect(parsed["preview"]).toBeNull();
  expect(parsed["unreadable"]).toBe(true);

  const denied = run("approvals", "deny", id, "-c", file);
  expect(denied.code).toBe(0);
  const after = run("approvals", "show", id, "-c", file);
  expect(after.code).toBe(0);
  expect(after.stdout).toContain(`${id}: denied`);
});
