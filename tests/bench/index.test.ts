/**
 * `npm run bench -- NAME`: a name that is no benchmark (a typo) is refused with exit 2 and the list of names, before
 * any server starts; before, it ran nothing and exited 0, as if every benchmark asked for had passed.
 */

import { expect, test } from "bun:test";
import { join } from "node:path";

const SCRIPT = join(import.meta.dir, "../../scripts/bench/index.ts");

test("an unknown benchmark name is refused with exit 2; --help lists the names", () => {
  const typo = Bun.spawnSync([process.execPath, SCRIPT, "policy", "imapp"], { env: { ...process.env } });
  expect(typo.exitCode).toBe(2);
  expect(typo.stderr.toString()).toStartWith("bench: no benchmark named imapp (names: policy audit imap-wire ");
  expect(typo.stdout.toString()).toBe("");
  const help = Bun.spawnSync([process.execPath, SCRIPT, "--help"]);
  expect(help.exitCode).toBe(0);
  expect(help.stdout.toString()).toContain("stress");
});
