/**
 * Classification against the real Dovecot: a seeded INBOX of 1,200 messages with mixed senders, classified through
 * an upstream connection; the expected visible set comes from the seeder's manifest, never from the proxy.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ClassificationCache } from "../../src/imap/cache.ts";
import { type ClassifyStats, classifyMailbox, type MessageFilter, messageFilter } from "../../src/imap/classify.ts";
import type { UpstreamSession } from "../../src/imap/upstream.ts";
import { compilePolicy, type RuleSpec } from "../../src/policy/index.ts";
import { connectImap, createMailbox, type SeededMessage, type TestMailbox } from "../fixtures/index.ts";
import { directUpstream } from "./helpers.ts";

setDefaultTimeout(60_000);

const SEED_RULES: RuleSpec[] = [
  {
    name: "Transactional emails from known senders",
    folders: ["INBOX"],
    from: ["notifications@*"],
    action: "allow",
    operations: ["read"],
  },
  { name: "Deny everything else", action: "deny" },
];

let mailbox: TestMailbox;
let up: UpstreamSession;
let dir: string;

/** EXAMINE + UID SEARCH ALL, as the session does at SELECT. */
async function examine(session: UpstreamSession, folder: string): Promise<{ uidValidity: number; uids: number[] }> {
  let uidValidity = 0;
  const st = await session.run({ name: "EXAMINE", mailbox: folder }, (r) => {
    if (r.type === "status" && r.code?.known && r.code.name === "UIDVALIDITY") uidValidity = r.code.value;
  });
  expect(st.status).toBe("OK");
  const uids: number[] = [];
  await session.run(
    { name: "SEARCH", uid: true, returnOptions: null, charset: null, criteria: [{ key: "ALL" }] },
    (r) => {
      if (r.type === "SEARCH") uids.push(...r.numbers);
    },
  );
  uids.sort((a, b) => a - b);
  return { uidValidity, uids };
}

const expected = (messages: readonly SeededMessage[], visible: (m: SeededMessage) => boolean) =>
  messages.filter(visible).map((m) => m.uid);

beforeAll(async () => {
  mailbox = await createMailbox({ seed: { folders: { INBOX: 1200, Archive: 150 }, seed: 7, attachmentRatio: 0.25 } });
  up = await directUpstream(mailbox);
  dir = mkdtempSync(join(tmpdir(), "mailgator-classify-e2e-"));
});

