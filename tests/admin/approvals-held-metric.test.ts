/**
 * `mailgator_approvals_held` (docs/operations.md "Health and metrics") counts the messages held for approval at the
 * scrape: a send an `ask` rule holds is counted by the next scrape, and a decision (here `mailgator approvals deny`,
 * another process) takes it off, with a real `serve`, the test Postfix and the real CLI.
 */
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import nodemailer from "nodemailer";
import { runCli, serveChild } from "../e2e/serve-child.ts";
import { createMailbox, smtpListener, uniqueToken } from "../fixtures/index.ts";
import { tempRoot } from "../fixtures/temp.ts";

const TMP = tempRoot("mg-held-metric-");
setDefaultTimeout(60_000);

const children: ReturnType<typeof serveChild>[] = [];
afterAll(() => {
  for (const c of children) if (c.proc.exitCode === null) c.proc.kill("SIGKILL");
});

async function held(admin: string): Promise<number> {
  const text = await (await fetch(`${admin}/metrics`)).text();
  const m = /^mailgator_approvals_held (\d+)$/m.exec(text);
  if (m === null) throw new Error(`no mailgator_approvals_held in:\n${text}`);
  return Number(m[1]);
}

test("a held send is counted at the next scrape, and no longer once it is denied", async () => {
  const mailbox = await createMailbox({ name: "held-metric" });
  const dir = mkdtempSync(join(TMP, "mg-"));
  const file = join(dir, "mailgator.toml");
  writeFileSync(
    file,
    `${smtpListener()}
[audit]
path = "${join(dir, "audit.db")}"

[admin]
listen_addr = "127.0.0.1:0"

[approvals.groups.managers]
recipients = ["boss@corp.test"]

[[rules]]
name = "outside needs a manager"
action = "ask"
operations = ["send"]
ask_groups = ["managers"]
`,
  );
  const served = serveChild(file);
  children.push(served);
  const smtp = await served.port("SMTP");
  const line = await served.waitForLog(/admin listening on http:\/\/127\.0\.0\.1:\d+/);
  const admin = /(http:\/\/127\.0\.0\.1:\d+)/.exec(line)![1]!;
  expect(await held(admin)).toBe(0);

  const transport = nodemailer.createTransport({
    host: "127.0.0.1",
    port: smtp,
    secure: false,
    ignoreTLS: true,
    auth: { user: mailbox.user, pass: mailbox.password },
  });
  const token = uniqueToken();
  const info = await transport.sendMail({ from: mailbox.user, to: `${token}@example.org`, subject: token, text: "hi" });
  transport.close();
  expect(info.response).toContain("Held for approval");
  expect(await held(admin)).toBe(1);

  const id = /as ([0-9a-f]{32})/.exec(info.response)![1]!;
  const deny = runCli(["approvals", "deny", id, "-c", file]);
  expect(deny.stdout).toContain("denied");
  expect(await held(admin)).toBe(0);

  served.proc.kill("SIGTERM");
  await served.proc.exited;
});
