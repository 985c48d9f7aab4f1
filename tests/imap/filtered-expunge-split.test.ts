/**
 * EXPUNGE and UID EXPUNGE of more of a filtered folder's messages than one upstream command carries
 * (`UPSTREAM_SET_RANGES` ranges, and every hidden message between two visible ones breaks a range), against Dovecot:
 * the agent's `* n EXPUNGE` responses come highest first over the whole set, as Dovecot reports the expunges of one
 * command. Before, each upstream part's came highest first after the last part's (`1462 ... 1 20 ... 1`), so where
 * the set had been cut, which only hidden messages still there between the agent's decide, told the agent whether a
 * hidden message between two of its own existed or had been expunged (docs/protocol.md §3).
 */
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import { UPSTREAM_SET_RANGES } from "../../src/imap/limits.ts";
import { connectImap, createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { type Expected, expected, expectNoLeak, FILTERED_INBOX_AND_OWN_RULES } from "./filtered-fixture.ts";
import { RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

setDefaultTimeout(60_000);

/** Delete in INBOX, before the fixture's filtered INBOX (read) and the agent's own folder. */
const RULES = `
[[rules]]
name = "inbox deletes"
folders = ["INBOX"]
action = "allow"
operations = ["mail:delete"]
${FILTERED_INBOX_AND_OWN_RULES}`;

const COMMANDS = ["UID EXPUNGE 1:*", "EXPUNGE"] as const;

/** One seeded mailbox per command, since each expunges every visible message. */
const mailboxes = new Map<string, TestMailbox>();
let e: Expected;
let proxy: TestProxy;

beforeAll(async () => {
  for (const command of COMMANDS)
    mailboxes.set(command, await createMailbox({ seed: { folders: { INBOX: 5000 }, seed: 23 } }));
  // The same seed: the same messages, hidden and visible, at the same UIDs in each.
  e = expected(mailboxes.get(COMMANDS[0])!.manifest.folders["INBOX"]!);
  // The visible messages in runs of UIDs with no hidden message between: one upstream range each.
  const runs = e.visibleUids.filter((u, i) => i === 0 || e.visibleUids[i - 1] !== u - 1 || e.hiddenUids.has(u - 1));
  expect(runs.length).toBeGreaterThan(UPSTREAM_SET_RANGES);
  proxy = await startTestProxy({ rules: RULES });
});

afterAll(async () => {
  await proxy?.close();
});

/** Marks every message of INBOX `\Deleted` at Dovecot, the hidden ones too. */
async function deleteAllUpstream(mailbox: TestMailbox): Promise<void> {
  const human = await connectImap(mailbox);
  try {
    await human.mailboxOpen("INBOX");
    await human.messageFlagsAdd("1:*", ["\\Deleted"]);
  } finally {
    await human.logout();
  }
}

/** How many messages INBOX holds at Dovecot, read in a session of its own. */
async function upstreamCount(mailbox: TestMailbox): Promise<number> {
  const human = await connectImap(mailbox);
  try {
    const status = await human.status("INBOX", { messages: true });
    return status === false ? -1 : (status.messages ?? -1);
  } finally {
    await human.logout();
  }
}

/** The numbers of the `* n EXPUNGE` responses in `reply`, in order. */
function expunged(reply: string): number[] {
  return [...reply.matchAll(/^\* (\d+) EXPUNGE\r$/gm)].map((m) => Number(m[1]));
}

/** `n, n - 1, ..., 1`: every message of a view of `n` expunged by one command, as Dovecot reports it. */
function highestFirst(n: number): number[] {
  return Array.from({ length: n }, (_, i) => n - i);
}

for (const command of COMMANDS) {
  test(`${command} of every visible message over two upstream commands: highest first, as one command`, async () => {
    const mailbox = mailboxes.get(command)!;
    expect(expected(mailbox.manifest.folders["INBOX"]!).visibleUids).toEqual(e.visibleUids);
    await deleteAllUpstream(mailbox);
    const agent = await RawImap.login(proxy.port, mailbox);
    try {
      const selected = await agent.command("s", "SELECT INBOX");
      expect(selected).toContain(`* ${e.visibleUids.length} EXISTS\r\n`);
      const reply = await agent.command("x", command);
      expect(statusOf(reply, "x")).toStartWith("x OK");
      expect(expunged(reply)).toEqual(highestFirst(e.visibleUids.length));
      expectNoLeak(reply, e);
    } finally {
      agent.close();
    }
    // The hidden messages stayed, `\Deleted` as they are (docs/protocol.md §7 case 23); the visible ones are gone.
    expect(await upstreamCount(mailbox)).toBe(e.hidden.length);
  });
}
