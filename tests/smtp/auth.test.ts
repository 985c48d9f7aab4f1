/**
 * Agent side: what is allowed before AUTH, vault logins (token, allowed_ips, failures slowed and audited),
 * pass-through logins checked by the upstream, and the STARTTLS and implicit-TLS listeners with real clients.
 */

import { afterEach, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { connect as tlsConnect } from "node:tls";
import { MAX_LOGIN_NAME_BYTES, MAX_LOGIN_PASSWORD_BYTES } from "../../src/net/index.ts";
import { generateToken, hashToken } from "../../src/vault/token.ts";
import { startFakeUpstream } from "./fake-upstream.ts";
import { marker, RawClient, startTestProxy, type TestProxy, upstreams, waitForSink } from "./helpers.ts";

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
});

async function vaultProxy(token: string, extra = "", smtp = "", limits = {}): Promise<TestProxy> {
  const fake = await startFakeUpstream({});
  cleanups.push(() => fake.close());
  const p = await startTestProxy({
    upstreamTls: "none",
    upstreamAddr: `127.0.0.1:${fake.port}`,
    smtp,
    limits,
    rules: `
[[rules]]
name = "bot to corp"
action = "allow"
agents = ["bot"]
to = "*@corp.test"

[[agents]]
name = "bot"
token_hash = "${hashToken(token)}"
account = "main"
${extra}

[[agents]]
name = "other"
token_hash = "${hashToken(`${token}-other`)}"
account = "main"

[accounts.main]
username = "upstream-user"
password = "upstream-password"
identities = ["bot@corp.test"]
`,
  });
  cleanups.push(() => p.close());
  return p;
}

const plain = (user: string, pass: string) => Buffer.from(`\0${user}\0${pass}`).toString("base64");

describe("before AUTH", () => {
  test("only EHLO, HELO, STARTTLS, AUTH, NOOP, RSET and QUIT are accepted", async () => {
    const p = await vaultProxy(generateToken());
    const c = await RawClient.connect(p.port);
    await c.reply();
    expect((await c.command("NOOP")).code).toBe(250);
    expect((await c.command(`AUTH PLAIN ${plain("bot", "x")}`)).raw).toStartWith("503 5.5.1");
    const ehlo = await c.command("EHLO client.test");
    expect(ehlo.lines).toContain("AUTH PLAIN LOGIN");
    expect((await c.command("RSET")).code).toBe(250);
    for (const cmd of ["MAIL FROM:<a@corp.test>", "RCPT TO:<a@corp.test>", "DATA"]) {
      expect((await c.command(cmd)).raw, cmd).toStartWith("530 5.7.0");
    }
    expect((await c.command("QUIT")).code).toBe(221);
  });
});

