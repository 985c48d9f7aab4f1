/**
 * Reload (docs/operations.md "Reload") as an operator does it: `mailgator serve` as a child process, its config
 * rewritten on disk, then SIGHUP (or `mailgator reload`), with real sessions against the test Dovecot and Postfix.
 */
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { hashToken } from "../../src/vault/token.ts";
import {
  connectImap,
  createMailbox,
  type MailboxOptions,
  sinkMessages,
  sinkRecipients,
  smtpListener,
  type TestMailbox,
  upstreams,
} from "../fixtures/index.ts";
import { cleanExit, type LineClient, lineClient, runCli, type Served, serveChild, smtpSay } from "./serve-child.ts";

setDefaultTimeout(60_000);

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "mg-reload-"));
  dirs.push(dir);
  return dir;
}

interface Agent {
  readonly name: string;
  readonly token: string;
  readonly allowedIps?: readonly string[];
}

/** A vault config with the IMAP and SMTP proxies; `inbox` is the action of the rule on INBOX. */
function vaultConfig(
  dir: string,
  mailbox: TestMailbox,
  agents: readonly Agent[],
  inbox: "allow" | "deny",
  imapTls: { cert: string; key: string } | null = null,
): string {
  const up = upstreams();
  const passwordFile = join(dir, "account.secret");
  writeFileSync(passwordFile, `${mailbox.password}\n`, { mode: 0o600 });
  const tls = imapTls ? `listen_tls = "tls"\ntls_cert_file = "${imapTls.cert}"\ntls_key_file = "${imapTls.key}"\n` : "";
  return `[imap]
listen_addr = "127.0.0.1:0"
${tls}upstream_addr = "${up.host}:${up.ports.imaps}"
upstream_tls = "tls"
upstream_ca_file = "${up.caFile}"

${smtpListener()}
[audit]
path = "${join(dir, "audit.db")}"

[accounts.main]
username = "${mailbox.user}"
password_file = "${passwordFile}"
${agentsToml(agents)}
[[rules]]
name = "Inbox"
folders = ["INBOX"]
action = "${inbox}"
`;
}

function agentsToml(agents: readonly Agent[]): string {
  return agents
    .map(
      (a) =>
        `\n[[agents]]\nname = "${a.name}"\ntoken_hash = "${hashToken(a.token)}"\naccount = "main"\n` +
        (a.allowedIps === undefined ? "" : `allowed_ips = ${JSON.stringify(a.allowedIps)}\n`),
    )
    .join("");
}

const ALICE: Agent = { name: "alice", token: "mgt_alice_0123456789abcdef0123456789abcdef" };
const BOB: Agent = { name: "bob", token: "mgt_bob_0123456789abcdef0123456789abcdef01" };

/**
 * A fresh mailbox (`options`) and folder, and in it `mailgator.toml`: the vault config for `agents` with INBOX
 * allowed (`base`, its text), as most tests here start.
 */
async function vaultSetup(
  options: MailboxOptions,
  agents: readonly Agent[] = [ALICE],
): Promise<{ mailbox: TestMailbox; dir: string; file: string; base: string }> {
  const mailbox = await createMailbox(options);
  const dir = tempDir();
  const file = join(dir, "mailgator.toml");
  const base = vaultConfig(dir, mailbox, agents, "allow");
  writeFileSync(file, base);
  return { mailbox, dir, file, base };
}

async function imapLogin(port: number, agent: Agent): Promise<LineClient> {
  const c = await lineClient(tcpConnect({ host: "127.0.0.1", port }));
  await c.waitFor(/^\* OK/m);
  c.send(`a0 LOGIN ${agent.name} ${agent.token}`);
  await c.waitFor(/^a0 OK/m);
  return c;
}

/** Sends SIGHUP and waits for the reload's own log line (success or failure) after `mark`. */
async function hup(served: Served): Promise<string> {
  const mark = served.logs().length;
  process.kill(served.proc.pid, "SIGHUP");
  return served.waitForLog(/reloaded |reload failed/, mark);
}

test("SIGHUP: a session opened before gets the new rules at its next command; PID kept; audit revision", async () => {
  const { mailbox, dir, file } = await vaultSetup({ name: "reload-rules" });
  const served = serveChild(file);
  try {
    const port = await served.port("IMAP");
    const pid = served.proc.pid;
    const c = await imapLogin(port, ALICE);
    c.send("a1 EXAMINE INBOX");
    await c.waitFor(/^a1 OK/m);
    // Nothing selected: a session with INBOX selected would end at this reload (the next test).
    c.send("a1u UNSELECT");
    await c.waitFor(/^a1u OK/m);

    writeFileSync(file, vaultConfig(dir, mailbox, [ALICE], "deny"));
    const line = await hup(served);
    expect(line).toMatch(/reloaded .*config revision [0-9a-f]{16} -> [0-9a-f]{16}/);
    // The line names the file that was read, not an object (`reloaded [object Object]: ...`).
    expect(line).toContain(`reloaded ${file}: config revision`);
    c.send("a2 EXAMINE INBOX");
    await c.waitFor(/^a2 NO/m);
    expect(served.proc.exitCode).toBeNull();
    expect(served.proc.pid).toBe(pid);

    // A config that does not load: the old rules (deny) stay, the error is in the log with file:line:col.
    writeFileSync(file, `${vaultConfig(dir, mailbox, [ALICE], "allow")}\n[[rules]\nname = "broken"\n`);
    const failed = await hup(served);
    expect(failed).toContain("reload failed");
    expect(served.logs()).toMatch(new RegExp(`${file.replaceAll(".", "\\.")}:\\d+:\\d+`));
    c.send("a3 EXAMINE INBOX");
    await c.waitFor(/^a3 NO/m);
    expect(served.proc.exitCode).toBeNull();
    c.send("a4 LOGOUT");
    await c.waitFor(/^a4 OK/m);
    c.close();
  } finally {
    served.proc.kill("SIGTERM");
  }
  await cleanExit(served);
  writeFileSync(file, vaultConfig(dir, mailbox, [ALICE], "deny")); // the audit command reads the log it names
  const rows = runCli(["audit", "-c", file, "--json", "--limit", "1000"])
    .stdout.trim()
    .split("\n")
    .map((l) => JSON.parse(l) as { command: string; decision: string; configRevision: string });
  const examines = rows.filter((r) => r.command === "EXAMINE");
  const allowed = examines.find((r) => r.decision === "allow");
  const denied = examines.find((r) => r.decision === "deny");
  expect(allowed).toBeDefined();
  expect(denied).toBeDefined();
  expect(allowed!.configRevision).not.toBe(denied!.configRevision);
});

