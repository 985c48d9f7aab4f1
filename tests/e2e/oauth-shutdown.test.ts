/**
 * Stopping `mailgator serve` while an OAuth2 token refresh is in flight (docs/accounts.md): the provider has already
 * rotated the refresh token (the old one is invalid at once) when its answer reaches serve, after the proxies' grace.
 * serve waits for that answer and stores the new pair before it closes the state database, so the next start logs
 * in. Real IMAP logins through the proxy against the test Dovecot, which checks the tokens with the local
 * authorization server; the server holds its token answers back for this test's user (/control/delay).
 */
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SHUTDOWN_GRACE_MS } from "../../src/net/index.ts";
import { createMailbox, uniqueToken } from "../fixtures/index.ts";
import { authorizationCodeFlow, control, oauthServeToml, storeServeTokens } from "../fixtures/oauth.ts";
import { cleanExit, lineClient, serveChild } from "./serve-child.ts";

setDefaultTimeout(90_000);

const AGENT_TOKEN = `mg_${uniqueToken("agent")}`;
/** The provider's answer comes this long after the grant: after the proxies' grace has ended their sessions. */
const DELAY_MS = SHUTDOWN_GRACE_MS + 2000;

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Refresh grants the server received about `user`. */
async function refreshes(user: string): Promise<number> {
  const counters = (await control("counters", {}, "GET")).body as {
    tokenByUser: Record<string, Record<string, number>>;
  };
  return counters.tokenByUser[user]?.["refresh_token"] ?? 0;
}

/**
 * serve is stopped with `signals` (one, or a second 300 ms after the first, as a supervisor or a second Ctrl-C may
 * send) while the refresh's answer is held back; it must end with 0 after storing the rotated pair.
 */
async function stopDuringRefresh(signals: readonly ("SIGTERM" | "SIGINT")[]): Promise<void> {
  const mailbox = await createMailbox({ name: "oauth-shutdown" });
  const user = mailbox.user;
  expect((await control("rotation", { on: "true", user })).status).toBe(200);
  expect((await control("lifetime", { seconds: "1", user })).status).toBe(200);
  const tokens = await authorizationCodeFlow({ user });
  expect(tokens.status).toBe(200);
  const dir = mkdtempSync(join(tmpdir(), "mg-oauth-shutdown-"));
  dirs.push(dir);
  const file = join(dir, "mailgator.toml");
  writeFileSync(file, oauthServeToml(dir, AGENT_TOKEN, user));
  storeServeTokens(dir, tokens);
  // The stored access token (1 s) has expired: the agent's login needs a refresh.
  await Bun.sleep(1500);
  expect((await control("delay", { ms: String(DELAY_MS), user })).status).toBe(200);
  try {
    const served = serveChild(file);
    const port = await served.port("IMAP");
    const before = await refreshes(user);
    const agent = await lineClient(tcpConnect({ host: "127.0.0.1", port }));
    try {
      await agent.waitFor(/^\* OK/m);
      agent.send(`a1 LOGIN bot ${AGENT_TOKEN}`);
      // The refresh was granted (the old refresh token is revoked now); its answer is held back.
      for (let i = 0; i < 200 && (await refreshes(user)) === before; i++) await Bun.sleep(50);
      expect(await refreshes(user)).toBe(before + 1);
      for (const [i, signal] of signals.entries()) {
        if (i > 0) await Bun.sleep(300);
        served.proc.kill(signal);
      }
      expect(await served.proc.exited).toBe(0);
      if (signals.length > 1) expect(served.logs()).toContain("already shutting down");
    } finally {
      agent.close();
    }
  } finally {
    expect((await control("delay", { ms: "0", user })).status).toBe(200);
  }

  // Started again: the stored access token has expired, and the refresh token stored is the one now valid.
  const again = serveChild(file);
  try {
    const port = await again.port("IMAP");
    const agent = await lineClient(tcpConnect({ host: "127.0.0.1", port }));
    try {
      await agent.waitFor(/^\* OK/m);
      agent.send(`a1 LOGIN bot ${AGENT_TOKEN}`);
      expect(await agent.waitFor(/^a1 .*$/m)).toMatch(/^a1 OK/);
    } finally {
      agent.close();
    }
  } finally {
    again.proc.kill("SIGTERM");
  }
  await cleanExit(again);
}

test("SIGTERM during a token refresh: serve stores the rotated refresh token; the next start logs in", async () => {
  await stopDuringRefresh(["SIGTERM"]);
});

test("a second SIGTERM, then SIGINT, during the shutdown do not cut it short: the pair is stored", async () => {
  await stopDuringRefresh(["SIGTERM", "SIGTERM", "SIGINT"]);
});
