/**
 * SELECT of a filtered folder counts its unseen and recent messages over the visible ones (`UID SEARCH UNSEEN`,
 * `UID SEARCH RECENT` upstream, src/imap/commands/select.ts), after the folder is open. When upstream answers one of
 * those searches NO or BAD, the SELECT is refused (`NO [UNAVAILABLE]`) and, as for any failed SELECT (RFC 3501
 * §6.3.1), no mailbox is left selected, upstream either; an `error` row follows the allow row and says why. Before,
 * the agent was told NO while the proxy kept the folder open: its next FETCH was answered from it. Against Dovecot,
 * through a relay that answers the proxy's search itself (tests/fixtures/tcp-relay.ts).
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
} from "./helpers.ts";

/** Box shows shop@ messages only. */
const RULES = `
[[rules]]
name = "box: shop only"
folders = ["Box"]
from = "shop@*"
action = "allow"
operations = ["read"]

[[rules]]
name = "nothing else"
action = "deny"
`;

let relay: AnsweringRelay;
let proxy: TestProxy;
let mailbox: TestMailbox;
let rows: ReturnType<typeof auditCursor>;

beforeAll(async () => {
  mailbox = await createMailbox({ name: "select-search-refused" });
  const human = await connectImap(mailbox);
  await human.mailboxCreate("Box");
  await human.append("Box", fromMessage("shop@s.test", "receipt"));
  await human.append("Box", fromMessage("bank@corp.test", "hidden-statement"));
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
  for (const key of ["UNSEEN", "RECENT"]) {
    test(`SELECT: UID SEARCH ${key} answered ${status} refuses it and leaves no mailbox selected`, async () => {
      const raw = await RawImap.login(proxy.port, mailbox);
      try {
        await rows();
        const search = new RegExp(`^(\\S+) UID SEARCH ${key}\r\n`);
        const reply = await relay.answering(search, line, () => raw.command("s", "SELECT Box"));
        expect(statusOf(reply, "s")).toBe("s NO [UNAVAILABLE] Mailbox could not be read upstream");
        // No mailbox is selected: a message command is refused as in the authenticated state.
        const fetch = await raw.command("f", "FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
        expect(fetch).not.toContain("Subject");
        expect(statusOf(fetch, "f")).toStartWith("f BAD");
        const own = (await rows()).filter((r) => r.command === "SELECT");
        expect(own.map((r) => [r.operation, r.folder, r.decision, r.rule])).toEqual([
          ["folder:read", "Box", "allow", "box: shop only"],
          ["folder:read", "Box", "error", "box: shop only"],
        ]);
        expect(own[1]!.reason).toContain(`; opened, then closed again: UID SEARCH ${key} upstream: ${status} `);
        // Upstream was left without a mailbox too: the next SELECT opens it afresh and is answered as before.
        expect(statusOf(await raw.command("t", "SELECT Box"), "t")).toBe("t OK [READ-ONLY] SELECT completed");
      } finally {
        raw.close();
      }
    });
  }
}
