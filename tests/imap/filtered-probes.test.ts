/**
 * Probes (docs/filtering.md "Probes", docs/audit.md): a UID FETCH, STORE, COPY, MOVE or EXPUNGE that names messages
 * hidden from the agent answers, byte for byte, as for a UID that does not exist, and writes one `deny` row with
 * how many hidden messages it named and the rule that hid the lowest of them. Against the real Dovecot, over a raw
 * socket; which message is hidden by which rule comes from the seeder's manifest, never from the proxy.
 */
import { Database } from "bun:sqlite";
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { ImapFlow } from "imapflow";
import type { AuditRow } from "../../src/audit/index.ts";
import { cachePathBeside } from "../../src/imap/cache.ts";
import { connectImap, createMailbox, type SeededMessage, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { expectNoLeak, fetchedUids, rawMessage } from "./filtered-fixture.ts";
import { auditCursor, RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

/** Flag, delete and move in INBOX: the rule the read-only proxy below leaves out. */
const WORK_THE_INBOX = `[[rules]]
name = "Work the inbox"
folders = ["INBOX"]
action = "allow"
operations = ["mail:flag", "mail:delete", "mail:move"]
`;

/**
 * Two rules hide INBOX messages: "Hide the boss" (rule 1) and the final "Deny everything else" (rule 5). The
 * agent may also flag, delete and move in INBOX (no message conditions there), and file into Archive.
 */
const RULES = `[[rules]]
name = "Hide the boss"
folders = ["INBOX"]
from = "boss@*"
action = "deny"
operations = ["read"]

[[rules]]
name = "Transactional emails from known senders"
folders = ["INBOX"]
from = "notifications@*"
action = "allow"
operations = ["read"]

${WORK_THE_INBOX}
[[rules]]
name = "File into Archive"
folders = ["Archive"]
action = "allow"
operations = ["read", "mail:append"]

[[rules]]
name = "Deny everything else"
action = "deny"
`;

const BOSS = { name: "Hide the boss", index: 0 } as const;
const REST = { name: "Deny everything else", index: 4 } as const;
/** Above every UID in INBOX. */
const ABSENT = 99999;

let mailbox: TestMailbox;
let proxy: TestProxy;
let rows: () => Promise<AuditRow[]>;
let visible: SeededMessage[];
let byBoss: SeededMessage[];
let byRest: SeededMessage[];
/** A message with two From fields: unreadable, so no rule decides it and the default deny hides it. */
let unreadable: number;

/** The rule that hides a message, from the manifest: null when visible. */
function hidingRule(m: SeededMessage): typeof BOSS | typeof REST | null {
  if (m.from === "boss@corp.test") return BOSS;
  if (m.from.startsWith("notifications@")) return null;
  return REST;
}

/** The rule that hides the lowest of these UIDs (the one a probe row names). */
function ruleOfLowest(uids: readonly number[]): typeof BOSS | typeof REST | null {
  const lowest = Math.min(...uids);
  return hidingRule(mailbox.manifest.folders["INBOX"]!.find((m) => m.uid === lowest)!);
}

async function agent(): Promise<RawImap> {
  const raw = await RawImap.login(proxy.port, mailbox);
  expect(statusOf(await raw.command("S", "SELECT INBOX"), "S")).toStartWith("S OK");
  await rows(); // the cursor starts after the login and SELECT rows
  return raw;
}

async function direct(): Promise<ImapFlow> {
  return connectImap(mailbox);
}

/** Message-IDs in an upstream folder, read directly. */
async function messageIds(folder: string): Promise<Map<number, string>> {
  const client = await direct();
  const out = new Map<number, string>();
  try {
    const box = await client.mailboxOpen(folder, { readOnly: true });
    if (box.exists > 0)
      for await (const m of client.fetch("1:*", { uid: true, envelope: true })) out.set(m.uid, m.envelope!.messageId!);
  } finally {
    await client.logout();
  }
  return out;
}

/** A message's flags, read directly from Dovecot (the folder open); it must exist. */
async function flagsOf(client: ImapFlow, uid: number): Promise<Set<string>> {
  const m = await client.fetchOne(String(uid), { flags: true }, { uid: true });
  if (m === false) throw new Error(`UID ${uid} is not in the folder`);
  return m.flags ?? new Set();
}

/** The UIDs a probe row's target lists (`UID 5`, `UIDs 3,7:9`). */
function targetUids(target: string | null): number[] {
  const m = /^UIDs? ([\d:,]+)$/.exec(target ?? "");
  expect(m).not.toBeNull();
  const out: number[] = [];
  for (const part of m![1]!.split(",")) {
    const [lo, hi] = part.split(":").map(Number);
    for (let uid = lo!; uid <= (hi ?? lo!); uid++) out.push(uid);
  }
  return out;
}

function probeRows(all: AuditRow[]): AuditRow[] {
  return all.filter((r) => r.decision === "deny");
}

function expectProbe(
  row: AuditRow | undefined,
  o: { command: string; operation: string; rule: { name: string; index: number } | null; hidden: number[] },
): void {
  expect(row).toBeDefined();
  expect(row!.command).toBe(o.command);
  expect(row!.operation).toBe(o.operation);
  expect(row!.folder).toBe("INBOX");
  expect(row!.decision).toBe("deny");
  expect(row!.rule).toBe(o.rule?.name ?? null);
  expect(row!.ruleIndex).toBe(o.rule?.index ?? null);
  expect(row!.hiddenCount).toBe(o.hidden.length);
  expect(row!.count).toBe(0);
  expect(targetUids(row!.target)).toEqual([...new Set(o.hidden)].sort((a, b) => a - b));
  expect(row!.reason).toContain(`${o.hidden.length} hidden message`);
}

beforeAll(async () => {
  mailbox = await createMailbox({ seed: { folders: { INBOX: 300, Archive: 5 }, seed: 23 } });
  const client = await direct();
  const twoFroms = rawMessage("notifications@shop.test", "Two senders", "two-froms").replace(
    "From: notifications@shop.test\r\n",
    "From: notifications@shop.test\r\nFrom: boss@corp.test\r\n",
  );
  unreadable = ((await client.append("INBOX", twoFroms, [])) as { uid: number }).uid;
  await client.logout();
  const inbox = mailbox.manifest.folders["INBOX"]!;
  visible = inbox.filter((m) => hidingRule(m) === null);
  byBoss = inbox.filter((m) => hidingRule(m) === BOSS);
  byRest = inbox.filter((m) => hidingRule(m) === REST);
  expect(visible.length).toBeGreaterThan(30);
  expect(byBoss.length).toBeGreaterThan(10);
  expect(byRest.length).toBeGreaterThan(10);
  proxy = await startTestProxy({ rules: RULES });
  rows = auditCursor(proxy);
});

afterAll(async () => {
  await proxy?.close();
});

describe("a UID command naming hidden messages", () => {
  test("UID FETCH: the bytes of a nonexistent UID's reply; a deny row with the hiding rule and the count", async () => {
    const raw = await agent();
    const boss = byBoss[0]!.uid;
    const hidden = await raw.command("f", `UID FETCH ${boss} (BODY.PEEK[] FLAGS)`);
    const probe = probeRows(await rows());
    const absent = await raw.command("f", `UID FETCH ${ABSENT} (BODY.PEEK[] FLAGS)`);
    expect(hidden).toBe(absent);
    expect(hidden).toBe("f OK Fetch completed\r\n");
    expect(probe.length).toBe(1);
    expectProbe(probe[0], { command: "UID FETCH", operation: "mail:read", rule: BOSS, hidden: [boss] });
    expect(probe[0]!.target).toBe(`UID ${boss}`);
    // A UID that does not exist is no probe.
    expect(probeRows(await rows())).toEqual([]);

    const other = byRest[0]!.uid;
    expect(await raw.command("g", `UID FETCH ${other} (UID)`)).toBe(
      await raw.command("g", `UID FETCH ${ABSENT} (UID)`),
    );
    const second = probeRows(await rows());
    expect(second.length).toBe(1);
    expectProbe(second[0], { command: "UID FETCH", operation: "mail:read", rule: REST, hidden: [other] });
    raw.close();
  });

  test("several rules: the row names the lowest UID's rule, the reason the others, the count all", async () => {
    const raw = await agent();
    // The lowest named is hidden by the last rule, two higher ones by the boss rule.
    const low = byRest.find((m) => m.uid < byBoss[byBoss.length - 2]!.uid)!.uid;
    const bosses = byBoss.filter((m) => m.uid > low).slice(0, 2);
    const named = [bosses[1]!.uid, low, bosses[0]!.uid];
    const reply = await raw.command("f", `UID FETCH ${named.join(",")} (UID FLAGS)`);
    expect(reply).toBe("f OK Fetch completed\r\n");
    const probe = probeRows(await rows());
    expect(probe.length).toBe(1);
    expectProbe(probe[0], { command: "UID FETCH", operation: "mail:read", rule: REST, hidden: named });
    expect(probe[0]!.reason).toContain('rule 5 "Deny everything else" (1 of them)');
    expect(probe[0]!.reason).toContain('2 by rule 1 "Hide the boss"');
    // The same UID twice, or inside a listed range too, counts once.
    await raw.command("g", `UID FETCH ${low},${low}:${low},${low} (UID)`);
    const once = probeRows(await rows());
    expect(once.map((r) => r.hiddenCount)).toEqual([1]);
    raw.close();
  });

  test("a message no rule decides (two From fields) is hidden by the default deny: a row without a rule", async () => {
    const raw = await agent();
    expect(await raw.command("f", `UID FETCH ${unreadable} (UID)`)).toBe("f OK Fetch completed\r\n");
    const probe = probeRows(await rows());
    expect(probe.length).toBe(1);
    expectProbe(probe[0], { command: "UID FETCH", operation: "mail:read", rule: null, hidden: [unreadable] });
    expect(probe[0]!.reason).toContain("no rule");
    raw.close();
  });

  test("UID STORE, COPY, MOVE, EXPUNGE of hidden UIDs: nonexistent bytes, a row each, Dovecot unchanged", async () => {
    const raw = await agent();
    const [a, b, c, d] = [byBoss[1]!.uid, byRest[1]!.uid, byBoss[2]!.uid, byRest[2]!.uid];
    const archiveBefore = await messageIds("Archive");
    const cases: Array<[string, string, string, number[]]> = [
      ["UID STORE", "mail:flag", `UID STORE ${a},${b} +FLAGS (\\Flagged)`, [a, b]],
      ["UID STORE", "mail:delete", `UID STORE ${a} +FLAGS.SILENT (\\Deleted)`, [a]],
      ["UID COPY", "mail:read", `UID COPY ${c} Archive`, [c]],
      ["UID MOVE", "mail:move", `UID MOVE ${d},${c} Archive`, [c, d]],
      ["UID EXPUNGE", "mail:delete", `UID EXPUNGE ${d}`, [d]],
    ];
    for (const [command, operation, line, hidden] of cases) {
      const absentLine = line.replace(/^(UID \w+) [\d,]+/, `$1 ${ABSENT}`);
      const got = await raw.command("t", line);
      const probe = probeRows(await rows());
      expect(got).toBe(await raw.command("t", absentLine));
      expect(statusOf(got, "t")).toStartWith("t OK");
      expect(probe.length).toBe(1);
      expectProbe(probe[0], { command, operation, rule: ruleOfLowest(hidden), hidden });
      expect(probeRows(await rows())).toEqual([]);
    }
    raw.close();
    expect(await messageIds("Archive")).toEqual(archiveBefore);
    const client = await direct();
    await client.mailboxOpen("INBOX", { readOnly: true });
    for (const uid of [a, b, c, d]) {
      const flags = await flagsOf(client, uid);
      expect(flags.has("\\Flagged")).toBe(false);
      expect(flags.has("\\Deleted")).toBe(false);
    }
    await client.logout();
  });

  test("mixed visible and hidden: the visible part as before, with its allow row, plus the probe row", async () => {
    const raw = await agent();
    const [v1, v2, v3] = [visible[3]!.uid, visible[4]!.uid, visible[5]!.uid];
    const [h1, h2, h3] = [byBoss[3]!.uid, byRest[3]!.uid, byBoss[4]!.uid];

    const mixed = await raw.command("f", `UID FETCH ${v1},${h1} (UID FLAGS)`);
    const fetchRows = await rows();
    expect(mixed).toBe(await raw.command("f", `UID FETCH ${v1},${ABSENT} (UID FLAGS)`));
    expect(probeRows(await rows())).toEqual([]);
    expect(fetchedUids(mixed)).toEqual([[4, v1]]);
    expect(fetchRows.filter((r) => r.decision === "allow" && r.command === "UID FETCH").map((r) => r.count)).toEqual([
      1,
    ]);
    expectProbe(probeRows(fetchRows)[0], { command: "UID FETCH", operation: "mail:read", rule: BOSS, hidden: [h1] });
    expect(probeRows(fetchRows).length).toBe(1);

    const store = await raw.command("s", `UID STORE ${v1},${h2} +FLAGS (\\Flagged)`);
    expect(statusOf(store, "s")).toBe("s OK Store completed");
    expect(fetchedUids(store)).toEqual([[4, v1]]);
    const storeRows = await rows();
    expect(storeRows.filter((r) => r.decision === "allow").map((r) => [r.command, r.count])).toEqual([
      ["UID STORE", 1],
    ]);
    expectProbe(probeRows(storeRows)[0], { command: "UID STORE", operation: "mail:flag", rule: REST, hidden: [h2] });

    const copy = await raw.command("c", `UID COPY ${h3},${v2} Archive`);
    expect(statusOf(copy, "c")).toStartWith("c OK");
    const copyRows = await rows();
    expect(copyRows.filter((r) => r.decision === "allow").map((r) => [r.command, r.count])).toEqual([["UID COPY", 1]]);
    expectProbe(probeRows(copyRows)[0], { command: "UID COPY", operation: "mail:read", rule: BOSS, hidden: [h3] });

    const move = await raw.command("m", `UID MOVE ${v3},${h2} Archive`);
    expect(statusOf(move, "m")).toStartWith("m OK");
    expect(move).toContain("* 6 EXPUNGE\r\n");
    const moveRows = await rows();
    expect(moveRows.filter((r) => r.decision === "allow").map((r) => [r.command, r.count])).toEqual([["UID MOVE", 1]]);
    expectProbe(probeRows(moveRows)[0], { command: "UID MOVE", operation: "mail:move", rule: REST, hidden: [h2] });
    expectNoLeak(mixed + store + copy + move, {
      visible,
      hidden: [...byBoss, ...byRest],
      visibleUids: visible.map((m) => m.uid),
      hiddenUids: new Set([...byBoss, ...byRest].map((m) => m.uid)),
    });
    raw.close();

    // Dovecot: the visible messages were flagged, copied and moved; the hidden ones were not.
    const archive = [...(await messageIds("Archive")).values()];
    expect(archive).toContain(visible[4]!.messageId);
    expect(archive).toContain(visible[5]!.messageId);
    expect(archive).not.toContain(byBoss[4]!.messageId);
    expect(archive).not.toContain(byRest[3]!.messageId);
    const inbox = await messageIds("INBOX");
    expect(inbox.has(v3)).toBe(false);
    expect(inbox.has(h2)).toBe(true);
    const client = await direct();
    await client.mailboxOpen("INBOX", { readOnly: true });
    expect((await flagsOf(client, v1)).has("\\Flagged")).toBe(true);
    expect((await flagsOf(client, h2)).has("\\Flagged")).toBe(false);
    await client.logout();
  });

  test("ranges: 1:*, n:*, and a range holding a visible UID are no probe; a range of hidden UIDs only is", async () => {
    const raw = await agent();
    const all = await raw.command("a", "UID FETCH 1:* (UID)");
    expect(statusOf(all, "a")).toBe("a OK Fetch completed");
    await raw.command("b", "FETCH 1:* (UID)");
    await raw.command("c", `UID FETCH ${byBoss[5]!.uid}:* (UID)`);
    // Both ends hidden, a visible message between them.
    const v = visible[10]!.uid;
    const below = Math.max(...[...byBoss, ...byRest].map((m) => m.uid).filter((u) => u < v));
    const above = Math.min(...[...byBoss, ...byRest].map((m) => m.uid).filter((u) => u > v));
    await raw.command("d", `UID FETCH ${below}:${above} (UID)`);
    await raw.command("e", `UID SEARCH UID ${byBoss[5]!.uid}`);
    expect(probeRows(await rows())).toEqual([]);

    // Between two consecutive visible UIDs, at least two hidden ones (UIDs are seeded without gaps; hidden
    // messages were never moved or expunged above).
    const uids = visible.map((m) => m.uid);
    const i = uids.findIndex((u, k) => k + 1 < uids.length && uids[k + 1]! - u >= 3);
    const [lo, hi] = [uids[i]! + 1, uids[i + 1]! - 1];
    const gap = await raw.command("f", `UID FETCH ${lo}:${hi} (UID FLAGS)`);
    expect(gap).toBe(await raw.command("f", `UID FETCH ${ABSENT - 10}:${ABSENT} (UID FLAGS)`));
    const named = [...byBoss, ...byRest].map((m) => m.uid).filter((u) => u >= lo && u <= hi);
    expect(named.length).toBe(hi - lo + 1);
    const probe = probeRows(await rows());
    expect(probe.length).toBe(1);
    expectProbe(probe[0], { command: "UID FETCH", operation: "mail:read", rule: ruleOfLowest(named), hidden: named });
    expect(probe[0]!.target).toBe(`UIDs ${lo}:${hi}`);
    raw.close();
  });

  test("a session whose SELECT came from the classification cache names the hiding rules just as well", async () => {
    // Every session after the first opens INBOX from the cache, which holds each hidden UID with its rule's slot.
    const db = new Database(cachePathBeside(proxy.config.audit.path), { readonly: true });
    const row = db
      .query<{ hidden: Uint8Array; slots: Uint8Array }, []>(
        "SELECT hidden, hidden_slots AS slots FROM visibility WHERE folder = 'INBOX'",
      )
      .get()!;
    db.close();
    const cached = [...new Uint32Array(new Uint8Array(row.hidden).buffer)];
    const want = [...byBoss, ...byRest].map((m) => m.uid).concat([unreadable]);
    expect(cached).toEqual(want.sort((a, b) => a - b));
    expect(row.slots.byteLength).toBe(2 * cached.length);
    const raw = await agent();
    const boss = byBoss[6]!.uid;
    const other = byRest[6]!.uid;
    expect(await raw.command("f", `UID FETCH ${boss},${other} (UID)`)).toBe("f OK Fetch completed\r\n");
    const probe = probeRows(await rows());
    expect(probe.length).toBe(1);
    expectProbe(probe[0], {
      command: "UID FETCH",
      operation: "mail:read",
      rule: ruleOfLowest([boss, other]),
      hidden: [boss, other],
    });
    raw.close();
  });
});

describe("a probe the folder's rules refuse anyway", () => {
  /** The same hiding rules, but nothing may be flagged. */
  const READ_ONLY = RULES.replace(WORK_THE_INBOX, "");
  let reader: TestProxy;

  beforeAll(async () => {
    expect(READ_ONLY).not.toContain("Work the inbox");
    reader = await startTestProxy({ rules: READ_ONLY });
  });
  afterAll(async () => {
    await reader?.close();
  });

  test("UID STORE without mail:flag: a nonexistent UID's refusal; both the probe and the refusal rows", async () => {
    const raw = await RawImap.open(reader.port);
    await raw.command("L", `LOGIN "${mailbox.user}" "${mailbox.password}"`);
    expect(statusOf(await raw.command("S", "SELECT INBOX"), "S")).toStartWith("S OK");
    const readerRows = auditCursor(reader);
    await readerRows();
    const boss = byBoss[7]!.uid;
    const hidden = await raw.command("s", `UID STORE ${boss} +FLAGS (\\Flagged)`);
    const denied = probeRows(await readerRows());
    expect(hidden).toBe(await raw.command("s", `UID STORE ${ABSENT} +FLAGS (\\Flagged)`));
    expect(statusOf(hidden, "s")).toStartWith("s NO [NOPERM]");
    expect(denied.length).toBe(2);
    expectProbe(denied[0], { command: "UID STORE", operation: "mail:flag", rule: BOSS, hidden: [boss] });
    expect(denied[1]!.hiddenCount).toBeNull();
    expect(denied[1]!.reason).not.toContain("hidden message");
    // The nonexistent UID: the refusal's row only.
    expect(probeRows(await readerRows()).map((r) => r.hiddenCount)).toEqual([null]);
    raw.close();
  });
});

describe("upstream's timings (docs/protocol.md §7 case 5)", () => {
  test("no tagged reply upstream answered carries Dovecot's `(n + n secs)`; Dovecot itself sends them", async () => {
    const raw = await agent();
    const replies = [
      await raw.command("a", "UID SEARCH FROM notifications"),
      await raw.command("b", "UID SEARCH TEXT nothing-matches-this"),
      await raw.command("c", "STATUS Archive (MESSAGES UIDNEXT)"),
      await raw.command("d", `UID COPY ${visible[1]!.uid} Archive`),
      await raw.command("e", `UID STORE ${visible[0]!.uid} +FLAGS (\\Flagged)`),
      await raw.command("f", "CHECK"),
    ];
    raw.close();
    const tagged = replies.map((r, i) => r.split("\r\n").find((l) => l.startsWith(`${"abcdef"[i]} `)) ?? "");
    expect(tagged[0]).toStartWith("a OK");
    expect(tagged[3]).toStartWith("d OK");
    for (const line of tagged) {
      expect(line).not.toBe("");
      expect(line).not.toMatch(/secs\)/);
    }
    // The same commands straight to Dovecot: the timings the proxy leaves out.
    const ref = await RawImap.login(upstreams().ports.imap, mailbox);
    await ref.command("S", "SELECT INBOX");
    expect(await ref.command("a", "UID SEARCH FROM notifications")).toMatch(/a OK .*\(\d+\.\d+ \+ [^\r\n]*secs\)/);
    expect(await ref.command("d", "CREATE Archive")).toMatch(/d NO \[ALREADYEXISTS\] .*secs\)/);
    ref.close();
  });
});
