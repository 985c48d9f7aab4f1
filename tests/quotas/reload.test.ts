/**
 * `[[quotas]]` across a reload (docs/operations.md "Reload", src/quotas/index.ts `openQuotas`): the running Quotas
 * object takes the new entries; a reload that adds the first quotas opens the state database then, and one that
 * cannot open it fails with nothing changed. The end-to-end case (SIGHUP to `mailgator serve`) is in
 * tests/e2e/reload.test.ts.
 */
import { Database } from "bun:sqlite";
import { expect, test } from "bun:test";
import { parseConfig } from "../../src/config/index.ts";
import { openQuotas } from "../../src/quotas/index.ts";

function settings(quotas: string, statePath = "/var/lib/mailgator/state.db") {
  const config = parseConfig(`[[rules]]\nname = "all"\naction = "allow"\n${quotas}`, "/tmp/m.toml");
  return { quotas: config.quotas, state: { path: statePath } };
}

const READS_2 = `[[quotas]]\nname = "r"\nreads_per_minute = 2\n`;
const READS_5 = `[[quotas]]\nname = "r"\nreads_per_minute = 5\n`;

test("no quotas at start; a reload adds some: the state database is opened then, and they count", () => {
  const opened: string[] = [];
  const open = (path: string) => {
    opened.push(path);
    return new Database(":memory:");
  };
  const running = openQuotas(settings(""), null, open);
  expect(running.quotas.configured).toBe(false);
  expect(running.quotas.chargeReads({ login: "a" }, 10).ok).toBe(true);
  expect(opened).toEqual([]);

  const prepared = running.prepareReload(settings(READS_2));
  // Prepared, not committed: nothing changed yet.
  expect(running.quotas.configured).toBe(false);
  prepared.commit();
  expect(opened).toEqual(["/var/lib/mailgator/state.db"]);
  expect(prepared.warnings).toEqual([]);
  expect(running.quotas.chargeReads({ login: "a" }, 2).ok).toBe(true);
  expect(running.quotas.chargeReads({ login: "a" }, 1).ok).toBe(false);
  running.close();
});

test("a changed limit applies to what was already counted; removing the quotas lifts them", () => {
  const running = openQuotas(settings(READS_2), null, () => new Database(":memory:"));
  expect(running.quotas.chargeReads({ login: "a" }, 2).ok).toBe(true);
  running.prepareReload(settings(READS_5)).commit();
  expect(running.quotas.chargeReads({ login: "a" }, 4).ok).toBe(false); // 2 + 4 > 5
  expect(running.quotas.chargeReads({ login: "a" }, 3).ok).toBe(true);
  running.prepareReload(settings("")).commit();
  expect(running.quotas.configured).toBe(false);
  expect(running.quotas.chargeReads({ login: "a" }, 100).ok).toBe(true);
  running.close();
});

test("no quotas at start; a reload adds some under another [state] path: the start's path is opened, a warning", () => {
  // serve claimed the start's path (`<path>.pid`); another may be a second serve's.
  const opened: string[] = [];
  const running = openQuotas(settings("", "/a/state.db"), null, (path) => {
    opened.push(path);
    return new Database(":memory:");
  });
  const prepared = running.prepareReload(settings(READS_2, "/b/state.db"));
  expect(prepared.warnings).toEqual([
    "[state] path cannot change on reload: quotas are counted in /a/state.db; restart to use /b/state.db",
  ]);
  prepared.commit();
  expect(opened).toEqual(["/a/state.db"]);
  expect(running.quotas.chargeReads({ login: "a" }, 2).ok).toBe(true);
  expect(running.quotas.chargeReads({ login: "a" }, 1).ok).toBe(false);
  running.close();
});

test("a state database that cannot be opened fails the reload: the running quotas stay", () => {
  const running = openQuotas(settings(""), null, () => {
    throw new Error("unable to open database file");
  });
  expect(() => running.prepareReload(settings(READS_2))).toThrow("unable to open database file");
  expect(running.quotas.configured).toBe(false);
});

test("a new [state] path is not taken on reload: a warning, and the quotas still count in the open database", () => {
  const opened: string[] = [];
  const running = openQuotas(settings(READS_2, "/a/state.db"), null, (path) => {
    opened.push(path);
    return new Database(":memory:");
  });
  expect(running.quotas.chargeReads({ login: "a" }, 2).ok).toBe(true);
  const prepared = running.prepareReload(settings(READS_5, "/b/state.db"));
  expect(prepared.warnings).toEqual([
    "[state] path cannot change on reload: quotas are still counted in /a/state.db; restart to use /b/state.db",
  ]);
  prepared.commit();
  expect(opened).toEqual(["/a/state.db"]);
  expect(running.quotas.chargeReads({ login: "a" }, 4).ok).toBe(false);
  expect(running.quotas.chargeReads({ login: "a" }, 3).ok).toBe(true);
});

test("on the database shared with sealed records, the path change is left to serve's warning", () => {
  const running = openQuotas(settings(READS_2, "/a/state.db"), new Database(":memory:"), () => {
    throw new Error("must not open another database");
  });
  expect(running.prepareReload(settings(READS_5, "/b/state.db")).warnings).toEqual([]);
});

test("no quotas at start on a state database open for other records: a reload adds them, their table with them", () => {
  // serve opens the state database for OAuth2 tokens or held messages; without quotas it has no quota table.
  const db = new Database(":memory:");
  const running = openQuotas(settings(""), db, () => {
    throw new Error("must not open another database");
  });
  const prepared = running.prepareReload(settings(READS_2));
  prepared.commit();
  expect(running.quotas.chargeReads({ login: "a" }, 2).ok).toBe(true);
  const over = running.quotas.chargeReads({ login: "a" }, 1);
  expect(over.ok).toBe(false);
  expect(over.ok === false && over.exceeded?.limit).toBe("reads_per_minute");
});
