/**
 * Updates in a filtered INBOX (docs/protocol.md §3 "IDLE flow", §7 cases 10 and 11): while the agent idles or sends
 * NOOP, a client connected straight to Dovecot appends visible and hidden messages, expunges both kinds and changes
 * flags. The agent hears exactly of the visible changes, and `FETCH 1:* (UID)` afterwards matches the expectation
 * computed from the manifest and those changes.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { ImapFlow } from "imapflow";
import { connectImap, createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { type Expected, expected, expectNoLeak, fetchedUids, rawMessage, SEED_RULES } from "./filtered-fixture.ts";
import { RawImap, startTestProxy, type TestProxy } from "./helpers.ts";

let mailbox: TestMailbox;
let proxy: TestProxy;
let e: Expected;
let human: ImapFlow;

beforeAll(async () => {
  mailbox = await createMailbox({ seed: { folders: { INBOX: 1000 }, seed: 23 } });
  e = expected(mailbox.manifest.folders["INBOX"]!);
  proxy = await startTestProxy({ rules: SEED_RULES });
  human = await connectImap(mailbox);
  await human.mailboxOpen("INBOX");
});

afterAll(async () => {
  await human?.logout();
  await proxy?.close();
});

async function agent(): Promise<RawImap> {
  const raw = await RawImap.login(proxy.port, mailbox);
  const sel = await raw.command("s", "EXAMINE INBOX");
  expect(sel).toContain(`* ${e.visibleUids.length} EXISTS`);
  return raw;
}

async function append(from: string, subject: string): Promise<number> {
  const r = await human.append("INBOX", rawMessage(from, subject, `${subject.replace(/\W+/g, "-")}-${Date.now()}`), []);
  return (r as { uid: number }).uid;
}

async function expunge(uid: number): Promise<void> {
  await human.messageDelete(String(uid), { uid: true });
}

/** Sequence numbers the agent must see for its current view. */
function expectView(reply: string, uids: readonly number[]): void {
  expect(fetchedUids(reply)).toEqual(uids.map((u, i) => [i + 1, u] as [number, number]));
}

test("case 10: hidden arrivals, hidden flag changes and hidden expunges in IDLE never reach the agent", async () => {
  const raw = await agent();
  raw.write("i IDLE\r\n");
  await raw.readUntil((b) => b.includes("+ "));
  raw.take();
  const hiddenNew = await append("spam@evil.test", "Hidden arrival during idle");
  await human.messageFlagsAdd(String(e.hidden[0]!.uid), ["\\Flagged", "$Secret"], { uid: true });
  await expunge(e.hidden[1]!.uid);
  await Bun.sleep(1500);
  raw.write("DONE\r\n");
  const idled = await raw.waitTagged("i");
  expect(idled).toBe("i OK Idle completed\r\n");
  const noop = await raw.command("n", "NOOP");
  expect(noop).toBe("n OK NOOP completed\r\n");
  const view = await raw.command("f", "FETCH 1:* (UID)");
  expectView(view, e.visibleUids);
  expect(view).not.toContain(String(hiddenNew));
  e = {
    ...e,
    hidden: e.hidden.filter((m) => m.uid !== e.hidden[1]!.uid),
    hiddenUids: new Set([...e.hiddenUids, hiddenNew]),
  };
  raw.close();
});

