/**
 * A read decided and sent upstream whose answer never comes, because the agent hangs up (or the session ends
 * otherwise) first, still has its row (docs/audit.md "What a row records": one row per evaluated operation). SEARCH,
 * SORT, THREAD, SELECT, LIST and each STATUS of a LIST-STATUS write their row once upstream has answered, as the row
 * counts what was shown and hidden; with no answer the row is the decision's, with no counts and a reason saying the
 * answer never came. Against Dovecot over a raw socket, through a relay that holds the command's upstream line
 * (tests/fixtures/tcp-relay.ts) while the agent's socket is destroyed or the upstream link cut. Last, a LIST-STATUS
 * whose STATUS upstream answers NO (the folder deleted meanwhile) has its row too, and a SELECT of a filtered folder
 * cut off while its messages are classified has the allow row of an unanswered read.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { AuditRow } from "../../src/audit/index.ts";
import { connectImap, createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { HoldingRelay } from "../fixtures/tcp-relay.ts";
import { rawMessage } from "./filtered-fixture.ts";
import { auditCursor, INBOX_WRITABLE, RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

/** "Other" readable (rule 0), INBOX read, flagged and expunged ("Inbox", rule 1), the rest denied. */
const RULES = `
[[rules]]
name = "Other"
folders = ["Other"]
action = "allow"
operations = ["read"]
${INBOX_WRITABLE}`;

/** INBOX filtered (its messages classified at SELECT), nothing else. */
const FILTERED_RULES = `
[[rules]]
name = "filtered inbox"
folders = ["INBOX"]
from = "ann@*"
action = "allow"
operations = ["read"]

[[rules]]
name = "nothing else"
action = "deny"
`;

let relay: HoldingRelay;
let proxy: TestProxy;
let mailbox: TestMailbox;
let rows: () => Promise<AuditRow[]>;

beforeAll(async () => {
  const up = upstreams();
  relay = await HoldingRelay.start({ host: up.host, port: up.ports.imap });
  proxy = await startTestProxy({ rules: RULES, upstreamTls: "none", upstreamAddr: `127.0.0.1:${relay.port}` });
  rows = auditCursor(proxy);
  mailbox = await createMailbox({ name: "unanswered-read" });
  const direct = await connectImap(mailbox);
  await direct.mailboxCreate("Other");
  await direct.append("INBOX", rawMessage("ann@example.test", "Hello from Ann", "ann"));
  await direct.append("INBOX", rawMessage("bob@example.test", "Re: Hello from Ann", "bob"));
  await direct.append("Other", rawMessage("cy@example.test", "Elsewhere", "cy"));
  await direct.logout();
});

afterAll(async () => {
  await proxy?.close();
  await relay?.close();
});

/**
 * Logs in (and selects INBOX when `select`), sends `command`, and once its upstream line matching `upstream` is
 * held at the relay, destroys the agent's socket; returns the rows written since the login, once the session ended.
 */
async function hangUpDuring(command: string, upstream: RegExp, select = true): Promise<AuditRow[]> {
  const raw = await RawImap.login(proxy.port, mailbox);
  if (select) expect(statusOf(await raw.command("s", "SELECT INBOX"), "s")).toStartWith("s OK");
  await rows();
  const held = relay.hold(upstream);
  raw.write(`c ${command}\r\n`);
  await held;
  raw.socket.destroy();
  // The session ends (its upstream link is cut); its rows are queued then, and committed within the batch time.
  await Bun.sleep(300);
  relay.dropLinks();
  return rows();
}

/** The one row of `command`, an allow citing `rule` at `ruleIndex`, with no counts and the reason of no answer. */
function expectUnanswered(list: AuditRow[], command: string, rule: string, ruleIndex: number, folder = "INBOX"): void {
  const own = list.filter((r) => r.command === command && r.folder === folder);
  expect(own.map((r) => ({ decision: r.decision, rule: r.rule, ruleIndex: r.ruleIndex, count: r.count }))).toEqual([
    { decision: "allow", rule, ruleIndex, count: null },
  ]);
  expect(own[0]!.hiddenCount).toBeNull();
  expect(own[0]!.reason).toContain("no answer: the session ended before upstream answered");
  expect(own[0]!.configRevision).toBe(proxy.config.revision);
}

test("SEARCH: the agent hangs up before upstream answers; the row is written, without counts", async () => {
  expectUnanswered(await hangUpDuring("SEARCH TEXT x", /^\S+ UID SEARCH /m), "SEARCH", "Inbox", 1);
});

test("UID SEARCH RETURN (COUNT) (ESEARCH): the same", async () => {
  expectUnanswered(await hangUpDuring("UID SEARCH RETURN (COUNT) ALL", /^\S+ UID SEARCH /m), "UID SEARCH", "Inbox", 1);
});

test("UID SORT: the same", async () => {
  const list = await hangUpDuring("UID SORT (SUBJECT) US-ASCII ALL", /^\S+ UID SORT /m);
  expectUnanswered(list, "UID SORT", "Inbox", 1);
});

