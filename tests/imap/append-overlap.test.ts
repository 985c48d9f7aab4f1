/**
 * APPEND's overlap of its audit rows' fdatasync with the upstream `+` round trip (docs/audit.md "Writing: batches
 * and durability"): the command's first line goes to Dovecot while the rows are being made durable, the message
 * octets only once they are. Through a relay that records what the proxy sends to the real Dovecot, with an audit log
 * whose `durable()` for APPEND resolves or rejects when the test says.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { type AuditLog, AuditUnavailableError } from "../../src/audit/index.ts";
import { generateToken, hashToken } from "../../src/vault/token.ts";
import { connectImap, createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { TcpRelay } from "../fixtures/tcp-relay.ts";
import { RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

/** The next APPEND's rows resolve only once this settles (once); null: they go through. */
let held: Promise<void> | null = null;

/** The real log, except that the durable() of an APPEND row waits for `held` too when it is set. */
function holdOnCue(log: AuditLog): AuditLog {
  return new Proxy(log, {
    get(target, key) {
      if (key === "durable") {
        return async (ev: Parameters<AuditLog["durable"]>[0], opts?: Parameters<AuditLog["durable"]>[1]) => {
          const hold = ev.command === "APPEND" ? held : null;
          const id = await target.durable(ev, opts);
          await hold;
          return id;
        };
      }
      const value = Reflect.get(target, key, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

/** Holds the next APPEND's rows until `release` (or `fail`). */
function armHold(): { release: () => void; fail: (e: Error) => void } {
  let release!: () => void;
  let fail!: (e: Error) => void;
  held = new Promise<void>((resolve, reject) => {
    release = resolve;
    fail = reject;
  });
  held.catch(() => {});
  return { release, fail };
}

/** What the proxy sent to Dovecot, as text. */
let sent = "";
let relay: TcpRelay;
let proxy: TestProxy;
let mailbox: TestMailbox;

beforeAll(async () => {
  const up = upstreams();
  relay = await TcpRelay.start({ host: up.host, port: up.ports.imap }, () => ({
    fromClient: (chunk, link) => {
      sent += chunk.toString("latin1");
      link.target.write(chunk);
    },
  }));
  proxy = await startTestProxy({
    upstreamTls: "none",
    upstreamAddr: `127.0.0.1:${relay.port}`,
    wrapAudit: holdOnCue,
  });
  mailbox = await createMailbox({ name: "append-overlap" });
});

afterAll(async () => {
  await proxy?.close();
  await relay?.close();
});

/** Messages in the user's INBOX, asked of Dovecot directly. */
async function inboxCount(): Promise<number> {
  const direct = await connectImap(mailbox);
  try {
    const status = await direct.status("INBOX", { messages: true });
    return status === false ? -1 : (status.messages ?? -1);
  } finally {
    await direct.logout();
  }
}

/** Waits until `text` has crossed the relay to Dovecot (up to 10 s). */
async function sentUpstream(text: string): Promise<void> {
  const until = Date.now() + 10_000;
  while (!sent.includes(text)) {
    if (Date.now() > until) throw new Error(`never sent upstream: ${text}`);
    await Bun.sleep(5);
  }
}

const MESSAGE = "From: a@example.test\r\nSubject: overlap marker 7f3a\r\n\r\nbody of the overlap test\r\n";

test("the APPEND line goes upstream while the row is written; the message only once it is on disk", async () => {
  const agent = await RawImap.login(proxy.port, mailbox);
  const before = await inboxCount();
  const hold = armHold();
  sent = "";
  agent.write(`a APPEND INBOX {${MESSAGE.length}}\r\n`);
  await agent.readUntil((b) => b.includes("+ "));
  agent.take();
  agent.write(`${MESSAGE}\r\n`);
  // The row is held: the line is upstream (Dovecot has answered `+` to it), the message is not, nothing appended.
  await sentUpstream(`APPEND INBOX {${MESSAGE.length}}\r\n`);
  await Bun.sleep(200);
  expect(sent).not.toContain("overlap marker 7f3a");
  expect(await inboxCount()).toBe(before);
  hold.release();
  expect(statusOf(await agent.waitTagged("a"), "a")).toMatch(/^a OK \[APPENDUID \d+ \d+\] /);
  expect(sent).toContain("overlap marker 7f3a");
  expect(await inboxCount()).toBe(before + 1);
  // The session goes on.
  expect(statusOf(await agent.command("n", "NOOP"), "n")).toBe("n OK NOOP completed");
  agent.close();
});

test("a row that cannot be made durable: NO, then BYE; the message never goes upstream, nothing appended", async () => {
  const agent = await RawImap.login(proxy.port, mailbox);
  const before = await inboxCount();
  const hold = armHold();
  sent = "";
  const message = MESSAGE.replace("7f3a", "9c1d");
  agent.write(`a APPEND INBOX {${message.length}}\r\n`);
  await agent.readUntil((b) => b.includes("+ "));
  agent.take();
  agent.write(`${message}\r\n`);
  await sentUpstream(`APPEND INBOX {${message.length}}\r\n`);
  hold.fail(new AuditUnavailableError("audit: cannot write (test)"));
  const text = await agent.readUntil(() => false, 10_000, "the proxy did not close the session");
  expect(text).toMatch(/^a NO \[UNAVAILABLE\] [^\r\n]*\r\n/);
  expect(text).toContain("* BYE Upstream connection lost\r\n");
  expect(sent).not.toContain("overlap marker 9c1d");
  expect(await inboxCount()).toBe(before);
});

test("MULTIAPPEND: every message waits for the rows, then all are appended", async () => {
  const agent = await RawImap.login(proxy.port, mailbox);
  const before = await inboxCount();
  const hold = armHold();
  sent = "";
  const [one, two] = [MESSAGE.replace("7f3a", "m1m1"), MESSAGE.replace("7f3a", "m2m2")];
  agent.write(`a APPEND INBOX {${one.length}}\r\n`);
  await agent.readUntil((b) => b.includes("+ "));
  agent.take();
  agent.write(`${one} {${two.length}}\r\n`);
  await agent.readUntil((b) => b.includes("+ "));
  agent.take();
  agent.write(`${two}\r\n`);
  await sentUpstream("APPEND INBOX {");
  await Bun.sleep(200);
  expect(sent).not.toContain("m1m1");
  expect(sent).not.toContain("m2m2");
  hold.release();
  expect(statusOf(await agent.waitTagged("a"), "a")).toMatch(/^a OK /);
  expect(sent).toContain("m1m1");
  expect(sent).toContain("m2m2");
  expect(await inboxCount()).toBe(before + 2);
  agent.close();
});

/** Unhandled rejections seen while `body` runs (and 300 ms after): a rejected promise left alone kills serve. */
async function unhandledDuring(body: () => Promise<void>): Promise<string[]> {
  const seen: unknown[] = [];
  const listen = (e: unknown) => void seen.push(e);
  process.on("unhandledRejection", listen);
  try {
    await body();
    await Bun.sleep(300);
  } finally {
    process.off("unhandledRejection", listen);
  }
  return seen.map(String);
}

for (const [what, marker, cut] of [
  ["the agent hangs up", "hu01", (agent: RawImap) => agent.close()],
  ["the upstream link drops", "ld02", () => relay.dropLinks()],
] as const) {
  test(`${what} while the row is written: no unhandled rejection, nothing appended`, async () => {
    const agent = await RawImap.login(proxy.port, mailbox);
    const before = await inboxCount();
    const message = MESSAGE.replace("7f3a", marker);
    const unhandled = await unhandledDuring(async () => {
      const hold = armHold();
      sent = "";
      agent.write(`a APPEND INBOX {${message.length}}\r\n`);
      await agent.readUntil((b) => b.includes("+ "));
      agent.take();
      agent.write(`${message}\r\n`);
      await sentUpstream(`APPEND INBOX {${message.length}}\r\n`);
      cut(agent);
      await Bun.sleep(300);
      hold.release();
    });
    agent.close();
    expect(unhandled).toEqual([]);
    expect(sent).not.toContain(`overlap marker ${marker}`);
    expect(await inboxCount()).toBe(before);
  });
}

test("a reload that ends the session while APPEND waits for its row: the APPEND's answer first, then BYE", async () => {
  const agent = await RawImap.login(proxy.port, mailbox);
  const before = await inboxCount();
  const message = MESSAGE.replace("7f3a", "rl03");
  const hold = armHold();
  sent = "";
  agent.write(`a APPEND INBOX {${message.length}}\r\n`);
  await agent.readUntil((b) => b.includes("+ "));
  agent.take();
  agent.write(`${message}\r\n`);
  await sentUpstream(`APPEND INBOX {${message.length}}\r\n`);
  // Vault mode now: a session logged in pass-through ends (docs/operations.md "Reload").
  const vault =
    `[[agents]]\nname = "bot"\ntoken_hash = "${hashToken(generateToken())}"\naccount = "main"\n\n` +
    `[accounts.main]\nusername = "${mailbox.user}"\npassword = "${mailbox.password}"\n`;
  const options = { upstreamTls: "none" as const, upstreamAddr: `127.0.0.1:${relay.port}`, wrapAudit: holdOnCue };
  expect(proxy.reload({ ...options, extra: vault })).toBe(1);
  await Bun.sleep(200);
  expect(agent.closed).toBe(false);
  hold.release();
  const text = await agent.readUntil(() => false, 10_000, "the proxy did not close the session");
  expect(text).toMatch(/^a OK \[APPENDUID \d+ \d+\] [^\r\n]*\r\n\* BYE Configuration changed; [^\r\n]*\r\n$/);
  expect(await inboxCount()).toBe(before + 1);
  proxy.reload(options);
});
