/**
 * A `/` inside a level of an upstream whose hierarchy delimiter is not `/`. Rules see `/`-separated names
 * whatever the server's delimiter (docs/config.md "Globs"), so on a `.` server the single top-level name `Agent/x`
 * reads to the rules as `x` below `Agent`: a rule that confines an agent to `Agent/**` would let it create, and use,
 * top-level folders outside `Agent`. Such a name does not exist for the agent (docs/protocol.md §4).
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { FolderNames } from "../../src/imap/folders.ts";
import { RawImap, type ScriptedUpstream, startScriptedUpstream, startTestProxy, type TestProxy } from "./helpers.ts";

/**
 * A scripted upstream with `.` as its delimiter: it lists `Agent/Payroll` at the top, and `Agent.x/y` below `Agent`
 * (a LIST of `Agent.*`, as DELETE and RENAME ask for a folder's children); it records every CREATE, DELETE and
 * RENAME it is sent.
 */
function scriptedUpstream(written: string[]): Promise<ScriptedUpstream> {
  return startScriptedUpstream("IMAP4rev1 LOGIN UIDPLUS UNSELECT", (socket, { line, tag, command }) => {
    if (command === "LOGIN") socket.write(`${tag} OK [CAPABILITY IMAP4rev1 UIDPLUS UNSELECT] Logged in\r\n`);
    else if (command === "LIST" && line.endsWith('""')) socket.write(`* LIST (\\Noselect) "." ""\r\n${tag} OK\r\n`);
    else if (command === "LIST" && line.includes("Agent.*"))
      socket.write(`* LIST () "." "Agent.x/y"\r\n${tag} OK List completed\r\n`);
    else if (command === "LIST")
      socket.write(
        `* LIST () "." INBOX\r\n* LIST () "." Agent\r\n* LIST () "." "Agent/Payroll"\r\n` +
          `${tag} OK List completed\r\n`,
      );
    else if (command === "CREATE" || command === "DELETE" || command === "RENAME") {
      written.push(line.slice(tag.length + 1));
      socket.write(`${tag} OK ${command} completed\r\n`);
    } else if (command === "LOGOUT") socket.end(`* BYE\r\n${tag} OK Logout completed\r\n`);
    else socket.write(`${tag} OK done\r\n`);
  });
}

describe("a '/' inside a level, upstream delimiter '.'", () => {
  const written: string[] = [];
  let upstream: ScriptedUpstream;
  let proxy: TestProxy;
  beforeAll(async () => {
    upstream = await scriptedUpstream(written);
    proxy = await startTestProxy({
      upstreamTls: "none",
      upstreamAddr: `127.0.0.1:${upstream.port}`,
      caFile: null,
      rules: `
[[rules]]
name = "agent area"
folders = ["Agent", "Agent/**", "Team", "Team/**"]
action = "allow"
`,
    });
  });
  afterAll(async () => {
    await proxy.close();
    await upstream.close();
  });

  test("FolderNames: such a name is invalid on a '.' server, and still valid on a '/' one", () => {
    expect(new FolderNames(".").invalid("Agent/x")).toBe(true);
    expect(new FolderNames(".").invalid("Agent.x")).toBe(false);
    expect(new FolderNames("/").invalid("Agent/x")).toBe(false);
  });

  test("CREATE of the top-level 'Agent/x' is refused and never reaches the server; 'Agent.x' is created", async () => {
    const raw = await RawImap.open(proxy.port);
    try {
      raw.write("a1 LOGIN user pass\r\n");
      expect(await raw.readUntil((b) => /(^|\r\n)a1 /.test(b))).toContain("a1 OK");
      raw.write('a2 CREATE "Agent/x"\r\n');
      expect(await raw.readUntil((b) => /(^|\r\n)a2 /.test(b))).toContain("a2 NO");
      raw.write("a3 CREATE Agent.y\r\n");
      expect(await raw.readUntil((b) => /(^|\r\n)a3 /.test(b))).toContain("a3 OK");
      raw.write('a4 LIST "" "*"\r\n');
      const list = await raw.readUntil((b) => /(^|\r\n)a4 /.test(b));
      expect(list).not.toContain("Agent/Payroll");
      expect(written).toEqual(["CREATE Agent.y"]);
    } finally {
      raw.close();
    }
  });

  test("DELETE and RENAME of 'Agent' are refused while 'Agent.x/y', which the agent cannot see, is below", async () => {
    written.length = 0;
    const raw = await RawImap.open(proxy.port);
    try {
      raw.write("b1 LOGIN user pass\r\n");
      expect(await raw.readUntil((b) => /(^|\r\n)b1 /.test(b))).toContain("b1 OK");
      raw.write("b2 DELETE Agent\r\n");
      expect(await raw.readUntil((b) => /(^|\r\n)b2 /.test(b))).toContain("b2 NO [NOPERM]");
      raw.write("b3 RENAME Agent Team\r\n");
      expect(await raw.readUntil((b) => /(^|\r\n)b3 /.test(b))).toContain("b3 NO [NOPERM]");
      expect(written).toEqual([]);
    } finally {
      raw.close();
    }
  });
});
