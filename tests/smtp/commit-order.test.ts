/**
 * The audit commit and the upstream replay overlap (docs/smtp.md, Replay) without weakening the audit contract
 * (docs/audit.md): an operation that reached upstream has its audit row on disk. A message reaches the upstream with
 * its end of data, so the fake upstream checks, the moment the final dot arrives, that the message's rows are already
 * committed. The rows wait for company (AuditLog.durableWithin) while MAIL, RCPT and DATA go upstream; once
 * DATA is accepted the replay asks for the commit and sends the content only after it. An audit log whose
 * commit is held back or refused shows that the content and the dot wait, and that a failed commit abandons the
 * transaction before its end of data (451 to the agent, nothing delivered).
 *
 * Also: the upstream connection is opened (EHLO, AUTH) while the agent's message comes in, and nothing of the
 * transaction (MAIL FROM) goes out before the final decision.
 */

import { afterEach, describe, expect, test } from "bun:test";
import { type AuditEvent, type AuditLog, AuditUnavailableError } from "../../src/audit/index.ts";
import { generateToken } from "../../src/vault/token.ts";
import { type FakeUpstream, type FakeUpstreamOptions, startFakeUpstream } from "./fake-upstream.ts";
import {
  dataPayload,
  loggedIn,
  marker,
  message,
  type ProxyOptions,
  type RawClient,
  startTestProxy,
  type TestProxy,
  vaultClient,
  vaultConfig,
} from "./helpers.ts";

const ALLOW_CORP = `
[[rules]]
name = "no secrets"
action = "deny"
subject = "*secret*"

[[rules]]
name = "corp only"
action = "allow"
to = "*@corp.test"
`;

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
});

async function fake(options: FakeUpstreamOptions): Promise<FakeUpstream> {
  const f = await startFakeUpstream(options);
  cleanups.push(() => f.close());
  return f;
}

async function proxy(server: FakeUpstream, options: Partial<ProxyOptions> = {}): Promise<TestProxy> {
  const p = await startTestProxy({
    rules: ALLOW_CORP,
    upstreamTls: "none",
    upstreamAddr: `127.0.0.1:${server.port}`,
    ...options,
  });
  cleanups.push(() => p.close());
  return p;
}

type RealDurable = (row: AuditEvent) => Promise<number>;

/**
 * The real log, except that every durable() and durableWithin() goes through `durable`, which may hold the row
 * back (it is not even queued until then) or refuse it.
 */
function withDurable(durable: (row: AuditEvent, real: RealDurable) => Promise<number>): (log: AuditLog) => AuditLog {
  return (log) =>
    new Proxy(log, {
      get(target, key) {
        if (key === "durable") return (row: AuditEvent) => durable(row, (r) => target.durable(r));
        if (key === "durableWithin")
          return (row: AuditEvent, ms: number) => durable(row, (r) => target.durableWithin(r, ms));
        const value: unknown = Reflect.get(target, key, target);
        return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
      },
    });
}

function latch(): { readonly opened: Promise<void>; open(): void } {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { opened, open };
}

async function until(what: string, condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(5);
  }
}

/** A message of about `lines` × 72 octets with a Message-ID that carries `id`. */
function letter(id: string, lines = 10): string {
  return message(
    { To: `ok-${id}@corp.test`, Subject: `order ${id}`, "Message-ID": `<${id}@client.test>` },
    `${"0123456789".repeat(7)}\n`.repeat(lines),
  );
}

const idOf = (content: Buffer | null): string =>
  /^Message-ID: <([^@>]+)@/im.exec(content?.toString("latin1") ?? "")?.[1] ?? "?";

/** Is the DATA "allow" row of the message with this id committed (visible to a query)? */
function dataRowCommitted(p: TestProxy, id: string): boolean {
  return p.audit
    .query({ order: "asc" })
    .some((row) => row.command === "DATA" && row.decision === "allow" && (row.target ?? "").includes(id));
}

const transactionLines = (f: FakeUpstream) => f.lines.filter((l) => /^(MAIL|RCPT|DATA)/.test(l));

/** A fake upstream that notes, at each end of data, whether that message's DATA row was committed in `proxy()`. */
async function checkingFake(): Promise<{
  server: FakeUpstream;
  atDot: { id: string; committed: boolean }[];
  proxy: (p: TestProxy) => void;
}> {
  const atDot: { id: string; committed: boolean }[] = [];
  let proxied: TestProxy | null = null;
  const server = await fake({
    keepData: true,
    onEndOfData: (content) => {
      const id = idOf(content);
      atDot.push({ id, committed: dataRowCommitted(proxied!, id) });
    },
  });
  return { server, atDot, proxy: (p) => (proxied = p) };
}

/** One transaction in one packet, as a pipelining client sends it, then its content; expects it accepted. */
async function pipelinedSend(c: RawClient, id: string, lines = 10): Promise<void> {
  c.write(`MAIL FROM:<alice@mailgator.test>\r\nRCPT TO:<ok-${id}@corp.test>\r\nDATA\r\n`);
  expect((await c.reply()).code).toBe(250);
  expect((await c.reply()).code).toBe(250);
  expect((await c.reply()).code).toBe(354);
  c.write(dataPayload(letter(id, lines)));
  expect((await c.reply()).code).toBe(250);
}

