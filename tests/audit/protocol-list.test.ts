/**
 * `mailgator audit --protocol` takes every protocol a row can have (PROTOCOLS, src/audit/event.ts: `oauth2` too,
 * for the proxy's own token requests); its usage text and docs/audit.md's filter list say the same.
 */
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { PROTOCOLS } from "../../src/audit/index.ts";
import { usage } from "../../src/cli/commands/audit.ts";

test("the usage text lists every protocol --protocol accepts", () => {
  expect(/--protocol ([a-z0-9|]+)\]/.exec(usage)?.[1]?.split("|")).toEqual([...PROTOCOLS]);
});

test("docs/audit.md's filter list names every protocol --protocol accepts", () => {
  const doc = readFileSync(join(import.meta.dir, "../../docs/audit.md"), "utf8");
  const listed = /`--protocol` \(([^)]*)\)/.exec(doc)?.[1] ?? "";
  expect([...listed.matchAll(/`([a-z0-9]+)`/g)].map((m) => m[1])).toEqual([...PROTOCOLS]);
});
