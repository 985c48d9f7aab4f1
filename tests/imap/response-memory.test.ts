/**
 * The response memory budget end to end against Dovecot (src/imap/memory.ts, docs/reliability.md "Response
 * memory"): a large message held for an agent that does not read makes the next agent's large fetch wait instead
 * of the proxy's memory growing, and that fetch completes once the first agent reads; a literal of the whole
 * budget is relayed, one octet more ends the session; every reservation is given back. A response line (the UIDs of a
 * large folder) is counted as its octets arrive: it waits while the budget is short, fits at the limit and ends the
 * session one octet past it. And what the proxy holds in fact stays near what is reserved: the peak RSS while two
 * agents do not read a large message each.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { RESPONSE_LINE_RESERVATION, RESPONSE_MEMORY_BUDGET, RESPONSE_MEMORY_FREE } from "../../src/imap/limits.ts";
import { createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { DeflateClient } from "./deflate-client.ts";
import { RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

const MiB = 1024 * 1024;
/** Larger than what loopback's socket buffers take, so that most of it stays in the proxy while nobody reads. */
const LARGE = 24 * MiB;
/** Messages whose memory the proxy's RSS is measured by: far larger than what else it allocates meanwhile. */
const HUGE = 64 * MiB;
/** A third user, with two messages of HUGE octets in INBOX. */
let huge: TestMailbox;

let mailbox: TestMailbox;
/** A second user whose folder `Big` holds BIG messages, so that `UID SEARCH ALL` there answers with a long line. */
let many: TestMailbox;
const BIG = 20_000;
/** Octets of one response's lines that are not counted in these tests (64 KiB, as the default's 1 MiB). */
const FREE = 64 * 1024;
let proxies: TestProxy[] = [];

/** A message of exactly `size` octets (CRLF line ends, as Dovecot stores and returns them). */
function message(size: number, fill: string): string {
  const head = `From: a@mailgator.test\r\nTo: b@mailgator.test\r\nSubject: ${fill} ${size}\r\n\r\n`;
  const line = `${fill.repeat(998)}\r\n`;
  let body = line.repeat(Math.floor((size - head.length) / line.length));
  body += "x".repeat(size - head.length - body.length);
  return head + body;
}

/** A message of `size` octets of base64 lines: what deflate cannot shrink much (an attachment). */
function incompressible(size: number): string {
  const head = "From: a@mailgator.test\r\nTo: b@mailgator.test\r\nSubject: random\r\n\r\n";
  const lines = randomBytes(size)
    .toString("base64")
    .match(/.{1,76}/g)!;
  return (head + lines.join("\r\n")).slice(0, size);
}

beforeAll(async () => {
  many = await createMailbox({ name: "response-memory-lines", seed: { folders: { Big: BIG }, attachmentRatio: 0 } });
  mailbox = await createMailbox();
  // Through an allow-all proxy with the default budget: APPEND of each, UIDs 1 to 4.
  const p = await startTestProxy({});
  proxies.push(p);
  const c = await RawImap.login(p.port, mailbox);
  for (const text of [message(LARGE, "a"), message(4 * MiB, "b"), message(4 * MiB + 1, "c"), incompressible(LARGE)]) {
    c.write(`A APPEND INBOX {${text.length}+}\r\n`);
    c.socket.write(Buffer.from(text, "latin1"));
    c.write("\r\n");
    expect(statusOf(await c.waitTagged("A"), "A")).toStartWith("A OK");
  }
  c.close();
  // Two messages of HUGE octets, appended to Dovecot directly (larger than the proxy lets an APPEND be).
  huge = await createMailbox({ name: "response-memory-huge" });
  const d = await RawImap.login(upstreams().ports.imap, huge);
  for (const fill of ["h", "i"]) {
    d.write(`A APPEND INBOX {${HUGE}+}\r\n`);
    d.socket.write(Buffer.from(message(HUGE, fill), "latin1"));
    d.write("\r\n");
    expect(statusOf(await d.waitTagged("A"), "A")).toStartWith("A OK");
  }
  d.close();
});

afterAll(async () => {
  for (const p of proxies) await p.close();
  proxies = [];
});

/** A proxy with a budget of `budget` octets (and `free` octets of a response not counted, when given). */
async function proxyWith(budget: number, free?: number): Promise<TestProxy> {
  const p = await startTestProxy({
    responseMemoryBudget: budget,
    ...(free === undefined ? {} : { responseMemoryFree: free }),
  });
  proxies.push(p);
  return p;
}

