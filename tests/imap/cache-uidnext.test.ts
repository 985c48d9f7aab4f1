/**
 * The synthesized UIDNEXT of a filtered INBOX across sessions (docs/filtering.md "UID gaps": hidden arrivals do not
 * move it, and an expunge of the last visible message does not lower it while the cache remembers the highest
 * visible UID). Session A selects the folder; a visible message arrives and session B is told the UIDNEXT past it;
 * that message is expunged before A learned of it; then a hidden message arrives, which A classifies at its next
 * NOOP and stores its own row. Before, that row carried A's lower highest visible UID, and the next session was told
 * a lower UIDNEXT: a hidden arrival moved it. Likewise when the hidden arrival lies below the visible one: A classifies
 * only through it, and the value cut to that range was the hidden UID.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { ImapFlow } from "imapflow";
import { connectImap, createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { rawMessage, SEED_RULES } from "./filtered-fixture.ts";
import { RawImap, startTestProxy, type TestProxy } from "./helpers.ts";

let mailbox: TestMailbox;
let proxy: TestProxy;
let human: ImapFlow;

beforeAll(async () => {
  mailbox = await createMailbox({ seed: { folders: { INBOX: 4 }, seed: 3 } });
  proxy = await startTestProxy({ rules: SEED_RULES });
  human = await connectImap(mailbox);
  await human.mailboxOpen("INBOX");
});

afterAll(async () => {
  await human?.logout();
  await proxy?.close();
});

/** The UIDNEXT a new session is told at EXAMINE INBOX. */
async function uidNextOfNewSession(): Promise<number> {
  const raw = await RawImap.login(proxy.port, mailbox);
  const reply = await raw.command("s", "EXAMINE INBOX");
  raw.close();
  return Number(/\[UIDNEXT (\d+)\]/.exec(reply)![1]);
}

test("a hidden arrival classified by an older session does not lower the next session's UIDNEXT", async () => {
  const a = await RawImap.login(proxy.port, mailbox);
  await a.command("s", "EXAMINE INBOX");
  const id = `uidnext-visible-${Date.now()}`;
  const visible = (await human.append("INBOX", rawMessage("notifications@shop.test", "Visible", id))) as {
    uid: number;
  };
  expect(await uidNextOfNewSession()).toBe(visible.uid + 1);
  await human.messageDelete(String(visible.uid), { uid: true });
  expect(await uidNextOfNewSession()).toBe(visible.uid + 1);
  await human.append("INBOX", rawMessage("boss@corp.test", "Hidden", `uidnext-hidden-${Date.now()}`));
  expect(await a.command("n", "NOOP")).toBe("n OK NOOP completed\r\n");
  expect(await uidNextOfNewSession()).toBe(visible.uid + 1);
  a.close();
});

test("a hidden arrival below the expunged visible one does not become the next session's UIDNEXT", async () => {
  const a = await RawImap.login(proxy.port, mailbox);
  await a.command("s", "EXAMINE INBOX");
  const hidden = (await human.append(
    "INBOX",
    rawMessage("boss@corp.test", "Hidden first", `uidnext-hidden-first-${Date.now()}`),
  )) as { uid: number };
  const visible = (await human.append(
    "INBOX",
    rawMessage("notifications@shop.test", "Visible after", `uidnext-visible-after-${Date.now()}`),
  )) as { uid: number };
  expect(visible.uid).toBe(hidden.uid + 1);
  expect(await uidNextOfNewSession()).toBe(visible.uid + 1);
  await human.messageDelete(String(visible.uid), { uid: true });
  expect(await uidNextOfNewSession()).toBe(visible.uid + 1);
  // A learns only the hidden arrival (the visible one is gone) and stores its row, classified through that UID.
  expect(await a.command("n", "NOOP")).toBe("n OK NOOP completed\r\n");
  // Before, the row's highest visible UID was cut to A's classified range: the hidden UID, told as UIDNEXT - 1.
  expect(await uidNextOfNewSession()).toBe(visible.uid + 1);
  a.close();
});
