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
import { CONNECT_CHECK_SMTP_MS, CONNECT_CHECK_TIMEOUT_MS, MAX_QUOTED_MESSAGE } from "../../src/cli/commands/connect.ts";
import { DEFAULT_TIMEOUTS, MAX_RESPONSE_LINE } from "../../src/imap/limits.ts";
import { MAX_UPSTREAM_REPLY_LINE, MAX_UPSTREAM_REPLY_LINES } from "../../src/smtp/limits.ts";
import { hashToken } from "../../src/vault/token.ts";
import { createMailbox, upstreams } from "../fixtures/index.ts";
import { SilentUpstream } from "../fixtures/silent-upstream.ts";
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
  /** upstream_tls of both listeners; "tls" unless given (then a port not given is the real server's plain one). */
  tls?: "tls" | "starttls";
}

async function checkConnect(name: string, options: Options = {}): Promise<{ code: number; out: string }> {
  const up = upstreams();
  const mailbox = await createMailbox({ name: "connect" });
  const ca = options.ca === false ? "" : `upstream_ca_file = ${JSON.stringify(up.caFile)}`;
  const file = join(dir, `${name}.toml`);
  // A server not given is the real one, on the port that fits upstream_tls.
  const plain = options.tls === "starttls";
  writeFileSync(
    file,
    `[imap]
listen_addr = "127.0.0.1:0"
upstream_addr = "127.0.0.1:${options.imapPort ?? (plain ? up.ports.imap : up.ports.imaps)}"
upstream_tls = "${options.tls ?? "tls"}"
${ca}

[smtp]
listen_addr = "127.0.0.1:0"
upstream_addr = "127.0.0.1:${options.smtpPort ?? (plain ? up.ports.smtp : up.ports.smtps)}"
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

/** What a greeting relay writes on one connection in place of the server's greeting; null: the greeting as it is. */
interface Greeting {
  readonly bytes: Buffer;
  /** Written in this many pieces (1 unless given), `gapMs` apart. */
  readonly pieces?: number;
  readonly gapMs?: number;
  /** The connection is closed after it. */
  readonly end?: boolean;
}

/**
 * A relay in front of the real server (plain port: upstream_tls = "starttls", so the greeting comes in clear) that
 * replaces the server's greeting, the first chunk it writes, with what `make` returns for that connection (counted
 * from 0), and passes everything after it on.
 */
function greetingRelay(port: number, make: (real: Buffer, connection: number) => Greeting | null): Promise<TcpRelay> {
  const up = upstreams();
  let connections = 0;
  return TcpRelay.start({ host: up.host, port }, () => {
    const connection = connections++;
    let first = true;
    return {
      fromTarget: async (chunk, link) => {
        if (!first) return void link.client.write(chunk);
        first = false;
        const g = make(chunk, connection) ?? { bytes: chunk };
        const step = Math.ceil(g.bytes.length / (g.pieces ?? 1));
        for (let at = 0; at < g.bytes.length; at += step) {
          if (at > 0) await Bun.sleep(g.gapMs ?? 0);
          link.client.write(g.bytes.subarray(at, at + step));
        }
        if (g.end === true) link.client.end();
      },
    };
  });
}

/** The report's line for `port` that says FAILED (empty when none). */
function failedLine(out: string, port: number): string {
  return out.split("\n").find((l) => l.includes(`upstream 127.0.0.1:${port}: FAILED`)) ?? "";
}

test("a greeting that comes in pieces for longer than 10 s is read, as serve reads it", async () => {
  // Dovecot's and Postfix's greetings, each in 12 pieces a second apart on the greeting step's connection (the TCP
  // step's is the first): complete after about 11 s, within serve's greeting deadline (DEFAULT_TIMEOUTS.handshakeMs).
  // Before, check gave up at 10 s and said "no greeting from the upstream server", for a greeting serve would read.
  // Postfix's greeting comes in 12 pieces too, 100 ms apart (serve waits UPSTREAM_REPLY_TIMEOUT_MS for it).
  const slow =
    (gapMs: number) =>
    (real: Buffer, connection: number): Greeting | null =>
      connection === 1 ? { bytes: real, pieces: 12, gapMs } : null;
  expect(12 * 1000).toBeGreaterThan(CONNECT_CHECK_TIMEOUT_MS);
  expect(12 * 1000).toBeLessThan(DEFAULT_TIMEOUTS.handshakeMs);
  const up = upstreams();
  const imap = await greetingRelay(up.ports.imap, slow(1000));
  const smtp = await greetingRelay(up.ports.smtp, slow(100));
  try {
    const started = performance.now();
    const { code, out } = await checkConnect("slow", { imapPort: imap.port, smtpPort: smtp.port, tls: "starttls" });
    // The IMAP greeting took its 11 s.
    expect(performance.now() - started).toBeGreaterThan(11 * 1000);
    expect(out).toMatch(/\[imap\] upstream .*: STARTTLS ok \(certificate verified\); IMAP greeting ok/);
    expect(out).toMatch(/\[imap\] upstream .*: login as account main \(.*\) ok/);
    expect(out).toMatch(/\[smtp\] upstream .*: STARTTLS ok \(certificate verified\); SMTP greeting and EHLO ok/);
    expect(out).not.toContain("FAILED");
    expect(code).toBe(0);
  } finally {
    await imap.close();
    await smtp.close();
  }
});

test("an IMAP greeting cut off or never ended says how much of it came, not that there was none", async () => {
  const up = upstreams();
  // Part of a greeting, then the connection is closed; and part of one on a connection left open past the deadline.
  const cut = await greetingRelay(up.ports.imap, () => ({ bytes: Buffer.from("* OK Dovec"), end: true }));
  const open = await greetingRelay(up.ports.imap, () => ({ bytes: Buffer.from("* OK Dovec") }));
  try {
    const [closed, stalled] = await Promise.all([
      checkConnect("cut", { imapPort: cut.port, tls: "starttls" }),
      checkConnect("stalled", { imapPort: open.port, tls: "starttls" }),
    ]);
    expect(failedLine(closed.out, cut.port)).toContain(
      "FAILED: the upstream server closed the connection before its greeting was complete " +
        "(10 octets of it came, no line end): ",
    );
    expect(failedLine(stalled.out, open.port)).toContain(
      `FAILED: the upstream server's greeting was not complete within ${DEFAULT_TIMEOUTS.handshakeMs} ms ` +
        "(10 octets of it came, no line end): ",
    );
    expect([closed.code, stalled.code]).toEqual([1, 1]);
  } finally {
    await cut.close();
    await open.close();
  }
});

