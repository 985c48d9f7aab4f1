// OAuth2 upstream login against what a real server cannot show here: Gmail's XOAUTH2 failure challenge, replayed
// from tests/fixtures/oauth/gmail-xoauth2-failure.txt by an in-process server (docs/imap.md, docs/smtp.md "OAuth2
// accounts"). The proxy must answer the challenge (an empty line) rather than hang, report the refused token once,
// retry once with a fresh one, and give the agent a temporary failure without any of the exchange or a token.
import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { type AddressInfo, createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AccountCredentials } from "../../src/accounts/index.ts";
import { AuditLog } from "../../src/audit/index.ts";
import { type Config, parseConfig } from "../../src/config/index.ts";
import { startImapProxy } from "../../src/imap/index.ts";
import { UpstreamSession } from "../../src/imap/upstream.ts";
import { chooseOAuthMechanism, oauthFailureAnswer, oauthInitialResponse } from "../../src/net/sasl.ts";
import { compilePolicy } from "../../src/policy/index.ts";
import { startSmtpProxy } from "../../src/smtp/index.ts";
import { hashToken } from "../../src/vault/token.ts";
import { LineClient } from "../fixtures/oauth.ts";
import { type TranscriptLine, transcriptSection } from "../fixtures/oauth-transcripts.ts";

const GMAIL = "gmail-xoauth2-failure.txt";
const USER = "someone@gmail.com";

/**
 * Plays a transcript section's server lines to every connection, in step with the client's lines; with `loopAt`,
 * the transcript starts again at that line once played out (the same exchange for a retry on the connection).
 */
class TranscriptServer {
  /** The lines each connection received, in order. */
  readonly received: string[][] = [];
  readonly #server: Server;
  private constructor(server: Server) {
    this.#server = server;
  }

