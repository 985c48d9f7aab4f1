/**
 * The read-ahead bound of an IMAP session (READ_AHEAD_LIMIT, docs/imap-wire.md "Limits", docs/reliability.md): the
 * session reads from its agent until more than READ_AHEAD_LIMIT octets wait unframed ahead of the running command,
 * then pauses the agent's socket until they are taken. Against Dovecot, at the limit and one past it: the chunks are
 * handed to the session's own data handler in this process, so their sizes are exact whatever TCP does.
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import { READ_AHEAD_LIMIT } from "../../src/imap/limits.ts";
import { Connection } from "../../src/net/connection.ts";
import { createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

let mailbox: TestMailbox;
let proxy: TestProxy;

beforeAll(async () => {
  mailbox = await createMailbox({ seed: { folders: { INBOX: 1 }, seed: 7 } });
  proxy = await startTestProxy();
});

afterAll(async () => {
  await proxy?.close();
});

test("READ_AHEAD_LIMIT octets pipelined ahead keep the agent's socket read; one octet more pauses it", async () => {
  // The data handler and pauses of each agent connection the proxy makes from here on (observed, not changed).
  const handlers = new Map<number, NonNullable<Parameters<Connection["onData"]>[0]>>();
  const pauses = new Map<number, number>();
  const { onData, pause } = Connection.prototype;
  Connection.prototype.onData = function (this: Connection, handler) {
    if (handler !== null) handlers.set(this.remotePort, handler);
    onData.call(this, handler);
  };
  Connection.prototype.pause = function (this: Connection) {
    pauses.set(this.remotePort, (pauses.get(this.remotePort) ?? 0) + 1);
    pause.call(this);
  };
  try {
    const c = await RawImap.login(proxy.port, mailbox);
    const port = c.socket.localPort ?? 0;
    const feed = handlers.get(port);
    if (feed === undefined) throw new Error("the agent's connection was not seen");
    const paused = () => pauses.get(port) ?? 0;
    expect(paused()).toBe(0);
    // Exactly READ_AHEAD_LIMIT octets of five STATUS commands of long names that do not exist (a few commands
    // answered by Dovecot, not thousands), the last one without its LF; handed over in one go, before the session
    // takes any of them.
    const octets = READ_AHEAD_LIMIT + 1; // with the last LF
    const lines = Array.from({ length: 5 }, (_, i) => {
      const length = i < 4 ? Math.floor(octets / 5) : octets - 4 * Math.floor(octets / 5);
      const head = `s${i} STATUS "`;
      const tail = `" (MESSAGES)\r\n`;
      return head + "x".repeat(length - head.length - tail.length) + tail;
    });
    const ahead = lines.join("").slice(0, -1);
    expect(ahead.length).toBe(READ_AHEAD_LIMIT);
    feed(Buffer.from(ahead, "latin1"));
    expect(paused()).toBe(0);
    feed(Buffer.from("\n", "latin1"));
    expect(paused()).toBe(1);
    // Every command is answered, and reading resumes once they are taken: the next command comes over the socket.
    const reply = await c.command("last", "NOOP");
    for (let i = 0; i < 5; i++) expect(statusOf(reply, `s${i}`)).toMatch(new RegExp(`^s${i} (OK|NO) `));
    expect(statusOf(reply, "last")).toStartWith("last OK");
    c.close();
  } finally {
    Connection.prototype.onData = onData;
    Connection.prototype.pause = pause;
  }
});
