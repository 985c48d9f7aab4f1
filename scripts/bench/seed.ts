/**
 * Seeding benchmark: writes N messages (default 100,000) into a fresh test user's INBOX, then
 * times Dovecot's first look at them (SELECT builds the index; UID SEARCH ALL; a FETCH of the
 * last 1,000 envelopes). Prints a JSON line of figures. The user's Maildir is removed after
 * unless --keep.
 *
 *   bun scripts/bench/seed.ts [--count N] [--dir D] [--keep]
 */
import { readFileSync, rmSync } from "node:fs";
import { dirname } from "node:path";
import { ImapFlow } from "imapflow";
import { seedMaildir } from "../upstreams/seed.ts";
import { startUpstreams } from "../upstreams/start.ts";
import { addUser } from "../upstreams/users.ts";
import { benchOptions } from "./args.ts";

const opts = benchOptions(process.argv.slice(2), "bun scripts/bench/seed.ts [--count N] [--dir D] [--keep]", {
  values: ["count", "dir"],
  switches: ["keep"],
});
const count = opts.number("count", 100_000);
const dir = opts.text("dir", "") || undefined;

const upstreams = await startUpstreams(dir === undefined ? {} : { dir });
const address = `bench-${Date.now().toString(36)}@${upstreams.userDomain}`;
const user = addUser(upstreams, address, "bench-password");

let started = performance.now();
const manifest = seedMaildir(user.maildir, { folders: { INBOX: count }, owner: address });
const seedSeconds = (performance.now() - started) / 1000;

const client = new ImapFlow({
  host: upstreams.host,
  port: upstreams.ports.imaps,
  secure: true,
  tls: { ca: readFileSync(upstreams.caFile), servername: upstreams.tlsName },
  auth: { user: user.user, pass: user.password },
  logger: false,
});
await client.connect();
started = performance.now();
const mailbox = await client.mailboxOpen("INBOX");
const selectSeconds = (performance.now() - started) / 1000;
started = performance.now();
const uids = (await client.search({ all: true }, { uid: true })) || [];
const searchSeconds = (performance.now() - started) / 1000;
started = performance.now();
let fetched = 0;
for await (const message of client.fetch(
  `${Math.max(1, count - 999)}:*`,
  { uid: true, envelope: true },
  { uid: true },
)) {
  if (message.envelope?.messageId !== manifest.folders["INBOX"]?.[message.uid - 1]?.messageId) {
    throw new Error(`bench: UID ${message.uid} is not the seeded message`);
  }
  fetched++;
}
const fetchSeconds = (performance.now() - started) / 1000;
await client.logout();
if (mailbox.exists !== count || uids.length !== count)
  throw new Error(`bench: Dovecot sees ${mailbox.exists} messages, seeded ${count}`);
if (!opts.has("keep")) rmSync(dirname(user.maildir), { recursive: true, force: true });

console.log(
  JSON.stringify({
    messages: count,
    seedSeconds: Number(seedSeconds.toFixed(2)),
    messagesPerSecond: Math.round(count / seedSeconds),
    dovecotFirstSelectSeconds: Number(selectSeconds.toFixed(2)),
    uidSearchAllSeconds: Number(searchSeconds.toFixed(2)),
    fetchLast1000EnvelopesSeconds: Number(fetchSeconds.toFixed(2)),
    fetched,
  }),
);
