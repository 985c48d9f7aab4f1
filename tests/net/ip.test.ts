import { expect, test } from "bun:test";
import { ipAllowed } from "../../src/net/ip.ts";
import { FailureThrottle } from "../../src/net/throttle.ts";

test("allowed_ips: exact addresses, CIDR ranges, IPv4-mapped IPv6, null = any", () => {
  expect(ipAllowed("127.0.0.1", null)).toBe(true);
  expect(ipAllowed("127.0.0.1", ["127.0.0.1"])).toBe(true);
  expect(ipAllowed("127.0.0.2", ["127.0.0.1"])).toBe(false);
  expect(ipAllowed("10.1.2.3", ["10.0.0.0/8"])).toBe(true);
  expect(ipAllowed("11.1.2.3", ["10.0.0.0/8"])).toBe(false);
  expect(ipAllowed("::ffff:10.1.2.3", ["10.0.0.0/8"])).toBe(true);
  expect(ipAllowed("::1", ["::1"])).toBe(true);
  expect(ipAllowed("2001:db8::5", ["2001:db8::/32"])).toBe(true);
  expect(ipAllowed("2001:db9::5", ["2001:db8::/32"])).toBe(false);
  expect(ipAllowed("not an ip", ["0.0.0.0/0"])).toBe(false);
  expect(ipAllowed("1.2.3.4", ["0.0.0.0/0"])).toBe(true);
});

test("failed logins: each failure adds a step, up to the maximum; the window forgets", () => {
  const t = new FailureThrottle({ stepMs: 100, maxMs: 250, windowMs: 1000, maxTracked: 2 });
  expect(t.fail("a", 0)).toBe(100);
  expect(t.fail("a", 10)).toBe(200);
  expect(t.fail("a", 20)).toBe(250);
  expect(t.fail("a", 2000)).toBe(100);
  t.fail("b", 2000);
  t.fail("c", 2000);
  expect(t.failures("a", 2000)).toBe(0);
  expect(t.failures("c", 2000)).toBe(1);
});
