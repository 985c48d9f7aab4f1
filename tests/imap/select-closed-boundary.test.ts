/**
 * A SELECT while another folder is selected upstream: the server may still send responses of the folder it closes
 * before its `* OK [CLOSED]`, which marks where the new folder's begin (RFC 9051 §7.1). The proxy holds a SELECT's
 * untagged responses and rewrites them for the agent (src/imap/commands/select.ts), so it drops what came before
 * `[CLOSED]`: taken for the new folder's, a filtered folder's FLAGS (its hidden messages' keywords), RECENT (its
 * hidden messages counted) or UIDNEXT went to the agent as they were. Dovecot sends none there; a relay adds them in
 * front of its `[CLOSED]` (tests/fixtures/tcp-relay.ts).
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import { connectImap, createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { LineRelay } from "../fixtures/tcp-relay.ts";
import {
  BOX_SHOP_RULES,
  dovecotImap,
  fromMessage,
  RawImap,
  startRelayedProxy,
  statusOf,
  type TestProxy,
  withoutUnseen,
} from "./helpers.ts";

/** What a server may say of Box while it closes it: its flags, recent count and next UID. */
const BOX_LEFTOVERS = "* FLAGS (\\Seen $HiddenKeyword)\r\n* 7 RECENT\r\n* 9 EXISTS\r\n* OK [UIDNEXT 999] Predicted\r\n";

let relay: LineRelay;
let proxy: TestProxy;
let mailbox: TestMailbox;

beforeAll(async () => {
  mailbox = await createMailbox({ name: "select-closed-boundary" });
  const human = await connectImap(mailbox);
  for (const folder of ["Box", "Open"]) await human.mailboxCreate(folder);
  await human.append("Box", fromMessage("bank@corp.test", "hidden-statement"));
  await human.append("Open", fromMessage("shop@s.test", "receipt"));
  await human.logout();
  relay = await LineRelay.start(dovecotImap());
  proxy = await startRelayedProxy(relay, BOX_SHOP_RULES);
});

afterAll(async () => {
  await proxy?.close();
  await relay?.close();
});

test("responses before upstream's [CLOSED] belong to the folder closed: none reaches the agent", async () => {
  const raw = await RawImap.login(proxy.port, mailbox);
  try {
    const plain = await raw.command("p", "SELECT Open");
    expect(statusOf(plain, "p")).toStartWith("p OK");
    expect(statusOf(await raw.command("s", "SELECT Box"), "s")).toStartWith("s OK");
    const added = relay.rewrite(/^\* OK \[CLOSED\]/, (line) => `${BOX_LEFTOVERS}${line}`);
    const reply = await raw.command("o", "SELECT Open");
    await added;
    for (const leftover of ["$HiddenKeyword", "7 RECENT", "9 EXISTS", "UIDNEXT 999"])
      expect(reply).not.toContain(leftover);
    // Open's own answer, as when nothing was selected before, but for its first unseen: left out after the filtered
    // Box, whose late [UNSEEN] it could be.
    expect(reply.replace(/^o /m, "p ")).toBe(withoutUnseen(plain));
  } finally {
    raw.close();
  }
});
