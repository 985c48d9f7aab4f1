/**
 * Upstream answers the proxy cannot use end the session, never a guess: an upstream that will not say its hierarchy
 * delimiter; response codes that carry UIDs or mailbox state in replies to message commands.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { RawImap, type ScriptedUpstream, startScriptedUpstream, startTestProxy, type TestProxy } from "./helpers.ts";

/**
 * A scripted upstream with `.` as its hierarchy delimiter that refuses `LIST "" ""` (the delimiter query) but
 * lists `Secret.Sub` for `LIST "" "*"`.
 */
function scriptedUpstream(): Promise<ScriptedUpstream> {
  return startScriptedUpstream("IMAP4rev1 LOGIN UIDPLUS UNSELECT", (socket, { line, tag, command }) => {
    if (command === "LOGIN") socket.write(`${tag} OK [CAPABILITY IMAP4rev1 UIDPLUS UNSELECT] Logged in\r\n`);
    else if (command === "LIST" && line.endsWith('""')) socket.write(`${tag} NO Try again later\r\n`);
    else if (command === "LIST")
      socket.write(`* LIST () "." INBOX\r\n* LIST () "." Secret.Sub\r\n${tag} OK List completed\r\n`);
    else if (command === "LSUB") socket.write(`${tag} OK Lsub completed\r\n`);
    else if (command === "LOGOUT") socket.end(`* BYE\r\n${tag} OK Logout completed\r\n`);
    else socket.write(`${tag} OK done\r\n`);
  });
}

describe("upstream hierarchy delimiter unknown", () => {
  let upstream: ScriptedUpstream;
  let proxy: TestProxy;
  beforeAll(async () => {
    upstream = await scriptedUpstream();
    proxy = await startTestProxy({
      upstreamTls: "none",
      upstreamAddr: `127.0.0.1:${upstream.port}`,
      caFile: null,
      rules: `
[[rules]]
name = "secret"
folders = ["Secret", "Secret/**"]
action = "deny"

[[rules]]
name = "rest"
action = "allow"
`,
    });
  });
  afterAll(async () => {
    await proxy.close();
    await upstream.close();
  });

  test("the session ends instead of assuming '/' (Secret.Sub would escape Secret/**)", async () => {
    const raw = await RawImap.open(proxy.port);
    try {
      raw.write("a1 LOGIN user pass\r\n");
      const reply = await raw.readUntil((b) => /(^|\r\n)a1 /.test(b) || b.includes("* BYE"));
      expect(reply).not.toContain("a1 OK");
      expect(reply).toContain("* BYE");
      if (!raw.closed) {
        raw.write('a2 LIST "" "*"\r\n');
        const list = await raw.readUntil((b) => /(^|\r\n)a2 /.test(b), 3000).catch(() => "");
        expect(list).not.toContain("Secret");
      }
    } finally {
      raw.close();
    }
  });
});

describe("response codes in replies to message commands", () => {
  test("codes that carry UIDs or mailbox state never pass during FETCH, SEARCH or STORE; the others do", async () => {
    const { messageCommandCode } = await import("../../src/imap/commands/shared.ts");
    // An upstream `* OK [UIDNEXT n]` mid-FETCH in a filtered folder would reveal that hidden mail arrived.
    expect(messageCommandCode({ known: true, name: "UIDNEXT", value: 9999 })).toBeNull();
    expect(messageCommandCode({ known: true, name: "UIDVALIDITY", value: 7 })).toBeNull();
    expect(
      messageCommandCode({ known: true, name: "APPENDUID", uidValidity: 7, uids: [{ start: 5, end: 5 }] } as never),
    ).toBeNull();
    expect(
      messageCommandCode({ known: true, name: "COPYUID", uidValidity: 7, source: [], destination: [] } as never),
    ).toBeNull();
    expect(messageCommandCode({ known: true, name: "HIGHESTMODSEQ", value: 3 })).toBeNull();
    expect(messageCommandCode({ known: false, name: "X-SECRET", text: "x" })).toBeNull();
    expect(messageCommandCode({ known: true, name: "EXPUNGEISSUED" })?.name).toBe("EXPUNGEISSUED");
    expect(messageCommandCode({ known: true, name: "TRYCREATE" })?.name).toBe("TRYCREATE");
  });
});
