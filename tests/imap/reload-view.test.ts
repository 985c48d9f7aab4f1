/**
 * A reload under a selected mailbox (docs/operations.md "Reload", docs/filtering.md "Reload"), against Dovecot over
 * a raw socket: when the new rules would show the selected folder otherwise (a message hidden, a filter changed, the
 * folder no longer readable), the session ends with `* BYE` before one more byte about the folder, whether the
 * reload judges it at once (as `serve` does after SIGHUP) or it finds the new rules at its next command or, in IDLE,
 * at the next upstream event. A reload that leaves the folder's view as it was disturbs nothing.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { ImapFlow } from "imapflow";
import { connectImap, createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { rawMessage } from "./filtered-fixture.ts";
import { RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

/** INBOX readable as a whole; nothing else. */
const INBOX = `
[[rules]]
name = "Inbox"
folders = ["INBOX"]
action = "allow"
operations = ["read"]

[[rules]]
name = "Rest"
action = "deny"
`;

const HIDE_BOSS = `
[[rules]]
name = "Hide the boss"
folders = ["INBOX"]
from = "boss@*"
action = "deny"
operations = ["read"]
${INBOX}`;

/** Another filter for INBOX: the boss hidden with everyone else at corp.test. */
const HIDE_CORP = `
[[rules]]
name = "Hide corp"
folders = ["INBOX"]
from = "*@corp.test"
action = "deny"
operations = ["read"]
${INBOX}`;

/** A rule that does not decide anything in INBOX, put first: every rule after it moves down one place. */
const UNRELATED = `
[[rules]]
name = "Archive"
folders = ["Archive"]
action = "allow"
`;

/** INBOX may be appended to and nothing else: visible, not readable. */
const INBOX_APPEND_ONLY = `
[[rules]]
name = "Inbox drop box"
folders = ["INBOX"]
action = "allow"
operations = ["mail:append"]

[[rules]]
name = "Rest"
action = "deny"
`;

const BYE = "* BYE Configuration changed; this session ends, log in again\r\n";

let proxy: TestProxy;
const open: Array<{ close(): unknown }> = [];

beforeAll(async () => {
  proxy = await startTestProxy({ rules: INBOX });
});

afterAll(async () => {
  for (const c of open) await Promise.resolve(c.close()).catch(() => {});
  await proxy?.close();
});

/** A fresh user whose INBOX holds, in this order (UIDs 1, 2, 3): Ann, the boss, Carol at corp.test. */
async function mailboxWithBoss(): Promise<{ mailbox: TestMailbox; direct: ImapFlow }> {
  const mailbox = await createMailbox({ name: "reload-view" });
  const direct = await connectImap(mailbox);
  open.push({ close: () => direct.logout() });
  await direct.append("INBOX", rawMessage("ann@example.test", "Hello from Ann", "ann"));
  await direct.append("INBOX", rawMessage("boss@corp.test", "SECRET boss plan", "boss"));
  await direct.append("INBOX", rawMessage("carol@corp.test", "Carol corp note", "carol"));
  await direct.mailboxOpen("INBOX");
  return { mailbox, direct };
}

async function agent(mailbox: TestMailbox): Promise<RawImap> {
  const raw = await RawImap.login(proxy.port, mailbox);
  open.push(raw);
  return raw;
}

/** Everything the proxy sends until it closes the connection (it must, within 10 s). */
async function untilClosed(raw: RawImap): Promise<string> {
  const text = await raw.readUntil(() => false, 10_000, "the proxy did not close the session");
  raw.take();
  return text;
}

/** Starts IDLE and waits for its continuation. */
async function idle(raw: RawImap): Promise<void> {
  raw.write("i IDLE\r\n");
  await raw.readUntil((b) => b.includes("+ idling\r\n"));
  raw.take();
}

