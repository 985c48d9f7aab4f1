/**
 * Folder and operation rules, command by command (docs/config.md "Operations"): INBOX is read-only, Drafts append-only,
 * the Archive subtree is the agent's own, and nothing else exists for the agent (Sent, Trash, Junk are hidden).
 * Each command class is tried through the proxy with a raw client and must be allowed or refused as the rules say;
 * after every refusal Dovecot is read directly and must hold exactly what it held before (folders, subscriptions,
 * UIDs, flags, UIDNEXT); every decision is in the audit log with the rule that made it.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { AuditRow } from "../../src/audit/index.ts";
import { connectImap, createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { auditCursor, RawImap, startTestProxy, statusOf, type TestProxy, upstreamState } from "./helpers.ts";

const RULES = `
[[rules]]
name = "inbox read-only"
folders = ["INBOX"]
action = "allow"
operations = ["read"]

[[rules]]
name = "drafts append-only"
folders = ["Drafts"]
action = "allow"
operations = ["mail:append"]

[[rules]]
name = "archive is the agent's"
folders = ["Archive", "Archive/**"]
action = "allow"
operations = ["all"]

[[rules]]
name = "nothing else"
action = "deny"
`;

let proxy: TestProxy;
let mailbox: TestMailbox;
let raw: RawImap;
let newRows: () => Promise<AuditRow[]>;
let n = 0;

beforeAll(async () => {
  mailbox = await createMailbox({
    seed: { folders: { INBOX: 8, Drafts: 2, Archive: 4, "Archive/2025": 2, Sent: 3, Trash: 2 }, seed: 11 },
  });
  // The human has flagged an INBOX message \Deleted and one in hidden Trash: the agent must not expunge either.
  const human = await connectImap(mailbox);
  await human.mailboxOpen("INBOX");
  await human.messageFlagsAdd("3", ["\\Deleted"]);
  await human.mailboxOpen("Trash");
  await human.messageFlagsAdd("1", ["\\Deleted"]);
  await human.logout();
  proxy = await startTestProxy({ rules: RULES });
  newRows = auditCursor(proxy);
  raw = await RawImap.open(proxy.port);
  expect(statusOf(await raw.command("login", `LOGIN "${mailbox.user}" "${mailbox.password}"`), "login")).toStartWith(
    "login OK",
  );
  await newRows();
});

afterAll(async () => {
  raw?.close();
  await proxy?.close();
});

interface Expect {
  /** Tagged status, e.g. "OK", "NO [NOPERM]", "NO [NONEXISTENT]", "NO [TRYCREATE]". */
  readonly status: string;
  /** The audit rows the command must have written: decision and rule name (command defaults to the verb). */
  readonly audit: readonly {
    readonly decision: "allow" | "deny";
    readonly rule: string | null;
    readonly command?: string;
    readonly operation?: string;
  }[];
}

/** Runs one command; a refusal must leave Dovecot unchanged. Returns the whole reply. */
async function step(command: string, want: Expect): Promise<string> {
  const refused = !want.status.startsWith("OK");
  const before = refused ? await upstreamState(mailbox) : null;
  const tag = `t${++n}`;
  const reply = await raw.command(tag, command);
  expect(statusOf(reply, tag)).toStartWith(`${tag} ${want.status}`);
  const rows = await newRows();
  const verb = command.split(" ")[0] === "UID" ? command.split(" ").slice(0, 2).join(" ") : command.split(" ")[0]!;
  for (const w of want.audit) {
    const found = rows.find(
      (r) =>
        r.decision === w.decision &&
        r.rule === w.rule &&
        r.command === (w.command ?? verb) &&
        (w.operation === undefined || r.operation === w.operation),
    );
    if (found === undefined)
      throw new Error(
        `${command}: no audit row ${JSON.stringify(w)} in ` +
          `${JSON.stringify(rows.map((r) => [r.command, r.operation, r.decision, r.rule]))}`,
      );
  }
  if (refused) {
    expect(
      rows.some(
        (r) =>
          r.decision === "allow" &&
          r.operation !== "folder:read" &&
          r.operation !== "mail:read" &&
          r.operation !== null,
      ),
    ).toBe(false);
    expect(await upstreamState(mailbox)).toEqual(before!);
  }
  return reply;
}

const DENY = { decision: "deny", rule: "nothing else" } as const;

