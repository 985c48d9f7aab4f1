/**
 * Keywords of a filtered folder (docs/protocol.md §3, "Keywords of a filtered folder"). SELECT's FLAGS lists the
 * system flags only there, since upstream's list counts keywords of hidden messages; a keyword the agent then sees on
 * a visible message comes with a `* FLAGS` update listing it, before the FETCH that shows it (RFC 3501 §7.2.6: a
 * client learns the keywords in use from FLAGS; imaptest reports "Keyword used without being in FLAGS"). Before, the
 * agent was shown keywords its FLAGS never listed. A hidden message's keyword is never listed, whichever command
 * shows the change. Against Dovecot, another session setting the keywords straight at Dovecot.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { ImapFlow } from "imapflow";
import { MAX_KEYWORDS_TOLD } from "../../src/imap/limits.ts";
import { connectImap, createMailbox, type SeededMessage, type TestMailbox } from "../fixtures/index.ts";
import { RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

const RULES = `[[rules]]
name = "Transactional emails from known senders"
folders = ["INBOX"]
from = "notifications@*"
action = "allow"
operations = ["read"]

[[rules]]
name = "Flag in the inbox"
folders = ["INBOX"]
action = "allow"
operations = ["mail:flag"]

[[rules]]
name = "Deny everything else"
action = "deny"
`;

const SYSTEM = "\\Answered \\Flagged \\Deleted \\Seen \\Draft";

let mailbox: TestMailbox;
let proxy: TestProxy;
let visible: SeededMessage[];
let hidden: SeededMessage[];

beforeAll(async () => {
  mailbox = await createMailbox({ seed: { folders: { INBOX: 12 }, seed: 49 } });
  const inbox = mailbox.manifest.folders["INBOX"]!;
  visible = inbox.filter((m) => m.from.startsWith("notifications@"));
  hidden = inbox.filter((m) => !m.from.startsWith("notifications@"));
  expect(visible.length).toBeGreaterThanOrEqual(2);
  expect(hidden.length).toBeGreaterThanOrEqual(2);
  proxy = await startTestProxy({ rules: RULES });
});

afterAll(async () => {
  await proxy?.close();
});

/** Another session, straight at Dovecot, adds `keywords` to the message of `uid` in `owner`'s INBOX. */
async function addKeywords(owner: TestMailbox, uid: number, keywords: readonly string[]): Promise<void> {
  const client: ImapFlow = await connectImap(owner);
  try {
    await client.mailboxOpen("INBOX");
    expect(await client.messageFlagsAdd(String(uid), [...keywords], { uid: true })).toBe(true);
  } finally {
    await client.logout();
  }
}

/** The untagged lines of a reply, without the tagged one. */
function untagged(reply: string): string[] {
  return reply.split("\r\n").filter((l) => l.startsWith("* "));
}

/** The agent's sequence number of a visible message (its place among the visible ones, by UID). */
function agentSeq(m: SeededMessage): number {
  return visible.findIndex((v) => v.uid === m.uid) + 1;
}

