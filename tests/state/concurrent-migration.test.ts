/**
 * Two processes opening a new state database at once (`serve` starting while `mailgator account login` or
 * `mailgator approvals` runs): each must find it migrated once, by whichever came first. The schema version was read
 * before the migration's transaction, so the second process, having read version 0 while the first was migrating,
 * ran migration 1 again once the lock was free and stopped with "table sealed already exists".
 */
import { expect, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { join } from "node:path";
import { SealedStore } from "../../src/state/store.ts";
import { tempRoot } from "../fixtures/temp.ts";

const TMP = tempRoot("mg-concurrent-open-");

test("a state database another process migrates while this one opens it is opened, not migrated twice", async () => {
  const dir = mkdtempSync(join(TMP, "s-"));
  const path = join(dir, "mailgator-state.db");
  const child = Bun.spawn([process.execPath, join(import.meta.dir, "migrate-child.ts"), path], {
    stdout: "pipe",
    stderr: "inherit",
  });
  const reader = child.stdout.getReader();
  let seen = "";
  while (!seen.includes("locked")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`the child exited before taking the lock: ${seen}`);
    seen += new TextDecoder().decode(value);
  }
  // The child holds the write lock with migration 1 done but not committed: this open reads version 0, waits for
  // the lock (busy timeout, 5 s) and must then find the migration done.
  const store = SealedStore.open(path, { secretsFile: join(dir, "mailgator-secrets.key"), env: {}, create: true })!;
  store.put("oauth2-token", "mail", "tokens");
  expect(store.getText("oauth2-token", "mail")).toBe("tokens");
  store.close();
  expect(await child.exited).toBe(0);
});
