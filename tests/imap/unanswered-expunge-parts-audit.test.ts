/**
 * A UID EXPUNGE over more ranges than one upstream command carries (`UPSTREAM_SET_RANGES`) goes upstream in parts
 * (docs/imap.md "COPY carried out in parts"). Cut while a later part waits for its answer (the agent hangs up), the
 * earlier parts were carried out: upstream reported their messages' EXPUNGEs. Those are known to be gone, and the log
 * must say how many (an `expunged` row, as an answered EXPUNGE has), besides the error row saying the outcome of the
 * rest is not known (docs/audit.md "What a row records"). Before, the allow row and the error row were all: 1,000
 * messages destroyed upstream with no count anywhere. Against Dovecot through a relay that holds the second part's
 * command line (tests/fixtures/tcp-relay.ts).
 */
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import type { ImapFlow } from "imapflow";
import type { AuditRow } from "../../src/audit/index.ts";
import { UPSTREAM_SET_RANGES } from "../../src/imap/limits.ts";
import { connectImap, createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { HoldingRelay } from "../fixtures/tcp-relay.ts";
import { ALLOW_ALL, auditCursor, RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

setDefaultTimeout(60_000);

/** Two more odd UIDs than one part carries: the second part holds the last two. */
const DELETED = UPSTREAM_SET_RANGES + 2;
const MESSAGES = 2 * DELETED;

/** UIDs 1, 3, 5, ...: one upstream range each. */
function oddUids(): string {
  return Array.from({ length: DELETED }, (_, i) => 2 * i + 1).join(",");
}

let relay: HoldingRelay;
let proxy: TestProxy;
let mailbox: TestMailbox;
let human: ImapFlow;
let rows: () => Promise<AuditRow[]>;

beforeAll(async () => {
  const up = upstreams();
  relay = await HoldingRelay.start({ host: up.host, port: up.ports.imap });
  mailbox = await createMailbox({ seed: { folders: { INBOX: MESSAGES }, seed: 41 } });
  // Flagged, then logged out: a CLOSE would expunge them.
  const flagger = await connectImap(mailbox);
  await flagger.mailboxOpen("INBOX");
  await flagger.messageFlagsAdd(oddUids(), ["\\Deleted"], { uid: true });
  await flagger.logout();
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
