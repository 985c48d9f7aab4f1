/**
 * EXPUNGE and CLOSE in a filtered folder first ask upstream which messages are `\Deleted` (`UID SEARCH DELETED`,
 * commands/shared.ts `safeExpunge`), as the agent's view is scattered among hidden UIDs. When upstream answers that
 * search NO or BAD, the search did not say "none": the command is refused with `NO [UNAVAILABLE]`, nothing is
 * expunged, and an `error` row says why (docs/imap.md "Decisions"). Before, the failed search counted as "no message
 * is \Deleted", and the agent was told `OK Expunge completed` (CLOSE: `OK`, the folder closed) with its \Deleted
 * messages still there. Against Dovecot, through a relay that answers the proxy's `UID SEARCH DELETED` itself
 * (tests/fixtures/tcp-relay.ts); Dovecot is read directly after each attempt.
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import { connectImap, createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { AnsweringRelay, UPSTREAM_REFUSALS } from "../fixtures/tcp-relay.ts";
import {
  auditCursor,
  dovecotImap,
  fromMessage,
  RawImap,
  startRelayedProxy,
  statusOf,
  type TestProxy,
  upstreamState,
} from "./helpers.ts";

/** Box shows shop@ messages only; the agent may flag and delete there. */
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
operations = ["folder:read", "mail:flag", "mail:delete"]

[[rules]]
name = "nothing else"
action = "deny"
`;

/** The proxy's search for the \Deleted messages, with its tag. */
const SEARCH_DELETED = /^(\S+) UID SEARCH DELETED\r\n/;

let relay: AnsweringRelay;
let proxy: TestProxy;
let mailbox: TestMailbox;
let rows: ReturnType<typeof auditCursor>;

beforeAll(async () => {
  mailbox = await createMailbox({ name: "expunge-search-refused" });
  const human = await connectImap(mailbox);
  await human.mailboxCreate("Box");
  await human.append("Box", fromMessage("shop@s.test", "receipt-1"));
  await human.append("Box", fromMessage("bank@corp.test", "hidden-statement"));
  await human.append("Box", fromMessage("shop@s.test", "receipt-2"));
  await human.logout();
  relay = await AnsweringRelay.start(dovecotImap());
  proxy = await startRelayedProxy(relay, RULES);
  rows = auditCursor(proxy);
});

afterAll(async () => {
  await proxy?.close();
  await relay?.close();
});

for (const [status, line] of UPSTREAM_REFUSALS) {
  for (const command of ["EXPUNGE", "CLOSE"] as const) {
    test(`${command}: the search for \\Deleted answered ${status} refuses it; nothing is expunged`, async () => {
      const raw = await RawImap.login(proxy.port, mailbox);
      try {
        expect(statusOf(await raw.command("s", "SELECT Box"), "s")).toBe("s OK [READ-WRITE] SELECT completed");
        expect(statusOf(await raw.command("f", "STORE 1 +FLAGS.SILENT (\\Deleted)"), "f")).toStartWith("f OK");
        const before = await upstreamState(mailbox);
        await rows();
        const reply = await relay.answering(SEARCH_DELETED, line, () => raw.command("c", command));
        expect(reply).toBe("c NO [UNAVAILABLE] The deleted messages could not be listed; nothing was expunged\r\n");
        expect(await upstreamState(mailbox)).toEqual(before);
        const own = (await rows()).filter((r) => r.command === command);
        expect(own.map((r) => [r.operation, r.folder, r.decision])).toEqual([
          ["mail:delete", "Box", "allow"],
          ["mail:delete", "Box", "error"],
          ["mail:delete", "Box", "error"],
        ]);
        expect(own[1]!.reason).toStartWith(
          `the deleted messages could not be listed; nothing expunged: upstream: ${status} `,
        );
        expect(own[2]!.reason).toContain("failed after row");
        // Still selected: the folder is there as it was, the message still \Deleted and shown.
        expect(await raw.command("n", "FETCH 1 (FLAGS)")).toMatch(/^\* 1 FETCH \(FLAGS \(\\Deleted[^)]*\)\)\r\nn OK /);
        expect(statusOf(await raw.command("u", "STORE 1 -FLAGS.SILENT (\\Deleted)"), "u")).toStartWith("u OK");
      } finally {
        raw.close();
      }
    });
  }
}

test("with the search answered, EXPUNGE removes the agent's \\Deleted message as before (not the relay)", async () => {
  const raw = await RawImap.login(proxy.port, mailbox);
  try {
    await raw.command("s", "SELECT Box");
    expect(statusOf(await raw.command("a", "STORE 1:* -FLAGS.SILENT (\\Deleted)"), "a")).toStartWith("a OK");
    expect(statusOf(await raw.command("f", "STORE 2 +FLAGS.SILENT (\\Deleted)"), "f")).toStartWith("f OK");
    expect(await raw.command("c", "EXPUNGE")).toBe("* 2 EXPUNGE\r\nc OK Expunge completed\r\n");
  } finally {
    raw.close();
  }
  expect((await upstreamState(mailbox)).messages["Box"]!.uids).toHaveLength(2);
});
