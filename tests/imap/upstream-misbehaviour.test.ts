/**
 * An upstream server that sends what the proxy never asked for (docs/protocol.md §0, "Fail closed"): a scripted
 * upstream, since Dovecot does not misbehave so. INBOX is filtered: UID 1 and 3 are from notifications@ (visible),
 * UID 2 from someone else (hidden).
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
name = "notifications"
folders = ["INBOX"]
from = "notifications@*"
action = "allow"
operations = ["read"]

[[rules]]
name = "plain"
folders = ["Plain", "Plain/*"]
action = "allow"

[[rules]]
name = "deny"
action = "deny"
`;

const CAPS = "IMAP4rev1 LOGIN UIDPLUS UNSELECT CONDSTORE";
const SYSTEM = "\\Answered \\Flagged \\Deleted \\Seen \\Draft";
const FROM: Record<number, string> = {
  1: "notifications@corp.test",
  2: "boss@corp.test",
  3: "notifications@corp.test",
};

/** What the scripted upstream answers to a NOOP (before its OK, none after a BYE), ENABLE and STATUS; set per test. */
let onNoop = "";
let onEnable = "";
let onStatus = "";
/** What the scripted upstream answers to LIST and LSUB in place of its listing and OK (`TAG` is the tag); per test. */
let onList: Partial<Record<"LIST" | "LSUB", string>> = {};
/** A response code the scripted upstream puts in its tagged OK, by command (`CREATE`, `UID COPY`); set per test. */
let okCodes: Record<string, string> = {};

/** What the scripted upstream answers (tests/imap/helpers.ts `startScriptedUpstream`). */
function answer(socket: Socket, { line, tag, command }: ScriptedCommand): void {
  const ok = `${tag} OK ${okCodes[command] ?? ""}done\r\n`;
  if (command === "LOGIN") socket.write(`${tag} OK [CAPABILITY ${CAPS}] Logged in\r\n`);
  else if ((command === "LIST" || command === "LSUB") && onList[command] !== undefined)
    socket.write(onList[command].replaceAll("TAG", tag));
  else if (command === "LIST")
    socket.write(`* LIST (\\HasNoChildren) "/" INBOX\r\n* LIST (\\HasNoChildren) "/" Plain\r\n${ok}`);
  else if (command === "SELECT" || command === "EXAMINE")
    socket.write(
      `* FLAGS (${SYSTEM})\r\n* OK [PERMANENTFLAGS (${SYSTEM} \\*)] p\r\n` +
        `* 3 EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY 7] v\r\n* OK [UIDNEXT 4] n\r\n` +
        `${tag} OK [READ-WRITE] done\r\n`,
    );
  else if (command === "UID SEARCH") socket.write(`* SEARCH${/ ALL$/.test(line) ? " 1 2 3" : ""}\r\n${ok}`);
  else if (command === "UID FETCH") {
    // Classification: the From field of the asked UIDs.
    const [, lo, hi] = /^\S+ UID FETCH (\d+)(?::(\d+))? /.exec(line) ?? [];
    const section = /BODY\.PEEK\[([^\]]*)\]/.exec(line)?.[1] ?? "";
    for (let uid = Number(lo); uid <= Number(hi ?? lo); uid++) {
      const header = `From: ${FROM[uid]}\r\n\r\n`;
      socket.write(`* ${uid} FETCH (UID ${uid} BODY[${section}] {${header.length}}\r\n${header})\r\n`);
    }
    socket.write(ok);
  } else if (command === "NOOP") socket.write(onNoop.includes("* BYE") ? onNoop : `${onNoop}${ok}`);
  else if (command === "ENABLE") socket.write(`${onEnable}${ok}`);
  else if (command === "STATUS") socket.write(`${onStatus}${ok}`);
  else if (command === "LOGOUT") socket.end(`* BYE\r\n${tag} OK Logout completed\r\n`);
  else socket.write(ok);
}

