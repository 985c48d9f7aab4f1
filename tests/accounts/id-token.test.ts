// A `custom` provider with `openid` among its scopes (Keycloak, say) answers every token request with an id_token
// too, whose issuer is not the token endpoint's origin (the local server's is <issuer>/realms/mailgator). Mailgator
// never uses it: the login, the refresh and the upstream login work all the same (docs/accounts.md "Providers").
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { AccountCredentials } from "../../src/accounts/index.ts";
import { readStatus, readTokens } from "../../src/accounts/records.ts";
import { loadConfig } from "../../src/config/index.ts";
import { SealedStore } from "../../src/state/store.ts";
import { createMailbox } from "../fixtures/index.ts";
import { authorizationCodeFlow, control, LineClient, xoauth2 } from "../fixtures/oauth.ts";
import { upstreams } from "../fixtures/upstreams.ts";
import { Child, cli, MAIN, madeDirs, oauthConfig } from "./helpers.ts";

setDefaultTimeout(120_000);

afterAll(() => {
  for (const dir of madeDirs) rmSync(dir, { recursive: true, force: true });
});

const quiet = { error: () => {}, warn: () => {}, info: () => {} };

/** A config of `user` at the local server with the scopes `openid` and `mail`. */
function openidConfig(user: string) {
  const setup = oauthConfig(user);
  const text = readFileSync(setup.config, "utf8");
  expect(text).toContain(`scopes = ["mail"]`);
  writeFileSync(setup.config, text.replace(`scopes = ["mail"]`, `scopes = ["openid", "mail"]`));
  return setup;
}

test("the local server answers an openid grant with an id_token of another issuer", async () => {
  const user = (await createMailbox()).user;
  const reply = await authorizationCodeFlow({ user, scope: "openid mail" });
  expect(reply.status).toBe(200);
  const [, payload] = (reply["id_token"] as string).split(".");
  const claims = JSON.parse(Buffer.from(payload!, "base64url").toString()) as Record<string, unknown>;
  expect(claims["iss"]).toMatch(/\/realms\/mailgator$/);
  expect(claims["sub"]).toBe(user);
});

test("account login, status, a rotating refresh and an IMAP login: the id_token is ignored", async () => {
  const user = (await createMailbox()).user;
  await control("rotation", { user, on: "true" });
  const setup = openidConfig(user);
  const child = new Child([MAIN, "account", "login", "main", "-c", setup.config]);
  const [url] = await child.waitFor(/http:\/\/127\.0\.0\.1:\d+\/authorize\?\S+/);
  const page = await fetch(url!);
  expect(await page.text()).toContain("login received");
  expect(await child.exit()).toBe(0);
  expect(child.stdout).toContain("logged in");
  const status = cli(["account", "status", "main", "-c", setup.config]);
  expect(status.code).toBe(0);
  expect(status.stdout).toContain("ok");

  const config = loadConfig(setup.config);
  const store = SealedStore.open(config.state.path, { secretsFile: config.state.secretsFile, env: {}, create: false })!;
  try {
    const c = new AccountCredentials({ config, store, log: quiet });
    const first = (await c.credentialFor("main")) as { accessToken: string };
    const loginRefresh = readTokens(store, "main")!.refreshToken;
    c.reportRejected("main", first.accessToken);
    const second = (await c.credentialFor("main")) as { accessToken: string };
    expect(second.accessToken).not.toBe(first.accessToken);
    expect(readTokens(store, "main")!.refreshToken).not.toBe(loginRefresh);
    expect(readStatus(store, "main")!.state).toBe("ok");
    // The refreshed access token is a good one at Dovecot.
    const imap = await LineClient.open(upstreams().ports.imap);
    try {
      await imap.until(/^\* OK/);
      imap.send(`a AUTHENTICATE XOAUTH2 ${xoauth2(user, second.accessToken)}`);
      expect(await imap.until(/^(a |\+)/)).toMatch(/^a OK/m);
    } finally {
      imap.close();
    }
  } finally {
    store.close();
  }
});
