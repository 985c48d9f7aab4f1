/**
 * Quotas end to end (docs/quotas.md) through the real `mailgator serve` process, against Postfix and Dovecot:
 * N sends pass and the (N+1)th gets 452 4.7.1 with nothing reaching the sink; a restart keeps the count;
 * recipients_per_message at the limit and one past it (the message then refused as a whole, uncharged);
 * reads_per_minute answers NO [LIMIT] on the (N+1)th fetched
 * message; `explain` shows the use, read from the state database.
 */
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import nodemailer from "nodemailer";
import { stopServed } from "../e2e/serve-child.ts";
import {
  createMailbox,
  proxyListeners,
  sinkMessages,
  sinkRecipients,
  type TestMailbox,
  uniqueToken,
} from "../fixtures/index.ts";
import { RawImap } from "../imap/helpers.ts";

setDefaultTimeout(90_000);

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");
const SENDS_PER_HOUR = 3;
const RECIPIENTS_PER_MESSAGE = 2;
const READS_PER_MINUTE = 3;

interface Served {
  readonly proc: ReturnType<typeof Bun.spawn>;
  readonly logs: () => string;
  port(name: "IMAP" | "SMTP"): Promise<number>;
}

function serve(config: string): Served {
  const proc = Bun.spawn([process.execPath, MAIN, "serve", "-c", config, "--log-format", "json"], {
    stderr: "pipe",
    stdout: "pipe",
  });
  let text = "";
  const reader = (proc.stderr as ReadableStream<Uint8Array>).getReader();
  void (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      text += new TextDecoder().decode(value);
    }
  })();
  return {
    proc,
    logs: () => text,
    async port(name) {
      const re = new RegExp(`${name} proxy listening on 127\\.0\\.0\\.1:(\\d+)`);
      for (let i = 0; i < 300; i++) {
        const m = re.exec(text);
        if (m) return Number(m[1]);
        if (proc.exitCode !== null) break;
        await Bun.sleep(50);
      }
      throw new Error(`serve did not report the ${name} port:\n${text}`);
    },
  };
}

async function stop(served: Served): Promise<void> {
  await stopServed(served);
}

let dir: string;
let config: string;
let mailbox: TestMailbox;
let served: Served;

beforeAll(async () => {
  mailbox = await createMailbox({ seed: { folders: { INBOX: 5 } } });
  dir = mkdtempSync(join(tmpdir(), "mg-quotas-"));
  config = join(dir, "mailgator.toml");
  writeFileSync(
    config,
    `${proxyListeners()}identities = ["me@corp.test"]

[[rules]]
name = "everything"
action = "allow"

[[quotas]]
name = "sends"
sends_per_hour = ${SENDS_PER_HOUR}
recipients_per_message = ${RECIPIENTS_PER_MESSAGE}

[[quotas]]
name = "reads"
agents = ["${mailbox.user}"]
reads_per_minute = ${READS_PER_MINUTE}
`,
  );
  served = serve(config);
});

afterAll(async () => {
  if (served.proc.exitCode === null) await stop(served);
  rmSync(dir, { recursive: true, force: true });
});

function transport(port: number) {
  return nodemailer.createTransport({
    host: "127.0.0.1",
    port,
    secure: false,
    ignoreTLS: true,
    auth: { user: mailbox.user, pass: mailbox.password },
  });
}

function explainJson(agent: string | null): { quotas: { quota: string; limits: { limit: string; used: number }[] }[] } {
  const args = ["explain", "-c", config, "--op", "send", "--to", "x@corp.test", "--json"];
  if (agent !== null) args.push("--agent", agent);
  const r = Bun.spawnSync([process.execPath, MAIN, ...args]);
  expect(r.exitCode).toBe(0);
  return JSON.parse(r.stdout.toString().trim());
}

function sendsUsed(agent: string): number | undefined {
  const q = explainJson(agent).quotas.find((x) => x.quota === "sends");
  return q?.limits.find((l) => l.limit === "sends_per_hour")?.used;
}

test("recipients_per_message: one past it 452 4.7.1 at RCPT and the message refused at DATA, uncharged", async () => {
  const port = await served.port("SMTP");
  const token = uniqueToken("qrcpt");
  const t = transport(port);
  const over = [`${token}-a@corp.test`, `${token}-b@corp.test`, `${token}-c@corp.test`];
  const refused = await t
    .sendMail({ from: "me@corp.test", to: over, subject: `over ${token}`, text: "three recipients, two allowed" })
    .catch((e: Error) => e);
  // All or nothing (docs/smtp.md): the third recipient's 452 refuses the message at DATA, for the other two too.
  expect(refused).toBeInstanceOf(Error);
  expect(String((refused as { response?: string }).response)).toStartWith(
    "554 5.5.3 Message refused: 1 recipient(s) refused at RCPT (more than 2 recipients); nothing was sent",
  );
  // Not charged: the refused message is no send of the hour.
  expect(sendsUsed(mailbox.user)).toBe(0);
  // At the limit: accepted and delivered to both, the first send of the hour.
  const info = await t.sendMail({ from: "me@corp.test", to: over.slice(0, 2), subject: token, text: "two" });
  t.close();
  expect(info.accepted).toEqual(over.slice(0, 2));
  expect(await sinkRecipients(token, { count: 2 })).toEqual(over.slice(0, 2));
  expect(sinkMessages(`over ${token}`)).toEqual([]);
  expect(sendsUsed(mailbox.user)).toBe(1);
});

