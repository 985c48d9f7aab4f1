/**
 * DELETE and RENAME list the folders below the one they name before they are decided (docs/imap.md "Decisions"):
 * a child that is filtered, read-only or hidden refuses them. When upstream answers that listing with NO or BAD, the
 * listing is not complete, and an empty one would let the command reach those children unchecked: the command is
 * refused with `NO [UNAVAILABLE]`, nothing goes upstream, and its `error` row says why. Before, the failed listing
 * counted as "no folders below", and a RENAME carried a filtered child's hidden messages to a name where the agent
 * reads all of them. Against Dovecot, through a relay that answers the proxy's `LIST "" "Box/*"` itself
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

/** Box is the agent's, except that its child Box/Filtered shows shop@ messages only. */
const RULES = `
[[rules]]
name = "box child: shop only"
folders = ["Box/Filtered"]
from = "shop@*"
action = "allow"
operations = ["read"]

[[rules]]
name = "box child: nothing else to read"
folders = ["Box/Filtered"]
action = "deny"
operations = ["read"]

[[rules]]
name = "own"
folders = ["Box", "Box/**", "Done", "Done/**"]
action = "allow"

[[rules]]
name = "nothing else"
action = "deny"
`;

/** The proxy's listing of the folders below Box, with its tag. */
const LISTING = /^(\S+) LIST "" "?Box\/\*"?\r\n/;

let relay: AnsweringRelay;
let proxy: TestProxy;
let mailbox: TestMailbox;
let rows: ReturnType<typeof auditCursor>;

beforeAll(async () => {
  mailbox = await createMailbox({ name: "subtree-listing-refused" });
  const human = await connectImap(mailbox);
  for (const f of ["Box", "Box/Filtered"]) await human.mailboxCreate(f);
  await human.append("Box/Filtered", fromMessage("shop@s.test", "receipt"));
  await human.append("Box/Filtered", fromMessage("bank@corp.test", "hidden-statement"));
  await human.logout();
  relay = await AnsweringRelay.start(dovecotImap());
  proxy = await startRelayedProxy(relay, RULES);
  rows = auditCursor(proxy);
});

afterAll(async () => {
  await proxy?.close();
  await relay?.close();
});

const UNDECIDED = (command: string) =>
  `${command} not decided (the folders below it were being listed) and not sent upstream; upstream did not list them`;

for (const [status, line] of UPSTREAM_REFUSALS) {
  for (const [command, target] of [
    ["DELETE Box", null],
    ["RENAME Box Done", "Done"],
  ] as const) {
    const name = command.split(" ")[0]!;
    test(`${command}: the listing below answered ${status} refuses it; nothing changes upstream`, async () => {
      const before = await upstreamState(mailbox);
      const raw = await RawImap.login(proxy.port, mailbox);
      await rows();
      try {
        const reply = await relay.answering(LISTING, line, () => raw.command("c", command));
        expect(statusOf(reply, "c")).toBe(
          "c NO [UNAVAILABLE] The folders below it could not be listed; nothing was done",
        );
      } finally {
        raw.close();
      }
      expect(await upstreamState(mailbox)).toEqual(before);
      const own = (await rows()).filter((r) => r.command === name);
      expect(own.map((r) => [r.operation, r.folder, r.target, r.decision, r.rule])).toEqual([
        ["folder:write", "Box", target, "error", "own"],
      ]);
      expect(own[0]!.reason).toStartWith(`${UNDECIDED(name)}: ${status} `);
    });
  }
}

test("with the listing answered, the filtered child refuses RENAME as before (not the relay)", async () => {
  const raw = await RawImap.login(proxy.port, mailbox);
  try {
    expect(statusOf(await raw.command("c", "RENAME Box Done"), "c")).toBe(
      "c NO [NOPERM] Not permitted: folders below it are not all the agent's to rename",
    );
  } finally {
    raw.close();
  }
});
