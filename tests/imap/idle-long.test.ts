/**
 * Long IDLEs in a filtered INBOX against the real Dovecot (docs/protocol.md §3 "IDLE flow", docs/reliability.md
 * "Long runs"): a hundred arrivals, hidden and visible, while one agent idles, each a turn of the proxy's loop
 * upstream (DONE, classification, IDLE again). The agent hears of the visible ones only, renumbered, and what the
 * proxy holds does not grow with the turns: counted as promises on the heap of this process, where the proxy runs.
 */

import { heapStats } from "bun:jsc";
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { ImapFlow } from "imapflow";
import { connectImap, createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { type Expected, expected, expectNoLeak, fetchedUids, rawMessage, SEED_RULES } from "./filtered-fixture.ts";
import { RawImap, startTestProxy, type TestProxy } from "./helpers.ts";

let mailbox: TestMailbox;
let proxy: TestProxy;
let e: Expected;
let human: ImapFlow;

beforeAll(async () => {
  mailbox = await createMailbox({ seed: { folders: { INBOX: 40 }, seed: 7 } });
  e = expected(mailbox.manifest.folders["INBOX"]!);
  proxy = await startTestProxy({ rules: SEED_RULES });
  human = await connectImap(mailbox);
  await human.mailboxOpen("INBOX");
});

afterAll(async () => {
  await human?.logout();
  await proxy?.close();
});

async function append(from: string, subject: string): Promise<number> {
  const r = await human.append("INBOX", rawMessage(from, subject, `${subject.replace(/\W+/g, "-")}-${Date.now()}`), []);
  return (r as { uid: number }).uid;
}

/** Promises on this process's heap, after a full collection. */
function promises(): number {
  Bun.gc(true);
  return heapStats().objectTypeCounts["Promise"] ?? 0;
}

test("one IDLE through 100 hidden and visible arrivals: visible ones only, and no growth per turn", async () => {
  const raw = await RawImap.login(proxy.port, mailbox);
  const sel = await raw.command("s", "EXAMINE INBOX");
  expect(sel).toContain(`* ${e.visibleUids.length} EXISTS`);
  raw.write("i IDLE\r\n");
  await raw.readUntil((b) => b.includes("+ idling\r\n"));
  raw.take();
  let shown = e.visibleUids.length;
  const visible: number[] = [];
  const hidden: number[] = [];
  let idled = "";
  /** A hidden arrival, then a visible one the agent is told of before the next pair. */
  const pairs = async (n: number): Promise<void> => {
    for (let i = 0; i < n; i++) {
      hidden.push(await append("boss@corp.test", `Hidden arrival ${hidden.length}`));
      visible.push(await append("notifications@shop.test", `Visible arrival ${visible.length}`));
      shown++;
      await raw.readUntil((b) => b.includes(`* ${shown} EXISTS\r\n`), 10_000);
      idled += raw.take();
    }
  };
  await pairs(10);
  const before = promises();
  await pairs(40);

  const after = promises();
  // Before, every turn left its race with the agent's DONE behind until the DONE: a promise a turn, 40 or more here
  // (Dovecot tells its IDLE of an arrival half a second later, so the two of a pair are mostly one turn).
  expect(after - before).toBeLessThan(15);
  raw.write("DONE\r\n");
  idled += await raw.waitTagged("i");
  expect(idled).toEndWith("i OK Idle completed\r\n");
  expect(idled.match(/\* \d+ EXISTS/g)?.length).toBe(50);
  expect(idled).not.toMatch(/EXPUNGE|RECENT|FETCH/);
  const want = [...e.visibleUids, ...visible];
  e = { ...e, visibleUids: want, hiddenUids: new Set([...e.hiddenUids, ...hidden]) };
  const view = await raw.command("f", "FETCH 1:* (UID)");
  expect(fetchedUids(view)).toEqual(want.map((u, i) => [i + 1, u] as [number, number]));
  expectNoLeak(idled + view, e);
  raw.close();
}, 90_000);
