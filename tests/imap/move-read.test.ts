/**
 * MOVE reads what it moves (docs/config.md "Operations"): `mail:move` at the source is not enough without
 * `mail:read` there, or an agent could empty a folder it may not read into one it can and read it there. Junk lets
 * the agent open it and move, not read; Trash lets it read and move; Archive is the agent's. Against Dovecot: the
 * refused MOVE leaves both folders as they were, with its deny row naming mail:read; the allowed one moves.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { auditCursor, RawImap, startTestProxy, statusOf, type TestProxy, upstreamState } from "./helpers.ts";

const RULES = `
[[rules]]
name = "junk: open and move only"
folders = ["Junk"]
action = "allow"
operations = ["folder:read", "mail:move"]

[[rules]]
name = "trash: read and move"
folders = ["Trash"]
action = "allow"
operations = ["read", "mail:move"]

[[rules]]
name = "archive is the agent's"
folders = ["Archive"]
action = "allow"
operations = ["all"]

[[rules]]
name = "nothing else"
action = "deny"
`;

let mailbox: TestMailbox;
let proxy: TestProxy;

beforeAll(async () => {
  mailbox = await createMailbox({ seed: { folders: { Junk: 3, Trash: 2, Archive: 1 }, seed: 5 } });
  proxy = await startTestProxy({ rules: RULES });
});

afterAll(async () => {
  await proxy?.close();
});

test("MOVE out of a folder without mail:read is refused, nothing moves; with mail:read it moves", async () => {
  const rows = auditCursor(proxy);
  const agent = await RawImap.login(proxy.port, mailbox);
  expect(statusOf(await agent.command("s", "SELECT Junk"), "s")).toStartWith("s OK");
  expect(statusOf(await agent.command("f", "FETCH 1 (FLAGS)"), "f")).toBe(
    "f NO [NOPERM] Not permitted: mail:read in this folder",
  );
  const before = await upstreamState(mailbox);
  await rows();
  expect(statusOf(await agent.command("m", "UID MOVE 1:* Archive"), "m")).toBe(
    "m NO [NOPERM] Not permitted: mail:read in this folder",
  );
  expect(await upstreamState(mailbox)).toEqual(before);
  expect(await rows()).toContainEqual(
    expect.objectContaining({ command: "UID MOVE", operation: "mail:read", folder: "Junk", decision: "deny" }),
  );

  expect(statusOf(await agent.command("t", "SELECT Trash"), "t")).toStartWith("t OK");
  expect(statusOf(await agent.command("n", "UID MOVE 1:* Archive"), "n")).toStartWith("n OK");
  const after = await upstreamState(mailbox);
  expect(after.messages["Trash"]!.uids).toEqual([]);
  expect(after.messages["Archive"]!.uids.length).toBe(before.messages["Archive"]!.uids.length + 2);
  expect(after.messages["Junk"]).toEqual(before.messages["Junk"]!);
  agent.close();
});
