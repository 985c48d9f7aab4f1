/**
 * Every named limit of src/smtp/limits.ts, pinned and exercised at the limit and one past it.
 * Times (idle) are shortened through the session's limit overrides; everything else uses the real value.
 */

import { afterEach, describe, expect, test } from "bun:test";
import { AUDIT_BACKLOG_PAUSE_ROWS } from "../../src/audit/index.ts";
import { Connection } from "../../src/net/connection.ts";
import {
  AUTH_FAILURE_TRACKED_ADDRESSES,
  IDLE_TIMEOUT_MS,
  MAX_AUTH_FAILURES_PER_SESSION,
  MAX_COMMAND_LINE,
  MAX_COMMANDS_PER_SESSION,
  MAX_CONNECTIONS,
  MAX_EHLO_ECHO,
  MAX_HEADER_BYTES,
  MAX_HEADER_LINE_OCTETS,
  MAX_MESSAGE_BYTES,
  MAX_PART_HEADER_BYTES,
  MAX_QUEUED_INPUT,
  MAX_RECIPIENTS,
  MAX_REFUSED_BEFORE_LOGIN,
  MAX_REFUSED_TARGET,
  MAX_REPLY_TEXT,
  MAX_ROW_REASON,
  UPSTREAM_DATA_BLOCK_TIMEOUT_MS,
  UPSTREAM_OPENING_WAIT_MS,
} from "../../src/smtp/limits.ts";
import { clean, reply } from "../../src/smtp/reply.ts";
import { backlogAudit } from "../fixtures/audit-backlog.ts";
import { type FakeUpstream, startFakeUpstream } from "./fake-upstream.ts";
import { RawClient, startTestProxy, type TestProxy } from "./helpers.ts";

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
});

async function setup(limits = {}): Promise<{ p: TestProxy; fake: FakeUpstream }> {
  const fake = await startFakeUpstream({});
  cleanups.push(() => fake.close());
  const p = await startTestProxy({
    rules: `[[rules]]\nname = "corp"\naction = "allow"\nto = "*@corp.test"\n`,
    upstreamTls: "none",
    upstreamAddr: `127.0.0.1:${fake.port}`,
    limits,
  });
  cleanups.push(() => p.close());
  return { p, fake };
}

async function client(port: number, login = true): Promise<RawClient> {
  const c = await RawClient.connect(port);
  await c.reply();
  await c.command("EHLO client.test");
  if (login)
    expect((await c.command(`AUTH PLAIN ${Buffer.from("\0alice@mailgator.test\0p").toString("base64")}`)).code).toBe(
      235,
    );
  return c;
}

test("the values are what docs/smtp.md says", () => {
  expect(MAX_COMMAND_LINE).toBe(12288);
  expect(MAX_RECIPIENTS).toBe(100);
  expect(MAX_MESSAGE_BYTES).toBe(50 * 1024 * 1024);
  expect(MAX_HEADER_BYTES).toBe(1024 * 1024);
  expect(MAX_HEADER_LINE_OCTETS).toBe(998); // RFC 5322 §2.1.1; tests/smtp/header-line-length.test.ts
  expect(MAX_COMMANDS_PER_SESSION).toBe(10_000);
  expect(IDLE_TIMEOUT_MS).toBe(5 * 60 * 1000);
  expect(MAX_CONNECTIONS).toBe(100);
  expect(MAX_AUTH_FAILURES_PER_SESSION).toBe(3);
  expect(MAX_QUEUED_INPUT).toBe(1024 * 1024);
  expect(MAX_REFUSED_TARGET).toBe(256);
  expect(MAX_REFUSED_BEFORE_LOGIN).toBe(20);
  // At the limit and one past it in tests/smtp/refused-reason.test.ts.
  expect(MAX_ROW_REASON).toBe(300);
  expect(MAX_REPLY_TEXT).toBe(400);
  expect(MAX_EHLO_ECHO).toBe(100);
  // At the limit and one past it in inspect.test.ts; the throttle's eviction in tests/net/ip.test.ts.
  expect(MAX_PART_HEADER_BYTES).toBe(64 * 1024);
  expect(AUTH_FAILURE_TRACKED_ADDRESSES).toBe(10_000);
  // RFC 5321 §4.5.3.2.5; exercised with a shorter value in upstream.test.ts (a server that stops reading).
  expect(UPSTREAM_DATA_BLOCK_TIMEOUT_MS).toBe(3 * 60 * 1000);
  // Exercised with a shorter value, within it and past it, in eight-bit-upstream-wait.test.ts; at this value against
  // `mailgator serve` in tests/e2e/eight-bit-silent-upstream.test.ts.
  expect(UPSTREAM_OPENING_WAIT_MS).toBe(10_000);
});