/** Reads until the tagged reply `tag OK|NO|BAD` is at the end of what came, checking only the end (a large body). */
async function untilTagged(c: RawImap, tag: string): Promise<string> {
  const re = new RegExp(`\\r\\n${tag} (OK|NO|BAD)[^\\r\\n]*\\r\\n$`);
  return c.readUntil((b) => re.test(b.slice(-200)), 60_000);
}

/** An agent logged in through `p`, with INBOX selected. */
async function inInbox(p: TestProxy): Promise<RawImap> {
  const c = await RawImap.login(p.port, mailbox);
  expect(statusOf(await c.command("S", "SELECT INBOX"), "S")).toStartWith("S OK");
  return c;
}

async function until(what: string, condition: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !condition(); i++) await Bun.sleep(10);
  if (!condition()) throw new Error(`not reached: ${what}`);
}

test("the defaults are what docs/reliability.md says", () => {
  expect(RESPONSE_MEMORY_BUDGET).toBe(512 * MiB);
  expect(RESPONSE_MEMORY_FREE).toBe(MiB);
  expect(RESPONSE_LINE_RESERVATION).toBe(32 * MiB + 2);
});

test("an agent that does not read holds its message's memory; the next large fetch waits, then completes", async () => {
  const p = await proxyWith(LARGE + 2 * MiB);
  const memory = p.proxy.responseMemory;
  const slow = await inInbox(p);
  const next = await inInbox(p);
  try {
    slow.socket.pause();
    slow.write("F UID FETCH 1 BODY.PEEK[]\r\n");
    await until("the first message reserved", () => memory.used >= LARGE);
    // 4 MiB more do not fit beside it: the second agent's fetch waits, and nothing of its message is read yet.
    next.write("G UID FETCH 2 BODY.PEEK[]\r\n");
    await until("the second fetch waiting", () => memory.waiting === 1);
    await Bun.sleep(500);
    expect(memory.waiting).toBe(1);
    expect(next.take()).toBe("");
    expect(memory.used).toBeLessThanOrEqual(memory.budget);
    // A small fetch is not held up by the budget.
    const small = await inInbox(p);
    expect(statusOf(await small.command("H", "UID FETCH 1:3 (RFC822.SIZE FLAGS)"), "H")).toStartWith("H OK");
    small.close();
    // The first agent reads: its reservation is given back, the second fetch goes on.
    slow.socket.resume();
    const first = await untilTagged(slow, "F");
    expect(first).toContain(`BODY[] {${LARGE}}\r\n`);
    expect(first.length).toBeGreaterThan(LARGE);
    const second = await untilTagged(next, "G");
    expect(second).toContain(`BODY[] {${4 * MiB}}\r\n`);
    expect(second).toMatch(/\r\nG OK [^\r\n]*\r\n$/);
    await until("every reservation given back", () => memory.used === 0 && memory.waiting === 0);
  } finally {
    slow.close();
    next.close();
  }
});

/** This process's resident memory in MiB (`VmRSS`) and its peak (`VmHWM`). */
function rss(): { now: number; peak: number } {
  const status = readFileSync("/proc/self/status", "utf8");
  const mib = (field: string): number => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)![1]) / 1024;
  return { now: mib("VmRSS"), peak: mib("VmHWM") };
}