afterAll(async () => {
  await up?.logout();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("classification against Dovecot", () => {
  const classify = async (
    filter: MessageFilter,
    folder: string,
    cache: ClassificationCache | null,
    stats: ClassifyStats,
  ) => {
    const { uidValidity, uids } = await examine(up, folder);
    return classifyMailbox({
      runner: up,
      filter,
      uids,
      uidValidity,
      cache,
      account: `dovecot/${mailbox.user}`,
      mailbox: folder,
      stats,
      chunk: 500,
    });
  };

  test("the seed rule: INBOX shows exactly the manifest's notifications@ mail; cache serves 2nd open", async () => {
    const inbox = mailbox.manifest.folders["INBOX"]!;
    expect(inbox.length).toBe(1200);
    const want = expected(inbox, (m) => m.from.startsWith("notifications@"));
    // The mix has the display-name and encoded-word tricks; they must stay hidden.
    expect(inbox.some((m) => m.fromName === "notifications@shop.test")).toBe(true);
    expect(want.length).toBeGreaterThan(100);
    expect(want.length).toBeLessThan(1200);

    const filter = messageFilter(compilePolicy(SEED_RULES), "INBOX", null)!;
    const cache = ClassificationCache.open(join(dir, "mailgator-cache.db"))!;
    const first: ClassifyStats = { commands: 0, messages: 0 };
    const r1 = await classify(filter, "INBOX", cache, first);
    expect([...r1.visible.uids()]).toEqual(want);
    expect(r1.fromCache).toBe(false);
    expect(first).toEqual({ commands: 3, messages: 1200 });

    const second: ClassifyStats = { commands: 0, messages: 0 };
    const r2 = await classify(filter, "INBOX", cache, second);
    expect(r2.fromCache).toBe(true);
    expect(second).toEqual({ commands: 0, messages: 0 });
    expect([...r2.visible.uids()]).toEqual(want);

    // One new visible and one new hidden message: only those two are fetched.
    const direct = await connectImap(mailbox);
    try {
      await direct.append("INBOX", "From: Shop <notifications@shop.test>\r\nSubject: new\r\n\r\nhi\r\n");
      await direct.append("INBOX", 'From: "notifications@shop.test" <spam@evil.test>\r\nSubject: new\r\n\r\nhi\r\n');
    } finally {
      await direct.logout();
    }
    const third: ClassifyStats = { commands: 0, messages: 0 };
    const r3 = await classify(filter, "INBOX", cache, third);
    expect(third).toEqual({ commands: 1, messages: 2 });
    expect([...r3.visible.uids()]).toEqual([...want, 1201]);
    expect(r3.visible.uidNext).toBe(1202);
    cache.close();
  });

  test("has_attachment reads BODYSTRUCTURE; an encoded-word subject matches decoded", async () => {
    const inbox = mailbox.manifest.folders["INBOX"]!;
    const noAttachments = messageFilter(
      compilePolicy([{ name: "plain only", folders: ["INBOX"], hasAttachment: false, action: "allow" }]),
      "INBOX",
      null,
    )!;
    const r1 = await classify(noAttachments, "INBOX", null, { commands: 0, messages: 0 });
    const plain = expected(inbox, (m) => !m.hasAttachment);
    // The two messages appended above have no attachment.
    expect([...r1.visible.uids()]).toEqual([...plain, 1201, 1202]);

    const cafe = messageFilter(
      compilePolicy([{ name: "café", folders: ["INBOX"], subject: ["café on friday *"], action: "allow" }]),
      "INBOX",
      null,
    )!;
    const r2 = await classify(cafe, "INBOX", null, { commands: 0, messages: 0 });
    const want = expected(inbox, (m) => m.subject.toLowerCase().startsWith("café on friday "));
    expect(want.length).toBeGreaterThan(0);
    expect([...r2.visible.uids()]).toEqual(want);
  });

  test("a new UIDVALIDITY invalidates the cached classification", async () => {
    const rules: RuleSpec[] = [{ name: "archive", folders: ["Archive"], from: ["notifications@*"], action: "allow" }];
    const filter = messageFilter(compilePolicy(rules), "Archive", null)!;
    const cache = ClassificationCache.open(join(dir, "mailgator-cache.db"))!;
    const archive = mailbox.manifest.folders["Archive"]!;
    const r1 = await classify(filter, "Archive", cache, { commands: 0, messages: 0 });
    expect([...r1.visible.uids()]).toEqual(expected(archive, (m) => m.from.startsWith("notifications@")));
    const validity1 = (await examine(up, "Archive")).uidValidity;

    // Recreate the folder: Dovecot gives it a new UIDVALIDITY; UIDs start again at 1.
    await up.run({ name: "UNSELECT" });
    const direct = await connectImap(mailbox);
    try {
      await direct.mailboxDelete("Archive");
      await direct.mailboxCreate("Archive");
      await direct.append("Archive", "From: spam@evil.test\r\nSubject: a\r\n\r\nx\r\n");
      await direct.append("Archive", "From: notifications@shop.test\r\nSubject: b\r\n\r\nx\r\n");
    } finally {
      await direct.logout();
    }
    const stats: ClassifyStats = { commands: 0, messages: 0 };
    const r2 = await classify(filter, "Archive", cache, stats);
    expect((await examine(up, "Archive")).uidValidity).not.toBe(validity1);
    expect(r2.fromCache).toBe(false);
    expect(stats.messages).toBe(2);
    expect([...r2.visible.uids()]).toEqual([2]);
    cache.close();
  });
});
