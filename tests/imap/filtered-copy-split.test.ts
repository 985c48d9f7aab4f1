/**
 * COPY and MOVE of more of a filtered folder's messages than one upstream command carries (`UPSTREAM_SET_RANGES`
 * ranges, and every hidden message between two visible ones breaks a range), against Dovecot: the agent gets one
 * COPYUID for the whole command, pairing each of its UIDs with its copy's, as when one upstream command did it.
 * Before, a COPY split over several upstream commands lost its COPYUID and a MOVE gave one per part, so whether
 * COPYUID came, and how many, told the agent where hidden messages lay, and when one was expunged. Then the one
 * COPYUID still showed the seam (`1:1462,1463:1482` where one command gives `1:1482`): it must equal Dovecot's own.
 * So did the MOVE's expunges, each part's highest first: they now come highest first over the whole set, as from one.
 */
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import type { ImapFlow } from "imapflow";
import { UPSTREAM_SET_RANGES } from "../../src/imap/limits.ts";
import { connectImap, createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { type Expected, expected, expectNoLeak, INBOX_MOVES_RULES } from "./filtered-fixture.ts";
import { RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

setDefaultTimeout(60_000);

const RULES = INBOX_MOVES_RULES;

let mailbox: TestMailbox;
let e: Expected;
let proxy: TestProxy;
let human: ImapFlow;

beforeAll(async () => {
  mailbox = await createMailbox({ seed: { folders: { INBOX: 5000 }, seed: 23 } });
  e = expected(mailbox.manifest.folders["INBOX"]!);
  // The visible messages in runs of UIDs with no hidden message between: one upstream range each.
  const runs = e.visibleUids.filter((u, i) => i === 0 || e.visibleUids[i - 1] !== u - 1 || e.hiddenUids.has(u - 1));
  expect(runs.length).toBeGreaterThan(UPSTREAM_SET_RANGES);
  human = await connectImap(mailbox);
  await human.mailboxCreate("Own");
  proxy = await startTestProxy({ rules: RULES });
});

afterAll(async () => {
  await human?.logout();
  await proxy?.close();
});

/** The numbers of a sequence set, in the order written (`a:b` from a to b). */
function expand(set: string): number[] {
  const out: number[] = [];
  for (const part of set.split(",")) {
    const [a, b] = part.split(":").map(Number) as [number, number | undefined];
    const stop = b ?? a;
    for (let n = a; a <= stop ? n <= stop : n >= stop; n += a <= stop ? 1 : -1) out.push(n);
  }
  return out;
}

/**
 * The source and destination sets of the COPYUID that Dovecot itself gives a `UID COPY` of `uids` from INBOX to a new,
 * empty folder: one upstream command, the reference the proxy's answer must equal however many it took.
 */
async function directCopyUid(uids: readonly number[]): Promise<string> {
  const folder = `Ref${Date.now()}`;
  await human.mailboxCreate(folder);
  const direct = await RawImap.login(upstreams().ports.imap, mailbox);
  try {
    await direct.command("s", "EXAMINE INBOX");
    const reply = await direct.command("c", `UID COPY ${uids.join(",")} ${folder}`);
    const m = /^c OK \[COPYUID \d+ (\S+) (\S+)\] /m.exec(reply);
    expect(m).not.toBeNull();
    return `${m![1]} ${m![2]}`;
  } finally {
    direct.close();
  }
}

/** Asserts that upstream's Own holds, at each destination UID, the copy of the source UID paired with it. */
async function expectCopies(source: number[], destination: number[]): Promise<void> {
  expect(source).toEqual([...e.visibleUids]);
  expect(destination).toHaveLength(source.length);
  // A session of its own, so that it sees Own as it is now.
  const reader = await connectImap(mailbox);
  try {
    await reader.mailboxOpen("Own");
    const ids = new Map<number, string>();
    for await (const m of reader.fetch(destination.join(","), { envelope: true }, { uid: true })) {
      ids.set(m.uid, m.envelope?.messageId ?? "");
    }
    expect(destination.map((u) => ids.get(u))).toEqual(e.visible.map((m) => m.messageId));
  } finally {
    await reader.logout();
  }
}

test("UID COPY of every visible message, over two upstream commands: one COPYUID, each UID paired right", async () => {
  const agent = await RawImap.login(proxy.port, mailbox);
  await agent.command("s", "EXAMINE INBOX");
  const reply = await agent.command("c", "UID COPY 1:* Own");
  const m = /^c OK \[COPYUID (\d+) (\S+) (\S+)\] /m.exec(reply);
  expect(m).not.toBeNull();
  await expectCopies(expand(m![2]!), expand(m![3]!));
  // Written as one upstream command writes it: Dovecot's own COPYUID for the same UIDs into an empty folder, as Own
  // was. Before, the parts' sets were only put one after the other, and the destination read `1:1462,1463:1482`.
  expect(`${m![2]} ${m![3]}`).toBe(await directCopyUid(e.visibleUids));
  expectNoLeak(reply, e);
  agent.close();
  // Own empty again, for the MOVE below.
  const lock = await human.getMailboxLock("Own");
  try {
    await human.messageDelete("1:*", { uid: true });
  } finally {
    lock.release();
  }
});

test("UID MOVE of every visible message in two upstream commands: one untagged COPYUID, then EXPUNGEs", async () => {
  const reference = await directCopyUid(e.visibleUids);
  const agent = await RawImap.login(proxy.port, mailbox);
  await agent.command("s", "SELECT INBOX");
  const reply = await agent.command("m", "UID MOVE 1:* Own");
  expect(statusOf(reply, "m")).toStartWith("m OK");
  const codes = [...reply.matchAll(/^\* OK \[COPYUID (\d+) (\S+) (\S+)\]/gm)];
  expect(codes).toHaveLength(1);
  const expunges = [...reply.matchAll(/^\* (\d+) EXPUNGE\r$/gm)].map((x) => Number(x[1]));
  // Highest first, as Dovecot reports one UID MOVE's expunges: before, each part's came highest first after the last
  // part's (`1462 ... 1 20 ... 1`), and where the set had been cut told where hidden messages still lay.
  expect(expunges).toEqual(e.visibleUids.map((_, i) => e.visibleUids.length - i));
  expect(reply.indexOf("[COPYUID")).toBeLessThan(reply.indexOf(" EXPUNGE\r\n"));
  await expectCopies(expand(codes[0]![2]!), expand(codes[0]![3]!));
  // As one upstream command writes it: Dovecot's source set, and one destination range (Own was emptied, so its UIDs
  // go on from the COPY's, where the reference's folder was new).
  const destination = expand(codes[0]![3]!);
  expect(`${codes[0]![2]} ${codes[0]![3]}`).toBe(
    reference.replace(/ \d+:\d+$/, ` ${destination[0]}:${destination.at(-1)}`),
  );
  expect(reference).toEndWith(` 1:${destination.length}`);
  expectNoLeak(reply, e);
  agent.close();
  // The hidden messages stayed where they were.
  const status = await human.status("INBOX", { messages: true });
  expect(status && status.messages).toBe(e.hidden.length);
});