describe("folder:read", () => {
  test("LIST and LSUB show INBOX, Drafts and the Archive subtree, never the hidden folders", async () => {
    const list = await step('LIST "" "*"', {
      status: "OK",
      audit: [{ decision: "allow", rule: null, operation: "folder:read" }],
    });
    const names = [...list.matchAll(/^\* LIST \([^)]*\) "\/" (.+)$/gm)].map((m) => m[1]);
    expect(names.sort()).toEqual(["Archive", "Archive/2025", "Drafts", "INBOX"]);
    const lsub = await step('LSUB "" "*"', {
      status: "OK",
      audit: [{ decision: "allow", rule: null, operation: "folder:read" }],
    });
    expect(lsub).not.toMatch(/Sent|Trash|Junk/);
    const rows = (await proxy.rows()).filter((r) => r.command === "LIST");
    expect(rows.at(-1)!.hiddenCount).toBe(3);
  });

  test("STATUS: allowed in INBOX; Drafts is visible but not readable; Sent does not exist", async () => {
    const ok = await step("STATUS INBOX (MESSAGES UIDNEXT)", {
      status: "OK",
      audit: [{ decision: "allow", rule: "inbox read-only" }],
    });
    expect(ok).toContain("* STATUS INBOX (MESSAGES 8 UIDNEXT 9)");
    await step("STATUS Drafts (MESSAGES)", { status: "NO [NOPERM]", audit: [DENY] });
    await step("STATUS Sent (MESSAGES)", { status: "NO [NONEXISTENT]", audit: [DENY] });
  });

  test("SELECT and EXAMINE: INBOX opens read-only; Drafts is refused; hidden Sent does not exist", async () => {
    await step("EXAMINE INBOX", { status: "OK [READ-ONLY]", audit: [{ decision: "allow", rule: "inbox read-only" }] });
    await step("SELECT Drafts", { status: "NO [NOPERM]", audit: [DENY] });
    // A failed SELECT deselects (RFC 3501 §6.3.1).
    expect(statusOf(await raw.command("chk1", "FETCH 1 FLAGS"), "chk1")).toStartWith("chk1 BAD");
    await step("EXAMINE Trash", { status: "NO [NONEXISTENT]", audit: [DENY] });
    await step("SELECT INBOX", { status: "OK [READ-ONLY]", audit: [{ decision: "allow", rule: "inbox read-only" }] });
  });
});

describe("in read-only INBOX", () => {
  test("FETCH of a body without PEEK is allowed and leaves \\Seen unset upstream", async () => {
    const before = await upstreamState(mailbox);
    const unseen = before.messages["INBOX"]!.uids.filter((u) => !u.includes("\\Seen")).map((u) =>
      Number(u.split(" ")[0]),
    );
    expect(unseen.length).toBeGreaterThan(0);
    const reply = await step(`UID FETCH ${unseen.join(",")} (BODY[] RFC822.TEXT FLAGS)`, {
      status: "OK",
      audit: [{ decision: "allow", rule: "inbox read-only", operation: "mail:read" }],
    });
    expect(reply).toContain("BODY[] {");
    expect(reply).not.toContain("PEEK");
    expect(reply).not.toContain("\\Seen");
    await step("FETCH 1:* (ENVELOPE BODYSTRUCTURE)", {
      status: "OK",
      audit: [{ decision: "allow", rule: "inbox read-only" }],
    });
    expect(await upstreamState(mailbox)).toEqual(before);
  });

  test("SEARCH is allowed", async () => {
    const reply = await step("SEARCH ALL", { status: "OK", audit: [{ decision: "allow", rule: "inbox read-only" }] });
    expect(reply).toContain("* SEARCH 1 2 3 4 5 6 7 8\r\n");
  });

  test("STORE of flags, of \\Deleted, and replacing the flag list are refused", async () => {
    await step("STORE 2 +FLAGS (\\Flagged)", { status: "NO [NOPERM]", audit: [{ ...DENY, operation: "mail:flag" }] });
    await step("STORE 2 +FLAGS.SILENT (\\Seen)", { status: "NO [NOPERM]", audit: [DENY] });
    await step("STORE 2 +FLAGS (\\DELETED)", { status: "NO [NOPERM]", audit: [{ ...DENY, operation: "mail:delete" }] });
    await step("UID STORE 3 -FLAGS (\\Deleted)", {
      status: "NO [NOPERM]",
      audit: [{ ...DENY, operation: "mail:delete" }],
    });
    await step("STORE 2 FLAGS ()", { status: "NO [NOPERM]", audit: [DENY] });
  });

  test("MOVE needs mail:move at the source; COPY to a hidden folder does not exist", async () => {
    await step("MOVE 1 Archive", { status: "NO [NOPERM]", audit: [{ ...DENY, operation: "mail:move" }] });
    await step("UID MOVE 1:* Archive", { status: "NO [NOPERM]", audit: [{ ...DENY, operation: "mail:move" }] });
    await step("COPY 1 Sent", { status: "NO [TRYCREATE]", audit: [{ ...DENY, operation: "mail:append" }] });
  });

  test("EXPUNGE, UID EXPUNGE are refused; CLOSE expunges nothing", async () => {
    await step("EXPUNGE", { status: "NO [NOPERM]", audit: [{ ...DENY, operation: "mail:delete" }] });
    await step("UID EXPUNGE 1:*", { status: "NO [NOPERM]", audit: [{ ...DENY, operation: "mail:delete" }] });
    const before = await upstreamState(mailbox);
    expect(before.messages["INBOX"]!.uids.some((u) => u.startsWith("3 ") && u.includes("\\Deleted"))).toBe(true);
    await step("CLOSE", { status: "OK", audit: [{ decision: "allow", rule: null }] });
    expect(await upstreamState(mailbox)).toEqual(before);
  });

  test("COPY to append-only Drafts is a read here and an append there: allowed", async () => {
    await step("SELECT INBOX", { status: "OK [READ-ONLY]", audit: [{ decision: "allow", rule: "inbox read-only" }] });
    const before = await upstreamState(mailbox);
    const reply = await step("COPY 1 Drafts", {
      status: "OK",
      audit: [{ decision: "allow", rule: "inbox read-only", operation: "mail:read" }],
    });
    // Drafts' status is not the agent's to read (no folder:read there): no COPYUID, which would give its
    // UIDVALIDITY and how far its UIDs have gone.
    expect(statusOf(reply, `t${n}`)).toStartWith(`t${n} OK `);
    expect(reply).not.toContain("COPYUID");
    const after = await upstreamState(mailbox);
    expect(after.messages["Drafts"]!.uids.length).toBe(before.messages["Drafts"]!.uids.length + 1);
    expect(after.messages["INBOX"]).toEqual(before.messages["INBOX"]!);
  });
});