describe("MAX_COMMAND_LINE", () => {
  test("a line of exactly the limit is read; one octet more gets 500 5.5.2 and the session goes on", async () => {
    const { p } = await setup();
    const c = await client(p.port, false);
    const exact = `NOOP ${"x".repeat(MAX_COMMAND_LINE - 5)}`;
    expect(exact.length).toBe(MAX_COMMAND_LINE);
    expect((await c.command(exact)).code).toBe(250);
    expect((await c.command(`${exact}x`)).raw).toStartWith("500 5.5.2");
    // Split across many writes as well.
    for (let i = 0; i < exact.length; i += 1000) c.write(exact.slice(i, i + 1000));
    c.write("x\r\nNOOP\r\n");
    expect((await c.reply()).code).toBe(500);
    expect((await c.reply()).code).toBe(250);
  });

  test("an AUTH response past the limit ends the exchange: the next line is a command again", async () => {
    const { p } = await setup();
    const c = await client(p.port, false);
    expect((await c.command("AUTH LOGIN")).raw).toStartWith("334 ");
    expect((await c.command("x".repeat(MAX_COMMAND_LINE + 1))).raw).toStartWith("500 5.5.2");
    // Before, "NOOP" was read as the LOGIN user name (it is base64) and answered with the password prompt.
    expect((await c.command("NOOP")).raw).toStartWith("250 2.0.0");
  });
});

describe("MAX_RECIPIENTS", () => {
  test(`${MAX_RECIPIENTS} recipients are accepted and replayed`, async () => {
    const { p, fake } = await setup();
    const c = await client(p.port);
    let batch = "MAIL FROM:<alice@mailgator.test>\r\n";
    for (let i = 0; i < MAX_RECIPIENTS; i++) batch += `RCPT TO:<r${i}@corp.test>\r\n`;
    c.write(batch);
    expect((await c.reply()).code).toBe(250);
    for (let i = 0; i < MAX_RECIPIENTS; i++) expect((await c.reply()).code).toBe(250);
    expect((await c.command("DATA")).code).toBe(354);
    c.write("Subject: x\r\n\r\nhi\r\n.\r\n");
    expect((await c.reply()).code).toBe(250);
    expect(fake.lines.filter((l) => l.startsWith("RCPT"))).toHaveLength(MAX_RECIPIENTS);
  });

  test("the next gets 452 4.5.3, and DATA is refused: nothing goes upstream (all or nothing)", async () => {
    const { p, fake } = await setup();
    const c = await client(p.port);
    let batch = "MAIL FROM:<alice@mailgator.test>\r\n";
    for (let i = 0; i <= MAX_RECIPIENTS + 1; i++) batch += `RCPT TO:<r${i}@corp.test>\r\n`;
    c.write(batch);
    expect((await c.reply()).code).toBe(250);
    for (let i = 0; i < MAX_RECIPIENTS; i++) expect((await c.reply()).code).toBe(250);
    expect((await c.reply()).raw).toStartWith("452 4.5.3");
    expect((await c.reply()).raw).toStartWith("452 4.5.3");
    const data = await c.command("DATA");
    expect(data.raw).toStartWith("554 5.5.3 Message refused: 2 recipient(s) refused at RCPT");
    expect(data.raw).toContain(`at most ${MAX_RECIPIENTS} recipients`);
    expect(fake.lines.filter((l) => /^(MAIL|RCPT|DATA)/.test(l))).toEqual([]);
  });
});

