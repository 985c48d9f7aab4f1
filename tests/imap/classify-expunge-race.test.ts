/**
 * A filtered INBOX where another session expunges a new message while the proxy classifies it (the `UID FETCH` of
 * its header between the agent's commands, docs/filtering.md "Updates"). Dovecot answers that FETCH from the view its
 * session had (the header from its cache, or NIL once the file is gone, with `OK [EXPUNGEISSUED]`) and reports the
 * EXPUNGE before the OK, so the proxy learns of the expunge before it records the verdict. The verdict must not
 * outlive the message: the agent hears nothing of it, and a UID command naming it later is audited as one naming a
 * nonexistent message (no probe row), while a range of hidden messages around it is a probe as any other
 * (docs/filtering.md "Probes"). Before, the verdict stayed in the view: a probe row for a message that no longer
 * existed, or none for a range of hidden messages.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { ImapFlow } from "imapflow";
import { connectImap, createMailbox, type TestMailbox } from "../fixtures/index.ts";
import {
  type ClassificationRelay,
  classificationRelay,
  fetchedUids,
  rawMessage,
  SEED_RULES,
} from "./filtered-fixture.ts";
import { auditCursor, RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

let classify: ClassificationRelay;
let proxy: TestProxy;
/** Whether the held FETCH's reply carried the EXPUNGE (the race this file is about took place). */
let expungeInClassify = false;

beforeAll(async () => {
  classify = await classificationRelay();
  const upstreamAddr = `127.0.0.1:${classify.relay.port}`;
  proxy = await startTestProxy({ rules: SEED_RULES, upstreamTls: "none", upstreamAddr });
});

afterAll(async () => {
  await proxy?.close();
  await classify?.relay.close();
});

async function append(human: ImapFlow, from: string, subject: string): Promise<number> {
  const id = `classify-expunge-${subject.replace(/\W+/g, "-")}-${Date.now()}`;
  return ((await human.append("INBOX", rawMessage(from, subject, id), [])) as { uid: number }).uid;
}

/** Makes the next classification wait until `uid` has been expunged by `human` (a session straight on Dovecot). */
function expungeDuringClassification(human: ImapFlow, uid: number): void {
  expungeInClassify = false;
  classify.holdNext(
    async () => {
      await human.mailboxOpen("INBOX");
      await human.messageDelete(String(uid), { uid: true });
      await human.mailboxClose();
    },
    (text) => {
      if (/\* \d+ EXPUNGE\r\n/.test(text)) expungeInClassify = true;
    },
  );
}

async function agentOn(mailbox: TestMailbox): Promise<{ raw: RawImap; shown: number[] }> {
  const raw = await RawImap.login(proxy.port, mailbox);
  expect(statusOf(await raw.command("s", "SELECT INBOX"), "s")).toStartWith("s OK");
  const view = await raw.command("f0", "UID FETCH 1:* (UID)");
  return { raw, shown: fetchedUids(view).map(([, uid]) => uid) };
}

test("an arrival expunged while it is classified (header gone: NIL) leaves no hidden message behind", async () => {
  // A new folder: Dovecot has no cached From for the arrival, so once its file is gone it answers NIL.
  const mailbox = await createMailbox();
  const human = await connectImap(mailbox);
  try {
    const { raw, shown } = await agentOn(mailbox);
    expect(shown).toEqual([]);
    const gone = await append(human, "notifications@shop.test", "Visible and expunged");
    expungeDuringClassification(human, gone);
    expect(await raw.command("n", "NOOP")).toBe("n OK NOOP completed\r\n");
    expect(expungeInClassify).toBe(true);
    const rows = auditCursor(proxy);
    await rows();
    // Named alone it is a nonexistent UID, as UID 99 is: an allow row with nothing fetched, no probe.
    for (const uid of [gone, 99]) {
      expect(await raw.command("p", `UID FETCH ${uid} (UID)`)).toBe("p OK Fetch completed\r\n");
      const written = await rows();
      expect(written.map((r) => r.decision)).toEqual(["allow"]);
      expect(written[0]!.count).toBe(0);
    }
    raw.close();
  } finally {
    await human.logout();
  }
});

test("an arrival expunged while it is classified (header cached) hides no probe of hidden messages", async () => {
  const mailbox = await createMailbox({ seed: { folders: { INBOX: 5 }, seed: 7 } });
  const human = await connectImap(mailbox);
  try {
    const { raw, shown } = await agentOn(mailbox);
    const gone = await append(human, "notifications@shop.test", "Visible and expunged");
    expungeDuringClassification(human, gone);
    expect(await raw.command("n", "NOOP")).toBe("n OK NOOP completed\r\n");
    expect(expungeInClassify).toBe(true);
    const hidden = await append(human, "spam@evil.test", "Hidden after it");
    expect(await raw.command("m", "NOOP")).toBe("m OK NOOP completed\r\n");
    const view = await raw.command("f", "UID FETCH 1:* (UID)");
    expect(fetchedUids(view).map(([, uid]) => uid)).toEqual(shown);
    const rows = auditCursor(proxy);
    await rows();
    // `gone:hidden` holds no visible message: it names the hidden one, a probe with its row.
    expect(await raw.command("p", `UID FETCH ${gone}:${hidden} (UID)`)).toBe("p OK Fetch completed\r\n");
    const probe = (await rows()).filter((r) => r.decision === "deny");
    expect(probe.map((r) => [r.target, r.hiddenCount])).toEqual([[`UID ${hidden}`, 1]]);
    raw.close();
  } finally {
    await human.logout();
  }
});
