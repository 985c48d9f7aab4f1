/**
 * Classification benchmark (docs/filtering.md, Figures): a fresh user's INBOX seeded with N messages (default
 * 100,000; the seeder's sender mix), classified under the seed rule (`from = "notifications@*"`) through one
 * upstream connection, as the proxy's SELECT will do it:
 *
 * 1. cold: Dovecot's first EXAMINE of the folder (it builds its index), UID SEARCH ALL, classification with an
 *    empty cache (Dovecot reads every message file for the From header);
 * 2. re-open with the cache (the target: <= 0.2 s);
 * 3. warm without the cache (Dovecot now answers From from its cache file), at several chunk sizes;
 * 4. the upstream SEARCH prefilter (`UID SEARCH FROM "notifications@"`), then a fetch of only its hits.
 *
 * Prints one JSON line of figures. Checks the visible set against the seeder's manifest.
 *
 *   bun scripts/bench/classify.ts [--count N] [--chunks 500,2000,5000]
 *
 * Uses MAILGATOR_UPSTREAMS when set, otherwise starts the servers with scripts/upstreams. The user's Maildir is
 * removed at the end.
 */

import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { ClassificationCache } from "../../src/imap/cache.ts";
import { type ClassifyStats, classifyMailbox, classifyUids, messageFilter } from "../../src/imap/classify.ts";
import { UpstreamSession } from "../../src/imap/upstream.ts";
import { compilePolicy } from "../../src/policy/index.ts";
import { seedMaildir } from "../upstreams/seed.ts";
import { addUser } from "../upstreams/users.ts";
import { benchOptions } from "./args.ts";
import { upstreamDescription } from "./proxy-child.ts";

const USAGE = "bun scripts/bench/classify.ts [--count N] [--chunks 500,2000,5000]";
const OPTIONS = { values: ["count", "chunks"], switches: [] };
const opts = benchOptions(process.argv.slice(2), USAGE, OPTIONS);
const count = opts.number("count", 100000);
const chunks = opts.text("chunks", "500,2000,5000").split(",").map(Number);

const servers = await upstreamDescription();
const address = `bench-classify-${Date.now().toString(36)}@${servers.userDomain}`;
const user = addUser(servers, address, "bench-password");
const cacheDir = mkdtempSync(join(tmpdir(), "mailgator-bench-classify-"));
const figures: Record<string, unknown> = { messages: count };
const seconds = (from: number) => Number(((performance.now() - from) / 1000).toFixed(3));

try {
  let t = performance.now();
  const manifest = seedMaildir(user.maildir, { folders: { INBOX: count }, owner: address });
  figures["seedSeconds"] = seconds(t);
  const want = manifest.folders["INBOX"]!.filter((m) => m.from.startsWith("notifications@")).map((m) => m.uid);
  figures["visible"] = want.length;

  const up = await UpstreamSession.open(
    {
      host: servers.host,
      port: servers.ports.imaps,
      tls: "tls",
      skipVerify: false,
      extraCa: readFileSync(servers.caFile, "utf8"),
      connectTimeoutMs: 5000,
    },
    { connectMs: 5000, handshakeMs: 5000, commandMs: 300_000 },
  );
  if (!(await up.login(user.user, user.password))) throw new Error("bench: login failed");
  const filter = messageFilter(
    compilePolicy([
      {
        name: "Transactional emails from known senders",
        folders: ["INBOX"],
        from: ["notifications@*"],
        action: "allow",
        operations: ["read"],
      },
      { name: "Deny everything else", action: "deny" },
    ]),
    "INBOX",
    null,
  )!;
  const cache = ClassificationCache.open(join(cacheDir, "mailgator-cache.db"))!;

  const examine = async () => {
    let uidValidity = 0;
    await up.run({ name: "EXAMINE", mailbox: "INBOX" }, (r) => {
      if (r.type === "status" && r.code?.known && r.code.name === "UIDVALIDITY") uidValidity = r.code.value;
    });
    return uidValidity;
  };
  const searchAll = async () => {
    const uids: number[] = [];
    await up.run({ name: "SEARCH", uid: true, returnOptions: null, charset: null, criteria: [{ key: "ALL" }] }, (r) => {
      if (r.type === "SEARCH") for (const n of r.numbers) uids.push(n);
    });
    return uids.sort((a, b) => a - b);
  };
  const check = (got: Uint32Array, label: string) => {
    if (got.length !== want.length || got.some((u, i) => u !== want[i]))
      throw new Error(`bench: ${label}: visible set differs from the manifest`);
  };
  const open = async (label: string, withCache: boolean, chunk?: number) => {
    const start = performance.now();
    const uidValidity = await examine();
    const examineSeconds = seconds(start);
    const uids = await searchAll();
    const searchSeconds = Number((seconds(start) - examineSeconds).toFixed(3));
    const stats: ClassifyStats = { commands: 0, messages: 0 };
    const c0 = performance.now();
    const cpu0 = process.cpuUsage();
    const r = await classifyMailbox({
      runner: up,
      filter,
      uids,
      uidValidity,
      cache: withCache ? cache : null,
      account: `bench/${user.user}`,
      mailbox: "INBOX",
      stats,
      ...(chunk ? { chunk } : {}),
    });
    const cpu = process.cpuUsage(cpu0);
    check(r.visible.uids(), label);
    figures[label] = {
      totalSeconds: seconds(start),
      examineSeconds,
      searchAllSeconds: searchSeconds,
      classifySeconds: seconds(c0),
      proxyCpuSeconds: Number(((cpu.user + cpu.system) / 1e6).toFixed(3)),
      ...stats,
      fromCache: r.fromCache,
    };
    await up.run({ name: "UNSELECT" });
  };

  await open("cold", true);
  await open("reopenWithCache", true);
  for (const chunk of chunks) await open(`warmNoCacheChunk${chunk}`, false, chunk);

  // The prefilter: upstream SEARCH narrows, local parsing still decides every hit.
  await examine();
  t = performance.now();
  const hits: number[] = [];
  await up.run(
    {
      name: "SEARCH",
      uid: true,
      returnOptions: null,
      charset: null,
      criteria: [{ key: "FROM", value: "notifications@" }],
    },
    (r) => {
      if (r.type === "SEARCH") for (const n of r.numbers) hits.push(n);
    },
  );
  hits.sort((a, b) => a - b);
  const searchSeconds = seconds(t);
  const stats: ClassifyStats = { commands: 0, messages: 0 };
  // Hits are scattered: one command per hit run would be needed to avoid fetching the misses; ranges of
  // consecutive hits are what `classifyUids` sends, so pass them per chunk as it does.
  const visible = await classifyUids(up, filter, hits, stats);
  figures["prefilter"] = { searchSeconds, hits: hits.length, totalSeconds: seconds(t), ...stats };
  check(visible, "prefilter");
  await up.logout();
  cache.close();
  console.log(JSON.stringify(figures));
} finally {
  rmSync(cacheDir, { recursive: true, force: true });
  rmSync(dirname(user.maildir), { recursive: true, force: true });
}
