/**
 * A pass-through login whose agent hangs up while the upstream server checks it (docs/audit.md "What a row
 * records", docs/config.md "Who connects"): the proxy waits for the real Dovecot's answer all the same, and writes
 * the login's row with its verdict, and a refusal its `login failed` log line; and the login counts toward the
 * lock-out when its agent hangs up, before any answer. Before, the session's end closed the upstream connection
 * under the check, and the login left no row, no log line and no count, so that a guesser who hung up before each
 * answer (Dovecot delays a refusal by 2 s) guessed without end. The relay in front of Dovecot shows when the proxy
 * has sent the credentials, and holds them until the agent has gone where a test needs it (Dovecot accepts a right
 * password at once).
 */

import { afterEach, beforeAll, expect, spyOn, test } from "bun:test";
import { rmSync } from "node:fs";
import type { AuditRow } from "../../src/audit/index.ts";
import { MAX_ABANDONED_LOGIN_CHECKS } from "../../src/imap/limits.ts";
import { configureLogger } from "../../src/log.ts";
import { LOGIN_LOCKOUT, LoginLockout } from "../../src/net/lockout.ts";
import { generateToken, hashToken } from "../../src/vault/token.ts";
import { createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { HoldingRelay } from "../fixtures/tcp-relay.ts";
import { dovecotImap, RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

/** What the proxy sends upstream to log in (AUTHENTICATE PLAIN with SASL-IR, or LOGIN). */
const UPSTREAM_LOGIN = /^\S+ (AUTHENTICATE PLAIN|LOGIN) /;
const LOCK_AT = 3;

let mailbox: TestMailbox;
let relay: HoldingRelay | null = null;
let proxy: TestProxy | null = null;

beforeAll(async () => {
  mailbox = await createMailbox({ name: "hang-up" });
});

afterEach(async () => {
  await proxy?.close();
  proxy = null;
  await relay?.close();
  relay = null;
});

async function start(extra = ""): Promise<{ relay: HoldingRelay; proxy: TestProxy }> {
  relay = await HoldingRelay.start(dovecotImap());
  proxy = await startTestProxy({
    upstreamTls: "none",
    upstreamAddr: `127.0.0.1:${relay.port}`,
    lockout: new LoginLockout({ ...LOGIN_LOCKOUT, failuresPerAddress: LOCK_AT }),
    loginThrottle: { stepMs: 0, maxMs: 0 },
    extra,
  });
  return { relay, proxy };
}

/**
 * Sends `line` from `from` and hangs up once the proxy has sent the login upstream. The login reaches Dovecot at
 * once (`now`), once the proxy has seen the hang-up (`after`), or never (`never`: the check is under way until the
 * proxy closes).
 */
async function hangUpDuringCheck(
  r: HoldingRelay,
  port: number,
  line: string,
  from: string,
  hold: "now" | "after" | "never",
) {
  const release = Promise.withResolvers<void>();
  const held = r.hold(
    UPSTREAM_LOGIN,
    hold === "now" ? Promise.resolve() : hold === "after" ? release.promise : new Promise<void>(() => {}),
  );
  const raw = await RawImap.open(port, { localAddress: from });
  raw.write(`a ${line}\r\n`);
  await held;
  raw.close();
  // The proxy sees the hang-up (its session ends) before the login goes on.
  await Bun.sleep(200);
  release.resolve();
}

/** The login rows, once `count` of them are there (Dovecot answers a refusal after 2 s). */
async function loginRows(p: TestProxy, count: number): Promise<AuditRow[]> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const rows = (await p.rows()).filter((r) => r.command === "LOGIN" || r.command === "AUTHENTICATE");
    if (rows.length >= count || Date.now() > deadline) return rows;
    await Bun.sleep(100);
  }
}

/** What the logger writes to stderr while `run` runs, and until it resolves. */
async function logged(run: () => Promise<void>): Promise<string> {
  configureLogger("pretty", 3);
  const chunks: string[] = [];
  const write = spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => {
    chunks.push(String(chunk));
    return true;
  });
  try {
    await run();
  } finally {
    write.mockRestore();
  }
  return chunks.join("");
}

