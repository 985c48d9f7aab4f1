/**
 * A conditional STORE (RFC 7162 §3.1.3, `UNCHANGEDSINCE`) leaves alone the messages whose mod-sequence has moved
 * since, and names them in `[MODIFIED ...]`. Its allow rows go to disk before the STORE goes upstream (docs/audit.md
 * "Durable before it takes effect"), so they count every message the agent named; the audit log must then also say
 * how many were in fact stored. Before, nothing did: the rows said 3 messages were flagged where Dovecot flagged 2.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { connectImap, createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { ALLOW_ALL, auditCursor, RawImap, startTestProxy, statusOf, type TestProxy, upstreamState } from "./helpers.ts";

let mailbox: TestMailbox;
let proxy: TestProxy;

beforeAll(async () => {
  mailbox = await createMailbox({ seed: { folders: { INBOX: 4 }, seed: 73 } });
  proxy = await startTestProxy({ rules: ALLOW_ALL });
});

afterAll(async () => {
  await proxy?.close();
});

/** Sets `flag` on the message `uid` of INBOX, as the human's own client would. */
async function humanFlag(uid: number, flag: string): Promise<void> {
  const client = await connectImap(mailbox);
  try {
    await client.mailboxOpen("INBOX");
    await client.messageFlagsAdd(String(uid), [flag], { uid: true });
  } finally {
    await client.logout();
  }
}

test("a STORE UNCHANGEDSINCE with [MODIFIED] messages has a row saying how many were stored", async () => {
  const rows = auditCursor(proxy);
  const raw = await RawImap.login(proxy.port, mailbox);
  try {
    expect(await raw.command("e", "ENABLE CONDSTORE")).toContain("e OK");
    const sel = await raw.command("s", "SELECT INBOX");
    const top = Number(/\[HIGHESTMODSEQ (\d+)\]/.exec(sel)?.[1]);
    expect(top).toBeGreaterThan(0);
    const uids = [...(await raw.command("f", "UID FETCH 1:* (UID)")).matchAll(/UID (\d+)/g)].map((m) => Number(m[1]));
    expect(uids).toHaveLength(4);
    // The human changes the second message after the agent read the mod-sequences.
    await humanFlag(uids[1]!, "$Human");
    await rows();
    const reply = await raw.command("a", `UID STORE ${uids[0]}:${uids[2]} (UNCHANGEDSINCE ${top}) +FLAGS (\\Flagged)`);
    expect(statusOf(reply, "a")).toBe(`a OK [MODIFIED ${uids[1]}] Conditional STORE failed`);
    const written = (await rows()).filter((r) => r.command === "UID STORE");
    // The decision, on disk before the STORE went upstream: the 3 messages named.
    const decided = written.filter((r) => r.decision === "allow" && r.count === 3);
    expect(decided.map((r) => r.operation)).toEqual(["mail:flag"]);
    // The outcome: 2 stored, 1 left unchanged, with the rule of the decision.
    const outcome = written.filter((r) => r !== decided[0]);
    expect(outcome.map((r) => [r.operation, r.decision, r.rule, r.count, r.target])).toEqual([
      ["mail:flag", "allow", "everything", 2, "\\Flagged"],
    ]);
    expect(outcome[0]!.reason).toContain(`1 of 3 messages left unchanged`);
    expect(outcome[0]!.detail).toEqual({ unchangedSince: top, modified: 1 });
    // What the rows say is what Dovecot did.
    const inbox = (await upstreamState(mailbox)).messages["INBOX"]!.uids;
    expect(inbox.filter((u) => u.includes("\\Flagged")).map((u) => Number(u.split(" ")[0]))).toEqual([
      uids[0]!,
      uids[2]!,
    ]);
    // A conditional STORE that changed every message it named needs no second row.
    const fetched = await raw.command("g", `UID FETCH ${uids[3]} (MODSEQ)`);
    const own = Number(/MODSEQ \((\d+)\)/.exec(fetched)?.[1]);
    expect(statusOf(await raw.command("b", `UID STORE ${uids[3]} (UNCHANGEDSINCE ${own}) +FLAGS (\\Seen)`), "b")).toBe(
      "b OK Store completed",
    );
    expect((await rows()).filter((r) => r.command === "UID STORE").map((r) => [r.decision, r.count])).toEqual([
      ["allow", 1],
    ]);
  } finally {
    raw.close();
  }
});