describe("MAX_MESSAGE_BYTES", () => {
  const head = Buffer.from("Subject: big\r\n\r\n");
  const line = Buffer.from(`${"y".repeat(1022)}\r\n`);

  /** Streams a message of exactly `size` content octets (a header, 1 KiB lines, one shorter last line). */
  async function stream(c: RawClient, size: number): Promise<void> {
    let left = size - head.length;
    c.write(head);
    const batch = Buffer.concat(Array(1024).fill(line));
    while (left >= batch.length + line.length) {
      if (!c.socket.write(batch)) await new Promise((r) => c.socket.once("drain", r));
      left -= batch.length;
    }
    while (left >= line.length + 3) {
      c.write(line);
      left -= line.length;
    }
    c.write(`${"z".repeat(left - 2)}\r\n.\r\n`);
  }

  test("exactly the limit is sent upstream; one octet more gets 552 5.3.4 and nothing is sent", async () => {
    const { p, fake } = await setup();
    const c = await client(p.port);
    expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
    expect((await c.command("RCPT TO:<a@corp.test>")).code).toBe(250);
    expect((await c.command("DATA")).code).toBe(354);
    await stream(c, MAX_MESSAGE_BYTES);
    expect((await c.reply(60_000)).code).toBe(250);
    expect(fake.sizes).toEqual([MAX_MESSAGE_BYTES]);
    expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
    expect((await c.command("RCPT TO:<a@corp.test>")).code).toBe(250);
    expect((await c.command("DATA")).code).toBe(354);
    await stream(c, MAX_MESSAGE_BYTES + 1);
    expect((await c.reply(60_000)).raw).toStartWith("552 5.3.4");
    expect(fake.lines.filter((l) => l.startsWith("MAIL"))).toHaveLength(1);
    // SIZE= in MAIL FROM is checked at once.
    expect((await c.command(`MAIL FROM:<alice@mailgator.test> SIZE=${MAX_MESSAGE_BYTES}`)).code).toBe(250);
    expect((await c.command(`MAIL FROM:<alice@mailgator.test> SIZE=${MAX_MESSAGE_BYTES + 1}`)).raw).toStartWith(
      "552 5.3.4",
    );
  }, 120_000);
});

describe("MAX_COMMANDS_PER_SESSION", () => {
  test("the last allowed command is answered; the next gets 421 and the connection closes", async () => {
    const { p } = await setup();
    // EHLO is the first command; the rest are NOOPs.
    const c = await client(p.port, false);
    c.write("NOOP\r\n".repeat(MAX_COMMANDS_PER_SESSION - 1));
    for (let i = 0; i < MAX_COMMANDS_PER_SESSION - 1; i++) expect((await c.reply()).code).toBe(250);
    expect((await c.command("NOOP")).raw).toStartWith("421 4.7.0");
    await c.waitClosed();
  });
});

describe("MAX_REFUSED_BEFORE_LOGIN", () => {
  // Refused before login, each with its deny row and no failed-login delay: before, only MAX_COMMANDS_PER_SESSION
  // ended such a connection, after 10,000 rows.
  const refused = ["XYZZY", "MAIL FROM:<alice@mailgator.test>", "RCPT TO:<bob@corp.test>", "BDAT 10 LAST", "DATA"];
  const codes = [500, 530, 530, 502, 530];

  test("the last allowed refusal is answered and a login still works", async () => {
    const { p } = await setup();
    const before = (await p.rows()).length;
    const c = await client(p.port, false);
    for (let i = 0; i < MAX_REFUSED_BEFORE_LOGIN - 1; i++)
      expect((await c.command(refused[i % refused.length]!)).code).toBe(codes[i % refused.length]!);
    const login = await c.command(`AUTH PLAIN ${Buffer.from("\0alice@mailgator.test\0p").toString("base64")}`);
    expect(login.code).toBe(235);
    // Refusals after login are the rules' business, not this limit's.
    for (let i = 0; i < 3; i++) expect((await c.command("XYZZY")).code).toBe(500);
    expect((await c.command("NOOP")).code).toBe(250);
    const rows = (await p.rows()).slice(before).filter((r) => r.decision === "deny");
    expect(rows).toHaveLength(MAX_REFUSED_BEFORE_LOGIN - 1 + 3);
  });

  test("one more gets its reply, then 421 and the connection closes", async () => {
    const { p } = await setup();
    const before = (await p.rows()).length;
    const c = await client(p.port, false);
    c.write(
      Array.from({ length: MAX_REFUSED_BEFORE_LOGIN + 5 }, (_, i) => `${refused[i % refused.length]}\r\n`).join(""),
    );
    for (let i = 0; i < MAX_REFUSED_BEFORE_LOGIN; i++) expect((await c.reply()).code).toBe(codes[i % refused.length]!);
    const last = await c.reply();
    expect(last.raw).toBe(
      `421 4.7.0 Too many refused commands before login (limit ${MAX_REFUSED_BEFORE_LOGIN}); closing\r\n`,
    );
    await c.waitClosed();
    const rows = (await p.rows()).slice(before);
    expect(rows.filter((r) => r.decision === "deny")).toHaveLength(MAX_REFUSED_BEFORE_LOGIN);
  });
});

