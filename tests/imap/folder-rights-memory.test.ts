/**
 * What one long IMAP session keeps of the folder names it asked about (docs/reliability.md "Long runs"): the rules'
 * answers for each folder are remembered for the session (`FolderRights`, src/imap/folders.ts), and a session may
 * last as long as its agent keeps it busy. Against Dovecot: an agent that asks STATUS of thousands of distinct long
 * hidden names in one session must not make the proxy keep them all.
 */

import { heapStats } from "bun:jsc";
import { afterAll, beforeAll, expect, test } from "bun:test";
import { FolderRights } from "../../src/imap/folders.ts";
import { FOLDER_RIGHTS_CHARS, FOLDER_RIGHTS_ENTRIES } from "../../src/imap/limits.ts";
import { createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

const RULES = `
[[rules]]
name = "Agent"
folders = ["INBOX", "Agent", "Agent/**"]
action = "allow"
operations = ["read"]

[[rules]]
name = "Rest"
action = "deny"
`;

/** Names asked about, and the length of each: 2,000 × 60,000 characters, about 120 MB if all were kept. */
const NAMES = 2000;
const NAME_CHARS = 60_000;

let mailbox: TestMailbox;
let proxy: TestProxy;

beforeAll(async () => {
  mailbox = await createMailbox({ name: "folder-rights-memory" });
  proxy = await startTestProxy({ rules: RULES });
});

afterAll(async () => {
  await proxy?.close();
});

function heapBytes(): number {
  Bun.gc(true);
  return heapStats().heapSize;
}

/** The FolderRights the sessions asked, caught as they are asked. */
function catchRights(): { readonly seen: Set<FolderRights>; restore(): void } {
  const seen = new Set<FolderRights>();
  const visible = FolderRights.prototype.visible;
  FolderRights.prototype.visible = function (this: FolderRights, name: string): boolean {
    seen.add(this);
    return visible.call(this, name);
  };
  return { seen, restore: () => void (FolderRights.prototype.visible = visible) };
}

test("STATUS of 2,000 distinct 60,000-character hidden names in one session: a bounded part is kept", async () => {
  const rights = catchRights();
  const raw = await RawImap.login(proxy.port, mailbox);
  expect(statusOf(await raw.command("w", "STATUS INBOX (MESSAGES)"), "w")).toStartWith("w OK");
  const before = heapBytes();
  const padding = "x".repeat(NAME_CHARS - 16);
  // Sent in batches (the proxy reads a batch while answering the last), each name its own.
  for (let batch = 0; batch < NAMES / 100; batch++) {
    let lines = "";
    for (let i = 0; i < 100; i++)
      lines += `s${batch}-${i} STATUS Hidden${String(batch * 100 + i).padStart(6, "0")}${padding} (MESSAGES)\r\n`;
    raw.write(lines);
    const reply = await raw.waitTagged(`s${batch}-99`);
    expect(reply).toContain(`s${batch}-99 NO [NONEXISTENT]`);
  }
  // The session still answers, and still sees what it may see.
  expect(statusOf(await raw.command("v", "STATUS INBOX (MESSAGES)"), "v")).toStartWith("v OK");
  const grown = heapBytes() - before;
  rights.restore();
  expect(rights.seen.size).toBe(1);
  for (const r of rights.seen) {
    expect(r.remembered.entries).toBeLessThanOrEqual(FOLDER_RIGHTS_ENTRIES);
    expect(r.remembered.chars).toBeLessThanOrEqual(FOLDER_RIGHTS_CHARS);
  }
  raw.write("z LOGOUT\r\n");
  await raw.readUntil(() => raw.closed);
  // Unbounded, the session kept every name it was asked about: over 100 MB here.
  expect(grown).toBeLessThan(32 * 1024 * 1024);
}, 120_000);