test("a removed agent's sessions end at once (IMAP * BYE, SMTP 421 4.3.2); another agent's go on", async () => {
  const { mailbox, dir, file } = await vaultSetup({ name: "reload-agents" }, [ALICE, BOB]);
  const served = serveChild(file);
  try {
    const imapPort = await served.port("IMAP");
    const smtpPort = await served.port("SMTP");
    const alice = await imapLogin(imapPort, ALICE);
    const bob = await imapLogin(imapPort, BOB);
    const smtp = await smtpLogin(smtpPort, ALICE.name, ALICE.token);

    writeFileSync(file, vaultConfig(dir, mailbox, [BOB], "allow"));
    const line = await hup(served);
    expect(line).toContain("2 session(s) ended");
    await endedByReload(alice, smtp);
    bob.send("b1 NOOP");
    await bob.waitFor(/^b1 OK/m);
    bob.close();
    // The removed agent cannot log in again.
    await aliceLoginRefused(imapPort);
  } finally {
    served.proc.kill("SIGTERM");
  }
  await cleanExit(served);
});

/** An IMAP and an SMTP session that a reload ends: `* BYE` and `421 4.3.2`, then each connection closes. */
async function endedByReload(imap: LineClient, smtp: LineClient): Promise<void> {
  await imap.waitFor(/^\* BYE Configuration changed/m);
  await imap.closed;
  await smtp.waitFor(/^421 4\.3\.2 /m);
  await smtp.closed;
}

/** A new IMAP LOGIN as Alice is refused. */
async function aliceLoginRefused(imapPort: number): Promise<void> {
  const again = await lineClient(tcpConnect({ host: "127.0.0.1", port: imapPort }));
  await again.waitFor(/^\* OK/m);
  again.send(`a0 LOGIN ${ALICE.name} ${ALICE.token}`);
  await again.waitFor(/^a0 NO \[AUTHENTICATIONFAILED\]/m);
  again.close();
}

/** `config` with `rules` put before its first rule. */
function rulesFirst(config: string, rules: string): string {
  return config.replace("[[rules]]\n", `${rules}\n[[rules]]\n`);
}

