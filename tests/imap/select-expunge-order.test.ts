/**
 * An expunge that upstream reports while a SELECT is being answered (during the `UID FETCH` that learns the UID of
 * a message that arrived during the SELECT's search) is announced after the SELECT, never before its EXISTS: a
 * client that has not yet been told how many messages there are cannot apply `* n EXPUNGE` (RFC 9051 §7.5.1).
 * A scripted upstream, because a real server reports such an expunge only when another session's EXPUNGE lands in
 * that window, which a test cannot time.
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import {
  RawImap,
  type ScriptedUpstream,
  startScriptedUpstream,
  startTestProxy,
  statusOf,
  type TestProxy,
} from "./helpers.ts";

const CAPS = "IMAP4rev1 LOGIN UIDPLUS UNSELECT";
const SYSTEM = "\\Answered \\Flagged \\Deleted \\Seen \\Draft";

let upstream: ScriptedUpstream;
let proxy: TestProxy;

beforeAll(async () => {
  // INBOX: UIDs 1 to 3, then 4 arrives and 2 is expunged, reported at the first UID FETCH.
  let expunged = false;
  upstream = await startScriptedUpstream(CAPS, (socket, { tag, command }) => {
    const ok = `${tag} OK done\r\n`;
    if (command === "LOGIN") socket.write(`${tag} OK [CAPABILITY ${CAPS}] Logged in\r\n`);
    else if (command === "LIST") socket.write(`* LIST (\\HasNoChildren) "/" INBOX\r\n${ok}`);
    else if (command === "SELECT")
      socket.write(
        `* FLAGS (${SYSTEM})\r\n* OK [PERMANENTFLAGS (${SYSTEM} \\*)] p\r\n` +
          `* 3 EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY 7] v\r\n* OK [UIDNEXT 4] n\r\n` +
          `${tag} OK [READ-WRITE] done\r\n`,
      );
    // A message arrives during the search (UID 4, not listed): the proxy asks for its UID afterwards.
    else if (command === "UID SEARCH") socket.write(`* SEARCH 1 2 3\r\n* 4 EXISTS\r\n${ok}`);
    // Meanwhile another session expunged UID 2: reported before the new message's UID (now number 3).
    else if (command === "UID FETCH" && !expunged) {
      expunged = true;
      socket.write(`* 2 EXPUNGE\r\n* 3 FETCH (UID 4)\r\n${ok}`);
    } else if (command === "UID FETCH")
      socket.write(`* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 3)\r\n* 3 FETCH (UID 4)\r\n${ok}`);
    else if (command === "LOGOUT") socket.end(`* BYE\r\n${tag} OK Logout completed\r\n`);
    else socket.write(ok);
  });
  proxy = await startTestProxy({ upstreamTls: "none", upstreamAddr: `127.0.0.1:${upstream.port}`, caFile: null });
});

afterAll(async () => {
  await proxy?.close();
  await upstream?.close();
});

test("an expunge reported while SELECT is answered comes after it, at the next command", async () => {
  const agent = await RawImap.login(proxy.port, { user: "agent", password: "secret" });
  try {
    const selected = await agent.command("s", "SELECT INBOX");
    expect(statusOf(selected, "s")).toStartWith("s OK [READ-WRITE]");
    expect(selected).not.toContain("EXPUNGE");
    // Every message the agent is told of, the expunged one among them until it is announced.
    expect(selected).toContain("* 4 EXISTS\r\n");
    const noop = await agent.command("n", "NOOP");
    expect(noop).toContain("* 2 EXPUNGE\r\n");
    expect(statusOf(noop, "n")).toStartWith("n OK");
    const fetched = await agent.command("f", "FETCH 1:* (UID)");
    expect(fetched.match(/^\* \d+ FETCH \(UID \d+\)/gm)).toEqual([
      "* 1 FETCH (UID 1)",
      "* 2 FETCH (UID 3)",
      "* 3 FETCH (UID 4)",
    ]);
  } finally {
    agent.close();
  }
});
