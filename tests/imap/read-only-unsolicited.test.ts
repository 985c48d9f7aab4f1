/**
 * A server may say at any time that the selected mailbox has become read-only: an untagged `* OK [READ-ONLY]`
 * (RFC 3501 §7.1, RFC 9051 §7.1). From then on the proxy treats the folder as one selected read-only (docs/imap.md
 * "Decisions"): STORE, MOVE and EXPUNGE are refused by the proxy with a `deny` row and never sent, and bodies are
 * fetched with PEEK. Before, the proxy went on treating the folder as writable: a STORE had its `allow` row on disk
 * and went upstream, which then ignores it (Dovecot answers `OK Store ignored with read-only mailbox`) or refuses
 * it. A scripted upstream, since Dovecot does not send this on cue.
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import type { Socket } from "node:net";
import {
  auditCursor,
  RawImap,
  type ScriptedCommand,
  type ScriptedUpstream,
  startScriptedUpstream,
  startTestProxy,
  statusOf,
  type TestProxy,
} from "./helpers.ts";

const RULES = `
[[rules]]
name = "mine"
folders = ["INBOX", "Archive"]
action = "allow"
`;

const CAPS = "IMAP4rev1 LOGIN UIDPLUS UNSELECT MOVE";
const SYSTEM = "\\Answered \\Flagged \\Deleted \\Seen \\Draft";

/** What the scripted upstream adds before its NOOP's OK; set per test. */
let onNoop = "";
/** What the scripted upstream adds to its answer when the proxy learns a new message's UID; set per test. */
let onSync = "";
/** The command lines the scripted upstream read, in order. */
const received: string[] = [];
let lastSocket: Socket | null = null;
/** The tag of the IDLE the scripted upstream is in, answered at DONE. */
let idleTag: string | null = null;

function answer(socket: Socket, { line, tag, command }: ScriptedCommand): void {
  received.push(line);
  lastSocket = socket;
  const ok = `${tag} OK done\r\n`;
  if (command === "LOGIN") socket.write(`${tag} OK [CAPABILITY ${CAPS}] Logged in\r\n`);
  else if (command === "LIST")
    socket.write(`* LIST (\\HasNoChildren) "/" INBOX\r\n* LIST (\\HasNoChildren) "/" Archive\r\n${ok}`);
  else if (command === "SELECT" || command === "EXAMINE")
    socket.write(
      `* FLAGS (${SYSTEM})\r\n* OK [PERMANENTFLAGS (${SYSTEM} \\*)] p\r\n` +
        `* 3 EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY 7] v\r\n* OK [UIDNEXT 4] n\r\n` +
        `${tag} OK [${command === "SELECT" ? "READ-WRITE" : "READ-ONLY"}] done\r\n`,
    );
  else if (command === "UID SEARCH") socket.write(`* SEARCH 1 2 3\r\n${ok}`);
  else if (command === "UID FETCH" && / \(UID\)$/.test(line)) {
    // The proxy learning the UID of an arrival (message 4, UID 4).
    socket.write(`${onSync}* 4 FETCH (UID 4)\r\n${ok}`);
  } else if (command === "UID FETCH") {
    const [, uid] = /^\S+ UID FETCH (\d+)/.exec(line) ?? [];
    const body = "Subject: x\r\n\r\nhello\r\n";
    socket.write(`* ${uid} FETCH (UID ${uid} BODY[] {${body.length}}\r\n${body})\r\n${ok}`);
  } else if (command === "NOOP") socket.write(`${onNoop}${ok}`);
  else if (command === "IDLE") {
    idleTag = tag;
    socket.write("+ idling\r\n");
  } else if (line === "DONE" && idleTag !== null) {
    socket.write(`${idleTag} OK Idle completed\r\n`);
    idleTag = null;
  } else if (command === "LOGOUT") socket.end(`* BYE\r\n${tag} OK Logout completed\r\n`);
  else socket.write(ok);
}

