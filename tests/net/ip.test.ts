import { expect, test } from "bun:test";
import { LOGIN_THROTTLE } from "../../src/imap/limits.ts";
import { ipAllowed, readIpEntry } from "../../src/net/ip.ts";
import { FailureThrottle, failureDelay } from "../../src/net/throttle.ts";
import {
  AUTH_FAILURE_MAX_DELAY_MS,
  AUTH_FAILURE_STEP_MS,
  AUTH_FAILURE_TRACKED_ADDRESSES,
  AUTH_FAILURE_WINDOW_MS,
} from "../../src/smtp/limits.ts";

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
  expect(t.failures("a", 2000)).toBe(1);
  t.fail("c", 2000);
  expect(t.failures("a", 2000)).toBe(0);
  expect(t.failures("b", 2000)).toBe(1);
  expect(t.failures("c", 2000)).toBe(1);
});

// docs/config.md "Who connects", docs/smtp.md "Limits", docs/reliability.md "Long runs".
const listeners = {
  imap: LOGIN_THROTTLE,
  smtp: {
    stepMs: AUTH_FAILURE_STEP_MS,
    maxMs: AUTH_FAILURE_MAX_DELAY_MS,
    windowMs: AUTH_FAILURE_WINDOW_MS,
    maxTracked: AUTH_FAILURE_TRACKED_ADDRESSES,
  },
};

test("the failed-login delays of both listeners are what docs/config.md says", () => {
  expect(listeners.imap).toEqual({ stepMs: 500, maxMs: 10_000, windowMs: 15 * 60_000, maxTracked: 10_000 });
  expect(listeners.smtp).toEqual({ stepMs: 1000, maxMs: 10_000, windowMs: 15 * 60_000, maxTracked: 10_000 });
});

for (const [name, limits] of Object.entries(listeners)) {
  test(`${name}: ${limits.maxTracked} addresses are counted at once; one more forgets the oldest`, () => {
    const t = new FailureThrottle(limits);
    const address = (i: number) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
    expect(t.fail(address(0), 0)).toBe(limits.stepMs);
    expect(t.fail(address(0), 0)).toBe(2 * limits.stepMs);
    for (let i = 1; i < limits.maxTracked; i++) t.fail(address(i), 0);
    // At the limit the first is still counted: its next failure waits three steps.
    expect(t.failures(address(0), 0)).toBe(2);
    t.fail(address(limits.maxTracked), 0);
    // One more: the address whose failure is oldest is forgotten, its delay starting afresh; the next one is kept.
    expect(t.failures(address(0), 0)).toBe(0);
    expect(t.failures(address(1), 0)).toBe(1);
    expect(t.fail(address(0), 0)).toBe(limits.stepMs);
  });
}

test("failed logins are counted by addressKey: an IPv6 /64 shares one delay, IPv4 addresses do not", () => {
  const t = new FailureThrottle({ stepMs: 100, maxMs: 1000, windowMs: 1000, maxTracked: 10 });
  expect(t.fail("2001:db8:1:2::1", 0)).toBe(100);
  expect(t.fail("2001:db8:1:2:ffff::9", 10)).toBe(200);
  expect(t.fail("2001:db8:1:2:abcd:1234:5678:9abc", 20)).toBe(300);
  expect(t.failures("2001:db8:1:2::77", 20)).toBe(3);
  expect(t.fail("2001:db8:1:3::1", 30)).toBe(100);
  expect(t.fail("192.0.2.1", 40)).toBe(100);
  expect(t.fail("::ffff:192.0.2.1", 50)).toBe(200);
  expect(t.fail("192.0.2.2", 60)).toBe(100);
});

test("allowed_ips: an IPv4-mapped entry means its IPv4 range (/p is IPv4 /p-96); shorter than /96 is refused", () => {
  expect(ipAllowed("10.1.2.3", ["::ffff:10.0.0.0/104"])).toBe(true);
  expect(ipAllowed("::ffff:10.1.2.3", ["::ffff:10.0.0.0/104"])).toBe(true);
  expect(ipAllowed("11.1.2.3", ["::ffff:10.0.0.0/104"])).toBe(false);
  expect(ipAllowed("10.0.0.1", ["::ffff:10.0.0.1/128"])).toBe(true);
  expect(ipAllowed("10.0.0.2", ["::ffff:10.0.0.1/128"])).toBe(false);
  expect(ipAllowed("10.0.0.1", ["::ffff:10.0.0.1"])).toBe(true);
  expect(ipAllowed("192.0.2.7", ["::ffff:0:0/96"])).toBe(true);
  expect(ipAllowed("2001:db8::1", ["::ffff:0:0/96"])).toBe(false);
  // /8 of an IPv6 address is far wider than IPv4 10.0.0.0/8: refused, and matching nothing rather than that.
  expect(ipAllowed("10.1.2.3", ["::ffff:10.0.0.0/8"])).toBe(false);
  expect(readIpEntry("::ffff:10.0.0.0/8")).toContain("shorter than /96");
  expect(readIpEntry("::ffff:0:0/95")).toContain("shorter than /96");
  expect(readIpEntry("::ffff:10.0.0.0/104")).toEqual({ bits: 0x0a000000n, width: 32, prefix: 8 });
  expect(readIpEntry("10.0.0.0/8")).toEqual({ bits: 0x0a000000n, width: 32, prefix: 8 });
  expect(readIpEntry("2001:db8::/32")).toEqual({ bits: 0x20010db8n << 96n, width: 128, prefix: 32 });
  for (const bad of ["10.0.0.0/33", "::1/129", "10.0.0.0/8/8", "10.0.0.0/x", "nope", "10.0.0.0/"])
    expect(readIpEntry(bad)).toContain("expected an IP address or CIDR range");
});

test("failureDelay: end() settles it at once; otherwise it settles when its time is up", async () => {
  const long = failureDelay(60_000);
  long.end();
  long.end(); // twice is harmless
  await long.done;
  const short = failureDelay(1);
  let settled = false;
  void short.done.then(() => (settled = true));
  expect(settled).toBe(false);
  await short.done;
  expect(settled).toBe(true);
});
