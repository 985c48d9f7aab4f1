// Vault mode with an `auth = "oauth2"` account, end to end: agents with a Mailgator token read through the IMAP
// proxy (imapflow) and send through the SMTP proxy (nodemailer) while the proxies log in to the real Dovecot and
// Postfix with tokens from the local OAuth2 server, by XOAUTH2 and by OAUTHBEARER (docs/imap.md, docs/smtp.md
// "OAuth2 accounts"). Every byte the agent receives is captured and searched for every token the server issued.
// Revocation and a failing token endpoint give the agent NO [UNAVAILABLE] / 454 4.7.0, and sessions resume.
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, connect as netConnect, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ImapFlow } from "imapflow";
import nodemailer from "nodemailer";
import { AccountCredentials } from "../../src/accounts/index.ts";
import { AuditLog, type AuditRow } from "../../src/audit/index.ts";
import { type Config, parseConfig } from "../../src/config/index.ts";
import { type ImapProxy, startImapProxy } from "../../src/imap/index.ts";
import { compilePolicy } from "../../src/policy/index.ts";
import { type SmtpProxy, startSmtpProxy } from "../../src/smtp/index.ts";
import { SealedStore } from "../../src/state/store.ts";
import { hashToken } from "../../src/vault/token.ts";
import {
  createMailbox,
  imapListener,
  smtpListener,
  type TestMailbox,
  uniqueToken,
  upstreams,
  waitForDelivery,
} from "../fixtures/index.ts";
import {
  authorizationCodeFlow,
  control,
  LineClient,
  oauthbearer,
  oauthServeToml,
  storeIssuedTokens,
  xoauth2,
} from "../fixtures/oauth.ts";

setDefaultTimeout(60_000);

const AGENT_TOKEN = `mg_${uniqueToken("agent")}`;
const PASSWORD_AGENT_TOKEN = `mg_${uniqueToken("pwagent")}`;
type Setting = "auto" | "xoauth2" | "oauthbearer";

