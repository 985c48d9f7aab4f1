/**
 * DELETE and RENAME list the folders below the one they name upstream before they are decided (docs/imap.md
 * "Decisions"). A session that ends during that listing (the agent hangs up, the upstream connection is lost) or at
 * its end (a reload that leaves the selected folder's view stale) leaves the command undecided and never sent: it
 * still has its row, an `error` citing the folder's own decision and saying why the session ended (docs/audit.md
 * "What a row records"), and Dovecot keeps every folder. Before, such a command left no row at all. Against Dovecot
 * over a raw socket, through a relay that holds the proxy's `LIST "" "Work/*"` (tests/fixtures/tcp-relay.ts).
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { AuditRow } from "../../src/audit/index.ts";
import { connectImap, createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { HoldingRelay } from "../fixtures/tcp-relay.ts";
import { auditCursor, RawImap, startTestProxy, statusOf, type TestProxy, upstreamState } from "./helpers.ts";

/** Everything the agent's ("Mine", rule 0); INBOX too, unless `INBOX_GONE` is in force. */
const RULES = `
[[rules]]
name = "Mine"
action = "allow"
`;

/** INBOX hidden: a session that has it selected ends at its next step (docs/operations.md "Reload"). */
const INBOX_GONE = `
[[rules]]
name = "No inbox"
folders = ["INBOX"]
action = "deny"
${RULES}`;

let relay: HoldingRelay;
let proxy: TestProxy;
let upstream: { upstreamTls: "none"; upstreamAddr: string };
let rows: () => Promise<AuditRow[]>;

beforeAll(async () => {
  const up = upstreams();
  relay = await HoldingRelay.start({ host: up.host, port: up.ports.imap });
  upstream = { upstreamTls: "none", upstreamAddr: `127.0.0.1:${relay.port}` };
  proxy = await startTestProxy({ rules: RULES, ...upstream });
  rows = auditCursor(proxy);
});

afterAll(async () => {
  await proxy?.close();
  await relay?.close();
});

/** A mailbox with `Work` and `Work/Keep`. */
async function withWork(): Promise<TestMailbox> {
  const mailbox = await createMailbox({ name: "unanswered-subtree" });
  const direct = await connectImap(mailbox);
  await direct.mailboxCreate("Work");
  await direct.mailboxCreate("Work/Keep");
  await direct.logout();
  return mailbox;
}

const LISTING = /LIST "" "?Work\/\*"?/;

/** The command's one row: an error citing rule 0, folder `Work`, `target`, with `why` after what was not done. */
function expectUndecided(list: AuditRow[], command: string, target: string | null, why: string): void {
  const own = list.filter((r) => r.command === command);
  expect(own.map((r) => [r.operation, r.folder, r.target, r.decision, r.rule, r.ruleIndex, r.count])).toEqual([
    ["folder:write", "Work", target, "error", "Mine", 0, null],
  ]);
  const undecided = `${command} not decided (the folders below it were being listed) and not sent upstream`;
  expect(own[0]!.reason).toBe(`${undecided}; ${why}`);
}

for (const [command, target] of [
  ["DELETE Work", null],
  ["RENAME Work Done", "Done"],
] as const) {
  const name = command.split(" ")[0]!;

  test(`${command}: the agent hangs up while the folders below are listed; an error row says so`, async () => {
    const mailbox = await withWork();
    const before = await upstreamState(mailbox);
    const raw = await RawImap.login(proxy.port, mailbox);
    await rows();
    const held = relay.hold(LISTING);
    raw.write(`c ${command}\r\n`);
    await held;
    raw.socket.destroy();
    await Bun.sleep(300);
    relay.dropLinks();
    const why = "no answer: the session ended before upstream answered (client closed the connection)";
    expectUndecided(await rows(), name, target, why);
    expect(await upstreamState(mailbox)).toEqual(before);
  });

  test(`${command}: the upstream connection lost during that listing; the lost upstream's row, then this`, async () => {
    const mailbox = await withWork();
    const before = await upstreamState(mailbox);
    const raw = await RawImap.login(proxy.port, mailbox);
    await rows();
    const held = relay.hold(LISTING);
    raw.write(`c ${command}\r\n`);
    await held;
    relay.dropLinks();
    expect(await raw.readUntil(() => false)).toContain("* BYE Upstream connection lost");
    await Bun.sleep(300);
    const list = await rows();
    expect(list.map((r) => [r.command, r.decision])).toEqual([
      ["(upstream)", "error"],
      [name, "error"],
    ]);
    expectUndecided(
      list,
      name,
      target,
      "no answer: the session ended before upstream answered (upstream connection lost)",
    );
    expect(await upstreamState(mailbox)).toEqual(before);
  });

  // Judged at once, as `serve` judges sessions after SIGHUP: the session ends during the listing. Not judged, the
  // session finds the stale view when the listing is answered (`followReload`), as a session does at its next step.
  for (const judge of [true, false]) {
    const when = judge ? "ends the session during it" : "found at its answer ends the session";
    test(`${command}: a reload during that listing ${when}; an error row says so`, async () => {
      proxy.reload({ rules: RULES, ...upstream });
      const mailbox = await withWork();
      const before = await upstreamState(mailbox);
      const raw = await RawImap.login(proxy.port, mailbox);
      try {
        expect(statusOf(await raw.command("s", "SELECT INBOX"), "s")).toStartWith("s OK");
        await rows();
        const release = Promise.withResolvers<void>();
        const held = relay.hold(LISTING, release.promise);
        raw.write(`c ${command}\r\n`);
        await held;
        proxy.reload({ rules: INBOX_GONE, ...upstream }, judge);
        release.resolve();
        expect(await raw.readUntil(() => false)).toContain("* BYE Configuration changed");
        await Bun.sleep(300);
      } finally {
        relay.clear();
        raw.close();
        proxy.reload({ rules: RULES, ...upstream });
      }
      const end = "reload: the selected folder may no longer be read";
      const why = judge
        ? `no answer: the session ended before upstream answered (${end})`
        : `the session ended (${end})`;
      expectUndecided(await rows(), name, target, why);
      expect(await upstreamState(mailbox)).toEqual(before);
    });
  }
}
