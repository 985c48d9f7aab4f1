/**
 * isync's `mbsync` (Debian's isync, installed for the tests by scripts/test.ts) syncing a local Maildir with the IMAP
 * proxy in front of the real Dovecot, as an agent's mail setup would. Pulling a filtered INBOX lands exactly its
 * visible messages, and a later sync only the new visible one; a flag set and a message deleted locally reach
 * Dovecot where the rules allow them, with their rows; where they do not (a read-only INBOX, a folder without
 * `mail:delete`) mbsync reports the refusal, Dovecot is unchanged and the refusals have their deny rows. What Dovecot
 * holds is read directly, never through the proxy; what must be visible comes from the seeder's manifest.
 */
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectImap, createMailbox, type SeededMessage, type TestMailbox } from "../fixtures/index.ts";
import { type Expected, expected, rawMessage } from "../imap/filtered-fixture.ts";
import { startTestProxy, type TestProxy } from "../imap/helpers.ts";

setDefaultTimeout(60_000);

const MBSYNC = "/usr/bin/mbsync";

/**
 * INBOX filtered by sender and read-only (the seed rule), Archive the agent's to read, flag and delete in, Junk to
 * read and flag in but not to delete from, everything else denied.
 */
const RULES = `
[[rules]]
name = "filtered inbox"
folders = ["INBOX"]
from = "notifications@*"
action = "allow"
operations = ["read"]

[[rules]]
name = "archive"
folders = ["Archive"]
action = "allow"
operations = ["read", "mail:flag", "mail:delete"]

[[rules]]
name = "junk"
folders = ["Junk"]
action = "allow"
operations = ["read", "mail:flag"]

[[rules]]
name = "nothing else"
action = "deny"
`;

let mailbox: TestMailbox;
let proxy: TestProxy;
let inbox: Expected;
const dirs: string[] = [];

beforeAll(async () => {
  if (!existsSync(MBSYNC))
    throw new Error(
      "mbsync is missing: npm test installs it; or sudo apt-get install -y --no-install-recommends isync",
    );
  mailbox = await createMailbox({ seed: { folders: { INBOX: 40, Archive: 6, Junk: 4 }, seed: 11 } });
  inbox = expected(mailbox.manifest.folders["INBOX"]!);
  proxy = await startTestProxy({ rules: RULES });
});

afterAll(async () => {
  await proxy?.close();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** A local setup of its own: the mbsyncrc's folder and the Maildir store below it. */
interface Local {
  readonly dir: string;
  readonly rc: string;
  /** The Maildir folder the far `folder` syncs to. */
  folder(name: string): string;
}

/**
 * An mbsyncrc for the proxy (plain on loopback, LOGIN, as the IMAP tests' listener is) and a Maildir store in a new
 * folder: one channel `box` for the far `folder`, with `sync` (mbsync's `Sync`) and expunging on both sides.
 */
function local(folder: string, sync: string): Local {
  const dir = mkdtempSync(join(tmpdir(), "mg-mbsync-"));
  dirs.push(dir);
  const rc = join(dir, "mbsyncrc");
  const mail = join(dir, "mail");
  mkdirSync(mail);
  writeFileSync(
    rc,
    `IMAPAccount proxy
Host 127.0.0.1
Port ${proxy.port}
User ${mailbox.user}
Pass ${mailbox.password}
SSLType None
AuthMechs LOGIN
Timeout 20
PipelineDepth 1

IMAPStore far
Account proxy

MaildirStore near
Path ${mail}/
Inbox ${mail}/INBOX
SubFolders Verbatim

Channel box
Far :far:
Near :near:
Patterns ${folder}
Create Near
Sync ${sync}
Expunge Both
SyncState *
`,
    { mode: 0o600 },
  );
  return { dir, rc, folder: (name) => join(mail, name) };
}

interface Run {
  readonly exitCode: number;
  readonly output: string;
}

/** Runs mbsync on the channel in a child process (the proxy lives in this one, so it must not be blocked). */
async function mbsync(setup: Local): Promise<Run> {
  const child = Bun.spawn([MBSYNC, "-c", setup.rc, "box"], {
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, HOME: setup.dir },
  });
  const [stdout, stderr, exitCode] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ]);
  return { exitCode, output: `${stdout}${stderr}` };
}

/** A message file of a Maildir folder: its path, its Maildir flags and its whole text. */
interface LocalMessage {
  readonly path: string;
  readonly flags: string;
  readonly text: string;
  readonly messageId: string;
}

