/**
 * LIST-STATUS (RFC 5819) of a folder whose STATUS upstream answers NO, deleted between the listing and its STATUS:
 * the folder's STATUS is left out (RFC 5819 §2), and the allow that sent it upstream has its row, saying upstream's
 * answer (docs/audit.md "What a row records": one row per evaluated operation). Against Dovecot over a raw socket,
 * through a relay that holds the STATUS line (tests/fixtures/tcp-relay.ts) while the folder is deleted directly.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { AuditRow } from "../../src/audit/index.ts";
import { connectImap, createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { holdingClientChunk, TcpRelay } from "../fixtures/tcp-relay.ts";
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

/** The next upstream command whose line matches, held at the relay until `release` (never, here: the link is cut). */
let hold: { pattern: RegExp; held: () => void; release: Promise<void> } | null = null;

let relay: TcpRelay;
let proxy: TestProxy;
let mailbox: TestMailbox;
let rows: () => Promise<AuditRow[]>;

beforeAll(async () => {
  const up = upstreams();
  relay = await TcpRelay.start(
    { host: up.host, port: up.ports.imap },
    holdingClientChunk(
      () => hold,
      () => {
        hold = null;
      },
    ),
  );
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

test("LIST RETURN (STATUS) of a folder deleted meanwhile: left out, and its row says upstream's answer", async () => {
  const raw = await RawImap.login(proxy.port, mailbox);
  await rows();
  const held = Promise.withResolvers<void>();
  const release = Promise.withResolvers<void>();
  hold = { pattern: /^\S+ STATUS "?Other/m, held: held.resolve, release: release.promise };
  raw.write('c LIST "" "*" RETURN (STATUS (MESSAGES))\r\n');
  await held.promise;
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
