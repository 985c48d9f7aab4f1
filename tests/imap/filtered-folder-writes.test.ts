/**
 * DELETE and RENAME of filtered folders (docs/imap.md "Decisions"), with a raw socket against the real Dovecot, which
 * is read directly after each attack: a filtered folder holds messages the agent does not see, and DELETE would
 * destroy them, RENAME carry them into a folder where the agent sees everything (RFC 3501 §6.3.4, §6.3.5). Both are
 * refused for a filtered folder, a folder with a filtered folder below it, and (RENAME) a filtered new name, whether
 * or not a hidden message is there; a folder of the agent's own is still deleted and renamed.
 *
 * Rules: Receipts and below show shop@ messages only, and may be managed (folder:write, append, delete); Box is the
 * agent's, except that its child Box/Filtered shows shop@ messages only; Agent is the agent's; nothing else exists.
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import { connectImap, createMailbox, type TestMailbox } from "../fixtures/index.ts";
import {
  auditCursor,
  fromMessage,
  RawImap,
  startTestProxy,
  statusOf,
  type TestProxy,
  upstreamState,
} from "./helpers.ts";

const RULES = `
[[rules]]
name = "shop receipts only"
folders = ["Receipts", "Receipts/**"]
from = "shop@*"
action = "allow"
operations = ["read"]

[[rules]]
name = "manage receipts"
folders = ["Receipts", "Receipts/**"]
action = "allow"
operations = ["folder:write", "mail:append", "mail:delete"]

[[rules]]
name = "box child: shop only"
folders = ["Box/Filtered"]
from = "shop@*"
action = "allow"
operations = ["read"]

[[rules]]
name = "box child: nothing else to read"
folders = ["Box/Filtered"]
action = "deny"
operations = ["read"]

[[rules]]
name = "own"
folders = ["Agent", "Agent/**", "Box", "Box/**"]
action = "allow"

[[rules]]
name = "nothing else"
action = "deny"
`;

const SUBTREE_RENAME = " NO [NOPERM] Not permitted: folders below it are not all the agent's to rename";
const SUBTREE_DELETE = " NO [NOPERM] Not permitted: folders below it are not all the agent's to delete";
const FILTERED = " NO [NOPERM] Not permitted: folder:write in this folder";

let proxy: TestProxy;
let mailbox: TestMailbox;
let newRows: ReturnType<typeof auditCursor>;

beforeAll(async () => {
  mailbox = await createMailbox();
  const human = await connectImap(mailbox);
  for (const f of ["Receipts", "Box", "Box/Filtered", "Agent", "Agent/Tmp"]) await human.mailboxCreate(f);
  await human.append("Receipts", fromMessage("shop@s.test", "receipt-1"));
  await human.append("Receipts", fromMessage("bank@corp.test", "hidden-bank-statement"));
  await human.append("Box", fromMessage("me@corp.test", "box-note"));
  await human.append("Box/Filtered", fromMessage("shop@s.test", "receipt-2"));
  await human.append("Box/Filtered", fromMessage("bank@corp.test", "hidden-box-statement"));
  await human.logout();
  proxy = await startTestProxy({ rules: RULES });
  newRows = auditCursor(proxy);
});

afterAll(async () => {
  await proxy?.close();
});

/** The Message-IDs Dovecot holds in `folder`, read directly. */
async function messageIds(folder: string): Promise<string[]> {
  const client = await connectImap(mailbox);
  try {
    await client.mailboxOpen(folder, { readOnly: true });
    const out: string[] = [];
    for await (const m of client.fetch("1:*", { envelope: true })) out.push(m.envelope?.messageId ?? "");
    return out.sort();
  } finally {
    await client.logout();
  }
}

const line = (reply: string, tag: string) => statusOf(reply, tag).slice(tag.length);

