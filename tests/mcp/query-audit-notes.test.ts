/**
 * query_audit runs `mailgator audit --json` in the admin MCP server's process (src/mcp/admin-commands.ts). The notes
 * that command writes beside its JSON rows on a terminal's standard error ("N more rows not shown; raise --limit",
 * "no matching rows") belong to the tool call, not to the server's log: they are kept apart and never written to
 * the server's standard error, where they named the tool's internal --limit as if the owner had chosen it.
 */
import { afterAll, expect, spyOn, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AuditLog } from "../../src/audit/index.ts";
import { queryAudit } from "../../src/mcp/admin-commands.ts";
import { sampleEvent } from "../audit/helpers.ts";

const dir = mkdtempSync(join(tmpdir(), "mg-query-notes-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test("query_audit over more rows than its limit, and over none: nothing on the server's standard error", async () => {
  const file = join(dir, "mailgator.toml");
  writeFileSync(
    file,
    `[imap]\nlisten_addr = "127.0.0.1:0"\nupstream_addr = "127.0.0.1:1"\nupstream_tls = "none"\n\n` +
      `[audit]\npath = "${join(dir, "audit.db")}"\n\n[[rules]]\nname = "all"\naction = "allow"\n`,
  );
  const log = AuditLog.open(join(dir, "audit.db"));
  for (let i = 0; i < 5; i++) await log.durable(sampleEvent({ command: "EXAMINE" }));
  log.close();
  const written: string[] = [];
  const stderr = spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => {
    written.push(String(chunk));
    return true;
  });
  try {
    const some = await queryAudit({ path: file, ownedOnly: false }, { command: "EXAMINE", limit: 2 }, {});
    expect(some.rows).toHaveLength(2);
    expect(some.truncated).toBe(true);
    const none = await queryAudit({ path: file, ownedOnly: false }, { command: "NOOP" }, {});
    expect(none.rows).toHaveLength(0);
    expect(none.truncated).toBe(false);
  } finally {
    stderr.mockRestore();
  }
  expect(written).toEqual([]);
});

test("query_audit without a log file yet: no rows, and its note says so", async () => {
  const file = join(dir, "none.toml");
  const path = join(dir, "never-written.db");
  writeFileSync(file, `[audit]\npath = "${path}"\n\n[[rules]]\nname = "all"\naction = "allow"\n`);
  const none = await queryAudit({ path: file, ownedOnly: false }, {}, {});
  expect(none).toMatchObject({ rows: [], truncated: false, note: `no audit log yet at ${path}` });
});
