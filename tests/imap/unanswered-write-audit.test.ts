/**
 * A write's `allow` row is on disk before the write goes upstream (docs/audit.md); when the session ends (the agent
 * hangs up, the upstream connection is lost) after the write went upstream and before upstream answered, the log
 * must not read as if the write was carried out: an `error` row follows, naming the allow row (`detail.row`) and
 * saying that whether upstream did it is not known (docs/audit.md "What a row records"). Before, the allow row stood
 * alone. Against Dovecot over a raw socket, through a relay that holds the write's upstream line (for APPEND, the
 * message's literal) while the agent's socket is destroyed or the upstream link cut (tests/fixtures/tcp-relay.ts).
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { AuditRow } from "../../src/audit/index.ts";
import { createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { HoldingRelay } from "../fixtures/tcp-relay.ts";
import { ALLOW_ALL, auditCursor, RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

let relay: HoldingRelay;
let proxy: TestProxy;
let mailbox: TestMailbox;
let rows: () => Promise<AuditRow[]>;

beforeAll(async () => {
  const up = upstreams();
  relay = await HoldingRelay.start({ host: up.host, port: up.ports.imap });
  proxy = await startTestProxy({ rules: ALLOW_ALL, upstreamTls: "none", upstreamAddr: `127.0.0.1:${relay.port}` });
  rows = auditCursor(proxy);
  mailbox = await createMailbox({ seed: { folders: { INBOX: 6, Archive: 1 }, seed: 31 } });
});

afterAll(async () => {
  await proxy?.close();
  await relay?.close();
});

const UNKNOWN = "no answer: the session ended before upstream answered";

/**
 * Logs in, selects INBOX, sends `command` and, once the upstream chunk matching `upstream` is held at the relay,
 * ends the session by `end`; returns the rows written since the SELECT, once the session ended.
 */
async function endDuring(
  command: string,
  upstream: RegExp,
  end: "hang up" | "upstream lost" = "hang up",
): Promise<AuditRow[]> {
  const raw = await RawImap.login(proxy.port, mailbox);
  expect(statusOf(await raw.command("s", "SELECT INBOX"), "s")).toStartWith("s OK");
  await rows();
  const held = relay.hold(upstream);
  raw.write(`c ${command}\r\n`);
  await held;
  if (end === "hang up") {
    raw.socket.destroy();
    await Bun.sleep(300);
    relay.dropLinks();
  } else {
    relay.dropLinks();
    expect(await raw.readUntil(() => false)).toContain("* BYE Upstream connection lost");
    await Bun.sleep(300);
  }
  return rows();
}

/** The write's allow rows (`operations`), each followed by an `error` row naming it, saying the outcome is unknown. */
function expectUnknown(list: AuditRow[], command: string, operations: string[], why: string): void {
  const own = list.filter((r) => r.command === command);
  const allow = own.filter((r) => r.decision === "allow");
  const errors = own.filter((r) => r.decision === "error");
  expect(allow.map((r) => r.operation)).toEqual(operations);
  expect(errors.map((r) => r.operation)).toEqual(operations);
  for (const [i, a] of allow.entries()) {
    const e = errors[i]!;
    expect(e.detail).toEqual({ row: a.id });
    expect([e.folder, e.target, e.rule, e.ruleIndex, e.count]).toEqual([
      a.folder,
      a.target,
      a.rule,
      a.ruleIndex,
      a.count,
    ]);
    expect(e.reason).toBe(`after row ${a.id} allowed it: ${UNKNOWN} (${why}); whether upstream did it is not known`);
  }
}

test("STORE \\Deleted: the agent hangs up before the answer; an error row says the outcome is unknown", async () => {
  const list = await endDuring("STORE 1 +FLAGS (\\Deleted)", /^\S+ UID STORE /m);
  expectUnknown(list, "STORE", ["mail:delete"], "client closed the connection");
});

test("EXPUNGE: the same; no `expunged` row, as no count is known", async () => {
  const list = await endDuring("EXPUNGE", /^\S+ UID EXPUNGE /m);
  expectUnknown(list, "EXPUNGE", ["mail:delete"], "client closed the connection");
  expect(list.filter((r) => r.reason === "expunged")).toEqual([]);
});

test("APPEND: the agent hangs up once the message went upstream, before the tagged answer", async () => {
  const message = "Subject: unanswered append\r\n\r\nhello\r\n";
  const list = await endDuring(`APPEND INBOX {${message.length}+}\r\n${message}`, /unanswered append/);
  expectUnknown(list, "APPEND", ["mail:append"], "client closed the connection");
});

test("APPEND cut while its literal waits for upstream's `+`: never sent, the allow row stands alone", async () => {
  // The proxy sends an APPEND's literal synchronizing (docs/protocol.md §4): the command's first line goes, the
  // message only on upstream's `+`. Held here with that line, the message never reaches the server, which acts on no
  // command it has not read whole (RFC 9051 §4.3): upstream was never asked, as for a write cut before it went.
  for (const end of ["hang up", "upstream lost"] as const) {
    const message = "Subject: never sent\r\n\r\nhello\r\n";
    const list = await endDuring(`APPEND INBOX {${message.length}+}\r\n${message}`, /^\S+ APPEND INBOX/m, end);
    const own = list.filter((r) => r.command === "APPEND");
    expect(own.map((r) => [r.operation, r.decision])).toEqual([["mail:append", "allow"]]);
  }
});

test("UID MOVE: the same", async () => {
  const list = await endDuring("UID MOVE 1:* Archive", /^\S+ UID MOVE /m);
  expectUnknown(list, "UID MOVE", ["mail:move"], "client closed the connection");
});

test("STORE whose upstream connection is lost before the answer: the lost upstream's row, then this", async () => {
  const list = await endDuring("STORE 2 +FLAGS (\\Flagged)", /^\S+ UID STORE /m, "upstream lost");
  expect(list.map((r) => [r.command, r.decision])).toEqual([
    ["STORE", "allow"],
    ["(upstream)", "error"],
    ["STORE", "error"],
  ]);
  expectUnknown(list, "STORE", ["mail:flag"], "upstream connection lost");
});

test("a write answered before the session ends has no such row", async () => {
  const raw = await RawImap.login(proxy.port, mailbox);
  expect(statusOf(await raw.command("s", "SELECT INBOX"), "s")).toStartWith("s OK");
  expect(statusOf(await raw.command("f", "STORE 1 +FLAGS (\\Seen)"), "f")).toStartWith("f OK");
  raw.socket.destroy();
  await Bun.sleep(300);
  expect((await rows()).filter((r) => r.decision === "error")).toEqual([]);
});

test("DELETE of the selected folder, the agent gone while it is closed first: never sent, no error row", async () => {
  const raw = await RawImap.login(proxy.port, mailbox);
  expect(statusOf(await raw.command("m", "CREATE Doomed"), "m")).toStartWith("m OK");
  expect(statusOf(await raw.command("s", "SELECT Doomed"), "s")).toStartWith("s OK");
  await rows();
  const held = relay.hold(/^\S+ UNSELECT/m);
  raw.write("d DELETE Doomed\r\n");
  await held;
  raw.socket.destroy();
  await Bun.sleep(300);
  relay.dropLinks();
  const list = await rows();
  expect(list.map((r) => [r.command, r.decision])).toEqual([["DELETE", "allow"]]);
});
