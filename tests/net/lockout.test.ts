/**
 * LoginLockout (src/net/lockout.ts, docs/config.md "Who connects"): the counts, the lock's end, memory bounded
 * under a flood of distinct addresses and names (which never ends a lock in force early), and which names a failure
 * counts under.
 */

import { expect, test } from "bun:test";
import { LOGIN_LOCKOUT, LoginLockout, lockoutName } from "../../src/net/lockout.ts";

test("an address: locked at its limit-th failure, for lockMs, and never again counted while locked", () => {
  const l = new LoginLockout();
  const { failuresPerAddress: limit, lockMs } = LOGIN_LOCKOUT;
  for (let i = 1; i < limit; i++) expect(l.fail("192.0.2.1", `name-${i}`, 1000)).toEqual([]);
  expect(l.locked("192.0.2.1", "x", 1000)).toBeNull();
  expect(l.fail("192.0.2.1", "name-last", 1000)).toEqual([{ by: "address", limit, until: 1000 + lockMs }]);
  expect(l.locked("192.0.2.1", "x", 1000 + lockMs - 1)).toEqual({ by: "address", limit, until: 1000 + lockMs });
  // A failure decided before the lock and answered after it does not extend it.
  expect(l.fail("192.0.2.1", "late", 2000)).toEqual([]);
  expect(l.locked("192.0.2.1", "x", 1000 + lockMs)).toBeNull();
  // After the lock the count starts over.
  expect(l.fail("192.0.2.1", "again", 1000 + lockMs)).toEqual([]);
  // Another address of the same IPv6 /64 is the same client; another /64 is not.
  for (let i = 0; i < limit; i++) l.fail(`2001:db8:0:1::${i + 1}`, null, 5000);
  expect(l.locked("2001:db8:0:1::ffff", null, 5000)?.by).toBe("address");
  expect(l.locked("2001:db8:0:2::1", null, 5000)).toBeNull();
});

test("a window without the limit starts over; a name is counted without case, from every address", () => {
  const l = new LoginLockout();
  const { failuresPerName: limit, windowMs } = LOGIN_LOCKOUT;
  for (let i = 1; i < limit; i++) l.fail(`198.51.100.${i}`, i % 2 ? "Bob" : "bob", 0);
  // The window passes: the 29 are forgotten.
  expect(l.fail("198.51.100.200", "BOB", windowMs)).toEqual([]);
  for (let i = 2; i < limit; i++) l.fail(`203.0.113.${i}`, "bob", windowMs);
  expect(l.locked("203.0.113.250", "bob", windowMs)).toBeNull();
  expect(l.fail("203.0.113.251", "bob", windowMs)[0]?.by).toBe("name");
  expect(l.locked("203.0.113.252", "BoB", windowMs)?.by).toBe("name");
  expect(l.locked("203.0.113.252", "alice", windowMs)).toBeNull();
});

test("a flood of distinct addresses and names keeps at most maxTracked of each", () => {
  const l = new LoginLockout({ ...LOGIN_LOCKOUT, maxTracked: 100 });
  for (let i = 0; i < 20_000; i++) l.fail(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, `n${i}`.repeat(50), 0);
  expect(l.size).toBeLessThanOrEqual(200);
});

test(`each table counts ${LOGIN_LOCKOUT.maxTracked} entries at once; one more forgets the oldest`, () => {
  const { failuresPerAddress, failuresPerName, maxTracked } = LOGIN_LOCKOUT;
  const address = (i: number) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
  for (const more of [0, 1]) {
    const kept = more === 0;
    // An address a failure short of its lock, then other addresses: `maxTracked` of them in all, or one more.
    const byAddress = new LoginLockout();
    for (let i = 1; i < failuresPerAddress; i++) byAddress.fail(address(0), null, 0);
    for (let i = 1; i < maxTracked + more; i++) byAddress.fail(address(i), null, 0);
    expect(byAddress.size).toBe(maxTracked);
    expect(byAddress.fail(address(0), null, 0)).toEqual(kept ? [expect.objectContaining({ by: "address" })] : []);
    // The same for a name (all from one address, which the address table holds apart).
    const byName = new LoginLockout();
    for (let i = 1; i < failuresPerName; i++) byName.fail("192.0.2.1", "bob", 0);
    for (let i = 1; i < maxTracked + more; i++) byName.fail("192.0.2.1", `name-${i}`, 0);
    expect(byName.size).toBe(1 + maxTracked);
    expect(byName.fail("192.0.2.1", "bob", 0)).toEqual(kept ? [expect.objectContaining({ by: "name" })] : []);
  }
});