test("THREAD: the same, while upstream searches and while it fetches the headers", async () => {
  expectUnanswered(await hangUpDuring("THREAD REFERENCES US-ASCII ALL", /^\S+ UID SEARCH /m), "THREAD", "Inbox", 1);
  expectUnanswered(await hangUpDuring("THREAD REFERENCES US-ASCII ALL", /^\S+ UID FETCH /m), "THREAD", "Inbox", 1);
});

test("SELECT and EXAMINE: the same", async () => {
  expectUnanswered(await hangUpDuring("SELECT INBOX", /^\S+ SELECT /m, false), "SELECT", "Inbox", 1);
  expectUnanswered(await hangUpDuring("EXAMINE Other", /^\S+ EXAMINE /m, false), "EXAMINE", "Other", 0, "Other");
});

test("LIST: the listing's row is written, with no counts", async () => {
  const list = await hangUpDuring('LIST "" "*"', /^\S+ LIST /m, false);
  const own = list.filter((r) => r.command === "LIST");
  expect(own.map((r) => ({ decision: r.decision, target: r.target, count: r.count, hidden: r.hiddenCount }))).toEqual([
    { decision: "allow", target: "*", count: null, hidden: null },
  ]);
  expect(own[0]!.reason).toContain("no answer: the session ended before upstream answered");
});

test("LIST RETURN (STATUS): the STATUS under way has its row", async () => {
  const list = await hangUpDuring('LIST "" "*" RETURN (STATUS (MESSAGES))', /^\S+ STATUS /m, false);
  // The listing was answered and has its row with its counts; the first folder's STATUS was sent and not answered.
  const listing = list.filter((r) => r.command === "LIST" && r.target === "*");
  expect(listing.map((r) => r.count)).toEqual([2]);
  const statuses = list.filter((r) => r.command === "LIST" && r.target === "RETURN (STATUS)");
  expect(statuses).toHaveLength(1);
  const folder = statuses[0]!.folder!;
  expectUnanswered(statuses, "LIST", folder === "INBOX" ? "Inbox" : "Other", folder === "INBOX" ? 1 : 0, folder);
});

test("SEARCH whose upstream connection is lost before the answer: its row, then the lost upstream's", async () => {
  const raw = await RawImap.login(proxy.port, mailbox);
  expect(statusOf(await raw.command("s", "SELECT INBOX"), "s")).toStartWith("s OK");
  await rows();
  const held = relay.hold(/^\S+ UID SEARCH /m);
  raw.write("c SEARCH TEXT x\r\n");
  await held;
  relay.dropLinks();
  expect(await raw.readUntil(() => false)).toBe("* BYE Upstream connection lost\r\n");
  await Bun.sleep(50);
  const list = await rows();
  expect(list.map((r) => [r.command, r.decision])).toEqual([
    ["(upstream)", "error"],
    ["SEARCH", "allow"],
  ]);
  expect(list[1]!.count).toBeNull();
  expect(list[1]!.reason).toContain("no answer: the session ended before upstream answered (upstream connection lost)");
});

test("LIST RETURN (STATUS) of a folder deleted meanwhile: left out, and its row says upstream's answer", async () => {
  const raw = await RawImap.login(proxy.port, mailbox);
  await rows();
  const release = Promise.withResolvers<void>();
  const held = relay.hold(/^\S+ STATUS "?Other/m, release.promise);
  raw.write('c LIST "" "*" RETURN (STATUS (MESSAGES))\r\n');
  await held;
  const direct = await connectImap(mailbox);
  await direct.mailboxDelete("Other");
  await direct.logout();
  release.resolve();
  const reply = await raw.waitTagged("c");
  expect(statusOf(reply, "c")).toStartWith("c OK");
  expect(reply).not.toContain("* STATUS Other");
  const own = (await rows()).filter((r) => r.command === "LIST" && r.folder === "Other");
  expect(own.map((r) => ({ decision: r.decision, rule: r.rule, target: r.target, count: r.count }))).toEqual([
    { decision: "allow", rule: "Other", target: "RETURN (STATUS)", count: null },
  ]);
  expect(own[0]!.reason).toContain("; upstream: ");
  raw.close();
});

test("SELECT of a filtered folder: the agent hangs up during classification; the allow row, no answer", async () => {
  const filtered = await startTestProxy({
    rules: FILTERED_RULES,
    upstreamTls: "none",
    upstreamAddr: `127.0.0.1:${relay.port}`,
  });
  try {
    const since = auditCursor(filtered);
    const raw = await RawImap.login(filtered.port, mailbox);
    await since();
    // The classification's header fetch (nothing is cached yet for this proxy's new cache).
    const held = relay.hold(/^\S+ UID FETCH /m);
    raw.write("c SELECT INBOX\r\n");
    await held;
    raw.socket.destroy();
    await Bun.sleep(300);
    relay.dropLinks();
    const own = (await since()).filter((r) => r.command === "SELECT");
    expect(own.map((r) => ({ op: r.operation, decision: r.decision, rule: r.rule, count: r.count }))).toEqual([
      { op: "folder:read", decision: "allow", rule: "filtered inbox", count: null },
    ]);
    expect(own[0]!.reason).toContain(
      "no answer: the session ended before upstream answered (client closed the connection)",
    );
  } finally {
    await filtered.close();
  }
});