test("a greeting line at the limit is read; one past it is too long, and the report names the limit", async () => {
  // IMAP: a line of MAX_RESPONSE_LINE octets (CRLF excluded) and one of one more; SMTP: MAX_UPSTREAM_REPLY_LINE.
  // Before, the long IMAP greeting was reported as a refusal of the connection, and the SMTP one named no limit.
  const up = upstreams();
  const imapLine = (n: number) => Buffer.from(`* OK ${"x".repeat(n - 5)}\r\n`);
  const smtpLine = (n: number) => Buffer.from(`220 ${"x".repeat(n - 4)}\r\n`);
  const imapAt = await greetingRelay(up.ports.imap, () => ({ bytes: imapLine(MAX_RESPONSE_LINE), pieces: 4 }));
  const imapPast = await greetingRelay(up.ports.imap, () => ({ bytes: imapLine(MAX_RESPONSE_LINE + 1), pieces: 4 }));
  const smtpAt = await greetingRelay(up.ports.smtp, () => ({ bytes: smtpLine(MAX_UPSTREAM_REPLY_LINE), pieces: 3 }));
  const smtpPast = await greetingRelay(up.ports.smtp, () => ({ bytes: smtpLine(MAX_UPSTREAM_REPLY_LINE + 1) }));
  try {
    const at = await checkConnect("line-at", { imapPort: imapAt.port, smtpPort: smtpAt.port, tls: "starttls" });
    expect(at.out).toMatch(/\[imap\] upstream .*: STARTTLS ok \(certificate verified\); IMAP greeting ok/);
    expect(at.out).toMatch(/\[smtp\] upstream .*: STARTTLS ok \(certificate verified\); SMTP greeting and EHLO ok/);
    expect(at.out).not.toContain("FAILED");
    expect(at.code).toBe(0);
    const past = await checkConnect("line-past", { imapPort: imapPast.port, smtpPort: smtpPast.port, tls: "starttls" });
    expect(failedLine(past.out, imapPast.port)).toContain(
      "FAILED: the upstream server's greeting is too long: a line longer than MAX_RESPONSE_LINE " +
        `(${MAX_RESPONSE_LINE} octets): `,
    );
    expect(failedLine(past.out, smtpPast.port)).toContain(
      "FAILED: upstream greeting line too long: longer than MAX_UPSTREAM_REPLY_LINE " +
        `(${MAX_UPSTREAM_REPLY_LINE} octets): `,
    );
    expect(past.code).toBe(1);
  } finally {
    for (const relay of [imapAt, imapPast, smtpAt, smtpPast]) await relay.close();
  }
});

