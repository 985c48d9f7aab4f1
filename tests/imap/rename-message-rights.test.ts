/**
 * RENAME carries every message of the folder, and of each folder below it, to the new name (RFC 3501 §6.3.5): a
 * move of all of them. So it needs what MOVE needs for each (docs/config.md "Operations"): mail:read and mail:move
 * at the old name, mail:append at the new one; otherwise an agent could rename a folder it may not read (or may not
 * empty) to a name where it may, and read or delete the messages there. Before, RENAME asked only folder:write at
 * both names: with `Projects/HR` denied mail:read and `Projects/**` the agent's, `RENAME Projects/HR Projects/X`
 * went through and the agent read HR's mail as Projects/X.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { auditCursor, RawImap, startTestProxy, statusOf, type TestProxy, upstreamState } from "./helpers.ts";

const RULES = `
[[rules]]
name = "HR is not the agent's to read"
folders = ["Projects/HR", "Projects/HR/**", "Projects/Outer/HR"]
action = "deny"
operations = ["mail:read"]

[[rules]]
name = "contracts are kept"
folders = ["Projects/Contracts"]
action = "deny"
operations = ["mail:move", "mail:delete"]

[[rules]]
name = "archive is read-only"
folders = ["Projects/Archive"]
action = "deny"
operations = ["mail:append"]

[[rules]]
name = "projects are the agent's"
folders = ["Projects", "Projects/**"]
action = "allow"
operations = ["all"]

[[rules]]
name = "nothing else"
action = "deny"
`;

let mailbox: TestMailbox;
let proxy: TestProxy;

beforeAll(async () => {
  mailbox = await createMailbox({
    seed: {
      folders: {
        "Projects/HR": 2,
        "Projects/Contracts": 2,
        "Projects/Mine": 1,
        "Projects/Mine/Sub": 1,
        "Projects/Outer": 1,
        "Projects/Outer/HR": 1,
      },
      seed: 9,
    },
  });
  proxy = await startTestProxy({ rules: RULES });
});

afterAll(async () => {
  await proxy?.close();
});

test("RENAME out of a folder without mail:read or mail:move, or into one without mail:append, is refused", async () => {
  const rows = auditCursor(proxy);
  const agent = await RawImap.login(proxy.port, mailbox);
  try {
    // The agent may open HR but not read it.
    expect(statusOf(await agent.command("s", "SELECT Projects/HR"), "s")).toStartWith("s OK");
    expect(statusOf(await agent.command("f", "FETCH 1 BODY.PEEK[]"), "f")).toBe(
      "f NO [NOPERM] Not permitted: mail:read in this folder",
    );
    expect(statusOf(await agent.command("u", "UNSELECT"), "u")).toBe("u OK Unselect completed");
    const before = await upstreamState(mailbox);
    await rows();
    const refused: [string, string, string, string][] = [
      ["RENAME Projects/HR Projects/Open", "Not permitted: mail:read in this folder", "mail:read", "HR is not"],
      ["RENAME Projects/Contracts Projects/Gone", "Not permitted: mail:move in this folder", "mail:move", "contracts"],
      ["RENAME Projects/Mine Projects/Archive", "Not permitted: mail:append in this folder", "mail:append", "archive"],
      [
        "RENAME Projects/Outer Projects/Other",
        "Not permitted: folders below it are not all the agent's to rename",
        "mail:read",
        "HR is not",
      ],
    ];
    for (const [i, [command, text, operation, rule]] of refused.entries()) {
      expect(statusOf(await agent.command(`r${i}`, command), `r${i}`)).toBe(`r${i} NO [NOPERM] ${text}`);
      const got = (await rows()).filter((r) => r.command === "RENAME");
      expect(got.map((r) => [r.decision, r.operation])).toEqual([["deny", operation]]);
      expect(got[0]!.rule).toStartWith(rule);
    }
    expect(await upstreamState(mailbox)).toEqual(before);
    // A folder whose messages the agent may read, move and append, below it too, is renamed as before.
    expect(statusOf(await agent.command("ok", "RENAME Projects/Mine Projects/Renamed"), "ok")).toBe(
      "ok OK Rename completed",
    );
    const after = (await upstreamState(mailbox)).messages;
    expect(Object.keys(after).filter((f) => f.startsWith("Projects/Renamed"))).toEqual([
      "Projects/Renamed",
      "Projects/Renamed/Sub",
    ]);
  } finally {
    agent.close();
  }
});
