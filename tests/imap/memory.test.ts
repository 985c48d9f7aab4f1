/** The response memory budget's bookkeeping (src/imap/memory.ts); end to end in tests/imap/response-memory.test.ts. */

import { expect, test } from "bun:test";
import { ResponseMemory } from "../../src/imap/memory.ts";

test("reservations up to the budget at once; past it they wait, first come first served", async () => {
  const m = new ResponseMemory(100);
  expect(m.tryTake(60)).toBe(true);
  expect(m.tryTake(40)).toBe(true);
  expect(m.used).toBe(100);
  expect(m.tryTake(1)).toBe(false);
  const order: string[] = [];
  const big = m.take(80).then(() => order.push("80"));
  const small = m.take(10).then(() => order.push("10"));
  // Someone waits: a small reservation that would fit does not pass them.
  m.give(40);
  expect(m.tryTake(10)).toBe(false);
  await Bun.sleep(0);
  expect(order).toEqual([]);
  m.give(60);
  await Promise.all([big, small]);
  expect(order).toEqual(["80", "10"]);
  expect(m.used).toBe(90);
  expect(m.waiting).toBe(0);
  m.give(90);
  expect(m.used).toBe(0);
});

test("the whole budget can be reserved; one octet more never can", () => {
  const m = new ResponseMemory(100);
  expect(m.tryTake(100)).toBe(true);
  m.give(100);
  expect(m.tryTake(101)).toBe(false);
  expect(() => m.take(101)).toThrow(RangeError);
  expect(() => m.give(1)).toThrow(/given back than taken/);
});
