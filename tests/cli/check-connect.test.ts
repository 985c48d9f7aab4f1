/**
 * `mailgator check --connect` against the real Dovecot and Postfix: each step says what worked; a closed port is a
 * connection failure (never a bad password), an untrusted certificate names upstream_ca_file, a wrong password is a
 * refused login (docs/install.md "Checking the upstreams").
 */
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "../../scripts/upstreams/ports.ts";
import { hashToken } from "../../src/vault/token.ts";
import { createMailbox, upstreams } from "../fixtures/index.ts";
import { TcpRelay } from "../fixtures/tcp-relay.ts";

setDefaultTimeout(60_000);
const MAIN = join(import.meta.dir, "../../src/cli/main.ts");
const dir = mkdtempSync(join(tmpdir(), "mg-connect-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** An OSC 52 clipboard write, an OSC 8 link, a line erase, a backspace, RIGHT-TO-LEFT OVERRIDE. */
const HOSTILE = "\x1b]52;c;aGk=\x07 \x1b]8;;https://evil.test/\x1b\\here\x1b]8;;\x1b\\ \x1b[2K\x08 \u202e";
/** C0 but TAB and LF, DEL, C1, general category Cf, the line separators. */
const RAW = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\p{Cf}]/u;

interface Options {
  imapPort?: number;
  smtpPort?: number;
  ca?: boolean;
  password?: string;
  /** upstream_tls of both listeners; "tls" unless given. */
  tls?: "tls" | "starttls";
}

async function checkConnect(name: string, options: Options = {}): Promise<{ code: number; out: string }> {
  const up = upstreams();
  const mailbox = await createMailbox({ name: "connect" });
  const ca = options.ca === false ? "" : `upstream_ca_file = ${JSON.stringify(up.caFile)}`;
  const file = join(dir, `${name}.toml`);
  writeFileSync(
    file,
    `[imap]
listen_addr = "127.0.0.1:0"
upstream_addr = "127.0.0.1:${options.imapPort ?? up.ports.imaps}"
upstream_tls = "${options.tls ?? "tls"}"
${ca}

[smtp]
listen_addr = "127.0.0.1:0"
upstream_addr = "127.0.0.1:${options.smtpPort ?? up.ports.smtps}"
upstream_tls = "${options.tls ?? "tls"}"
${ca}

[audit]
path = ${JSON.stringify(join(dir, `${name}.db`))}

[[agents]]
name = "bot"
token_hash = "${hashToken(`mg_${"a".repeat(40)}`)}"
account = "main"

[accounts.main]
username = "${mailbox.user}"
password = "${options.password ?? mailbox.password}"

[[rules]]
name = "Deny everything else"
action = "deny"
`,
  );
  const p = Bun.spawn([process.execPath, MAIN, "check", "--connect", "-c", file], { stdout: "pipe", stderr: "pipe" });
  const out = `${await new Response(p.stdout).text()}${await new Response(p.stderr).text()}`;
  return { code: await p.exited, out };
}

test("good: TCP, verified TLS, greeting and the account's login, for both upstreams", async () => {
  const { code, out } = await checkConnect("good");
  expect(out).toMatch(/\[imap\] upstream 127\.0\.0\.1:\d+: TCP ok/);
  expect(out).toMatch(/\[imap\] upstream .*: TLS ok \(certificate verified\); IMAP greeting ok/);
  expect(out).toMatch(/\[imap\] upstream .*: login as account main \(.*\) ok/);
  expect(out).toMatch(/\[smtp\] upstream .*: TLS ok \(certificate verified\); SMTP greeting and EHLO ok/);
  expect(out).toMatch(/\[smtp\] upstream .*: login as account main \(.*\) ok/);
  expect(out).not.toContain("FAILED");
  expect(code).toBe(0);
});

test("wrong port: a connection failure, login not tried, no word of a password", async () => {
  const closed = await freePort();
  const { code, out } = await checkConnect("port", { imapPort: closed, smtpPort: closed });
  expect(out).toContain(`[imap] upstream 127.0.0.1:${closed}: FAILED to connect over TCP (`);
  expect(out).toContain(`[smtp] upstream 127.0.0.1:${closed}: FAILED to connect over TCP (`);
  expect(out).toContain("TLS and login not tried");
  // The connection report (check's own account listing says "password" as the account's login kind).
  expect(upstreamLines(out)).not.toContain("password");
  expect(code).toBe(1);
});

test("wrong CA: the certificate is not trusted, and the message names upstream_ca_file", async () => {
  const { code, out } = await checkConnect("ca", { ca: false });
  expect(out).toMatch(/\[imap\] upstream .*: TCP ok/);
  expect(out).toMatch(/\[imap\] upstream .*: FAILED: .*set upstream_ca_file to the CA that signed it/);
  expect(out).toMatch(/\[smtp\] upstream .*: FAILED: .*set upstream_ca_file to the CA that signed it/);
  // The advice once per line: the connection's own error comes without the hint the proxy's log lines add to it.
  for (const line of out.split("\n").filter((l) => l.includes(": FAILED: ")))
    expect([line, line.match(/upstream_ca_file/g)?.length]).toEqual([line, 1]);
  expect(out).toContain("login not tried");
  // The connection report (check's own account listing says "password" as the account's login kind).
  expect(upstreamLines(out)).not.toContain("password");
  expect(code).toBe(1);
});

test("wrong password: TLS works, the login is refused, and that is what it says", async () => {
  const { code, out } = await checkConnect("password", { password: "not-the-password" });
  expect(out).toMatch(/\[imap\] upstream .*: TLS ok \(certificate verified\)/);
  expect(out).toMatch(
    /\[imap\] upstream .*: FAILED: login as account main \(.*\) refused: check its username and password/,
  );
  expect(out).toMatch(
    /\[smtp\] upstream .*: FAILED: login as account main \(.*\) refused: check its username and password/,
  );
  expect(code).toBe(1);
});

test("a greeting's controls are printed escaped: the upstream cannot write to the terminal or clipboard", async () => {
  // With starttls the greeting comes in clear, before the handshake: anyone on the path can write it. The relay
  // stands for one, in front of the real Dovecot and Postfix, and puts an OSC 52 clipboard write, an OSC 8 link, a
  // line erase, a backspace and U+202E (as UTF-8) into each greeting.
  const up = upstreams();
  const relay = (port: number, greeting: string) =>
    TcpRelay.start({ host: up.host, port }, () => ({
      fromTarget: (_chunk, link) => link.client.end(Buffer.from(`${greeting} ${HOSTILE} ok\r\n`, "utf8")),
    }));
  const imap = await relay(up.ports.imap, "* BYE");
  const smtp = await relay(up.ports.smtp, "554 5.3.2");
  try {
    const { code, out } = await checkConnect("greeting", { imapPort: imap.port, smtpPort: smtp.port, tls: "starttls" });
    expect(code).toBe(1);
    expect(out).not.toMatch(RAW);
    expect(out).toContain(
      `[imap] upstream 127.0.0.1:${imap.port}: FAILED: the upstream server refused the connection: `,
    );
    expect(out).toContain(`[smtp] upstream 127.0.0.1:${smtp.port}: FAILED: upstream greeting was 554 5.3.2 `);
    // Each control as its escape; the rest of the text as it came.
    for (const escaped of ["\\u001b]52;c;aGk=\\u0007", "\\u001b]8;;https://evil.test/\\u001b\\", "\\u001b[2K\\u0008"])
      expect(upstreamLines(out).split(escaped).length).toBe(3);
  } finally {
    await imap.close();
    await smtp.close();
  }
});

/** The lines of `check --connect` that report on the upstreams. */
function upstreamLines(out: string): string {
  return out
    .split("\n")
    .filter((line) => /^\[(imap|smtp)\] upstream /.test(line))
    .join("\n");
}
