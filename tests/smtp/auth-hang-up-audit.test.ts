/**
 * A pass-through AUTH whose agent hangs up while the real Postfix checks it (docs/audit.md "What a row records",
 * docs/config.md "Who connects"): the proxy waits for Postfix's answer and writes the login's row with its verdict.
 * A refusal is a failed login as any other (its row, its log line, its count toward the lock-out), as it was
 * before; an acceptance has an `allow` row saying the login was not served, where before it had none; and one the
 * proxy's stopping cut before its answer is counted as refused (fail closed), where before its `error` row was not
 * counted. The relay in front of Postfix holds the proxy's AUTH until the agent has gone.
 */

import { afterEach, expect, test } from "bun:test";
import { rmSync } from "node:fs";
import type { AuditRow } from "../../src/audit/index.ts";
import { LOGIN_LOCKOUT, LoginLockout } from "../../src/net/lockout.ts";
import { MAX_ABANDONED_LOGIN_CHECKS } from "../../src/smtp/limits.ts";
import { HoldingRelay } from "../fixtures/tcp-relay.ts";
import { RawClient, startTestProxy, type TestProxy, upstreams } from "./helpers.ts";

const RULES = `[[rules]]\nname = "all"\naction = "allow"\n`;
/** What the proxy sends upstream to log in. */
const UPSTREAM_AUTH = /^AUTH /;
const LOCK_AT = 3;

let relay: HoldingRelay | null = null;
let proxy: TestProxy | null = null;

afterEach(async () => {
  await proxy?.close();
  proxy = null;
  await relay?.close();
  relay = null;
});

async function start(lockout: LoginLockout): Promise<{ relay: HoldingRelay; proxy: TestProxy }> {
  const up = upstreams();
  relay = await HoldingRelay.start({ host: up.host, port: up.ports.smtp });
  proxy = await startTestProxy({
    rules: RULES,
    upstreamTls: "none",
    upstreamAddr: `127.0.0.1:${relay.port}`,
    lockout,
    limits: { authFailureStepMs: 0 },
  });
  return { relay, proxy };
}

const plain = (user: string, pass: string) => Buffer.from(`\0${user}\0${pass}`).toString("base64");

/**
 * AUTH PLAIN from `from`, hung up once the proxy sent it upstream; the AUTH reaches Postfix after the hang-up, or
 * never (`answered` false: the check is under way until the proxy closes).
 */
async function hangUpDuringAuth(
  r: HoldingRelay,
  port: number,
  user: string,
  password: string,
  from: string,
  answered = true,
) {
  const release = Promise.withResolvers<void>();
  const held = r.hold(UPSTREAM_AUTH, answered ? release.promise : new Promise<void>(() => {}));
  const c = await RawClient.connect(port, "127.0.0.1", from);
  await c.reply();
  await c.command("EHLO client.test");
  c.write(`AUTH PLAIN ${plain(user, password)}\r\n`);
  await held;
  c.close();
  // The proxy sees the hang-up before Postfix answers.
  await Bun.sleep(200);
  release.resolve();
}

/** The AUTH rows, once `count` of them are there. */
async function authRows(p: TestProxy, count: number): Promise<AuditRow[]> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const rows = (await p.rows()).filter((r) => r.command === "AUTH");
    if (rows.length >= count || Date.now() > deadline) return rows;
    await Bun.sleep(100);
  }
}

test("the right password, the agent gone before Postfix accepted it: an allow row, not served", async () => {
  const { relay, proxy } = await start(new LoginLockout());
  const user = upstreams().users[0]!;
  await hangUpDuringAuth(relay, proxy.port, user.user, user.password, "127.0.0.61");
  const rows = await authRows(proxy, 1);
  expect(rows.map((r) => [r.decision, r.target, r.clientAddr, r.reason])).toEqual([
    [
      "allow",
      user.user,
      "127.0.0.61",
      "login accepted upstream, not served: the session ended before upstream answered (client closed the connection)",
    ],
  ]);
});

test("wrong passwords, the agent gone before Postfix refused them: deny rows and log lines", async () => {
  const { relay, proxy } = await start(new LoginLockout());
  const user = upstreams().users[0]!;
  for (let i = 0; i < 2; i++) await hangUpDuringAuth(relay, proxy.port, user.user, `wrong-${i}`, "127.0.0.62");
  const rows = await authRows(proxy, 2);
  expect(rows.map((r) => [r.decision, r.target, r.clientAddr, r.reason])).toEqual(
    Array(2).fill([
      "deny",
      user.user,
      "127.0.0.62",
      "login refused: upstream refused the login (535); the session ended before upstream answered (client closed " +
        "the connection)",
    ]),
  );
});