let upstream: ScriptedUpstream;
let proxy: TestProxy;

beforeAll(async () => {
  upstream = await startScriptedUpstream(CAPS, answer);
  const addr = `127.0.0.1:${upstream.port}`;
  proxy = await startTestProxy({ upstreamTls: "none", upstreamAddr: addr, caFile: null, rules: RULES });
});

afterAll(async () => {
  await proxy?.close();
  await upstream?.close();
});

const WRITES: [string, string, string][] = [
  ["STORE 1 +FLAGS (\\Flagged)", "STORE", "mail:flag"],
  ["UID STORE 2 +FLAGS.SILENT (\\Deleted)", "UID STORE", "mail:delete"],
  ["MOVE 1 Archive", "MOVE", "mail:move"],
  ["UID EXPUNGE 1:*", "UID EXPUNGE", "mail:delete"],
  ["EXPUNGE", "EXPUNGE", "mail:delete"],
];

async function expectWritesRefused(raw: RawImap, rows: ReturnType<typeof auditCursor>): Promise<void> {
  await rows();
  received.length = 0;
  for (const [i, [command, name, operation]] of WRITES.entries()) {
    const tag = `w${i}`;
    expect(`${command}: ${statusOf(await raw.command(tag, command), tag)}`).toBe(
      `${command}: ${tag} NO [CANNOT] Mailbox is read-only`,
    );
    expect((await rows()).map((r) => [r.command, r.operation, r.decision, /read-only/.test(r.reason)])).toEqual([
      [name, operation, "deny", true],
    ]);
  }
  // Nothing of them went upstream.
  expect(received.filter((l) => /STORE|MOVE|EXPUNGE/i.test(l))).toEqual([]);
  // A body is fetched with PEEK: \Seen cannot be set in a read-only mailbox (RFC 3501 §6.3.2).
  expect(statusOf(await raw.command("f", "FETCH 1 (BODY[])"), "f")).toStartWith("f OK");
  expect(received.filter((l) => / UID FETCH /.test(l)).every((l) => l.includes("BODY.PEEK[]"))).toBe(true);
  expect((await rows()).map((r) => [r.command, r.operation, r.decision])).toEqual([["FETCH", "mail:read", "allow"]]);
}

test("an untagged OK [READ-ONLY] during a command makes the selected folder read-only", async () => {
  const rows = auditCursor(proxy);
  const raw = await RawImap.login(proxy.port, { user: "agent", password: "secret" });
  try {
    expect(statusOf(await raw.command("s", "SELECT INBOX"), "s")).toBe("s OK [READ-WRITE] SELECT completed");
    onNoop = "* OK [READ-ONLY] Mailbox is now read-only\r\n";
    const noop = await raw.command("n", "NOOP");
    onNoop = "";
    // The agent is told as upstream said it, once.
    expect(noop).toBe("* OK [READ-ONLY] Mailbox is now read-only\r\nn OK NOOP completed\r\n");
    // Read-only until selected again: a later [READ-WRITE] from upstream is not passed on, and changes nothing.
    onNoop = "* OK [READ-WRITE] Mailbox is writable again\r\n";
    expect(await raw.command("n2", "NOOP")).toBe("n2 OK NOOP completed\r\n");
    onNoop = "";
    await expectWritesRefused(raw, rows);
    // CLOSE does not expunge a read-only mailbox (RFC 3501 §6.4.2 via §6.3.2).
    received.length = 0;
    expect(statusOf(await raw.command("c", "CLOSE"), "c")).toStartWith("c OK");
    expect(received.filter((l) => /EXPUNGE|STORE/i.test(l))).toEqual([]);
  } finally {
    raw.close();
  }
});