describe("vault mode", () => {
  test("a good token logs in (PLAIN with initial response, PLAIN with continuation, LOGIN)", async () => {
    const token = generateToken();
    const p = await vaultProxy(token);
    for (const steps of [
      [`AUTH PLAIN ${plain("bot", token)}`],
      ["AUTH PLAIN", plain("bot", token)],
      ["AUTH LOGIN", Buffer.from("bot").toString("base64"), Buffer.from(token).toString("base64")],
    ]) {
      const c = await RawClient.connect(p.port);
      await c.reply();
      await c.command("EHLO client.test");
      let r = await c.command(steps[0]!);
      for (const step of steps.slice(1)) {
        expect(r.code).toBe(334);
        r = await c.command(step);
      }
      expect(r.raw).toStartWith("235 2.7.0");
      expect((await c.command("MAIL FROM:<bot@corp.test>")).code).toBe(250);
      c.close();
    }
  });

  test("AUTH with a trailing space, an empty response or extra words: 501; another mechanism: 504", async () => {
    const token = generateToken();
    const p = await vaultProxy(token);
    const c = await RawClient.connect(p.port);
    await c.reply();
    await c.command("EHLO client.test");
    // RFC 4954 §4: AUTH mechanism [SP initial-response], an empty response written "=".
    for (const line of [`AUTH PLAIN ${plain("bot", token)} `, "AUTH PLAIN ", `AUTH LOGIN a b`]) {
      expect((await c.command(line)).raw, line).toStartWith("501 5.5.2 Syntax: AUTH mechanism [initial-response]");
    }
    expect((await c.command("AUTH CRAM-MD5")).raw).toStartWith("504 5.5.4");
    // Syntax errors are not failed logins: the session logs in.
    expect((await c.command(`AUTH PLAIN ${plain("bot", token)}`)).raw).toStartWith("235 2.7.0");
    c.close();
  });

  test("wrong token, unknown agent and a cancelled exchange are refused; failures are slowed and audited", async () => {
    const token = generateToken();
    const p = await vaultProxy(token, "", "", { authFailureStepMs: 200 });
    const c = await RawClient.connect(p.port);
    await c.reply();
    await c.command("EHLO client.test");
    expect((await c.command("AUTH PLAIN")).code).toBe(334);
    expect((await c.command("*")).raw).toStartWith("501");
    let t = Date.now();
    expect((await c.command(`AUTH PLAIN ${plain("bot", "wrong")}`)).raw).toStartWith("535 5.7.8");
    expect(Date.now() - t).toBeGreaterThanOrEqual(190);
    t = Date.now();
    expect((await c.command(`AUTH PLAIN ${plain("nobody", token)}`)).raw).toStartWith("535 5.7.8");
    expect(Date.now() - t).toBeGreaterThanOrEqual(390);
    // The third failure in a session closes it (MAX_AUTH_FAILURES_PER_SESSION).
    expect((await c.command(`AUTH PLAIN ${plain("bot", "wrong again")}`)).code).toBe(535);
    expect((await c.reply()).raw).toStartWith("421 4.7.0");
    await c.waitClosed();
    const rows = (await p.rows()).filter((r) => r.command === "AUTH");
    expect(rows.map((r) => [r.decision, r.target])).toEqual([
      ["deny", "bot"],
      ["deny", "nobody"],
      ["deny", "bot"],
    ]);
    expect(rows[0]!.reason).toContain("wrong token");
    expect(rows[1]!.reason).toContain("unknown agent");
    expect(JSON.stringify(rows)).not.toContain(token);
  });

  test("allowed_ips pins an agent to addresses", async () => {
    const token = generateToken();
    const p = await vaultProxy(token, 'allowed_ips = ["10.0.0.0/8"]', "", { authFailureStepMs: 1 });
    const c = await RawClient.connect(p.port);
    await c.reply();
    await c.command("EHLO client.test");
    expect((await c.command(`AUTH PLAIN ${plain("bot", token)}`)).code).toBe(535);
    const rows = (await p.rows()).filter((r) => r.command === "AUTH");
    expect(rows[0]!.reason).toContain("allowed_ips");
  });

  test("rules scoped to agents: another agent with a valid token is refused the same recipient", async () => {
    const token = generateToken();
    const p = await vaultProxy(token);
    const c = await RawClient.connect(p.port);
    await c.reply();
    await c.command("EHLO client.test");
    expect((await c.command(`AUTH PLAIN ${plain("other", `${token}-other`)}`)).code).toBe(235);
    // No rule can allow "other" anything, so even its sender is refused at once.
    expect((await c.command("MAIL FROM:<bot@corp.test>")).raw).toStartWith("553 5.7.1");
  });
});

