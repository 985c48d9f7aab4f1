/**
 * The sealed store (`SealedStore.open`: serve with an OAuth2 account or a rule that asks, `mailgator account login`,
 * `mailgator approvals`) checks an existing state database as `openStateDatabase` and the audit log do
 * (src/private-files.ts; docs/audit.md "Files"): a database file that is a symbolic link is refused, never followed.
 * Whoever may write the state folder (the service user, when root runs `mailgator account login` there) could
 * otherwise point `mailgator-state.db` at another SQLite database of root's: the store would chmod it and write its
 * `sealed` table and key check into it.
 */
import { Database } from "bun:sqlite";
import { expect, test } from "bun:test";
import { chmodSync, mkdtempSync, statSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { SealedStore } from "../../src/state/store.ts";
import { tempRoot } from "../fixtures/temp.ts";

const TMP = tempRoot("mg-sealed-links-");

test("an existing state database that is a symbolic link is refused; its target is neither changed nor written", () => {
  const dir = mkdtempSync(join(TMP, "s-"));
  const other = join(mkdtempSync(join(TMP, "o-")), "roots.db");
  const db = new Database(other);
  db.run("CREATE TABLE t (x)");
  db.close();
  chmodSync(other, 0o644);
  const path = join(dir, "mailgator-state.db");
  symlinkSync(other, path);
  expect(() =>
    SealedStore.open(path, { secretsFile: join(dir, "mailgator-secrets.key"), env: {}, create: true }),
  ).toThrow("is a symbolic link");
  expect(statSync(other).mode & 0o777).toBe(0o644);
  const check = new Database(other, { readonly: true });
  expect(check.query("SELECT name FROM sqlite_master ORDER BY name").all()).toEqual([{ name: "t" }]);
  check.close();
});
