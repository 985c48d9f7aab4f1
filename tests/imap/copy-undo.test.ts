/**
 * A COPY carried out over several upstream commands (more than UPSTREAM_SET_RANGES ranges) that fails part-way
 * leaves the destination as it was (RFC 3501 §6.4.7): the copies of its completed parts are removed again, after
 * a durable row. Against Dovecot, behind a relay that refuses the second part as a full quota would (a NO Dovecot
 * cannot be made to give on cue). docs/imap.md "COPY carried out in parts".
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import type { ImapFlow } from "imapflow";
import { UPSTREAM_SET_RANGES } from "../../src/imap/limits.ts";
import { connectImap, createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { TcpRelay } from "../fixtures/tcp-relay.ts";
import { auditCursor, RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

/**
 * Messages in INBOX; every other one is copied, one upstream range each: two upstream commands (the agent's set of
 * 1,010 ranges is within MAX_LIST_ITEMS, 1,024).
 */
const MESSAGES = 2 * (UPSTREAM_SET_RANGES + 10);

let relay: TcpRelay;
let proxy: TestProxy;
let mailbox: TestMailbox;
let human: ImapFlow;
/** Set by a test: the proxy's `UID COPY` or `UID MOVE` upstream after this many more is answered NO by the relay. */
let refuseAfter: number | null = null;
/** How the relay refuses: a NO as a full quota gives, or by dropping the connection (no answer at all). */
let refusal: "no" | "drop" = "no";

beforeAll(async () => {
  const up = upstreams();
  relay = await TcpRelay.start({ host: up.host, port: up.ports.imap }, () => ({
    fromClient: (d, link) => {
      const text = d.toString("latin1");
      const m = refuseAfter === null ? null : /(?:^|\r\n)(M\d+) UID (?:COPY|MOVE) [^\r\n]*\r\n/.exec(text);
      if (m !== null && refuseAfter !== null && refuseAfter-- === 0) {
        refuseAfter = null;
        if (refusal === "drop") {
          link.client.destroy();
          link.target.destroy();
          return;
        }
        const start = m.index + (m[0].startsWith("\r\n") ? 2 : 0);
        const rest = text.slice(0, start) + text.slice(m.index + m[0].length);
        if (rest !== "") link.target.write(Buffer.from(rest, "latin1"));
        link.client.write(`${m[1]} NO [OVERQUOTA] Quota exceeded (the test's relay)\r\n`);
        return;
      }
      link.target.write(d);
    },
  }));
  proxy = await startTestProxy({ upstreamAddr: `127.0.0.1:${relay.port}`, upstreamTls: "none" });
  mailbox = await createMailbox({ seed: { folders: { INBOX: MESSAGES }, seed: 5 } });
  human = await connectImap(mailbox);
  await human.mailboxCreate("Dest");
  // What Dest held before: the undo must leave these, the \Deleted one too.
  for (const subject of ["kept", "kept though deleted"])
    await human.append("Dest", `Subject: ${subject}\r\n\r\nbody\r\n`, subject.endsWith("deleted") ? ["\\Deleted"] : []);
});

afterAll(async () => {
  await human?.logout();
  await proxy?.close();
  await relay?.close();
});

/** An agent logged in through the proxy, with INBOX selected. */
async function inInbox(): Promise<RawImap> {
  const agent = await RawImap.login(proxy.port, mailbox);
  expect(statusOf(await agent.command("s", "SELECT INBOX"), "s")).toStartWith("s OK");
  return agent;
}

async function destCount(): Promise<number> {
  const status = await human.status("Dest", { messages: true });
  return status === false ? -1 : (status.messages ?? -1);
}

/** The subjects of Dest's first two messages, and whether each is \Deleted: what it held before the tests. */
async function destBefore(): Promise<string[]> {
  // A connection of its own: `human` keeps asking STATUS, which imapflow answers from its cache for an open folder.
  const reader = await connectImap(mailbox);
  try {
    await reader.mailboxOpen("Dest", { readOnly: true });
    const out: string[] = [];
    for await (const m of reader.fetch("1:2", { envelope: true, flags: true }))
      out.push(`${m.envelope?.subject} ${m.flags?.has("\\Deleted") ? "deleted" : "-"}`);
    return out;
  } finally {
    await reader.logout();
  }
}

