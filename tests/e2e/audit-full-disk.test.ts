/**
 * The audit log on a full file system (docs/imap.md "Audit before data", docs/audit.md): a small tmpfs holds
 * the log, and a file fills it. IMAP LOGIN is refused and leaves the session unauthenticated (its upstream login
 * closed, counted at Dovecot); SELECT, SEARCH, LIST, FETCH and STATUS answer NO [UNAVAILABLE] with no untagged
 * data; a send gets 451 and nothing reaches Postfix; once the file is removed, all of it works again.
 * Mounting needs root, as `npm test` runs here and in CI.
 */
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync, unlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import nodemailer from "nodemailer";
import { AuditLog, NOT_CARRIED_OUT } from "../../src/audit/index.ts";
import { type Config, parseConfig } from "../../src/config/index.ts";
import { type ImapProxy, startImapProxy } from "../../src/imap/index.ts";
import { compilePolicy } from "../../src/policy/index.ts";
import { type SmtpProxy, startSmtpProxy } from "../../src/smtp/index.ts";
import { fillUp, mountTmpfs, unmountTmpfs } from "../fixtures/full-disk.ts";
import {
  createMailbox,
  imapListener,
  sinkMessages,
  sinkRecipients,
  smtpListener,
  type TestMailbox,
  uniqueToken,
} from "../fixtures/index.ts";
import { dovecotSessions, settlesAt } from "../fixtures/upstream-connections.ts";
import { RawImap } from "../imap/helpers.ts";

setDefaultTimeout(60_000);

/** Room for the log, its -wal and -shm and the spool folder; the rest is filled. */
const TMPFS_SIZE = "4m";

const mount = mkdtempSync(join(tmpdir(), "mg-full-disk-"));
const fill = join(mount, "fill");
let mounted = false;
let audit: AuditLog;
let imap: ImapProxy;
let smtp: SmtpProxy;
let mailbox: TestMailbox;

beforeAll(async () => {
  mountTmpfs(mount, TMPFS_SIZE);
  mounted = true;
  mailbox = await createMailbox({ seed: { folders: { INBOX: 5 } } });
  const toml = `${imapListener("127.0.0.1:0")}
${smtpListener("127.0.0.1:0")}identities = ["me@corp.test"]

[audit]
path = "${join(mount, "audit.db")}"

[[rules]]
name = "everything"
action = "allow"
`;
  const parsed = parseConfig(toml, join(mount, "mailgator.toml"));
  const any = { host: "127.0.0.1", port: 0 };
  const config: Config = {
    ...parsed,
    imap: { ...parsed.imap!, listenAddr: any },
    smtp: { ...parsed.smtp!, listenAddr: any },
  };
  audit = AuditLog.open(config.audit.path, { batchMs: 5, log: () => {} });
  const policy = compilePolicy(config.rules);
  imap = await startImapProxy({ config, policy, audit });
  smtp = await startSmtpProxy({ config, policy, audit });
});

afterAll(async () => {
  await imap?.close();
  await smtp?.close();
  rmSync(fill, { force: true });
  await audit?.close().catch(() => {});
  if (mounted) unmountTmpfs(mount);
  rmSync(mount, { recursive: true, force: true });
});

/** The one line a refused command gets: its tagged NO [UNAVAILABLE], nothing before it. */
function onlyRefusal(tag: string): RegExp {
  return new RegExp(`^${tag} NO \\[UNAVAILABLE\\] [^\\r\\n]*\\r\\n$`);
}

async function send(token: string): Promise<Error | null> {
  const transport = nodemailer.createTransport({
    host: "127.0.0.1",
    port: smtp.address.port,
    secure: false,
    ignoreTLS: true,
    auth: { user: mailbox.user, pass: mailbox.password },
  });
  try {
    await transport.sendMail({ from: "me@corp.test", to: `${token}@corp.test`, subject: token, text: "hello" });
    return null;
  } catch (e) {
    return e as Error;
  } finally {
    transport.close();
  }
}

