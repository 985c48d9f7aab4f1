/**
 * A reload between a command's decision and its audit row (docs/audit.md "What a row records"): the row names the
 * rule that decided, by name and position, and the revision of the config those belong to, the one in force when
 * the decision was made, not the one in force when the row is written. Against Dovecot over a raw socket, through a
 * relay that holds the command's upstream round trip (or an audit log that holds its durable row) while the test
 * reloads a config with one more rule first: every rule after it moves down one place, and the view stays as it was.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { AuditLog, AuditRow } from "../../src/audit/index.ts";
import { connectImap, createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { HoldingRelay } from "../fixtures/tcp-relay.ts";
import { rawMessage } from "./filtered-fixture.ts";
import { auditCursor, INBOX_WRITABLE, RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

/** The same rules after one that decides nothing in INBOX: "Inbox" is rule 1 here, rule 0 before. */
const SHIFTED = `
[[rules]]
name = "Archive"
folders = ["Archive"]
action = "allow"
${INBOX_WRITABLE}`;

/** The next durable row of this command waits, once committed, until the promise settles. */
let holdDurable: { command: string; held: () => void; release: Promise<void> } | null = null;

function holdingAudit(log: AuditLog): AuditLog {
  return new Proxy(log, {
    get(target, key) {
      if (key === "durable") {
        return async (ev: Parameters<AuditLog["durable"]>[0], opts?: Parameters<AuditLog["durable"]>[1]) => {
          const h = holdDurable !== null && holdDurable.command === ev.command ? holdDurable : null;
          if (h !== null) holdDurable = null;
          const id = await target.durable(ev, opts);
          if (h !== null) {
            h.held();
            await h.release;
          }
          return id;
        };
      }
      const value = Reflect.get(target, key, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

let relay: HoldingRelay;
let proxy: TestProxy;
let mailbox: TestMailbox;
let rows: () => Promise<AuditRow[]>;
let oldRevision: string;
/** Through the relay, in every config the test puts in force. */
let upstream: { upstreamTls: "none"; upstreamAddr: string };

beforeAll(async () => {
  const up = upstreams();
  relay = await HoldingRelay.start({ host: up.host, port: up.ports.imap });
  upstream = { upstreamTls: "none", upstreamAddr: `127.0.0.1:${relay.port}` } as const;
  proxy = await startTestProxy({ rules: INBOX_WRITABLE, ...upstream, wrapAudit: holdingAudit });
  oldRevision = proxy.config.revision;
  rows = auditCursor(proxy);
  mailbox = await createMailbox({ name: "reload-revision" });
  const direct = await connectImap(mailbox);
  await direct.append("INBOX", rawMessage("ann@example.test", "Hello from Ann", "ann"));
  await direct.append("INBOX", rawMessage("bob@example.test", "Hello from Bob", "bob"));
  await direct.logout();
});

afterAll(async () => {
  await proxy?.close();
  await relay?.close();
});

/** Resolves once something is held; `release` lets it go. */
function gate(): { held: Promise<void>; release: () => void; releasing: Promise<void>; heldFn: () => void } {
  let heldFn!: () => void;
  let release!: () => void;
  const held = new Promise<void>((resolve) => (heldFn = resolve));
  const releasing = new Promise<void>((resolve) => (release = resolve));
  return { held, release, releasing, heldFn };
}

/** Runs `command` with its upstream line matching `pattern` (or its durable row) held across a reload to SHIFTED. */
async function acrossReload(
  raw: RawImap,
  command: string,
  on: { upstream: RegExp } | { durable: string },
): Promise<string> {
  const g = gate();
  if ("upstream" in on) void relay.hold(on.upstream, g.releasing).then(g.heldFn);
  else holdDurable = { command: on.durable, held: g.heldFn, release: g.releasing };
  raw.write(`c ${command}\r\n`);
  await g.held;
  proxy.reload({ rules: SHIFTED, ...upstream });
  g.release();
  const reply = await raw.readUntil((b) => /(^|\r\n)c (OK|NO|BAD)[^\r\n]*\r\n$/.test(b));
  raw.take();
  return reply;
}

/** Each row citing the rule "Inbox" names it where the revision it carries has it. */
function expectRevisionsMatch(list: AuditRow[]): void {
  for (const r of list.filter((row) => row.rule !== null)) {
    expect({ rule: r.rule, ruleIndex: r.ruleIndex, revision: r.configRevision }).toEqual({
      rule: "Inbox",
      ruleIndex: r.configRevision === oldRevision ? 0 : 1,
      revision: r.configRevision,
    });
  }
}

/** Decided before the reload: each row citing a rule carries the old revision and the old position. */
function expectOld(list: AuditRow[], command: string): void {
  const cited = list.filter((r) => r.command === command && r.rule !== null);
  expect(cited.length).toBeGreaterThan(0);
  for (const r of cited) {
    expect({ revision: r.configRevision, rule: r.rule, ruleIndex: r.ruleIndex }).toEqual({
      revision: oldRevision,
      rule: "Inbox",
      ruleIndex: 0,
    });
  }
  expectRevisionsMatch(list);
}

async function fresh(): Promise<RawImap> {
  proxy.reload({ rules: INBOX_WRITABLE, ...upstream });
  expect(proxy.config.revision).toBe(oldRevision);
  const raw = await RawImap.login(proxy.port, mailbox);
  await rows();
  return raw;
}

test("SELECT decided before upstream's reply: its row carries the revision that decided", async () => {
  const raw = await fresh();
  const reply = await acrossReload(raw, "SELECT INBOX", { upstream: /^\S+ SELECT /m });
  expect(statusOf(reply, "c")).toStartWith("c OK");
  expectOld(await rows(), "SELECT");

  // The next command is decided by the reloaded rules, and says so.
  expect(statusOf(await raw.command("n", "SEARCH ALL"), "n")).toStartWith("n OK");
  const after = (await rows()).filter((r) => r.command === "SEARCH");
  expect(after.map((r) => [r.configRevision === oldRevision, r.ruleIndex])).toEqual([[false, 1]]);
  raw.close();
});

test("SEARCH decided before upstream's reply: its row carries the revision that decided", async () => {
  const raw = await fresh();
  expect(statusOf(await raw.command("s", "SELECT INBOX"), "s")).toStartWith("s OK");
  await rows();
  const reply = await acrossReload(raw, "SEARCH ALL", { upstream: /^\S+ UID SEARCH /m });
  expect(reply).toContain("* SEARCH 1 2\r\n");
  expectOld(await rows(), "SEARCH");
  raw.close();
});

test("FETCH setting \\Seen: the mail:read row after the durable \\Seen row has the revision that decided", async () => {
  const raw = await fresh();
  expect(statusOf(await raw.command("s", "SELECT INBOX"), "s")).toStartWith("s OK");
  await rows();
  const reply = await acrossReload(raw, "FETCH 1 BODY[TEXT]", { durable: "FETCH" });
  expect(statusOf(reply, "c")).toStartWith("c OK");
  const list = await rows();
  expect(list.filter((r) => r.command === "FETCH").map((r) => r.operation)).toEqual(["mail:flag", "mail:read"]);
  expectOld(list, "FETCH");
  raw.close();
});

test("EXPUNGE: its second row, after upstream's expunge, names the revision that decided", async () => {
  const raw = await fresh();
  expect(statusOf(await raw.command("s", "SELECT INBOX"), "s")).toStartWith("s OK");
  await rows();
  const reply = await acrossReload(raw, "EXPUNGE", { upstream: /^\S+ (UID )?EXPUNGE/m });
  expect(statusOf(reply, "c")).toStartWith("c OK");
  const list = await rows();
  expect(list.filter((r) => r.command === "EXPUNGE").map((r) => r.reason)[1]).toBe("expunged");
  expectOld(list, "EXPUNGE");
  raw.close();
});
