/**
 * Round trips the proxy makes upstream (docs/imap.md "Round trips upstream"), against the real Dovecot behind a
 * recording TCP relay: SELECT's `UID SEARCH ALL` is written behind the SELECT before Dovecot answers it, and the
 * view it builds is right; a bare EXPUNGE in an unfiltered folder is one
 * `UID EXPUNGE`, with no `UID SEARCH DELETED` before it, and it spares a `\Deleted` message the agent was not
 * told of. Towards the agent, a command's untagged responses and its tagged reply leave in one write.
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import { createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { TcpRelay } from "../fixtures/tcp-relay.ts";
import { RawImap, recordWrites, startTestProxy, statusOf, type TestProxy, upstreamState } from "./helpers.ts";

/** What crossed the relay, in order: `up` from the proxy to Dovecot, `down` back. */
const wire: { dir: "up" | "down"; text: string }[] = [];
let relay: TcpRelay;
let proxy: TestProxy;
let box: TestMailbox;

beforeAll(async () => {
  const up = upstreams();
  relay = await TcpRelay.start({ host: up.host, port: up.ports.imap }, () => ({
    fromClient: (d, link) => {
      wire.push({ dir: "up", text: d.toString("latin1") });
      link.target.write(d);
    },
    fromTarget: (d, link) => {
      wire.push({ dir: "down", text: d.toString("latin1") });
      link.client.write(d);
    },
  }));
  const port = relay.port;
  proxy = await startTestProxy({ upstreamAddr: `127.0.0.1:${port}`, upstreamTls: "none" });
  box = await createMailbox({ seed: {} });
});

afterAll(async () => {
  await proxy.close();
  await relay.close();
});

/** The index of the first chunk from the proxy after `from` matching `re`, and the tag it starts with. */
function sent(re: RegExp, from: number): { index: number; tag: string } {
  for (let i = from; i < wire.length; i++) {
    const m = wire[i]!.dir === "up" ? re.exec(wire[i]!.text) : null;
    if (m) return { index: i, tag: m[1]! };
  }
  throw new Error(`not sent upstream: ${re}`);
}

test("SELECT: UID SEARCH ALL goes upstream before Dovecot has answered the SELECT, and the view is right", async () => {
  const agent = await RawImap.open(proxy.port);
  await agent.command("a", `LOGIN "${box.user}" "${box.password}"`);
  const mark = wire.length;
  const selected = await agent.command("b", "SELECT INBOX");
  expect(statusOf(selected, "b")).toStartWith("b OK");
  const select = sent(/(?:^|\n)(M\d+) SELECT /, mark);
  const search = sent(/(?:^|\n)(M\d+) UID SEARCH ALL/, mark);
  const replied = wire.findIndex((e, i) => i >= mark && e.dir === "down" && e.text.includes(`${select.tag} OK`));
  expect(replied).toBeGreaterThan(-1);
  expect(search.index).toBeLessThanOrEqual(replied);
  // One UID SEARCH only: the pipelined one was used.
  expect(wire.slice(mark).filter((e) => e.dir === "up" && /UID SEARCH/.test(e.text)).length).toBe(1);
  // The view: as many messages as EXISTS said, numbered in UID order, the same UIDs Dovecot holds.
  const count = Number(/\* (\d+) EXISTS/.exec(selected)![1]);
  const state = await upstreamState(box);
  const fetched = await agent.command("c", "FETCH 1:* (UID)");
  const uids = [...fetched.matchAll(/\* (\d+) FETCH \(UID (\d+)\)/g)].map((m) => [Number(m[1]), m[2]]);
  expect(uids.length).toBe(count);
  expect(uids.map(([n]) => n)).toEqual(Array.from({ length: count }, (_, i) => i + 1));
  expect(uids.map(([, u]) => u)).toEqual(state.messages["INBOX"]!.uids.map((x) => x.split(" ")[0]));
  agent.close();
});

test("SELECT of a folder that does not exist: NO, and the session goes on", async () => {
  const agent = await RawImap.open(proxy.port);
  await agent.command("a", `LOGIN "${box.user}" "${box.password}"`);
  expect(statusOf(await agent.command("b", "SELECT Nonexistent"), "b")).toStartWith("b NO");
  expect(statusOf(await agent.command("c", "SELECT INBOX"), "c")).toStartWith("c OK");
  expect(statusOf(await agent.command("d", "FETCH 1 (UID)"), "d")).toStartWith("d OK");
  agent.close();
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

test("a command's untagged responses and its tagged reply reach the agent in one write", async () => {
  const agent = await RawImap.open(proxy.port);
  await agent.command("a", `LOGIN "${box.user}" "${box.password}"`);
  await agent.command("b", "SELECT INBOX");
  const { writes, restore } = recordWrites();
  try {
    for (const [tag, command] of [
      ["c", "UID FETCH 1:* (FLAGS)"],
      ["d", "FETCH 1 (UID FLAGS)"],
      ["e", "STORE 1 +FLAGS (\\Flagged)"],
    ] as const) {
      writes.length = 0;
      const reply = await agent.command(tag, command);
      expect(reply).toContain(" FETCH (");
      expect(statusOf(reply, tag)).toStartWith(`${tag} OK`);
      // Everything the proxy wrote to any connection for this command: the agent's reply, in one piece.
      const toAgent = writes.filter((w) => w.includes(`${tag} OK`) || /^\* \d+ FETCH/m.test(w));
      expect(toAgent).toEqual([reply]);
    }
  } finally {
    restore();
  }
  agent.close();
});
