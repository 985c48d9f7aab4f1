// A state database that is no SQLite database (damaged, truncated, another file at its path): every command that
// opens it stops with an error naming the file (as the audit log's does, docs/audit.md), and leaves it as it is:
// never re-created, which would lose the stored logins (docs/accounts.md "What is stored where").
import { expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { SealedStore } from "../../src/state/store.ts";
import { tempRoot } from "../fixtures/temp.ts";

const TMP = tempRoot("mg-state-corrupt-");

test("a state database that is no database: refused with its path, left as it was", () => {
  const path = join(TMP, "mailgator-state.db");
  const damage = Buffer.from("SQLite format 3\0".padEnd(8192, "damage "));
  writeFileSync(path, damage, { mode: 0o600 });
  for (const create of [true, false]) {
    let error: unknown = null;
    try {
      SealedStore.open(path, { secretsFile: join(TMP, "mailgator-secrets.key"), env: {}, create });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toContain(path);
    expect((error as Error).message).toContain("not a database");
  }
  expect(readFileSync(path).equals(damage)).toBe(true);
});