describe("mail:append", () => {
  test("APPEND to Drafts allowed; INBOX refused; hidden Sent nonexistent; \\Deleted needs mail:delete", async () => {
    const message = "From: me@x.test\r\nSubject: draft\r\n\r\nhi\r\n";
    const tag = `t${++n}`;
    raw.write(`${tag} APPEND Drafts (\\Draft) {${message.length}}\r\n`);
    await raw.readUntil((b) => b.includes("+ "));
    raw.take();
    raw.write(message + "\r\n");
    // No APPENDUID: the agent may add to Drafts, not read its status (UIDVALIDITY, UIDNEXT).
    const appended = statusOf(await raw.waitTagged(tag), tag);
    expect(appended).toStartWith(`${tag} OK `);
    expect(appended).not.toContain("APPENDUID");
    const rows = await newRows();
    expect(rows.some((r) => r.command === "APPEND" && r.decision === "allow" && r.rule === "drafts append-only")).toBe(
      true,
    );
    // Refused before the literal: the agent sends {n+} so the bytes come anyway and are dropped.
    await step(`APPEND INBOX {${message.length}+}\r\n${message}`, { status: "NO [NOPERM]", audit: [DENY] });
    await step(`APPEND Sent {${message.length}+}\r\n${message}`, { status: "NO [TRYCREATE]", audit: [DENY] });
    await step(`APPEND Drafts (\\Deleted) {${message.length}+}\r\n${message}`, {
      status: "NO [NOPERM]",
      audit: [{ ...DENY, operation: "mail:delete" }],
    });
  });
});

