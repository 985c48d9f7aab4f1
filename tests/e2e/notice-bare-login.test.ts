/**
 * An approver's mailbox that an agent logs in to under a name without `@` (docs/approvals.md "Notices"): Dovecot
 * takes the login `boss-…` for the mailbox of `boss-…@mailgator.test`, as a server with a default domain or a
 * directory's account names does. A vault agent "triage" reads that mailbox through `mailgator serve`; another agent's
 * send is held and its approver is that address. The notice Postfix delivers there, which triage reads through the
 * IMAP proxy, must not carry the approval link: the link is all it takes to approve.
 */

import { expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ImapFlow } from "imapflow";
import nodemailer from "nodemailer";
import { freePort } from "../../scripts/upstreams/ports.ts";
import { addLogin } from "../../scripts/upstreams/users.ts";
import { generateToken } from "../../src/vault/token.ts";
import { createMailbox, heldId, imapListener, smtpListener, uniqueToken, upstreams } from "../fixtures/index.ts";
import { tempRoot } from "../fixtures/temp.ts";
import { noticesIn, waitFor } from "../smtp/notice-reader.ts";
import { accountToml, agentToml, serveConfig } from "./config.ts";
import { serveChild } from "./serve-child.ts";

const TMP = tempRoot("mg-bare-login-");

setDefaultTimeout(60_000);

test("an agent logged in as boss reads boss@'s mailbox: the notice there has no link, and says why", async () => {
  const up = upstreams();
  const [alice, bob] = [up.users[0]!, up.users[1]!];
  const boss = await createMailbox({ name: "bare-boss" });
  const login = boss.address.slice(0, boss.address.indexOf("@"));
  addLogin(up, login, boss.password, boss);
  const admin = await freePort();
  const [botToken, triageToken] = [generateToken(), generateToken()];
  const file = join(mkdtempSync(join(TMP, "cfg-")), "mailgator.toml");
  const rest = `
${agentToml("bot", botToken, "main")}
${agentToml("triage", triageToken, "inbox")}
${accountToml("main", alice)}
${accountToml("inbox", { user: login, password: boss.password })}
${accountToml("notices", bob)}
[[rules]]
name = "triage reads"
agents = ["triage"]
action = "allow"
operations = ["read"]

[[rules]]
name = "every send needs a manager"
action = "ask"
operations = ["send"]
ask_groups = ["managers"]
`;
  const listeners = `${imapListener()}\n${smtpListener()}`;
  const approvals = { notifyAccount: "notices", managers: [boss.address] };
  writeFileSync(file, serveConfig({ listeners, adminPort: admin, approvals }, rest));
  const served = serveChild(file);
  try {
    await served.waitForLog(/admin listening/);
    // serve says which approver gets no link, and why.
    expect(served.logs()).toContain(`${boss.address} is the mailbox of agent "triage"'s account "inbox"`);
    const transport = nodemailer.createTransport({
      host: "127.0.0.1",
      port: await served.port("SMTP"),
      secure: false,
      ignoreTLS: true,
      auth: { user: "bot", pass: botToken },
    });
    const tag = uniqueToken("bare");
    let id: string;
    try {
      const info = await transport.sendMail({
        from: alice.user,
        to: `${tag}@outside.example`,
        subject: tag,
        text: `Hello ${tag}\n`,
      });
      id = heldId(info.response);
    } finally {
      transport.close();
    }
    // Delivered into boss's mailbox by Postfix.
    const [delivered] = await waitFor("notices", () => noticesIn(boss.maildir, id), 1);
    expect(delivered!.body).not.toContain("?t=");

    // What triage reads of it through the IMAP proxy.
    const imap = new ImapFlow({
      host: "127.0.0.1",
      port: await served.port("IMAP"),
      secure: false,
      auth: { user: "triage", pass: triageToken },
      logger: false,
    });
    await imap.connect();
    try {
      const lock = await imap.getMailboxLock("INBOX");
      try {
        const texts: string[] = [];
        for await (const m of imap.fetch("1:*", { source: true }))
          texts.push(m.source?.toString("latin1").replace(/\r\n/g, "\n") ?? "");
        const notice = texts.find((t) => t.includes("\nAuto-Submitted: auto-generated\n"));
        expect(notice).toBeDefined();
        const body = Buffer.from(notice!.slice(notice!.indexOf("\n\n") + 2), "base64").toString("utf8");
        expect(body).toContain(`Held as:     ${id}`);
        expect(body).not.toContain(`/approvals/${id}`);
        expect(body).not.toContain("?t=");
        expect(body).toContain(
          "No link: this address is the mailbox of agent triage's account, which that agent can read.",
        );
      } finally {
        lock.release();
      }
    } finally {
      await imap.logout();
    }
  } finally {
    served.proc.kill("SIGTERM");
    await served.proc.exited;
  }
});
