/**
 * `mailgator approvals show` of a held message whose sealed record does not open (altered on disk, or sealed with
 * another key: docs/approvals.md "Deciding"): the row is shown, with what cannot be, and the command fails; then
 * deny still discards it.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildPreview } from "../../src/approvals/preview.ts";
import { ApprovalStore } from "../../src/approvals/store.ts";
import { SealedStore } from "../../src/state/store.ts";

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");
const dir = mkdtempSync(join(tmpdir(), "mg-show-unreadable-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function run(...args: string[]): { code: number; stdout: string; stderr: string } {
  const p = Bun.spawnSync([process.execPath, MAIN, ...args], { env: { PATH: process.env["PATH"] ?? "" } });
  return { code: p.exitCode ?? -1, stdout: p.stdout.toString(), stderr: p.stderr.toString() };
}

test("show of a record that does not open: the row, a clear line, exit 1; deny then discards it", async () => {
  const file = join(dir, "mailgator.toml");
  writeFileSync(
    file,
    `[audit]\npath = "${join(dir, "audit.db")}"\n\n[state]\npath = "${join(dir, "state.db")}"\n` +
      `secrets_file = "${join(dir, "secrets.key")}"\n`,
  );
  const state = SealedStore.open(join(dir, "state.db"), {
    secretsFile: join(dir, "secrets.key"),
    env: {},
    create: true,
  })!;
  const message = Buffer.from("Subject: quarterly numbers\r\n\r\nhello\r\n");
  const row = await new ApprovalStore(state).hold(
    {
      envelope: { from: "a@corp.test", recipients: ["b@out.test"], eightBit: false },
      message,
      account: "main",
      credentials: null,
      agent: "bot",
      preview: buildPreview("a@corp.test", ["b@out.test"], message, false),
    },
    { name: "ask outside", index: 0, groups: ["managers"] },
    Date.now() + 600_000,
  );
  state.db.run("UPDATE sealed SET box = zeroblob(length(box)) WHERE kind = 'held' AND id = ?", [row.id]);
  state.close();

  const shown = run("approvals", "show", row.id, "-c", file);
  expect(shown.code).toBe(1);
  expect(shown.stdout).toContain(`${row.id}: held (rule ask outside; asks managers)`);
  expect(shown.stdout).toContain("its sealed record does not open");
  expect(shown.stdout).not.toContain("quarterly");

  const json = run("approvals", "show", row.id, "-c", file, "--json");
  expect(json.code).toBe(1);
  const parsed = JSON.parse(json.stdout) as Record<string, unknown>;
  expect(parsed["id"]).toBe(row.id);
  expect(parsed["state"]).toBe("held");
  expect(parsed["preview"]).toBeNull();
  expect(parsed["unreadable"]).toBe(true);

  const denied = run("approvals", "deny", row.id, "-c", file);
  expect(denied.code).toBe(0);
  const after = run("approvals", "show", row.id, "-c", file);
  expect(after.code).toBe(0);
  expect(after.stdout).toContain(`${row.id}: denied`);
});
