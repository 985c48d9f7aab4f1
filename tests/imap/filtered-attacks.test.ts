/**
 * docs/protocol.md §7 cases 1–11, 21, 23, 24 and 27 against a filtered INBOX (the seed config's rules) over a raw
 * socket: every byte the agent receives is checked for hidden messages' Message-IDs, subjects and UIDs, and the
 * expected sets come from the seeder's manifest. Dovecot is read directly where the attack could change it.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { ImapFlow } from "imapflow";
import { MAX_SEARCH_NESTED_RANGES, MAX_SEARCH_SETS } from "../../src/imap/limits.ts";
import { connectImap, createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { type Expected, expected, expectNoLeak, fetchedUids, rawMessage, SEED_RULES } from "./filtered-fixture.ts";
import { RawImap, startTestProxy, statusOf, type TestProxy, upstreamState } from "./helpers.ts";

let mailbox: TestMailbox;
let proxy: TestProxy;
let e: Expected;
/** The highest UID in INBOX: a hidden message appended last. */
let lastHidden: number;

async function agent(p: TestProxy = proxy): Promise<RawImap> {
  return RawImap.login(p.port, mailbox);
}

async function direct(): Promise<ImapFlow> {
  return connectImap(mailbox);
}

beforeAll(async () => {
  mailbox = await createMailbox({ seed: { folders: { INBOX: 1000, Archive: 20 }, seed: 11 } });
  const client = await direct();
  const appended = await client.append("INBOX", rawMessage("spam@evil.test", "Hidden last arrival", "hidden-last"), []);
  lastHidden = (appended as { uid: number }).uid;
  await client.logout();
  const base = expected(mailbox.manifest.folders["INBOX"]!);
  e = { ...base, hiddenUids: new Set([...base.hiddenUids, lastHidden]) };
  expect(e.visible.length).toBeGreaterThan(100);
  expect(e.hidden.length).toBeGreaterThan(100);
  proxy = await startTestProxy({ rules: SEED_RULES });
});

afterAll(async () => {
  await proxy?.close();
});

