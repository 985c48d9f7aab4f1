/**
 * A STORE, COPY or MOVE whose set names no message of the folder (UIDs that do not exist, or no longer do) is decided
 * and allowed, and answered OK with nothing sent upstream: the decision has its `allow` row all the same, `count` 0,
 * as a FETCH of such a set has (docs/audit.md "What a row records"). Before, these three wrote no row at all: an
 * agent could try writes on any UID without the owner seeing it.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { AuditRow } from "../../src/audit/index.ts";
import { createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { ALLOW_ALL, auditCursor, RawImap, startTestProxy, statusOf, type TestProxy, upstreamState } from "./helpers.ts";

let mailbox: TestMailbox;
let proxy: TestProxy;

beforeAll(async () => {
  mailbox = await createMailbox({ seed: { folders: { INBOX: 2 }, seed: 75 } });
  proxy = await startTestProxy({ rules: ALLOW_ALL });
});

afterAll(async () => {
  await proxy?.close();
});

const brief = (r: AuditRow) => [r.command, r.operation, r.folder, r.target, r.decision, r.rule, r.count];

test("a write naming no existing message has its allow row, count 0, and changes nothing upstream", async () => {
  const before = await upstreamState(mailbox);
  const rows = auditCursor(proxy);
  const raw = await RawImap.login(proxy.port, mailbox);
  try {
    expect(statusOf(await raw.command("s", "SELECT INBOX"), "s")).toStartWith("s OK [READ-WRITE]");
    await rows();
    const cases: [string, (string | number | null)[][]][] = [
      [
        "UID STORE 9999 +FLAGS (\\Flagged)",
        [["UID STORE", "mail:flag", "INBOX", "\\Flagged", "allow", "everything", 0]],
      ],
      [
        "UID STORE 9999 FLAGS (\\Seen)",
        [
          ["UID STORE", "mail:flag", "INBOX", "\\Seen", "allow", "everything", 0],
          ["UID STORE", "mail:delete", "INBOX", "\\Seen", "allow", "everything", 0],
        ],
      ],
      ["UID COPY 9999 Archive", [["UID COPY", "mail:read", "INBOX", "Archive", "allow", "everything", 0]]],
      ["UID MOVE 9998:9999 Archive", [["UID MOVE", "mail:move", "INBOX", "Archive", "allow", "everything", 0]]],
    ];
    for (const [i, [command, expected]] of cases.entries()) {
      const tag = `c${i}`;
      expect(statusOf(await raw.command(tag, command), tag), command).toStartWith(`${tag} OK`);
      expect((await rows()).map(brief), command).toEqual(expected);
    }
  } finally {
    raw.close();
  }
  expect(await upstreamState(mailbox)).toEqual(before);
});
