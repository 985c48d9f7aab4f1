/**
 * Round trips the proxy makes upstream (docs/protocol.md §1, EXPUNGE), against the real Dovecot behind a recording
 * TCP relay: a bare EXPUNGE in an unfiltered folder is one `UID EXPUNGE`, with no `UID SEARCH DELETED` before it,
 * and it spares a `\Deleted` message the agent was not told of.
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import { connect, createServer, type Server, type Socket } from "node:net";
import { createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

/** What crossed the relay, in order: `up` from the proxy to Dovecot, `down` back. */
const wire: { dir: "up" | "down"; text: string }[] = [];
let relay: Server;
let proxy: TestProxy;
let box: TestMailbox;

beforeAll(async () => {
  const up = upstreams();
  relay = createServer((inner: Socket) => {
    const outer = connect(up.ports.imap, up.host);
    inner.on("data", (d) => {
      wire.push({ dir: "up", text: d.toString("latin1") });
      outer.write(d);
    });
    outer.on("data", (d) => {
      wire.push({ dir: "down", text: d.toString("latin1") });
      inner.write(d);
    });
    inner.on("close", () => outer.destroy());
    outer.on("close", () => inner.destroy());
    inner.on("error", () => {});
    outer.on("error", () => {});
  });
  await new Promise<void>((resolve) => relay.listen(0, "127.0.0.1", resolve));
  const port = (relay.address() as { port: number }).port;
  proxy = await startTestProxy({ upstreamAddr: `127.0.0.1:${port}`, upstreamTls: "none" });
  box = await createMailbox({ seed: {} });
});

afterAll(async () => {
  await proxy.close();
  relay.close();
});

test("a bare EXPUNGE, unfiltered folder: one UID EXPUNGE that spares a message the agent was not told of", async () => {
  const agent = await RawImap.open(proxy.port);
  await agent.command("a", `LOGIN "${box.user}" "${box.password}"`);
  const selected = await agent.command("b", "SELECT INBOX");
  const count = Number(/\* (\d+) EXISTS/.exec(selected)![1]);
  expect(statusOf(await agent.command("c", "STORE 1 +FLAGS.SILENT (\\Deleted)"), "c")).toStartWith("c OK");
  // Another session adds a \Deleted message the agent has not heard of yet.
  const other = await RawImap.open(proxy.port);
  await other.command("x", `LOGIN "${box.user}" "${box.password}"`);
  const late = "From: late@example.com\r\nSubject: late\r\n\r\nlate\r\n";
  const added = await other.command("y", `APPEND INBOX (\\Deleted) {${late.length}+}\r\n${late}`);
  const lateUid = /\[APPENDUID \d+ (\d+)\]/.exec(added)![1];
  other.close();
  const mark = wire.length;
  const reply = await agent.command("d", "EXPUNGE");
  expect(statusOf(reply, "d")).toStartWith("d OK");
  expect(reply).toContain("* 1 EXPUNGE");
  const upstream = wire.slice(mark).filter((e) => e.dir === "up");
  expect(upstream.filter((e) => /UID SEARCH/.test(e.text))).toEqual([]);
  expect(upstream.filter((e) => /UID EXPUNGE/.test(e.text)).length).toBe(1);
  // The late message survives, and the agent learns of it: one expunged, one arrived.
  expect(reply).toContain(`* ${count} EXISTS`);
  const after = await agent.command("e", "UID SEARCH ALL");
  expect(after.split("\r\n")[0]!.split(" ")).toContain(lateUid!);
  agent.close();
});
