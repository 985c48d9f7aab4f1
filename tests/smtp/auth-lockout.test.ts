/**
 * Failed logins locked out across connections (docs/config.md "Who connects", src/net/lockout.ts), through the SMTP
 * proxy to the real Postfix in pass-through mode: at the limit a failure still gets `535 5.7.8`, one past it even
 * the correct password gets `454 4.7.0`, with an audit row, until the lock ends; and the IMAP listener's failures
 * count toward the same lock when the two share it, as under `serve`. A vault agent's `allowed_ips` keep failures
 * from outside them off its name.
 */

import { afterEach, expect, test } from "bun:test";
import nodemailer from "nodemailer";
import { LOGIN_LOCKOUT, LoginLockout } from "../../src/net/lockout.ts";
import { generateToken, hashToken } from "../../src/vault/token.ts";
import { RawImap, startTestProxy as startImapProxy, statusOf } from "../imap/helpers.ts";
import { RawClient, startTestProxy, upstreams } from "./helpers.ts";

const LOCK_MS = 2000;
const RULES = `[[rules]]\nname = "all"\naction = "allow"\n`;
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
});

async function start(lockout = new LoginLockout({ ...LOGIN_LOCKOUT, lockMs: LOCK_MS })) {
  const p = await startTestProxy({ rules: RULES, lockout, limits: { authFailureStepMs: 0 } });
  cleanups.push(() => p.close());
  return p;
}

const plain = (user: string, pass: string) => Buffer.from(`\0${user}\0${pass}`).toString("base64");

/** One AUTH PLAIN on a connection of its own from `from`: the reply's first line. */
async function auth(port: number, user: string, password: string, from = "127.0.0.1"): Promise<string> {
  const c = await RawClient.connect(port, "127.0.0.1", from);
  try {
    await c.reply();
    await c.command("EHLO client.test");
    return (await c.command(`AUTH PLAIN ${plain(user, password)}`)).raw.split("\r\n")[0]!;
  } finally {
    c.close();
  }
}

/** nodemailer's login check (AUTH on a connection of its own); resolves to the reply code it failed with, or 235. */
async function verify(port: number, user: string, pass: string): Promise<number> {
  const t = nodemailer.createTransport({
    host: "127.0.0.1",
    port,
    secure: false,
    ignoreTLS: true,
    auth: { user, pass },
  });
  try {
    await t.verify();
    return 235;
  } catch (e) {
    return (e as { responseCode?: number }).responseCode ?? 0;
  } finally {
    t.close();
  }
}

test("one address: the 10th failure at once is 535; then the right password gets 454 until the lock ends", async () => {
  const p = await start();
  const user = upstreams().users[0]!;
  const limit = LOGIN_LOCKOUT.failuresPerAddress;
  expect(limit).toBe(10);
  // limit - 1 failures, each on a connection of its own, all at once: nothing is locked yet.
  const wrong = await Promise.all(Array.from({ length: limit - 1 }, (_, i) => verify(p.port, user.user, `wrong-${i}`)));
  expect(wrong).toEqual(Array(limit - 1).fill(535));
  expect(await verify(p.port, user.user, user.password)).toBe(235);
  // The limit-th failure is answered as any failure, and starts the lock.
  expect(await auth(p.port, user.user, "wrong-last")).toBe("535 5.7.8 Authentication credentials invalid");
  // One past it: refused before the password is checked (nothing goes upstream), the right one too.
  expect(await auth(p.port, user.user, user.password)).toBe("454 4.7.0 Too many failed logins; try again later");
  expect(await verify(p.port, user.user, user.password)).toBe(454);
  // Another address is not locked (10 failures under the name are below its 30).
  expect(await auth(p.port, user.user, user.password, "127.0.0.2")).toStartWith("235");

  const rows = (await p.rows()).filter((r) => r.command === "AUTH");
  const started = rows.filter((r) => r.reason.startsWith("lock-out:"));
  expect(started.map((r) => [r.decision, r.target, r.clientAddr])).toEqual([["deny", user.user, "127.0.0.1"]]);
  expect(started[0]!.reason).toContain(`${limit} failed logins from this address; logins refused until `);
  const refused = rows.filter((r) => r.reason.startsWith("login refused: locked out"));
  expect(refused).toHaveLength(2);
  expect(refused[0]!.detail).toMatchObject({ lockout: "address", limit });
  expect(JSON.stringify(rows)).not.toContain(user.password);

  await Bun.sleep(LOCK_MS + 100);
  expect(await auth(p.port, user.user, user.password)).toStartWith("235");
});