  static async start(lines: readonly TranscriptLine[], loopAt?: RegExp): Promise<TranscriptServer> {
    const loop = loopAt === undefined ? -1 : lines.findIndex((l) => l.from === "C" && loopAt.test(l.text));
    const server = createServer();
    const t = new TranscriptServer(server);
    server.on("connection", (socket) => {
      const got: string[] = [];
      t.received.push(got);
      const tags = new Map<string, string>();
      let index = 0;
      let buffer = "";
      const play = () => {
        while (index < lines.length && lines[index]!.from === "S") {
          const text = lines[index++]!.text;
          const [first = "", ...rest] = text.split(" ");
          const tag = tags.get(first);
          socket.write(`${tag === undefined ? text : [tag, ...rest].join(" ")}\r\n`);
        }
      };
      socket.setEncoding("latin1");
      socket.on("data", (chunk: string) => {
        buffer += chunk;
        for (let end = buffer.indexOf("\r\n"); end >= 0; end = buffer.indexOf("\r\n")) {
          const line = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          got.push(line);
          const expected = lines[index];
          if (expected?.from !== "C") continue; // past the transcript: recorded only
          const expectedTag = expected.text.split(" ")[0] ?? "";
          if (expectedTag !== "") tags.set(expectedTag, line.split(" ")[0] ?? "");
          index++;
          play();
          if (index === lines.length && loop >= 0) index = loop;
        }
      });
      socket.on("error", () => {});
      play();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return t;
  }

  get port(): number {
    return (this.#server.address() as AddressInfo).port;
  }

  close(): void {
    this.#server.close();
  }
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c(); // last opened, first closed
});

const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString("base64");

describe("SASL strings (src/net/sasl.ts)", () => {
  test("XOAUTH2 and OAUTHBEARER initial responses; the authzid escaped (RFC 5801); failure answers", () => {
    expect(new TextDecoder().decode(oauthInitialResponse("XOAUTH2", USER, "ya29.abc"))).toBe(
      `user=${USER}\x01auth=Bearer ya29.abc\x01\x01`,
    );
    expect(new TextDecoder().decode(oauthInitialResponse("OAUTHBEARER", "a,b=c@x", "t-1_2~3+/="))).toBe(
      "n,a=a=2Cb=3Dc@x,\x01auth=Bearer t-1_2~3+/=\x01\x01",
    );
    expect(oauthFailureAnswer("XOAUTH2")).toEqual(new Uint8Array(0));
    expect(oauthFailureAnswer("OAUTHBEARER")).toEqual(new Uint8Array([1]));
  });

  test("a token or user that could break out of the SASL string is refused", () => {
    for (const token of ["a b", "a\x01b", "a\r\nb", "", "tok=en"])
      expect(() => oauthInitialResponse("XOAUTH2", USER, token)).toThrow();
    expect(() => oauthInitialResponse("OAUTHBEARER", "me\x01auth=Bearer x", "tok")).toThrow();
  });

  test("auto prefers OAUTHBEARER, takes XOAUTH2 when alone; a forced one must be offered", () => {
    const offers =
      (...names: string[]) =>
      (m: string) =>
        names.includes(m);
    expect(chooseOAuthMechanism(offers("XOAUTH2", "OAUTHBEARER"), "auto")).toBe("OAUTHBEARER");
    expect(chooseOAuthMechanism(offers("XOAUTH2"), "auto")).toBe("XOAUTH2");
    expect(chooseOAuthMechanism(offers("PLAIN"), "auto")).toBeNull();
    expect(chooseOAuthMechanism(offers("XOAUTH2", "OAUTHBEARER"), "xoauth2")).toBe("XOAUTH2");
    expect(chooseOAuthMechanism(offers("XOAUTH2"), "oauthbearer")).toBeNull();
  });
});

describe("scripted upstreams: Gmail's failure challenge (recorded transcript), no SASL-IR", () => {
  test("IMAP upstream: the challenge is answered with an empty line, then NO is a refused login", async () => {
    const server = await TranscriptServer.start(transcriptSection(GMAIL, "imap"));
    cleanups.push(() => server.close());
    const target = {
      host: "127.0.0.1",
      port: server.port,
      tls: "none" as const,
      skipVerify: false,
      extraCa: null,
      connectTimeoutMs: 2000,
    };
    const up = await UpstreamSession.open(target, { connectMs: 2000, handshakeMs: 2000, commandMs: 2000 });
    cleanups.push(() => up.close());
    expect(await up.loginOAuth(USER, "ya29.expired-token-example", "xoauth2")).toBe(false);
    const initial = b64(oauthInitialResponse("XOAUTH2", USER, "ya29.expired-token-example"));
    expect(server.received[0]).toEqual(["M1 CAPABILITY", `M2 AUTHENTICATE XOAUTH2 ${initial}`, ""]);
    expect(up.closed).toBe(false);
  });

  test("IMAP upstream without SASL-IR: AUTHENTICATE alone, the response after the first +", async () => {
    const response = b64(oauthInitialResponse("OAUTHBEARER", USER, "tok"));
    const lines: TranscriptLine[] = [
      { from: "S", text: "* OK [CAPABILITY IMAP4rev1 AUTH=OAUTHBEARER AUTH=XOAUTH2] ready" },
      { from: "C", text: "a1 AUTHENTICATE OAUTHBEARER" },
      { from: "S", text: "+ " },
      { from: "C", text: response },
      { from: "S", text: "a1 OK [CAPABILITY IMAP4rev1 UIDPLUS UNSELECT] Logged in" },
    ];
    const server = await TranscriptServer.start(lines);
    cleanups.push(() => server.close());
    const target = { host: "127.0.0.1", port: server.port, tls: "none" as const, skipVerify: false, extraCa: null };
    const up = await UpstreamSession.open(
      { ...target, connectTimeoutMs: 2000 },
      { connectMs: 2000, handshakeMs: 2000, commandMs: 2000 },
    );
    cleanups.push(() => up.close());
    expect(await up.loginOAuth(USER, "tok", "auto")).toBe(true);
    expect(server.received[0]).toEqual(["M1 AUTHENTICATE OAUTHBEARER", response]);
  });

  test("IMAP proxy: refused twice → reportRejected once, one retry, NO [UNAVAILABLE] try again later", async () => {
    const server = await TranscriptServer.start(transcriptSection(GMAIL, "imap"), /AUTHENTICATE/);
    cleanups.push(() => server.close());
    const { config, audit, credentials, calls } = setup({ imap: server.port });
    const proxy = await startImapProxy({ config, policy: compilePolicy(config.rules), audit, credentials });
    cleanups.push(() => proxy.close());
    const client = await LineClient.open(proxy.address.port);
    cleanups.push(() => client.close());
    await client.until(/^\* OK/);
    client.send("a LOGIN bot agent-token");
    const reply = await client.until(/^a /);
    expect(reply).toBe("a NO [UNAVAILABLE] Upstream login temporarily unavailable; try again later\r\n");
    expect(calls).toEqual(["credentialFor", "reportRejected token-1", "credentialFor"]);
    // One connection: the same session retried with the fresh token after the NO.
    expect(server.received.length).toBe(1);
    const [, first, afterFirst, second, afterSecond] = server.received[0]!;
    expect(first).toBe(`M2 AUTHENTICATE XOAUTH2 ${b64(oauthInitialResponse("XOAUTH2", USER, "token-1"))}`);
    expect([afterFirst, afterSecond]).toEqual(["", ""]);
    expect(second).toBe(`M3 AUTHENTICATE XOAUTH2 ${b64(oauthInitialResponse("XOAUTH2", USER, "token-2"))}`);
    for (const token of ["token-1", "token-2"]) expect(reply).not.toContain(token);
    await audit.flush();
    const rows = audit.query({ order: "asc" });
    expect(rows.map((r) => [r.command, r.decision])).toEqual([["LOGIN", "error"]]);
    expect(JSON.stringify(rows)).not.toMatch(/token-[12]/);
  });

  /** A scripted IMAP upstream that answers AUTHENTICATE NO [UNAVAILABLE], after a failure challenge or at once. */
  async function unavailableUpstream(challenge: boolean): Promise<{ port: number; received: string[] }> {
    const received: string[] = [];
    const server = createServer((socket) => {
      socket.setEncoding("latin1");
      socket.write("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2 UIDPLUS UNSELECT] scripted\r\n");
      let buffer = "";
      let authenticating: string | null = null;
      socket.on("data", (chunk: string) => {
        buffer += chunk;
        for (let end = buffer.indexOf("\r\n"); end >= 0; end = buffer.indexOf("\r\n")) {
          const line = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          received.push(line);
          const tag = line.split(" ")[0];
          const no = (t: string) => socket.write(`${t} NO [UNAVAILABLE] Temporary authentication failure\r\n`);
          if (authenticating !== null) {
            no(authenticating); // the client's answer to the failure challenge
            authenticating = null;
          } else if (/ AUTHENTICATE /i.test(line) && challenge) {
            authenticating = tag!;
            socket.write(`+ ${Buffer.from('{"status":"401","schemes":"bearer"}').toString("base64")}\r\n`);
          } else if (/ AUTHENTICATE /i.test(line)) no(tag!);
          else socket.write(`${tag} OK done\r\n`);
        }
      });
      socket.on("error", () => {});
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    cleanups.push(() => {
      server.close();
    });
    return { port: (server.address() as AddressInfo).port, received };
  }

  /** The agent's LOGIN through the proxy to `port`; the reply and the credential calls. */
  async function agentLogin(port: number): Promise<{ reply: string; calls: string[] }> {
    const { config, audit, credentials, calls } = setup({ imap: port });
    const proxy = await startImapProxy({ config, policy: compilePolicy(config.rules), audit, credentials });
    cleanups.push(() => proxy.close());
    const client = await LineClient.open(proxy.address.port);
    cleanups.push(() => client.close());
    await client.until(/^\* OK/);
    client.send("a LOGIN bot agent-token");
    return { reply: await client.until(/^a /), calls };
  }

  test("IMAP proxy: NO [UNAVAILABLE] to AUTHENTICATE is temporary: the token is kept, none fetched", async () => {
    // Dovecot answers so when its authentication service (the oauth2 token check) cannot be reached (RFC 5530 §3).
    const upstream = await unavailableUpstream(false);
    const { reply, calls } = await agentLogin(upstream.port);
    expect(reply).toBe("a NO [UNAVAILABLE] Upstream server unavailable\r\n");
    // The token is not reported refused, and no other is asked for: one AUTHENTICATE, with token-1.
    expect(calls).toEqual(["credentialFor"]);
    expect(upstream.received.filter((l) => / AUTHENTICATE /.test(l))).toHaveLength(1);
  });

  test("IMAP proxy: NO [UNAVAILABLE] after a failure challenge is a refused token: reported, one retry", async () => {
    const upstream = await unavailableUpstream(true);
    const { reply, calls } = await agentLogin(upstream.port);
    expect(reply).toBe("a NO [UNAVAILABLE] Upstream login temporarily unavailable; try again later\r\n");
    expect(calls).toEqual(["credentialFor", "reportRejected token-1", "credentialFor"]);
    expect(upstream.received.filter((l) => / AUTHENTICATE /.test(l))).toHaveLength(2);
  });

  test("SMTP proxy: 334 answered with an empty line, 535, a new connection with a fresh token, 454", async () => {
    const server = await TranscriptServer.start(transcriptSection(GMAIL, "smtp"));
    cleanups.push(() => server.close());
    const { config, audit, credentials, calls } = setup({ smtp: server.port });
    const proxy = await startSmtpProxy({ config, policy: compilePolicy(config.rules), audit, credentials });
    cleanups.push(() => proxy.close());
    const client = await LineClient.open(proxy.address.port);
    cleanups.push(() => client.close());
    await client.until(/^220 /);
    client.send("EHLO agent.test");
    await client.until(/^250 /);
    client.send(`AUTH PLAIN ${Buffer.from("\0bot\0agent-token").toString("base64")}`);
    const reply = await client.until(/^\d{3} /);
    expect(reply).toBe("454 4.7.0 Upstream login temporarily unavailable; try again later\r\n");
    expect(calls).toEqual(["credentialFor", "reportRejected token-1", "credentialFor"]);
    expect(server.received.length).toBe(2);
    server.received.forEach((lines, i) => {
      const initial = b64(oauthInitialResponse("XOAUTH2", USER, `token-${i + 1}`));
      expect(lines.slice(1, 3)).toEqual([`AUTH XOAUTH2 ${initial}`, ""]);
    });
    await audit.flush();
    const rows = audit.query({ order: "asc" });
    expect(rows.map((r) => [r.command, r.decision])).toEqual([["AUTH", "error"]]);
    expect(JSON.stringify(rows)).not.toMatch(/token-[12]/);
  });
});

/** A vault config with agent "bot" on an OAuth2 account forced to XOAUTH2, and a fake credential source. */
function setup(ports: { imap?: number; smtp?: number }): {
  config: Config;
  audit: AuditLog;
  credentials: AccountCredentials;
  calls: string[];
} {
  const dir = mkdtempSync(join(tmpdir(), "mailgator-oauth-login-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const section = (name: string, port: number | undefined) =>
    port === undefined
      ? ""
      : `[${name}]\nlisten_addr = "127.0.0.1:1"\nupstream_addr = "127.0.0.1:${port}"\nupstream_tls = "none"\n`;
  const toml = `${section("imap", ports.imap)}
${section("smtp", ports.smtp)}
[audit]
path = "${join(dir, "audit.db")}"

[[rules]]
name = "everything"
action = "allow"

[[agents]]
name = "bot"
token_hash = "${hashToken("agent-token")}"
account = "gmail"

[accounts.gmail]
username = "${USER}"
auth = "oauth2"
provider = "custom"
client_id = "client"
client_secret = "secret"
authorize_url = "https://auth.example.test/authorize"
token_url = "https://auth.example.test/token"
scopes = ["https://mail.google.com/"]
sasl_mechanism = "xoauth2"
`;
  const parsed = parseConfig(toml, join(dir, "mailgator.toml"));
  const any = { host: "127.0.0.1", port: 0 };
  const config: Config = {
    ...parsed,
    imap: parsed.imap && { ...parsed.imap, listenAddr: any },
    smtp: parsed.smtp && { ...parsed.smtp, listenAddr: any },
  };
  const audit = AuditLog.open(config.audit.path, { batchMs: 5, sync: "normal" });
  cleanups.push(() => audit.close());
  const calls: string[] = [];
  let issued = 0;
  // In-process fake of the token manager: a new token per credentialFor after a report.
  const fake = {
    async credentialFor(account: string) {
      expect(account).toBe("gmail");
      calls.push("credentialFor");
      return { kind: "oauth2", username: USER, accessToken: `token-${Math.max(1, issued)}` };
    },
    reportRejected(account: string, token: string) {
      expect(account).toBe("gmail");
      calls.push(`reportRejected ${token}`);
      issued = Number(token.split("-")[1]) + 1;
    },
  };
  return { config, audit, credentials: fake as unknown as AccountCredentials, calls };
}