test("visible arrivals, flag changes and expunges during IDLE arrive renumbered; hidden ones do not", async () => {
  const raw = await agent();
  const n = e.visibleUids.length;
  raw.write("i IDLE\r\n");
  await raw.readUntil((b) => b.includes("+ "));
  raw.take();
  const hiddenA = await append("boss@corp.test", "Hidden before the visible one");
  const visibleNew = await append("Shop <notifications@shop.test>", "Visible arrival during idle");
  const hiddenB = await append('"notifications@shop.test" <spam@evil.test>', "Hidden display-name trick");
  await raw.readUntil((b) => b.includes(`* ${n + 1} EXISTS`));
  const flagged = e.visibleUids[3]!;
  await human.messageFlagsAdd(String(flagged), ["\\Flagged"], { uid: true });
  await raw.readUntil((b) => b.includes("* 4 FETCH"));
  const gone = e.visibleUids[6]!;
  await expunge(gone);
  await expunge(e.hidden[2]!.uid);
  await raw.readUntil((b) => b.includes("* 7 EXPUNGE"));
  await Bun.sleep(500);
  raw.write("DONE\r\n");
  const idled = await raw.waitTagged("i");
  expect(idled.match(/EXISTS/g)?.length).toBe(1);
  expect(idled.match(/EXPUNGE/g)?.length).toBe(1);
  expect(idled).toContain(`* ${n + 1} EXISTS\r\n`);
  expect(idled).toMatch(/\* 4 FETCH \(FLAGS \([^)]*\\Flagged/);
  expect(idled).toContain("* 7 EXPUNGE\r\n");
  expect(idled).not.toMatch(/\* \d+ RECENT|\* FLAGS/);
  const want = [...e.visibleUids.filter((u) => u !== gone), visibleNew];
  const view = await raw.command("f", "FETCH 1:* (UID)");
  expectView(view, want);
  e = { ...e, visibleUids: want, hiddenUids: new Set([...e.hiddenUids, hiddenA, hiddenB]) };
  expectNoLeak(idled + view, e);
  const status = await raw.command("t", "STATUS INBOX (MESSAGES UIDNEXT)");
  expect(status).toStartWith(`* STATUS INBOX (MESSAGES ${want.length} UIDNEXT ${visibleNew + 1})`);
  raw.close();
});

test("NOOP: arrivals are classified first; visible expunge announced at NOOP, never in FETCH (case 11)", async () => {
  const raw = await agent();
  const n = e.visibleUids.length;
  await append("spam@evil.test", "Hidden before NOOP");
  const noop1 = await raw.command("a", "NOOP");
  expect(noop1).toBe("a OK NOOP completed\r\n");
  const visibleNew = await append("notifications@shop.test", "Visible before NOOP");
  expect(await raw.command("b", "NOOP")).toBe(`* ${n + 1} EXISTS\r\nb OK NOOP completed\r\n`);
  // Case 11: a visible message is expunged while the agent's FETCH 1:* runs: the FETCH keeps the old numbers.
  const gone = e.visibleUids[2]!;
  raw.write("c FETCH 1:* (UID BODY.PEEK[])\r\n");
  await expunge(gone);
  await expunge(e.hidden[3]!.uid);
  const fetched = await raw.waitTagged("c");
  expect(fetched).not.toContain("EXPUNGE");
  const pairs = fetchedUids(fetched);
  for (const [seq, uid] of pairs) expect([...e.visibleUids, visibleNew][seq - 1]).toBe(uid);
  const after = await raw.command("d", "NOOP");
  expect(after).toBe("* 3 EXPUNGE\r\nd OK NOOP completed\r\n");
  const want = [...e.visibleUids.filter((u) => u !== gone), visibleNew];
  expectView(await raw.command("f", "FETCH 1:* (UID)"), want);
  raw.close();
});

test("RECENT follows the view: a hidden arrival or expunge in the same update neither hides nor shows it", async () => {
  // A mailbox of its own where no other session keeps INBOX open, so every arrival is recent to the agent.
  const own = await createMailbox();
  const other = await connectImap(own);
  const put = async (from: string, subject: string) =>
    (await other.append("INBOX", rawMessage(from, subject, `recent-${subject}-${Date.now()}`), [])) as { uid: number };
  const drop = async (uid: number) => {
    await other.mailboxOpen("INBOX");
    await other.messageDelete(String(uid), { uid: true });
    await other.mailboxClose();
  };
  try {
    const v1 = await put("notifications@shop.test", "v1");
    await put("spam@evil.test", "h1");
    const v2 = await put("notifications@shop.test", "v2");
    const raw = await RawImap.login(proxy.port, own);
    const sel = await raw.command("s", "EXAMINE INBOX");
    expect(sel).toContain("* 2 EXISTS\r\n* 2 RECENT\r\n");
    // A visible recent message expunged and a hidden one arriving: upstream's RECENT stays where it was.
    await drop(v1.uid);
    const h2 = await put("spam@evil.test", "h2");
    expect(await raw.command("a", "NOOP")).toBe("* 1 EXPUNGE\r\n* 1 RECENT\r\na OK NOOP completed\r\n");
    // A hidden arrival alone says nothing, RECENT included.
    await put("spam@evil.test", "h3");
    expect(await raw.command("b", "NOOP")).toBe("b OK NOOP completed\r\n");
    // A visible arrival and a hidden recent message expunged: upstream's RECENT stays again.
    await drop(h2.uid);
    await put("notifications@shop.test", "v3");
    expect(await raw.command("c", "NOOP")).toBe("* 2 EXISTS\r\n* 2 RECENT\r\nc OK NOOP completed\r\n");
    expect(await raw.command("d", "STATUS INBOX (MESSAGES RECENT)")).toStartWith(
      "* STATUS INBOX (MESSAGES 2 RECENT 2)\r\n",
    );
    // In IDLE a visible expunge goes out at once, and RECENT is counted again before the IDLE ends.
    raw.write("e IDLE\r\n");
    await raw.readUntil((b) => b.includes("+ "));
    raw.take();
    await drop(v2.uid);
    await put("spam@evil.test", "h4");
    await raw.readUntil((b) => b.includes("EXPUNGE\r\n"));
    raw.write("DONE\r\n");
    expect(await raw.waitTagged("e")).toBe("* 1 EXPUNGE\r\n* 1 RECENT\r\ne OK Idle completed\r\n");
    raw.close();
  } finally {
    await other.logout();
  }
});
