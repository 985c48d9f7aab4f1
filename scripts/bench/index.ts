/**
 * `npm run bench`: every benchmark in turn, against one set of local upstream
 * servers started for the run (or those named by MAILGATOR_UPSTREAMS). Each
 * benchmark prints its own figures; proxy benchmarks compare Mailgator with a
 * direct connection to the same server in the same run and print the ratio.
 *
 *   bun scripts/bench/index.ts [name ...]    (names: policy audit imap-wire cold-cache seed smtp imap classify
 *                                           filtered stress)
 */

import { chmodSync, existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startUpstreams } from "../upstreams/start.ts";
import { stopUpstreams } from "../upstreams/stop.ts";

// `stress` needs Dovecot's imaptest, which is not part of the project: run by default only when IMAPTEST names it.
const ALL = [
  ...["policy", "audit", "imap-wire", "cold-cache", "seed", "smtp", "imap", "classify", "filtered"],
  ...(process.env["IMAPTEST"] ? ["stress"] : []),
];
const NEEDS_SERVERS = new Set(["seed", "smtp", "imap", "classify", "filtered", "stress"]);
const KNOWN = [...ALL.filter((n) => n !== "stress"), "stress"];
const chosen = process.argv.length > 2 ? process.argv.slice(2) : ALL;
if (chosen.includes("--help") || chosen.includes("-h")) {
  console.log(
    `usage: bun scripts/bench/index.ts [name ...]   (names: ${KNOWN.join(" ")}; ` +
      "none: all, stress only when IMAPTEST names imaptest)",
  );
  process.exit(0);
}
// A name that is no benchmark (a typo) runs nothing at all: said, and exit 2, rather than a run that reports nothing.
const unknown = chosen.filter((name) => !KNOWN.includes(name));
if (unknown.length > 0) {
  console.error(`bench: no benchmark named ${unknown.join(", ")} (names: ${KNOWN.join(" ")})`);
  process.exit(2);
}
const present = chosen.filter((name) => existsSync(join(import.meta.dir, `${name}.ts`)));

let dir: string | null = null;
let env = { ...process.env };
if (present.some((n) => NEEDS_SERVERS.has(n)) && !process.env["MAILGATOR_UPSTREAMS"]) {
  dir = mkdtempSync(join(tmpdir(), "mailgator-bench-"));
  chmodSync(dir, 0o755); // mkdtemp makes it 0700; Postfix and Dovecot drop privileges and must reach their files
  await startUpstreams({ dir });
  env = { ...env, MAILGATOR_UPSTREAMS: join(dir, "upstreams.json") };
}

let failed = 0;
try {
  for (const name of present) {
    console.log(`\n== ${name}`);
    const p = Bun.spawn([process.execPath, join(import.meta.dir, `${name}.ts`)], {
      env,
      stdout: "inherit",
      stderr: "inherit",
    });
    const code = await p.exited;
    if (code !== 0) {
      failed++;
      console.log(`(${name} exited ${code})`);
    }
  }
} finally {
  if (dir) await stopUpstreams({ dir });
}
process.exitCode = failed ? 1 : 0;
