/**
 * Other sessions' flag changes (RFC 3501 §7.4.2) that upstream reports while the proxy runs a command of its own on
 * the agent's session: learning the UIDs of new messages and classifying them in a filtered folder
 * (docs/protocol.md §3). A scripted upstream sends the change in the middle of those commands, which a real server
 * does only when another session's write lands in that instant. The agent hears of a visible message's change,
 * renumbered; a hidden message's change and what the proxy fetched for itself never reach it.
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import { createServer, type Server, type Socket } from "node:net";
import { RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

const RULES = `
[[rules]]
name = "notifications"
folders = ["INBOX"]
from = "notifications@*"
action = "allow"
operations = ["read"]

[[rules]]
name = "plain"
folders = ["Plain"]
action = "allow"

[[rules]]
name = "deny"
action = "deny"
`;

const SYSTEM = "\\Answered \\Flagged \\Deleted \\Seen \\Draft";

/** INBOX upstream: UID 1 and 3 from notifications@ (visible), UID 2 from someone else (hidden); UID 4 arrives. */
const FROM: Record<number, string> = {
  1: "notifications@corp.test",
  2: "boss@corp.test",
  3: "notifications@corp.test",
  4: "notifications@corp.test",
};

/** Commands the scripted upstream received, in order. */
const received: string[] = [];

function scriptedUpstream(): Server {
  return createServer((socket: Socket) => {
    socket.setEncoding("latin1");
    socket.write("* OK [CAPABILITY IMAP4rev1 LOGIN UIDPLUS UNSELECT] scripted\r\n");
    let count = 3;
    let buffer = "";
    let selected = "";
    socket.on("data", (d: string) => {
      buffer += d;
      for (let i = buffer.indexOf("\r\n"); i >= 0; i = buffer.indexOf("\r\n")) {
        const line = buffer.slice(0, i);
        buffer = buffer.slice(i + 2);
        received.push(line);
        const [tag, name = "", sub = ""] = line.split(" ");
        const command = name.toUpperCase() === "UID" ? `UID ${sub.toUpperCase()}` : name.toUpperCase();
        const ok = `${tag} OK done\r\n`;
        if (command === "LOGIN") socket.write(`${tag} OK [CAPABILITY IMAP4rev1 UIDPLUS UNSELECT] Logged in\r\n`);
        else if (command === "LIST") socket.write(`* LIST (\\HasNoChildren) "/" INBOX\r\n${ok}`);
        else if (command === "SELECT" || command === "EXAMINE") {
          selected = sub;
          socket.write(
            `* FLAGS (${SYSTEM})\r\n* OK [PERMANENTFLAGS (${SYSTEM} \\*)] p\r\n` +
              `* ${count} EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY 7] v\r\n* OK [UIDNEXT 4] n\r\n` +
              `${tag} OK [READ-WRITE] done\r\n`,
          );
        } else if (command === "UID SEARCH" && selected === "Plain")
          // Another session puts a keyword new to the folder on message 1 while SELECT lists the UIDs.
          socket.write(
            `* FLAGS (${SYSTEM} $New)\r\n* OK [PERMANENTFLAGS (${SYSTEM} $New \\*)] p\r\n* 1 FETCH (FLAGS ($New))\r\n` +
              `* SEARCH 1 2 3\r\n${ok}`,
          );
        else if (command === "UID SEARCH" && / UNSEEN$/.test(line))
          // Asked while SELECT opens the folder: a change now would come before the folder's FLAGS and EXISTS.
          socket.write(`* 1 FETCH (FLAGS (\\Seen $Opening))\r\n* SEARCH 1 2 3\r\n${ok}`);
        else if (command === "UID SEARCH" && / RECENT$/.test(line))
          // None is recent, as SELECT said (`* 0 RECENT`), UID 4 included.
          socket.write(`* SEARCH\r\n${ok}`);
        else if (command === "UID SEARCH")
          socket.write(`* SEARCH ${Array.from({ length: count }, (_, k) => k + 1).join(" ")}\r\n${ok}`);
        else if (command === "NOOP") {
          // UID 4 arrives.
          count = 4;
          socket.write(`* 4 EXISTS\r\n${ok}`);
        } else if (command === "UID FETCH" && / \(UID\)$/.test(line)) {
          // Learning the new UIDs: another session flags UID 3 (visible) and UID 2 (hidden) meanwhile.
          socket.write(`* 3 FETCH (FLAGS (\\Flagged))\r\n* 2 FETCH (FLAGS (\\Flagged $Hidden))\r\n`);
          socket.write(`* 4 FETCH (UID 4)\r\n${ok}`);
        } else if (command === "UID FETCH") {
          // Classification: headers of the asked UIDs, with flag changes of other sessions among them.
          const [, lo, hi] = /^\S+ UID FETCH (\d+)(?::(\d+))? /.exec(line) ?? [];
          const section = /BODY\.PEEK\[([^\]]*)\]/.exec(line)?.[1] ?? "";
          socket.write(`* 1 FETCH (FLAGS (\\Seen $Visible))\r\n* 2 FETCH (UID 2 FLAGS (\\Deleted))\r\n`);
          for (let uid = Number(lo); uid <= Number(hi ?? lo); uid++) {
            const header = `From: ${FROM[uid]}\r\n\r\n`;
            socket.write(
              `* ${uid} FETCH (UID ${uid} FLAGS (\\Answered) BODY[${section}] {${header.length}}\r\n${header})\r\n`,
            );
          }
          socket.write(ok);
        } else if (command === "LOGOUT") socket.end(`* BYE\r\n${tag} OK Logout completed\r\n`);
        else socket.write(ok);
      }
    });
    socket.on("error", () => {});
  });
}