function localMessages(folder: string): LocalMessage[] {
  const out: LocalMessage[] = [];
  for (const sub of ["new", "cur"]) {
    const path = join(folder, sub);
    if (!existsSync(path)) continue;
    for (const name of readdirSync(path)) {
      const text = readFileSync(join(path, name), "latin1");
      const messageId = /^Message-ID:\s*(\S+)/im.exec(text)?.[1] ?? "";
      out.push({ path: join(path, name), flags: /:2,([A-Z]*)$/.exec(name)?.[1] ?? "", text, messageId });
    }
  }
  return out;
}

/** Renames a Maildir message file to carry `flag` too (Maildir's info: flags in ASCII order). */
function addLocalFlag(message: LocalMessage, flag: string): void {
  const flags = [...new Set([...message.flags, flag])].sort().join("");
  const base = message.path.replace(/:2,[A-Z]*$/, "");
  renameSync(message.path, `${base.replace(/\/new\//, "/cur/")}:2,${flags}`);
}

function ids(messages: readonly { messageId: string }[]): string[] {
  return messages.map((m) => m.messageId).sort();
}

/** Dovecot's own view of `folder`, read directly: Message-ID and flags of each message. */
async function atDovecot(folder: string): Promise<Map<string, string[]>> {
  const client = await connectImap(mailbox);
  try {
    await client.mailboxOpen(folder, { readOnly: true });
    const out = new Map<string, string[]>();
    for await (const m of client.fetch("1:*", { uid: true, flags: true, envelope: true }))
      out.set(m.envelope?.messageId ?? `uid ${m.uid}`, [...(m.flags ?? [])].filter((f) => f !== "\\Recent").sort());
    return out;
  } finally {
    await client.logout();
  }
}

/** Asserts that nothing of a hidden message reached the Maildir files: no Message-ID, no subject of its own. */
function expectNoHidden(
  messages: readonly LocalMessage[],
  hidden: readonly Pick<SeededMessage, "messageId" | "subject">[],
) {
  const all = messages.map((m) => m.text).join("\n");
  const visibleSubjects = new Set(messages.map((m) => /^Subject: (.*)$/im.exec(m.text)?.[1]?.trim()));
  for (const m of hidden) {
    expect(all.includes(m.messageId)).toBe(false);
    if (!visibleSubjects.has(m.subject)) expect(all.includes(m.subject)).toBe(false);
  }
}

test("pulling a filtered INBOX lands exactly its visible messages; a later sync only the new visible one", async () => {
  expect(inbox.visible.length).toBeGreaterThan(2);
  expect(inbox.hidden.length).toBeGreaterThan(2);
  const setup = local("INBOX", "Pull");
  const first = await mbsync(setup);
  expect(first.output).not.toContain("error");
  expect(first.exitCode).toBe(0);
  const pulled = localMessages(setup.folder("INBOX"));
  expect(ids(pulled)).toEqual(ids(inbox.visible));
  expectNoHidden(pulled, inbox.hidden);

  // Another session, straight at Dovecot, delivers one hidden and one visible message.
  const hiddenNew = { messageId: `<mbsync-hidden-${mailbox.token}@filtered.test>`, subject: `Hidden ${mailbox.token}` };
  const visibleNew = {
    messageId: `<mbsync-visible-${mailbox.token}@filtered.test>`,
    subject: `Shown ${mailbox.token}`,
  };
  const other = await connectImap(mailbox);
  await other.append(
    "INBOX",
    rawMessage("stranger@elsewhere.test", hiddenNew.subject, `mbsync-hidden-${mailbox.token}`),
  );
  await other.append(
    "INBOX",
    rawMessage("notifications@shop.test", visibleNew.subject, `mbsync-visible-${mailbox.token}`),
  );
  await other.logout();

  const second = await mbsync(setup);
  expect(second.exitCode).toBe(0);
  const after = localMessages(setup.folder("INBOX"));
  expect(ids(after)).toEqual(ids([...inbox.visible, visibleNew]));
  expectNoHidden(after, [...inbox.hidden, hiddenNew]);
  // Both syncs only read: no write reached the rules, and no refusal was needed.
  const rows = (await proxy.rows()).filter((r) => r.agent === mailbox.user && r.folder === "INBOX");
  expect(rows.some((r) => r.decision === "allow" && r.operation === "mail:read")).toBe(true);
  expect(rows.filter((r) => r.decision !== "allow")).toEqual([]);
});

/** The message of `messages` first by Message-ID whose local flags lack `flag`. */
function firstWithout(messages: readonly LocalMessage[], flag: string): LocalMessage {
  const found = [...messages]
    .sort((a, b) => a.messageId.localeCompare(b.messageId))
    .find((m) => !m.flags.includes(flag));
  if (found === undefined) throw new Error(`no message without ${flag}`);
  return found;
}

