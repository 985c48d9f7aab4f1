/**
 * Literals upstream are synchronizing (src/imap/upstream.ts, docs/protocol.md §4, "Upstream literals"), even with
 * LITERAL+ offered: a server that refuses the command before its `+` never receives the literal's octets. A
 * stand-in server that offers LITERAL+ and records every byte it receives; the real Dovecot cases are in
 * literal-injection.test.ts.
 */
import { afterEach, expect, test } from "bun:test";
import { createServer, type Server, type Socket } from "node:net";
import { UpstreamSession } from "../../src/imap/upstream.ts";

const servers: Server[] = [];
const sessions: UpstreamSession[] = [];

afterEach(() => {
  for (const s of sessions.splice(0)) s.close();
  for (const s of servers.splice(0)) s.close();
});

/** A server that offers LITERAL+ and answers each command line ending in a literal with `+` or with BAD. */
async function recording(answer: "continue" | "refuse"): Promise<{ port: number; received: () => string }> {
  let received = "";
  const server = createServer((socket: Socket) => {
    socket.on("error", () => {});
    socket.write("* OK [CAPABILITY IMAP4rev1 LITERAL+ UIDPLUS] ready\r\n");
    let pending = "";
    let literal = 0;
    /** The tag of a command whose line goes on after a literal. */
    let continuing: string | null = null;
    socket.on("data", (chunk) => {
      received += chunk.toString("latin1");
      pending += chunk.toString("latin1");
      for (;;) {
        if (literal > 0) {
          const take = Math.min(literal, pending.length);
          pending = pending.slice(take);
          literal -= take;
          if (literal > 0) return;
        }
        const end = pending.indexOf("\r\n");
        if (end === -1) return;
        const line = pending.slice(0, end);
        pending = pending.slice(end + 2);
        const tag = continuing ?? line.split(" ")[0]!;
        continuing = null;
        const m = /\{(\d+)(\+?)\}$/.exec(line);
        if (m === null) socket.write(`${tag} OK done\r\n`);
        else if (answer === "refuse") socket.write(`${tag} BAD Invalid system flag\r\n`);
        else {
          literal = Number(m[1]);
          continuing = tag;
          if (m[2] === "") socket.write("+ go ahead\r\n");
        }
      }
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { port: (server.address() as { port: number }).port, received: () => received };
}

async function open(port: number): Promise<UpstreamSession> {
  const target = {
    host: "127.0.0.1",
    port,
    tls: "none" as const,
    skipVerify: false,
    extraCa: null,
    connectTimeoutMs: 2000,
  };
  const up = await UpstreamSession.open(target, { connectMs: 2000, handshakeMs: 2000, commandMs: 2000 });
  sessions.push(up);
  return up;
}

const message = new TextEncoder().encode("X1 CREATE Injected\r\nX2 DELETE INBOX\r\n");
const append = {
  name: "APPEND",
  mailbox: "INBOX",
  flags: [],
  date: null,
  message,
  binary: false,
  catenate: null,
  messages: [{ flags: [], date: null, message, binary: false, catenate: null }],
} as const;

test("a command refused before its + sends no octet of its literal, though the server offers LITERAL+", async () => {
  const server = await recording("refuse");
  const up = await open(server.port);
  expect(up.caps.has("LITERAL+")).toBe(true);
  const status = await up.run(append);
  expect(status.status).toBe("BAD");
  await Bun.sleep(100);
  expect(server.received()).toContain(`APPEND INBOX {${message.length}}\r\n`);
  expect(server.received()).not.toContain("X1 CREATE");
  // The session goes on: the next command is answered.
  expect((await up.run({ name: "NOOP" })).status).toBe("OK");
});

test("with the server's +, the literal follows and the command completes", async () => {
  const server = await recording("continue");
  const up = await open(server.port);
  expect((await up.run(append)).status).toBe("OK");
  expect(server.received()).toContain(`APPEND INBOX {${message.length}}\r\nX1 CREATE Injected\r\n`);
});