test("a session refused under the lock is closed at its third attempt, as after three failures", async () => {
  const p = await start();
  const user = upstreams().users[0]!;
  const attempts = Array.from({ length: LOGIN_LOCKOUT.failuresPerAddress }, (_, i) =>
    auth(p.port, user.user, `wrong-${i}`, "127.0.0.31"),
  );
  expect(new Set(await Promise.all(attempts))).toEqual(new Set(["535 5.7.8 Authentication credentials invalid"]));
  const c = await RawClient.connect(p.port, "127.0.0.1", "127.0.0.31");
  await c.reply();
  await c.command("EHLO client.test");
  for (let i = 0; i < 3; i++) expect((await c.command(`AUTH PLAIN ${plain(user.user, user.password)}`)).code).toBe(454);
  expect((await c.reply()).raw).toStartWith("421 4.7.0");
  await c.waitClosed();
});

test("one count for both listeners: IMAP failures lock the address out of SMTP", async () => {
  const lockout = new LoginLockout({ ...LOGIN_LOCKOUT, lockMs: LOCK_MS });
  const imap = await startImapProxy({ lockout, loginThrottle: { stepMs: 0, maxMs: 0 } });
  cleanups.push(() => imap.close());
  const p = await start(lockout);
  const user = upstreams().users[0]!;
  const imapLogin = async (password: string): Promise<string> => {
    const raw = await RawImap.open(imap.port, { localAddress: "127.0.0.41" });
    try {
      return statusOf(await raw.command("a", `LOGIN "${user.user}" "${password}"`), "a").slice(2);
    } finally {
      raw.close();
    }
  };
  const failures = await Promise.all(
    Array.from({ length: LOGIN_LOCKOUT.failuresPerAddress - 1 }, (_, i) => imapLogin(`wrong-${i}`)),
  );
  expect(new Set(failures)).toEqual(new Set(["NO [AUTHENTICATIONFAILED] Authentication failed"]));
  // The limit-th failure on SMTP; then both listeners refuse the address.
  expect(await auth(p.port, user.user, "wrong-last", "127.0.0.41")).toStartWith("535 5.7.8");
  expect(await auth(p.port, user.user, user.password, "127.0.0.41")).toStartWith("454 4.7.0");
  expect(await imapLogin(user.password)).toBe("NO [UNAVAILABLE] Too many failed logins; try again later");
});

test("vault: failures under an agent's name lock no name out, only the addresses that make them", async () => {
  const token = generateToken();
  const user = upstreams().users[0]!;
  const p = await startTestProxy({
    lockout: new LoginLockout({ ...LOGIN_LOCKOUT, lockMs: LOCK_MS }),
    limits: { authFailureStepMs: 0 },
    rules: `${RULES}
[[agents]]
name = "bot"
token_hash = "${hashToken(token)}"
account = "main"
allowed_ips = ["127.0.0.0/28"]

[accounts.main]
username = "${user.user}"
password = "${user.password}"
`,
  });
  cleanups.push(() => p.close());
  // As many failures as lock a name, from four addresses outside allowed_ips (under the address limit each).
  const outside = ["127.0.0.51", "127.0.0.52", "127.0.0.53", "127.0.0.54"];
  const attempts = Array.from({ length: LOGIN_LOCKOUT.failuresPerName }, (_, i) =>
    auth(p.port, i % 2 ? "bot" : "BOT", `mgt_wrong${i}`, outside[i % outside.length]),
  );
  expect(new Set(await Promise.all(attempts))).toEqual(new Set(["535 5.7.8 Authentication credentials invalid"]));
  expect(await auth(p.port, "bot", token)).toStartWith("235");
  const rows = (await p.rows()).filter((r) => r.reason.startsWith("lock-out:"));
  expect(rows).toEqual([]);
  // From inside allowed_ips neither: an agent's token has 256 bits, there is nothing to guess under its name, and a
  // name lock would only let whoever knows the name keep the agent out.
  const inside = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"];
  const more = Array.from({ length: LOGIN_LOCKOUT.failuresPerName }, (_, i) =>
    auth(p.port, "bot", `mgt_wrong${i}`, inside[i % inside.length]),
  );
  expect(new Set(await Promise.all(more))).toEqual(new Set(["535 5.7.8 Authentication credentials invalid"]));
  expect(await auth(p.port, "bot", token)).toStartWith("235");
  // The addresses are counted all the same: the 10th failure from one locks it, the right token included.
  for (let i = 0; i < LOGIN_LOCKOUT.failuresPerAddress; i++) await auth(p.port, "bot", `mgt_bad${i}`, "127.0.0.9");
  expect(await auth(p.port, "bot", token, "127.0.0.9")).toStartWith("454 4.7.0");
  expect(await auth(p.port, "bot", token)).toStartWith("235");
});
