// `mailgator account login` when the person denies consent (RFC 6749 §4.1.2.1; docs/accounts.md "Logging in"),
// against the local authorization server with `authorize?deny=true&user=` for the test's own user
// (docs/upstreams.md): the redirect to the loopback listener carries `error=access_denied` and this login's `state`.
// The CLI stops at once (not at its 10-minute timeout) with the refusal, exits non-zero, closes its listener and
// stores nothing; a login stored before stays. An error redirect without this login's state is no answer
// (RFC 6749 §10.12): it neither ends nor steers the login, which completes with the real redirect.
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { rmSync } from "node:fs";
import { connect } from "node:net";
import { createMailbox } from "../fixtures/index.ts";
import { control } from "../fixtures/oauth.ts";
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

setDefaultTimeout(120_000);

const users: string[] = [];
afterAll(async () => {
  for (const user of users) await control("authorize", { user, deny: "false" });
  for (const dir of madeDirs) rmSync(dir, { recursive: true, force: true });
});

async function ownUser(): Promise<string> {
  const { user } = await createMailbox();
  users.push(user);
  return user;
}

/** Sets whether the server's authorize endpoint denies `user`'s consent, and checks that it took. */
async function deny(user: string, on: boolean): Promise<void> {
  expect((await control("authorize", { user, deny: String(on) })).status).toBe(200);
  const settings = (await control("settings", {}, "GET")).body as {
    denyAuthorize: boolean;
    perUser: Record<string, { denyAuthorize?: boolean }>;
  };
  expect(settings.perUser[user]?.denyAuthorize).toBe(on);
  // Only this user's: every other test file's logins go on at the shared server.
  expect(settings.denyAuthorize).toBe(false);
}

/** Starts a loopback `account login main`; returns the child, the URL it prints and its callback. */
async function loopbackLogin(config: string) {
  const child = new Child([MAIN, "account", "login", "main", "-c", config]);
  const [url] = await child.waitFor(/http:\/\/127\.0\.0\.1:\d+\/authorize\?\S+/);
  const [, callback, port] = await child.waitFor(/Waiting for the redirect to (http:\/\/127\.0\.0\.1:(\d+)\S+) /);
  return { child, url: url!, callback: callback!, port: Number(port) };
}

/** A loopback login whose printed URL is followed by a plain HTTP client (the browser); the CLI ends logged in. */
async function login(config: string): Promise<void> {
  const { child, url } = await loopbackLogin(config);
  expect((await fetch(url)).status).toBe(200);
  expect(await child.exit()).toBe(0);
  expect(child.stdout).toContain("logged in");
}

/** Whether anything listens on 127.0.0.1:`port`. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1", () => {
      socket.destroy();
      resolve(true);
    });
    socket.on("error", () => resolve(false));
  });
}

describe("account login, consent denied", () => {
  test("loopback: the denial ends the login at once, non-zero; nothing stored; the login before stays", async () => {
    const user = await ownUser();
    const setup = oauthConfig(user);
    await login(setup.config);
    const before = storedTokens(setup.config)!;
    await deny(user, true);
    const { child, url, port } = await loopbackLogin(setup.config);
    const from = performance.now();
    // The browser follows the server's 302 to the listener, with error=access_denied and this login's state.
    const page = await fetch(url);
    expect(page.url).toContain("error=access_denied");
    expect(await page.text()).not.toContain("login received");
    expect(await child.exit()).toBe(1);
    expect(performance.now() - from).toBeLessThan(10_000);
    expect(child.stderr).toContain("access_denied");
    expect(child.stderr).toContain("run the login again");
    expect(child.stdout).not.toContain("logged in");
    expect(await listening(port)).toBe(false);
    expect(storedTokens(setup.config)).toEqual(before);
    expect(status(setup.config)).toBe("ok");
    expect((await issuedTokens(user)).length).toBe(2);
    expect(await dovecotAccepts(user, before.accessToken!)).toBe(true);
    // Consent given again: a later login replaces the pair.
    await deny(user, false);
    await login(setup.config);
    const after = storedTokens(setup.config)!;
    expect(after.refreshToken).not.toBe(before.refreshToken);
    expect(await dovecotAccepts(user, after.accessToken!)).toBe(true);
  });

  test("--paste: the denied redirect pasted back ends the login with the refusal; nothing stored", async () => {
    const user = await ownUser();
    const setup = oauthConfig(user);
    await deny(user, true);
    const child = new Child([MAIN, "account", "login", "main", "-c", setup.config, "--paste"]);
    const [url] = await child.waitFor(/http:\/\/127\.0\.0\.1:\d+\/authorize\?\S+/);
    await child.waitFor(/paste it here/);
    const location = (await fetch(url!, { redirect: "manual" })).headers.get("location")!;
    expect(location).toContain("error=access_denied");
    child.write(`${location}\n`);
    expect(await child.exit()).toBe(1);
    expect(child.stderr).toContain("access_denied");
    expect(child.stderr).toContain("run the login again");
    expect(storedTokens(setup.config)).toBeNull();
    expect(status(setup.config)).toBe("not-logged-in");
    expect(await issuedTokens(user)).toEqual([]);
  });

  test("an error redirect without this login's state is ignored: the login goes on and completes", async () => {
    const user = await ownUser();
    const setup = oauthConfig(user);
    const { child, url, callback } = await loopbackLogin(setup.config);
    const state = new URL(url).searchParams.get("state")!;
    // Forged answers: another state, none, this state's prefix, and this state beside another one first.
    for (const query of [
      "error=access_denied&state=forged",
      "error=access_denied",
      `error=access_denied&state=${encodeURIComponent(state.slice(0, -1))}`,
      `error=access_denied&state=forged&state=${encodeURIComponent(state)}`,
      "error=server_error&error_description=log%20in%20elsewhere&state=",
    ]) {
      const answer = await fetch(`${callback}?${query}`);
      expect(answer.status).toBe(404);
      expect(await answer.text()).not.toContain("log in elsewhere");
    }
    await Bun.sleep(300);
    expect(child.proc.exitCode).toBeNull();
    expect(child.stdout).not.toContain("refused");
    // The real redirect, with a code, completes the login.
    expect((await fetch(url)).status).toBe(200);
    expect(await child.exit()).toBe(0);
    expect(child.stdout).toContain("logged in");
    expect(child.stderr).toBe("");
    expect(await dovecotAccepts(user, storedTokens(setup.config)!.accessToken!)).toBe(true);
  });
});