test("full disk: IMAP and SMTP fail closed, nothing unaudited reaches the agent; all recovers with space", async () => {
  const login = `LOGIN "${mailbox.user}" "${mailbox.password}"`;
  // Agent A is logged in with INBOX selected before the disk fills.
  const a = await RawImap.open(imap.address.port);
  expect(await a.command("a1", login)).toMatch(/^a1 OK /m);
  expect(await a.command("a2", "SELECT INBOX")).toContain("* 5 EXISTS");
  await audit.flush();
  const before = dovecotSessions(mailbox.user);
  expect(before).toBe(1);

  const filled = fillUp(fill);
  console.log(`filled the ${TMPFS_SIZE} tmpfs with ${filled} bytes`);

  // LOGIN: its row cannot be committed. Refused, and the session is still not authenticated.
  const b = await RawImap.open(imap.address.port);
  expect(await b.command("b1", login)).toMatch(onlyRefusal("b1"));
  expect(audit.healthy).toBe(false);
  expect(await b.command("b2", "SELECT INBOX")).toBe("b2 BAD Log in first\r\n");
  // The upstream login it made is closed: Dovecot holds A's session only.
  expect(await settlesAt(() => dovecotSessions(mailbox.user), 1, 5000)).toBe(1);

  // Reads: NO, and not one untagged line before it.
  expect(await a.command("a3", "SEARCH ALL")).toMatch(onlyRefusal("a3"));
  expect(await a.command("a4", "FETCH 1:* (FLAGS ENVELOPE)")).toMatch(onlyRefusal("a4"));
  expect(await a.command("a5", "UID FETCH 1:* (BODY.PEEK[])")).toMatch(onlyRefusal("a5"));
  expect(await a.command("a6", 'LIST "" "*"')).toMatch(onlyRefusal("a6"));
  expect(await a.command("a7", "STATUS INBOX (MESSAGES UNSEEN)")).toMatch(onlyRefusal("a7"));
  expect(await a.command("a8", "SELECT INBOX")).toMatch(onlyRefusal("a8"));
  // A failed SELECT deselects (RFC 3501 §6.3.1).
  expect(await a.command("a9", "FETCH 1 (FLAGS)")).toBe("a9 BAD No mailbox selected\r\n");

  // A send: 451, and nothing reaches Postfix.
  const refusedToken = uniqueToken("full");
  const refused = await send(refusedToken);
  expect(String(refused)).toContain("451");
  expect(String(refused)).toContain("Audit log unavailable");

  // Space returns: the log's retry commits what it kept, and everything works again.
  unlinkSync(fill);
  for (let i = 0; i < 50 && !audit.healthy; i++) await Bun.sleep(100);
  expect(audit.healthy).toBe(true);
  expect(await b.command("b3", login)).toMatch(/^b3 OK /m);
  expect(await b.command("b4", "SELECT INBOX")).toContain("* 5 EXISTS");
  expect(await a.command("a10", "SELECT INBOX")).toContain("* 5 EXISTS");
  expect(await a.command("a11", "SEARCH ALL")).toContain("* SEARCH 1 2 3 4 5\r\n");
  expect(await a.command("a12", "FETCH 1 (FLAGS)")).toMatch(/^\* 1 FETCH \(FLAGS /m);
  expect(await a.command("a13", 'LIST "" "*"')).toContain('* LIST (\\HasNoChildren) "/" INBOX');
  const token = uniqueToken("full");
  expect(await send(token)).toBeNull();
  expect(await sinkRecipients(token)).toEqual([`${token}@corp.test`]);
  // Checked after a later send arrived: the refused one would be there by now.
  expect(sinkMessages(refusedToken)).toEqual([]);

  // The audit log has the reads that were answered, and none of the refused ones.
  await audit.flush();
  const rows = audit.query({ order: "asc", protocol: "imap" });
  const reads = rows.filter((r) => r.decision === "allow").map((r) => r.command);
  expect(reads.filter((c) => c === "SEARCH")).toHaveLength(1);
  expect(reads.filter((c) => c === "FETCH")).toHaveLength(1);
  expect(reads.filter((c) => c === "UID FETCH")).toHaveLength(0);
  expect(reads.filter((c) => c === "STATUS")).toHaveLength(0);
  // A's LOGIN; B's refused one, kept and committed by the retry, saying the login did not happen; B's second one.
  expect(rows.filter((r) => r.command === "LOGIN").map((r) => r.reason)).toEqual([
    "logged in",
    `logged in${NOT_CARRIED_OUT}`,
    "logged in",
  ]);
  await a.command("a14", "LOGOUT");
  await b.command("b5", "LOGOUT");
});