describe("docs/protocol.md §7 against a filtered INBOX", () => {
  test("case 1: UID FETCH 1:* BODY.PEEK[] returns exactly the visible messages, numbered 1..n", async () => {
    const raw = await agent();
    await raw.command("s", "EXAMINE INBOX");
    const reply = await raw.command("f", "UID FETCH 1:* (BODY.PEEK[])");
    expect(statusOf(reply, "f")).toStartWith("f OK");
    const pairs = fetchedUids(reply);
    expect(pairs.map(([, uid]) => uid)).toEqual([...e.visibleUids]);
    expect(pairs.map(([seq]) => seq)).toEqual(e.visibleUids.map((_, i) => i + 1));
    for (const m of e.visible.slice(0, 20)) expect(reply).toContain(m.messageId);
    expectNoLeak(reply, e);
    raw.close();
  });

  test("case 2: UID FETCH of a hidden UID answers exactly as a nonexistent UID", async () => {
    const raw = await agent();
    await raw.command("s", "EXAMINE INBOX");
    const hiddenUid = e.hidden[0]!.uid;
    const hidden = await raw.command("f", `UID FETCH ${hiddenUid} (BODY.PEEK[] FLAGS)`);
    const absent = await raw.command("f", "UID FETCH 99999 (BODY.PEEK[] FLAGS)");
    expect(hidden).toBe(absent);
    expect(hidden).toBe("f OK Fetch completed\r\n");
    // The same for STORE, COPY and a UID SEARCH confined to it.
    expect(await raw.command("g", `UID SEARCH UID ${hiddenUid}`)).toBe(await raw.command("g", "UID SEARCH UID 99999"));
    raw.close();
  });

  test("case 3: UID FETCH 4294967295:* UID returns only the highest visible UID", async () => {
    const raw = await agent();
    await raw.command("s", "EXAMINE INBOX");
    const reply = await raw.command("f", "UID FETCH 4294967295:* (UID)");
    const maxVisible = e.visibleUids[e.visibleUids.length - 1]!;
    expect(fetchedUids(reply)).toEqual([[e.visibleUids.length, maxVisible]]);
    expect(reply).not.toContain(String(lastHidden));
    const star = await raw.command("g", "UID FETCH * (UID)");
    expect(fetchedUids(star)).toEqual([[e.visibleUids.length, maxVisible]]);
    raw.close();
  });

  test("case 4: FETCH |V|+1 gets the same error as any number beyond the last message", async () => {
    const raw = await agent();
    await raw.command("s", "EXAMINE INBOX");
    const n = e.visibleUids.length;
    const justAfter = await raw.command("f", `FETCH ${n + 1} (FLAGS)`);
    const beyondUpstream = await raw.command("f", `FETCH ${e.visibleUids.length + e.hiddenUids.size} (FLAGS)`);
    const far = await raw.command("f", "FETCH 4000000 (FLAGS)");
    expect(statusOf(justAfter, "f")).toStartWith("f BAD");
    expect(justAfter).toBe(beyondUpstream);
    expect(justAfter).toBe(far);
    expect(fetchedUids(await raw.command("g", `FETCH ${n} (UID)`))).toEqual([[n, e.visibleUids[n - 1]!]]);
    raw.close();
  });

  test("case 5: ESEARCH, SEARCH ALL, NOT and OR count visible messages only", async () => {
    const raw = await agent();
    await raw.command("s", "EXAMINE INBOX");
    const n = e.visibleUids.length;
    expect(await raw.command("a", "SEARCH RETURN (COUNT MIN MAX) ALL")).toStartWith(
      `* ESEARCH (TAG "a") MIN 1 MAX ${n} COUNT ${n}\r\n`,
    );
    const first = e.visibleUids[0]!;
    const last = e.visibleUids[n - 1]!;
    expect(await raw.command("u", "UID SEARCH RETURN (COUNT MIN MAX) ALL")).toStartWith(
      `* ESEARCH (TAG "u") UID MIN ${first} MAX ${last} COUNT ${n}\r\n`,
    );
    const all = await raw.command("b", "SEARCH ALL");
    expect(all).toStartWith(`* SEARCH ${e.visibleUids.map((_, i) => i + 1).join(" ")}\r\n`);
    // Every visible From contains "notifications"; hidden ones without it would match NOT.
    expect(await raw.command("c", "SEARCH NOT FROM notifications")).toStartWith("* SEARCH\r\n");
    const uidAll = await raw.command("d", "UID SEARCH NOT FROM boss");
    expect(uidAll).toStartWith(`* SEARCH ${e.visibleUids.join(" ")}\r\n`);
    const or = await raw.command("e", "UID SEARCH OR FROM spam FROM evil");
    // The display-name trick ("notifications@shop.test" <spam@evil.test>) matches upstream but is hidden here.
    expect(or).toStartWith("* SEARCH\r\n");
    expectNoLeak(all, e);
    expectNoLeak(uidAll + or, e, { uidSearch: true });
    raw.close();
  });

  test("sets inside NOT or OR are limited in the agent's runs: hidden messages between change no answer", async () => {
    const raw = await agent();
    await raw.command("s", "EXAMINE INBOX");
    // Hidden messages break the visible ones into hundreds of upstream runs: counted in those, 64 sets `1:*` inside
    // NOT passed MAX_SEARCH_NESTED_RANGES here, while a folder holding only the visible messages answered OK.
    const runs = e.visibleUids.filter((u, i) => i > 0 && e.hiddenUids.has(u - 1)).length;
    expect(runs * MAX_SEARCH_SETS).toBeGreaterThan(MAX_SEARCH_NESTED_RANGES);
    const nots = Array.from({ length: MAX_SEARCH_SETS }, () => "NOT 1:*").join(" ");
    expect(await raw.command("a", `SEARCH ${nots}`)).toBe("* SEARCH\r\na OK Search completed\r\n");
    const sorted = await raw.command("b", `UID SORT (ARRIVAL) UTF-8 ${nots}`);
    expect(sorted).toBe("* SORT\r\nb OK Sort completed\r\n");
    // OR over two sets: exactly the messages they name, in the agent's numbers.
    const or = await raw.command("c", "SEARCH OR 1:3 5 NOT 2");
    expect(or).toStartWith("* SEARCH 1 3 5\r\n");
    raw.close();
  });

  test("case 6: SEARCH RETURN (SAVE) and FETCH $ are refused", async () => {
    const raw = await agent();
    await raw.command("s", "EXAMINE INBOX");
    expect(statusOf(await raw.command("a", "SEARCH RETURN (SAVE) ALL"), "a")).toStartWith("a BAD");
    const dollar = await raw.command("b", "FETCH $ (BODY.PEEK[])");
    expect(statusOf(dollar, "b")).toStartWith("b BAD");
    expect(dollar).not.toContain("FETCH (");
    raw.close();
  });

  test("case 7: UID SORT and UID THREAD carry exactly the visible UIDs", async () => {
    const raw = await agent();
    await raw.command("s", "EXAMINE INBOX");
    const sort = await raw.command("a", "UID SORT (DATE) UTF-8 ALL");
    const thread = await raw.command("b", "UID THREAD REFERENCES UTF-8 ALL");
    expect(statusOf(sort, "a")).toStartWith("a OK");
    expect(statusOf(thread, "b")).toStartWith("b OK");
    const sorted = sort.split("\r\n")[0]!.split(" ").slice(2).map(Number);
    expect([...sorted].sort((x, y) => x - y)).toEqual([...e.visibleUids]);
    const threaded = (thread.split("\r\n")[0]!.match(/\d+/g) ?? []).map(Number);
    expect(threaded.sort((x, y) => x - y)).toEqual([...e.visibleUids]);
    expectNoLeak(sort + thread, e);
    raw.close();
  });

  test("case 8: STATUS counts visible messages only, selected or not; SIZE is refused", async () => {
    const raw = await agent();
    expect(statusOf(await raw.command("a", "STATUS INBOX (MESSAGES UNSEEN SIZE)"), "a")).toStartWith("a BAD");
    const unseen = e.visible.filter((m) => !m.flags.includes("\\Seen")).length;
    const maxVisible = e.visibleUids[e.visibleUids.length - 1]!;
    const want = `* STATUS INBOX (MESSAGES ${e.visibleUids.length} UNSEEN ${unseen} UIDNEXT ${maxVisible + 1})\r\n`;
    expect(await raw.command("b", "STATUS INBOX (MESSAGES UNSEEN UIDNEXT)")).toStartWith(want);
    await raw.command("s", "EXAMINE INBOX");
    expect(await raw.command("c", "STATUS INBOX (MESSAGES UNSEEN UIDNEXT)")).toStartWith(want);
    const rows = (await proxy.rows()).filter((r) => r.command === "STATUS" && r.decision === "allow");
    expect(rows.length).toBeGreaterThanOrEqual(2);
    for (const r of rows) {
      expect(r.count).toBe(e.visibleUids.length);
      expect(r.hiddenCount).toBe(e.hiddenUids.size);
    }
    raw.close();
  });

  test("case 9: ENABLE QRESYNC, SELECT (QRESYNC ...) and CHANGEDSINCE leak no VANISHED or MODSEQ", async () => {
    const raw = await agent();
    const enable = await raw.command("a", "ENABLE QRESYNC CONDSTORE");
    expect(enable).toStartWith("* ENABLED CONDSTORE\r\n");
    const sel = await raw.command("b", "SELECT INBOX (QRESYNC (1 1))");
    expect(statusOf(sel, "b")).toMatch(/^b (BAD|NO)/);
    const ex = await raw.command("c", "EXAMINE INBOX");
    expect(ex).toContain(`* ${e.visibleUids.length} EXISTS`);
    expect(ex).toContain("* OK [NOMODSEQ]");
    const changed = await raw.command("d", "FETCH 1:* (FLAGS) (CHANGEDSINCE 1)");
    expect(statusOf(changed, "d")).toStartWith("d BAD");
    expectNoLeak(enable + sel + ex + changed, e);
    raw.close();
  });

  test("case 21: a read-only agent's FETCH BODY[] and RFC822 leave \\Seen unset upstream", async () => {
    const target = e.visible.filter((m) => !m.flags.includes("\\Seen")).slice(0, 2);
    expect(target.length).toBe(2);
    const raw = await agent();
    await raw.command("s", "SELECT INBOX");
    const seqA = e.visibleUids.indexOf(target[0]!.uid) + 1;
    const seqB = e.visibleUids.indexOf(target[1]!.uid) + 1;
    const a = await raw.command("a", `FETCH ${seqA} BODY[]`);
    const b = await raw.command("b", `FETCH ${seqB} RFC822`);
    expect(a).toContain(`* ${seqA} FETCH (BODY[] {`);
    expect(b).toContain(`* ${seqB} FETCH (RFC822 {`);
    expect(a).toContain(target[0]!.messageId);
    raw.close();
    const client = await direct();
    await client.mailboxOpen("INBOX", { readOnly: true });
    for (const m of target) {
      const got = await client.fetchOne(String(m.uid), { flags: true }, { uid: true });
      expect(got && got.flags?.has("\\Seen")).toBe(false);
    }
    await client.logout();
  });

  test("case 24: COPY to Trash, STORE \\Deleted, EXPUNGE and UID MOVE are refused; Dovecot unchanged", async () => {
    const before = await upstreamState(mailbox);
    const raw = await agent();
    await raw.command("s", "SELECT INBOX");
    const replies = [
      await raw.command("a", "COPY 1 Trash"),
      await raw.command("b", "STORE 1 +FLAGS (\\Deleted)"),
      await raw.command("c", "EXPUNGE"),
      await raw.command("d", "UID MOVE 1:* Archive"),
      await raw.command("e", "CLOSE"),
    ];
    expect(statusOf(replies[0]!, "a")).toStartWith("a NO");
    expect(statusOf(replies[1]!, "b")).toStartWith("b NO");
    expect(statusOf(replies[2]!, "c")).toStartWith("c NO");
    expect(statusOf(replies[3]!, "d")).toStartWith("d NO");
    expect(statusOf(replies[4]!, "e")).toStartWith("e OK");
    expectNoLeak(replies.join(""), e);
    raw.close();
    expect(await upstreamState(mailbox)).toEqual(before);
  });

  test("case 27: pipelined FETCH, UID STORE, NOOP, FETCH keep sequence numbers consistent", async () => {
    const raw = await agent();
    await raw.command("s", "EXAMINE INBOX");
    raw.write(
      `p1 FETCH 1 (UID BODY[])\r\np2 UID STORE ${e.visibleUids[1]} +FLAGS (\\Flagged)\r\n` +
        `p3 NOOP\r\np4 FETCH 2 (UID FLAGS)\r\n`,
    );
    const reply = await raw.waitTagged("p4");
    expect(fetchedUids(reply)).toEqual([
      [1, e.visibleUids[0]!],
      [2, e.visibleUids[1]!],
    ]);
    expect(reply).toMatch(/p2 NO /);
    expect(reply).toMatch(/p3 OK /);
    expectNoLeak(reply, e);
    raw.close();
  });
});