describe("the final dot waits for the audit commit", () => {
  test("held commit: MAIL, RCPT, DATA go out meanwhile; content and end of data once rows are on disk", async () => {
    const commit = latch();
    let resolved = 0;
    const atDot: { id: string; resolved: number; committed: boolean }[] = [];
    let p: TestProxy | null = null;
    const server = await fake({
      keepData: true,
      onEndOfData: (content) => {
        const id = idOf(content);
        atDot.push({ id, resolved, committed: dataRowCommitted(p!, id) });
      },
    });
    p = await proxy(server, {
      wrapAudit: withDurable(async (row, real) => {
        // The row is not even queued until the latch opens: a dot sent before would find no row on disk.
        await commit.opened;
        const id = await real(row);
        resolved++;
        return id;
      }),
    });
    const m = marker();
    const text = letter(m, 700); // about 50 KB
    const c = await loggedIn(p.port);
    expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
    expect((await c.command(`RCPT TO:<ok-${m}@corp.test>`)).code).toBe(250);
    expect((await c.command("DATA")).code).toBe(354);
    c.write(dataPayload(text));

    // The transaction up to DATA reaches the upstream while the commit is held; none of the content does.
    await until("DATA upstream", () => transactionLines(server).length === 3);
    expect(transactionLines(server)).toEqual([
      `MAIL FROM:<alice@mailgator.test> SIZE=${text.length}`,
      `RCPT TO:<ok-${m}@corp.test>`,
      "DATA",
    ]);
    await Bun.sleep(150);
    expect(server.dataOctets).toBe(0);
    expect(server.sizes).toEqual([]);
    expect(dataRowCommitted(p, m)).toBe(false);
    expect(c.reply(50)).rejects.toThrow("no reply");

    commit.open();
    const final = await c.reply();
    expect(final.code).toBe(250);
    // At the dot: all three rows of the message (MAIL FROM, RCPT TO, DATA) had been acknowledged and were committed.
    expect(atDot).toEqual([{ id: m, resolved: 3, committed: true }]);
    expect(server.sizes).toEqual([text.length]);
  });

  test("the replay commits when upstream accepts DATA: with a 60 s wait for company, sends take ms", async () => {
    const { server, atDot, proxy: checking } = await checkingFake();
    // The real audit log, with long waits: the send's rows wait up to 60 s for company and other rows are
    // committed every 60 s, so nothing but the replay's own request at DATA commits in time.
    const p = await proxy(server, { limits: { sendCommitWaitMs: 60_000 }, auditBatchMs: 60_000 });
    checking(p);
    const c = await loggedIn(p.port);
    const ids = [marker(), marker(), marker()];
    const started = performance.now();
    for (const id of ids) await pipelinedSend(c, id);
    expect(performance.now() - started).toBeLessThan(5_000);
    expect(atDot).toEqual(ids.map((id) => ({ id, committed: true })));
  });

  test("random-latency commits under pipelined load: at each end of data, its message's rows are on disk", async () => {
    const { server, atDot, proxy: checking } = await checkingFake();
    const p = await proxy(server, {
      wrapAudit: withDurable(async (row, real) => {
        await Bun.sleep(Math.random() * 4);
        return real(row);
      }),
    });
    checking(p);
    const sessions = 3;
    const perSession = 8;
    const ids: string[] = [];
    await Promise.all(
      Array.from({ length: sessions }, async () => {
        const c = await loggedIn(p.port);
        for (let i = 0; i < perSession; i++) {
          const id = marker();
          ids.push(id);
          await pipelinedSend(c, id, 1 + Math.floor(Math.random() * 200));
        }
        c.close();
      }),
    );
    expect(atDot.map((d) => d.id).sort()).toEqual([...ids].sort());
    expect(atDot.filter((d) => !d.committed)).toEqual([]);
  });

  test("failed commit at DATA upstream: no content/end of data, connection dropped, 451; session goes on", async () => {
    const server = await fake({ keepData: true });
    let failing = true;
    const m = marker();
    const text = letter(m, 700);
    const p = await proxy(server, {
      wrapAudit: withDurable(async (row, real) => {
        if (!failing) return real(row);
        // Fail only once DATA has reached the upstream (whether its 354 is back yet or not, no content may follow).
        await until("DATA upstream", () => transactionLines(server).length === 3);
        throw new AuditUnavailableError("audit: cannot write to the test log: database or disk is full");
      }),
    });
    const c = await loggedIn(p.port);
    expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
    expect((await c.command(`RCPT TO:<ok-${m}@corp.test>`)).code).toBe(250);
    expect((await c.command("DATA")).code).toBe(354);
    c.write(dataPayload(text));
    const final = await c.reply();
    expect(final.raw).toStartWith("451 4.3.0");
    expect(final.raw).toContain("nothing was sent");
    // The transaction had reached DATA upstream, and was abandoned there, before any content.
    expect(transactionLines(server)).toEqual([
      `MAIL FROM:<alice@mailgator.test> SIZE=${text.length}`,
      `RCPT TO:<ok-${m}@corp.test>`,
      "DATA",
    ]);
    await until("the upstream connection to close", () => server.abandoned === 1);
    expect(server.dataOctets).toBe(0);
    expect(server.sizes).toEqual([]);

    // The audit log works again: the same agent session sends, over a new upstream connection.
    failing = false;
    const n = marker();
    expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
    expect((await c.command(`RCPT TO:<ok-${n}@corp.test>`)).code).toBe(250);
    expect((await c.command("DATA")).code).toBe(354);
    c.write(dataPayload(letter(n)));
    expect((await c.reply()).code).toBe(250);
    expect(server.messages.map((b) => idOf(b))).toEqual([n]);
    expect(server.connections).toBe(2);
  });

  test("commit refused at once: 451, and no end of data upstream", async () => {
    const server = await fake({ keepData: true });
    const p = await proxy(server, {
      wrapAudit: withDurable(() =>
        Promise.reject(new AuditUnavailableError("audit: cannot write to the test log: disk I/O error")),
      ),
    });
    const m = marker();
    const c = await loggedIn(p.port);
    expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
    expect((await c.command(`RCPT TO:<ok-${m}@corp.test>`)).code).toBe(250);
    expect((await c.command("DATA")).code).toBe(354);
    c.write(dataPayload(letter(m)));
    expect((await c.reply()).raw).toStartWith("451 4.3.0");
    await Bun.sleep(50);
    expect(server.sizes).toEqual([]);
    expect(server.dataOctets).toBe(0);
  });
});