test("an unsolicited OK [READ-ONLY] between two commands makes the selected folder read-only", async () => {
  const rows = auditCursor(proxy);
  const raw = await RawImap.login(proxy.port, { user: "agent", password: "secret" });
  try {
    expect(statusOf(await raw.command("s", "SELECT INBOX"), "s")).toBe("s OK [READ-WRITE] SELECT completed");
    // Upstream speaks while no command is under way.
    lastSocket!.write("* OK [READ-ONLY] Mailbox is now read-only\r\n");
    await Bun.sleep(200);
    // The agent is told with the reply to its next command, once.
    const next = await raw.command("n", "NOOP");
    expect(next).toBe("* OK [READ-ONLY] Mailbox is now read-only\r\nn OK NOOP completed\r\n");
    expect(await raw.command("n2", "NOOP")).toBe("n2 OK NOOP completed\r\n");
    await expectWritesRefused(raw, rows);
    // A new SELECT opens the folder afresh, as upstream answers it.
    expect(statusOf(await raw.command("s2", "SELECT INBOX"), "s2")).toBe("s2 OK [READ-WRITE] SELECT completed");
    expect(statusOf(await raw.command("t", "STORE 1 +FLAGS (\\Flagged)"), "t")).toStartWith("t OK");
  } finally {
    raw.close();
  }
});

test("an untagged OK [READ-ONLY] in IDLE is passed to the agent and makes the folder read-only", async () => {
  const rows = auditCursor(proxy);
  const raw = await RawImap.login(proxy.port, { user: "agent", password: "secret" });
  try {
    expect(statusOf(await raw.command("s", "SELECT INBOX"), "s")).toBe("s OK [READ-WRITE] SELECT completed");
    raw.write("i IDLE\r\n");
    expect(await raw.readUntil((b) => b.includes("+ "))).toContain("+ ");
    raw.take();
    for (let i = 0; idleTag === null && i < 100; i++) await Bun.sleep(20);
    lastSocket!.write("* OK [READ-ONLY] Mailbox is now read-only\r\n");
    // Told while it idles, before it says DONE (RFC 3501 §7.1, §6.3.2).
    expect(await raw.readUntil((b) => b.includes("\r\n"), 3000)).toBe("* OK [READ-ONLY] Mailbox is now read-only\r\n");
    raw.take();
    raw.write("DONE\r\n");
    expect(statusOf(await raw.waitTagged("i"), "i")).toStartWith("i OK");
    // Told once: the next reply does not repeat it.
    expect(await raw.command("n", "NOOP")).toBe("n OK NOOP completed\r\n");
    await expectWritesRefused(raw, rows);
  } finally {
    raw.close();
  }
});

test("an OK [READ-ONLY] in the reply the proxy gets while it learns an arrival in IDLE is told then too", async () => {
  const raw = await RawImap.login(proxy.port, { user: "agent", password: "secret" });
  try {
    expect(statusOf(await raw.command("s", "SELECT INBOX"), "s")).toBe("s OK [READ-WRITE] SELECT completed");
    raw.write("i IDLE\r\n");
    await raw.readUntil((b) => b.includes("+ "), 3000);
    raw.take();
    for (let i = 0; idleTag === null && i < 100; i++) await Bun.sleep(20);
    onSync = "* OK [READ-ONLY] Mailbox is now read-only\r\n";
    // An arrival: the proxy leaves IDLE upstream, learns its UID (the reply carrying the notice), and idles again.
    lastSocket!.write("* 4 EXISTS\r\n");
    const told = await raw.readUntil((b) => b.includes("[READ-ONLY]") && b.includes("EXISTS"), 3000);
    onSync = "";
    expect(told.split("\r\n").filter((l) => l !== "")).toEqual([
      "* 4 EXISTS",
      "* OK [READ-ONLY] Mailbox is now read-only",
    ]);
    raw.take();
    for (let i = 0; idleTag === null && i < 100; i++) await Bun.sleep(20);
    raw.write("DONE\r\n");
    expect(await raw.waitTagged("i")).toBe("i OK Idle completed\r\n");
  } finally {
    raw.close();
  }
});
