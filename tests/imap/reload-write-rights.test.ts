/**
 * A reload that changes what may be written in the selected folder, and leaves its view as it was (mail:read the
 * same, no message filter): the session goes on, and its next command is decided by the new rules
 * (docs/operations.md "Reload"), however often the old ones had been asked about that folder before. Its rows name
 * the new config's rule, position and revision (docs/audit.md "What a row records"). Against Dovecot over a raw
 * socket, the reload judged as `serve` judges it and, again, only found at the next command.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { ImapFlow } from "imapflow";
import { connectImap, createMailbox } from "../fixtures/index.ts";
import { rawMessage } from "./filtered-fixture.ts";
import { INBOX_WRITABLE, RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

/** INBOX read only, after a rule for another folder: "Inbox, read" is rule 1. */
const READ_ONLY = `
[[rules]]
name = "Archive"
folders = ["Archive"]
action = "allow"

[[rules]]
name = "Inbox, read"
folders = ["INBOX"]
action = "allow"
operations = ["read"]

[[rules]]
name = "Rest"
action = "deny"
`;

let proxy: TestProxy;
const open: Array<{ close(): unknown }> = [];

beforeAll(async () => {
  proxy = await startTestProxy({ rules: INBOX_WRITABLE });
});

afterAll(async () => {
  for (const c of open) await Promise.resolve(c.close()).catch(() => {});
  await proxy?.close();
});

async function seenFlagged(direct: ImapFlow): Promise<string[]> {
  const m = await direct.fetchOne("1", { flags: true });
  return m === false ? [] : [...(m.flags ?? [])].filter((f) => f === "\\Seen" || f === "\\Flagged").sort();
}

for (const judge of [true, false]) {
  const how = judge ? "judged" : "found";
  test(`mail:flag and mail:delete withdrawn, then granted again (${how}): the next command knows`, async () => {
    proxy.reload({ rules: INBOX_WRITABLE });
    const mailbox = await createMailbox({ name: "reload-write-rights" });
    const direct = await connectImap(mailbox);
    open.push({ close: () => direct.logout() });
    await direct.append("INBOX", rawMessage("ann@example.test", "Hello from Ann", "ann"));
    await direct.mailboxOpen("INBOX");
    const raw = await RawImap.login(proxy.port, mailbox);
    open.push(raw);
    expect(statusOf(await raw.command("s", "SELECT INBOX"), "s")).toStartWith("s OK");
    // The old rules asked about INBOX, several times, for each operation.
    for (const tag of ["f1", "f2"])
      expect(statusOf(await raw.command(tag, "FETCH 1 (FLAGS)"), tag)).toStartWith(`${tag} OK`);
    expect(statusOf(await raw.command("t1", "STORE 1 +FLAGS.SILENT (\\Flagged)"), "t1")).toStartWith("t1 OK");
    expect(statusOf(await raw.command("t2", "STORE 1 -FLAGS.SILENT (\\Flagged)"), "t2")).toStartWith("t2 OK");

    expect(proxy.reload({ rules: READ_ONLY }, judge)).toBe(0);
    const before = (await proxy.rows()).length;
    expect(statusOf(await raw.command("t3", "STORE 1 +FLAGS (\\Flagged)"), "t3")).toBe(
      "t3 NO [NOPERM] Not permitted: mail:flag in this folder",
    );
    // Without mail:flag a body is fetched with PEEK: \Seen is not set.
    expect(statusOf(await raw.command("b", "FETCH 1 (BODY[TEXT])"), "b")).toStartWith("b OK");
    expect(statusOf(await raw.command("x", "EXPUNGE"), "x")).toStartWith("x NO [NOPERM]");
    expect(await seenFlagged(direct)).toEqual([]);
    const rows = (await proxy.rows()).slice(before);
    const revision = rows[0]!.configRevision;
    expect(rows.map((r) => [r.command, r.operation, r.decision, r.rule, r.ruleIndex, r.configRevision])).toEqual([
      ["STORE", "mail:flag", "deny", "Rest", 2, revision],
      ["FETCH", "mail:read", "allow", "Inbox, read", 1, revision],
      ["EXPUNGE", "mail:delete", "deny", "Rest", 2, revision],
    ]);

    expect(proxy.reload({ rules: INBOX_WRITABLE }, judge)).toBe(0);
    expect(statusOf(await raw.command("t4", "STORE 1 +FLAGS.SILENT (\\Flagged)"), "t4")).toStartWith("t4 OK");
    expect(statusOf(await raw.command("b2", "FETCH 1 (BODY[TEXT])"), "b2")).toStartWith("b2 OK");
    expect(await seenFlagged(direct)).toEqual(["\\Flagged", "\\Seen"]);
    const again = (await proxy.rows()).slice(before + rows.length);
    expect(again.every((r) => r.configRevision !== revision && r.rule === "Inbox" && r.ruleIndex === 0)).toBe(true);
  });
}
