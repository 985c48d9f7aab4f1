/**
 * The proxy leaves a folder upstream with UNSELECT whenever the agent is told it has none selected: a SELECT refused
 * after upstream opened the folder, CLOSE, UNSELECT (src/imap/session.ts `unselectUpstream`). An UNSELECT upstream
 * answers NO or BAD while it still has the folder selected leaves it open under a session the agent takes for one with
 * none: its responses would come with later commands, and before the next SELECT's `[CLOSED]` (RFC 9051 §7.1) they
 * would be taken for the new folder's. So the session ends, `* BYE [UNAVAILABLE]` with an `error` row (docs/imap.md
 * "Decisions"). Before, the refusal was ignored: the agent was told NO (or OK) and went on with the folder still open
 * upstream. Against Dovecot, through a relay that answers the proxy's UNSELECT itself (tests/fixtures/tcp-relay.ts).
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import { connectImap, createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { LineRelay, UPSTREAM_REFUSALS } from "../fixtures/tcp-relay.ts";
import {
  auditCursor,
  dovecotImap,
  fromMessage,
  RawImap,
  startRelayedProxy,
  statusOf,
  type TestProxy,
} from "./helpers.ts";

/** Box shows shop@ messages only; the agent may delete there (so SELECT opens it read-write upstream). */
const RULES = `
[[rules]]
name = "box: shop only"
folders = ["Box"]
from = "shop@*"
action = "allow"
operations = ["read"]

[[rules]]
name = "box: tidy"
folders = ["Box"]
action = "allow"
operations = ["folder:read", "mail:delete"]

[[rules]]
name = "nothing else"
action = "deny"
`;

const UNSELECT = /^\S+ UNSELECT\r\n$/;
const BYE = "* BYE [UNAVAILABLE] The server did not close the mailbox\r\n";

let relay: LineRelay;
let proxy: TestProxy;
let mailbox: TestMailbox;
let rows: ReturnType<typeof auditCursor>;

beforeAll(async () => {
  mailbox = await createMailbox({ name: "unselect-refused" });
  const human = await connectImap(mailbox);
  await human.mailboxCreate("Box");
  await human.append("Box", fromMessage("shop@s.test", "receipt"));
  await human.append("Box", fromMessage("bank@corp.test", "hidden-statement"));
  await human.logout();
  relay = await LineRelay.start(dovecotImap());
  proxy = await startRelayedProxy(relay, RULES);
  rows = auditCursor(proxy);
});

afterAll(async () => {
  await proxy?.close();
  await relay?.close();
});

for (const [status, line] of UPSTREAM_REFUSALS) {
  test(`a SELECT refused after upstream opened the folder, whose UNSELECT is answered ${status}: * BYE`, async () => {
    const raw = await RawImap.login(proxy.port, mailbox);
    try {
      await rows();
      // SELECT's UID SEARCH ALL with a UID left out refuses the SELECT (tests/imap/select-uid-list.test.ts).
      const altered = relay.rewrite(/^\* SEARCH 1 2\r\n$/, () => "* SEARCH 2\r\n");
      const answered = relay.answer(UNSELECT, line);
      raw.write("s SELECT Box\r\n");
      const out = await raw.readUntil(() => false, 5000, "the session was not closed");
      await altered;
      await answered;
      expect(out).toBe(BYE);
      expect(raw.closed).toBe(true);
      const own = (await rows()).filter((r) => r.command === "SELECT");
      expect(own.map((r) => [r.folder, r.decision])).toEqual([
        ["Box", "error"],
        ["Box", "error"],
      ]);
      expect(own[0]!.reason).toStartWith("the folder's UIDs could not be listed: ");
      expect(own[1]!.reason).toStartWith(`the upstream server kept the mailbox selected: UNSELECT answered ${status} `);
      expect(own[1]!.reason).toEndWith("; the session was ended");
    } finally {
      raw.close();
      relay.clear();
    }
  });
}

for (const command of ["UNSELECT", "CLOSE"] as const) {
  test(`the agent's ${command}, whose UNSELECT upstream answers NO: * BYE, not OK`, async () => {
    const raw = await RawImap.login(proxy.port, mailbox);
    try {
      expect(statusOf(await raw.command("s", "SELECT Box"), "s")).toBe("s OK [READ-WRITE] SELECT completed");
      await rows();
      const answered = relay.answer(UNSELECT, UPSTREAM_REFUSALS[0][1]);
      raw.write(`c ${command}\r\n`);
      const out = await raw.readUntil(() => false, 5000, "the session was not closed");
      await answered;
      expect(out).toBe(BYE);
      expect(raw.closed).toBe(true);
      const own = (await rows()).filter((r) => r.decision === "error");
      expect(own.map((r) => [r.command, r.folder])).toEqual([[command, "Box"]]);
      expect(own[0]!.reason).toStartWith("the upstream server kept the mailbox selected: UNSELECT answered NO ");
    } finally {
      raw.close();
      relay.clear();
    }
  });

  test(`the agent's ${command} answered as usual: OK, and the session goes on (not the relay)`, async () => {
    const raw = await RawImap.login(proxy.port, mailbox);
    try {
      expect(statusOf(await raw.command("s", "SELECT Box"), "s")).toStartWith("s OK");
      expect(statusOf(await raw.command("c", command), "c")).toStartWith("c OK");
      expect(statusOf(await raw.command("f", "FETCH 1 (UID)"), "f")).toStartWith("f BAD");
      expect(statusOf(await raw.command("t", "SELECT Box"), "t")).toStartWith("t OK");
    } finally {
      raw.close();
    }
  });
}