/** Everything the agent receives, per connection, through a relay in front of a proxy port. */
class Capture {
  readonly received: Buffer[] = [];
  readonly #server: Server;
  private constructor(server: Server) {
    this.#server = server;
  }
  static async in_front_of(port: number): Promise<Capture> {
    const server = createServer();
    const capture = new Capture(server);
    server.on("connection", (client) => {
      const upstream = netConnect({ host: "127.0.0.1", port });
      upstream.on("data", (chunk: Buffer) => {
        capture.received.push(Buffer.from(chunk));
        client.write(chunk);
      });
      client.on("data", (chunk) => upstream.write(chunk));
      client.on("close", () => upstream.destroy());
      upstream.on("close", () => client.destroy());
      client.on("error", () => upstream.destroy());
      upstream.on("error", () => client.destroy());
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return capture;
  }
  get port(): number {
    return (this.#server.address() as { port: number }).port;
  }
  text(): string {
    return Buffer.concat(this.received).toString("latin1");
  }
  close(): void {
    this.#server.close();
  }
}

interface Setup {
  readonly mailbox: TestMailbox;
  readonly password: TestMailbox;
  readonly imap: ImapProxy;
  readonly smtp: SmtpProxy;
  readonly audit: AuditLog;
  readonly store: SealedStore;
  rows(): Promise<AuditRow[]>;
  close(): Promise<void>;
}

const setups: Setup[] = [];
afterAll(async () => {
  for (const s of setups) await s.close();
});

/**
 * Both proxies in vault mode: agent "bot" on an OAuth2 account (custom provider: the local server) whose tokens
 * were obtained by the authorization-code flow and stored as `account login` stores them; agent "pw" on a password
 * account, for comparison.
 */
async function setup(setting: Setting): Promise<Setup> {
  const mailbox = await createMailbox({ name: `oauth-${setting}` });
  const password = await createMailbox({ name: "oauth-password" });
  const tokens = await authorizationCodeFlow({ user: mailbox.user });
  expect(tokens.status).toBe(200);
  const dir = mkdtempSync(join(tmpdir(), "mailgator-oauth-"));
  const toml = oauthServeToml(dir, AGENT_TOKEN, mailbox.user, {
    listeners: `${imapListener("127.0.0.1:0")}\n${smtpListener("127.0.0.1:0")}`,
    extra: `sasl_mechanism = "${setting}"\n`,
    more: `
[[agents]]
name = "pw"
token_hash = "${hashToken(PASSWORD_AGENT_TOKEN)}"
account = "pw"

[accounts.pw]
username = "${password.user}"
password = "${password.password}"
`,
  });
  const parsed = parseConfig(toml, join(dir, "mailgator.toml"));
  const any = { host: "127.0.0.1", port: 0 };
  const config: Config = {
    ...parsed,
    imap: { ...parsed.imap!, listenAddr: any },
    smtp: { ...parsed.smtp!, listenAddr: any },
  };
  const store = SealedStore.open(config.state.path, {
    secretsFile: config.state.secretsFile,
    env: {},
    create: true,
  })!;
  storeIssuedTokens(store, "mail", tokens);
  const audit = AuditLog.open(config.audit.path, { batchMs: 5, sync: "normal" });
  const quiet = { error: () => {}, warn: () => {}, info: () => {} };
  const credentials = new AccountCredentials({ config, store, audit: (e) => audit.record(e), log: quiet });
  const policy = compilePolicy(config.rules);
  const imap = await startImapProxy({ config, policy, audit, credentials, loginThrottle: { stepMs: 0, maxMs: 0 } });
  const smtp = await startSmtpProxy({ config, policy, audit, credentials });
  const s: Setup = {
    mailbox,
    password,
    imap,
    smtp,
    audit,
    store,
    async rows() {
      await audit.flush();
      return audit.query({ order: "asc" });
    },
    async close() {
      await imap.close();
      await smtp.close();
      await audit.close();
      store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  setups.push(s);
  return s;
}

/** Every token the local server issued for `user`, and the SASL strings that carry them. */
async function issuedSecrets(user: string): Promise<string[]> {
  const { body } = await control("tokens", { user }, "GET");
  const tokens = (body["tokens"] as { value: string }[]).map((t) => t.value);
  expect(tokens.length).toBeGreaterThan(0);
  return tokens.flatMap((t) => [t, xoauth2(user, t), oauthbearer(user, t)]);
}

function expectNoSecret(received: string, secrets: readonly string[]): void {
  expect(received.length).toBeGreaterThan(0);
  for (const secret of secrets) expect(received.includes(secret)).toBe(false);
}

function imapClient(port: number, user: string, pass: string): ImapFlow {
  return new ImapFlow({ host: "127.0.0.1", port, secure: false, auth: { user, pass }, logger: false });
}

function mailer(port: number, user: string, pass: string) {
  return nodemailer.createTransport({ host: "127.0.0.1", port, secure: false, ignoreTLS: true, auth: { user, pass } });
}

/** The login lines the real servers wrote for `user`: Dovecot's `method=` and Postfix's `sasl_method=`. */
function serverLogins(user: string): { dovecot: string[]; postfix: string[] } {
  const logs = upstreams().logs;
  const lines = (file: string | undefined) => (file ? readFileSync(file, "utf8").split("\n") : []);
  return {
    dovecot: lines(logs["dovecot"]).filter((l) => l.includes(`user=<${user}>`) && l.includes("Login:")),
    postfix: lines(logs["postfix"]).filter((l) => l.includes(`sasl_username=${user}`)),
  };
}

/** A raw IMAP LOGIN through the proxy: the agent's view of a failed upstream login. */
async function rawImapLogin(port: number, user: string, pass: string): Promise<string> {
  const raw = await LineClient.open(port);
  try {
    await raw.readUntil((b) => b.includes("\r\n"), 10_000, "greeting");
    raw.take();
    raw.write(`a LOGIN ${user} ${pass}\r\n`);
    const text = await raw.readUntil((b) => /(^|\r\n)a (OK|NO|BAD)[^\r\n]*\r\n/.test(b), 30_000, "tagged LOGIN");
    return text;
  } finally {
    raw.close();
  }
}

/** A raw SMTP AUTH PLAIN through the proxy; returns the reply line(s) to AUTH. */
async function rawSmtpAuth(port: number, user: string, pass: string): Promise<string> {
  const raw = await LineClient.open(port);
  const reply = async () => {
    const text = await raw.readUntil((b) => /(^|\r\n)\d{3} [^\r\n]*\r\n/.test(b), 30_000, "reply");
    raw.take();
    return text;
  };
  try {
    await reply();
    raw.write("EHLO agent.test\r\n");
    await reply();
    raw.write(`AUTH PLAIN ${Buffer.from(`\0${user}\0${pass}`).toString("base64")}\r\n`);
    return await reply();
  } finally {
    raw.close();
  }
}

for (const [setting, mechanism] of [
  ["xoauth2", "XOAUTH2"],
  ["oauthbearer", "OAUTHBEARER"],
] as const) {
  describe(`sasl_mechanism = "${setting}"`, () => {
    test(`imapflow reads, nodemailer sends; upstream logins by ${mechanism}; no token reaches the agent`, async () => {
      const s = await setup(setting);
      const recipient = await createMailbox({ name: "oauth-recipient" });
      const imapCapture = await Capture.in_front_of(s.imap.address.port);
      const smtpCapture = await Capture.in_front_of(s.smtp.address.port);
      try {
        const client = imapClient(imapCapture.port, "bot", AGENT_TOKEN);
        await client.connect();
        const status = await client.status("INBOX", { messages: true });
        expect(status && status.messages).toBe(0);
        const list = await client.list();
        expect(list.map((f) => f.path)).toContain("Sent");
        await client.logout();

        const marker = uniqueToken("oauth-send");
        const info = await mailer(smtpCapture.port, "bot", AGENT_TOKEN).sendMail({
          from: s.mailbox.address,
          to: recipient.address,
          subject: marker,
          text: `sent through an OAuth2 account (${mechanism})`,
        });
        expect(info.accepted).toEqual([recipient.address]);
        expect((await waitForDelivery(recipient, marker)).length).toBe(1);

        // The real servers say which mechanism the proxy used.
        const logins = serverLogins(s.mailbox.user);
        expect(logins.dovecot.some((l) => l.includes(`method=${mechanism}`))).toBe(true);
        expect(logins.dovecot.some((l) => /method=(PLAIN|LOGIN)\b/.test(l))).toBe(false);
        expect(logins.postfix.some((l) => l.includes(`sasl_method=${mechanism}`))).toBe(true);

        const secrets = await issuedSecrets(s.mailbox.user);
        expectNoSecret(imapCapture.text(), secrets);
        expectNoSecret(smtpCapture.text(), secrets);
        const rows = await s.rows();
        const agentLogins = rows.filter((r) => r.command === "AUTHENTICATE" || r.command === "LOGIN");
        expect(agentLogins.some((r) => r.decision === "allow" && r.agent === "bot")).toBe(true);
        for (const row of rows) expectNoSecretIn(JSON.stringify(row), secrets);
      } finally {
        imapCapture.close();
        smtpCapture.close();
      }
    });
  });
}

function expectNoSecretIn(text: string, secrets: readonly string[]): void {
  for (const secret of secrets) expect(text.includes(secret)).toBe(false);
}

describe("failures", () => {
  test("revoked grant: NO [UNAVAILABLE] and 454 4.7.0 saying so, an error row per attempt", async () => {
    const s = await setup("auto");
    // A working session first, so the proxy holds a cached access token the revocation invalidates.
    const client = imapClient(s.imap.address.port, "bot", AGENT_TOKEN);
    await client.connect();
    await client.logout();
    expect((await control("revoke", { user: s.mailbox.user })).status).toBe(200);

    const imap = await rawImapLogin(s.imap.address.port, "bot", AGENT_TOKEN);
    expect(imap).toMatch(
      /^a NO \[UNAVAILABLE\] Account mail needs re-authorization by its owner \(mailgator account login mail\)\r\n$/m,
    );
    const smtp = await rawSmtpAuth(s.smtp.address.port, "bot", AGENT_TOKEN);
    expect(smtp).toBe("454 4.7.0 Account mail needs re-authorization by its owner (mailgator account login mail)\r\n");
    // Still so at the next attempt, without a token request (the state is kept).
    expect(await rawImapLogin(s.imap.address.port, "bot", AGENT_TOKEN)).toMatch(/^a NO \[UNAVAILABLE\] Account mail/m);

    const rows = await s.rows();
    const failed = rows.filter((r) => r.agent === null && r.decision === "error" && /re-authorization/.test(r.reason));
    expect(failed.filter((r) => r.command === "LOGIN").length).toBe(2);
    expect(failed.filter((r) => r.command === "AUTH").length).toBe(1);
    const secrets = await issuedSecrets(s.mailbox.user);
    for (const row of rows) expectNoSecretIn(JSON.stringify(row), secrets);
    // A password account in the same proxies is not affected.
    const pw = imapClient(s.imap.address.port, "pw", PASSWORD_AGENT_TOKEN);
    await pw.connect();
    await pw.logout();
  });

  test("token endpoint 5xx: a temporary failure; the token is kept, sessions resume when it is back", async () => {
    const s = await setup("auto");
    const user = s.mailbox.user;
    // The cached access token stops working, and refreshing it fails with 503.
    expect((await control("expire", { user })).status).toBe(200);
    expect((await control("fail", { user, status: "503" })).status).toBe(200);
    try {
      const imap = await rawImapLogin(s.imap.address.port, "bot", AGENT_TOKEN);
      expect(imap).toMatch(/^a NO \[UNAVAILABLE\] Upstream login temporarily unavailable; try again later\r\n$/m);
      const smtp = await rawSmtpAuth(s.smtp.address.port, "bot", AGENT_TOKEN);
      expect(smtp).toBe("454 4.7.0 Upstream login temporarily unavailable; try again later\r\n");
    } finally {
      await control("fail", { user, mode: "off" });
    }
    // After the backoff, the stored refresh token still works: reading and sending resume.
    const deadline = Date.now() + 20_000;
    let reply = "";
    while (Date.now() < deadline) {
      reply = await rawImapLogin(s.imap.address.port, "bot", AGENT_TOKEN);
      if (/^a OK/m.test(reply)) break;
      await Bun.sleep(500);
    }
    expect(reply).toMatch(/^a OK/m);
    expect(await rawSmtpAuth(s.smtp.address.port, "bot", AGENT_TOKEN)).toMatch(/^235 /);
    const rows = await s.rows();
    expect(rows.filter((r) => r.decision === "error" && /temporarily|503|unavailable/i.test(r.reason)).length).toBe(
      rows.filter((r) => r.decision === "error").length,
    );
  });
});

describe("latency", () => {
  test("login to first command: cached access token vs password account, same run", async () => {
    const s = await setup("auto");
    const measure = async (user: string, pass: string): Promise<number> => {
      const raw = await LineClient.open(s.imap.address.port);
      try {
        await raw.readUntil((b) => b.includes("\r\n"), 10_000, "greeting");
        raw.take();
        const start = performance.now();
        raw.write(`a LOGIN ${user} ${pass}\r\nb NOOP\r\n`);
        const text = await raw.readUntil((b) => /(^|\r\n)b (OK|NO|BAD)[^\r\n]*\r\n/.test(b), 30_000, "NOOP");
        const elapsed = performance.now() - start;
        expect(text).toMatch(/^a OK/m);
        expect(text).toMatch(/^b OK/m);
        return elapsed;
      } finally {
        raw.close();
      }
    };
    await measure("bot", AGENT_TOKEN); // warm-up: the first OAuth2 login may load the stored record
    await measure("pw", PASSWORD_AGENT_TOKEN);
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const oauth: number[] = [];
    const password: number[] = [];
    for (let i = 0; i < 10; i++) {
      oauth.push(await measure("bot", AGENT_TOKEN));
      password.push(await measure("pw", PASSWORD_AGENT_TOKEN));
    }
    const counters = (await control("counters", {}, "GET")).body as { tokenByUser: Record<string, unknown> };
    // The cached token served every login: only the authorization-code exchange of setup() was a token request.
    expect(counters.tokenByUser[s.mailbox.user]).toEqual({ authorization_code: 1 });
    const figures = `oauth2 cached token ${median(oauth).toFixed(1)}, password ${median(password).toFixed(1)}`;
    console.log(`login-to-first-command (median of 10, ms): ${figures}`);
  });
});
