/**
 * Extensions the proxy offers only when upstream has them (src/imap/capabilities.ts: BINARY, CONDSTORE,
 * SORT=DISPLAY): when upstream lacks them they are not advertised, and a client that uses them anyway gets the
 * proxy's own BAD; nothing of the command goes upstream. The project's Dovecot offers all three, so this uses a
 * scripted upstream that offers SORT but none of them, with one message in INBOX; the cases where they work are in
 * the BINARY, CONDSTORE and SORT tests against Dovecot.
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import type { Socket } from "node:net";
import {
  RawImap,
  type ScriptedCommand,
  type ScriptedUpstream,
  startScriptedUpstream,
  startTestProxy,
  statusOf,
  type TestProxy,
} from "./helpers.ts";

const CAPS = "IMAP4rev1 LOGIN UIDPLUS UNSELECT SORT LIST-EXTENDED LIST-STATUS";
let received: string[] = [];

/** What the scripted upstream answers (tests/imap/helpers.ts `startScriptedUpstream`); every line is kept. */
function answer(socket: Socket, { line, tag, command }: ScriptedCommand): void {
  received.push(line);
  if (command === "LOGIN") socket.write(`${tag} OK [CAPABILITY ${CAPS}] Logged in\r\n`);
  else if (command === "CAPABILITY") socket.write(`* CAPABILITY ${CAPS}\r\n${tag} OK done\r\n`);
  else if (command === "LIST") socket.write(`* LIST () "/" INBOX\r\n${tag} OK List completed\r\n`);
  else if (command === "SELECT" || command === "EXAMINE")
    socket.write(
      "* FLAGS (\\Seen \\Deleted)\r\n* 1 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT 2] ok\r\n" +
        `${tag} OK [READ-WRITE] Select completed\r\n`,
    );
  // The view of INBOX at SELECT: its one message has UID 1.
  else if (line === `${tag} UID SEARCH ALL`) socket.write(`* SEARCH 1\r\n${tag} OK done\r\n`);
  else if (command === "LOGOUT") socket.end(`* BYE\r\n${tag} OK Logout completed\r\n`);
  else socket.write(`${tag} OK done\r\n`);
}

let upstream: ScriptedUpstream;
let proxy: TestProxy;
beforeAll(async () => {
  upstream = await startScriptedUpstream(CAPS, answer);
  const port = upstream.port;
  proxy = await startTestProxy({ upstreamTls: "none", upstreamAddr: `127.0.0.1:${port}`, caFile: null });
});
afterAll(async () => {
  await proxy.close();
  await upstream.close();
});

test("not advertised, refused by the proxy: FETCH BINARY, SORT DISPLAYFROM, LIST-STATUS HIGHESTMODSEQ", async () => {
  const raw = await RawImap.open(proxy.port);
  try {
    const login = await raw.command("a1", "LOGIN user pass");
    expect(login).toContain("a1 OK [CAPABILITY");
    for (const c of ["BINARY", "CONDSTORE", "SORT=DISPLAY"]) expect(login).not.toContain(` ${c}`);
    expect(statusOf(await raw.command("a2", "SELECT INBOX"), "a2")).toStartWith("a2 OK");
    received = [];
    const cases: [string, string][] = [
      ["FETCH 1:* (BINARY.PEEK[1])", "BINARY is not supported"],
      ["UID FETCH 1:* (BINARY.SIZE[1])", "BINARY is not supported"],
      ["SORT (DISPLAYFROM) UTF-8 ALL", "SORT=DISPLAY is not supported"],
      ["UID SORT (REVERSE DISPLAYTO) UTF-8 ALL", "SORT=DISPLAY is not supported"],
      ['LIST "" "*" RETURN (STATUS (MESSAGES HIGHESTMODSEQ))', "Unsupported STATUS item"],
    ];
    for (const [i, [command, text]] of cases.entries()) {
      const tag = `b${i}`;
      expect(statusOf(await raw.command(tag, command), tag)).toBe(`${tag} BAD ${text}`);
    }
    // The same commands without the extension's items go upstream as before.
    expect(statusOf(await raw.command("c1", "SORT (FROM) UTF-8 ALL"), "c1")).toStartWith("c1 OK");
    expect(received.some((l) => /BINARY|DISPLAY|HIGHESTMODSEQ/i.test(l))).toBe(false);
    expect(received.some((l) => / SORT \(FROM\)/.test(l))).toBe(true);
  } finally {
    raw.close();
  }
});