describe("MAX_QUEUED_INPUT", () => {
  test("what comes while a command waits: reading goes on at the limit, pauses one octet past it", async () => {
    // The audit log's backlog holds the session inside its NOOP (AUDIT_BACKLOG_PAUSE_ROWS) while input arrives.
    const backlog = backlogAudit();
    const p = await startTestProxy({ rules: "", wrapAudit: backlog.wrap });
    cleanups.push(() => p.close());
    cleanups.push(async () => backlog.release());
    // The proxy runs in this process: its side of the agent's connection, and its calls of pause().
    const conns = new Set<Connection>();
    const paused = new Set<Connection>();
    const original = { onData: Connection.prototype.onData, pause: Connection.prototype.pause };
    Connection.prototype.onData = function (this: Connection, handler) {
      conns.add(this);
      original.onData.call(this, handler);
    };
    Connection.prototype.pause = function (this: Connection) {
      paused.add(this);
      original.pause.call(this);
    };
    cleanups.push(async () => {
      Object.assign(Connection.prototype, original);
    });
    const c = await client(p.port, false);
    const conn = [...conns].find((x) => x.remotePort === c.socket.localPort)!;
    expect(conn).toBeDefined();
    /** Waits until the proxy has read `n` octets of the connection in all. */
    const readTo = async (n: number) => {
      for (let t = 0; t < 500 && conn.bytesIn < n; t++) await Bun.sleep(10);
      expect(conn.bytesIn).toBe(n);
    };
    backlog.setQueued(AUDIT_BACKLOG_PAUSE_ROWS + 1);
    c.write("NOOP\r\n");
    await backlog.flushing;
    // The NOOP is read and waits; exactly MAX_QUEUED_INPUT octets more come in: 8 KiB NOOP lines.
    const base = conn.bytesIn;
    const line = `NOOP ${"x".repeat(8192 - 7)}\r\n`;
    const lines = MAX_QUEUED_INPUT / line.length;
    expect(lines).toBe(128);
    c.write(line.repeat(lines));
    await readTo(base + MAX_QUEUED_INPUT);
    expect(paused.has(conn)).toBe(false);
    // One octet more: reading stops (the rest of that NOOP stays in the kernel's buffers).
    c.write("N");
    await readTo(base + MAX_QUEUED_INPUT + 1);
    for (let t = 0; t < 100 && !paused.has(conn); t++) await Bun.sleep(10);
    expect(paused.has(conn)).toBe(true);
    c.write("OOP\r\n");
    await Bun.sleep(100);
    expect(conn.bytesIn).toBe(base + MAX_QUEUED_INPUT + 1);
    // Once the command goes on, the queue is worked through, reading resumes, and every NOOP is answered.
    backlog.release();
    for (let i = 0; i < 1 + lines + 1; i++) expect((await c.reply()).raw).toStartWith("250 2.0.0");
    expect(conn.bytesIn).toBe(base + MAX_QUEUED_INPUT + 6);
  });
});

