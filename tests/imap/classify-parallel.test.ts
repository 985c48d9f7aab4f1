/**
 * A large first classification over two upstream sessions, against the real Dovecot (docs/filtering.md, "Deciding a
 * message"): from CLASSIFY_PARALLEL_MIN unclassified UIDs the session's second upstream connection fetches chunks
 * too. What each Dovecot session read comes from Dovecot's own log (`hdr_count` at disconnect); what the agent sees
 * comes from the seeder's manifest.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { readFileSync } from "node:fs";
import { addUser } from "../../scripts/upstreams/users.ts";
import { CLASSIFY_CHUNK, CLASSIFY_PARALLEL_MIN } from "../../src/imap/limits.ts";
import { createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { SEED_RULES } from "./filtered-fixture.ts";
import { RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

setDefaultTimeout(60_000);

/** The seed config's rules, with a second filtered folder for STATUS. */
const RULES = SEED_RULES.replace('folders = ["INBOX"]', 'folders = ["INBOX", "Archive"]');

let proxy: TestProxy;

beforeAll(async () => {
  expect(RULES).toContain('folders = ["INBOX", "Archive"]');
  proxy = await startTestProxy({ rules: RULES });
});

afterAll(async () => {
  await proxy?.close();
});

const visibleUids = (m: TestMailbox, folder: string) =>
  m.manifest.folders[folder]!.filter((x) => x.from.startsWith("notifications@")).map((x) => x.uid);

/** `hdr_count` of each of the user's Dovecot IMAP sessions that has ended, once `sessions` have. */
async function headerCounts(user: string, sessions: number): Promise<number[]> {
  const prefix = `imap(${user})<`;
  for (let i = 0; i < 100; i++) {
    const counts = readFileSync(upstreams().logs["dovecot"]!, "utf8")
      .split("\n")
      .filter((line) => line.includes(prefix) && line.includes("Disconnected"))
      .map((line) => Number(/ hdr_count=(\d+)/.exec(line)?.[1] ?? "NaN"));
    if (counts.length >= sessions) return counts;
    await Bun.sleep(100);
  }
  throw new Error(`Dovecot did not log ${sessions} ended sessions of ${user}`);
}

async function login(m: TestMailbox): Promise<RawImap> {
  return RawImap.login(proxy.port, m);
}

const uidSearch = (reply: string) =>
  reply
    .split("\r\n")
    .filter((l) => l.startsWith("* SEARCH"))
    .flatMap((l) => l.slice(8).trim().split(" ").filter(Boolean).map(Number));

describe("first SELECT of a large filtered folder", () => {
  test("2 Dovecot sessions share header reads; agent sees the manifest; STATUS piped on session 2 right", async () => {
    const m = await createMailbox({
      seed: { folders: { INBOX: CLASSIFY_PARALLEL_MIN + 4000, Archive: 300 }, seed: 13 },
    });
    const inbox = visibleUids(m, "INBOX");
    const archive = visibleUids(m, "Archive");
    const c = await login(m);
    try {
      // Pipelined: STATUS of another filtered folder classifies it on the second session, right after the helper.
      c.write(`s EXAMINE INBOX\r\nt STATUS Archive (MESSAGES UIDNEXT)\r\n`);
      const selected = await c.waitTagged("s");
      expect(statusOf(selected, "s")).toStartWith("s OK");
      expect(selected).toContain(`* ${inbox.length} EXISTS\r\n`);
      const status = await c.waitTagged("t");
      expect(statusOf(status, "t")).toStartWith("t OK");
      expect(status).toContain(
        `* STATUS Archive (MESSAGES ${archive.length} UIDNEXT ${archive[archive.length - 1]! + 1})`,
      );
      expect(uidSearch(await c.command("u", "UID SEARCH ALL"))).toEqual(inbox);
      await c.command("z", "LOGOUT");
    } finally {
      c.close();
    }
    const counts = await headerCounts(m.user, 2);
    expect(counts.length).toBe(2);
    // Every message header was read once, by one of the two sessions; each read at least one chunk of INBOX.
    expect(counts.reduce((a, b) => a + b, 0)).toBe(CLASSIFY_PARALLEL_MIN + 4000 + 300);
    for (const n of counts) expect(n).toBeGreaterThanOrEqual(CLASSIFY_CHUNK);
  });

  test("when the second login fails, the first session classifies alone and the SELECT still succeeds", async () => {
    const m = await createMailbox({ seed: { folders: { INBOX: CLASSIFY_PARALLEL_MIN }, seed: 14 } });
    const inbox = visibleUids(m, "INBOX");
    const c = await login(m);
    try {
      // The password changes upstream after the agent's login: only a new login is refused. Dovecot reads a changed
      // passwd-file at most once a second.
      addUser(upstreams(), m.address, "changed-after-login");
      await Bun.sleep(1100);
      const selected = await c.command("s", "EXAMINE INBOX");
      expect(statusOf(selected, "s")).toStartWith("s OK");
      expect(selected).toContain(`* ${inbox.length} EXISTS\r\n`);
      expect(uidSearch(await c.command("u", "UID SEARCH ALL"))).toEqual(inbox);
      await c.command("z", "LOGOUT");
    } finally {
      c.close();
    }
    const counts = await headerCounts(m.user, 1);
    expect(counts).toEqual([CLASSIFY_PARALLEL_MIN]);
    // The second login was tried and refused (Dovecot logs a failed login once its delay of about 2 s is over).
    let refused = false;
    for (let i = 0; i < 60 && !refused; i++) {
      refused = readFileSync(upstreams().logs["dovecot"]!, "utf8")
        .split("\n")
        .some((l) => l.includes(`user=<${m.user}>`) && l.includes("auth failed"));
      if (!refused) await Bun.sleep(100);
    }
    expect(refused).toBe(true);
  });
});
