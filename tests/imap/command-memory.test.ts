/**
 * The command memory budget against Dovecot (docs/reliability.md "Command memory"): an agent's command is framed
 * whole before it is decided, an APPEND's message included, so without a shared budget one agent's ten sessions held
 * ten messages of 50 MiB at once (some 760 MiB of RSS from 500 KiB of deflated input). Here, with a small budget: a
 * large literal waits while another session's holds the budget and goes on once it is given back; a literal of the
 * budget plus the free octets is taken, one octet more is refused with `NO [LIMIT]` (synchronizing or not) and the
 * session goes on; a command that holds a reservation is refused rather than wait; a session that ends while
 * holding or waiting gives everything back.
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import { COMMAND_MEMORY_BUDGET, COMMAND_MEMORY_FREE, MAX_COMMAND_BYTES } from "../../src/imap/limits.ts";
import { createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

const KiB = 1024;
const BUDGET = 512 * KiB;
const FREE = 64 * KiB;

let mailbox: TestMailbox;
let proxy: TestProxy;

beforeAll(async () => {
  mailbox = await createMailbox();
  proxy = await startTestProxy({ commandMemoryBudget: BUDGET, commandMemoryFree: FREE });
});

afterAll(async () => {
  await proxy.close();
});

/** A message of exactly `size` octets. */
function message(size: number): string {
  const head = "From: a@mailgator.test\r\nTo: b@mailgator.test\r\nSubject: big\r\n\r\n";
  const line = `${"m".repeat(98)}\r\n`;
  let body = line.repeat(Math.floor((size - head.length) / line.length));
  body += "x".repeat(size - head.length - body.length);
  return head + body;
}

async function until(what: string, done: () => boolean): Promise<void> {
  for (let i = 0; i < 400 && !done(); i++) await Bun.sleep(25);
  if (!done()) throw new Error(`not within 10 s: ${what}`);
}

const memory = () => proxy.proxy.commandMemory;

test("the defaults: five of the largest commands fit the budget; an ordinary command never counts", () => {
  expect(COMMAND_MEMORY_BUDGET).toBe(256 * 1024 * 1024);
  expect(COMMAND_MEMORY_FREE).toBe(1024 * 1024);
  expect(Math.floor(COMMAND_MEMORY_BUDGET / MAX_COMMAND_BYTES)).toBe(5);
});

test("a large APPEND waits while another session's holds the budget, and runs once it is given back", async () => {
  const a = await RawImap.login(proxy.port, mailbox);
  const b = await RawImap.login(proxy.port, mailbox);
  const big = message(BUDGET + FREE);
  a.write(`A APPEND INBOX {${big.length}}\r\n`);
  await a.readUntil((s) => s.includes("+ "));
  a.take();
  a.write(big.slice(0, 100_000));
  await until("A's reservation", () => memory().used === BUDGET);

  const second = message(FREE + 1);
  b.write(`B APPEND INBOX {${second.length}}\r\n`);
  await until("B waits", () => memory().waiting === 1);
  expect(b.take()).toBe(""); // no `+` while it waits

  a.write(`${big.slice(100_000)}\r\n`);
  expect(statusOf(await a.waitTagged("A"), "A")).toStartWith("A OK");
  await b.readUntil((s) => s.includes("+ "));
  b.take();
  expect(memory().used).toBe(1);
  b.write(`${second}\r\n`);
  expect(statusOf(await b.waitTagged("B"), "B")).toStartWith("B OK");
  expect(memory()).toMatchObject({ used: 0, waiting: 0 });
  a.close();
  b.close();
});

test("at the limit a literal is taken; one octet past it gets NO [LIMIT] and the session goes on", async () => {
  const c = await RawImap.login(proxy.port, mailbox);
  const at = message(BUDGET + FREE);
  c.write(`A APPEND INBOX {${at.length}}\r\n`);
  await c.readUntil((s) => s.includes("+ "));
  c.take();
  c.write(`${at}\r\n`);
  expect(statusOf(await c.waitTagged("A"), "A")).toStartWith("A OK");

  const past = message(BUDGET + FREE + 1);
  const sync = await c.command("B", `APPEND INBOX {${past.length}}`);
  expect(statusOf(sync, "B")).toBe("B NO [LIMIT] Too many large literals at once on this server; try again later");
  // LITERAL+: the octets are on their way; they are read and dropped.
  c.write(`C APPEND INBOX {${past.length}+}\r\n${past}\r\n`);
  expect(statusOf(await c.waitTagged("C"), "C")).toStartWith("C NO [LIMIT]");
  expect(statusOf(await c.command("D", "NOOP"), "D")).toStartWith("D OK");
  expect(memory()).toMatchObject({ used: 0, waiting: 0 });
  c.close();
});

test("a command that holds a reservation is refused rather than wait; its reservation is given back", async () => {
  const c = await RawImap.login(proxy.port, mailbox);
  // MULTIAPPEND: the first message takes most of the budget, the second would need more than is left.
  const first = message(FREE + BUDGET - 1000);
  const second = message(2000);
  c.write(`A APPEND INBOX {${first.length}+}\r\n${first} {${second.length}}\r\n`);
  const reply = await c.waitTagged("A");
  expect(statusOf(reply, "A")).toStartWith("A NO [LIMIT]");
  expect(memory()).toMatchObject({ used: 0, waiting: 0 });
  expect(statusOf(await c.command("B", "NOOP"), "B")).toStartWith("B OK");
  c.close();
});

test("sessions that end while holding or waiting give everything back", async () => {
  const a = await RawImap.login(proxy.port, mailbox);
  const b = await RawImap.login(proxy.port, mailbox);
  a.write(`A APPEND INBOX {${BUDGET + FREE}}\r\n`);
  await a.readUntil((s) => s.includes("+ "));
  a.write("x".repeat(1000));
  await until("A's reservation", () => memory().used === BUDGET);
  b.write(`B APPEND INBOX {${FREE + 10}}\r\n`);
  await until("B waits", () => memory().waiting === 1);
  b.close();
  await until("B left the queue", () => memory().waiting === 0);
  expect(memory().used).toBe(BUDGET);
  a.close();
  await until("A gave it back", () => memory().used === 0);
  // The budget is whole again: a third session's large literal is taken at once.
  const c = await RawImap.login(proxy.port, mailbox);
  const big = message(BUDGET + FREE);
  c.write(`C APPEND INBOX {${big.length}+}\r\n${big}\r\n`);
  expect(statusOf(await c.waitTagged("C"), "C")).toStartWith("C OK");
  c.close();
});
