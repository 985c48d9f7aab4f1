/**
 * At SELECT the proxy builds the folder's sequence map from upstream's `UID SEARCH ALL` (src/imap/commands/select.ts),
 * and that map decides which message each of the agent's sequence numbers names. An answer that leaves a UID out,
 * repeats one or adds one would shift it: from there on a number could name a hidden message. No real server answers
 * so, but the proxy does not take it on trust: with no EXPUNGE reported during the search (one that was is run again),
 * the UIDs must be as many as the messages upstream reported (docs/imap.md "Decisions"), each once; otherwise the
 * SELECT fails closed, `NO [UNAVAILABLE]` with an `error` row, and no folder is left selected. Before, the proxy opened
 * the folder on the list as it came. Against Dovecot, through a relay that rewrites that one answer
 * (tests/fixtures/tcp-relay.ts); UIDs in another order are only sorted, as RFC 3501 §7.2.5 sets no order.
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import { connectImap, createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { LineRelay } from "../fixtures/tcp-relay.ts";
import {
  auditCursor,
  BOX_SHOP_RULES,
  dovecotImap,
  fromMessage,
  RawImap,
  startRelayedProxy,
  statusOf,
  type TestProxy,
} from "./helpers.ts";

let relay: LineRelay;
let proxy: TestProxy;
let mailbox: TestMailbox;
let rows: ReturnType<typeof auditCursor>;

beforeAll(async () => {
  mailbox = await createMailbox({ name: "select-uid-list" });
  const human = await connectImap(mailbox);
  for (const folder of ["Box", "Open"]) {
    await human.mailboxCreate(folder);
    await human.append(folder, fromMessage("shop@s.test", `${folder}-1`));
    await human.append(folder, fromMessage("bank@corp.test", `${folder}-2`));
    await human.append(folder, fromMessage("shop@s.test", `${folder}-3`));
    await human.append(folder, fromMessage("shop@s.test", `${folder}-4`));
  }
  await human.logout();
  relay = await LineRelay.start(dovecotImap());
  proxy = await startRelayedProxy(relay, BOX_SHOP_RULES);
  rows = auditCursor(proxy);
});

afterAll(async () => {
  await proxy?.close();
  await relay?.close();
});

/** The next `* SEARCH` line from Dovecot (SELECT's `UID SEARCH ALL` is the first) with its UIDs changed by `f`. */
function alterSearch(f: (uids: number[]) => number[]): Promise<void> {
  return relay.rewrite(/^\* SEARCH[ \d]*\r\n$/, (line) => {
    const uids = line.trim().split(" ").slice(2).map(Number);
    return `* SEARCH ${f(uids).join(" ")}\r\n`;
  });
}

/** What each folder shows through the proxy: its messages' UIDs and subjects. */
const SHOWN = { Box: "1 3 4", Open: "1 2 3 4" } as const;

async function shown(raw: RawImap, tag: string): Promise<string> {
  const fetched = await raw.command(tag, "FETCH 1:* (UID)");
  expect(statusOf(fetched, tag)).toStartWith(`${tag} OK`);
  return [...fetched.matchAll(/UID (\d+)/g)].map((m) => m[1]).join(" ");
}

const WRONG = [
  ["one UID left out", (uids: number[]) => uids.filter((u) => u !== 2), "listed 3 UIDs in UID SEARCH ALL for 4"],
  ["one UID repeated in another's place", (uids: number[]) => uids.map((u) => (u === 3 ? 2 : u)), "UID 2 twice"],
  ["a UID added", (uids: number[]) => [...uids, 99], "listed 5 UIDs in UID SEARCH ALL for 4"],
] as const;

for (const folder of ["Box", "Open"] as const) {
  for (const [what, f, reason] of WRONG) {
    test(`${folder}: UID SEARCH ALL answered with ${what}: SELECT refused, no folder left selected`, async () => {
      const raw = await RawImap.login(proxy.port, mailbox);
      try {
        await rows();
        const altered = alterSearch(f);
        const reply = await raw.command("s", `SELECT ${folder}`);
        await altered;
        expect(reply).toBe(
          "s NO [UNAVAILABLE] The mailbox could not be opened: the server listed its messages wrongly\r\n",
        );
        const own = (await rows()).filter((r) => r.command === "SELECT");
        expect(own.map((r) => [r.operation, r.folder, r.decision])).toEqual([["folder:read", folder, "error"]]);
        expect(own[0]!.reason).toStartWith("the folder's UIDs could not be listed: upstream ");
        expect(own[0]!.reason).toContain(reason);
        // Nothing selected, upstream either: a message command is refused, and the next SELECT opens it afresh.
        expect(statusOf(await raw.command("f", "FETCH 1 (UID)"), "f")).toStartWith("f BAD");
        const again = await raw.command("t", `SELECT ${folder}`);
        expect(statusOf(again, "t")).toBe("t OK [READ-ONLY] SELECT completed");
        expect(await shown(raw, "u")).toBe(SHOWN[folder]);
      } finally {
        raw.close();
      }
    });
  }

  test(`${folder}: UIDs listed in another order are sorted, and the folder opens as it is`, async () => {
    const raw = await RawImap.login(proxy.port, mailbox);
    try {
      const altered = alterSearch((uids) => uids.reverse());
      const reply = await raw.command("s", `SELECT ${folder}`);
      await altered;
      expect(statusOf(reply, "s")).toBe("s OK [READ-ONLY] SELECT completed");
      expect(await shown(raw, "u")).toBe(SHOWN[folder]);
    } finally {
      raw.close();
    }
  });
}