test("a multi-line SMTP greeting at MAX_UPSTREAM_REPLY_LINES lines is read; one more line is too long", async () => {
  // `220-` lines before Postfix's own `220 ` line. Before, the one past the limit was called malformed, quoting
  // Postfix's well-formed last line.
  const up = upstreams();
  const lines = (n: number) => (real: Buffer) => ({
    bytes: Buffer.concat([Buffer.from("220-relay line\r\n".repeat(n - 1)), real]),
    pieces: 5,
    gapMs: 20,
  });
  const at = await greetingRelay(up.ports.smtp, lines(MAX_UPSTREAM_REPLY_LINES));
  const past = await greetingRelay(up.ports.smtp, lines(MAX_UPSTREAM_REPLY_LINES + 1));
  try {
    const [ok, failed] = await Promise.all([
      checkConnect("lines-at", { smtpPort: at.port, tls: "starttls" }),
      checkConnect("lines-past", { smtpPort: past.port, tls: "starttls" }),
    ]);
    expect(ok.out).toMatch(/\[smtp\] upstream .*: STARTTLS ok \(certificate verified\); SMTP greeting and EHLO ok/);
    expect(failedLine(ok.out, at.port)).toBe("");
    expect(failedLine(failed.out, past.port)).toContain(
      `FAILED: upstream greeting too long: more than MAX_UPSTREAM_REPLY_LINES (${MAX_UPSTREAM_REPLY_LINES}) lines: `,
    );
    expect(failed.code).toBe(1);
  } finally {
    await at.close();
    await past.close();
  }
});

test("an IMAP greeting that is not one is malformed, not missing and not a refusal", async () => {
  const up = upstreams();
  const exists = await greetingRelay(up.ports.imap, () => ({ bytes: Buffer.from("* 1 EXISTS\r\n") }));
  const broken = await greetingRelay(up.ports.imap, () => ({ bytes: Buffer.from("* OK [CAPABILITY IMAP4rev1\r\n") }));
  try {
    const [a, b] = await Promise.all([
      checkConnect("exists", { imapPort: exists.port, tls: "starttls" }),
      checkConnect("broken", { imapPort: broken.port, tls: "starttls" }),
    ]);
    expect(failedLine(a.out, exists.port)).toContain(
      "FAILED: the upstream server's greeting is malformed: not an untagged OK, PREAUTH or BYE: ",
    );
    expect(failedLine(b.out, broken.port)).toContain(
      "FAILED: the upstream server's greeting is malformed: expected ']': ",
    );
    expect([a.code, b.code]).toEqual([1, 1]);
  } finally {
    await exists.close();
    await broken.close();
  }
});