describe("MAX_REFUSED_TARGET", () => {
  test("a refused argument of the limit is kept whole in its row and DATA's reply; one octet more is cut", async () => {
    const { p } = await setup();
    const c = await client(p.port);
    for (const length of [MAX_REFUSED_TARGET, MAX_REFUSED_TARGET + 1]) {
      // No <...>: the argument is refused as written, and named as written.
      const sender = "s".repeat(length);
      expect((await c.command(`MAIL FROM:${sender}`)).raw).toStartWith("501 5.5.4");
      expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
      const recipient = "r".repeat(length);
      expect((await c.command(`RCPT TO:${recipient}`)).raw).toStartWith("501 5.5.4");
      const kept = recipient.slice(0, MAX_REFUSED_TARGET);
      const data = await c.command("DATA");
      expect(data.raw).toStartWith(`554 5.5.4 Message refused: 1 recipient(s) refused at RCPT (<${kept}>: Syntax`);
      expect((await c.command("RSET")).code).toBe(250);
      const rows = await p.rows();
      const target = (command: string) => rows.filter((r) => r.command === command).at(-1)?.target;
      expect(target("MAIL FROM")).toBe(sender.slice(0, MAX_REFUSED_TARGET));
      expect(target("RCPT TO")).toBe(kept);
    }
  });
});

describe("MAX_EHLO_ECHO", () => {
  test("an EHLO name of the limit is echoed whole in the greeting; one character more is cut", async () => {
    const { p } = await setup();
    const c = await RawClient.connect(p.port);
    await c.reply();
    for (const length of [MAX_EHLO_ECHO, MAX_EHLO_ECHO + 1]) {
      const name = `${"h".repeat(length - 5)}.test`;
      const first = (await c.command(`EHLO ${name}`)).raw.split("\r\n")[0]!;
      expect(first).toEndWith(` greets ${name.slice(0, MAX_EHLO_ECHO)}`);
    }
    c.close();
  });
});

describe("MAX_REPLY_TEXT", () => {
  test("outside text of the limit goes into a reply line whole; one character more is cut", () => {
    for (const length of [MAX_REPLY_TEXT, MAX_REPLY_TEXT + 1]) {
      const text = `${"x".repeat(length - 1)}\u00e9`;
      const kept = `${"x".repeat(length - 1)}?`.slice(0, MAX_REPLY_TEXT);
      expect(clean(text)).toBe(kept);
      expect(reply(550, "5.1.1", text)).toBe(`550 5.1.1 ${kept}\r\n`);
    }
  });
});

describe("idle time", () => {
  test("a session idle for less than the limit stays; past it gets 421 4.4.2 and is closed", async () => {
    const { p } = await setup({ idleTimeoutMs: 2000 });
    const c = await client(p.port, false);
    // Two pauses of 60% of the limit: together longer than it, each shorter (activity restarts the clock), with
    // 800 ms to spare each for a loaded machine.
    await Bun.sleep(1200);
    expect((await c.command("NOOP")).code).toBe(250);
    await Bun.sleep(1200);
    expect((await c.command("NOOP")).code).toBe(250);
    const started = Date.now();
    expect((await c.reply(8000)).raw).toStartWith("421 4.4.2");
    expect(Date.now() - started).toBeGreaterThanOrEqual(1900);
    await c.waitClosed();
  });
});

describe("MAX_CONNECTIONS", () => {
  test(`${MAX_CONNECTIONS} agents are served at once; one more gets 421 4.7.0; a freed slot is reused`, async () => {
    const { p } = await setup();
    const clients: RawClient[] = [];
    // From two addresses: one address gets at most half the places (max_connections_per_ip).
    for (let i = 0; i < MAX_CONNECTIONS; i++) {
      const c = await RawClient.connect(p.port, "127.0.0.1", i % 2 === 0 ? "127.0.0.1" : "127.0.0.2");
      expect((await c.reply()).code).toBe(220);
      clients.push(c);
    }
    const extra = await RawClient.connect(p.port, "127.0.0.1", "127.0.0.3");
    expect((await extra.reply()).raw).toBe(
      `421 4.7.0 Too many connections (limit ${MAX_CONNECTIONS}); try again later\r\n`,
    );
    await extra.waitClosed();
    clients.pop()!.close();
    // The proxy notices the close asynchronously: retry until the slot is free again.
    let code = 0;
    for (let attempt = 0; attempt < 200 && code !== 220; attempt++) {
      await Bun.sleep(50);
      const again = await RawClient.connect(p.port, "127.0.0.1", "127.0.0.3");
      code = (await again.reply()).code;
      again.close();
    }
    expect(code).toBe(220);
    for (const c of clients) c.close();
  });
});