describe("pass-through mode", () => {
  test("the upstream judges the credentials: a wrong password gets 535 and an audit row", async () => {
    const p = await startTestProxy({
      rules: `[[rules]]\nname = "all"\naction = "allow"\n`,
      limits: { authFailureStepMs: 1 },
    });
    cleanups.push(() => p.close());
    const c = await RawClient.connect(p.port);
    await c.reply();
    await c.command("EHLO client.test");
    const user = upstreams().users[0]!;
    expect((await c.command(`AUTH PLAIN ${plain(user.user, "not-the-password")}`)).raw).toStartWith("535 5.7.8");
    expect((await c.command(`AUTH PLAIN ${plain(user.user, user.password)}`)).raw).toStartWith("235");
    const rows = (await p.rows()).filter((r) => r.command === "AUTH");
    expect(rows.map((r) => r.decision)).toEqual(["deny", "allow"]);
    expect(rows[1]!.agent).toBe(user.user);
  });

  test("a PLAIN or LOGIN response that is not UTF-8 gets 501: no U+FFFD guess goes upstream", async () => {
    const p = await startTestProxy({
      rules: `[[rules]]\nname = "all"\naction = "allow"\n`,
      limits: { authFailureStepMs: 1 },
    });
    cleanups.push(() => p.close());
    const user = upstreams().users[0]!;
    const b64 = (...parts: (string | number[])[]) =>
      Buffer.concat(parts.map((x) => (typeof x === "string" ? Buffer.from(x) : Buffer.from(x)))).toString("base64");
    // RFC 4616 §2: each field is UTF-8. A 0xFF in the name, a cut-off sequence at the end of the password: read as
    // U+FFFD they would be a name and a password the agent did not send, logged in with upstream.
    const cases: string[][] = [
      [`AUTH PLAIN ${b64(`\0${user.user}`, [0xff], `\0${user.password}`)}`],
      [`AUTH PLAIN ${b64(`\0${user.user}\0${user.password}`, [0xc3])}`],
      ["AUTH PLAIN", b64(`\0${user.user}`, [0xff], `\0${user.password}`)],
      [`AUTH LOGIN ${b64(user.user, [0xff])}`],
      ["AUTH LOGIN", b64(user.user), b64(user.password, [0xed, 0xa0, 0x80])],
    ];
    for (const lines of cases) {
      const c = await RawClient.connect(p.port);
      await c.reply();
      await c.command("EHLO client.test");
      let last = "";
      for (const line of lines) last = (await c.command(line)).raw;
      expect(last).toStartWith("501 5.5.2");
      c.close();
    }
    // No login was tried: no AUTH row (a malformed response is a syntax error, docs/smtp.md), no U+FFFD anywhere.
    const rows = (await p.rows()).filter((r) => r.command === "AUTH");
    expect(rows).toEqual([]);
  });

  test("a LOGIN name or password holding a NUL gets 501: it would go upstream as another PLAIN split", async () => {
    const p = await startTestProxy({
      rules: `[[rules]]\nname = "all"\naction = "allow"\n`,
      limits: { authFailureStepMs: 1 },
    });
    cleanups.push(() => p.close());
    const user = upstreams().users[0]!;
    const b64 = (text: string) => Buffer.from(text).toString("base64");
    // Sent upstream as PLAIN (`NUL name NUL password`), the name `alice NUL pw` and the password `x` would be the name
    // alice with the password `pw NUL x`: a server that ends the password at its NUL would log in as alice with `pw`,
    // a login the agent never sent. RFC 4616 §2 has no NUL in a name or password. Refused at the step that has it.
    const cases: string[][] = [
      ["AUTH LOGIN", b64(`${user.user}\0${user.password}`)],
      [`AUTH LOGIN ${b64(`${user.user}\0`)}`],
      ["AUTH LOGIN", b64(user.user), b64(`${user.password}\0x`)],
      ["AUTH LOGIN", b64(`\0${user.user}`)],
    ];
    for (const lines of cases) {
      const c = await RawClient.connect(p.port);
      await c.reply();
      await c.command("EHLO client.test");
      let last = "";
      for (const line of lines) last = (await c.command(line)).raw;
      expect(last, lines.join(" / ")).toStartWith("501 5.5.2");
      c.close();
    }
    // Nothing was tried upstream: no AUTH row (a malformed response is a syntax error, docs/smtp.md).
    expect((await p.rows()).filter((r) => r.command === "AUTH")).toEqual([]);
    // The same name and password without the NUL still log in.
    const c = await RawClient.connect(p.port);
    await c.reply();
    await c.command("EHLO client.test");
    expect((await c.command("AUTH LOGIN")).code).toBe(334);
    expect((await c.command(b64(user.user))).code).toBe(334);
    expect((await c.command(b64(user.password))).raw).toStartWith("235");
    c.close();
  });
});

