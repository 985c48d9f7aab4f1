/**
 * Reload of an OAuth2 account (docs/operations.md "Reload"): `mailgator serve` as a child process with an
 * account whose tokens the local authorization server issued, then its client settings changed on disk and
 * SIGHUP. New logins use the new settings: a token issued to another client is not used, and the account is
 * usable again once its settings are back. Real IMAP logins through the proxy against the test Dovecot, which
 * checks the tokens with the local server.
 */
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createMailbox, uniqueToken } from "../fixtures/index.ts";
import { authorizationCodeFlow, oauthServer, oauthServeToml, storeServeTokens } from "../fixtures/oauth.ts";
import { cleanExit, lineClient, type Served, serveChild } from "./serve-child.ts";

setDefaultTimeout(60_000);

const AGENT_TOKEN = `mg_${uniqueToken("agent")}`;
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Sends SIGHUP and waits for the reload's own log line (success or failure) after `mark`. */
async function hup(served: Served): Promise<string> {
  const mark = served.logs().length;
  process.kill(served.proc.pid, "SIGHUP");
  return served.waitForLog(/reloaded |reload failed/, mark);
}

/** Logs in as the agent through the proxy and returns the tagged reply line. */
async function login(port: number): Promise<string> {
  const c = await lineClient(tcpConnect({ host: "127.0.0.1", port }));
  try {
    await c.waitFor(/^\* OK/m);
    c.send(`a1 LOGIN bot ${AGENT_TOKEN}`);
    return await c.waitFor(/^a1 .*$/m);
  } finally {
    c.close();
  }
}

test("SIGHUP, another client_id: new logins use it, not the old client's token; changed back, they work", async () => {
  const server = oauthServer();
  const mailbox = await createMailbox({ name: "reload-oauth" });
  const tokens = await authorizationCodeFlow({ user: mailbox.user });
  expect(tokens.status).toBe(200);
  const dir = mkdtempSync(join(tmpdir(), "mg-reload-oauth-"));
  dirs.push(dir);
  const config = (clientId: string) => oauthServeToml(dir, AGENT_TOKEN, mailbox.user, { clientId });
  // The tokens, stored as `mailgator account login` stores them, before serve opens the state database.
  storeServeTokens(dir, tokens);

  const file = join(dir, "mailgator.toml");
  writeFileSync(file, config(server.clientId));
  const served = serveChild(file);
  try {
    const port = await served.port("IMAP");
    expect(await login(port)).toMatch(/^a1 OK/);

    writeFileSync(file, config("another-client"));
    expect(await hup(served)).toMatch(/reloaded /);
    // The stored tokens were issued to the old client: not used; the account needs a login for the new one.
    expect(await login(port)).toMatch(/^a1 NO \[UNAVAILABLE\]/);

    writeFileSync(file, config(server.clientId));
    expect(await hup(served)).toMatch(/reloaded /);
    expect(await login(port)).toMatch(/^a1 OK/);
  } finally {
    served.proc.kill("SIGTERM");
  }
  await cleanExit(served);
});
