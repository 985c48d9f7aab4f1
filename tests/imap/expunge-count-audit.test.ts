/**
 * The `expunged` row of an EXPUNGE or UID EXPUNGE counts the messages the agent's command expunged (docs/audit.md
 * "What a row records"), not every expunge upstream reports while it runs: another session's expunge of a message
 * the agent sees, reported in the same answer (RFC 9051 §7.5.1), is relayed to the agent but is not the agent's
 * doing. Against Dovecot, through a relay that holds the proxy's `UID EXPUNGE` while a second session, straight to
 * Dovecot, expunges another message (tests/fixtures/tcp-relay.ts).
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { HoldingRelay } from "../fixtures/tcp-relay.ts";
import { ALLOW_ALL, auditCursor, RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

let relay: HoldingRelay;
let proxy: TestProxy;

beforeAll(async () => {
  const up = upstreams();
  relay = await HoldingRelay.start({ host: up.host, port: up.ports.imap });
  proxy = await startTestProxy({ rules: ALLOW_ALL, upstreamTls: "none", upstreamAddr: `127.0.0.1:${relay.port}` });
});

afterAll(async () => {
  await proxy?.close();
  await relay?.close();
});

/**
 * The agent marks UID 1 `\Deleted` and sends `command`; while its upstream `UID EXPUNGE` is held, a direct session
 * expunges UID 2. Returns what the agent was answered and the command's `expunged` rows.
 */
async function expungeDuringOther(mailbox: TestMailbox, command: string) {
  const rows = auditCursor(proxy);
  const agent = await RawImap.login(proxy.port, mailbox);
  const other = await RawImap.login(upstreams().ports.imap, mailbox);
  try {
    expect(statusOf(await agent.command("s", "SELECT INBOX"), "s")).toStartWith("s OK");
    expect(statusOf(await agent.command("d", "UID STORE 1 +FLAGS.SILENT (\\Deleted)"), "d")).toStartWith("d OK");
    expect(statusOf(await other.command("s", "SELECT INBOX"), "s")).toStartWith("s OK");
    const release = Promise.withResolvers<void>();
    const held = relay.hold(/^\S+ UID EXPUNGE /m, release.promise);
    const answer = agent.command("x", command);
    await held;
    expect(statusOf(await other.command("o", "UID STORE 2 +FLAGS.SILENT (\\Deleted)"), "o")).toStartWith("o OK");
    const gone = await other.command("o2", "UID EXPUNGE 2");
    expect(gone).toContain("* 2 EXPUNGE");
    release.resolve();
    const reply = await answer;
    const expunged = (await rows()).filter((r) => r.reason === "expunged");
    return { reply, expunged };
  } finally {
    agent.socket.destroy();
    other.socket.destroy();
  }
}

test("UID EXPUNGE: the other session's expunge is relayed, and not counted as the agent's", async () => {
  const mailbox = await createMailbox({ seed: { folders: { INBOX: 4 }, seed: 51 } });
  const { reply, expunged } = await expungeDuringOther(mailbox, "UID EXPUNGE 1");
  expect(statusOf(reply, "x")).toStartWith("x OK");
  // Both expunges reach the agent (message 2, then message 1, or in upstream's order), each once.
  expect(reply.match(/^\* \d+ EXPUNGE/gm)?.length).toBe(2);
  expect(expunged.map((r) => [r.command, r.count])).toEqual([["UID EXPUNGE", 1]]);
});