test("agents that do not read large messages: the proxy's memory stays near what the budget counts", async () => {
  // Two agents each fetch a 64 MiB message and do not read it. Before, the peak RSS of this process (the proxy runs
  // in it) grew by 195 to 399 MiB, 1.5 to 3 times the two messages: each literal's buffer grown by doubling, the
  // copy the runtime made of the ~60 MiB the kernel did not take beside the literal itself, and the read chunks
  // left to the garbage collector. Now by 143 to 145 MiB: the two messages, an eighth of the budget of garbage at
  // most (RESPONSE_GARBAGE_SHARE) and a piece (WRITE_PIECE) per agent; 48 MiB of margin for those and the rest of
  // the process. The agents then read their messages whole, and every reservation is given back.
  const size = HUGE / MiB;
  const p = await proxyWith(2 * HUGE + 2 * MiB);
  const memory = p.proxy.responseMemory;
  const agents = [await RawImap.login(p.port, huge), await RawImap.login(p.port, huge)];
  try {
    for (const c of agents) expect(statusOf(await c.command("S", "SELECT INBOX"), "S")).toStartWith("S OK");
    Bun.gc(true);
    await Bun.sleep(100);
    writeFileSync("/proc/self/clear_refs", "5");
    const before = rss();
    for (const [i, c] of agents.entries()) {
      c.socket.pause();
      c.write(`F UID FETCH ${i + 1} BODY.PEEK[]\r\n`);
    }
    await until("both messages reserved", () => memory.used === 2 * HUGE);
    // Both messages read from Dovecot (well under a second on loopback), and what the agents did not take queued.
    for (let i = 0; i < 200 && rss().now - before.now < 2 * size - 16; i++) await Bun.sleep(50);
    await Bun.sleep(500);
    const growth = rss().peak - before.now;
    expect(growth).toBeGreaterThan(2 * size - 16);
    expect(growth).toBeLessThan(2 * size + 48);
    for (const c of agents) {
      c.socket.resume();
      const got = await untilTagged(c, "F");
      expect(got).toContain(`BODY[] {${HUGE}}\r\n`);
      expect(got.length).toBeGreaterThan(HUGE);
    }
    await until("every reservation given back", () => memory.used === 0 && memory.waiting === 0);
  } finally {
    for (const c of agents) c.close();
  }
});

test("a literal of the whole budget is relayed; one octet more ends the session; nothing stays reserved", async () => {
  const p = await proxyWith(4 * MiB);
  const memory = p.proxy.responseMemory;
  const c = await inInbox(p);
  try {
    c.write("F UID FETCH 2 BODY.PEEK[]\r\n");
    expect(await untilTagged(c, "F")).toContain(`BODY[] {${4 * MiB}}\r\n`);
    c.take();
    c.write("G UID FETCH 3 BODY.PEEK[]\r\n");
    const end = await c.readUntil(() => false, 15_000).catch(() => "");
    expect(end).toContain("* BYE");
    expect(c.closed).toBe(true);
    const rows = (await p.rows()).filter((r) => r.decision === "error");
    expect(rows.map((r) => r.reason)).toEqual([expect.stringContaining("memory than the proxy's budget")]);
    await until("every reservation given back", () => memory.used === 0 && memory.waiting === 0);
  } finally {
    c.close();
  }
});

test("COMPRESS: the deflated copy an agent does not read holds the reservation, as the plain one does", async () => {
  const p = await proxyWith(LARGE + 2 * MiB);
  const memory = p.proxy.responseMemory;
  const slow = await DeflateClient.open(p.port);
  const next = await inInbox(p);
  try {
    expect(statusOf(await slow.command("L", `LOGIN "${mailbox.user}" "${mailbox.password}"`), "L")).toStartWith("L OK");
    expect(statusOf(await slow.command("S", "SELECT INBOX"), "S")).toStartWith("S OK");
    await slow.compress("Z");
    slow.socket.pause();
    slow.send("F UID FETCH 4 BODY.PEEK[]\r\n");
    await until("the message reserved", () => memory.used >= LARGE);
    next.write("G UID FETCH 2 BODY.PEEK[]\r\n");
    await until("the second fetch waiting", () => memory.waiting === 1);
    // The deflater reads the whole message within a second or two; its output then waits in the socket for the
    // agent, and the reservation with it (given back once the deflater had read it, it fell to 0 here).
    for (let i = 0; i < 100; i++) {
      expect(memory.used).toBeGreaterThanOrEqual(LARGE);
      expect(memory.waiting).toBe(1);
      await Bun.sleep(50);
    }
    slow.socket.resume();
    const first = await slow.until((t) => /\r\nF OK [^\r\n]*\r\n$/.test(t.slice(-200)), 60_000);
    expect(first).toContain(`BODY[] {${LARGE}}\r\n`);
    expect(await untilTagged(next, "G")).toContain(`BODY[] {${4 * MiB}}\r\n`);
    await until("every reservation given back", () => memory.used === 0 && memory.waiting === 0);
  } finally {
    slow.close();
    next.close();
  }
});

