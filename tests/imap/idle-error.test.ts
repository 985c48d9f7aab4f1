/**
 * An IDLE that ends with an error reply (not a BYE) must leave the session reading commands again. When the
 * sync inside IDLE fails with a refusal (here upstream answers the filtered folder's `UID SEARCH RECENT` with NO,
 * src/imap/filtering.ts `searchUids`), the IDLE gets its tagged NO; the agent's next command must be read as a
 * command (RFC 9051 §5.5: commands are answered in order), not taken for IDLE's `DONE` line and dropped unanswered.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { ImapFlow } from "imapflow";
import { connectImap, createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { TcpRelay } from "../fixtures/tcp-relay.ts";
import { rawMessage, SEED_RULES } from "./filtered-fixture.ts";
import { RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

let relay: TcpRelay;
let proxy: TestProxy;
let mailbox: TestMailbox;
let human: ImapFlow;
/** While set, the proxy's `UID SEARCH RECENT` is answered NO by the relay instead of reaching Dovecot. */
let failRecent = false;

beforeAll(async () => {
  const up = upstreams();
  relay = await TcpRelay.start({ host: up.host, port: up.ports.imap }, () => ({
    fromClient: (chunk, link) => {
      const text = chunk.toString("latin1");
      const m = /^(\S+) UID SEARCH RECENT\r\n$/.exec(text);
      if (failRecent && m !== null) {
        link.client.write(`${m[1]} NO [SERVERBUG] search failed\r\n`);
        return;
      }
      link.target.write(chunk);
    },
  }));
  proxy = await startTestProxy({ rules: SEED_RULES, upstreamTls: "none", upstreamAddr: `127.0.0.1:${relay.port}` });
  mailbox = await createMailbox({ seed: { folders: { INBOX: 5 }, seed: 5 } });
  human = await connectImap(mailbox);
});

afterAll(async () => {
  await human?.logout();
  await proxy?.close();
  await relay?.close();
});

test("a command after an IDLE that failed inside is answered, not swallowed as DONE", async () => {
  const raw = await RawImap.login(proxy.port, mailbox);
  const sel = await raw.command("s", "EXAMINE INBOX");
  expect(statusOf(sel, "s")).toStartWith("s OK");
  raw.write("i IDLE\r\n");
  await raw.readUntil((b) => b.includes("+ "));
  raw.take();
  failRecent = true;
  await human.append("INBOX", rawMessage("notifications@shop.test", "Visible arrival", `idle-err-${Date.now()}`), []);
  // A client sends DONE while its IDLE is in progress, and not once the IDLE has its tagged reply (RFC 2177 §3).
  const early = await raw
    .readUntil((b) => /(^|\r\n)i (OK|NO|BAD)/.test(b), 3000)
    .then(
      (b) => /(^|\r\n)i (OK|NO|BAD)/.test(b),
      () => false,
    );
  if (!early) raw.write("DONE\r\n");
  const idle = await raw.waitTagged("i");
  failRecent = false;
  // The sync failed inside IDLE: its tagged reply is a NO, and IDLE is over.
  expect(statusOf(idle, "i")).toStartWith("i NO");
  // The agent goes on with a command; it must be answered.
  const noop = await raw.command("n", "NOOP");
  expect(statusOf(noop, "n")).toStartWith("n OK");
  raw.close();
});

test("a line other than DONE ends the IDLE with BAD, has its deny row, and the session goes on", async () => {
  const raw = await RawImap.login(proxy.port, mailbox);
  expect(statusOf(await raw.command("s", "EXAMINE INBOX"), "s")).toStartWith("s OK");
  const before = (await proxy.rows()).length;
  raw.write("i IDLE\r\n");
  await raw.readUntil((b) => b.includes("+ "));
  raw.take();
  raw.write("n2 NOOP\r\n");
  expect(statusOf(await raw.waitTagged("i"), "i")).toBe("i BAD Expected DONE");
  // docs/audit.md "What a row records": every refusal is a row.
  await Bun.sleep(300);
  const rows = (await proxy.rows()).slice(before).filter((r) => r.command === "IDLE");
  expect(rows.map((r) => [r.decision, r.reason, r.folder])).toEqual([["deny", "Expected DONE", "INBOX"]]);
  expect(statusOf(await raw.command("n", "NOOP"), "n")).toStartWith("n OK");
  raw.close();
});
