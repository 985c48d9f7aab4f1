/**
 * Failed logins locked out across connections (docs/config.md "Who connects", src/net/lockout.ts), through the IMAP
 * proxy to the real Dovecot in pass-through mode: the failures of many connections at once are counted together,
 * per client address and per login name; at the limit a failure still gets `NO [AUTHENTICATIONFAILED]`, one past it
 * even the correct password gets `NO [UNAVAILABLE]`, with an audit row, until the lock ends.
 */

import { afterEach, beforeAll, expect, test } from "bun:test";
import { LOGIN_LOCKOUT, LoginLockout } from "../../src/net/lockout.ts";
import { createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { proxyClient, RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

const FAILED = "NO [AUTHENTICATIONFAILED] Authentication failed";
const LOCKED = "NO [UNAVAILABLE] Too many failed logins; try again later";
const LOCK_MS = 2000;

let mailbox: TestMailbox;
let other: TestMailbox;
let proxy: TestProxy | null = null;

beforeAll(async () => {
  mailbox = await createMailbox({ name: "lockout" });
  other = await createMailbox({ name: "lockout-other" });
});

afterEach(async () => {
  await proxy?.close();
  proxy = null;
});

async function start(): Promise<TestProxy> {
  // The limits of LOGIN_LOCKOUT, with a lock short enough to see it end; no failed-login delay to wait through.
  proxy = await startTestProxy({
    lockout: new LoginLockout({ ...LOGIN_LOCKOUT, lockMs: LOCK_MS }),
    loginThrottle: { stepMs: 0, maxMs: 0 },
  });
  return proxy;
}

/** One LOGIN on a connection of its own from `from`; the tagged status without its tag. */
async function login(port: number, user: string, password: string, from = "127.0.0.1"): Promise<string> {
  const raw = await RawImap.open(port, { localAddress: from });
  try {
    return statusOf(await raw.command("a", `LOGIN "${user}" "${password}"`), "a").slice(2);
  } finally {
    raw.close();
  }
}

/** `n` wrong logins at once, each with imapflow on its own connection: all must fail as failures do. */
async function wrongAtOnce(port: number, n: number): Promise<void> {
  const results = await Promise.allSettled(
    Array.from({ length: n }, (_, i) => proxyClient(port, mailbox.user, `wrong-${i}`)),
  );
  for (const r of results) {
    expect(r.status).toBe("rejected");
    if (r.status === "rejected")
      expect((r.reason as { authenticationFailed?: boolean }).authenticationFailed).toBe(true);
  }
}

test("one address: the 10th failure at once fails; then the right password is refused till the lock ends", async () => {
  const p = await start();
  const limit = LOGIN_LOCKOUT.failuresPerAddress;
  expect(limit).toBe(10);
  // limit - 1 failures over as many connections at once: nothing is locked yet, the right password logs in.
  await wrongAtOnce(p.port, limit - 1);
  const ok = await proxyClient(p.port, mailbox.user, mailbox.password);
  await ok.logout();
  // The limit-th failure is answered as any failure, and starts the lock.
  expect(await login(p.port, mailbox.user, "wrong-last")).toBe(FAILED);
  // One past it: refused before the password is checked, the right one too, and another user's from this address.
  expect(await login(p.port, mailbox.user, mailbox.password)).toBe(LOCKED);
  expect(await login(p.port, other.user, other.password)).toBe(LOCKED);
  await expect(proxyClient(p.port, mailbox.user, mailbox.password)).rejects.toThrow();
  // The lock is the address's: the same user from another address is not locked (10 < 30 under the name).
  expect(await login(p.port, mailbox.user, mailbox.password, "127.0.0.2")).toStartWith("OK");

  // imapflow logs in with AUTHENTICATE PLAIN; the raw client with LOGIN.
  const rows = (await p.rows()).filter((r) => r.command === "LOGIN" || r.command === "AUTHENTICATE");
  const started = rows.filter((r) => r.reason.startsWith("lock-out:"));
  expect(started).toHaveLength(1);
  expect(started[0]!.decision).toBe("deny");
  expect(started[0]!.reason).toContain(`${limit} failed logins from this address; logins refused until `);
  expect(started[0]!.clientAddr).toBe("127.0.0.1");
  const refused = rows.filter((r) => r.reason.startsWith("login refused: locked out"));
  expect(refused.map((r) => r.target)).toEqual([mailbox.user, other.user, mailbox.user]);
  expect(refused[0]!.detail).toMatchObject({ lockout: "address", limit });
  expect(JSON.stringify(rows)).not.toContain(mailbox.password);

  // The lock ends: the right password logs in again, from the same address.
  await Bun.sleep(LOCK_MS + 100);
  expect(await login(p.port, mailbox.user, mailbox.password)).toStartWith("OK");
});

test("one name from many addresses: the 30th failure fails; then the name is refused from anywhere", async () => {
  const p = await start();
  const limit = LOGIN_LOCKOUT.failuresPerName;
  expect(limit).toBe(30);
  // 29 failures from five addresses, under the address limit each, all at once.
  const sources = ["127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14", "127.0.0.15"];
  const attempts = Array.from({ length: limit - 1 }, (_, i) =>
    login(p.port, mailbox.user, `wrong-${i}`, sources[i % sources.length]),
  );
  expect(await Promise.all(attempts)).toEqual(Array(limit - 1).fill(FAILED));
  expect(await login(p.port, mailbox.user, mailbox.password, "127.0.0.16")).toStartWith("OK");
  expect(await login(p.port, mailbox.user, "wrong-last", "127.0.0.17")).toBe(FAILED);
  // One past it: the name is refused from an address that never failed, in any case; other names are not.
  expect(await login(p.port, mailbox.user, mailbox.password, "127.0.0.18")).toBe(LOCKED);
  expect(await login(p.port, mailbox.user.toUpperCase(), mailbox.password, "127.0.0.18")).toBe(LOCKED);
  expect(await login(p.port, other.user, other.password, "127.0.0.18")).toStartWith("OK");
  const rows = (await p.rows()).filter((r) => r.command === "LOGIN");
  const started = rows.filter((r) => r.reason.startsWith("lock-out:"));
  expect(started.map((r) => [r.target, r.clientAddr])).toEqual([[mailbox.user, "127.0.0.17"]]);
  expect(started[0]!.reason).toContain(`${limit} failed logins under this name`);

  await Bun.sleep(LOCK_MS + 100);
  expect(await login(p.port, mailbox.user, mailbox.password, "127.0.0.18")).toStartWith("OK");
});

test("AUTHENTICATE PLAIN is locked out as LOGIN is", async () => {
  const p = await start();
  const attempts = Array.from({ length: LOGIN_LOCKOUT.failuresPerAddress }, (_, i) =>
    login(p.port, mailbox.user, `wrong-${i}`, "127.0.0.21"),
  );
  expect(await Promise.all(attempts)).toEqual(Array(LOGIN_LOCKOUT.failuresPerAddress).fill(FAILED));
  const raw = await RawImap.open(p.port, { localAddress: "127.0.0.21" });
  const plain = Buffer.from(`\0${mailbox.user}\0${mailbox.password}`).toString("base64");
  expect(statusOf(await raw.command("a", `AUTHENTICATE PLAIN ${plain}`), "a").slice(2)).toBe(LOCKED);
  raw.close();
});
