/**
 * A UID EXPUNGE over more ranges than one upstream command carries (`UPSTREAM_SET_RANGES`) goes upstream in parts
 * (docs/imap.md "COPY carried out in parts"). Cut while a later part waits for its answer (the agent hangs up), the
 * earlier parts were carried out: upstream reported their messages' EXPUNGEs. Those are known to be gone, and the log
 * must say how many (an `expunged` row, as an answered EXPUNGE has), besides the error row saying the outcome of the
 * rest is not known (docs/audit.md "What a row records"). Before, the allow row and the error row were all: 1,000
 * messages destroyed upstream with no count anywhere. Against Dovecot through a relay that holds the second part's
 * command line (tests/fixtures/tcp-relay.ts). The same when the second part is answered NO (a relay answers it in
 * Dovecot's place): the first part's expunges are counted before the error row. And CLOSE, which expunges silently
 * (RFC 3501 §6.4.2), counts what it expunged as EXPUNGE does.
 */
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import type { ImapFlow } from "imapflow";
import type { AuditRow } from "../../src/audit/index.ts";
import { UPSTREAM_SET_RANGES } from "../../src/imap/limits.ts";
import { connectImap, createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { HoldingRelay, TcpRelay } from "../fixtures/tcp-relay.ts";
import { ALLOW_ALL, auditCursor, RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

setDefaultTimeout(60_000);

/** Two more odd UIDs than one part carries: the second part holds the last two. */
const DELETED = UPSTREAM_SET_RANGES + 2;
const MESSAGES = 2 * DELETED;

/** UIDs 1, 3, 5, ...: one upstream range each. */
function oddUids(): string {
  return Array.from({ length: DELETED }, (_, i) => 2 * i + 1).join(",");
}

/** A mailbox of MESSAGES, its DELETED odd UIDs flagged \Deleted (then logged out: a CLOSE would expunge). */
async function flaggedMailbox(seed: number): Promise<TestMailbox> {
  const box = await createMailbox({ seed: { folders: { INBOX: MESSAGES }, seed } });
  const flagger = await connectImap(box);
  await flagger.mailboxOpen("INBOX");
  await flagger.messageFlagsAdd(oddUids(), ["\\Deleted"], { uid: true });
  await flagger.logout();
  return box;
}

let relay: HoldingRelay;
let proxy: TestProxy;
let mailbox: TestMailbox;
let human: ImapFlow;
let rows: () => Promise<AuditRow[]>;

beforeAll(async () => {
  const up = upstreams();
  relay = await HoldingRelay.start({ host: up.host, port: up.ports.imap });
  mailbox = await flaggedMailbox(41);
  human = await connectImap(mailbox);
  proxy = await startTestProxy({ rules: ALLOW_ALL, upstreamTls: "none", upstreamAddr: `127.0.0.1:${relay.port}` });
  rows = auditCursor(proxy);
});

afterAll(async () => {
  await human?.logout();
  await proxy?.close();
  await relay?.close();
});

test("UID EXPUNGE in two parts, cut while the second is unanswered: the first part's expunges counted", async () => {
  const agent = await RawImap.login(proxy.port, mailbox);
  expect(statusOf(await agent.command("s", "SELECT INBOX"), "s")).toStartWith("s OK");
  await rows();
  // The second upstream UID EXPUNGE line is held (never reaches Dovecot); the first goes and is answered.
  let seen = 0;
  const second = { test: (chunk: string) => /^\S+ UID EXPUNGE /m.test(chunk) && ++seen === 2 } as unknown as RegExp;
  const held = relay.hold(second);
  agent.write(`e UID EXPUNGE ${oddUids()}\r\n`);
  await held;
  agent.socket.destroy();
  await Bun.sleep(300);
  relay.dropLinks();
  await Bun.sleep(300);
  // The first part was carried out: its 1,000 messages are gone upstream.
  const status = await human.status("INBOX", { messages: true });
  expect(status && status.messages).toBe(MESSAGES - UPSTREAM_SET_RANGES);
  const own = (await rows()).filter((r) => r.command === "UID EXPUNGE");
  expect(own.map((r) => [r.operation, r.decision, r.count])).toEqual([
    ["mail:delete", "allow", null],
    ["mail:delete", "allow", UPSTREAM_SET_RANGES],
    ["mail:delete", "error", null],
  ]);
  expect([own[1]!.rule, own[1]!.ruleIndex]).toEqual([own[0]!.rule, own[0]!.ruleIndex]);
  expect(own[1]!.reason).toBe(
    "expunged as upstream reported before the session ended (client closed the connection): " +
      "whether it expunged more is not known",
  );
  expect(own[2]!.reason).toContain("whether upstream did it is not known");
});

test("UID EXPUNGE in two parts, the second answered NO: the first part's expunges counted, then error", async () => {
  const box = await flaggedMailbox(43);
  const up = upstreams();
  // Answers the second UID EXPUNGE itself, in Dovecot's words for a failed one; everything else goes on to Dovecot.
  let seen = 0;
  const refusing = await TcpRelay.start({ host: up.host, port: up.ports.imap }, () => ({
    fromClient: (chunk, link) => {
      const m = /^(\S+) UID EXPUNGE /.exec(chunk.toString("latin1"));
      if (m !== null && ++seen === 2) link.client.write(`${m[1]} NO [SERVERBUG] Internal error occurred.\r\n`);
      else link.target.write(chunk);
    },
  }));
  const refused = await startTestProxy({
    rules: ALLOW_ALL,
    upstreamTls: "none",
    upstreamAddr: `127.0.0.1:${refusing.port}`,
  });
  try {
    const newRows = auditCursor(refused);
    const agent = await RawImap.login(refused.port, box);
    expect(statusOf(await agent.command("s", "SELECT INBOX"), "s")).toStartWith("s OK");
    await newRows();
    expect(statusOf(await agent.command("e", `UID EXPUNGE ${oddUids()}`), "e")).toBe("e NO Internal error occurred.");
    agent.close();
    const own = (await newRows()).filter((r) => r.command === "UID EXPUNGE");
    expect(own.map((r) => [r.operation, r.decision, r.count])).toEqual([
      ["mail:delete", "allow", null],
      ["mail:delete", "allow", UPSTREAM_SET_RANGES],
      ["mail:delete", "error", null],
    ]);
    expect(own[1]!.reason).toBe(
      "expunged as upstream reported before upstream answered part 2 of 2 NO (Internal error occurred.)",
    );
  } finally {
    await refused.close();
    await refusing.close();
  }
  const direct = await connectImap(box);
  try {
    const status = await direct.status("INBOX", { messages: true });
    expect(status && status.messages).toBe(MESSAGES - UPSTREAM_SET_RANGES);
  } finally {
    await direct.logout();
  }
});

test("CLOSE counts the messages it expunged, as EXPUNGE does", async () => {
  const box = await createMailbox({ seed: { folders: { INBOX: 5 }, seed: 47 } });
  const flagger = await connectImap(box);
  await flagger.mailboxOpen("INBOX");
  await flagger.messageFlagsAdd("2,4", ["\\Deleted"], { uid: true });
  await flagger.logout();
  const agent = await RawImap.login(proxy.port, box);
  expect(statusOf(await agent.command("s", "SELECT INBOX"), "s")).toStartWith("s OK");
  await rows();
  expect(statusOf(await agent.command("c", "CLOSE"), "c")).toStartWith("c OK");
  agent.close();
  const own = (await rows()).filter((r) => r.command === "CLOSE");
  expect(own.map((r) => [r.operation, r.decision, r.count, r.reason.startsWith("expunged") ? r.reason : ""])).toEqual([
    ["mail:delete", "allow", null, ""],
    ["mail:delete", "allow", 2, "expunged"],
  ]);
});