/** The subjects a `FETCH ... ENVELOPE` reply shows. */
function subjects(reply: string): string[] {
  return [...reply.matchAll(/ENVELOPE \("[^"]*" "([^"]*)"/g)].map((m) => m[1]!);
}

/** The boss message in any form: subject, address, Message-ID. */
function expectNoBoss(text: string): void {
  expect(text).not.toContain("SECRET");
  expect(text).not.toContain("boss@");
  expect(text).not.toContain("<boss@");
}

/** INBOX may be opened but its mail not read: SELECT lists no keywords in FLAGS and PERMANENTFLAGS. */
const INBOX_NO_READ = `
[[rules]]
name = "Inbox, no reading"
folders = ["INBOX"]
action = "allow"
operations = ["folder:read"]

[[rules]]
name = "Rest"
action = "deny"
`;

test("a reload granting or withdrawing mail:read in the selected folder ends the session (its FLAGS)", async () => {
  for (const [before, after] of [
    [INBOX_NO_READ, INBOX],
    [INBOX, INBOX_NO_READ],
  ] as const) {
    proxy.reload({ rules: before });
    const { mailbox } = await mailboxWithBoss();
    const raw = await agent(mailbox);
    expect(statusOf(await raw.command("s", "EXAMINE INBOX"), "s")).toStartWith("s OK");
    expect(proxy.reload({ rules: after })).toBe(1);
    expect(await untilClosed(raw)).toBe(BYE);
  }
});

test("a reload hiding a message of the selected folder ends the session at once, as serve judges it", async () => {
  proxy.reload({ rules: INBOX });
  const { mailbox } = await mailboxWithBoss();
  const raw = await agent(mailbox);
  expect(await raw.command("s", "SELECT INBOX")).toContain("* 3 EXISTS\r\n");
  const other = await agent(mailbox); // logged in, nothing selected: goes on

  expect(proxy.reload({ rules: HIDE_BOSS })).toBe(1);
  const text = await untilClosed(raw);
  expect(text).toBe(BYE);
  expect(raw.closed).toBe(true);

  expect(statusOf(await other.command("n", "NOOP"), "n")).toBe("n OK NOOP completed");
  const reselected = await other.command("s", "SELECT INBOX");
  expect(reselected).toContain("* 2 EXISTS\r\n");
  const fetched = await other.command("f", "FETCH 1:* (UID ENVELOPE)");
  expect(subjects(fetched)).toEqual(["Hello from Ann", "Carol corp note"]);
  expectNoBoss(reselected + fetched);
});

test("a session not judged yet ends at its next command: FETCH, STATUS, NOOP show nothing now hidden", async () => {
  proxy.reload({ rules: INBOX });
  const { mailbox, direct } = await mailboxWithBoss();
  const raw = await agent(mailbox);
  await raw.command("s", "SELECT INBOX");

  proxy.reload({ rules: HIDE_BOSS }, false);
  raw.write("f FETCH 1:* (UID ENVELOPE)\r\n");
  const text = await untilClosed(raw);
  expect(text).toBe(BYE);
  expectNoBoss(text);

  for (const command of ["STATUS INBOX (MESSAGES)", "NOOP"]) {
    proxy.reload({ rules: INBOX }, false);
    const again = await agent(mailbox);
    expect(statusOf(await again.command("s", "SELECT INBOX"), "s")).toStartWith("s OK");
    proxy.reload({ rules: HIDE_BOSS }, false);
    // A new boss message: never announced, never counted.
    await direct.append("INBOX", rawMessage("boss@corp.test", "SECRET second plan", `boss-${command.length}`));
    again.write(`c ${command}\r\n`);
    const said = await untilClosed(again);
    expect(said).toBe(BYE);
  }
});

test("in IDLE, a hidden arrival or a hidden message's flag change ends the session, not relayed", async () => {
  proxy.reload({ rules: INBOX });
  const { mailbox, direct } = await mailboxWithBoss();

  // An arrival from the boss while the agent idles under rules that hide it (not judged by the reload).
  const first = await agent(mailbox);
  await first.command("s", "SELECT INBOX");
  await idle(first);
  proxy.reload({ rules: HIDE_BOSS }, false);
  await direct.append("INBOX", rawMessage("boss@corp.test", "SECRET arrival", "boss-arrival"));
  const arrival = await untilClosed(first);
  expect(arrival).toBe(BYE);

  // The boss message (UID 2) flagged by another client while the agent idles.
  proxy.reload({ rules: INBOX });
  const second = await agent(mailbox);
  await second.command("s", "SELECT INBOX");
  await idle(second);
  proxy.reload({ rules: HIDE_BOSS }, false);
  await direct.messageFlagsAdd("2", ["\\Flagged"], { uid: true });
  const flagged = await untilClosed(second);
  expect(flagged).toBe(BYE);

  // Judged by the reload: ended at once, nothing upstream needed.
  proxy.reload({ rules: INBOX });
  const third = await agent(mailbox);
  await third.command("s", "SELECT INBOX");
  await idle(third);
  expect(proxy.reload({ rules: HIDE_BOSS })).toBe(1);
  expect(await untilClosed(third)).toBe(BYE);
});

test("another filter for the selected folder: arrivals are not classified by the old one, in IDLE or not", async () => {
  proxy.reload({ rules: HIDE_BOSS });
  const { mailbox, direct } = await mailboxWithBoss();
  const raw = await agent(mailbox);
  const selected = await raw.command("s", "SELECT INBOX");
  expect(selected).toContain("* 2 EXISTS\r\n"); // Ann and Carol
  await idle(raw);
  proxy.reload({ rules: HIDE_CORP }, false);
  // Visible under the old filter, hidden under the new one.
  await direct.append("INBOX", rawMessage("dave@corp.test", "Dave corp memo", "dave"));
  const text = await untilClosed(raw);
  expect(text).toBe(BYE);
  expect(text).not.toContain("Dave");

  proxy.reload({ rules: HIDE_BOSS });
  const again = await agent(mailbox);
  expect(await again.command("s", "SELECT INBOX")).toContain("* 3 EXISTS\r\n"); // Ann, Carol, Dave
  expect(proxy.reload({ rules: HIDE_CORP })).toBe(1);
  expect(await untilClosed(again)).toBe(BYE);

  const fresh = await agent(mailbox);
  await fresh.command("s", "SELECT INBOX");
  expect(subjects(await fresh.command("f", "FETCH 1:* (ENVELOPE)"))).toEqual(["Hello from Ann"]);
});

test("the selected folder hidden, or visible but no longer readable: the session ends", async () => {
  const { mailbox } = await mailboxWithBoss();
  for (const rules of [`[[rules]]\nname = "Rest"\naction = "deny"\n`, INBOX_APPEND_ONLY]) {
    proxy.reload({ rules: INBOX });
    const raw = await agent(mailbox);
    await raw.command("s", "EXAMINE INBOX");
    expect(proxy.reload({ rules })).toBe(1);
    expect(await untilClosed(raw)).toBe(BYE);
  }
  // Filtered before: the same.
  proxy.reload({ rules: HIDE_BOSS });
  const raw = await agent(mailbox);
  await raw.command("s", "EXAMINE INBOX");
  expect(proxy.reload({ rules: INBOX_APPEND_ONLY })).toBe(1);
  expect(await untilClosed(raw)).toBe(BYE);
});

test("a reload leaving the selected folder's view as it was disturbs nothing; probes name rules anew", async () => {
  proxy.reload({ rules: HIDE_BOSS });
  const { mailbox, direct } = await mailboxWithBoss();
  const raw = await agent(mailbox);
  expect(await raw.command("s", "SELECT INBOX")).toContain("* 2 EXISTS\r\n");

  // A rule for another folder put first, judged as serve judges it: the session goes on.
  expect(proxy.reload({ rules: UNRELATED + HIDE_BOSS })).toBe(0);
  const fetched = await raw.command("f", "FETCH 1:* (UID ENVELOPE)");
  expect(statusOf(fetched, "f")).toBe("f OK Fetch completed");
  expect(subjects(fetched)).toEqual(["Hello from Ann", "Carol corp note"]);

  // A probe of the hidden boss message names the hiding rule where the reloaded config has it (second, not first).
  const before = (await proxy.rows()).length;
  expect(await raw.command("p", "UID FETCH 2 (FLAGS)")).toBe("p OK Fetch completed\r\n");
  const probes = (await proxy.rows()).slice(before).filter((r) => r.decision === "deny");
  expect(probes.map((r) => [r.command, r.rule, r.ruleIndex, r.hiddenCount])).toEqual([
    ["UID FETCH", "Hide the boss", 1, 1],
  ]);

  // Another unrelated change, found at the next commands: arrivals are classified as before.
  proxy.reload({ rules: UNRELATED.replace("Archive", "Archive2") + HIDE_BOSS }, false);
  await direct.append("INBOX", rawMessage("boss@corp.test", "SECRET third plan", "boss-3"));
  await direct.append("INBOX", rawMessage("erin@example.test", "Erin says hi", "erin"));
  const noop = await raw.command("n", "NOOP");
  expect(noop).toContain("* 3 EXISTS\r\n");
  expect(statusOf(noop, "n")).toBe("n OK NOOP completed");
  const all = await raw.command("g", "FETCH 1:* (ENVELOPE)");
  expect(subjects(all)).toEqual(["Hello from Ann", "Carol corp note", "Erin says hi"]);
  expectNoBoss(noop + all);

  // An unfiltered folder and a rule that does not change it: the same.
  proxy.reload({ rules: INBOX });
  const plain = await agent(mailbox);
  expect(await plain.command("s", "EXAMINE INBOX")).toContain("* 5 EXISTS\r\n");
  expect(proxy.reload({ rules: UNRELATED + INBOX })).toBe(0);
  expect(statusOf(await plain.command("f", "FETCH 1:* (UID)"), "f")).toBe("f OK Fetch completed");
  await idle(plain);
  await direct.append("INBOX", rawMessage("fay@example.test", "Fay here", "fay"));
  await plain.readUntil((b) => b.includes("* 6 EXISTS\r\n"));
  plain.write("DONE\r\n");
  expect(statusOf(await plain.waitTagged("i"), "i")).toBe("i OK Idle completed");
});