test("a wrong password, the agent gone before Dovecot refused it: a deny row and the log line", async () => {
  const { relay, proxy } = await start();
  let rows: AuditRow[] = [];
  const log = await logged(async () => {
    await hangUpDuringCheck(relay, proxy.port, `LOGIN "${mailbox.user}" "wrong-1"`, "127.0.0.51", "now");
    rows = await loginRows(proxy, 1);
  });
  expect(rows.map((r) => [r.decision, r.target, r.clientAddr, r.reason])).toEqual([
    [
      "deny",
      mailbox.user,
      "127.0.0.51",
      "login failed: the upstream server refused the credentials; the session ended before upstream answered " +
        "(client closed the connection)",
    ],
  ]);
  expect(log).toContain(`login failed: client=127.0.0.51 protocol=imap user=${mailbox.user} reason=`);
  // The session's access line waits for the verdict: it says the login failed (before, `login=none`).
  expect(log.match(/access: session=\w+ client=127\.0\.0\.51:\d+ connected=\S+ login=\w+/g)).toEqual([
    expect.stringMatching(/ login=failed$/),
  ]);
  expect(JSON.stringify(rows)).not.toContain("wrong-1");
});

test("AUTHENTICATE PLAIN with a wrong password, the agent gone: the same deny row", async () => {
  const { relay, proxy } = await start();
  const plain = Buffer.from(`\0${mailbox.user}\0wrong-2`).toString("base64");
  await hangUpDuringCheck(relay, proxy.port, `AUTHENTICATE PLAIN ${plain}`, "127.0.0.52", "now");
  const rows = await loginRows(proxy, 1);
  expect(rows.map((r) => [r.command, r.decision, r.target])).toEqual([["AUTHENTICATE", "deny", mailbox.user]]);
  expect(rows[0]!.reason).toStartWith("login failed: the upstream server refused the credentials; the session ended");
});

test("logins abandoned before their answer count toward the lock-out at the hang-up, before any answer", async () => {
  const { relay, proxy } = await start();
  const from = "127.0.0.53";
  const login = async (): Promise<string> => {
    const raw = await RawImap.open(proxy.port, { localAddress: from });
    try {
      return statusOf(await raw.command("a", `LOGIN "${mailbox.user}" "${mailbox.password}"`), "a");
    } finally {
      raw.close();
    }
  };
  // LOCK_AT - 1 guesses abandoned, none answered yet (Dovecot never gets them): not locked yet.
  for (let i = 0; i < LOCK_AT - 1; i++)
    await hangUpDuringCheck(relay, proxy.port, `LOGIN "${mailbox.user}" "wrong-${i}"`, from, "never");
  expect(await login()).toStartWith("a OK");
  // The LOCK_AT-th starts the lock, before any answer came: the right password is refused after it.
  await hangUpDuringCheck(relay, proxy.port, `LOGIN "${mailbox.user}" "wrong-last"`, from, "never");
  expect(await login()).toBe("a NO [UNAVAILABLE] Too many failed logins; try again later");
  const rows = await loginRows(proxy, 3);
  expect(rows.filter((r) => r.reason.startsWith("lock-out:")).map((r) => r.clientAddr)).toEqual([from]);
  expect(rows.filter((r) => r.reason.startsWith("login failed:"))).toEqual([]);
});

test("the right password hung up LOCK_AT times: each counted at the hang-up, taken back once accepted", async () => {
  const { relay, proxy } = await start();
  const from = "127.0.0.57";
  for (let i = 0; i < LOCK_AT; i++)
    await hangUpDuringCheck(relay, proxy.port, `LOGIN "${mailbox.user}" "${mailbox.password}"`, from, "after");
  const rows = await loginRows(proxy, LOCK_AT);
  expect(rows.filter((r) => r.decision === "allow").length).toBe(LOCK_AT);
  // Counted as failures at the hang-ups (a lock may have started meanwhile), then taken back: not locked now.
  const raw = await RawImap.open(proxy.port, { localAddress: from });
  expect(statusOf(await raw.command("a", `LOGIN "${mailbox.user}" "${mailbox.password}"`), "a")).toStartWith("a OK");
  raw.close();
});

test("the right password, the agent gone before Dovecot accepted it: an allow row, not served", async () => {
  const { relay, proxy } = await start();
  await hangUpDuringCheck(relay, proxy.port, `LOGIN "${mailbox.user}" "${mailbox.password}"`, "127.0.0.54", "after");
  const rows = await loginRows(proxy, 1);
  expect(rows.map((r) => [r.decision, r.agent, r.clientAddr, r.reason])).toEqual([
    [
      "allow",
      mailbox.user,
      "127.0.0.54",
      "logged in upstream, not served: the session ended before upstream answered (client closed the connection)",
    ],
  ]);
});

