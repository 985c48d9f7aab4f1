/**
 * `[limits]` timeouts changed by a reload apply to the timers of open sessions (docs/operations.md "Reload"): a
 * lowered `login_timeout`, `idle_timeout` or `idle_command_timeout` ends a session that has been waiting longer
 * than the new limit, without waiting for the one it was given at the start. IMAP against Dovecot, SMTP against
 * Postfix, through the in-process proxies and their reload (prepareReload, the swap, the commit).
 */

import { afterAll, expect, test } from "bun:test";
import { createMailbox } from "../fixtures/index.ts";
import { RawImap, startTestProxy as startImapProxy, statusOf } from "../imap/helpers.ts";
import { loggedIn, RawClient, startTestProxy as startSmtpProxy } from "../smtp/helpers.ts";

const closing: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const close of closing.reverse()) await close();
});

const LONG = "[limits]\nlogin_timeout = 600\nidle_timeout = 3600\n\n[limits.imap]\nidle_command_timeout = 3600\n";
const SHORT = "[limits]\nlogin_timeout = 1\nidle_timeout = 1\n\n[limits.imap]\nidle_command_timeout = 1\n";
const ALLOW = '[[rules]]\nname = "all"\naction = "allow"\n';

test("IMAP: lowered login_timeout, idle_timeout, idle_command_timeout end sessions opened before", async () => {
  const proxy = await startImapProxy({ extra: LONG });
  closing.push(() => proxy.close());
  const mailbox = await createMailbox({ name: "reload-timeouts" });
  const waiting = await RawImap.open(proxy.port);
  const idle = await RawImap.login(proxy.port, mailbox);
  const idling = await RawImap.login(proxy.port, mailbox);
  closing.push(async () => {
    for (const c of [waiting, idle, idling]) c.close();
  });
  expect(statusOf(await idling.command("s", "SELECT INBOX"), "s")).toStartWith("s OK");
  idling.write("i IDLE\r\n");
  await idling.readUntil((b) => b.includes("+ idling\r\n"));
  idling.take();
  await Bun.sleep(1200);
  proxy.reload({ extra: SHORT });
  for (const c of [waiting, idle, idling]) await c.readUntil(() => c.closed, 5000, "the session was not ended");
  expect(waiting.take()).toBe("* BYE Autologout; no login within 1 s\r\n");
  expect(idle.take()).toBe("* BYE Autologout; idle for 1 s\r\n");
  expect(idling.take()).toBe("* BYE Autologout; IDLE for 1 s\r\n");
});

test("SMTP: lowered login_timeout and idle_timeout end sessions open before the reload", async () => {
  const proxy = await startSmtpProxy({ rules: `${ALLOW}\n${LONG}` });
  closing.push(() => proxy.close());
  const waiting = await RawClient.connect(proxy.port);
  expect((await waiting.reply()).code).toBe(220);
  const idle = await loggedIn(proxy.port);
  closing.push(async () => {
    waiting.close();
    idle.close();
  });
  await Bun.sleep(1200);
  proxy.reload(`${ALLOW}\n${SHORT}`);
  const ends = await Promise.all([waiting.reply(5000), idle.reply(5000)]);
  expect(ends.map((r) => r.raw)).toEqual([
    "421 4.4.2 No login within 1 s; closing\r\n",
    "421 4.4.2 Idle for 1 s; closing\r\n",
  ]);
  await waiting.waitClosed();
  await idle.waitClosed();
});
