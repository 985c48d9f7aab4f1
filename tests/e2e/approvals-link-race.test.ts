/**
 * The approval page's link when another decider is sending the message (docs/approvals.md "Links"), end to end:
 * `mailgator serve` as a child process in front of the real Postfix (through a relay that can hold the page's
 * upstream login), the page's POST, and a second decider on the same state database, as `mailgator approvals
 * approve` is. The page's approval logs in upstream, finds the message claimed by the other decider meanwhile, and
 * decides nothing (409). When the other decider's replay ends with the message held again (a 4xx from the upstream,
 * or its connection lost before the final dot: docs/approvals.md "Deciding"), the approvers' link must work again:
 * it decided nothing.
 */

import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import nodemailer from "nodemailer";
import { freePort } from "../../scripts/upstreams/ports.ts";
import { type ApprovalRow, ApprovalStore } from "../../src/approvals/store.ts";
import { SealedStore } from "../../src/state/store.ts";
import { createMailbox, heldId, sinkMessages, uniqueToken, upstreams } from "../fixtures/index.ts";
import { SmtpRelay } from "../fixtures/smtp-relay.ts";
import { serveConfig } from "./config.ts";
import { type Served, serveChild } from "./serve-child.ts";

setDefaultTimeout(120_000);

const cleanups: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

test("a page approval that finds another decider sending gives its link back for when it is held again", async () => {
  const up = upstreams();
  const relay = await SmtpRelay.start({ host: up.host, port: up.ports.smtp });
  cleanups.push(() => relay.close());
  const dir = mkdtempSync(join(tmpdir(), "mg-approvals-link-race-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const adminPort = await freePort();
  const admin = `http://127.0.0.1:${adminPort}`;
  const file = join(dir, "mailgator.toml");
  const statePath = join(dir, "state.db");
  const secretsFile = join(dir, "secrets.key");
  const smtp = `[smtp]
listen_addr = "127.0.0.1:0"
upstream_addr = "127.0.0.1:${relay.port}"
upstream_tls = "none"
`;
  writeFileSync(
    file,
    `${serveConfig({ listeners: smtp, dir, adminPort, approvals: { timeout: "1h" } })}
[[rules]]
name = "outside needs a manager"
action = "ask"
operations = ["send"]
ask_groups = ["managers"]
`,
  );
  const served: Served = serveChild(file);
  cleanups.push(async () => {
    served.proc.kill("SIGTERM");
    await served.proc.exited;
  });
  const smtpPort = await served.port("SMTP");
  await served.waitForLog(/admin listening/);

  // An agent's message to an outside address is held.
  const sender = await createMailbox({ name: "approvals-link-race" });
  const token = uniqueToken("link-race");
  const to = `out-${token}@outside.example`;
  const transport = nodemailer.createTransport({
    host: "127.0.0.1",
    port: smtpPort,
    secure: false,
    ignoreTLS: true,
    auth: { user: sender.user, pass: sender.password },
  });
  const info = await transport.sendMail({
    envelope: { from: sender.address, to: [to] },
    raw: `From: ${sender.address}\r\nTo: ${to}\r\nSubject: race ${token}\r\nX-Test-Token: ${token}\r\n\r\nhello\r\n`,
  });
  transport.close();
  const id = heldId(info.response);

  // The second decider, on the same state database (what `mailgator approvals approve` opens).
  const state = SealedStore.open(statePath, { secretsFile, env: {}, create: false })!;
  cleanups.push(() => state.close());
  const store = new ApprovalStore(state);
  const t = store.token(store.row(id) as ApprovalRow);
  const url = `${admin}/approvals/${id}?t=${t}`;
  expect((await fetch(url)).status).toBe(200);

  // The page's approval logs in upstream; its login waits at the greeting while the other decider claims.
  const greeting = relay.holdNext("greeting");
  const pressed = fetch(`${admin}/approvals/${id}`, {
    method: "POST",
    body: `t=${encodeURIComponent(t)}&action=approve&confirm=approve`,
    headers: { "content-type": "application/x-www-form-urlencoded", origin: admin },
  });
  await greeting;
  expect(store.claim(id, "cli:other").ok).toBe(true);
  relay.releaseReply();
  const answer = await pressed;
  expect(answer.status).toBe(409);
  expect(await answer.text()).toContain("is being sent");

  // The other decider's replay ends with the message held again (as approve() does after a 4xx).
  store.unclaim(id);
  expect(store.row(id)?.state).toBe("held");

  // The page decided nothing: its link shows the message again, and approves it, once.
  const again = await fetch(url);
  expect(again.status).toBe(200);
  expect(await again.text()).toContain("Approve this message?");
  const approved = await fetch(`${admin}/approvals/${id}`, {
    method: "POST",
    body: `t=${encodeURIComponent(t)}&action=approve&confirm=approve`,
    headers: { "content-type": "application/x-www-form-urlencoded", origin: admin },
  });
  expect(approved.status).toBe(200);
  expect(await approved.text()).toContain("The message was sent.");
  const deadline = Date.now() + 20_000;
  while (sinkMessages(token).length < 1 && Date.now() < deadline) await Bun.sleep(100);
  expect(sinkMessages(token).length).toBe(1);
  expect(store.row(id)?.state).toBe("sent");
});