test("AUTHs abandoned before their answer count toward the lock-out at the hang-up, before any answer", async () => {
  const { relay, proxy } = await start(new LoginLockout({ ...LOGIN_LOCKOUT, failuresPerAddress: LOCK_AT }));
  const user = upstreams().users[0]!;
  const from = "127.0.0.64";
  const auth = async (): Promise<number> => {
    const c = await RawClient.connect(proxy.port, "127.0.0.1", from);
    try {
      await c.reply();
      await c.command("EHLO client.test");
      return (await c.command(`AUTH PLAIN ${plain(user.user, user.password)}`)).code;
    } finally {
      c.close();
    }
  };
  // LOCK_AT - 1 AUTHs abandoned, none answered (Postfix never gets them): not locked yet.
  for (let i = 0; i < LOCK_AT - 1; i++) await hangUpDuringAuth(relay, proxy.port, user.user, `wrong-${i}`, from, false);
  expect(await auth()).toBe(235);
  // The LOCK_AT-th starts the lock before any answer came: the right password is refused after it.
  await hangUpDuringAuth(relay, proxy.port, user.user, "wrong-last", from, false);
  expect(await auth()).toBe(454);
  const rows = await authRows(proxy, 3);
  expect(rows.filter((r) => r.reason.startsWith("lock-out:")).map((r) => r.clientAddr)).toEqual([from]);
  expect(rows.filter((r) => r.reason.startsWith("login refused: upstream"))).toEqual([]);
});

test("the proxy stopping cuts an AUTH whose agent left: a deny row, the verdict not known, counted", async () => {
  const lockout = new LoginLockout({ ...LOGIN_LOCKOUT, failuresPerAddress: 1 });
  const { relay, proxy: p } = await start(lockout);
  proxy = null;
  try {
    const user = upstreams().users[0]!;
    // Held for good: Postfix never answers this AUTH.
    const held = relay.hold(UPSTREAM_AUTH);
    const c = await RawClient.connect(p.port, "127.0.0.1", "127.0.0.63");
    await c.reply();
    await c.command("EHLO client.test");
    c.write(`AUTH PLAIN ${plain(user.user, "wrong-x")}\r\n`);
    await held;
    c.close();
    await Bun.sleep(200);
    await p.proxy.close();
    const rows = (await p.rows()).filter((r) => r.command === "AUTH");
    expect(rows.map((r) => r.decision)).toEqual(["deny", "deny"]);
    expect(rows[1]!.reason).toBe(
      "login refused: the session ended before upstream answered (client closed the connection), and then the " +
        "check failed (proxy shutting down): not known, counted as refused",
    );
    // Counted when the agent hung up: the lock started then.
    expect(rows[0]!.reason).toStartWith("lock-out: 1 failed logins from this address");
    expect(lockout.locked("127.0.0.63", null)).not.toBeNull();
  } finally {
    await p.audit.close();
    rmSync(p.dir, { recursive: true, force: true });
  }
});

test("MAX_ABANDONED_LOGIN_CHECKS AUTHs go on after their agents left; one more is cut at once, counted", async () => {
  // No lock-out in the way: this test is about the checks kept going.
  const { relay, proxy } = await start(
    new LoginLockout({ ...LOGIN_LOCKOUT, failuresPerAddress: 1000, failuresPerName: 1000 }),
  );
  const user = upstreams().users[0]!;
  // At the limit: every AUTH held at the relay (Postfix never gets them), none answered, so none has a row yet.
  for (let i = 0; i < MAX_ABANDONED_LOGIN_CHECKS; i++)
    await hangUpDuringAuth(relay, proxy.port, user.user, `wrong-${i}`, "127.0.1.1", false);
  expect(proxy.proxy.abandonedLogins).toBe(MAX_ABANDONED_LOGIN_CHECKS);
  expect(await authRows(proxy, 0)).toEqual([]);
  // One more: cut at once, its row written without an answer, a refusal whose verdict is not known.
  await hangUpDuringAuth(relay, proxy.port, user.user, "wrong-past", "127.0.1.2", false);
  const rows = await authRows(proxy, 1);
  expect(rows.map((r) => [r.decision, r.target, r.clientAddr, r.reason])).toEqual([
    [
      "deny",
      user.user,
      "127.0.1.2",
      "login refused: the session ended before upstream answered (client closed the connection), and then the " +
        `check failed (more than MAX_ABANDONED_LOGIN_CHECKS (${MAX_ABANDONED_LOGIN_CHECKS}) logins were being ` +
        "checked after their agents left): not known, counted as refused",
    ],
  ]);
  expect(proxy.proxy.abandonedLogins).toBe(MAX_ABANDONED_LOGIN_CHECKS);
});
