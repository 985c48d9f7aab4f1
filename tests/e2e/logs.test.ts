/**
 * Logs (docs/operations.md "Logs"): time stamps on every line, one access line per session, failed logins in the
 * format the documented fail2ban filter matches (run by fail2ban's own fail2ban-regex), JSON for every
 * message with --log-format json, and upstream failures that say what to check.
 */
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { logCutMark, MAX_LOG_TEXT_CHARS } from "../../src/log.ts";
import { hashToken } from "../../src/vault/token.ts";
import { fail2banMatches } from "../fixtures/fail2ban.ts";
import { createMailbox, smtpListener, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { TcpRelay } from "../fixtures/tcp-relay.ts";
import { cleanExit, lineClient, runCli, type Served, serveChild } from "./serve-child.ts";

setDefaultTimeout(60_000);

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const TOKEN = "mgt_logs_0123456789abcdef0123456789abcdef0123";

function config(mailbox: TestMailbox, imapUpstream?: string, caFile = true): string {
  const up = upstreams();
  const dir = mkdtempSync(join(tmpdir(), "mg-logs-"));
  dirs.push(dir);
  const passwordFile = join(dir, "account.secret");
  writeFileSync(passwordFile, `${mailbox.password}\n`, { mode: 0o600 });
  const file = join(dir, "mailgator.toml");
  writeFileSync(
    file,
    `[imap]
listen_addr = "127.0.0.1:0"
upstream_addr = "${imapUpstream ?? `${up.host}:${up.ports.imaps}`}"
upstream_tls = "tls"
${caFile ? `upstream_ca_file = "${up.caFile}"` : ""}

${smtpListener()}
[audit]
path = "${join(dir, "audit.db")}"

[accounts.main]
username = "${mailbox.user}"
password_file = "${passwordFile}"

[[agents]]
name = "agent"
token_hash = "${hashToken(TOKEN)}"
account = "main"

[[rules]]
name = "Inbox"
folders = ["INBOX"]
action = "allow"
`,
  );
  return file;
}

async function traffic(served: Served): Promise<void> {
  const imapPort = await served.port("IMAP");
  const smtpPort = await served.port("SMTP");
  // A failed IMAP login, with a user name that tries to forge the fields after it.
  const bad = await lineClient(tcpConnect({ host: "127.0.0.1", port: imapPort }));
  await bad.waitFor(/^\* OK/m);
  bad.send('a0 LOGIN "x client=10.9.9.9" wrong');
  await bad.waitFor(/^a0 NO/m);
  bad.send("a1 LOGOUT");
  await bad.closed;
  // A good one with two more commands.
  const good = await lineClient(tcpConnect({ host: "127.0.0.1", port: imapPort }));
  await good.waitFor(/^\* OK/m);
  good.send(`a0 LOGIN agent ${TOKEN}`);
  await good.waitFor(/^a0 OK/m);
  good.send("a1 EXAMINE INBOX");
  await good.waitFor(/^a1 OK/m);
  good.send("a2 LOGOUT");
  await good.closed;
  // A failed SMTP login.
  const smtp = await lineClient(tcpConnect({ host: "127.0.0.1", port: smtpPort }));
  await smtp.waitFor(/^220 /m);
  smtp.send("EHLO agent.test");
  await smtp.waitFor(/^250 /m);
  smtp.send(`AUTH PLAIN ${Buffer.from("\0agent\0nope").toString("base64")}`);
  await smtp.waitFor(/^535 /m);
  smtp.send("QUIT");
  await smtp.closed;
  await served.waitForLog(/access: session=.*end=\\?"quit/);
}

test("text logs: a time stamp on every line, access lines, failed logins the fail2ban filter matches", async () => {
  const mailbox = await createMailbox({ name: "logs-text" });
  const served = serveChild(config(mailbox), "pretty");
  try {
    await traffic(served);
    // One session of each proxy still open when serve stops: their access lines say the shutdown ended them.
    const imap = await lineClient(tcpConnect({ host: "127.0.0.1", port: await served.port("IMAP") }));
    await imap.waitFor(/^\* OK/m);
    const smtp = await lineClient(tcpConnect({ host: "127.0.0.1", port: await served.port("SMTP") }));
    await smtp.waitFor(/^220 /m);
  } finally {
    served.proc.kill("SIGTERM");
  }
  await cleanExit(served);
  const lines = served.logs().trimEnd().split("\n");
  for (const line of lines) expect(line).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (info|warn|error) /);
  const stopped = lines.filter((l) => l.includes(" access: ") && l.includes("login=none"));
  expect(stopped.map((l) => `${/\[(imap|smtp)\]/.exec(l)![1]} ${/end="[^"]*"/.exec(l)![0]}`).sort()).toEqual([
    'imap end="proxy shutting down"',
    'smtp end="proxy shutting down"',
  ]);
  const access = lines.filter((l) => l.includes(" access: ") && !stopped.includes(l));
  expect(access).toHaveLength(3);
  const good = access.find((l) => l.includes("login=ok"))!;
  expect(good).toMatch(
    new RegExp(
      "\\[imap\\] access: session=[0-9a-f]{12} client=127\\.0\\.0\\.1:\\d+ connected=\\S+Z login=ok agent=agent " +
        'user=\\S+ duration_ms=\\d+ commands=3 bytes_in=\\d+ bytes_out=\\d+ end="logout"',
    ),
  );
  expect(Number(/bytes_in=(\d+)/.exec(good)![1])).toBeGreaterThan(`a0 LOGIN agent ${TOKEN}\r\n`.length);
  expect(access.filter((l) => l.includes("login=failed"))).toHaveLength(2);
  expect(access.find((l) => l.includes("[smtp]"))).toContain('end="quit"');

  const failed = lines.filter((l) => l.includes("login failed:"));
  expect(failed).toHaveLength(2);
  expect(failed[0]).toContain("user=x?client?10.9.9.9");
  // fail2ban, with the documented filter, finds the client address of each failed login, and nothing else.
  expect(fail2banMatches(lines)).toEqual(["127.0.0.1", "127.0.0.1"]);
  expect(fail2banMatches(lines.filter((l) => !failed.includes(l)))).toEqual([]);
});

test("JSON logs: every line is an object with a time; access and failed-login events carry their fields", async () => {
  const mailbox = await createMailbox({ name: "logs-json" });
  const served = serveChild(config(mailbox), "json");
  try {
    await traffic(served);
  } finally {
    served.proc.kill("SIGTERM");
  }
  await cleanExit(served);
  const lines = served.logs().trimEnd().split("\n");
  const objects = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  for (const o of objects) expect(String(o["time"])).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  const access = objects.filter((o) => o["event"] === "access");
  expect(access).toHaveLength(3);
  const good = access.find((o) => o["login"] === "ok")!;
  expect(good).toMatchObject({ protocol: "imap", client: "127.0.0.1", agent: "agent", commands: 3, end: "logout" });
  expect(good["bytesOut"]).toBeGreaterThan(0);
  const failed = objects.filter((o) => o["event"] === "login_failed");
  expect(failed.map((o) => [o["protocol"], o["client"]])).toEqual([
    ["imap", "127.0.0.1"],
    ["smtp", "127.0.0.1"],
  ]);
  // The same filter works on the JSON lines too.
  expect(fail2banMatches(lines)).toEqual(["127.0.0.1", "127.0.0.1"]);
});

test("--log-format json: config errors are JSON lines with file, line and column", () => {
  const dir = mkdtempSync(join(tmpdir(), "mg-logs-"));
  dirs.push(dir);
  const file = join(dir, "mailgator.toml");
  writeFileSync(file, '[imap]\nlisten_addr = "127.0.0.1:0"\nupstream_tls = "maybe"\n[[rules]\n');
  const r = runCli(["serve", "-c", file, "--log-format", "json"]);
  expect(r.exitCode).toBe(2);
  const objects = r.stderr
    .trimEnd()
    .split("\n")
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  expect(objects.length).toBeGreaterThan(0);
  for (const o of objects) expect(o).toMatchObject({ level: "error", event: "config_error", file });
  expect(objects.some((o) => typeof o["line"] === "number" && typeof o["column"] === "number")).toBe(true);
  expect(String(objects[0]!["msg"])).toMatch(new RegExp(`${file.replaceAll(".", "\\.")}:\\d+:\\d+`));
});

/** The longest line the journal keeps as one record: journald's LineMax default, 48K (docs/operations.md "Logs"). */
const JOURNAL_LINE_MAX = 48 * 1024;

test("a log line quoting a long upstream greeting is cut: no journal record starts with its text", async () => {
  // A greeting that comes in clear (starttls) may be as long as anyone on the path makes it. Before, the proxy logged
  // it whole, once per login: a line of any length, which the journal splits into records of JOURNAL_LINE_MAX
  // octets. This one puts a forged failed-login line where the second record starts, for fail2ban to ban
  // 198.51.100.9; and with a long enough greeting each login wrote megabytes.
  const mailbox = await createMailbox({ name: "logs-long" });
  const up = upstreams();
  const stamp = new Date().toISOString();
  const head = `${stamp} warn [imap] session 0123456789ab: the upstream server refused the connection: `;
  const forged = `${stamp} warn [imap] login failed: client=198.51.100.9 protocol=imap user=x`;
  const greeting = `* BYE ${"p".repeat(JOURNAL_LINE_MAX - head.length)}${forged} ${"q".repeat(1_000_000)}\r\n`;
  const relay = await TcpRelay.start({ host: up.host, port: up.ports.imap }, () => ({
    fromTarget: (_chunk, link) => link.client.end(Buffer.from(greeting, "latin1")),
  }));
  try {
    const file = config(mailbox, `127.0.0.1:${relay.port}`);
    writeFileSync(file, readFileSync(file, "utf8").replace('upstream_tls = "tls"', 'upstream_tls = "starttls"'));
    const served = serveChild(file, "pretty");
    try {
      const c = await lineClient(tcpConnect({ host: "127.0.0.1", port: await served.port("IMAP") }));
      await c.waitFor(/^\* OK/m);
      c.send(`a0 LOGIN agent ${TOKEN}`);
      expect(await c.waitFor(/^a0 NO .*$/m)).toContain("[UNAVAILABLE]");
      c.close();
      await served.waitForLog(/refused the connection/);
    } finally {
      served.proc.kill("SIGTERM");
    }
    await cleanExit(served);
    const lines = served.logs().trimEnd().split("\n");
    const quoted = lines.find((l) => l.includes("refused the connection"))!;
    // The message (after `<time> warn [imap] `) is cut at MAX_LOG_TEXT_CHARS, and says how much was left out.
    const lead = `${stamp} warn [imap] `.length;
    const message = head.length - lead + greeting.length - "* BYE \r\n".length;
    expect(quoted).toEndWith(logCutMark(message - MAX_LOG_TEXT_CHARS));
    expect(quoted.length).toBe(lead + MAX_LOG_TEXT_CHARS + logCutMark(message - MAX_LOG_TEXT_CHARS).length);
    for (const line of lines) expect(Buffer.byteLength(line)).toBeLessThan(JOURNAL_LINE_MAX);
    // The journal's records: each line in pieces of at most JOURNAL_LINE_MAX octets (here all ASCII).
    const records = lines.flatMap((l) => l.match(new RegExp(`[^]{1,${JOURNAL_LINE_MAX}}`, "g")) ?? []);
    expect(fail2banMatches(records.map((r) => `mailhost mailgator[4242]: ${r}`))).toEqual([]);
  } finally {
    await relay.close();
  }
});

test("upstream failures say what to check; a refused connection is not a wrong password to the agent", async () => {
  const mailbox = await createMailbox({ name: "logs-upstream" });
  // A port nothing listens on.
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const closedPort = (probe.address() as { port: number }).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  for (const [upstream, caFile, hint] of [
    [`127.0.0.1:${closedPort}`, true, "check upstream_addr"],
    [undefined, false, "check upstream_ca_file"],
  ] as const) {
    const served = serveChild(config(mailbox, upstream, caFile), "pretty");
    try {
      const c = await lineClient(tcpConnect({ host: "127.0.0.1", port: await served.port("IMAP") }));
      await c.waitFor(/^\* OK/m);
      c.send(`a0 LOGIN agent ${TOKEN}`);
      const reply = await c.waitFor(/^a0 NO .*$/m);
      expect(reply).toContain("[UNAVAILABLE]");
      expect(reply).not.toContain("AUTHENTICATIONFAILED");
      c.close();
      await served.waitForLog(new RegExp(hint));
    } finally {
      served.proc.kill("SIGTERM");
    }
    await cleanExit(served);
  }
});

test("a log line quoting the upstream shows its controls escaped, in text and in JSON", async () => {
  // With upstream_tls = "starttls" the greeting comes in clear, before the handshake: anyone on the path can write
  // it. The relay stands for one, in front of the real Dovecot, and puts an OSC 52 clipboard write, an OSC 8 link, a
  // line erase, a backspace and a lone 0x9b (CSI as one C1 octet) into the greeting; the proxy logs it.
  const mailbox = await createMailbox({ name: "logs-hostile" });
  const up = upstreams();
  const hostile = Buffer.concat([
    Buffer.from("* BYE \x1b]52;c;aGk=\x07 \x1b]8;;https://evil.test/\x1b\\here\x1b]8;;\x1b\\ \x1b[2K\x08 ", "latin1"),
    Buffer.from([0x9b]),
    Buffer.from("1A ok\r\n", "latin1"),
  ]);
  const relay = await TcpRelay.start({ host: up.host, port: up.ports.imap }, () => ({
    fromTarget: (_chunk, link) => link.client.end(hostile),
  }));
  const raw = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\p{Cf}]/u;
  try {
    for (const format of ["pretty", "json"] as const) {
      const file = config(mailbox, `127.0.0.1:${relay.port}`);
      writeFileSync(file, readFileSync(file, "utf8").replace('upstream_tls = "tls"', 'upstream_tls = "starttls"'));
      const served = serveChild(file, format);
      try {
        const c = await lineClient(tcpConnect({ host: "127.0.0.1", port: await served.port("IMAP") }));
        await c.waitFor(/^\* OK/m);
        c.send(`a0 LOGIN agent ${TOKEN}`);
        expect(await c.waitFor(/^a0 NO .*$/m)).toContain("[UNAVAILABLE]");
        c.close();
        const line = await served.waitForLog(/refused the connection/);
        expect(served.logs()).not.toMatch(raw);
        // The text line shows each control as its escape; the JSON line is still valid and holds the same text.
        const msg = format === "json" ? String((JSON.parse(line) as { msg: string }).msg) : line;
        expect(msg).toContain(
          "the upstream server refused the connection: " +
            (format === "json"
              ? "\x1b]52;c;aGk=\x07 \x1b]8;;https://evil.test/\x1b\\here\x1b]8;;\x1b\\ \x1b[2K\x08 \x9b1A ok"
              : "\\u001b]52;c;aGk=\\u0007 \\u001b]8;;https://evil.test/\\u001b\\here\\u001b]8;;\\u001b\\ " +
                "\\u001b[2K\\u0008 \\u009b1A ok"),
        );
      } finally {
        served.proc.kill("SIGTERM");
      }
      await cleanExit(served);
    }
  } finally {
    await relay.close();
  }
});