let upstream: ScriptedUpstream;
let proxy: TestProxy;
let newRows: ReturnType<typeof auditCursor>;

beforeAll(async () => {
  upstream = await startScriptedUpstream(CAPS, answer);
  const port = upstream.port;
  proxy = await startTestProxy({ upstreamTls: "none", upstreamAddr: `127.0.0.1:${port}`, caFile: null, rules: RULES });
  newRows = auditCursor(proxy);
});

afterAll(async () => {
  await proxy?.close();
  await upstream?.close();
});

test("VANISHED, which needs QRESYNC (never enabled upstream), ends the session: no hidden flags shown", async () => {
  const agent = await RawImap.login(proxy.port, { user: "agent", password: "secret" });
  expect(await agent.command("s", "EXAMINE INBOX")).toContain("* 2 EXISTS\r\n");
  await newRows();
  // UID 1 leaves as QRESYNC would say it; upstream's message 1 is then UID 2, the hidden one, and its flags change.
  onNoop = "* VANISHED 1\r\n* 1 FETCH (FLAGS (\\Flagged $Secret))\r\n";
  agent.write("n NOOP\r\n");
  // Read until the tagged reply, or until the connection closes.
  const reply = await agent.readUntil((b) => /(^|\r\n)n /.test(b));
  expect(reply).not.toContain("$Secret");
  expect(reply).toStartWith("* BYE ");
  expect(reply).not.toContain("n OK");
  const rows = await newRows();
  expect(rows.some((r) => r.decision === "error" && /VANISHED/.test(r.reason ?? ""))).toBe(true);
  onNoop = "";
});

test("an ENABLED naming more than the proxy asked for ends the session", async () => {
  const agent = await RawImap.login(proxy.port, { user: "agent", password: "secret" });
  expect(statusOf(await agent.command("s", "EXAMINE Plain"), "s")).toStartWith("s OK");
  await newRows();
  onEnable = "* ENABLED CONDSTORE QRESYNC\r\n";
  agent.write("e ENABLE CONDSTORE\r\n");
  const reply = await agent.readUntil((b) => /(^|\r\n)e /.test(b));
  expect(reply).toStartWith("* BYE ");
  expect(reply).not.toContain("e OK");
  const rows = await newRows();
  expect(rows.some((r) => r.decision === "error" && /QRESYNC/.test(r.reason ?? ""))).toBe(true);
  onEnable = "";
});

test("STATUS passes on the folder asked about and the items asked for, nothing else upstream sends", async () => {
  const agent = await RawImap.login(proxy.port, { user: "agent", password: "secret" });
  // Another folder's counts (a hidden one), and an item nobody asked for, around the answer.
  onStatus = "* STATUS Secret (MESSAGES 99)\r\n* STATUS Plain (MESSAGES 1 X-SECRET 42 UIDNEXT 7)\r\n";
  expect(await agent.command("t", "STATUS Plain (MESSAGES UIDNEXT)")).toBe(
    "* STATUS Plain (MESSAGES 1 UIDNEXT 7)\r\nt OK done\r\n",
  );
  // LIST-STATUS (RFC 5819) the same way.
  expect(await agent.command("l", 'LIST "" Plain RETURN (STATUS (MESSAGES))')).toBe(
    '* LIST (\\HasNoChildren) "/" Plain\r\n* STATUS Plain (MESSAGES 1)\r\nl OK LIST completed\r\n',
  );
  onStatus = "";
  agent.close();
});

