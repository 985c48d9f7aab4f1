/**
 * A write carried out upstream in several commands (a filtered folder's MOVE over more ranges than one upstream command
 * carries, `UPSTREAM_SET_RANGES`) whose session ends while a later part's command waits for upstream's `+` (the
 * destination's name is a literal: it holds a `"`, docs/protocol.md §4 "Upstream literals"). That part never reached
 * the server, but the earlier ones were carried out: the allow row must not stand alone as for a write that never went
 * upstream; an `error` row follows it saying the outcome is not known (docs/audit.md "What a row records"). Against
 * Dovecot through a relay that holds the second part's command line (tests/fixtures/tcp-relay.ts).
 */
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import type { ImapFlow } from "imapflow";
import type { AuditRow } from "../../src/audit/index.ts";
import { UPSTREAM_SET_RANGES } from "../../src/imap/limits.ts";
import { connectImap, createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { HoldingRelay } from "../fixtures/tcp-relay.ts";
import { expected } from "./filtered-fixture.ts";
import { auditCursor, RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

setDefaultTimeout(60_000);

/** A name the proxy sends upstream as a literal (a `"` forces one), so each part's command waits for `+`. */
const DEST = 'Own"x';

const RULES = `
[[rules]]
name = "inbox moves"
folders = ["INBOX"]
action = "allow"
operations = ["mail:move"]

[[rules]]
name = "filtered inbox"
folders = ["INBOX"]
from = "notifications@*"
action = "allow"
operations = ["read"]

[[rules]]
name = "own"
folders = [${JSON.stringify(DEST)}]
action = "allow"

[[rules]]
name = "nothing else"
action = "deny"
`;

let relay: HoldingRelay;
let proxy: TestProxy;
let mailbox: TestMailbox;
let human: ImapFlow;
let rows: () => Promise<AuditRow[]>;

beforeAll(async () => {
  const up = upstreams();
  relay = await HoldingRelay.start({ host: up.host, port: up.ports.imap });
  mailbox = await createMailbox({ seed: { folders: { INBOX: 5000 }, seed: 23 } });
  const e = expected(mailbox.manifest.folders["INBOX"]!);
  const runs = e.visibleUids.filter((u, i) => i === 0 || e.visibleUids[i - 1] !== u - 1 || e.hiddenUids.has(u - 1));
  expect(runs.length).toBeGreaterThan(UPSTREAM_SET_RANGES);
  human = await connectImap(mailbox);
  await human.mailboxCreate(DEST);
  proxy = await startTestProxy({ rules: RULES, upstreamTls: "none", upstreamAddr: `127.0.0.1:${relay.port}` });
  rows = auditCursor(proxy);
});

afterAll(async () => {
  await human?.logout();
  await proxy?.close();
  await relay?.close();
});

test("UID MOVE in two parts, cut while the second waits for `+`: the first was done, outcome not known", async () => {
  const agent = await RawImap.login(proxy.port, mailbox);
  expect(statusOf(await agent.command("s", "SELECT INBOX"), "s")).toStartWith("s OK");
  await rows();
  // The second part's line is held (never reaches Dovecot); the first goes and is answered. A filtered folder's MOVE
  // in parts goes as UID COPY commands (UID MOVE before), the messages leaving the source once all are done
  // (docs/imap.md "COPY carried out in parts").
  let seen = 0;
  const parts = /^\S+ UID (?:COPY|MOVE) /m;
  const second = { test: (chunk: string) => parts.test(chunk) && ++seen === 2 } as unknown as RegExp;
  const held = relay.hold(second);
  agent.write(`m UID MOVE 1:* ${JSON.stringify(DEST)}\r\n`);
  await held;
  agent.socket.destroy();
  await Bun.sleep(300);
  relay.dropLinks();
  await Bun.sleep(300);
  // The first part was carried out: its copies are in the destination, and stay there.
  const status = await human.status(DEST, { messages: true });
  expect(status && (status.messages ?? 0)).toBeGreaterThan(0);
  const own = (await rows()).filter((r) => r.command === "UID MOVE");
  const allow = own.filter((r) => r.decision === "allow");
  expect(allow.map((r) => r.operation)).toEqual(["mail:move"]);
  const errors = own.filter((r) => r.decision === "error" && r.operation === "mail:move");
  expect(errors.map((r) => r.detail)).toEqual([{ row: allow[0]!.id }]);
  expect(errors[0]!.reason).toContain("whether upstream did it is not known");
  // And the row saying the copies stay, as for a COPY in parts cut so.
  const stay = own.filter((r) => r.decision === "error" && r.operation === "mail:delete");
  expect(stay.map((r) => r.folder)).toEqual([DEST]);
  expect(stay[0]!.reason).toContain("the MOVE failed part-way and the copies its completed parts made stay");
});
