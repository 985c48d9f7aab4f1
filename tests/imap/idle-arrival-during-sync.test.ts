/**
 * IDLE in a filtered folder when a second message arrives while the proxy is still learning and classifying the first
 * (docs/filtering.md "Updates": in IDLE, after upstream EXISTS, DONE, classify, re-IDLE). Upstream reports the second
 * arrival's EXISTS in reply to one of the proxy's own commands (here the classification's `UID FETCH`), not in the
 * upstream IDLE that follows; the agent must still hear of it while it idles, not only after a later arrival, its own
 * DONE, or the IDLE renewal 25 minutes later.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { ImapFlow } from "imapflow";
import { connectImap, createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { type ClassificationRelay, classificationRelay, rawMessage, SEED_RULES } from "./filtered-fixture.ts";
import { RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

let classify: ClassificationRelay;
let proxy: TestProxy;
let mailbox: TestMailbox;
let human: ImapFlow;

beforeAll(async () => {
  classify = await classificationRelay();
  proxy = await startTestProxy({
    rules: SEED_RULES,
    upstreamTls: "none",
    upstreamAddr: `127.0.0.1:${classify.relay.port}`,
  });
  mailbox = await createMailbox({ seed: { folders: { INBOX: 5 }, seed: 7 } });
  human = await connectImap(mailbox);
});

afterAll(async () => {
  await human?.logout();
  await proxy?.close();
  await classify?.relay.close();
});

async function append(from: string, subject: string): Promise<void> {
  await human.append("INBOX", rawMessage(from, subject, `idle-arrival-${subject.replace(/\W+/g, "-")}-${Date.now()}`));
}

test("a visible arrival reported during the classification of another reaches the idling agent", async () => {
  const raw = await RawImap.login(proxy.port, mailbox);
  const sel = await raw.command("s", "EXAMINE INBOX");
  expect(statusOf(sel, "s")).toStartWith("s OK");
  const n = Number(/\* (\d+) EXISTS/.exec(sel)![1]);
  raw.write("i IDLE\r\n");
  await raw.readUntil((b) => b.includes("+ "));
  raw.take();
  // The second message lands while the proxy's classification of the first waits at the relay.
  classify.holdNext(() => append("notifications@shop.test", "Second visible arrival"));
  await append("notifications@shop.test", "First visible arrival");
  const heard = await raw
    .readUntil((b) => b.includes(`* ${n + 2} EXISTS`), 5000)
    .then(
      (b) => b,
      () => raw.take(),
    );
  expect(heard).toContain(`* ${n + 2} EXISTS\r\n`);
  raw.write("DONE\r\n");
  expect(statusOf(await raw.waitTagged("i"), "i")).toBe("i OK Idle completed");
  raw.close();
});