test("a split COPY whose second part fails removes the first part's copies; one that succeeds keeps all", async () => {
  const odd = Array.from({ length: MESSAGES / 2 }, (_, i) => 2 * i + 1);
  const audit = auditCursor(proxy);
  await audit();
  const agent = await inInbox();
  try {
    refuseAfter = 1;
    const failed = await agent.command("c", `UID COPY ${odd.join(",")} Dest`);
    expect(refuseAfter).toBeNull();
    expect(statusOf(failed, "c")).toStartWith("c NO");
    expect(failed).not.toContain("COPYUID");
    // Before, the first part's copies stayed; what Dest held before stays, \Deleted or not.
    expect(await destCount()).toBe(2);
    expect(await destBefore()).toEqual(["kept -", "kept though deleted deleted"]);
    const rows = await audit();
    const undo = rows.filter((r) => r.operation === "mail:delete");
    expect(undo.map((r) => [r.decision, r.folder, r.count])).toEqual([["allow", "Dest", UPSTREAM_SET_RANGES]]);
    expect(undo[0]!.reason).toContain("undo: the COPY failed part-way");
    // The session goes on, and the same COPY without the relay's refusal copies all, with one COPYUID.
    expect(statusOf(await agent.command("n", "NOOP"), "n")).toStartWith("n OK");
    const done = await agent.command("d", `UID COPY ${odd.join(",")} Dest`);
    expect(statusOf(done, "d")).toMatch(/^d OK \[COPYUID \d+ /);
    expect(await destCount()).toBe(2 + odd.length);
  } finally {
    agent.close();
  }
});

test("a split COPY whose second part gets no answer: the copies stay, and an error row says so", async () => {
  const odd = Array.from({ length: MESSAGES / 2 }, (_, i) => 2 * i + 1);
  const before = await destCount();
  const audit = auditCursor(proxy);
  await audit();
  const agent = await inInbox();
  try {
    refusal = "drop";
    refuseAfter = 1;
    agent.write(`c UID COPY ${odd.join(",")} Dest\r\n`);
    const end = await agent.readUntil(() => false, 15_000).catch(() => "");
    expect(end).toContain("* BYE");
    expect(refuseAfter).toBeNull();
    // Whether the second part was carried out is not known: nothing is removed.
    expect(await destCount()).toBe(before + UPSTREAM_SET_RANGES);
    const rows = (await audit()).filter((r) => r.operation === "mail:delete");
    expect(rows.map((r) => r.decision)).toEqual(["error"]);
    expect(rows[0]!.reason).toContain("part 2 of 2 got no answer");
  } finally {
    refusal = "no";
    agent.close();
  }
});

test("a split MOVE whose second part fails: NO, the moved messages' EXPUNGEs and one COPYUID", async () => {
  await human.mailboxCreate("Moved");
  const odd = Array.from({ length: MESSAGES / 2 }, (_, i) => 2 * i + 1);
  const agent = await inInbox();
  try {
    refuseAfter = 1;
    const failed = await agent.command("m", `UID MOVE ${odd.join(",")} Moved`);
    expect(refuseAfter).toBeNull();
    expect(statusOf(failed, "m")).toStartWith("m NO");
    // The first part's 1,000 messages were moved: the agent hears of each leaving INBOX, and of where they went.
    expect(failed.match(/^\* \d+ EXPUNGE\r$/gm)?.length).toBe(UPSTREAM_SET_RANGES);
    const copyUid = /^\* OK \[COPYUID (\d+) ([\d:,]+) ([\d:,]+)\]/m.exec(failed);
    expect(copyUid).not.toBeNull();
    const moved = await human.status("Moved", { messages: true });
    expect(moved === false ? -1 : moved.messages).toBe(UPSTREAM_SET_RANGES);
    const count = (set: string) =>
      set.split(",").reduce((n, r) => {
        const [a, b] = r.split(":").map(Number) as [number, number | undefined];
        return n + Math.abs((b ?? a) - a) + 1;
      }, 0);
    expect(count(copyUid![2]!)).toBe(UPSTREAM_SET_RANGES);
    expect(count(copyUid![3]!)).toBe(UPSTREAM_SET_RANGES);
    expect(copyUid![2]!.startsWith("1,3,5,")).toBe(true);
  } finally {
    agent.close();
  }
});