describe("folder:write", () => {
  test("CREATE: only in the Archive subtree; an existing hidden name answers like any denied name", async () => {
    const foo = await step("CREATE Foo", { status: "NO [NOPERM]", audit: [DENY] });
    const sent = await step("CREATE Sent", { status: "NO [NOPERM]", audit: [DENY] });
    expect(sent.replace(/t\d+ /, "")).toBe(foo.replace(/t\d+ /, ""));
    await step("CREATE Drafts/Sub", { status: "NO [NOPERM]", audit: [DENY] });
    await step("CREATE Archive/New", { status: "OK", audit: [{ decision: "allow", rule: "archive is the agent's" }] });
  });

  test("SUBSCRIBE and UNSUBSCRIBE: refused outside Archive", async () => {
    await step("SUBSCRIBE INBOX", { status: "NO [NOPERM]", audit: [DENY] });
    await step("UNSUBSCRIBE Drafts", { status: "NO [NOPERM]", audit: [DENY] });
    await step("UNSUBSCRIBE Trash", { status: "NO [NONEXISTENT]", audit: [DENY] });
    await step("SUBSCRIBE Archive/New", {
      status: "OK",
      audit: [{ decision: "allow", rule: "archive is the agent's" }],
    });
    expect((await upstreamState(mailbox)).folders).toContainEqual({ path: "Archive/New", subscribed: true });
  });

  test("RENAME: within Archive only", async () => {
    await step("RENAME Drafts Drafts2", { status: "NO [NOPERM]", audit: [DENY] });
    await step("RENAME Archive/New Drafts/New", { status: "NO [NOPERM]", audit: [DENY] });
    await step("RENAME Archive/New Outside", { status: "NO [NOPERM]", audit: [DENY] });
    await step("RENAME Trash Archive/Trash", { status: "NO [NONEXISTENT]", audit: [DENY] });
    await step("RENAME Archive/New Archive/Newer", {
      status: "OK",
      audit: [{ decision: "allow", rule: "archive is the agent's" }],
    });
  });

  test("DELETE: refused for Drafts and INBOX, nonexistent for hidden Trash, allowed in Archive", async () => {
    await step("DELETE Drafts", { status: "NO [NOPERM]", audit: [DENY] });
    await step("DELETE INBOX", { status: "NO [CANNOT]", audit: [{ decision: "deny", rule: null }] });
    await step("DELETE Trash", { status: "NO [NONEXISTENT]", audit: [DENY] });
    await step("DELETE Archive/Newer", {
      status: "OK",
      audit: [{ decision: "allow", rule: "archive is the agent's" }],
    });
    expect((await upstreamState(mailbox)).folders.map((f) => f.path)).not.toContain("Archive/Newer");
  });
});

describe("in the agent's own Archive", () => {
  test("SELECT is read-write; STORE, \\Deleted, EXPUNGE are allowed; MOVE needs mail:append at target", async () => {
    await step("SELECT Archive", {
      status: "OK [READ-WRITE]",
      audit: [{ decision: "allow", rule: "archive is the agent's" }],
    });
    await step("STORE 1 +FLAGS (\\Flagged)", {
      status: "OK",
      audit: [{ decision: "allow", rule: "archive is the agent's", operation: "mail:flag" }],
    });
    await step("MOVE 1 INBOX", { status: "NO [NOPERM]", audit: [{ ...DENY, operation: "mail:append" }] });
    await step("MOVE 1 Junk", { status: "NO [TRYCREATE]", audit: [DENY] });
    await step("MOVE 1 Drafts", {
      status: "OK",
      audit: [{ decision: "allow", rule: "archive is the agent's", operation: "mail:move" }],
    });
    await step("STORE 1 +FLAGS (\\Deleted)", {
      status: "OK",
      audit: [{ decision: "allow", rule: "archive is the agent's", operation: "mail:delete" }],
    });
    const reply = await step("EXPUNGE", {
      status: "OK",
      audit: [{ decision: "allow", rule: "archive is the agent's", operation: "mail:delete" }],
    });
    expect(reply).toContain("* 1 EXPUNGE");
    const state = await upstreamState(mailbox);
    expect(state.messages["Archive"]!.uids.length).toBe(2);
    // Hidden Trash kept its \Deleted message; INBOX kept the human's.
    expect(state.messages["Trash"]!.uids.length).toBe(2);
    expect(state.messages["INBOX"]!.uids.length).toBe(8);
    await step("CLOSE", {
      status: "OK",
      audit: [{ decision: "allow", rule: "archive is the agent's", operation: "mail:delete" }],
    });
  });
});

test("each session row names its rule, but listings, login, CLOSE of a read-only mailbox, DELETE INBOX", async () => {
  const rows = await proxy.rows();
  for (const r of rows) {
    if (r.rule !== null) continue;
    // And a command refused for the session's state, which no rule decides (the FETCH after a failed SELECT).
    const ok = ["LIST", "LSUB", "LOGIN", "CLOSE", "DELETE"].includes(r.command) || r.reason === "No mailbox selected";
    if (!ok) throw new Error(`audit row without a rule: ${JSON.stringify(r)}`);
  }
  const deny = rows.filter((r) => r.decision === "deny");
  expect(deny.length).toBeGreaterThan(20);
});
