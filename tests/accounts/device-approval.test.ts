// `mailgator account login --device` while the person has not approved yet (RFC 8628 §3.3, §3.5; docs/accounts.md
// "Logging in"), against the local authorization server with its auto-approval off for the test's own user
// (docs/upstreams.md, `device?auto_approve=false&user=`): the token endpoint answers authorization_pending for
// seconds; the CLI shows the page and the code, polls at the interval and never faster, and logs in once the code is
// approved, its tokens sealed and accepted by Dovecot. A code denied at the page (access_denied) or expired before
// approval (expired_token) ends the login at the next poll, non-zero, with a clear reason: nothing is stored, the
// server issued nothing, a login stored before stays, and a later login works. A code whose announced lifetime
// (`expires_in`) passes unapproved ends the login at the CLI's own deadline, however long the server would still
// answer authorization_pending.
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { createMailbox } from "../fixtures/index.ts";
import { control, DEVICE_GRANT, oauthServer, until } from "../fixtures/oauth.ts";
import {
  Child,
  dovecotAccepts,
  issuedTokens,
  MAIN,
  madeDirs,
  oauthConfig,
  accountState as status,
  storedTokens,
} from "./helpers.ts";

// A device login is a CLI start plus a poll or two a second apart; several of them per test on a loaded machine.
setDefaultTimeout(120_000);

const users: string[] = [];
afterAll(async () => {
  for (const user of users) await control("device", { user, auto_approve: "true" });
  for (const dir of madeDirs) rmSync(dir, { recursive: true, force: true });
});

/**
 * A user of its own whose device codes the server leaves pending until the test approves or denies them, and a
 * config whose `device_url` names that user: the CLI sends no `login_hint` in its device request (RFC 8628 §3.1
 * defines none), and the server takes one from the endpoint's query.
 */
async function pendingUser() {
  const { user } = await createMailbox();
  users.push(user);
  expect((await control("device", { user, auto_approve: "false" })).status).toBe(200);
  const settings = (await control("settings", {}, "GET")).body as {
    perUser: Record<string, { deviceAutoApprove?: boolean }>;
  };
  expect(settings.perUser[user]?.deviceAutoApprove).toBe(false);
  const deviceUrl = `${oauthServer().deviceUrl}?login_hint=${encodeURIComponent(user)}`;
  return { user, setup: oauthConfig(user, { deviceUrl }) };
}

/** Starts `account login main --device`; returns the child once it shows the code, with the page and the code. */
async function deviceLogin(config: string) {
  const child = new Child([MAIN, "account", "login", "main", "-c", config, "--device"]);
  const [, page, code] = await child.waitFor(/open (\S+) and enter the code (\S+)/);
  return { child, page: page!, code: code! };
}

/** The device-code token requests (polls) the server has received for `user`. */
async function polls(user: string): Promise<number> {
  const counters = (await control("counters", {}, "GET")).body as {
    tokenByUser: Record<string, Record<string, number>>;
  };
  return counters.tokenByUser[user]?.[DEVICE_GRANT] ?? 0;
}

/** What the person does at the verification page: `approve` or `deny` the code. */
async function decide(decision: "approve" | "deny", code: string): Promise<void> {
  const response = await fetch(`${oauthServer().issuer}/device/${decision}?user_code=${encodeURIComponent(code)}`);
  expect(response.status).toBe(200);
}

/** A login the test approves at once; the CLI ends logged in. */
async function approvedLogin(config: string): Promise<void> {
  const { child, code } = await deviceLogin(config);
  await decide("approve", code);
  expect(await child.exit()).toBe(0);
  expect(child.stdout).toContain("logged in");
}

/** The login refused: exit status 1 within one poll or two, no "logged in", the reason on stderr. */
async function refused(child: Child, from: number): Promise<string> {
  expect(await child.exit()).toBe(1);
  // The next poll comes within the server's interval (1 s); far from the code's 600 s.
  expect(performance.now() - from).toBeLessThan(10_000);
  expect(child.stdout).not.toContain("logged in");
  return child.stderr;
}

