/**
 * Pass-through quotas count the upstream login without case (docs/quotas.md "Who is counted"), through the real
 * `mailgator serve` against Postfix and Dovecot, which accept a login in any case: the sends and the fetches of
 * `user`, `USER` and `User` fill one window, and an `agents` entry written in yet another case applies to all three.
 * Each entry names the login in a case none of the clients types, so an exact match would count none of them.
 */
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import nodemailer from "nodemailer";
import { runCli, type Served, serveChild, stopServed } from "../e2e/serve-child.ts";
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

let dir: string;
let config: string;
let mailbox: TestMailbox;
let served: Served;

/** The login in the cases the clients type, and the one the config's `agents` entries use. */
function cases(user: string): { typed: string[]; configured: string } {
  const [local, domain] = user.split("@") as [string, string];
  const title = (s: string) => s.charAt(0).toUpperCase() + s.slice(1);
  return {
    typed: [user, user.toUpperCase(), `${title(local)}@${title(domain)}`],
    configured: `${local.toUpperCase()}@${domain}`,
  };
}

beforeAll(async () => {
  mailbox = await createMailbox({ seed: { folders: { INBOX: 4 } } });
  const { configured } = cases(mailbox.user);
  dir = mkdtempSync(join(tmpdir(), "mg-quota-case-"));
  config = join(dir, "mailgator.toml");
  writeFileSync(
    config,
    `${proxyListeners()}
[audit]
path = "${join(dir, "audit.db")}"

[[rules]]
name = "everything"
action = "allow"

[[quotas]]
name = "Sends"
agents = ["${configured}"]
sends_per_hour = 2

[[quotas]]
name = "Reads"
agents = ["${configured}"]
reads_per_minute = 2
`,
  );
  served = serveChild(config);
});

afterAll(async () => {
  await stopServed(served);
  rmSync(dir, { recursive: true, force: true });
});

function send(port: number, user: string, token: string): Promise<unknown> {
  const t = nodemailer.createTransport({
    host: "127.0.0.1",
    port,
    secure: false,
    ignoreTLS: true,
    auth: { user, pass: mailbox.password },
  });
  return t
    .sendMail({ from: mailbox.address, to: `${token}@corp.test`, subject: token, text: `sent as ${user}` })
    .then(
      (info) => info.response,
      (e: Error) => e,
    )
    .finally(() => t.close());
}

test("SMTP: a login in three cases is one client: the third send is over the entry's sends_per_hour", async () => {
  const port = await served.port("SMTP");
  const [first, second, third] = cases(mailbox.user).typed as [string, string, string];
  for (const [i, user] of [first, second].entries()) {
    const token = uniqueToken(`qcase${i}`);
    expect(String(await send(port, user, token))).toStartWith("250 ");
    expect(await sinkRecipients(token)).toEqual([`${token}@corp.test`]);
  }
  const over = uniqueToken("qcaseover");
  const refused = String(await send(port, third, over));
  expect(refused).toContain("452 4.7.1");
  expect(refused).toContain('Quota "Sends" exceeded: sends_per_hour 2 (used 2)');
  await Bun.sleep(1500);
  expect(sinkMessages(over)).toEqual([]);
  // explain --agent names the login in any case, and reads the same window.
  for (const user of [first, third]) {
    const r = runCli(["explain", "-c", config, "--op", "send", "--to", "x@corp.test", "--agent", user, "--json"]);
    expect(r.exitCode).toBe(0);
    const answer = JSON.parse(r.stdout.trim()) as { quotas: { quota: string; limits: { used: number }[] }[] };
    expect(answer.quotas.find((q) => q.quota === "Sends")?.limits[0]?.used).toBe(2);
  }
});

test("IMAP: fetches under a login in three cases fill one reads_per_minute window", async () => {
  const port = await served.port("IMAP");
  const typed = cases(mailbox.user).typed;
  const replies: string[] = [];
  for (const [i, user] of typed.entries()) {
    const imap = await RawImap.login(port, { user, password: mailbox.password });
    expect(await imap.command("a1", "EXAMINE INBOX")).toContain("a1 OK");
    replies.push(await imap.command("a2", `FETCH ${i + 1} (BODY.PEEK[])`));
    await imap.command("z", "LOGOUT");
  }
  expect(replies[0]).toContain("a2 OK");
  expect(replies[1]).toContain("a2 OK");
  expect(replies[2]).toMatch(/^a2 NO \[LIMIT\] Quota "Reads" exceeded: reads_per_minute 2 \(used 2\); /m);
  expect(replies[2]).not.toContain("FETCH (");
});
