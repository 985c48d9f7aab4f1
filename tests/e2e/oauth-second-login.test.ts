// An OAuth2 account whose grant is revoked while an agent's session is open, end to end against the real Dovecot,
// Postfix and local OAuth2 server: the session's next upstream login (IMAP's second connection for a filtered
// folder, SMTP's new connection at DATA once the kept one was lost) fails, and the agent is told so in the words of
// docs/imap.md and docs/smtp.md "OAuth2 accounts", never with the token endpoint's own answer (its error code and
// description are the owner's, in the audit log and `mailgator account status`).
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, connect as netConnect, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AccountCredentials } from "../../src/accounts/index.ts";
import { AuditLog } from "../../src/audit/index.ts";
import { type Config, parseConfig } from "../../src/config/index.ts";
import { type ImapProxy, startImapProxy } from "../../src/imap/index.ts";
import { compilePolicy } from "../../src/policy/index.ts";
import { type SmtpProxy, startSmtpProxy } from "../../src/smtp/index.ts";
import { SealedStore } from "../../src/state/store.ts";
import { createMailbox, imapListener, uniqueToken, upstreams } from "../fixtures/index.ts";
import { authorizationCodeFlow, control, LineClient, oauthAccountToml, storeIssuedTokens } from "../fixtures/oauth.ts";
import { agentToml, serveConfig, smtpTo } from "./config.ts";

setDefaultTimeout(60_000);

const AGENT_TOKEN = `mg_${uniqueToken("second-login")}`;
/** What the local server says when it refuses a revoked refresh token: the token endpoint's words, not the agent's. */
const PROVIDER_WORDS = /invalid_grant|revoked refresh token|HTTP 400/;

const cleanups: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** A TCP relay in front of Postfix whose connections can be cut: the SMTP proxy's kept upstream connection. */
class Relay {
  readonly #sockets = new Set<Socket>();
  readonly #server: Server;
  private constructor(server: Server) {
    this.#server = server;
  }
  static async to(port: number): Promise<Relay> {
    const server = createServer();
    const relay = new Relay(server);
    server.on("connection", (client) => {
      const upstream = netConnect({ host: "127.0.0.1", port });
      for (const s of [client, upstream]) {
        relay.#sockets.add(s);
        s.on("close", () => relay.#sockets.delete(s));
        s.on("error", () => {});
      }
      client.pipe(upstream);
      upstream.pipe(client);
      client.on("close", () => upstream.destroy());
      upstream.on("close", () => client.destroy());
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return relay;
  }
  get port(): number {
    return (this.#server.address() as { port: number }).port;
  }
  cut(): void {
    for (const s of this.#sockets) s.destroy();
  }
  close(): void {
    this.cut();
    this.#server.close();
  }
}

async function setup() {
  const up = upstreams();
  const mailbox = await createMailbox({ name: "oauth-second-login" });
  const tokens = await authorizationCodeFlow({ user: mailbox.user });
  expect(tokens.status).toBe(200);
  const relay = await Relay.to(up.ports.smtp);
  cleanups.push(() => relay.close());
  const dir = mkdtempSync(join(tmpdir(), "mailgator-oauth-second-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const listeners = `${imapListener()}\n${smtpTo(`127.0.0.1:${relay.port}`)}`;
  const toml = serveConfig(
    { listeners, dir },
    `
[[rules]]
name = "notifications in the inbox"
folders = ["INBOX"]
from = "notifications@*"
operations = ["read"]
action = "allow"

[[rules]]
name = "send"
operations = ["send"]
action = "allow"

[[rules]]
name = "nothing else"
action = "deny"

${agentToml("bot", AGENT_TOKEN, "mail")}
${oauthAccountToml("mail", mailbox.user)}`,
  );
  const parsed = parseConfig(toml, join(dir, "mailgator.toml"));
  const any = { host: "127.0.0.1", port: 0 };
  const config: Config = {
    ...parsed,
    imap: { ...parsed.imap!, listenAddr: any },
    smtp: { ...parsed.smtp!, listenAddr: any },
  };
  const store = SealedStore.open(config.state.path, { secretsFile: config.state.secretsFile, env: {}, create: true })!;
  storeIssuedTokens(store, "mail", tokens);
  const audit = AuditLog.open(config.audit.path, { batchMs: 5, sync: "normal" });
  const quiet = { error: () => {}, warn: () => {}, info: () => {} };
  const credentials = new AccountCredentials({ config, store, audit: (e) => audit.record(e), log: quiet });
  const policy = compilePolicy(config.rules);
  const imap: ImapProxy = await startImapProxy({
    config,
    policy,
    audit,
    credentials,
    loginThrottle: { stepMs: 0, maxMs: 0 },
  });
  const smtp: SmtpProxy = await startSmtpProxy({ config, policy, audit, credentials });
  cleanups.push(async () => {
    await imap.close();
    await smtp.close();
    await audit.close();
    store.close();
  });
  return { mailbox, relay, imap, smtp, audit };
}

test("a revoked grant at a session's second upstream login: the agent gets the documented words only", async () => {
  const s = await setup();
  const user = s.mailbox.user;

  // IMAP: logged in while the grant works; STATUS of a filtered folder needs a second upstream connection.
  const imap = await LineClient.open(s.imap.address.port);
  cleanups.push(() => imap.close());
  await imap.until(/^\* OK/);
  imap.send(`a LOGIN bot ${AGENT_TOKEN}`);
  expect(await imap.until(/^a /)).toMatch(/^a OK/m);

  // SMTP: AUTH logs in upstream at once and keeps that connection for sending.
  const smtp = await LineClient.open(s.smtp.address.port);
  cleanups.push(() => smtp.close());
  await smtp.until(/^220 /);
  smtp.send("EHLO agent.test");
  await smtp.until(/^250 /);
  smtp.send(`AUTH PLAIN ${Buffer.from(`\0bot\0${AGENT_TOKEN}`).toString("base64")}`);
  expect(await smtp.until(/^\d{3} /)).toMatch(/^235 /);

  // The owner's grant is revoked (refresh and access tokens), and the SMTP session's upstream connection is lost.
  expect((await control("revoke", { user })).status).toBe(200);
  s.relay.cut();

  imap.send("b STATUS INBOX (MESSAGES)");
  const status = await imap.until(/^(b |\* BYE)/);
  expect(status).not.toMatch(PROVIDER_WORDS);
  expect(status).toMatch(/Account mail needs re-authorization by its owner \(mailgator account login mail\)/);

  smtp.send(`MAIL FROM:<${s.mailbox.address}>`);
  expect(await smtp.until(/^\d{3} /)).toMatch(/^250 /);
  smtp.send(`RCPT TO:<${s.mailbox.address}>`);
  expect(await smtp.until(/^\d{3} /)).toMatch(/^250 /);
  smtp.send("DATA");
  expect(await smtp.until(/^\d{3} /)).toMatch(/^354 /);
  smtp.send(`From: ${s.mailbox.address}\r\nTo: ${s.mailbox.address}\r\nSubject: after revocation\r\n\r\nhello\r\n.`);
  const data = await smtp.until(/^\d{3} /);
  expect(data).not.toMatch(PROVIDER_WORDS);
  expect(data).toMatch(
    /^451 4\.7\.0 .*Account mail needs re-authorization by its owner \(mailgator account login mail\)/,
  );

  // The owner still finds the provider's answer in the audit log.
  await s.audit.flush();
  const rows = s.audit.query({ order: "asc" }).filter((r) => r.decision === "error");
  expect(rows.some((r) => r.protocol === "oauth2" && PROVIDER_WORDS.test(r.reason))).toBe(true);
});