test("a visible message's keyword is listed in FLAGS before a FETCH shows it; a hidden one's never", async () => {
  const [first, second] = visible;
  await addKeywords(mailbox, first!.uid, ["$Visible"]);
  await addKeywords(mailbox, hidden[0]!.uid, ["$Hidden"]);
  const raw = await RawImap.login(proxy.port, mailbox);
  try {
    const selected = await raw.command("S", "SELECT INBOX");
    expect(statusOf(selected, "S")).toStartWith("S OK");
    expect(untagged(selected)).toContain(`* FLAGS (${SYSTEM})`);
    expect(selected).not.toContain("$");

    const fetched = await raw.command("F", "FETCH 1:* (UID FLAGS)");
    expect(statusOf(fetched, "F")).toStartWith("F OK");
    const lines = untagged(fetched);
    // One update, before the FETCH of the message that has the keyword, and only the visible message's keyword.
    expect(lines.filter((l) => l.startsWith("* FLAGS"))).toEqual([`* FLAGS (${SYSTEM} $Visible)`]);
    const update = lines.indexOf(`* FLAGS (${SYSTEM} $Visible)`);
    const shown = lines.findIndex((l) => l.includes("$Visible") && l.includes("FETCH"));
    expect(lines[shown]).toStartWith(`* ${agentSeq(first!)} FETCH`);
    expect(update).toBeLessThan(shown);
    expect(fetched).not.toContain("$Hidden");

    // Fetched again: the agent knows the keyword, no update.
    const again = await raw.command("G", "FETCH 1:* (FLAGS)");
    expect(untagged(again).filter((l) => l.startsWith("* FLAGS"))).toEqual([]);

    // Another session's change reported at NOOP (RFC 3501 §7.4.2): a visible message's new keyword is listed
    // first, a hidden message's keyword not at all.
    await addKeywords(mailbox, second!.uid, ["$Later"]);
    await addKeywords(mailbox, hidden[1]!.uid, ["$Secret"]);
    const noop = await raw.command("N", "NOOP");
    const noopLines = untagged(noop);
    expect(noopLines.filter((l) => l.startsWith("* FLAGS"))).toEqual([`* FLAGS (${SYSTEM} $Visible $Later)`]);
    const later = noopLines.findIndex((l) => l.startsWith(`* ${agentSeq(second!)} FETCH`) && l.includes("$Later"));
    expect(later).toBeGreaterThan(noopLines.indexOf(`* FLAGS (${SYSTEM} $Visible $Later)`));
    expect(noop).not.toContain("$Secret");

    // The agent's own STORE: the reply's FETCH shows a keyword new to FLAGS, listed first.
    const stored = await raw.command("T", `STORE ${agentSeq(first!)} +FLAGS ($Mine)`);
    expect(statusOf(stored, "T")).toStartWith("T OK");
    const storedLines = untagged(stored);
    const listed = storedLines.indexOf(`* FLAGS (${SYSTEM} $Visible $Later $Mine)`);
    expect(listed).toBeGreaterThanOrEqual(0);
    expect(storedLines.findIndex((l) => l.includes("FETCH") && l.includes("$Mine"))).toBeGreaterThan(listed);
  } finally {
    await raw.command("Z", "LOGOUT");
    raw.close();
  }
});

test(`FLAGS lists at most MAX_KEYWORDS_TOLD keywords (${MAX_KEYWORDS_TOLD}); past it no update is sent`, async () => {
  // A mailbox of its own: one visible message with exactly the limit's number of keywords, then one more keyword
  // on another visible message.
  const own = await createMailbox({ seed: { folders: { INBOX: 12 }, seed: 49 } });
  const mine = own.manifest.folders["INBOX"]!.filter((m) => m.from.startsWith("notifications@"));
  const many = Array.from({ length: MAX_KEYWORDS_TOLD }, (_, i) => `$K${i}`);
  await addKeywords(own, mine[0]!.uid, many);
  await addKeywords(own, mine[1]!.uid, ["$OnePast"]);
  const raw = await RawImap.login(proxy.port, own);
  try {
    expect(statusOf(await raw.command("S", "SELECT INBOX"), "S")).toStartWith("S OK");
    const atLimit = await raw.command("F", "FETCH 1 (FLAGS)");
    expect(untagged(atLimit).filter((l) => l.startsWith("* FLAGS"))).toEqual([`* FLAGS (${SYSTEM} ${many.join(" ")})`]);
    expect(untagged(atLimit).at(-1)).toStartWith("* 1 FETCH (FLAGS (");
    // One past: no update, and the keyword is still shown on its message as it is.
    const past = await raw.command("G", "FETCH 2 (FLAGS)");
    expect(untagged(past)).toEqual(["* 2 FETCH (FLAGS ($OnePast))"]);
  } finally {
    await raw.command("Z", "LOGOUT");
    raw.close();
  }
});
