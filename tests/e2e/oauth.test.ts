// The local OAuth2 authorization server and the real Dovecot and Postfix checking its tokens:
// every grant gives a token that XOAUTH2 and OAUTHBEARER accept at both servers; expired and
// revoked tokens are refused by both; the control endpoints do what docs/upstreams.md says.
import { describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { layout } from "../../scripts/upstreams/layout.ts";
import { startOAuthServer } from "../../scripts/upstreams/oauth.ts";
import { type OAuthServerConfig, serve } from "../../scripts/upstreams/oauth-server.ts";
import { freePort, isListening } from "../../scripts/upstreams/ports.ts";
import { isAlive, track } from "../../scripts/upstreams/processes.ts";
import { createMailbox, uniqueToken, upstreams, waitForDelivery } from "../fixtures/index.ts";
import {
  authorizationCodeFlow,
  clientCredentials,
  control,
  DEVICE_GRANT,
  deviceAuthorization,
  LineClient,
  oauthbearer,
  oauthServer,
  pkcePair,
  refresh,
  tokenRequest,
  xoauth2,
} from "../fixtures/oauth.ts";

type Mechanism = "XOAUTH2" | "OAUTHBEARER";

function initialResponse(mechanism: Mechanism, user: string, token: string): string {
  return mechanism === "XOAUTH2" ? xoauth2(user, token) : oauthbearer(user, token);
}

/** AUTHENTICATE at Dovecot's plain port, with SASL-IR (RFC 4959) or after the `+` continuation. */
async function imapAuthenticate(
  mechanism: Mechanism,
  user: string,
  token: string,
  options: { saslIr?: boolean } = {},
): Promise<string> {
  const client = await LineClient.open(upstreams().ports.imap);
  try {
    const greeting = await client.until(/^\* OK/);
    expect(greeting).toContain(`AUTH=${mechanism}`);
    const response = initialResponse(mechanism, user, token);
    if (options.saslIr === false) {
      client.send(`a AUTHENTICATE ${mechanism}`);
      await client.until(/^\+/);
      client.send(response);
    } else {
      client.send(`a AUTHENTICATE ${mechanism} ${response}`);
    }
    let reply = await client.until(/^(a |\+)/);
    if (reply.startsWith("+")) {
      // A failed OAuth2 login gets an error challenge first; the client answers with an empty line.
      client.send("");
      reply += await client.until(/^a /);
    }
    if (/^a OK/m.test(reply)) {
      client.send("b SELECT INBOX");
      reply += await client.until(/^b /);
    }
    return reply;
  } finally {
    client.close();
  }
}

/** AUTH at Postfix's plain port; on success sends one message to `rcpt` when given. */
async function smtpAuthenticate(
  mechanism: Mechanism,
  user: string,
  token: string,
  options: { initial?: boolean; rcpt?: string; subject?: string } = {},
): Promise<string> {
  const client = await LineClient.open(upstreams().ports.smtp);
  try {
    await client.until(/^220 /);
    client.send("EHLO oauth.test");
    const ehlo = await client.until(/^250 /);
    expect(ehlo).toMatch(new RegExp(`^250-AUTH .*\\b${mechanism}\\b`, "m"));
    const response = initialResponse(mechanism, user, token);
    if (options.initial === false) {
      client.send(`AUTH ${mechanism}`);
      expect(await client.until(/^334/)).toMatch(/^334 ?\r\n$/);
      client.send(response);
    } else {
      client.send(`AUTH ${mechanism} ${response}`);
    }
    let reply = await client.until(/^\d{3} /);
    if (reply.startsWith("334")) {
      client.send("");
      reply += await client.until(/^\d{3} /);
    }
    if (reply.startsWith("235") && options.rcpt !== undefined) {
      client.send(`MAIL FROM:<${user}>`);
      reply += await client.until(/^\d{3} /);
      client.send(`RCPT TO:<${options.rcpt}>`);
      reply += await client.until(/^\d{3} /);
      client.send("DATA");
      reply += await client.until(/^\d{3} /);
      client.send(
        `Subject: ${options.subject ?? "oauth"}\r\nX-Test-Token: ${options.subject}\r\n\r\nsent with ${mechanism}\r\n.`,
      );
      reply += await client.until(/^\d{3} /);
      client.send("QUIT");
    }
    return reply;
  } finally {
    client.close();
  }
}

/** The authorization endpoint's URL for the test client with these parameters. */
function authorizeUrl(params: Record<string, string>): string {
  const url = new URL(oauthServer().authorizeUrl);
  url.searchParams.set("response_type", "code");
  url.searchParams.set("client_id", oauthServer().clientId);
  for (const [key, value] of Object.entries(params)) url.searchParams.set(key, value);
  return url.toString();
}

function decodeChallenge(line: string): unknown {
  return JSON.parse(Buffer.from(line.replace(/^(\+|334) /, "").trim(), "base64").toString("utf8"));
}

describe("getting tokens", () => {
  test("authorization code with PKCE through a loopback redirect; the code is single-use", async () => {
    const mailbox = await createMailbox();
    const reply = await authorizationCodeFlow({ user: mailbox.user });
    expect(reply.status).toBe(200);
    expect(reply.token_type).toBe("Bearer");
    expect(reply.access_token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(reply.refresh_token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    // Used once already.
    const again = await tokenRequest({
      grant_type: "authorization_code",
      code: reply.code,
      redirect_uri: reply.redirectUri,
      code_verifier: pkcePair().verifier,
    });
    expect([again.status, again.error]).toEqual([400, "invalid_grant"]);
    // A public client (no secret) with PKCE works too.
    const publicReply = await authorizationCodeFlow({ user: mailbox.user, secret: false });
    expect(publicReply.status).toBe(200);
  });

  test("authorize refuses an unknown client without redirecting and plain PKCE with an error redirect", async () => {
    const server = oauthServer();
    const unknown = await fetch(
      `${server.authorizeUrl}?response_type=code&client_id=nobody&redirect_uri=http://127.0.0.1:9/cb`,
      {
        redirect: "manual",
      },
    );
    expect(unknown.status).toBe(400);
    const plain = await fetch(
      authorizeUrl({
        redirect_uri: "http://127.0.0.1:9/cb",
        state: "s1",
        code_challenge: "a".repeat(43),
        code_challenge_method: "plain",
      }),
      { redirect: "manual" },
    );
    expect(plain.status).toBe(302);
    const location = new URL(plain.headers.get("location") ?? "");
    expect([location.searchParams.get("error"), location.searchParams.get("state")]).toEqual(["invalid_request", "s1"]);
    expect(location.searchParams.has("code")).toBe(false);
  });

  test("a wrong code_verifier or redirect_uri is invalid_grant", async () => {
    const { challenge } = pkcePair();
    const redirectUri = "http://127.0.0.1:9/cb";
    const codes: string[] = [];
    for (let i = 0; i < 2; i++) {
      const response = await fetch(
        authorizeUrl({ redirect_uri: redirectUri, code_challenge: challenge, code_challenge_method: "S256" }),
        { redirect: "manual" },
      );
      codes.push(new URL(response.headers.get("location") ?? "").searchParams.get("code") ?? "");
    }
    const wrongVerifier = await tokenRequest({
      grant_type: "authorization_code",
      code: codes[0] as string,
      redirect_uri: redirectUri,
      code_verifier: pkcePair().verifier,
    });
    expect([wrongVerifier.status, wrongVerifier.error]).toEqual([400, "invalid_grant"]);
    const wrongRedirect = await tokenRequest({
      grant_type: "authorization_code",
      code: codes[1] as string,
      redirect_uri: "http://127.0.0.1:9/other",
    });
    expect([wrongRedirect.status, wrongRedirect.error]).toEqual([400, "invalid_grant"]);
  });

  test("client_credentials needs the secret and gives no refresh token", async () => {
    const reply = await clientCredentials();
    expect(reply.status).toBe(200);
    expect(reply.access_token).toBeString();
    expect(reply.refresh_token).toBeUndefined();
    const publicClient = await tokenRequest({ grant_type: "client_credentials" }, { secret: false });
    expect([publicClient.status, publicClient.error]).toEqual([401, "invalid_client"]);
  });

  test("device code: pending, slow_down when polled too fast, then tokens; approve and deny by user code", async () => {
    const mailbox = await createMailbox();
    const device = await deviceAuthorization(mailbox.user);
    expect(device.user_code).toMatch(/^[B-Z]{4}-[B-Z]{4}$/);
    expect(device.verification_uri).toBe(`${oauthServer().issuer}/device`);
    expect(device.interval).toBe(1);
    const poll = () => tokenRequest({ grant_type: DEVICE_GRANT, device_code: device.device_code }, { secret: false });
    expect((await poll()).error).toBe("authorization_pending");
    expect((await poll()).error).toBe("slow_down");
    await Bun.sleep(1100);
    const tokens = await poll();
    expect(tokens.status).toBe(200);
    expect(tokens.refresh_token).toBeString();
    expect(await imapAuthenticate("XOAUTH2", mailbox.user, tokens.access_token as string)).toMatch(/^a OK/m);

    const approved = await deviceAuthorization(mailbox.user);
    const approve = await fetch(`${oauthServer().issuer}/device/approve?user_code=${approved.user_code}`);
    expect(approve.status).toBe(200);
    const first = await tokenRequest(
      { grant_type: DEVICE_GRANT, device_code: approved.device_code },
      { secret: false },
    );
    expect(first.status).toBe(200);

    const denied = await deviceAuthorization(mailbox.user);
    expect((await fetch(`${oauthServer().issuer}/device/deny?user_code=${denied.user_code}`)).status).toBe(200);
    const refused = await tokenRequest(
      { grant_type: DEVICE_GRANT, device_code: denied.device_code },
      { secret: false },
    );
    expect([refused.status, refused.error]).toEqual([400, "access_denied"]);
  });
});

describe("Dovecot checks the tokens (oauth2 passdb, RFC 7662 introspection)", () => {
  for (const mechanism of ["XOAUTH2", "OAUTHBEARER"] as const) {
    for (const saslIr of [true, false]) {
      test(`${mechanism} ${saslIr ? "with SASL-IR" : "after the continuation"}: logged in, SELECT works`, async () => {
        const mailbox = await createMailbox();
        const { access_token } = await authorizationCodeFlow({ user: mailbox.user });
        const reply = await imapAuthenticate(mechanism, mailbox.user, access_token as string, { saslIr });
        expect(reply).toMatch(/^a OK .*Logged in/m);
        expect(reply).toMatch(/^b OK/m);
      });
    }
  }

  test("the configured OAuth user logs in with a client_credentials token", async () => {
    const { user } = oauthServer();
    const { access_token } = await clientCredentials();
    expect(await imapAuthenticate("OAUTHBEARER", user.user, access_token as string)).toMatch(/^a OK/m);
  });

  test("a token for one user does not log in another; a password user's password is no token", async () => {
    const [a, b] = [await createMailbox(), await createMailbox()];
    const { access_token } = await authorizationCodeFlow({ user: a.user });
    const other = await imapAuthenticate("XOAUTH2", b.user, access_token as string);
    expect(other).toMatch(/^a NO \[AUTHENTICATIONFAILED\]/m);
    const password = await imapAuthenticate("XOAUTH2", a.user, a.password);
    expect(password).toMatch(/^a NO \[AUTHENTICATIONFAILED\]/m);
  });
});

describe("Postfix checks the tokens (Dovecot SASL)", () => {
  for (const mechanism of ["XOAUTH2", "OAUTHBEARER"] as const) {
    test(`AUTH ${mechanism}: 235, and the message reaches the recipient's INBOX`, async () => {
      const [sender, recipient] = [await createMailbox(), await createMailbox()];
      const { access_token } = await authorizationCodeFlow({ user: sender.user });
      const token = uniqueToken();
      const reply = await smtpAuthenticate(mechanism, sender.user, access_token as string, {
        rcpt: recipient.address,
        subject: token,
        initial: mechanism === "XOAUTH2",
      });
      expect(reply).toMatch(/^235 /m);
      expect(reply).toMatch(/^250 2\.0\.0 Ok: queued/m);
      const delivered = await waitForDelivery(recipient, token);
      expect(delivered.length).toBe(1);
    });
  }
});

describe("real clients: Python's imaplib and smtplib", () => {
  // Both base64-encode what the callback returns: imaplib after the "+" continuation, smtplib as the initial response.
  const script = String.raw`
import imaplib, smtplib, sys
imap_port, smtp_port, user, token, rcpt, subject = sys.argv[1:7]
xoauth2 = f"user={user}\x01auth=Bearer {token}\x01\x01"
oauthbearer = f"n,a={user},\x01auth=Bearer {token}\x01\x01"
imap = imaplib.IMAP4("127.0.0.1", int(imap_port))
print("imap", imap.authenticate("OAUTHBEARER", lambda _: oauthbearer.encode())[0])
print("select", imap.select("INBOX")[0])
imap.logout()
smtp = smtplib.SMTP("127.0.0.1", int(smtp_port))
smtp.ehlo()
print("smtp", smtp.auth("XOAUTH2", lambda challenge=None: xoauth2, initial_response_ok=True)[0])
smtp.sendmail(user, [rcpt], f"Subject: {subject}\r\nX-Test-Token: {subject}\r\n\r\nsmtplib\r\n")
smtp.quit()
`;

  test("imaplib AUTHENTICATE OAUTHBEARER and smtplib AUTH XOAUTH2 with a token from the code flow", async () => {
    const [sender, recipient] = [await createMailbox(), await createMailbox()];
    const { access_token } = await authorizationCodeFlow({ user: sender.user });
    const token = uniqueToken();
    const servers = upstreams();
    const child = Bun.spawn(
      [
        "/usr/bin/python3",
        "-c",
        script,
        String(servers.ports.imap),
        String(servers.ports.smtp),
        sender.user,
        access_token as string,
        recipient.address,
        token,
      ],
      { stdout: "pipe", stderr: "pipe", stdin: "ignore" },
    );
    const [out, err] = [await new Response(child.stdout).text(), await new Response(child.stderr).text()];
    expect({ exit: await child.exited, err }).toEqual({ exit: 0, err: "" });
    expect(out).toBe("imap OK\nselect OK\nsmtp 235\n");
    expect((await waitForDelivery(recipient, token)).length).toBe(1);
  });
});

describe("expired and revoked tokens", () => {
  test("an expired access token is refused by Dovecot and Postfix, with the OAuth2 error challenge", async () => {
    const mailbox = await createMailbox();
    const { access_token } = await authorizationCodeFlow({ user: mailbox.user });
    const token = access_token as string;
    expect(await imapAuthenticate("XOAUTH2", mailbox.user, token)).toMatch(/^a OK/m);
    expect((await control("expire", { token })).body).toEqual({ ok: true, tokens: 1 });
    const imap = await imapAuthenticate("XOAUTH2", mailbox.user, token);
    expect(imap).toMatch(/^\+ /);
    expect(decodeChallenge(imap.split("\r\n")[0] as string)).toMatchObject({ status: "401" });
    expect(imap).toMatch(/^a NO \[AUTHENTICATIONFAILED\]/m);
    const smtp = await smtpAuthenticate("OAUTHBEARER", mailbox.user, token);
    expect(smtp).toMatch(/^334 /);
    expect(smtp).toMatch(/^535 5\.7\.8 /m);
  });

  test("a lifetime of 3 s for one user: the token works, then is refused", async () => {
    const mailbox = await createMailbox();
    expect((await control("lifetime", { seconds: "3", user: mailbox.user })).status).toBe(200);
    const reply = await authorizationCodeFlow({ user: mailbox.user });
    // The token was issued before this point, so it has expired 3.1 s after it.
    const received = Date.now();
    expect(reply.expires_in).toBe(3);
    expect(await imapAuthenticate("OAUTHBEARER", mailbox.user, reply.access_token as string)).toMatch(/^a OK/m);
    await Bun.sleep(Math.max(0, received + 3100 - Date.now()));
    expect(await imapAuthenticate("OAUTHBEARER", mailbox.user, reply.access_token as string)).toMatch(/^a NO/m);
    // Other users keep the default lifetime.
    expect((await authorizationCodeFlow()).expires_in).toBe(3600);
  });

  test("revoking a user's tokens: access refused by both servers, refresh is invalid_grant", async () => {
    const mailbox = await createMailbox();
    const reply = await authorizationCodeFlow({ user: mailbox.user });
    const revoked = await control("revoke", { user: mailbox.user });
    expect(revoked.body["tokens"]).toBe(2);
    expect(await imapAuthenticate("XOAUTH2", mailbox.user, reply.access_token as string)).toMatch(/^a NO/m);
    expect(await smtpAuthenticate("XOAUTH2", mailbox.user, reply.access_token as string)).toMatch(/^535 /m);
    const refreshed = await refresh(reply.refresh_token as string);
    expect([refreshed.status, refreshed.error]).toEqual([400, "invalid_grant"]);
  });

  test("revoking one refresh token ends it and the access tokens issued with it, not the user's others", async () => {
    const mailbox = await createMailbox();
    const first = await authorizationCodeFlow({ user: mailbox.user });
    const second = await authorizationCodeFlow({ user: mailbox.user });
    await control("revoke", { refresh_token: first.refresh_token as string });
    expect((await refresh(first.refresh_token as string)).error).toBe("invalid_grant");
    expect(await imapAuthenticate("XOAUTH2", mailbox.user, first.access_token as string)).toMatch(/^a NO/m);
    expect(await imapAuthenticate("XOAUTH2", mailbox.user, second.access_token as string)).toMatch(/^a OK/m);
    expect((await refresh(second.refresh_token as string)).status).toBe(200);
  });
});

describe("control endpoints", () => {
  test("refresh without rotation keeps the refresh token; with rotation each use replaces it", async () => {
    const mailbox = await createMailbox();
    const initial = await authorizationCodeFlow({ user: mailbox.user });
    const plain = await refresh(initial.refresh_token as string);
    expect(plain.status).toBe(200);
    expect(plain.refresh_token).toBeUndefined();
    expect((await refresh(initial.refresh_token as string)).status).toBe(200);

    await control("rotation", { on: "true", user: mailbox.user });
    const rotated = await refresh(initial.refresh_token as string);
    expect(rotated.refresh_token).toBeString();
    expect(rotated.refresh_token).not.toBe(initial.refresh_token);
    expect((await refresh(initial.refresh_token as string)).error).toBe("invalid_grant");
    const next = await refresh(rotated.refresh_token as string);
    expect(next.refresh_token).toBeString();
    expect(await imapAuthenticate("XOAUTH2", mailbox.user, next.access_token as string)).toMatch(/^a OK/m);
  });

  test("fail: N answers of 5xx, then normal; close drops connections until cleared; counters count all", async () => {
    const mailbox = await createMailbox();
    const initial = await authorizationCodeFlow({ user: mailbox.user });
    const token = initial.refresh_token as string;
    await control("fail", { mode: "status", status: "502", count: "2", user: mailbox.user });
    expect((await refresh(token)).status).toBe(502);
    expect((await refresh(token)).status).toBe(502);
    expect((await refresh(token)).status).toBe(200);

    await control("fail", { mode: "close", user: mailbox.user });
    for (let i = 0; i < 2; i++) await expect(refresh(token)).rejects.toThrow();
    await Bun.sleep(100);
    // Other users are not affected.
    expect((await clientCredentials()).status).toBe(200);
    await control("fail", { mode: "off", user: mailbox.user });
    expect((await refresh(token)).status).toBe(200);

    const counters = (await control("counters", {}, "GET")).body as {
      tokenByUser: Record<string, Record<string, number>>;
      introspectByUser: Record<string, number>;
    };
    expect(counters.tokenByUser[mailbox.user]).toEqual({ authorization_code: 1, refresh_token: 6 });
    const tokens = (await control("tokens", { user: mailbox.user }, "GET")).body["tokens"] as { value: string }[];
    // One refresh token, and an access token per successful grant (code + 2 refreshes).
    expect(tokens.length).toBe(4);
    expect(tokens.map((entry) => entry.value)).toContain(initial.access_token as string);
  });

  test("introspection needs the resource server's credentials", async () => {
    const server = oauthServer();
    const { access_token } = await clientCredentials();
    const body = new URLSearchParams({ token: access_token as string });
    expect((await fetch(server.introspectUrl, { method: "POST", body })).status).toBe(401);
    const wrong = await fetch(server.introspectUrl, {
      method: "POST",
      body,
      headers: { authorization: `Basic ${btoa(`${server.clientId}:${server.clientSecret}`)}` },
    });
    expect(wrong.status).toBe(401);
  });

  test("a restarted server keeps the tokens it issued (state file)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "oauth-state-"));
    try {
      const config: OAuthServerConfig = {
        port: await freePort(),
        client: { id: "c", secret: "s" },
        introspectionClient: { id: "rs", secret: "rs-secret" },
        defaultUser: "someone@mailgator.test",
        stateFile: join(dir, "state.json"),
      };
      const first = await serve(config);
      const issued = await fetch(`http://127.0.0.1:${config.port}/token`, {
        method: "POST",
        headers: { authorization: `Basic ${btoa("c:s")}` },
        body: new URLSearchParams({ grant_type: "client_credentials" }),
      });
      const { access_token } = (await issued.json()) as { access_token: string };
      await first.close();
      expect(readFileSync(join(dir, "state.json"), "utf8")).toContain(access_token);
      const second = await serve(config);
      try {
        const introspected = await fetch(`http://127.0.0.1:${config.port}/introspect`, {
          method: "POST",
          headers: { authorization: `Basic ${btoa("rs:rs-secret")}` },
          body: new URLSearchParams({ token: access_token }),
        });
        expect(await introspected.json()).toMatchObject({ active: true, username: "someone@mailgator.test" });
      } finally {
        await second.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

test("stop.ts ends the OAuth2 server it finds in upstreams.json", async () => {
  const dir = mkdtempSync(join(tmpdir(), "oauth-stop-"));
  try {
    const paths = layout(dir);
    mkdirSync(paths.oauthDir, { recursive: true });
    const port = await freePort();
    const config: OAuthServerConfig = {
      port,
      client: { id: "c", secret: "s" },
      introspectionClient: { id: "rs", secret: "rs" },
      defaultUser: "someone@mailgator.test",
      pidFile: paths.oauthPid,
    };
    writeFileSync(paths.oauthConfig, JSON.stringify(config));
    const server = track("oauth-server", await startOAuthServer(paths, paths.oauthConfig));
    expect(await isListening(port)).toBe(true);
    // The description as start.ts records it; the other servers are not part of this test.
    const description = { version: 1, ports: { imap: await freePort(), oauth: port }, processes: [server] };
    writeFileSync(paths.descriptionFile, JSON.stringify(description));
    const stop = Bun.spawnSync([process.execPath, "scripts/upstreams/stop.ts", "--dir", dir], {
      cwd: join(import.meta.dir, "..", ".."),
    });
    expect(stop.stderr.toString()).toContain(`oauth-server (pid ${server.pid})`);
    expect(stop.exitCode).toBe(0);
    expect(isAlive(server)).toBe(false);
    expect(await isListening(port)).toBe(false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