describe("credential sizes", () => {
  test(`credentials at the limits, and one octet past them (nothing goes upstream)`, async () => {
    const p = await startTestProxy({
      rules: `[[rules]]\nname = "all"\naction = "allow"\n`,
      limits: { authFailureStepMs: 1 },
    });
    cleanups.push(() => p.close());
    const name = "n".repeat(MAX_LOGIN_NAME_BYTES);
    const password = "p".repeat(MAX_LOGIN_PASSWORD_BYTES);
    const b64 = (text: string) => Buffer.from(text).toString("base64");
    const cases: [string[], string][] = [
      [[`AUTH PLAIN ${plain(name, password)}`], "upstream"],
      [[`AUTH PLAIN ${plain(`${name}n`, password)}`], `login name over ${MAX_LOGIN_NAME_BYTES} octets`],
      [[`AUTH PLAIN ${plain("é".repeat(128), "x")}`], "login name over 255 octets"],
      [["AUTH LOGIN", b64("u"), b64(`${password}p`)], `password over ${MAX_LOGIN_PASSWORD_BYTES} octets`],
    ];
    for (const [lines, reason] of cases) {
      const c = await RawClient.connect(p.port);
      await c.reply();
      await c.command("EHLO client.test");
      let last = "";
      for (const line of lines) last = (await c.command(line)).raw;
      expect(last).toStartWith("535 5.7.8");
      const rows = (await p.rows()).filter((r) => r.command === "AUTH");
      expect(rows.at(-1)!.reason).toContain(reason);
      c.close();
    }
  });
});

describe("listeners with TLS", () => {
  const tlsDir = () => upstreams().caFile.replace(/ca\.pem$/, "");
  const tlsKeys = () =>
    `listen_tls = "%MODE%"\ntls_cert_file = "${tlsDir()}server.pem"\ntls_key_file = "${tlsDir()}server.key"`;

  async function tlsProxy(mode: "starttls" | "tls"): Promise<TestProxy> {
    const p = await startTestProxy({
      rules: `[[rules]]\nname = "corp"\naction = "allow"\nto = "*@corp.test"\n`,
      smtp: tlsKeys().replace("%MODE%", mode),
    });
    cleanups.push(() => p.close());
    return p;
  }

  async function python(script: string, ...args: string[]): Promise<string> {
    const child = Bun.spawn(["python3", "-c", script, ...args], { stdout: "pipe", stderr: "pipe", stdin: "ignore" });
    const [out, err, code] = await Promise.all([
      new Response(child.stdout).text(),
      new Response(child.stderr).text(),
      child.exited,
    ]);
    if (code !== 0) throw new Error(`python failed: ${err.slice(-800)}`);
    return out;
  }

  const SEND =
    `
import smtplib, ssl, sys
mode, port, ca, user, pw, rcpt, subject = sys.argv[1:8]
ctx = ssl.create_default_context(cafile=ca)
if mode == "tls":
    s = smtplib.SMTP_SSL("localhost", int(port), context=ctx)
else:
    s = smtplib.SMTP("localhost", int(port))
    s.ehlo()
    assert "auth" not in s.esmtp_features, "AUTH offered before STARTTLS"
    s.starttls(context=ctx)
s.login(user, pw)
s.sendmail("alice@mailgator.test", [rcpt], ("Subject: " + subject + ` +
    `"\\r\\nTo: " + rcpt + "\\r\\n\\r\\nhello\\r\\n").encode())
s.quit()
print("sent")
`;

  for (const mode of ["starttls", "tls"] as const) {
    test(`${mode}: Python smtplib verifies the certificate, logs in and sends`, async () => {
      const p = await tlsProxy(mode);
      const user = upstreams().users[0]!;
      const m = marker();
      const out = await python(
        SEND,
        mode,
        String(p.port),
        upstreams().caFile,
        user.user,
        user.password,
        `${mode}-${m}@corp.test`,
        m,
      );
      expect(out.trim()).toBe("sent");
      await waitForSink(m, 1);
    });
  }

  test("starttls: AUTH before STARTTLS is refused, and commands sent in clear with STARTTLS discarded", async () => {
    const p = await tlsProxy("starttls");
    const c = await RawClient.connect(p.port);
    await c.reply();
    await c.command("EHLO client.test");
    const user = upstreams().users[0]!;
    expect((await c.command(`AUTH PLAIN ${plain(user.user, user.password)}`)).raw).toStartWith("530 5.7.0");
    expect((await c.command("AUTH LOGIN")).raw).toStartWith("530 5.7.0");
    // A refusal, so a row each; the one with an initial response says a credential crossed in clear, never which.
    const refused = (await p.rows()).filter((r) => r.command === "AUTH");
    expect(refused.map((r) => [r.decision, r.target, r.reason])).toEqual([
      ["deny", null, "AUTH before STARTTLS, which this listener requires; it carried a credential in clear"],
      ["deny", null, "AUTH before STARTTLS, which this listener requires"],
    ]);
    expect(JSON.stringify(refused)).not.toContain(user.password);
    // STARTTLS and a login in the same packet: the login must not count after the handshake (RFC 3207 §4.2).
    c.write(`STARTTLS\r\nAUTH PLAIN ${plain(user.user, user.password)}\r\n`);
    expect((await c.reply()).raw).toStartWith("220 2.0.0");
    c.socket.removeAllListeners("data");
    const secure = tlsConnect({ socket: c.socket, ca: readFileSync(upstreams().caFile), servername: "localhost" });
    await new Promise<void>((resolve, reject) => {
      secure.once("secureConnect", () => resolve());
      secure.once("error", reject);
    });
    let received = "";
    secure.setEncoding("latin1");
    secure.on("data", (d: string) => (received += d));
    const until = async (re: RegExp) => {
      for (let i = 0; i < 200 && !re.test(received); i++) await Bun.sleep(10);
    };
    secure.write("MAIL FROM:<alice@mailgator.test>\r\n");
    await until(/^530 /m);
    expect(received).toStartWith("530 5.7.0");
    received = "";
    secure.write("EHLO client.test\r\n");
    await until(/^250 /m);
    expect(received).toMatch(/^250[ -]AUTH PLAIN LOGIN\r$/m);
    expect(received).not.toContain("STARTTLS");
    secure.destroy();
  });
});

