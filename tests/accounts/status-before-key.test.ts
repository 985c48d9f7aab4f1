// `mailgator account status` on a state database that another feature made without the secrets key (quota counters,
// docs/quotas.md: src/state/database.ts opens it keyless) and that holds no sealed record yet: there is no login to
// show and no key to need. The status says "not logged in" (docs/accounts.md "Logging in"), creates no key (a
// read-only use), and never claims that the database holds sealed records.
import { afterAll, expect, test } from "bun:test";
import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { openStateDatabase } from "../../src/state/database.ts";
import { cli, madeDirs, oauthConfig } from "./helpers.ts";

afterAll(() => {
  for (const dir of madeDirs) rmSync(dir, { recursive: true, force: true });
});

test("account status on a keyless state database without sealed records: not logged in, no key made", () => {
  const { dir, config } = oauthConfig("someone@mailgator.test");
  const db = openStateDatabase(join(dir, "mailgator-state.db"));
  db.run("CREATE TABLE quota_counter (k TEXT PRIMARY KEY, n INTEGER)");
  db.close();
  const r = cli(["account", "status", "-c", config]);
  expect(r.stderr).not.toContain("holds sealed records");
  expect(r.code).toBe(0);
  expect(r.stdout).toContain("not logged in");
  expect(existsSync(join(dir, "mailgator-secrets.key"))).toBe(false);
});