describe("the upstream connection is opened while the message comes in", () => {
  const vault = (token: string): string => vaultConfig(ALLOW_CORP, token);

  test("vault mode: EHLO and AUTH upstream during DATA, MAIL FROM only after the final dot", async () => {
    const token = generateToken();
    const server = await fake({ keepData: true });
    const p = await proxy(server, { rules: vault(token) });
    const c = await vaultClient(p.port, token);
    expect(server.connections).toBe(0);
    const m = marker();
    expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
    expect((await c.command(`RCPT TO:<ok-${m}@corp.test>`)).code).toBe(250);
    expect((await c.command("DATA")).code).toBe(354);
    const payload = dataPayload(letter(m, 100));
    c.write(payload.slice(0, 1000));
    await until("AUTH upstream", () => server.lines.some((l) => l.startsWith("AUTH")));
    await Bun.sleep(50);
    expect(server.lines.map((l) => l.split(" ")[0])).toEqual(["EHLO", "AUTH"]);
    c.write(payload.slice(1000));
    expect((await c.reply()).code).toBe(250);
    expect(server.lines.map((l) => l.split(" ")[0])).toEqual(["EHLO", "AUTH", "MAIL", "RCPT", "DATA"]);
    expect(server.connections).toBe(1);
  });

  test("a message refused after the final dot: the connection was opened, but no MAIL FROM was sent", async () => {
    const token = generateToken();
    const server = await fake({ keepData: true });
    const p = await proxy(server, { rules: vault(token) });
    const c = await vaultClient(p.port, token);
    const m = marker();
    expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
    expect((await c.command(`RCPT TO:<ok-${m}@corp.test>`)).code).toBe(250);
    expect((await c.command("DATA")).code).toBe(354);
    c.write(dataPayload(message({ To: `ok-${m}@corp.test`, Subject: `top secret ${m}` }, "hello")));
    expect((await c.reply()).raw).toStartWith("554 5.7.1");
    await until("AUTH upstream", () => server.lines.some((l) => l.startsWith("AUTH")));
    await Bun.sleep(50);
    expect(transactionLines(server)).toEqual([]);
    // The connection opened for it serves the next message.
    const n = marker();
    expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
    expect((await c.command(`RCPT TO:<ok-${n}@corp.test>`)).code).toBe(250);
    expect((await c.command("DATA")).code).toBe(354);
    c.write(dataPayload(letter(n)));
    expect((await c.reply()).code).toBe(250);
    expect(server.lines.map((l) => l.split(" ")[0])).toEqual(["EHLO", "AUTH", "MAIL", "RCPT", "DATA"]);
    expect(server.connections).toBe(1);
  });

  test("an agent that leaves during DATA: the connection being opened is closed, nothing of it sent", async () => {
    const token = generateToken();
    const server = await fake({ keepData: true });
    const p = await proxy(server, { rules: vault(token) });
    const c = await vaultClient(p.port, token);
    const m = marker();
    expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
    expect((await c.command(`RCPT TO:<ok-${m}@corp.test>`)).code).toBe(250);
    expect((await c.command("DATA")).code).toBe(354);
    c.write(dataPayload(letter(m)).slice(0, 200));
    c.close();
    await until("the upstream connection to end", () => server.connections === 1 && server.lines.includes("QUIT"));
    expect(transactionLines(server)).toEqual([]);
  });
});