test("sends_per_hour: the sends up to the limit go, the next gets 452 4.7.1 and never reaches Postfix", async () => {
  const port = await served.port("SMTP");
  const t = transport(port);
  // The message of the previous test was the first send of the hour.
  for (let i = 2; i <= SENDS_PER_HOUR; i++) {
    const token = uniqueToken(`qsend${i}`);
    await t.sendMail({ from: "me@corp.test", to: `${token}@corp.test`, subject: token, text: `send ${i}` });
    expect(await sinkRecipients(token)).toEqual([`${token}@corp.test`]);
  }
  expect(sendsUsed(mailbox.user)).toBe(SENDS_PER_HOUR);
  const over = uniqueToken("qover");
  const refused = await t
    .sendMail({ from: "me@corp.test", to: `${over}@corp.test`, subject: over, text: "one too many" })
    .catch((e: Error) => e);
  t.close();
  expect(String(refused)).toContain("452 4.7.1");
  expect(String(refused)).toContain('Quota "sends" exceeded: sends_per_hour 3 (used 3); resets at');
  await Bun.sleep(1500);
  expect(sinkMessages(over)).toEqual([]);
  // explain for the login: the use; for nobody (no login): nothing used.
  expect(sendsUsed(mailbox.user)).toBe(SENDS_PER_HOUR);
  expect(sendsUsed("someone-else@corp.test")).toBe(0);
  const text = Bun.spawnSync([
    process.execPath,
    MAIN,
    "explain",
    "-c",
    config,
    "--op",
    "send",
    "--to",
    "x@corp.test",
    "--agent",
    mailbox.user,
  ]);
  expect(text.stdout.toString()).toContain(
    `quota "sends" (every client): sends_per_hour ${SENDS_PER_HOUR}/${SENDS_PER_HOUR} used, recipients_per_message 2`,
  );
});

test("a restart of serve does not reset the count; the state database is 0600", async () => {
  await stop(served);
  served = serve(config);
  const port = await served.port("SMTP");
  const over = uniqueToken("qrestart");
  const t = transport(port);
  const refused = await t
    .sendMail({ from: "me@corp.test", to: `${over}@corp.test`, subject: over, text: "after the restart" })
    .catch((e: Error) => e);
  t.close();
  expect(String(refused)).toContain("452 4.7.1");
  await Bun.sleep(1500);
  expect(sinkMessages(over)).toEqual([]);
  expect(statSync(join(dir, "mailgator-state.db")).mode & 0o777).toBe(0o600);

  const audit = Bun.spawnSync([process.execPath, MAIN, "audit", "-c", config, "--json", "--limit", "1000"]);
  const rows = audit.stdout
    .toString()
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as { decision: string; reason: string; command: string });
  const denies = rows.filter((r) => r.decision === "deny" && r.reason.includes('quota "sends" exceeded'));
  expect(denies.map((r) => r.command).sort()).toEqual(["DATA", "DATA", "RCPT TO"]);
});

test("reads_per_minute: the (N+1)th fetched message gets NO [LIMIT]; listings are not reads", async () => {
  const port = await served.port("IMAP");
  const imap = await RawImap.open(port);
  expect(await imap.command("a1", `LOGIN "${mailbox.user}" "${mailbox.password}"`)).toContain("a1 OK");
  expect(await imap.command("a2", "SELECT INBOX")).toContain("a2 OK");
  // ENVELOPE and FLAGS of every message: a listing, not counted.
  expect(await imap.command("a3", "FETCH 1:5 (FLAGS ENVELOPE)")).toContain("a3 OK");
  for (let i = 1; i <= READS_PER_MINUTE; i++) {
    const r = await imap.command(`b${i}`, `FETCH ${i} (BODY.PEEK[HEADER])`);
    expect(r).toContain(`b${i} OK`);
  }
  const over = await imap.command("c1", `FETCH ${READS_PER_MINUTE + 1} (BODY.PEEK[])`);
  expect(over).toMatch(/^c1 NO \[LIMIT\] Quota "reads" exceeded: reads_per_minute 3 \(used 3\); resets at \S+Z; /m);
  expect(over).not.toContain("FETCH (");
  // An APPEND whose CATENATE parts read a message is refused the same way, and says that nothing was appended.
  const count = (r: string) => Number(/\* STATUS \S+ \(MESSAGES (\d+)\)/.exec(r)![1]);
  const before = count(await imap.command("c2", "STATUS Drafts (MESSAGES)"));
  const catenate = await imap.command("c3", 'APPEND Drafts CATENATE (URL "/INBOX/;UID=1/;SECTION=TEXT")');
  expect(catenate).toMatch(/^c3 NO \[LIMIT\] Quota "reads" exceeded: .*; nothing was appended\r$/m);
  expect(count(await imap.command("c4", "STATUS Drafts (MESSAGES)"))).toBe(before);
  await imap.command("z", "LOGOUT");
});
