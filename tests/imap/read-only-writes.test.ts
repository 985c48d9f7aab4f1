/**
 * Writes to a folder selected read-only (RFC 3501 §6.3.2: no change to the mailbox's permanent state): the agent's
 * EXAMINE, or a SELECT the proxy opened upstream with EXAMINE because the rules then gave no right to change the
 * folder. STORE, UID STORE, MOVE, UID MOVE, EXPUNGE and UID EXPUNGE are refused by the proxy, `NO [CANNOT] Mailbox is
 * read-only`, with a `deny` row and never an `allow` row (docs/imap.md "Decisions", docs/audit.md "What a row
 * records"). Before, the rules alone decided: a STORE had its `allow` row on disk and went upstream, where Dovecot
 * answers `OK Store ignored with read-only mailbox` and changes nothing, and the agent was told `OK Store completed`;
 * a MOVE went upstream too, and Dovecot carried it out, removing messages from a mailbox opened read-only.
 * A SELECT that upstream itself answers `[READ-ONLY]` (here: Dovecot cannot write the folder's maildir) is read-only
 * for the agent too; before, the proxy told it `[READ-WRITE]`.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { chmodSync } from "node:fs";
import { createMailbox, upstreams } from "../fixtures/index.ts";
import { auditCursor, RawImap, startTestProxy, statusOf, type TestProxy, upstreamState } from "./helpers.ts";

const WRITABLE = `
[[rules]]
name = "mine"
folders = ["INBOX", "Archive"]
action = "allow"
`;

/** INBOX may only be read, so SELECT INBOX opens it read-only upstream; Archive is the agent's. */
const INBOX_READ = `
[[rules]]
name = "inbox: read"
folders = ["INBOX"]
action = "allow"
operations = ["read"]

[[rules]]
name = "archive"
folders = ["Archive"]
action = "allow"
`;

const WRITES: [string, string][] = [
  ["STORE 1 +FLAGS (\\Flagged)", "mail:flag"],
  ["UID STORE 1 +FLAGS.SILENT (\\Deleted)", "mail:delete"],
  ["STORE 1:* FLAGS (\\Seen)", "mail:flag"],
  ["MOVE 1 Archive", "mail:move"],
  ["UID MOVE 1:* Archive", "mail:move"],
  ["EXPUNGE", "mail:delete"],
  ["UID EXPUNGE 1:*", "mail:delete"],
];

let proxy: TestProxy;

beforeAll(async () => {
  proxy = await startTestProxy({ rules: WRITABLE });
});

afterAll(async () => {
  await proxy?.close();
});

async function refusedWrites(raw: RawImap, rows: ReturnType<typeof auditCursor>): Promise<void> {
  for (const [i, [command, operation]] of WRITES.entries()) {
    const tag = `w${i}`;
    expect(`${command}: ${statusOf(await raw.command(tag, command), tag)}`).toBe(
      `${command}: ${tag} NO [CANNOT] Mailbox is read-only`,
    );
    const name = command.replace(/ [0-9].*$/, "");
    expect((await rows()).map((r) => [r.command, r.operation, r.decision, r.rule, /read-only/.test(r.reason)])).toEqual(
      [[name, operation, "deny", null, true]],
    );
  }
}

test("after EXAMINE every write to the folder is refused by the proxy, with a deny row and no allow row", async () => {
  proxy.reload({ rules: WRITABLE });
  const mailbox = await createMailbox({ seed: { folders: { INBOX: 3 }, seed: 11 } });
  const before = await upstreamState(mailbox);
  const rows = auditCursor(proxy);
  const raw = await RawImap.login(proxy.port, mailbox);
  try {
    expect(statusOf(await raw.command("s", "EXAMINE INBOX"), "s")).toStartWith("s OK [READ-ONLY]");
    await rows();
    await refusedWrites(raw, rows);
    // Reading and copying out stay allowed.
    expect(statusOf(await raw.command("c", "COPY 1 Archive"), "c")).toStartWith("c OK");
  } finally {
    raw.close();
  }
  const after = await upstreamState(mailbox);
  expect(after.messages["INBOX"]).toEqual(before.messages["INBOX"]!);
  expect(after.messages["Archive"]!.uids).toHaveLength(1);
});

test("a folder opened read-only by the rules stays read-only when a reload grants writes: SELECT again", async () => {
  proxy.reload({ rules: INBOX_READ });
  const mailbox = await createMailbox({ seed: { folders: { INBOX: 3 }, seed: 12 } });
  const before = await upstreamState(mailbox);
  const rows = auditCursor(proxy);
  const raw = await RawImap.login(proxy.port, mailbox);
  try {
    expect(statusOf(await raw.command("s", "SELECT INBOX"), "s")).toStartWith("s OK [READ-ONLY]");
    expect(proxy.reload({ rules: WRITABLE })).toBe(0);
    await rows();
    await refusedWrites(raw, rows);
    expect(statusOf(await raw.command("s2", "SELECT INBOX"), "s2")).toStartWith("s2 OK [READ-WRITE]");
    expect(statusOf(await raw.command("t", "STORE 1 +FLAGS (\\Flagged)"), "t")).toStartWith("t OK");
  } finally {
    raw.close();
  }
  const after = await upstreamState(mailbox);
  expect(after.messages["INBOX"]!.uids.slice(1)).toEqual(before.messages["INBOX"]!.uids.slice(1));
  expect(after.messages["INBOX"]!.uids[0]).toContain("\\Flagged");
});

test("a SELECT upstream answers [READ-ONLY] is read-only for the agent, and its writes are refused", async () => {
  proxy.reload({ rules: WRITABLE });
  const mailbox = await createMailbox({ seed: { folders: { INBOX: 3 }, seed: 13 } });
  // Dovecot opens a maildir folder read-only when it may not write its `cur` (it runs as another user than the test).
  const cur = `${mailbox.maildir}/cur`;
  chmodSync(cur, 0o500);
  try {
    const direct = await RawImap.open(upstreams().ports.imaps, { tls: true });
    try {
      await direct.command("L", `LOGIN "${mailbox.user}" "${mailbox.password}"`);
      expect(statusOf(await direct.command("s", "SELECT INBOX"), "s")).toStartWith("s OK [READ-ONLY]");
    } finally {
      direct.close();
    }
    const rows = auditCursor(proxy);
    const raw = await RawImap.login(proxy.port, mailbox);
    try {
      const selected = await raw.command("s", "SELECT INBOX");
      expect(statusOf(selected, "s")).toBe("s OK [READ-ONLY] SELECT completed");
      expect(selected).toContain("* OK [PERMANENTFLAGS ()]");
      await rows();
      await refusedWrites(raw, rows);
      // A body fetch goes upstream with PEEK: no mail:flag row for a \Seen that cannot be set.
      expect(statusOf(await raw.command("f", "FETCH 2 (BODY[TEXT])"), "f")).toStartWith("f OK");
      expect((await rows()).map((r) => [r.command, r.operation, r.decision])).toEqual([
        ["FETCH", "mail:read", "allow"],
      ]);
    } finally {
      raw.close();
    }
  } finally {
    chmodSync(cur, 0o700);
  }
});