/** The rows of this test's user since `since` that are about `operation`. */
async function rowsOf(operation: string, since: number) {
  return (await proxy.rows()).filter((r) => r.agent === mailbox.user && r.time >= since && r.operation === operation);
}

test("a flag set and a message deleted locally reach Dovecot where the rules allow them, with their rows", async () => {
  const seeded = mailbox.manifest.folders["Archive"]!;
  const setup = local("Archive", "All");
  expect((await mbsync(setup)).exitCode).toBe(0);
  const pulled = localMessages(setup.folder("Archive"));
  expect(ids(pulled)).toEqual(ids(seeded));
  const before = await atDovecot("Archive");

  const flagged = firstWithout(pulled, "F");
  const deleted = pulled.find((m) => m !== flagged)!;
  expect(before.get(flagged.messageId)).not.toContain("\\Flagged");
  addLocalFlag(flagged, "F");
  unlinkSync(deleted.path);
  const since = Date.now();
  const run = await mbsync(setup);
  expect(run.output).not.toContain("error");
  expect(run.exitCode).toBe(0);

  // Dovecot, read directly: the flag is set, the deleted message expunged, the others as they were.
  const after = await atDovecot("Archive");
  const expectedAfter = new Map(before);
  expectedAfter.delete(deleted.messageId);
  expectedAfter.set(flagged.messageId, [...before.get(flagged.messageId)!, "\\Flagged"].sort());
  expect(after).toEqual(expectedAfter);

  const flags = await rowsOf("mail:flag", since);
  expect(flags.map((r) => [r.command, r.folder, r.target, r.decision, r.rule, r.count])).toEqual([
    ["UID STORE", "Archive", "\\Flagged", "allow", "archive", 1],
  ]);
  const deletes = await rowsOf("mail:delete", since);
  expect(deletes.filter((r) => r.decision !== "allow")).toEqual([]);
  expect(deletes.map((r) => [r.command, r.folder, r.target, r.rule, r.count])).toContainEqual([
    "UID STORE",
    "Archive",
    "\\Deleted",
    "archive",
    1,
  ]);
  // mbsync expunges with CLOSE, which the proxy runs as a UID EXPUNGE of the visible \Deleted messages.
  expect(deletes.some((r) => r.command === "CLOSE" && r.folder === "Archive" && r.rule === "archive")).toBe(true);
});

test("a flag in a read-only INBOX, a deletion without mail:delete: reported by mbsync, Dovecot unchanged", async () => {
  const inboxSetup = local("INBOX", "All");
  expect((await mbsync(inboxSetup)).exitCode).toBe(0);
  const junkSetup = local("Junk", "All");
  expect((await mbsync(junkSetup)).exitCode).toBe(0);
  const inboxBefore = await atDovecot("INBOX");
  const junkBefore = await atDovecot("Junk");

  const shown = firstWithout(localMessages(inboxSetup.folder("INBOX")), "F");
  addLocalFlag(shown, "F");
  const junk = localMessages(junkSetup.folder("Junk"));
  unlinkSync(junk[0]!.path);
  const since = Date.now();
  // mbsync 1.4 reports a refused STORE and goes on: its exit status stays 0 (checked with isync 1.4.4), so the
  // refusal is read in its output, and the proof is Dovecot's state and the rows.
  const inboxRun = await mbsync(inboxSetup);
  expect(inboxRun.output).toContain("returned an error: NO [NOPERM] Not permitted: mail:flag in this folder");
  const junkRun = await mbsync(junkSetup);
  expect(junkRun.output).toContain("returned an error: NO [NOPERM] Not permitted: mail:delete in this folder");

  expect(await atDovecot("INBOX")).toEqual(inboxBefore);
  expect(await atDovecot("Junk")).toEqual(junkBefore);
  expect(inboxBefore.get(shown.messageId)).not.toContain("\\Flagged");
  expect(junkBefore.has(junk[0]!.messageId)).toBe(true);

  const flags = await rowsOf("mail:flag", since);
  expect(flags.map((r) => [r.command, r.folder, r.target, r.decision, r.rule])).toEqual([
    ["UID STORE", "INBOX", "1 messages", "deny", "nothing else"],
  ]);
  const deletes = await rowsOf("mail:delete", since);
  expect(deletes.filter((r) => r.decision !== "deny")).toEqual([]);
  expect(deletes.map((r) => [r.command, r.folder, r.target, r.rule])).toContainEqual([
    "UID STORE",
    "Junk",
    "1 messages",
    "nothing else",
  ]);
});