test("SIGHUP: a rule hiding a message of the selected folder ends that session; an unrelated rule not", async () => {
  const mailbox = await createMailbox({ name: "reload-view" });
  const direct = await connectImap(mailbox);
  const message = (from: string, subject: string) =>
    `From: ${from}\r\nTo: ${mailbox.address}\r\nSubject: ${subject}\r\n` +
    `Message-ID: <${subject}@reload.test>\r\n\r\nbody\r\n`;
  await direct.append("INBOX", message("ann@example.test", "hello-ann"));
  await direct.append("INBOX", message("boss@corp.test", "secret-boss"));
  await direct.logout();
  const dir = tempDir();
  const file = join(dir, "mailgator.toml");
  const base = vaultConfig(dir, mailbox, [ALICE], "allow");
  writeFileSync(file, base);
  const served = serveChild(file);
  try {
    const port = await served.port("IMAP");
    const c = await imapLogin(port, ALICE);
    c.send("a1 SELECT INBOX");
    await c.waitFor(/^a1 OK/m);
    expect(c.text()).toMatch(/^\* 2 EXISTS\r$/m);

    // A rule for another folder: the session goes on and reads as before.
    writeFileSync(file, rulesFirst(base, '[[rules]]\nname = "Archive"\nfolders = ["Archive"]\naction = "allow"\n'));
    expect(await hup(served)).not.toContain("session(s) ended");
    c.send("a2 FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
    await c.waitFor(/^a2 OK/m);
    expect(c.text()).toContain("secret-boss");

    // The boss hidden in INBOX: the selected session ends at once, before any other command.
    const mark = c.text().length;
    writeFileSync(
      file,
      rulesFirst(
        base,
        '[[rules]]\nname = "Hide the boss"\nfolders = ["INBOX"]\nfrom = "boss@*"\naction = "deny"\n' +
          'operations = ["read"]\n',
      ),
    );
    expect(await hup(served)).toContain("1 session(s) ended");
    await c.closed;
    expect(c.text().slice(mark)).toBe("* BYE Configuration changed; this session ends, log in again\r\n");
    await served.waitForLog(/end="reload: the selected folder is now filtered per message"/);

    const fresh = await imapLogin(port, ALICE);
    fresh.send("b1 SELECT INBOX");
    await fresh.waitFor(/^b1 OK/m);
    fresh.send("b2 FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
    await fresh.waitFor(/^b2 OK/m);
    expect(fresh.text()).toMatch(/^\* 1 EXISTS\r$/m);
    expect(fresh.text()).toContain("hello-ann");
    expect(fresh.text()).not.toContain("secret-boss");
    fresh.close();
  } finally {
    served.proc.kill("SIGTERM");
  }
  await cleanExit(served);
});

test("allowed_ips narrowed by SIGHUP: sessions from an address the agent no longer may use end at once", async () => {
  const alice = (allowedIps: readonly string[]): Agent => ({ ...ALICE, allowedIps });
  const bob: Agent = { ...BOB, allowedIps: ["127.0.0.0/8"] };
  const { mailbox, dir, file } = await vaultSetup({ name: "reload-allowed-ips" }, [alice(["127.0.0.1"]), bob]);
  const served = serveChild(file);
  try {
    const imapPort = await served.port("IMAP");
    const smtpPort = await served.port("SMTP");
    const imap = await imapLogin(imapPort, ALICE);
    const other = await imapLogin(imapPort, BOB);
    const smtp = await smtpLogin(smtpPort, ALICE.name, ALICE.token);

    // Alice may now connect from 10.0.0.0/8 only; Bob's list still holds 127.0.0.1.
    writeFileSync(file, vaultConfig(dir, mailbox, [alice(["10.0.0.0/8"]), bob], "allow"));
    const line = await hup(served);
    expect(line).toContain("2 session(s) ended");
    await endedByReload(imap, smtp);
    expect(served.logs()).toContain("ended by reload: the client address is no longer in the agent's allowed_ips");
    other.send("b1 NOOP");
    await other.waitFor(/^b1 OK/m);
    other.close();
    // A new login from the address is refused, as before the change.
    await aliceLoginRefused(imapPort);
  } finally {
    served.proc.kill("SIGTERM");
  }
  await cleanExit(served);
});

/** A self-signed certificate and key made by openssl; returns the certificate's PEM. */
function makeCert(dir: string, name: string): { cert: string; key: string } {
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  execFileSync("openssl", [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-days",
    "2",
    "-subj",
    `/CN=${name}.mailgator.test`,
    "-keyout",
    key,
    "-out",
    cert,
  ]);
  return { cert, key };
}

/** The subject CN and fingerprint of the certificate a TLS client is served on `port`. */
function servedCert(port: number): Promise<{ cn: string; fingerprint: string }> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: "127.0.0.1", port, rejectUnauthorized: false }, () => {
      const peer = socket.getPeerCertificate();
      resolve({ cn: String(peer.subject.CN), fingerprint: peer.fingerprint256 });
      socket.destroy();
    });
    socket.once("error", reject);
  });
}

test("a renewed certificate is served to the next TLS client after SIGHUP; a broken one keeps the old", async () => {
  const mailbox = await createMailbox({ name: "reload-cert" });
  const dir = tempDir();
  const first = makeCert(dir, "first");
  const second = makeCert(dir, "second");
  const live = { cert: join(dir, "live.crt"), key: join(dir, "live.key") };
  writeFileSync(live.cert, readFileSync(first.cert));
  writeFileSync(live.key, readFileSync(first.key), { mode: 0o600 });
  const file = join(dir, "mailgator.toml");
  writeFileSync(file, vaultConfig(dir, mailbox, [ALICE], "allow", live));
  const served = serveChild(file);
  try {
    const port = await served.port("IMAP");
    const before = await servedCert(port);
    expect(before.cn).toBe("first.mailgator.test");

    // As an ACME client renews: new files moved into place.
    renameSync(second.cert, live.cert);
    renameSync(second.key, live.key);
    expect(await hup(served)).toContain("reloaded ");
    const after = await servedCert(port);
    expect(after.cn).toBe("second.mailgator.test");
    expect(after.fingerprint).not.toBe(before.fingerprint);

    // A key that does not match the certificate: refused, the second certificate is still served.
    writeFileSync(live.key, readFileSync(first.key));
    expect(await hup(served)).toContain("reload failed");
    expect(served.logs()).toMatch(/reload failed, the running config stays in force: .*tls_cert_file/);
    expect((await servedCert(port)).cn).toBe("second.mailgator.test");
  } finally {
    served.proc.kill("SIGTERM");
  }
  await cleanExit(served);
});

