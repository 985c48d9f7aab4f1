/**
 * A `/` inside a level of an upstream whose hierarchy delimiter is not `/`. Rules see `/`-separated names
 * whatever the server's delimiter (docs/config.md "Globs"), so on a `.` server the single top-level name `Agent/x`
 * reads to the rules as `x` below `Agent`: a rule that confines an agent to `Agent/**` would let it create, and use,
 * top-level folders outside `Agent`. Such a name does not exist for the agent (docs/protocol.md §4).
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createServer, type Server, type Socket } from "node:net";
import { FolderNames } from "../../src/imap/folders.ts";
import { RawImap, startTestProxy, type TestProxy } from "./helpers.ts";

/** A scripted upstream with `.` as its delimiter; it records every CREATE it is sent. */
function scriptedUpstream(created: string[]): Server {
  return createServer((socket: Socket) => {
    socket.setEncoding("latin1");
    socket.write("* OK [CAPABILITY IMAP4rev1 LOGIN UIDPLUS UNSELECT] scripted\r\n");
    let buffer = "";
    socket.on("data", (d: string) => {
      buffer += d;
      for (let i = buffer.indexOf("\r\n"); i >= 0; i = buffer.indexOf("\r\n")) {
        const line = buffer.slice(0, i);
        buffer = buffer.slice(i + 2);
        const [tag, name = ""] = line.split(" ");
        const command = name.toUpperCase();
        if (command === "LOGIN") socket.write(`${tag} OK [CAPABILITY IMAP4rev1 UIDPLUS UNSELECT] Logged in\r\n`);
        else if (command === "LIST" && line.endsWith('""')) socket.write(`* LIST (\\Noselect) "." ""\r\n${tag} OK\r\n`);
        else if (command === "LIST")
          socket.write(
            `* LIST () "." INBOX\r\n* LIST () "." Agent\r\n* LIST () "." "Agent/Payroll"\r\n` +
              `${tag} OK List completed\r\n`,
          );
        else if (command === "CREATE") {
          created.push(line.slice(tag!.length + 8));
          socket.write(`${tag} OK Create completed\r\n`);
        } else if (command === "LOGOUT") socket.end(`* BYE\r\n${tag} OK Logout completed\r\n`);
        else socket.write(`${tag} OK done\r\n`);
      }
    });
    socket.on("error", () => {});
  });
}

describe("a '/' inside a level, upstream delimiter '.'", () => {
  const created: string[] = [];
  let upstream: Server;
  let proxy: TestProxy;
  beforeAll(async () => {
    upstream = scriptedUpstream(created);
    await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve));
    const port = (upstream.address() as { port: number }).port;
    proxy = await startTestProxy({
      upstreamTls: "none",
      upstreamAddr: `127.0.0.1:${port}`,
      caFile: null,
      rules: `
[[rules]]
name = "agent area"
folders = ["Agent", "Agent/**"]
action = "allow"
`,
    });
  });
  afterAll(async () => {
    await proxy.close();
    await new Promise<void>((resolve) => upstream.close(() => resolve()));
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
      expect(created).toEqual(["Agent.y"]);
    } finally {
      raw.close();
    }
  });
});