test("UIDNEXT and UIDVALIDITY in the tagged reply of another command than SELECT are not passed on", async () => {
  const agent = await RawImap.login(proxy.port, { user: "agent", password: "secret" });
  // The filtered INBOX selected: a real UIDNEXT there counts hidden arrivals (docs/protocol.md §2).
  expect(await agent.command("s", "EXAMINE INBOX")).toContain("* OK [UIDNEXT 4]");
  okCodes = {
    "UID COPY": "[UIDNEXT 77] ",
    COPY: "[UIDVALIDITY 78] ",
    CREATE: "[UIDNEXT 79] ",
    SUBSCRIBE: "[UIDNEXT 80] ",
    STATUS: "[UIDNEXT 81] ",
  };
  const replies = [
    await agent.command("c", "UID COPY 1 Plain"),
    await agent.command("d", "COPY 1 Plain"),
    await agent.command("e", "CREATE Plain/new"),
    await agent.command("f", "SUBSCRIBE Plain"),
    await agent.command("g", "STATUS Plain (MESSAGES)"),
  ].join("");
  okCodes = {};
  for (const tag of ["c", "d", "e", "f", "g"]) expect(statusOf(replies, tag)).toStartWith(`${tag} OK`);
  expect(replies).not.toMatch(/UIDNEXT|UIDVALIDITY/);
  agent.close();
});

test("a continuation request no command waits for ends the session", async () => {
  const agent = await RawImap.login(proxy.port, { user: "agent", password: "secret" });
  expect(statusOf(await agent.command("s", "EXAMINE Plain"), "s")).toStartWith("s OK");
  await newRows();
  onNoop = "+ send me something\r\n";
  agent.write("n NOOP\r\n");
  const reply = await agent.readUntil((b) => /(^|\r\n)n /.test(b));
  onNoop = "";
  expect(reply).toStartWith("* BYE ");
  expect(reply).not.toContain("n OK");
  const rows = await newRows();
  expect(rows.some((r) => r.decision === "error" && /`\+` when no command waited/.test(r.reason ?? ""))).toBe(true);
});

test("a BYE the server sends without closing ends the session at once, not at the command's deadline", async () => {
  const agent = await RawImap.login(proxy.port, { user: "agent", password: "secret" });
  expect(statusOf(await agent.command("s", "EXAMINE Plain"), "s")).toStartWith("s OK");
  await newRows();
  // No tagged reply and no close: only the BYE.
  onNoop = "* BYE going away\r\n";
  agent.write("n NOOP\r\n");
  const reply = await agent.readUntil((b) => b.includes("* BYE"), 10_000);
  onNoop = "";
  expect(reply).toStartWith("* BYE ");
  expect(reply).not.toContain("n OK");
  const rows = await newRows();
  expect(rows.some((r) => r.decision === "error" && /closed the session: going away/.test(r.reason ?? ""))).toBe(true);
});

test("a LIST or LSUB upstream does not complete is its NO, with the row, not a shorter listing", async () => {
  const agent = await RawImap.login(proxy.port, { user: "agent", password: "secret" });
  await newRows();
  // The listing so far, then a NO: the agent must not take the part for the whole (Plain would seem gone).
  onList = { LIST: '* LIST (\\HasNoChildren) "/" INBOX\r\nTAG NO [SERVERBUG] Internal error occurred\r\n' };
  expect(await agent.command("l", 'LIST "" *')).toBe("l NO [SERVERBUG] Internal error occurred\r\n");
  expect((await newRows()).map((r) => [r.command, r.decision, r.reason])).toEqual([
    ["LIST", "allow", "listing filtered to visible folders; upstream: Internal error occurred"],
  ]);
  // LSUB, and LIST's SUBSCRIBED, read the subscriptions too.
  onList = { LSUB: "TAG NO Subscriptions unavailable\r\n" };
  expect(await agent.command("s", 'LSUB "" *')).toBe("s NO Subscriptions unavailable\r\n");
  expect(await agent.command("t", 'LIST (SUBSCRIBED) "" *')).toBe("t NO Subscriptions unavailable\r\n");
  onList = {};
  expect(await agent.command("a", 'LIST "" *')).toBe(
    '* LIST (\\HasNoChildren) "/" INBOX\r\n* LIST (\\HasNoChildren) "/" Plain\r\na OK LIST completed\r\n',
  );
});