test("RENAME and DELETE of a filtered folder are refused; its hidden message stays where it is", async () => {
  const raw = await RawImap.login(proxy.port, mailbox);
  // The agent sees one of the two messages: the folder is filtered.
  expect(await raw.command("s", "EXAMINE Receipts")).toContain("* 1 EXISTS");
  await raw.command("u", "UNSELECT");
  await newRows();
  const before = await upstreamState(mailbox);
  expect(line(await raw.command("r1", "RENAME Receipts Agent/Old"), "r1")).toBe(FILTERED);
  expect(line(await raw.command("d1", "DELETE Receipts"), "d1")).toBe(FILTERED);
  expect(await upstreamState(mailbox)).toEqual(before);
  expect(await messageIds("Receipts")).toEqual(["<hidden-bank-statement@corp.test>", "<receipt-1@corp.test>"]);
  expect(statusOf(await raw.command("s2", "SELECT Agent/Old"), "s2")).toStartWith("s2 NO [NONEXISTENT]");
  const rows = (await newRows()).filter((r) => r.command === "RENAME" || r.command === "DELETE");
  expect(rows.map((r) => [r.command, r.decision, r.folder, r.rule])).toEqual([
    ["RENAME", "deny", "Receipts", "shop receipts only"],
    ["DELETE", "deny", "Receipts", "shop receipts only"],
  ]);
  for (const r of rows) expect(r.reason).toContain("is filtered");
  raw.close();
});

test("RENAME or DELETE of a folder with a filtered folder below: refused as for a child not the agent's", async () => {
  const raw = await RawImap.login(proxy.port, mailbox);
  expect(await raw.command("s", "EXAMINE Box/Filtered")).toContain("* 1 EXISTS");
  await raw.command("u", "UNSELECT");
  await newRows();
  const before = await upstreamState(mailbox);
  expect(line(await raw.command("r1", "RENAME Box Agent/Box"), "r1")).toBe(SUBTREE_RENAME);
  expect(line(await raw.command("d1", "DELETE Box"), "d1")).toBe(SUBTREE_DELETE);
  // The filtered child itself, named directly.
  expect(line(await raw.command("r2", "RENAME Box/Filtered Agent/F"), "r2")).toBe(FILTERED);
  expect(line(await raw.command("d2", "DELETE Box/Filtered"), "d2")).toBe(FILTERED);
  expect(await upstreamState(mailbox)).toEqual(before);
  expect(await messageIds("Box/Filtered")).toEqual(["<hidden-box-statement@corp.test>", "<receipt-2@corp.test>"]);
  const rows = (await newRows()).filter((r) => r.decision === "deny");
  expect(rows.map((r) => [r.command, r.rule])).toEqual([
    ["RENAME", "box child: shop only"],
    ["DELETE", "box child: shop only"],
    ["RENAME", "box child: shop only"],
    ["DELETE", "box child: shop only"],
  ]);
  raw.close();
});

test("RENAME to a filtered name is refused, even from a folder with the same filter", async () => {
  const raw = await RawImap.login(proxy.port, mailbox);
  await newRows();
  const before = await upstreamState(mailbox);
  expect(line(await raw.command("r1", "RENAME Agent/Tmp Receipts/Tmp"), "r1")).toBe(FILTERED);
  expect(line(await raw.command("r2", "RENAME Receipts Receipts/Moved"), "r2")).toBe(FILTERED);
  expect(await upstreamState(mailbox)).toEqual(before);
  const rows = (await newRows()).filter((r) => r.decision === "deny");
  expect(rows.map((r) => r.reason)).toEqual([
    "the new name Receipts/Tmp is filtered: its messages are decided one by one, and RENAME moves them all",
    "the folder Receipts is filtered: its messages are decided one by one, and RENAME moves them all",
  ]);
  raw.close();
});

test("the agent's own folders are still renamed and deleted", async () => {
  const raw = await RawImap.login(proxy.port, mailbox);
  expect(statusOf(await raw.command("c", "CREATE Agent/Scratch"), "c")).toStartWith("c OK");
  expect(statusOf(await raw.command("r", "RENAME Agent/Scratch Agent/Scratch2"), "r")).toStartWith("r OK");
  expect(statusOf(await raw.command("d", "DELETE Agent/Scratch2"), "d")).toStartWith("d OK");
  const folders = (await upstreamState(mailbox)).folders.map((f) => f.path);
  expect(folders).not.toContain("Agent/Scratch");
  expect(folders).not.toContain("Agent/Scratch2");
  raw.close();
});