describe("sender rules and the null reverse path", () => {
  test("a denied MAIL FROM gets 553 5.7.1 at once; <> never matches a from rule", async () => {
    const fake = await startFakeUpstream({});
    cleanups.push(() => fake.close());
    const p = await startTestProxy({
      upstreamTls: "none",
      upstreamAddr: `127.0.0.1:${fake.port}`,
      // other@ is one of the session's identities, so the rules (not the identity check) refuse it.
      smtp: `identities = ["other@mailgator.test"]`,
      rules: `[[rules]]\nname = "alice"\naction = "allow"\nfrom = "alice@mailgator.test"\n`,
    });
    cleanups.push(() => p.close());
    const c = await RawClient.connect(p.port);
    await c.reply();
    await c.command("EHLO client.test");
    await c.command(`AUTH PLAIN ${plain("alice@mailgator.test", "p")}`);
    expect((await c.command("MAIL FROM:<other@mailgator.test>")).raw).toStartWith(
      "553 5.7.1 Sender <other@mailgator.test> is not allowed",
    );
    expect((await c.command("MAIL FROM:<>")).raw).toStartWith("553 5.7.1 Sender <> is not allowed");
    expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
    const rows = (await p.rows()).filter((r) => r.command === "MAIL FROM");
    expect(rows.map((r) => [r.target, r.decision])).toEqual([
      ["other@mailgator.test", "deny"],
      ["<>", "deny"],
    ]);
    for (const row of rows) expect(row.reason).not.toContain("identities");
  });

  test("<> is allowed by rules that do not name senders", async () => {
    const fake = await startFakeUpstream({});
    cleanups.push(() => fake.close());
    const p = await startTestProxy({
      upstreamTls: "none",
      upstreamAddr: `127.0.0.1:${fake.port}`,
      rules: `[[rules]]\nname = "corp"\naction = "allow"\nto = "*@corp.test"\n`,
    });
    cleanups.push(() => p.close());
    const c = await RawClient.connect(p.port);
    await c.reply();
    await c.command("EHLO client.test");
    await c.command(`AUTH PLAIN ${plain("u", "p")}`);
    // The login is not an address and no identities are configured: <> is the only reverse path left, and the
    // message can name no author, while one without From would be given From: MAILER-DAEMON upstream
    // (docs/smtp.md "The author in the header"): such a session sends nothing.
    expect((await c.command("MAIL FROM:<u@corp.test>")).raw).toStartWith("553 5.7.1");
    expect((await c.command("MAIL FROM:<>")).code).toBe(250);
    expect((await c.command("RCPT TO:<a@corp.test>")).code).toBe(250);
    expect((await c.command("DATA")).code).toBe(354);
    c.write("Subject: x\r\n\r\nhi\r\n.\r\n");
    expect((await c.reply()).raw).toStartWith("554 5.7.1 A message sent with <> must name its author");
    expect(fake.lines.some((l) => l.startsWith("MAIL FROM:"))).toBe(false);
  });
});
