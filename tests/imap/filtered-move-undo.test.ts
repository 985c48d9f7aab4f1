/**
 * A filtered folder's MOVE that takes more than one upstream command (more than UPSTREAM_SET_RANGES ranges, and hidden
 * messages between visible ones break the ranges) is all or nothing as the agent sees it: it goes as a COPY in parts,
 * and the messages leave the source (UID STORE \Deleted, UID EXPUNGE of exactly them) only once every part is done.
 * Against Dovecot, behind a relay that refuses one of the proxy's upstream commands (a NO Dovecot cannot be made to
 * give on cue). Before, the parts were upstream MOVEs: when the second was refused, the first part's messages had
 * moved, and the agent got their EXPUNGEs with the NO, which told it where its set had been cut, i.e. where hidden
 * messages lay. docs/imap.md "COPY carried out in parts".
 */
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import { UPSTREAM_SET_RANGES } from "../../src/imap/limits.ts";
import { connectImap, createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { TcpRelay } from "../fixtures/tcp-relay.ts";
import { type Expected, expected, expectNoLeak, INBOX_MOVES_RULES } from "./filtered-fixture.ts";
import { auditCursor, RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

setDefaultTimeout(60_000);

const RULES = INBOX_MOVES_RULES;

/**
 * Set by a test: the proxy's upstream command that `pattern` matches is answered NO by the relay after `after` more
 * such commands went through; null once it has been.
 */
let refuse: { pattern: RegExp; after: number; reply: string } | null = null;
let relay: TcpRelay;
let proxy: TestProxy;

beforeAll(async () => {
  const up = upstreams();
  relay = await TcpRelay.start({ host: up.host, port: up.ports.imap }, () => ({
    fromClient: (d, link) => {
      const text = d.toString("latin1");
      const m = refuse === null ? null : refuse.pattern.exec(text);
      if (m !== null && refuse !== null && refuse.after-- === 0) {
        const reply = refuse.reply;
        refuse = null;
        const start = m.index + (m[0].startsWith("\r\n") ? 2 : 0);
        const rest = text.slice(0, start) + text.slice(m.index + m[0].length);
        if (rest !== "") link.target.write(Buffer.from(rest, "latin1"));
        link.client.write(`${m[1]} ${reply}\r\n`);
        return;
      }
      link.target.write(d);
    },
  }));
  proxy = await startTestProxy({ rules: RULES, upstreamAddr: `127.0.0.1:${relay.port}`, upstreamTls: "none" });
});

afterAll(async () => {
  await proxy?.close();
  await relay?.close();
});

/**
 * The second part the proxy sends of a MOVE in parts: its `UID COPY` (a `UID MOVE` before), its
 * `UID STORE +FLAGS.SILENT (\Deleted)` or its `UID EXPUNGE`, refused so.
 */
const SECOND = {
  copy: {
    pattern: /(?:^|\r\n)(\w+) UID (?:COPY|MOVE) [^\r\n]*\r\n/,
    after: 1,
    reply: "NO [OVERQUOTA] Quota exceeded (relay)",
  },
  store: {
    pattern: /(?:^|\r\n)(\w+) UID STORE [^\r\n]* \+FLAGS\.SILENT \(\\Deleted\)\r\n/,
    after: 1,
    reply: "NO [SERVERBUG] Internal error (relay)",
  },
  expunge: {
    pattern: /(?:^|\r\n)(\w+) UID EXPUNGE [^\r\n]*\r\n/,
    after: 1,
    reply: "NO [SERVERBUG] Internal error (relay)",
  },
};

interface Seeded {
  readonly mailbox: TestMailbox;
  readonly e: Expected;
  /** How many visible messages the first upstream command carries: those of the first UPSTREAM_SET_RANGES runs. */
  readonly firstPart: number;
}

/** A mailbox of its own for each test: 5,000 messages in INBOX, whose visible ones make more than 1,000 runs. */
async function seeded(seed: number): Promise<Seeded> {
  const mailbox = await createMailbox({ seed: { folders: { INBOX: 5000 }, seed } });
  const e = expected(mailbox.manifest.folders["INBOX"]!);
  // Where each run of visible UIDs with no hidden message between starts: one upstream range each.
  const starts = e.visibleUids.flatMap((u, i) =>
    i === 0 || e.visibleUids[i - 1] !== u - 1 || e.hiddenUids.has(u - 1) ? [i] : [],
  );
  expect(starts.length).toBeGreaterThan(UPSTREAM_SET_RANGES);
  expect(starts.length).toBeLessThanOrEqual(2 * UPSTREAM_SET_RANGES);
  const human = await connectImap(mailbox);
  await human.mailboxCreate("Own");
  await human.logout();
  return { mailbox, e, firstPart: starts[UPSTREAM_SET_RANGES]! };
}

/** What upstream holds: INBOX's UIDs and which of them are \Deleted, and how many messages Own has. */
async function upstreamState(mailbox: TestMailbox): Promise<{ inbox: number[]; deleted: number[]; own: number }> {
  const reader = await connectImap(mailbox);
  try {
    await reader.mailboxOpen("INBOX", { readOnly: true });
    const inbox = ((await reader.search({ all: true }, { uid: true })) || []).sort((a, b) => a - b);
    const deleted = ((await reader.search({ deleted: true }, { uid: true })) || []).sort((a, b) => a - b);
    await reader.mailboxClose();
    const own = await reader.status("Own", { messages: true });
    return { inbox, deleted, own: own === false ? -1 : (own.messages ?? -1) };
  } finally {
    await reader.logout();
  }
}

/** Sets \Deleted on `uids` of INBOX, directly at Dovecot. */
async function markDeleted(mailbox: TestMailbox, uids: readonly number[]): Promise<void> {
  const human = await connectImap(mailbox);
  try {
    await human.mailboxOpen("INBOX");
    await human.messageFlagsAdd(uids.join(","), ["\\Deleted"], { uid: true });
  } finally {
    await human.logout();
  }
}

const expunges = (reply: string) => [...reply.matchAll(/^\* (\d+) EXPUNGE\r$/gm)].map((m) => Number(m[1]));

test("a split UID MOVE whose second part is refused: NO, no EXPUNGE, every message where it was", async () => {
  const { mailbox, e, firstPart } = await seeded(23);
  const before = await upstreamState(mailbox);
  const audit = auditCursor(proxy);
  await audit();
  const agent = await RawImap.login(proxy.port, mailbox);
  try {
    expect(statusOf(await agent.command("s", "SELECT INBOX"), "s")).toStartWith("s OK");
    refuse = { ...SECOND.copy };
    const reply = await agent.command("m", "UID MOVE 1:* Own");
    expect(refuse).toBeNull();
    expect(statusOf(reply, "m")).toStartWith("m NO [OVERQUOTA]");
    // Before, the first part's messages had moved: the agent got their EXPUNGEs, and they were in Own.
    expect(expunges(reply)).toEqual([]);
    expect(reply).not.toContain("COPYUID");
    expect(await upstreamState(mailbox)).toEqual({ ...before, own: 0 });
    // The agent's view is whole, under the same UIDs.
    const search = await agent.command("f", "UID SEARCH ALL");
    expect(search).toContain(`* SEARCH ${e.visibleUids.join(" ")}\r\n`);
    expect(expunges(search)).toEqual([]);
    expectNoLeak(reply + search, e, { uidSearch: true });
    const rows = await audit();
    const undo = rows.filter((r) => r.operation === "mail:delete");
    // The first part's copies, removed again.
    expect(undo.map((r) => [r.decision, r.folder, r.count])).toEqual([["allow", "Own", firstPart]]);
    expect(undo[0]!.reason).toContain("undo: the MOVE failed part-way and moved nothing");
    const move = rows.filter((r) => r.operation === "mail:move");
    expect(move.map((r) => [r.decision, r.count])).toEqual([
      ["allow", e.visible.length],
      ["error", e.visible.length],
    ]);
    expect(move[1]!.reason).toContain("the command was answered NO [OVERQUOTA]");
  } finally {
    agent.close();
  }
});

test("a split MOVE whose second STORE \\Deleted is refused: \\Deleted taken off, the copies removed", async () => {
  const { mailbox, e } = await seeded(29);
  // One moved message had \Deleted before: it keeps it.
  await markDeleted(mailbox, [e.visibleUids[5]!]);
  const before = await upstreamState(mailbox);
  expect(before.deleted).toEqual([e.visibleUids[5]!]);
  const audit = auditCursor(proxy);
  await audit();
  const agent = await RawImap.login(proxy.port, mailbox);
  try {
    await agent.command("s", "SELECT INBOX");
    refuse = { ...SECOND.store };
    const reply = await agent.command("m", "MOVE 1:* Own");
    expect(refuse).toBeNull();
    expect(statusOf(reply, "m")).toStartWith("m NO [UNAVAILABLE]");
    expect(expunges(reply)).toEqual([]);
    expect(reply).not.toContain("COPYUID");
    expect(reply).not.toMatch(/FETCH/);
    expect(await upstreamState(mailbox)).toEqual({ ...before, own: 0 });
    const rows = (await audit()).filter((r) => r.command === "MOVE");
    expect(rows.map((r) => [r.operation, r.decision, r.folder, r.count])).toEqual([
      ["mail:move", "allow", "INBOX", e.visible.length],
      ["mail:flag", "allow", "INBOX", e.visible.length - 1],
      ["mail:delete", "allow", "Own", e.visible.length],
      ["mail:move", "error", "INBOX", e.visible.length],
    ]);
    expect(rows[1]!.reason).toContain("UID STORE part 2 of 2 answered NO");
  } finally {
    agent.close();
  }
});

test("a split MOVE whose second UID EXPUNGE is refused: the first part's messages moved, the rest stay", async () => {
  const { mailbox, e, firstPart } = await seeded(31);
  const audit = auditCursor(proxy);
  await audit();
  const agent = await RawImap.login(proxy.port, mailbox);
  try {
    await agent.command("s", "SELECT INBOX");
    refuse = { ...SECOND.expunge };
    const reply = await agent.command("m", "UID MOVE 1:* Own");
    expect(refuse).toBeNull();
    expect(statusOf(reply, "m")).toStartWith("m NO [UNAVAILABLE]");
    // Those upstream expunged are gone: the agent is told, highest first. The others stay, \Deleted taken off again.
    expect(expunges(reply)).toEqual(Array.from({ length: firstPart }, (_, i) => firstPart - i));
    const after = await upstreamState(mailbox);
    const left = e.visibleUids.slice(firstPart);
    expect(after.inbox).toEqual([...e.hidden.map((m) => m.uid), ...left].sort((a, b) => a - b));
    expect(after.deleted).toEqual([]);
    // Every copy stays: no message is lost.
    expect(after.own).toBe(e.visible.length);
    const rows = (await audit()).filter((r) => r.command === "UID MOVE");
    expect(rows.map((r) => [r.operation, r.decision, r.folder])).toEqual([
      ["mail:move", "allow", "INBOX"],
      ["mail:flag", "allow", "INBOX"],
      ["mail:delete", "error", "Own"],
      ["mail:move", "error", "INBOX"],
    ]);
    expect(rows[2]!.reason).toContain(`${firstPart} of ${e.visible.length} messages left INBOX`);
  } finally {
    agent.close();
  }
});

test("a split MOVE that succeeds expunges exactly the moved messages, \\Deleted ones among them", async () => {
  const { mailbox, e } = await seeded(37);
  const last = e.visibleUids.at(-1)!;
  // A moved message that was \Deleted, and one left out of the set that is: only the moved one goes.
  await markDeleted(mailbox, [e.visibleUids[0]!, last]);
  const agent = await RawImap.login(proxy.port, mailbox);
  try {
    await agent.command("s", "SELECT INBOX");
    const reply = await agent.command("m", `UID MOVE 1:${e.visibleUids.at(-2)} Own`);
    expect(statusOf(reply, "m")).toBe("m OK Move completed");
    const moved = e.visible.length - 1;
    expect(expunges(reply)).toEqual(Array.from({ length: moved }, (_, i) => moved - i));
    const codes = [...reply.matchAll(/^\* OK \[COPYUID \d+ (\S+) 1:(\d+)\] Moved UIDs\.\r$/gm)];
    expect(codes).toHaveLength(1);
    expect(Number(codes[0]![2])).toBe(moved);
    expect(reply.indexOf("[COPYUID")).toBeLessThan(reply.indexOf(" EXPUNGE\r\n"));
    expectNoLeak(reply, e);
    const after = await upstreamState(mailbox);
    expect(after.inbox).toEqual([...e.hidden.map((m) => m.uid), last].sort((a, b) => a - b));
    expect(after.deleted).toEqual([last]);
    expect(after.own).toBe(moved);
  } finally {
    agent.close();
  }
});