test("a long BYE greeting is quoted up to MAX_QUOTED_MESSAGE characters, escaped, and the rest counted", async () => {
  // The message is "the upstream server refused the connection: " and the BYE's text: at MAX_QUOTED_MESSAGE
  // characters it is quoted whole; one more, and 1,000,000 more, are cut there. Before, all of it was printed.
  const up = upstreams();
  const lead = "the upstream server refused the connection: ";
  const bye = (text: string) => () => ({ bytes: Buffer.from(`* BYE ${text}\r\n`, "latin1"), end: true, pieces: 3 });
  const atText = `\x1b[2K${"a".repeat(MAX_QUOTED_MESSAGE - lead.length - 4)}`;
  const relays = [
    await greetingRelay(up.ports.imap, bye(atText)),
    await greetingRelay(up.ports.imap, bye(`${atText}b`)),
    await greetingRelay(up.ports.imap, bye(`${atText}${"c".repeat(1_000_000)}`)),
  ];
  try {
    const runs = await Promise.all(
      relays.map((r, i) => checkConnect(`bye-${i}`, { imapPort: r.port, tls: "starttls" })),
    );
    const quotedText = (i: number) => failedLine(runs[i]!.out, relays[i]!.port).split(`FAILED: ${lead}`)[1] ?? "";
    const escapedAt = `\\u001b[2K${"a".repeat(MAX_QUOTED_MESSAGE - lead.length - 4)}`;
    expect(quotedText(0)).toStartWith(`${escapedAt}: check upstream_addr`);
    expect(quotedText(1)).toStartWith(`${escapedAt}… (1 more character not shown): check upstream_addr`);
    expect(quotedText(2)).toStartWith(`${escapedAt}… (1000000 more characters not shown): check upstream_addr`);
    for (const run of runs) {
      expect(run.out).not.toMatch(RAW);
      expect(run.out.length).toBeLessThan(10_000);
      expect(run.code).toBe(1);
    }
  } finally {
    for (const relay of relays) await relay.close();
  }
});

test('a greeting holding "; check " is quoted whole: only the proxy\'s own hint at the end is taken off', async () => {
  const up = upstreams();
  const relay = await greetingRelay(up.ports.imap, () => ({ bytes: Buffer.from("* BYE a; check b\r\n"), end: true }));
  try {
    const run = await checkConnect("bye-check", { imapPort: relay.port, tls: "starttls" });
    // Before, the quote was cut at the first "; check ": "... refused the connection: a".
    expect(failedLine(run.out, relay.port)).toContain(
      "FAILED: the upstream server refused the connection: a; check b: check upstream_addr",
    );
    expect(run.code).toBe(1);
  } finally {
    await relay.close();
  }
});

test("an SMTP upstream that accepts and says nothing is reported after CONNECT_CHECK_SMTP_MS, not 10 min", async () => {
  const silent = await SilentUpstream.start();
  try {
    const started = performance.now();
    const run = await checkConnect("silent-smtp", { smtpPort: silent.port, tls: "starttls" });
    const took = performance.now() - started;
    expect(failedLine(run.out, silent.port)).toContain(
      `FAILED: no complete answer within ${CONNECT_CHECK_SMTP_MS} ms (greeting, EHLO, STARTTLS and login)`,
    );
    expect(run.code).toBe(1);
    // Before, the check waited UPSTREAM_REPLY_TIMEOUT_MS (10 minutes) for the greeting.
    expect(took).toBeGreaterThanOrEqual(CONNECT_CHECK_SMTP_MS - 1_000);
    expect(took).toBeLessThan(CONNECT_CHECK_SMTP_MS + 20_000);
    // The check hung up: the connection it opened is closed.
    expect(await SilentUpstream.closesWithin(silent.accepted[0]!, 5_000)).toBe(true);
  } finally {
    await silent.close();
  }
}, 120_000);
