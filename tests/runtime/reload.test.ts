/**
 * The reload step in process (docs/operations.md "Reload"): a file that loads is swapped in whole, one that does not
 * changes nothing and says where; `onReload` subscribers see each outcome. The end-to-end behaviour with signals and
 * sessions is in tests/e2e/reload.test.ts.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { reload } from "../../src/cli/commands/serve.ts";
import { loadConfig } from "../../src/config/index.ts";
import { compilePolicy } from "../../src/policy/index.ts";
import {
  emitReload,
  LiveConfig,
  onReload,
  type ReloadResult,
  reloadFailures,
  reloadSuccesses,
} from "../../src/runtime/reload.ts";

const dir = mkdtempSync(join(tmpdir(), "mg-reload-unit-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function write(action: string): string {
  const file = join(dir, "mailgator.toml");
  writeFileSync(
    file,
    `[smtp]
listen_addr = "127.0.0.1:0"
upstream_addr = "127.0.0.1:25"
upstream_tls = "none"

[audit]
path = "${join(dir, "audit.db")}"

[[rules]]
name = "Everything"
action = "${action}"
`,
  );
  return file;
}

test("a good file is swapped in with a new revision; a bad one keeps the old and reports file:line:col", () => {
  const file = write("allow");
  const first = loadConfig(file);
  const live = new LiveConfig(first, compilePolicy(first.rules));
  const seen: ReloadResult[] = [];
  const off = onReload((r) => seen.push(r));
  const failuresBefore = reloadFailures();
  const successesBefore = reloadSuccesses();

  write("deny");
  const ok = reload(file, {}, live, [], first.audit.path);
  emitReload(ok);
  expect(ok.ok).toBe(true);
  expect(ok.previousRevision).toBe(first.revision);
  expect(ok.revision).not.toBe(first.revision);
  expect(live.generation).toBe(1);
  expect(live.config.rules[0]!.action).toBe("deny");

  write('maybe"\n[[rules]\n');
  const bad = reload(file, {}, live, [], first.audit.path);
  emitReload(bad);
  expect(bad.ok).toBe(false);
  expect(bad.errors.length).toBeGreaterThan(0);
  expect(bad.errors[0]).toMatch(new RegExp(`^${file.replaceAll(".", "\\.")}:\\d+:\\d+: `));
  expect(bad.revision).toBe(ok.revision);
  expect(live.generation).toBe(1);
  expect(live.config.rules[0]!.action).toBe("deny");

  off();
  emitReload(ok);
  expect(seen.map((r) => r.ok)).toEqual([true, false]);
  expect(reloadFailures()).toBe(failuresBefore + 1);
  expect(reloadSuccesses()).toBe(successesBefore + 2);
});
