/**
 * Classification cache row benchmark (docs/filtering.md, "The cache"): the cost of one folder's row, written and
 * read back as the proxy does (`ClassificationCache.put`, then `get`, a VisibleSet built from it and `retain`ed
 * against the folder's UIDs), with and without the hidden UIDs and their rule slots. No servers needed.
 *
 *   bun scripts/bench/cache.ts [--count 100000] [--visible 0.3] [--rounds 8]
 *
 * Prints one JSON line: the best round's mean per operation, in milliseconds.
 */

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ClassificationCache } from "../../src/imap/cache.ts";
import { VisibleSet } from "../../src/imap/view.ts";
import { benchOptions } from "./args.ts";

const opts = benchOptions(
  process.argv.slice(2),
  "bun scripts/bench/cache.ts [--count 100000] [--visible 0.3] [--rounds 8]",
  { values: ["count", "visible", "rounds"] },
);
const count = opts.number("count", 100_000);
const share = opts.number("visible", 0.3);
const rounds = opts.number("rounds", 8);
const REPEAT = 20;

const all = Array.from({ length: count }, (_, i) => i + 1);
// Spread evenly: every message whose position falls below the share is visible.
const isVisible = (uid: number) => Math.floor(uid * share) !== Math.floor((uid - 1) * share);
const visible = all.filter(isVisible);
const hidden = all.filter((u) => !isVisible(u));

const dir = mkdtempSync(join(tmpdir(), "mailgator-bench-cache-"));
const cache = ClassificationCache.open(join(dir, "mailgator-cache.db"));
if (cache === null) throw new Error("bench: the cache could not be opened");
const key = { account: "bench", folder: "INBOX", fingerprint: "bench" };

function round(withHidden: boolean): { put: number; read: number } {
  const set = new VisibleSet(visible, count, 0, withHidden ? { uids: hidden, slots: hidden.map(() => 1) } : undefined);
  const empty = { uids: new Uint32Array(0), slots: new Uint16Array(0) };
  const row = {
    uidValidity: 1,
    classifiedThrough: count,
    highestVisible: set.highestEver,
    visible: set.uids(),
    hidden: withHidden ? set.hidden() : empty,
  };
  let t = performance.now();
  for (let i = 0; i < REPEAT; i++) cache!.put(key, row);
  const put = (performance.now() - t) / REPEAT;
  t = performance.now();
  for (let i = 0; i < REPEAT; i++) {
    const got = cache!.get(key, 1);
    if (got === null) throw new Error("bench: cache miss");
    new VisibleSet(got.visible, got.classifiedThrough, got.highestVisible, got.hidden).retain(all);
  }
  return { put, read: (performance.now() - t) / REPEAT };
}

const best = { visibleOnly: { put: Infinity, read: Infinity }, withHidden: { put: Infinity, read: Infinity } };
for (let r = 0; r < rounds; r++) {
  for (const withHidden of [false, true]) {
    const m = round(withHidden);
    const b = withHidden ? best.withHidden : best.visibleOnly;
    b.put = Math.min(b.put, m.put);
    b.read = Math.min(b.read, m.read);
  }
}
cache.close();
rmSync(dir, { recursive: true, force: true });
const ms = (x: number) => Math.round(x * 100) / 100;
console.log(
  JSON.stringify({
    count,
    visible: visible.length,
    hidden: hidden.length,
    visibleOnly: { putMs: ms(best.visibleOnly.put), readMs: ms(best.visibleOnly.read) },
    withHidden: { putMs: ms(best.withHidden.put), readMs: ms(best.withHidden.read) },
  }),
);