describe("account login --device, the code not approved yet", () => {
  test("pending for seconds: page and code shown, polled at the interval, then approved: logged in", async () => {
    const { user, setup } = await pendingUser();
    // This user's next device code asks for a poll every 2 s (the server itself refuses only polls within 1 s).
    await control("device_interval", { user, seconds: "2" });
    const { child, page, code } = await deviceLogin(setup.config);
    const shown = performance.now();
    expect(page).toBe(`${oauthServer().issuer}/device`);
    expect(code).toMatch(/^[B-Z]{4}-[B-Z]{4}$/);
    expect(child.stdout).toContain(`(or open ${oauthServer().issuer}/device?user_code=${code})`);
    await Bun.sleep(7_000);
    const elapsed = (performance.now() - shown) / 1000;
    const made = await polls(user);
    // Every poll was answered authorization_pending and the CLI waits on: about one per 2 s, never more often.
    expect(child.proc.exitCode).toBeNull();
    expect(made).toBeLessThanOrEqual(Math.floor(elapsed / 2) + 1);
    expect(made).toBeGreaterThanOrEqual(2);
    expect(await issuedTokens(user)).toEqual([]);
    await decide("approve", code);
    expect(await child.exit()).toBe(0);
    expect(child.stdout).toContain("logged in; tokens stored sealed");
    expect(child.stderr).toBe("");
    // No poll was answered slow_down (the CLI would have waited 5 s more): the approval was taken at the next one.
    expect(await polls(user)).toBeLessThanOrEqual(Math.floor((performance.now() - shown) / 2000) + 1);
    expect(status(setup.config)).toBe("ok");
    const stored = storedTokens(setup.config)!;
    const issued = await issuedTokens(user);
    expect(issued.map((t) => [t.kind, t.grant]).sort()).toEqual([
      ["access", DEVICE_GRANT],
      ["refresh", DEVICE_GRANT],
    ]);
    expect(stored.accessToken).toBe(issued.find((t) => t.kind === "access")!.value);
    expect(stored.refreshToken).toBe(issued.find((t) => t.kind === "refresh")!.value);
    expect(await dovecotAccepts(user, stored.accessToken!)).toBe(true);
    // Sealed: neither token is in the state database's files in clear.
    for (const file of ["", "-wal", "-shm"].map((side) => `${setup.dir}/mailgator-state.db${side}`)) {
      if (!existsSync(file)) continue;
      const bytes = readFileSync(file, "latin1");
      for (const token of issued) expect(bytes).not.toContain(token.value);
    }
  });

  test("denied at the page: the next poll ends the login, with why; nothing stored; a later login works", async () => {
    const { user, setup } = await pendingUser();
    const { child, code } = await deviceLogin(setup.config);
    await until(async () => (await polls(user)) >= 1);
    await decide("deny", code);
    const from = performance.now();
    const stderr = await refused(child, from);
    expect(stderr).toContain("denied");
    expect(stderr).toContain("run the login again");
    expect(storedTokens(setup.config)).toBeNull();
    expect(status(setup.config)).toBe("not-logged-in");
    expect(await issuedTokens(user)).toEqual([]);
    await approvedLogin(setup.config);
    const stored = storedTokens(setup.config)!;
    expect(await dovecotAccepts(user, stored.accessToken!)).toBe(true);
  });

  test("expired before approval: the next poll ends the login; the login stored before stays and works", async () => {
    const { user, setup } = await pendingUser();
    await approvedLogin(setup.config);
    const before = storedTokens(setup.config)!;
    const { child } = await deviceLogin(setup.config);
    await until(async () => (await polls(user)) >= 3);
    // The code the server gave for 600 s expires now (as a provider may end it early); nobody approved it.
    expect((await control("device_expire", { user })).body["devices"]).toBe(1);
    const stderr = await refused(child, performance.now());
    expect(stderr).toContain("expired");
    expect(stderr).toContain("run the login again");
    expect(storedTokens(setup.config)).toEqual(before);
    expect(status(setup.config)).toBe("ok");
    expect((await issuedTokens(user)).length).toBe(2);
    expect(await dovecotAccepts(user, before.accessToken!)).toBe(true);
    // A later login replaces the pair.
    await approvedLogin(setup.config);
    const after = storedTokens(setup.config)!;
    expect(after.refreshToken).not.toBe(before.refreshToken);
    expect(await dovecotAccepts(user, after.accessToken!)).toBe(true);
  });

  test("its announced lifetime passes unapproved: the CLI stops polling at its own deadline, with why", async () => {
    const { user, setup } = await pendingUser();
    // This user's next code says it lives 3 s; the server would answer authorization_pending for 600 s.
    const lifetime = 3;
    expect((await control("device_lifetime", { user, seconds: String(lifetime) })).status).toBe(200);
    const { child } = await deviceLogin(setup.config);
    const shown = performance.now();
    expect(await child.exit()).toBe(1);
    const took = performance.now() - shown;
    // Ended by the deadline, not before it, and within a poll's interval (1 s) after it on a loaded machine.
    expect(took).toBeGreaterThanOrEqual(lifetime * 1000 - 500);
    expect(took).toBeLessThan(lifetime * 1000 + 5_000);
    expect(child.stdout).not.toContain("logged in");
    expect(child.stderr).toContain("the code was not approved in time; run the login again");
    const made = await polls(user);
    expect(made).toBeGreaterThanOrEqual(1);
    expect(made).toBeLessThanOrEqual(lifetime + 1);
    // No poll after the end, nothing issued or stored.
    await Bun.sleep(1_500);
    expect(await polls(user)).toBe(made);
    expect(await issuedTokens(user)).toEqual([]);
    expect(storedTokens(setup.config)).toBeNull();
    expect((await control("device_lifetime", { user, seconds: "0" })).status).toBe(200);
  });
});