test("mailgator reload: reloaded or the errors; a pid file while serve runs, a stale one not signalled", async () => {
  const { mailbox, dir, file } = await vaultSetup({ name: "reload-cli" });
  const noServer = runCli(["reload", "-c", file]);
  expect(noServer.exitCode).toBe(1);
  expect(noServer.stdout).toContain("no running mailgator for this config");
  // Where the pid file of a serve whose [audit] path the file no longer names would be, and what to do then.
  expect(noServer.stdout).toContain(`no pid in ${join(dir, "mailgator.pid")}`);
  expect(noServer.stdout).toContain("a changed [audit] path needs a restart, or send that process SIGHUP");
  // A pid file left by a serve that was killed, whose pid another process has since: that one is not signalled.
  const other = Bun.spawn(["sleep", "60"]);
  try {
    writeFileSync(join(dir, "mailgator.pid"), `${other.pid} 1\n`);
    const stale = runCli(["reload", "-c", file]);
    expect(stale.exitCode).toBe(1);
    expect(stale.stdout).toContain(`names process ${other.pid}, which is not the mailgator that wrote it`);
    await Bun.sleep(200);
    expect(other.exitCode).toBeNull();
    expect(other.signalCode).toBeNull();
  } finally {
    other.kill();
  }
  // A pid file that names its process rightly, but the process ends on the SIGHUP (a serve that crashed then):
  // reload says so at once instead of waiting for an outcome.
  const victim = Bun.spawn(["sleep", "60"]);
  try {
    const started = readFileSync(`/proc/${victim.pid}/stat`, "latin1").split(") ")[1]!.split(" ")[19];
    // Without the config file's line (a mailgator from before it was written): not signalled, it cannot be checked.
    writeFileSync(join(dir, "mailgator.pid"), `${victim.pid} ${started}\n`);
    const unknown = runCli(["reload", "-c", file]);
    expect(unknown.exitCode).toBe(1);
    expect(unknown.stdout).toContain("does not say which config file that process runs");
    await Bun.sleep(200);
    expect(victim.exitCode).toBeNull();
    writeFileSync(join(dir, "mailgator.pid"), `${victim.pid} ${started}\n${file}\n`);
    // Run without blocking this process, which reaps the ended child (a zombie would still count as a process).
    const reloader = Bun.spawn(
      [process.execPath, join(import.meta.dir, "../../src/cli/main.ts"), "reload", "-c", file],
      {
        stdout: "pipe",
        stderr: "pipe",
      },
    );
    const said = await new Response(reloader.stdout).text();
    expect(said).toContain(`not reloaded: process ${victim.pid} exited before it reported an outcome`);
    expect(await reloader.exited).toBe(1);
    expect(victim.signalCode).toBe("SIGHUP");
  } finally {
    victim.kill();
  }
  const served = serveChild(file);
  try {
    await served.port("IMAP");
    await served.port("SMTP");
    // The pid and its start time (proc(5) stat field 22), so that the file names this process and no later one.
    const start = readFileSync(`/proc/${served.proc.pid}/stat`, "latin1").split(") ")[1]!.split(" ")[19];
    // The stale file (its pid's start time is not 1) was taken over as serve started, before it listened.
    const pidFile = join(dir, "mailgator.pid");
    expect(readFileSync(pidFile, "utf8")).toBe(`${served.proc.pid} ${start}\n${file}\n`);

    writeFileSync(file, vaultConfig(dir, mailbox, [ALICE], "deny"));
    const ok = runCli(["reload", "-c", file]);
    expect(ok.stdout).toMatch(/^reloaded: config revision [0-9a-f]{16} -> [0-9a-f]{16} \(process \d+\)/);
    expect(ok.exitCode).toBe(0);

    // Loads, but serve refuses it: a listener cannot be removed by a reload.
    const withoutSmtp = vaultConfig(dir, mailbox, [ALICE], "allow").replace(/\[smtp\][^[]*/, "");
    writeFileSync(file, withoutSmtp);
    const refused = runCli(["reload", "-c", file]);
    expect(refused.exitCode).toBe(1);
    expect(refused.stdout).toContain("not reloaded: the running config");
    expect(refused.stdout).toContain("[smtp] was removed");

    // Does not load at all: the errors with file:line:col, and no signal is sent.
    writeFileSync(file, `${withoutSmtp}\naction = = "x"\n`);
    const broken = runCli(["reload", "-c", file]);
    expect(broken.exitCode).toBe(2);
    expect(broken.stdout).toContain("no signal was sent");
    expect(broken.stdout).toMatch(new RegExp(`${file.replaceAll(".", "\\.")}:\\d+:\\d+`));
    expect(served.proc.exitCode).toBeNull();
  } finally {
    served.proc.kill("SIGTERM");
  }
  await cleanExit(served);
  expect(() => readFileSync(join(dir, "mailgator.pid"))).toThrow();
});

test("a SIGHUP while serve shuts down is logged, ignored, reported to reload; it ends as usual (exit 0)", async () => {
  const { dir, file } = await vaultSetup({ name: "reload-stopping" });
  const served = serveChild(file);
  let stopping = false;
  try {
    const port = await served.port("IMAP");
    // An agent that does not hang up when its session ends holds the shutdown open (up to SHUTDOWN_GRACE_MS).
    const c = await lineClient(tcpConnect({ host: "127.0.0.1", port, allowHalfOpen: true }));
    await c.waitFor(/^\* OK/m);
    const mark = served.logs().length;
    served.proc.kill("SIGTERM");
    stopping = true;
    await served.waitForLog(/SIGTERM: shutting down/, mark);
    served.proc.kill("SIGHUP");
    // SIGHUP's default action would end the process here, before the audit log is closed.
    await Promise.race([served.proc.exited, served.waitForLog(/SIGHUP while shutting down: not reloaded/, mark)]);
    expect(served.proc.signalCode).toBeNull();
    expect(served.proc.exitCode).toBeNull();
    // `mailgator reload` (the systemd unit's ExecReload) is told so at once, rather than after its 10 s wait.
    const refused = runCli(["reload", "-c", file]);
    expect(refused.stdout).toContain("serve is shutting down: not reloaded");
    expect(refused.exitCode).toBe(1);
    expect(served.proc.signalCode).toBeNull();
    c.close();
  } finally {
    // A second SIGTERM would end the process by its default action: only when the first was not sent.
    if (!stopping) served.proc.kill("SIGTERM");
  }
  await cleanExit(served);
  expect(served.proc.signalCode).toBeNull();
  expect(() => readFileSync(join(dir, "mailgator.pid"))).toThrow();
});

test("SIGHUPs sent all through serve's shutdown, to its very end, never end it by their default action", async () => {
  const { dir, file } = await vaultSetup({ name: "reload-stopping-end" });
  const served = serveChild(file);
  const port = await served.port("IMAP");
  // An agent that stays holds the shutdown open until it hangs up, so that the signals start before the end.
  const c = await lineClient(tcpConnect({ host: "127.0.0.1", port, allowHalfOpen: true }));
  await c.waitFor(/^\* OK/m);
  const mark = served.logs().length;
  served.proc.kill("SIGTERM");
  await served.waitForLog(/SIGTERM: shutting down/, mark);
  // Every millisecond until it has exited: through the stores' close, the pid file's removal and the runtime's
  // own teardown, where a SIGHUP without a handler would end it with 129.
  let sent = 0;
  while (served.proc.exitCode === null && served.proc.signalCode === null) {
    if (sent === 20) c.close();
    try {
      process.kill(served.proc.pid, "SIGHUP");
      sent++;
    } catch {
      break; // gone between the check and the signal
    }
    await Bun.sleep(1);
  }
  expect(await served.proc.exited).toBe(0);
  expect(served.proc.signalCode).toBeNull();
  expect(sent).toBeGreaterThan(20);
  expect(() => readFileSync(join(dir, "mailgator.pid"))).toThrow();
});

/** A `[[quotas]]` entry for every agent: `reads` message contents a minute. */
function readsQuota(reads: number): string {
  return `\n[[quotas]]\nname = "Reads"\nreads_per_minute = ${reads}\n`;
}

test("SIGHUP applies [[quotas]]: the first ones added, then changed, over the same counted minute", async () => {
  const { file, base } = await vaultSetup({ name: "reload-quotas", seed: { folders: { INBOX: 3 } } });
  const served = serveChild(file);
  try {
    const c = await imapLogin(await served.port("IMAP"), ALICE);
    c.send("a1 EXAMINE INBOX");
    await c.waitFor(/^a1 OK/m);
    c.send("a2 FETCH 1:3 (BODY.PEEK[])");
    await c.waitFor(/^a2 OK/m);

    // The first quotas come with a reload, which opens the state database for them: 4 reads a minute.
    writeFileSync(file, base + readsQuota(4));
    expect(await hup(served)).toMatch(/reloaded /);
    c.send("a3 FETCH 1:3 (BODY.PEEK[])");
    await c.waitFor(/^a3 OK/m);
    c.send("a4 FETCH 1:2 (BODY.PEEK[])");
    expect(await c.waitFor(/^a4 .*$/m)).toMatch(/^a4 NO \[LIMIT\] .*reads_per_minute/m);

    // Raised to 5: the 3 reads already counted in this minute stay counted.
    writeFileSync(file, base + readsQuota(5));
    expect(await hup(served)).toMatch(/reloaded /);
    c.send("a5 FETCH 1:3 (BODY.PEEK[])");
    await c.waitFor(/^a5 NO \[LIMIT\]/m);
    c.send("a6 FETCH 1:2 (BODY.PEEK[])");
    await c.waitFor(/^a6 OK/m);

    // Removed: no limit any more.
    writeFileSync(file, base);
    expect(await hup(served)).toMatch(/reloaded /);
    c.send("a7 FETCH 1:3 (BODY.PEEK[])");
    await c.waitFor(/^a7 OK/m);
    c.close();
  } finally {
    served.proc.kill("SIGTERM");
  }
  await cleanExit(served);
});

test("the first ask rule by SIGHUP: a warning, and a send it would hold is refused with 451", async () => {
  const { mailbox, file, base } = await vaultSetup({ name: "reload-ask" });
  const served = serveChild(file);
  try {
    const smtpPort = await served.port("SMTP");
    writeFileSync(
      file,
      `${base}\n[approvals.groups.boss]\nrecipients = ["boss@example.test"]\n\n[[rules]]\nname = "Outside"\n` +
        'action = "ask"\noperations = ["send"]\nask_groups = ["boss"]\n',
    );
    const mark = served.logs().length;
    expect(await hup(served)).toMatch(/reloaded /);
    await served.waitForLog(/rule 2 "Outside" asks for approval, but approvals are set up at start/, mark);

    const smtp = await lineClient(tcpConnect({ host: "127.0.0.1", port: smtpPort }));
    await smtp.waitFor(/^220 /m);
    const say = (line: string) => smtpSay(smtp, line);
    expect(await say("EHLO agent.test")).toMatch(/^250 /);
    expect(await say(`AUTH PLAIN ${Buffer.from(`\0${ALICE.name}\0${ALICE.token}`).toString("base64")}`)).toMatch(
      /^235 /,
    );
    expect(await say(`MAIL FROM:<${mailbox.address}>`)).toMatch(/^250 /);
    expect(await say("RCPT TO:<someone@outside.test>")).toMatch(/^250 /);
    expect(await say("DATA")).toMatch(/^354 /);
    expect(await say("Subject: held?\r\n\r\nhello\r\n.")).toMatch(/^451 4\.3\.0 Cannot hold the message for approval/);
    smtp.close();
  } finally {
    served.proc.kill("SIGTERM");
  }
  await cleanExit(served);
});

/** Pass-through, the SMTP proxy only, with `[smtp] identities`; every send allowed. */
function passThroughSmtpConfig(dir: string, identities: readonly string[]): string {
  return `${smtpListener()}identities = ${JSON.stringify(identities)}

[audit]
path = "${join(dir, "audit.db")}"

[[rules]]
name = "Send"
operations = ["send"]
action = "allow"
`;
}

async function smtpLogin(port: number, user: string, secret: string): Promise<LineClient> {
  const c = await lineClient(tcpConnect({ host: "127.0.0.1", port }));
  await c.waitFor(/^220 /m);
  expect(await smtpSay(c, "EHLO agent.test")).toMatch(/^250 /);
  expect(await smtpSay(c, `AUTH PLAIN ${Buffer.from(`\0${user}\0${secret}`).toString("base64")}`)).toMatch(/^235 /);
  return c;
}

for (const mode of ["pass-through", "vault"] as const) {
  test(`${mode}: an identity a reload removes is refused to sessions logged in before (MAIL FROM, DATA)`, async () => {
    const mailbox = await createMailbox({ name: `reload-identity-${mode}` });
    const dir = tempDir();
    const file = join(dir, "mailgator.toml");
    const alias = `alias-${mailbox.token}@corp.test`;
    const config = (identities: readonly string[]): string =>
      mode === "pass-through"
        ? passThroughSmtpConfig(dir, identities)
        : vaultConfig(dir, mailbox, [ALICE], "allow").replace(
            `username = "${mailbox.user}"\n`,
            `username = "${mailbox.user}"\nidentities = ${JSON.stringify(identities)}\n`,
          ) + '\n[[rules]]\nname = "Send"\noperations = ["send"]\naction = "allow"\n';
    writeFileSync(file, config([alias]));
    const served = serveChild(file);
    try {
      const port = await served.port("SMTP");
      const [user, secret] = mode === "vault" ? [ALICE.name, ALICE.token] : [mailbox.user, mailbox.password];
      const idle = await smtpLogin(port, user, secret);
      const busy = await smtpLogin(port, user, secret);
      // Before the reload the alias is one of the identities: a transaction starts with it.
      const under = `id-under-${mailbox.token}`;
      expect(await smtpSay(busy, `MAIL FROM:<${alias}>`)).toMatch(/^250 /);
      expect(await smtpSay(busy, `RCPT TO:<${under}@corp.test>`)).toMatch(/^250 /);

      writeFileSync(file, config([]));
      expect(await hup(served)).toMatch(/reloaded /);

      // A session that was idle: refused at MAIL FROM.
      expect(await smtpSay(idle, `MAIL FROM:<${alias}>`)).toMatch(/^553 5\.7\.1 .*is not one of this account's/);
      // The transaction under way: its message is refused as a whole after the final dot.
      expect(await smtpSay(busy, "DATA")).toMatch(/^354 /);
      expect(await smtpSay(busy, `Subject: ${under}\r\n\r\nafter the reload\r\n.`)).toMatch(
        new RegExp(`^554 5\\.7\\.1 Sender <${alias}> is not one of this account's identities; nothing was sent`),
      );
      // Both sessions go on, and the login address is still an identity.
      expect(await smtpSay(busy, "NOOP")).toMatch(/^250 /);
      const ok = `id-ok-${mailbox.token}`;
      expect(await smtpSay(idle, `MAIL FROM:<${mailbox.address}>`)).toMatch(/^250 /);
      expect(await smtpSay(idle, `RCPT TO:<${ok}@corp.test>`)).toMatch(/^250 /);
      expect(await smtpSay(idle, "DATA")).toMatch(/^354 /);
      expect(await smtpSay(idle, `Subject: ${ok}\r\n\r\nfrom the login address\r\n.`)).toMatch(/^250 /);
      // Barrier: the allowed message arrived, and the refused one is not in the sink.
      expect(await sinkRecipients(ok)).toEqual([`${ok}@corp.test`]);
      expect(sinkMessages(under)).toEqual([]);
      idle.close();
      busy.close();
    } finally {
      served.proc.kill("SIGTERM");
    }
    await cleanExit(served);
  });
}

/** The start time of process `pid` (proc(5) stat field 22), as serve writes it in its pid file. */
function startOf(pid: number): string {
  return readFileSync(`/proc/${pid}/stat`, "latin1").split(") ")[1]!.split(" ")[19]!;
}

/** A second config in `dir`, its audit database beside the first's: `o.toml` and `o2.toml` share their pid file. */
function sharedFolder(dir: string, mailbox: TestMailbox, agents: readonly Agent[]): { o: string; o2: string } {
  const o = join(dir, "o.toml");
  const o2 = join(dir, "o2.toml");
  writeFileSync(o, vaultConfig(dir, mailbox, agents, "allow"));
  writeFileSync(o2, vaultConfig(dir, mailbox, agents, "allow").replace(join(dir, "audit.db"), join(dir, "audit2.db")));
  return { o, o2 };
}

/** Waits for `served` to exit, up to `ms`; null when it is still running then (it is left running). */
async function exitWithin(served: Served, ms: number): Promise<number | null> {
  return Promise.race([served.proc.exited, Bun.sleep(ms).then(() => null)]);
}

test("a second serve with its audit database in the first's folder is refused; the first runs, reloads", async () => {
  const mailbox = await createMailbox({ name: "reload-shared" });
  const dir = tempDir();
  const { o, o2 } = sharedFolder(dir, mailbox, [ALICE]);
  const first = serveChild(o);
  let second: Served | null = null;
  try {
    const port = await first.port("IMAP");
    await first.port("SMTP");
    const pidFile = join(dir, "mailgator.pid");
    const held = `${first.proc.pid} ${startOf(first.proc.pid)}\n${o}\n`;
    expect(readFileSync(pidFile, "utf8")).toBe(held);

    second = serveChild(o2);
    // Generous: a serve starting on a loaded machine; it exits as soon as it finds the pid file held.
    expect(await exitWithin(second, 45_000)).toBe(1);
    expect(second.logs()).toContain(
      `cannot start: another mailgator (process ${first.proc.pid}, config ${o}) holds ${pidFile}: its audit ` +
        `database is in ${dir} too, and two serves cannot share that folder. Give each config its own folder`,
    );
    // Refused before it opened anything: no listener, no audit database of its own.
    expect(second.logs()).not.toContain("listening");
    expect(existsSync(join(dir, "audit2.db"))).toBe(false);
    expect(readFileSync(pidFile, "utf8")).toBe(held);

    // The first one is still the one reload reaches, and applies its own file.
    writeFileSync(o, vaultConfig(dir, mailbox, [ALICE, BOB], "allow"));
    const ok = runCli(["reload", "-c", o]);
    expect(ok.stdout).toMatch(
      new RegExp(`^reloaded: config revision [0-9a-f]{16} -> [0-9a-f]{16} \\(process ${first.proc.pid}\\)`),
    );
    expect(ok.exitCode).toBe(0);
    const c = await imapLogin(port, BOB);
    c.close();
    // And o2.toml, which nothing runs, is not reloaded through it.
    const other = runCli(["reload", "-c", o2]);
    expect(other.exitCode).toBe(1);
    expect(other.stdout).toContain(`(process ${first.proc.pid}) runs ${o}, not ${o2}; no signal was sent`);
    expect(first.proc.exitCode).toBeNull();
  } finally {
    if (second !== null && second.proc.exitCode === null) second.proc.kill("SIGTERM");
    first.proc.kill("SIGTERM");
  }
  await cleanExit(first);
  expect(existsSync(join(dir, "mailgator.pid"))).toBe(false);
});

test("a second serve with the first's [state] path is refused (audit folders apart); another path starts", async () => {
  const mailbox = await createMailbox({ name: "reload-state" });
  const [dir, dir2, dir3, stateDir] = [tempDir(), tempDir(), tempDir(), tempDir()];
  const o = join(dir, "o.toml");
  const o2 = join(dir2, "o2.toml");
  const o3 = join(dir3, "o3.toml");
  // Quotas: the state database is in use (a serve that does not use it need not claim it).
  const quota = `\n[[quotas]]\nname = "q"\nreads_per_minute = 1000\n`;
  const state = (file: string) => `${quota}\n[state]\npath = "${join(stateDir, file)}"\n`;
  writeFileSync(o, vaultConfig(dir, mailbox, [ALICE], "allow") + state("state.db"));
  writeFileSync(o2, vaultConfig(dir2, mailbox, [ALICE], "allow") + state("state.db"));
  writeFileSync(o3, vaultConfig(dir3, mailbox, [ALICE], "allow") + state("other.db"));
  const first = serveChild(o);
  let second: Served | null = null;
  let third: Served | null = null;
  try {
    await first.port("SMTP");
    const statePid = join(stateDir, "state.db.pid");
    const held = `${first.proc.pid} ${startOf(first.proc.pid)}\n${o}\n`;
    expect(readFileSync(statePid, "utf8")).toBe(held);
    expect(readFileSync(join(dir, "mailgator.pid"), "utf8")).toBe(held);
    second = serveChild(o2);
    // Generous: a serve starting on a loaded machine; it exits as soon as it finds the pid file held.
    expect(await exitWithin(second, 45_000)).toBe(1);
    expect(second.logs()).toContain(
      `cannot start: another mailgator (process ${first.proc.pid}, config ${o}) holds ${statePid}: it uses the ` +
        `state database ${join(stateDir, "state.db")} too, and two serves cannot share one. Give each config its ` +
        "own [state] path",
    );
    expect(second.logs()).not.toContain("listening");
    // What the second one had claimed is given back: its own audit folder is free again.
    expect(existsSync(join(dir2, "mailgator.pid"))).toBe(false);
    expect(readFileSync(statePid, "utf8")).toBe(held);
    // Another database in the same folder is another serve's to use.
    third = serveChild(o3);
    await third.port("SMTP");
    expect(third.proc.exitCode).toBeNull();
  } finally {
    if (second !== null && second.proc.exitCode === null) second.proc.kill("SIGTERM");
    third?.proc.kill("SIGTERM");
    first.proc.kill("SIGTERM");
  }
  await cleanExit(first);
  expect(await third.proc.exited).toBe(0);
  expect(existsSync(join(stateDir, "state.db.pid"))).toBe(false);
  expect(existsSync(join(stateDir, "other.db.pid"))).toBe(false);
  expect(existsSync(join(dir, "mailgator.pid"))).toBe(false);
});

test("two serves started at once in one folder: one runs and holds the pid file, the other is refused", async () => {
  const mailbox = await createMailbox({ name: "reload-race" });
  const dir = tempDir();
  const { o, o2 } = sharedFolder(dir, mailbox, [ALICE]);
  const both = [serveChild(o), serveChild(o2)];
  try {
    const out = await Promise.race([
      ...both.map((s, i) => s.proc.exited.then((code) => ({ i, code }))),
      // Generous: two serves starting at once on a loaded machine; the loser exits as soon as it finds the file.
      Bun.sleep(45_000).then(() => null),
    ]);
    expect(out?.code).toBe(1);
    const loser = both[out!.i]!;
    const winner = both[1 - out!.i]!;
    expect(loser.logs()).toContain(`cannot start: another mailgator (process ${winner.proc.pid}`);
    await winner.port("SMTP");
    expect(winner.proc.exitCode).toBeNull();
    expect(readFileSync(join(dir, "mailgator.pid"), "utf8")).toBe(
      `${winner.proc.pid} ${startOf(winner.proc.pid)}\n${winner === both[0] ? o : o2}\n`,
    );
  } finally {
    for (const s of both) if (s.proc.exitCode === null) s.proc.kill("SIGTERM");
  }
  for (const s of both) expect([0, 1]).toContain(await s.proc.exited);
});

test("mailgator reload FILE does not signal the serve of another file named in FILE's pid file", async () => {
  const mailbox = await createMailbox({ name: "reload-other" });
  const dir = tempDir();
  const dir2 = tempDir();
  const o = join(dir, "o.toml");
  const o2 = join(dir2, "o2.toml");
  writeFileSync(o, vaultConfig(dir, mailbox, [ALICE], "allow"));
  writeFileSync(o2, vaultConfig(dir2, mailbox, [ALICE], "allow"));
  const served2 = serveChild(o2);
  try {
    const port2 = await served2.port("IMAP");
    await served2.port("SMTP");
    // The pid file in o.toml's folder names o2.toml's serve (as one from before this check left it, sharing the
    // folder): both files are edited, and o.toml is the one to reload.
    const pid2 = served2.proc.pid;
    writeFileSync(join(dir, "mailgator.pid"), `${pid2} ${startOf(pid2)}\n${o2}\n`);
    writeFileSync(o, vaultConfig(dir, mailbox, [ALICE, BOB], "allow"));
    writeFileSync(o2, vaultConfig(dir2, mailbox, [ALICE, BOB], "allow"));
    const mark = served2.logs().length;
    const r = runCli(["reload", "-c", o]);
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toBe(
      `not reloaded: the mailgator in ${join(dir, "mailgator.pid")} (process ${pid2}) runs ${o2}, not ${o}; no ` +
        "signal was sent. Two configs cannot share the folder of their audit databases: give each its own\n",
    );
    // o2.toml's serve was not signalled: its edit is not in force (bob cannot log in), no reload in its log.
    await Bun.sleep(300);
    expect(served2.logs().slice(mark)).not.toMatch(/reloaded |reload failed/);
    const c = await lineClient(tcpConnect({ host: "127.0.0.1", port: port2 }));
    await c.waitFor(/^\* OK/m);
    c.send(`a0 LOGIN ${BOB.name} ${BOB.token}`);
    await c.waitFor(/^a0 NO/m);
    c.close();
    expect(served2.proc.exitCode).toBeNull();
  } finally {
    served2.proc.kill("SIGTERM");
  }
  await cleanExit(served2);
});

test("a stale pid file is taken over: an exited process's, a reused pid's, one with a pid alone", async () => {
  const { dir, file } = await vaultSetup({ name: "reload-stale" });
  const pidFile = join(dir, "mailgator.pid");
  const gone = Bun.spawn(["true"]);
  await gone.exited;
  const reused = Bun.spawn(["sleep", "60"]);
  try {
    for (const stale of [
      `${gone.pid} 12345\n${file}\n`, // exited (its start time no longer matters)
      `${reused.pid} 1\n${file}\n`, // a live process that is not the one that wrote the file (another start time)
      `${gone.pid}\n`, // a pid alone, written where /proc was not readable: its process has exited
    ]) {
      writeFileSync(pidFile, stale);
      const served = serveChild(file);
      try {
        await served.port("SMTP");
        expect(readFileSync(pidFile, "utf8")).toBe(`${served.proc.pid} ${startOf(served.proc.pid)}\n${file}\n`);
        expect(runCli(["reload", "-c", file]).exitCode).toBe(0);
      } finally {
        served.proc.kill("SIGTERM");
      }
      await cleanExit(served);
    }
    expect(reused.exitCode).toBeNull();
    expect(reused.signalCode).toBeNull();
  } finally {
    reused.kill();
  }
});

test("mailgator reload fails when the process reports another file, or a revision other than FILE's", async () => {
  const { dir, file } = await vaultSetup({ name: "reload-revision" });
  const status = join(dir, "mailgator.reload.json");
  // A stand-in for serve that answers SIGHUP with the status `answer` gives (as serve would after the file changed
  // between the two reads, or a serve that reads another file): reload must not say "reloaded".
  for (const [answer, said] of [
    [{ config: file, revision: "0123456789abcdef" }, "not reloaded as read: process"],
    [{ config: join(dir, "other.toml"), revision: "" }, `reported the outcome for ${join(dir, "other.toml")}`],
  ] as const) {
    const script = `process.on("SIGHUP", () => { require("node:fs").writeFileSync(${JSON.stringify(status)},
      JSON.stringify({ pid: process.pid, seq: 1, ok: true, at: "", previousRevision: "x", errors: [], warnings: [],
      sessionsEnded: 0, ...${JSON.stringify(answer)} })); }); setInterval(() => {}, 1000);`;
    const standIn = Bun.spawn([process.execPath, "-e", script]);
    try {
      await Bun.sleep(500);
      writeFileSync(join(dir, "mailgator.pid"), `${standIn.pid} ${startOf(standIn.pid)}\n${file}\n`);
      const r = runCli(["reload", "-c", file]);
      expect(r.stdout).toContain(said);
      expect(r.stdout).not.toMatch(/^reloaded:/m);
      expect(r.exitCode).toBe(1);
    } finally {
      standIn.kill();
    }
  }
});