test("vault mode: an agent gone while its account logs in upstream has an error row, not counted", async () => {
  const token = generateToken();
  const { relay, proxy } = await start(`
[accounts.main]
username = "${mailbox.user}"
password = "${mailbox.password}"

[[agents]]
name = "bot"
token_hash = "${hashToken(token)}"
account = "main"
`);
  for (let i = 0; i < LOCK_AT; i++)
    await hangUpDuringCheck(relay, proxy.port, `LOGIN "bot" "${token}"`, "127.0.0.55", "after");
  const rows = await loginRows(proxy, LOCK_AT);
  expect(rows.map((r) => [r.decision, r.target])).toEqual(Array(LOCK_AT).fill(["error", "bot"]));
  expect(rows[0]!.reason).toStartWith(
    "login not completed: the session ended before upstream answered (client closed the connection), and then",
  );
  // Nothing was guessed: the address is not locked.
  const raw = await RawImap.open(proxy.port, { localAddress: "127.0.0.55" });
  expect(statusOf(await raw.command("a", `LOGIN "bot" "${token}"`), "a")).toStartWith("a OK");
  raw.close();
});

test("the proxy stopping cuts a check whose agent left: a deny row, the verdict not known, counted", async () => {
  const lockout = new LoginLockout({ ...LOGIN_LOCKOUT, failuresPerAddress: 1 });
  relay = await HoldingRelay.start(dovecotImap());
  const p = await startTestProxy({ upstreamTls: "none", upstreamAddr: `127.0.0.1:${relay.port}`, lockout });
  try {
    // Held for good: Dovecot never answers this login.
    const held = relay.hold(UPSTREAM_LOGIN);
    const raw = await RawImap.open(p.port, { localAddress: "127.0.0.56" });
    raw.write(`a LOGIN "${mailbox.user}" "wrong-3"\r\n`);
    await held;
    raw.close();
    await Bun.sleep(200);
    const started = performance.now();
    await p.proxy.close();
    expect(performance.now() - started).toBeLessThan(2000);
    const rows = (await p.rows()).filter((r) => r.command === "LOGIN");
    expect(rows.map((r) => [r.decision, r.target])).toEqual([
      ["deny", mailbox.user],
      ["deny", mailbox.user],
    ]);
    expect(rows[1]!.reason).toBe(
      "login failed: the session ended before upstream answered (client closed the connection), and then the " +
        "check failed (proxy shutting down): not known, counted as refused",
    );
    expect(rows[0]!.reason).toStartWith("lock-out: 1 failed logins from this address");
    expect(lockout.locked("127.0.0.56", null)).not.toBeNull();
  } finally {
    await p.audit.close();
    rmSync(p.dir, { recursive: true, force: true });
  }
});

test("MAX_ABANDONED_LOGIN_CHECKS checks go on after their agents left; one more is cut at once, counted", async () => {
  relay = await HoldingRelay.start(dovecotImap());
  // No lock-out in the way: this test is about the checks kept going, from addresses of their own.
  const lockout = new LoginLockout({ ...LOGIN_LOCKOUT, failuresPerAddress: 1000, failuresPerName: 1000 });
  proxy = await startTestProxy({
    upstreamTls: "none",
    upstreamAddr: `127.0.0.1:${relay.port}`,
    lockout,
    loginThrottle: { stepMs: 0, maxMs: 0 },
  });
  // At the limit: every check held at the relay (Dovecot never gets them), none answered, so none has a row yet.
  for (let i = 0; i < MAX_ABANDONED_LOGIN_CHECKS; i++)
    await hangUpDuringCheck(relay, proxy.port, `LOGIN "${mailbox.user}" "wrong-${i}"`, "127.0.1.1", "never");
  expect(proxy.proxy.abandonedLogins).toBe(MAX_ABANDONED_LOGIN_CHECKS);
  expect(await loginRows(proxy, 0)).toEqual([]);
  // One more: cut at once, its row written without an answer, a refusal whose verdict is not known.
  await hangUpDuringCheck(relay, proxy.port, `LOGIN "${mailbox.user}" "wrong-past"`, "127.0.1.2", "never");
  const rows = await loginRows(proxy, 1);
  expect(rows.map((r) => [r.decision, r.target, r.clientAddr])).toEqual([["deny", mailbox.user, "127.0.1.2"]]);
  expect(rows[0]!.reason).toBe(
    "login failed: the session ended before upstream answered (client closed the connection), and then the check " +
      `failed (more than MAX_ABANDONED_LOGIN_CHECKS (${MAX_ABANDONED_LOGIN_CHECKS}) logins were being checked ` +
      "after their agents left): not known, counted as refused",
  );
  expect(proxy.proxy.abandonedLogins).toBe(MAX_ABANDONED_LOGIN_CHECKS);
});