let upstream: Server;
let proxy: TestProxy;

beforeAll(async () => {
  upstream = scriptedUpstream();
  await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve));
  const port = (upstream.address() as { port: number }).port;
  proxy = await startTestProxy({ upstreamTls: "none", upstreamAddr: `127.0.0.1:${port}`, caFile: null, rules: RULES });
});

afterAll(async () => {
  await proxy?.close();
  upstream?.close();
});

test("changes during the proxy's own UID FETCH and classification reach the agent for visible messages", async () => {
  const agent = await RawImap.login(proxy.port, { user: "agent", password: "secret" });
  const selected = await agent.command("s", "EXAMINE INBOX");
  expect(selected).toContain("* 2 EXISTS\r\n");
  // During SELECT's classification nothing is visible yet, and until its responses are out a change is not
  // relayed: a FETCH before EXISTS (UID 1 is already visible during `UID SEARCH UNSEEN`).
  expect(received.some((l) => l.endsWith("UID SEARCH UNSEEN"))).toBe(true);
  expect(selected).not.toContain("FETCH");
  const noop = await agent.command("n", "NOOP");
  // UID 3 is the agent's 2 (UID 2 hidden); UID 1 its 1. UID 2's changes, and the flags sent with the headers the
  // proxy fetched for itself (UID 4 not admitted yet), never. $Visible is new to the agent's FLAGS, which listed the
  // system flags only: an update first (docs/protocol.md §3, "Keywords of a filtered folder").
  expect(noop).toBe(
    "* 2 FETCH (FLAGS (\\Flagged))\r\n" +
      `* FLAGS (${SYSTEM} $Visible)\r\n` +
      "* 1 FETCH (FLAGS (\\Seen $Visible))\r\n* 3 EXISTS\r\nn OK NOOP completed\r\n",
  );
  // The agent's view grew: RECENT is counted again over it (docs/filtering.md "The view"), and has not changed.
  expect(received.slice(-4).map((l) => l.replace(/^\S+ /, ""))).toEqual([
    "NOOP",
    "UID FETCH 4:* (UID)",
    "UID FETCH 4 (UID BODY.PEEK[HEADER.FIELDS (FROM)]<0.65537>)",
    "UID SEARCH RECENT",
  ]);
  agent.close();
});

test("a keyword new to an unfiltered folder while SELECT opens it: the FLAGS the agent gets list it", async () => {
  const agent = await RawImap.login(proxy.port, { user: "agent", password: "secret" });
  const selected = await agent.command("s", "SELECT Plain");
  expect(statusOf(selected, "s")).toStartWith("s OK");
  // Upstream's newer FLAGS and PERMANENTFLAGS in place of the first ones, once each; the change itself is in them.
  expect(selected.match(/^\* FLAGS .*$/gm)).toEqual([`* FLAGS (${SYSTEM} $New)`]);
  expect(selected.match(/^\* OK \[PERMANENTFLAGS .*$/gm)).toEqual([`* OK [PERMANENTFLAGS (${SYSTEM} $New \\*)] p`]);
  expect(selected).not.toContain("FETCH");
  agent.close();
});