test("sessions that end while they hold or wait for memory give it back", async () => {
  const p = await proxyWith(LARGE + 2 * MiB);
  const memory = p.proxy.responseMemory;
  const holder = await inInbox(p);
  const waiter = await inInbox(p);
  holder.socket.pause();
  holder.write("F UID FETCH 1 BODY.PEEK[]\r\n");
  await until("the first message reserved", () => memory.used >= LARGE);
  waiter.write("G UID FETCH 2 BODY.PEEK[]\r\n");
  await until("the second fetch waiting", () => memory.waiting === 1);
  waiter.close();
  holder.close();
  await until("every reservation given back", () => memory.used === 0 && memory.waiting === 0);
  // And the budget serves the next agent in full.
  const c = await inInbox(p);
  c.write("F UID FETCH 1 BODY.PEEK[]\r\n");
  expect(await untilTagged(c, "F")).toContain(`BODY[] {${LARGE}}\r\n`);
  c.close();
});

/** Octets of Dovecot's `* SEARCH 1 2 ... n` line with its CRLF: what the proxy's `UID SEARCH ALL` at SELECT reads. */
function searchLineOctets(n: number): number {
  let octets = "* SEARCH".length + 2;
  for (let i = 1; i <= n; i++) octets += 1 + String(i).length;
  return octets;
}

describe("response lines", () => {
  test("the test folder's UID list is a line past the free octets", () => {
    expect(searchLineOctets(BIG)).toBeGreaterThan(FREE);
    expect(searchLineOctets(BIG)).toBe(108_904);
  });

  test("a long line waits while the budget is short, then completes; a small response does not wait", async () => {
    // The line's reservation is the longest line's (RESPONSE_LINE_RESERVATION) or the whole budget if smaller:
    // here the budget less what the unread message holds is short of it.
    const p = await proxyWith(RESPONSE_LINE_RESERVATION + MiB, FREE);
    const memory = p.proxy.responseMemory;
    const slow = await inInbox(p);
    const next = await RawImap.login(p.port, many);
    try {
      slow.socket.pause();
      slow.write("F UID FETCH 1 BODY.PEEK[]\r\n");
      await until("the message reserved", () => memory.used >= LARGE);
      // SELECT reads every UID of the folder in one line: it waits for room.
      next.write("S SELECT Big\r\n");
      await until("the line waiting", () => memory.waiting === 1);
      await Bun.sleep(300);
      expect(memory.waiting).toBe(1);
      expect(next.take()).toBe("");
      const small = await RawImap.login(p.port, many);
      expect(statusOf(await small.command("L", 'LIST "" Big'), "L")).toStartWith("L OK");
      small.close();
      slow.socket.resume();
      expect(await untilTagged(slow, "F")).toContain(`BODY[] {${LARGE}}\r\n`);
      expect(await untilTagged(next, "S")).toContain(`* ${BIG} EXISTS\r\n`);
      next.take();
      // The agent's own search of the same folder: all of it relayed.
      next.write("A UID SEARCH ALL\r\n");
      const answer = await untilTagged(next, "A");
      const line = answer.split("\r\n").find((l) => l.startsWith("* SEARCH "))!;
      expect(line.split(" ").length - 2).toBe(BIG);
      expect(line.length + 2).toBe(searchLineOctets(BIG));
      await until("every reservation given back", () => memory.used === 0 && memory.waiting === 0);
    } finally {
      slow.close();
      next.close();
    }
  });

  test("a line of the free octets and the whole budget is read; one octet more ends the session", async () => {
    const octets = searchLineOctets(BIG);
    for (const [budget, fits] of [
      [octets - FREE, true],
      [octets - FREE - 1, false],
    ] as const) {
      const p = await proxyWith(budget, FREE);
      const memory = p.proxy.responseMemory;
      const c = await RawImap.login(p.port, many);
      try {
        c.write("S SELECT Big\r\n");
        if (fits) {
          expect(await untilTagged(c, "S")).toContain(`* ${BIG} EXISTS\r\n`);
          c.take();
          c.write("A UID SEARCH ALL\r\n");
          const answer = await untilTagged(c, "A");
          expect(answer).toContain(` ${BIG}\r\nA OK`);
        } else {
          const end = await c.readUntil(() => false, 15_000).catch(() => "");
          expect(end).toContain("* BYE");
          expect(end).not.toContain("S OK");
          expect(c.closed).toBe(true);
          const rows = (await p.rows()).filter((r) => r.decision === "error");
          expect(rows.map((r) => r.reason)).toEqual([expect.stringContaining("memory than the proxy's budget")]);
        }
        await until("every reservation given back", () => memory.used === 0 && memory.waiting === 0);
      } finally {
        c.close();
      }
    }
  });
});
