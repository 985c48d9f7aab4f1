/**
 * A STORE's allow rows name, for each operation it carries out, the rule that allowed that operation (docs/config.md
 * "Operations", docs/audit.md). `\Deleted` is mail:delete and any other flag mail:flag; replacing the flag list
 * (`FLAGS`) may set or clear both, so it is both operations. Here two rules allow them in INBOX: each row must cite
 * the rule of its own operation. Before, a `STORE … FLAGS (\Seen)` had one row, operation `mail:flag`, citing the
 * rule that allowed mail:delete, and a `+FLAGS (\Deleted \Seen)` recorded no mail:flag decision at all.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { AuditRow } from "../../src/audit/index.ts";
import { createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { auditCursor, RawImap, startTestProxy, statusOf, type TestProxy, upstreamState } from "./helpers.ts";

const RULES = `
[[rules]]
name = "inbox: read and flag"
folders = ["INBOX"]
action = "allow"
operations = ["read", "mail:flag"]

[[rules]]
name = "inbox: delete"
folders = ["INBOX"]
action = "allow"
operations = ["mail:delete"]

[[rules]]
name = "nothing else"
action = "deny"
`;

const FLAG = "inbox: read and flag";
const DELETE = "inbox: delete";

let mailbox: TestMailbox;
let proxy: TestProxy;

beforeAll(async () => {
  mailbox = await createMailbox({ seed: { folders: { INBOX: 3 }, seed: 7 } });
  proxy = await startTestProxy({ rules: RULES });
});

afterAll(async () => {
  await proxy?.close();
});

const allowRows = (rows: AuditRow[], command: string) =>
  rows
    .filter((r) => r.command === command && r.decision === "allow")
    .map((r) => ({ operation: r.operation, rule: r.rule, target: r.target, count: r.count }))
    .sort((a, b) => String(a.operation).localeCompare(String(b.operation)));

test("each operation of a STORE has its allow row, citing the rule that allows that operation", async () => {
  const rows = auditCursor(proxy);
  const agent = await RawImap.login(proxy.port, mailbox);
  try {
    expect(statusOf(await agent.command("s", "SELECT INBOX"), "s")).toStartWith("s OK [READ-WRITE]");
    await rows();
    const cases: [string, string, { operation: string; rule: string }[]][] = [
      ["UID STORE 1 +FLAGS (\\Seen)", "\\Seen", [{ operation: "mail:flag", rule: FLAG }]],
      ["UID STORE 1 -FLAGS (\\Deleted)", "\\Deleted", [{ operation: "mail:delete", rule: DELETE }]],
      [
        "UID STORE 1 FLAGS (\\Seen)",
        "\\Seen",
        [
          { operation: "mail:delete", rule: DELETE },
          { operation: "mail:flag", rule: FLAG },
        ],
      ],
      [
        "UID STORE 2 +FLAGS (\\Deleted \\Flagged)",
        "\\Deleted \\Flagged",
        [
          { operation: "mail:delete", rule: DELETE },
          { operation: "mail:flag", rule: FLAG },
        ],
      ],
      [
        "UID STORE 3 FLAGS ()",
        "",
        [
          { operation: "mail:delete", rule: DELETE },
          { operation: "mail:flag", rule: FLAG },
        ],
      ],
    ];
    for (const [i, [command, target, want]] of cases.entries()) {
      expect(statusOf(await agent.command(`c${i}`, command), `c${i}`)).toBe(`c${i} OK Store completed`);
      expect(allowRows(await rows(), "UID STORE")).toEqual(want.map((w) => ({ ...w, target, count: 1 })));
    }
    // What the rows say happened, happened.
    const inbox = (await upstreamState(mailbox)).messages["INBOX"]!.uids;
    expect(inbox).toEqual(["1 \\Seen", "2 \\Deleted \\Flagged", "3"]);
  } finally {
    agent.close();
  }
});