describe("with flag and delete rights in a filtered INBOX", () => {
  const RULES = SEED_RULES.replace(
    '[[rules]]\nname = "Deny everything else"',
    `[[rules]]
name = "Tidy the inbox"
folders = ["INBOX"]
action = "allow"
operations = ["mail:flag", "mail:delete"]

[[rules]]
name = "Deny everything else"`,
  );
  let writer: TestProxy;

  beforeAll(async () => {
    writer = await startTestProxy({ rules: RULES });
  });
  afterAll(async () => {
    await writer?.close();
  });

  test("case 23: a hidden \\Deleted message survives the agent's EXPUNGE and CLOSE", async () => {
    const client = await direct();
    await client.mailboxOpen("INBOX");
    const hiddenA = e.hidden[5]!.uid;
    const hiddenB = e.hidden[6]!.uid;
    await client.messageFlagsAdd(`${hiddenA},${hiddenB}`, ["\\Deleted"], { uid: true });
    const raw = await agent(writer);
    await raw.command("s", "SELECT INBOX");
    const victimA = e.visibleUids[10]!;
    const victimB = e.visibleUids[11]!;
    expect(statusOf(await raw.command("a", `UID STORE ${victimA} +FLAGS.SILENT (\\Deleted)`), "a")).toStartWith("a OK");
    // STORE of a hidden UID touches nothing.
    expect(await raw.command("b", `UID STORE ${hiddenA} -FLAGS (\\Deleted)`)).toBe("b OK Store completed\r\n");
    const ex = await raw.command("c", "EXPUNGE");
    expect(ex).toBe(`* 11 EXPUNGE\r\nc OK Expunge completed\r\n`);
    expect(statusOf(await raw.command("d", `UID STORE ${victimB} +FLAGS.SILENT (\\Deleted)`), "d")).toStartWith("d OK");
    expect(statusOf(await raw.command("e", "CLOSE"), "e")).toStartWith("e OK");
    expectNoLeak(ex, e);
    raw.close();
    await client.mailboxOpen("INBOX", { readOnly: true });
    const left = new Set<number>();
    for await (const m of client.fetch("1:*", { uid: true })) left.add(m.uid);
    expect(left.has(hiddenA)).toBe(true);
    expect(left.has(hiddenB)).toBe(true);
    expect(left.has(victimA)).toBe(false);
    expect(left.has(victimB)).toBe(false);
    await client.messageFlagsRemove(`${hiddenA},${hiddenB}`, ["\\Deleted"], { uid: true });
    await client.logout();
    e = {
      ...e,
      visible: e.visible.filter((m) => m.uid !== victimA && m.uid !== victimB),
      visibleUids: e.visibleUids.filter((u) => u !== victimA && u !== victimB),
    };
  });
});
