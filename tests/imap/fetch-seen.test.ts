/**
 * A body FETCH without PEEK sets \Seen (RFC 3501 §6.4.5, RFC 3516 §4.2). With mail:flag the proxy sends it as asked,
 * so it is a flag write: a `mail:flag` row (target `\Seen`) on disk before the FETCH goes upstream, besides the
 * `mail:read` row; when that row cannot be written the agent gets `NO [UNAVAILABLE]` and \Seen stays unset. Without
 * mail:flag the body is fetched with PEEK and nothing is flagged (docs/imap.md "Decisions"; docs/config.md
 * "Operations"). Dovecot is read directly after each command.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { type AuditLog, AuditUnavailableError } from "../../src/audit/index.ts";
import { connectImap, createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { auditCursor, RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

const RULES = `
[[rules]]
name = "inbox: read and flag"
folders = ["INBOX"]
action = "allow"
operations = ["read", "mail:flag"]

[[rules]]
name = "archive: read and expunge"
folders = ["Archive"]
action = "allow"
operations = ["read", "mail:delete"]

[[rules]]
name = "nothing else"
action = "deny"
`;

/** The next durable row of this operation is refused (once), as by a log that cannot commit. */
let refuseDurableOf: string | null = null;

function failingOnCue(log: AuditLog): AuditLog {
  return new Proxy(log, {
    get(target, key) {
      if (key === "durable") {
        return (ev: Parameters<AuditLog["durable"]>[0]) => {
          if (refuseDurableOf !== null && ev.operation === refuseDurableOf) {
            refuseDurableOf = null;
            return Promise.reject(new AuditUnavailableError("audit: cannot write (test)"));
          }
          return target.durable(ev);
        };
      }
      const value = Reflect.get(target, key, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

let proxy: TestProxy;
let mailbox: TestMailbox;
let agent: RawImap;
let newRows: ReturnType<typeof auditCursor>;

beforeAll(async () => {
  mailbox = await createMailbox({ seed: { folders: { INBOX: 8, Archive: 3 }, seed: 5 } });
  const human = await connectImap(mailbox);
  for (const f of ["INBOX", "Archive"]) {
    await human.mailboxOpen(f);
    await human.messageFlagsRemove("1:*", ["\\Seen"]);
  }
  await human.logout();
  proxy = await startTestProxy({ rules: RULES, wrapAudit: failingOnCue });
  newRows = auditCursor(proxy);
  agent = await RawImap.login(proxy.port, mailbox);
});

afterAll(async () => {
  agent?.close();
  await proxy?.close();
});

/** The sequence numbers of `folder`'s \Seen messages, read from Dovecot directly. */
async function seen(folder: string): Promise<number[]> {
  const client = await connectImap(mailbox);
  try {
    await client.mailboxOpen(folder, { readOnly: true });
    const out: number[] = [];
    for await (const m of client.fetch("1:*", { flags: true })) if (m.flags?.has("\\Seen")) out.push(m.seq);
    return out;
  } finally {
    await client.logout();
  }
}

test("with mail:flag, each item that sets \\Seen writes a mail:flag row first, then sets it", async () => {
  expect(statusOf(await agent.command("s", "SELECT INBOX"), "s")).toStartWith("s OK [READ-WRITE]");
  await newRows();
  const cases: [string, number][] = [
    ["FETCH 1 (BODY[])", 1],
    ["FETCH 2 (RFC822)", 2],
    ["FETCH 3 (RFC822.TEXT)", 3],
    ["FETCH 4 (BODY[HEADER])", 4],
    ["FETCH 5 (BINARY[1])", 5],
    ["UID FETCH 6 (BODY[TEXT]<0.10>)", 6],
  ];
  for (const [command, n] of cases) {
    const reply = await agent.command("f", command);
    expect(statusOf(reply, "f")).toStartWith("f OK");
    expect(reply).toContain("\\Seen");
    expect(await seen("INBOX")).toContain(n);
    const rows = await newRows();
    expect(rows.map((r) => [r.command, r.operation, r.decision, r.target, r.count])).toEqual([
      [command.startsWith("UID") ? "UID FETCH" : "FETCH", "mail:flag", "allow", "\\Seen", 1],
      [command.startsWith("UID") ? "UID FETCH" : "FETCH", "mail:read", "allow", null, 1],
    ]);
    expect(rows[0]!.rule).toBe("inbox: read and flag");
  }
});

test("items that do not set \\Seen write no mail:flag row and leave it unset", async () => {
  await agent.command("s", "SELECT INBOX");
  await newRows();
  const reply = await agent.command(
    "f",
    "FETCH 7 (BODY.PEEK[] BODY.PEEK[HEADER.FIELDS (SUBJECT)] RFC822.HEADER BINARY.PEEK[1] BINARY.SIZE[1] FLAGS)",
  );
  expect(statusOf(reply, "f")).toStartWith("f OK");
  expect(await seen("INBOX")).not.toContain(7);
  expect((await newRows()).map((r) => r.operation)).toEqual(["mail:read"]);
});

test("when the mail:flag row cannot be written: NO [UNAVAILABLE], nothing sent, \\Seen stays unset", async () => {
  await agent.command("s", "SELECT INBOX");
  await newRows();
  refuseDurableOf = "mail:flag";
  expect(await agent.command("f", "FETCH 8 (BODY[])")).toMatch(/^f NO \[UNAVAILABLE\] [^\r\n]*\r\n$/);
  expect(await seen("INBOX")).not.toContain(8);
  expect((await newRows()).filter((r) => r.decision === "allow")).toEqual([]);
  // The next one goes through.
  expect(statusOf(await agent.command("g", "FETCH 8 (BODY[])"), "g")).toStartWith("g OK");
  expect(await seen("INBOX")).toContain(8);
});

test("without mail:flag the body is fetched with PEEK: no flag row, \\Seen unset", async () => {
  // Archive is opened read-write upstream (the agent may expunge there): PEEK alone keeps \Seen unset.
  expect(statusOf(await agent.command("s", "SELECT Archive"), "s")).toStartWith("s OK [READ-WRITE]");
  await newRows();
  const reply = await agent.command("f", "FETCH 1:3 (BODY[] RFC822 BINARY[1])");
  expect(statusOf(reply, "f")).toStartWith("f OK");
  expect(reply).not.toContain("\\Seen");
  expect(await seen("Archive")).toEqual([]);
  const rows = await newRows();
  expect(rows.map((r) => r.operation)).toEqual(["mail:read"]);
  expect(rows[0]!.reason).toEndWith("bodies fetched with PEEK");
});