test("failures under other addresses or names do not end a lock: the oldest entry not locked is forgotten", () => {
  const l = new LoginLockout({ ...LOGIN_LOCKOUT, maxTracked: 3 });
  const { failuresPerAddress: perAddress, failuresPerName: perName } = LOGIN_LOCKOUT;
  for (let i = 0; i < perAddress; i++) l.fail("192.0.2.1", null, 0);
  for (let i = 0; i < perName; i++) l.fail(`198.51.100.${i}`, "bob", 0);
  expect(l.locked("192.0.2.1", null, 1)?.by).toBe("address");
  expect(l.locked("203.0.113.9", "BOB", 1)?.by).toBe("name");
  // A flood of other addresses and names, each failing once: the two locks stay, memory stays bounded.
  for (let i = 0; i < 1000; i++) l.fail(`10.0.${i >> 8}.${i & 255}`, `other-${i}`, 2);
  expect(l.size).toBe(6);
  expect(l.locked("192.0.2.1", null, 3)?.by).toBe("address");
  expect(l.locked("203.0.113.9", "bob", 3)?.by).toBe("name");
});

test("when every other entry is a lock in force, the oldest lock goes and new failures are still counted", () => {
  const l = new LoginLockout({ ...LOGIN_LOCKOUT, maxTracked: 3 });
  const lock = (client: string) => {
    for (let i = 0; i < LOGIN_LOCKOUT.failuresPerAddress; i++) l.fail(client, null, 0);
  };
  lock("192.0.2.1");
  lock("192.0.2.2");
  lock("192.0.2.3");
  expect(l.fail("192.0.2.4", null, 1)).toEqual([]);
  expect(l.locked("192.0.2.1", null, 1)).toBeNull();
  expect(l.locked("192.0.2.2", null, 1)?.by).toBe("address");
  expect(l.locked("192.0.2.3", null, 1)?.by).toBe("address");
  for (let i = 1; i < LOGIN_LOCKOUT.failuresPerAddress - 1; i++) l.fail("192.0.2.4", null, 1);
  expect(l.fail("192.0.2.4", null, 1)).toEqual([expect.objectContaining({ by: "address" })]);
});

test("a name is counted in pass-through mode only: vault agents log in with 256-bit tokens", () => {
  expect(lockoutName([], "bob@corp.test")).toBe("bob@corp.test");
  expect(lockoutName([], null)).toBeNull();
  const agents = [{ name: "bot", allowedIps: null }];
  expect(lockoutName(agents, "bot")).toBeNull();
  expect(lockoutName(agents, "nobody")).toBeNull();
});

test("withdraw: a failure counted before its verdict, then accepted, is taken back; a lock it started ends", () => {
  const l = new LoginLockout();
  const { failuresPerAddress: limit, lockMs } = LOGIN_LOCKOUT;
  // limit - 1 failures, then one counted at a hang-up whose login upstream then accepted: no lock after all.
  for (let i = 1; i < limit; i++) l.fail("192.0.2.7", null, 1000);
  expect(l.fail("192.0.2.7", null, 1000)).toEqual([{ by: "address", limit, until: 1000 + lockMs }]);
  l.withdraw("192.0.2.7", null, 1001);
  expect(l.locked("192.0.2.7", null, 1001)).toBeNull();
  // The limit-1 real failures still count: the next one locks again.
  expect(l.fail("192.0.2.7", null, 1002)[0]?.by).toBe("address");
  // A lock that the other failures hold stays: limit + 1 counted, one taken back, limit remain.
  const m = new LoginLockout();
  for (let i = 0; i <= limit; i++) m.fail("192.0.2.8", null, 1000);
  m.withdraw("192.0.2.8", null, 1001);
  expect(m.locked("192.0.2.8", null, 1001)?.by).toBe("address");
  // Nothing to take back: nothing happens.
  m.withdraw("192.0.2.9", "nobody", 1001);
  expect(m.locked("192.0.2.9", "nobody", 1001)).toBeNull();
});
