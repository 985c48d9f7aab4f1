/**
 * STATUS of a folder the rules allow but that does not exist upstream (docs/audit.md: every decision has a row):
 * filtered or not, the agent gets `NO [NONEXISTENT]` and the log one `allow` row naming the rule, against Dovecot.
 * LIST-STATUS the same: a filtered folder Dovecot lists but cannot open gets no STATUS, and its allow row all the same.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { chmodSync } from "node:fs";
import { join } from "node:path";
import { connectImap, createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { RawImap, startTestProxy, type TestProxy } from "./helpers.ts";

/** `Gone*` is filtered per message, `Plain*` is not; neither `GoneAway` nor `PlainAway` exists upstream. */
const RULES = `
[[rules]]
name = "Gone: hide the boss"
folders = ["Gone*"]
from = "boss@*"
action = "deny"
operations = ["read"]

[[rules]]
name = "Gone"
folders = ["Gone*"]
action = "allow"
operations = ["read"]

[[rules]]
name = "Plain"
folders = ["Plain*"]
action = "allow"
operations = ["read"]

[[rules]]
name = "Rest"
action = "deny"
`;

let mailbox: TestMailbox;
let proxy: TestProxy;

beforeAll(async () => {
  mailbox = await createMailbox({ name: "status-audit" });
  proxy = await startTestProxy({ rules: RULES });
});

afterAll(async () => {
  await proxy?.close();
});

test("STATUS of an allowed folder that is not there: NO [NONEXISTENT] and one allow row, filtered or not", async () => {
  const raw = await RawImap.login(proxy.port, mailbox);
  const rows = async (folder: string) =>
    (await proxy.rows()).filter((r) => r.command === "STATUS" && r.folder === folder);

  for (const [folder, rule] of [
    ["PlainAway", "Plain"],
    ["GoneAway", "Gone"],
  ] as const) {
    expect(await raw.command("a", `STATUS ${folder} (MESSAGES)`)).toBe("a NO [NONEXISTENT] Mailbox does not exist\r\n");
    const written = await rows(folder);
    expect(written.map((r) => [r.operation, r.decision, r.rule])).toEqual([["folder:read", "allow", rule]]);
    expect(written[0]!.count).toBeNull();
    expect(written[0]!.hiddenCount).toBeNull();
  }
  // The filtered folder's row says it was not counted, and why.
  const [gone] = await rows("GoneAway");
  expect(gone!.reason).toMatch(/; not counted: Mailbox does not exist$/);

  // An existing filtered folder still gets its counted row.
  const direct = await connectImap(mailbox);
  await direct.mailboxCreate("GoneHere");
  await direct.logout();
  expect(await raw.command("b", "STATUS GoneHere (MESSAGES)")).toBe(
    "* STATUS GoneHere (MESSAGES 0)\r\nb OK Status completed\r\n",
  );
  const here = await rows("GoneHere");
  expect(here.map((r) => [r.decision, r.rule, r.count, r.hiddenCount])).toEqual([["allow", "Gone", 0, 0]]);
  raw.close();
});

test("LIST-STATUS of a listed filtered folder that cannot be opened: no STATUS for it, and its allow row", async () => {
  // Dovecot lists a maildir folder it may not enter; its EXAMINE fails, so the proxy cannot count it.
  const direct = await connectImap(mailbox);
  await direct.mailboxCreate("GoneLocked");
  await direct.mailboxCreate("GoneOpen");
  await direct.logout();
  const locked = join(mailbox.maildir, ".GoneLocked");
  chmodSync(locked, 0o000);
  const raw = await RawImap.login(proxy.port, mailbox);
  try {
    const reply = await raw.command("c", 'LIST "" Gone* RETURN (STATUS (MESSAGES))');
    expect(reply).toContain('* LIST (\\HasNoChildren) "/" GoneLocked\r\n');
    expect(reply).not.toContain("* STATUS GoneLocked");
    expect(reply).toContain("* STATUS GoneOpen (MESSAGES 0)\r\n");
    expect(reply).toEndWith("c OK LIST completed\r\n");
  } finally {
    chmodSync(locked, 0o700);
    raw.close();
  }
  const rows = (await proxy.rows()).filter((r) => r.command === "LIST" && r.target === "RETURN (STATUS)");
  const about = (folder: string) =>
    rows.filter((r) => r.folder === folder).map((r) => [r.decision, r.rule, r.count, r.hiddenCount]);
  expect(about("GoneOpen")).toEqual([["allow", "Gone", 0, 0]]);
  expect(about("GoneLocked")).toEqual([["allow", "Gone", null, null]]);
  expect(rows.find((r) => r.folder === "GoneLocked")!.reason).toMatch(/; not counted: Mailbox does not exist$/);
});
