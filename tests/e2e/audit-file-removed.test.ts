/**
 * `rm audit.db` while `mailgator serve` runs (docs/audit.md "Failure"): SQLite goes on writing the file it opened,
 * now without a name, and its rows are gone when the process ends. The proxy must not carry out a write on the word
 * of such a row: the first commit after the removal fails the log closed, a STORE is answered NO [UNAVAILABLE] and
 * never reaches Dovecot, and the stop says the log could not be written (exit 1).
 */
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectImap, createMailbox, proxyListeners } from "../fixtures/index.ts";
import { lineClient, serveChild } from "./serve-child.ts";

setDefaultTimeout(60_000);

const dir = mkdtempSync(join(tmpdir(), "mg-audit-removed-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test("the audit database removed under serve: writes refused, nothing reaches Dovecot, the stop exits 1", async () => {
  const mailbox = await createMailbox({ seed: { folders: { INBOX: 2 } } });
  const config = join(dir, "mailgator.toml");
  const auditPath = join(dir, "audit.db");
  writeFileSync(
    config,
    `${proxyListeners()}\n[audit]\npath = "${auditPath}"\n\n[[rules]]\nname = "all"\naction = "allow"\n`,
  );
  const served = serveChild(config);
  try {
    const client = await lineClient(tcpConnect(await served.port("IMAP"), "127.0.0.1"));
    await client.waitFor(/^\* OK/);
    client.send(`a LOGIN "${mailbox.user}" "${mailbox.password}"`);
    await client.waitFor(/\r\na OK/);
    client.send("b SELECT INBOX");
    await client.waitFor(/\r\nb OK/);
    rmSync(auditPath);
    client.send("c STORE 1 +FLAGS (\\Flagged)");
    const reply = await client.waitFor(/\r\nc (OK|NO|BAD)[^\r]*\r\n/);
    expect(reply).toContain("c NO [UNAVAILABLE]");
    const logged = served.logs().length;
    client.send("d STORE 2 +FLAGS (\\Flagged)");
    expect(await client.waitFor(/\r\nd (OK|NO|BAD)[^\r]*\r\n/)).toContain("d NO [UNAVAILABLE]");
    expect(served.logs().slice(0, logged)).toContain(`${auditPath} is no longer the file this process opened`);
    client.close();

    const upstream = await connectImap(mailbox);
    try {
      await upstream.mailboxOpen("INBOX");
      for await (const m of upstream.fetch("1:*", { flags: true }))
        expect([...(m.flags ?? [])]).not.toContain("\\Flagged");
    } finally {
      await upstream.logout();
    }
  } finally {
    served.proc.kill("SIGTERM");
  }
  expect(await served.proc.exited).toBe(1);
  expect(served.logs()).toContain(`audit: closing ${auditPath} with`);
});
