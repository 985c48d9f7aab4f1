/**
 * Vault mode, an agent whose token is right but whose account the upstream server refuses (a password changed
 * upstream and not yet in the config, a server-side limit): docs/config.md "Who connects". The agent proved its
 * token, so there was nothing to guess: the refusal is the account's, not a failed login of the agent. It gets
 * `NO [UNAVAILABLE]` and an `error` row, is not slowed, and is not counted toward the lock-out of its client
 * address, which would otherwise lock every agent on that address out (IMAP and SMTP share the count), the
 * correct ones included, for 15 minutes, and keep them out after the owner has fixed the password. This is
 * already so for OAuth2 accounts (docs/imap.md "OAuth2 accounts") and for SMTP, which logs a password account in
 * upstream only to send.
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import { LOGIN_LOCKOUT, LoginLockout } from "../../src/net/lockout.ts";
import { generateToken, hashToken } from "../../src/vault/token.ts";
import { createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { auditCursor, RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

const brokenToken = generateToken();
const goodToken = generateToken();
/** Failures from one address that lock it: a small number, so that the test need not make ten of them. */
const LOCK_AT = 3;
let mailbox: TestMailbox;
let other: TestMailbox;
let proxy: TestProxy;
/** How long a refused account is not tried again (ACCOUNT_REFUSAL_HOLD_MS, shortened). */
const HOLD_MS = 2000;

/** The two accounts and their agents, the stale one's password as given. */
function accounts(stalePassword: string): string {
  return `
[accounts.stale]
username = "${mailbox.user}"
password = "${stalePassword}"

[accounts.fine]
username = "${other.user}"
password = "${other.password}"

[[agents]]
name = "stale-agent"
token_hash = "${hashToken(brokenToken)}"
account = "stale"

[[agents]]
name = "fine-agent"
token_hash = "${hashToken(goodToken)}"
account = "fine"
`;
}

beforeAll(async () => {
  mailbox = await createMailbox({ seed: { folders: { INBOX: 1 }, seed: 21 } });
  other = await createMailbox({ name: "vault-refused-other", seed: { folders: { INBOX: 2 }, seed: 22 } });
  proxy = await startTestProxy({
    lockout: new LoginLockout({ ...LOGIN_LOCKOUT, failuresPerAddress: LOCK_AT }),
    accountRefusalHoldMs: HOLD_MS,
    extra: accounts(`not-${mailbox.password}`),
  });
});

afterAll(async () => {
  await proxy?.close();
});

async function login(name: string, token: string): Promise<{ status: string; ms: number }> {
  const raw = await RawImap.open(proxy.port);
  try {
    const start = performance.now();
    const reply = await raw.command("a", `LOGIN "${name}" "${token}"`);
    return { status: statusOf(reply, "a"), ms: performance.now() - start };
  } finally {
    raw.close();
  }
}

const REFUSED = "upstream login refused: the upstream server refused the credentials of account stale";
const HELD = (left: number) =>
  "upstream login not tried: the upstream server refused the credentials of account stale less than 2 s ago " +
  `(tried again in ${left} s)`;

test("the upstream refusing a right token's account is the account's failure, not the agent's", async () => {
  const rows = auditCursor(proxy);
  await rows();
  const times: number[] = [];
  for (let i = 0; i < LOCK_AT + 1; i++) {
    const { status, ms } = await login("stale-agent", brokenToken);
    expect(status).toBe("a NO [UNAVAILABLE] The upstream server refused the account's login; try again later");
    times.push(ms);
  }
  // Not slowed by the proxy, and tried upstream once: the logins after the first, within ACCOUNT_REFUSAL_HOLD_MS,
  // are answered without Dovecot's own delay after a refused password (about 2 s) too.
  for (const ms of times.slice(1)) expect(ms).toBeLessThan(500);
  const written = await rows();
  expect(written.map((r) => [r.command, r.decision, r.target, r.reason])).toEqual([
    ["LOGIN", "error", "stale-agent", REFUSED],
    ...times.slice(1).map(() => ["LOGIN", "error", "stale-agent", HELD(2)]),
  ]);
  expect(JSON.stringify(written)).not.toContain(mailbox.password);
  expect(JSON.stringify(written)).not.toContain(brokenToken);
  // The client address is not locked: another agent on it logs in, and the one whose account failed still may.
  expect((await login("fine-agent", goodToken)).status).toStartWith("a OK");
  // A wrong token is still a failed login, slowed and counted.
  expect((await login("fine-agent", generateToken())).status).toBe("a NO [AUTHENTICATIONFAILED] Authentication failed");
  const after = await rows();
  expect(after.map((r) => [r.decision, r.reason])).toEqual([
    ["allow", "logged in"],
    ["deny", "login failed: wrong token"],
  ]);
  // Once the hold is over, the account is tried upstream again.
  await Bun.sleep(HOLD_MS + 100);
  expect((await login("stale-agent", brokenToken)).status).toStartWith("a NO [UNAVAILABLE]");
  expect((await rows()).map((r) => r.reason)).toEqual([REFUSED]);
  // A reload that fixes the password is tried at once, the hold of the old one notwithstanding.
  expect((await login("stale-agent", brokenToken)).status).toStartWith("a NO [UNAVAILABLE]");
  proxy.reload({ extra: accounts(mailbox.password) });
  expect((await login("stale-agent", brokenToken)).status).toStartWith("a OK");
  expect((await rows()).map((r) => r.reason)).toEqual([HELD(2), "logged in"]);
}, 60_000);
