/**
 * Approvals (docs/approvals.md) end to end, as an operator runs them: `mailgator serve` as a child process in front
 * of the real Postfix, agents sending with nodemailer, approvers deciding with `mailgator approvals` (another
 * process, while serve runs) and with the approval page on serve's admin listener.
 *
 * - The scenario of an agent that mails a colleague (allowed, delivered at once) and an outside address (held):
 *   the outside copy reaches the sink only after approval, once, with the bytes the agent sent; denied and
 *   expired (by the running serve) ones never arrive; the state database holds none of it in clear.
 * - Two approvers at once (the command line and the page): one upstream copy, the other is told.
 * - SIGKILL during the replay, for real: a relay between Mailgator and Postfix holds the final dot (or Postfix's
 *   answer to it), the approving process is killed, serve restarts: the message needs a check and is never sent
 *   again (docs/approvals.md "What is guaranteed").
 * - An OAuth2 vault account: approving logs in with a token from the token manager (refreshed when the upstream
 *   refuses the cached one); an account that needs re-authorization keeps the message held.
 */

import { Database } from "bun:sqlite";
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import nodemailer from "nodemailer";
import { freePort } from "../../scripts/upstreams/ports.ts";
import { readTokens } from "../../src/accounts/records.ts";
import { ADMIN_CLOSE_MS, ADMIN_IDLE_SECONDS } from "../../src/admin/server.ts";
import { type ApprovalRow, ApprovalStore } from "../../src/approvals/store.ts";
import { DECISION_WIND_UP_MS } from "../../src/approvals/web.ts";
import { SHUTDOWN_GRACE_MS } from "../../src/net/index.ts";
import { SealedStore } from "../../src/state/store.ts";
import { createMailbox, heldId, sinkMessages, type TestMailbox, uniqueToken, upstreams } from "../fixtures/index.ts";
import { authorizationCodeFlow, control, oauthAccountToml, storeIssuedTokens } from "../fixtures/oauth.ts";
import { SmtpRelay as Relay } from "../fixtures/smtp-relay.ts";
import { noticesIn, waitFor } from "../smtp/notice-reader.ts";
import { agentToml, serveConfig, smtpTo } from "./config.ts";
import { lineClient, type Served, serveChild, smtpSay, stopServed } from "./serve-child.ts";

setDefaultTimeout(120_000);

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");
/** Header fields Postfix's delivery puts above the message it received. */
const PREPENDED = new Set(["return-path", "x-original-to", "delivered-to", "received"]);
/** Long enough for a copy that should not arrive to have arrived. */
const SETTLE_MS = 3000;

const dirs: string[] = [];
const children: Served[] = [];
afterAll(async () => {
  for (const c of children) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill("SIGTERM");
  await Promise.all(children.map((c) => c.proc.exited));
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

interface Setup {
  readonly dir: string;
  readonly file: string;
  readonly sender: TestMailbox;
  readonly statePath: string;
  readonly secretsFile: string;
  readonly auditPath: string;
  readonly adminPort: number;
}

interface ConfigOptions {
  /** The upstream SMTP server: Postfix over STARTTLS, or a relay in front of it in clear. */
  readonly upstream: { readonly addr: string; readonly tls: "starttls" | "none" };
  readonly adminPort: number;
  readonly timeout: string;
  /** TOML of [accounts] and [[agents]] (vault mode); none: pass-through. */
  readonly vault?: string;
}

function configToml(dir: string, o: ConfigOptions): string {
  const listeners = smtpTo(o.upstream.addr, o.upstream.tls);
  return `${serveConfig({ listeners, dir, adminPort: o.adminPort, approvals: { timeout: o.timeout } })}${o.vault ?? ""}
[[rules]]
name = "colleagues"
action = "allow"
operations = ["send"]
to = "*@corp.test"

[[rules]]
name = "outside needs a manager"
action = "ask"
operations = ["send"]
ask_groups = ["managers"]
`;
}

async function setup(name: string, o: Omit<ConfigOptions, "adminPort">): Promise<Setup> {
  const dir = mkdtempSync(join(tmpdir(), `mg-approvals-${name}-`));
  dirs.push(dir);
  const adminPort = await freePort();
  const file = join(dir, "mailgator.toml");
  writeFileSync(file, configToml(dir, { ...o, adminPort }));
  const sender = await createMailbox({ name: `approvals-${name}` });
  return {
    dir,
    file,
    sender,
    adminPort,
    statePath: join(dir, "state.db"),
    secretsFile: join(dir, "secrets.key"),
    auditPath: join(dir, "audit.db"),
  };
}

interface Running {
  readonly served: Served;
  readonly smtpPort: number;
  readonly admin: string;
}

async function start(s: Setup): Promise<Running> {
  const served = serveChild(s.file);
  children.push(served);
  const smtpPort = await served.port("SMTP");
  const line = await served.waitForLog(/admin listening on http:\/\/127\.0\.0\.1:\d+/);
  return { served, smtpPort, admin: `http://127.0.0.1:${/127\.0\.0\.1:(\d+)/.exec(line)![1]}` };
}

async function stop(r: Running): Promise<void> {
  r.served.proc.kill("SIGTERM");
  await r.served.proc.exited;
}

/** A mailgator command, run to completion without blocking this process (the relay below runs in it). */
function spawnCli(args: readonly string[]) {
  return Bun.spawn([process.execPath, MAIN, ...args], { stdout: "pipe", stderr: "pipe" });
}

async function cli(args: readonly string[]): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  const proc = spawnCli(args);
  const [stdout, stderr, exitCode] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  return { exitCode, stdout, stderr };
}

/** The row as `approvals list --json` shows it (what an operator sees). */
async function listed(s: Setup, id: string): Promise<{ state: string; decidedBy: string | null } | undefined> {
  const r = await cli(["approvals", "list", "-c", s.file, "--json"]);
  expect(r.exitCode).toBe(0);
  return (JSON.parse(r.stdout) as { id: string; state: string; decidedBy: string | null }[]).find((x) => x.id === id);
}

/** Opens the state database as a second reader, with the secrets key: what a notice's link is computed from. */
function withStore<T>(s: Setup, f: (store: ApprovalStore) => T): T {
  const state = SealedStore.open(s.statePath, { secretsFile: s.secretsFile, env: {}, create: false })!;
  try {
    return f(new ApprovalStore(state));
  } finally {
    state.close();
  }
}

function link(s: Setup, admin: string, id: string): { url: string; token: string } {
  const token = withStore(s, (store) => store.token(store.row(id) as ApprovalRow));
  return { url: `${admin}/approvals/${id}?t=${token}`, token };
}

function post(admin: string, id: string, token: string, action: "approve" | "deny"): Promise<Response> {
  return fetch(`${admin}/approvals/${id}`, {
    method: "POST",
    body: `t=${encodeURIComponent(token)}&action=${action}&confirm=${action}`,
    headers: { "content-type": "application/x-www-form-urlencoded", origin: admin },
  });
}

type Row = { command: string; decision: string; rule: string; protocol: string };

/** The audit rows about a held message once there are `count` (serve commits its rows in batches). */
async function auditRowsWhen(s: Setup, id: string, count: number): Promise<Row[]> {
  const deadline = Date.now() + 10_000;
  let rows = auditRows(s, id);
  while (rows.length < count && Date.now() < deadline) {
    await Bun.sleep(100);
    rows = auditRows(s, id);
  }
  return rows;
}

/** The audit rows about a held message, oldest first (the log is read as a second reader). */
function auditRows(s: Setup, id: string): Row[] {
  const db = new Database(s.auditPath, { readonly: true });
  try {
    return db
      .query("SELECT command, decision, rule, protocol FROM audit WHERE target = ? ORDER BY id")
      .all(id) as Row[];
  } finally {
    db.close();
  }
}

/**
 * The agent's message: CRLF lines, a line that starts with a dot (stuffed on the wire, RFC 5321 section 4.5.2), and
 * enough text to take several blocks of the replay.
 */
function agentMessage(from: string, to: string, token: string): Buffer {
  const filler = Array.from({ length: 1500 }, (_, i) => `line ${i} of ${token}: ${"x".repeat(60)}`).join("\r\n");
  return Buffer.from(
    `From: ${from}\r\nTo: ${to}\r\nSubject: approval ${token}\r\nDate: Wed, 02 Dec 2026 12:00:00 +0000\r\n` +
      `Message-ID: <${token}@mailgator.test>\r\nX-Test-Token: ${token}\r\n\r\n` +
      `Hello, body-${token}\r\n.a line that starts with a dot\r\n..and one with two\r\n${filler}\r\nbye\r\n`,
    "latin1",
  );
}

interface Auth {
  readonly user: string;
  readonly pass: string;
}

/** Sends `raw` through the proxy with nodemailer: the final reply's text. */
async function send(port: number, auth: Auth, from: string, to: string, raw: Buffer): Promise<string> {
  const transport = nodemailer.createTransport({ host: "127.0.0.1", port, secure: false, ignoreTLS: true, auth });
  try {
    const info = await transport.sendMail({ envelope: { from, to: [to] }, raw });
    return info.response;
  } finally {
    transport.close();
  }
}

/** Holds one message to an outside address: its id, token and bytes. */
async function hold(s: Setup, port: number, auth: Auth): Promise<{ id: string; token: string; raw: Buffer }> {
  const token = uniqueToken("held");
  const raw = agentMessage(s.sender.address, `out-${token}@outside.example`, token);
  const response = await send(port, auth, s.sender.address, `out-${token}@outside.example`, raw);
  return { id: heldId(response), token, raw };
}

/** Waits for `count` sink copies carrying `token`, then SETTLE_MS more: exactly `count` are there. */
async function expectCopies(token: string, count: number): Promise<string[]> {
  const deadline = Date.now() + 20_000;
  while (sinkMessages(token).length < count && Date.now() < deadline) await Bun.sleep(100);
  await Bun.sleep(SETTLE_MS);
  const copies = sinkMessages(token);
  expect(copies.length).toBe(count);
  return copies.map((c) => readFileSync(c.file, "latin1"));
}

/**
 * The delivered copy is the agent's bytes (line ends as the sink stores them), below only the fields Postfix's
 * delivery prepends.
 */
function expectSameBytes(delivered: string, sent: Buffer): void {
  const mine = sent.toString("latin1").replace(/\r\n/g, "\n");
  const copy = delivered.replace(/\r\n/g, "\n");
  expect(copy.endsWith(mine)).toBe(true);
  const above = copy.slice(0, copy.length - mine.length);
  const names = above
    .split("\n")
    .filter((l) => l !== "" && !/^[ \t]/.test(l))
    .map((l) => l.slice(0, l.indexOf(":")).toLowerCase());
  expect(names.length).toBeGreaterThan(0);
  for (const n of names) expect(PREPENDED.has(n)).toBe(true);
}

/** Neither the state database nor its WAL holds any of `needles` in clear. */
function expectNothingInClear(s: Setup, needles: readonly string[]): void {
  let read = 0;
  for (const suffix of ["", "-wal"]) {
    const path = s.statePath + suffix;
    if (!existsSync(path)) continue;
    const bytes = readFileSync(path);
    read++;
    for (const needle of needles) {
      expect(bytes.includes(Buffer.from(needle, "latin1"))).toBe(false);
      expect(bytes.includes(Buffer.from(needle, "utf16le"))).toBe(false);
    }
  }
  expect(read).toBeGreaterThan(0);
}

describe("an agent mails a colleague and an outside address (pass-through, Postfix over STARTTLS)", () => {
  let up: ReturnType<typeof upstreams>;
  let s: Setup;
  let auth: Auth;
  let running: Running;
  beforeAll(async () => {
    up = upstreams();
    s = await setup("scenario", { upstream: { addr: `${up.host}:${up.ports.smtp}`, tls: "starttls" }, timeout: "1h" });
    auth = { user: s.sender.user, pass: s.sender.password };
  });

  test("explain: the outside recipient is ASK (held) by the rule, with its group", async () => {
    const r = await cli([
      "explain",
      "-c",
      s.file,
      "--op",
      "send",
      "--from",
      s.sender.address,
      "--to",
      "pat@corp.test",
      "--to",
      "someone@outside.example",
    ]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toStartWith(
      'mail:send: ASK (held) by rule 2 "outside needs a manager" for <someone@outside.example>: the whole message ' +
        "is held for approval by managers; the agent gets 250 held, nothing is sent until approved",
    );
    expect(r.stdout).toContain('to <pat@corp.test>: ALLOW by rule 1 "colleagues"');
    expect(r.stdout).toContain('to <someone@outside.example>: ASK by rule 2 "outside needs a manager"');
    const json = JSON.parse(
      (
        await cli([
          "explain",
          "-c",
          s.file,
          "--op",
          "send",
          "--from",
          s.sender.address,
          "--to",
          "someone@outside.example",
          "--json",
        ])
      ).stdout,
    );
    expect(json).toMatchObject({ action: "ask", stage: "held", askGroups: ["managers"] });
  });

  test("the colleague gets it at once; the outside copy only once approved, once, byte for byte", async () => {
    running = await start(s);
    const colleagueToken = uniqueToken("colleague");
    const toColleague = agentMessage(s.sender.address, `pat-${colleagueToken}@corp.test`, colleagueToken);
    const r1 = await send(running.smtpPort, auth, s.sender.address, `pat-${colleagueToken}@corp.test`, toColleague);
    expect(r1).toMatch(/^250 /);
    expect(r1).not.toContain("Held");

    const { id, token, raw } = await hold(s, running.smtpPort, auth);
    expectSameBytes((await expectCopies(colleagueToken, 1))[0]!, toColleague);
    expect(sinkMessages(token)).toHaveLength(0);
    expect((await listed(s, id))?.state).toBe("held");
    const secrets = [`body-${token}`, `out-${token}@outside.example`, `approval ${token}`, s.sender.password];
    expectNothingInClear(s, secrets);

    // The page, served by serve on its admin listener: a GET shows the preview and changes nothing.
    const { url, token: linkToken } = link(s, running.admin, id);
    for (let i = 0; i < 2; i++) {
      const page = await fetch(url);
      expect(page.status).toBe(200);
      expect(page.headers.get("cache-control")).toBe("no-store");
      const html = await page.text();
      expect(html).toContain(`out-${token}@outside.example <strong>(outside the sender's domain)</strong>`);
      expect(html).toContain(`approval ${token}`);
      expect(html).toContain(`Hello, body-${token}`);
      expect(html).toContain("outside needs a manager");
      expect(html).toContain('value="approve"');
    }
    expect((await listed(s, id))?.state).toBe("held");
    expect(withStore(s, (store) => store.tokenUsed(id))).toBe(false);
    expect(sinkMessages(token)).toHaveLength(0);

    const approved = await cli(["approvals", "approve", id, "-c", s.file]);
    expect(approved.stdout).toMatch(new RegExp(`^${id}: sent: upstream replied 250 `));
    expect(approved.exitCode).toBe(0);
    expectSameBytes((await expectCopies(token, 1))[0]!, raw);
    expect(await listed(s, id)).toMatchObject({ state: "sent" });
    expectNothingInClear(s, secrets);
    // The page now says so, and a second approval sends nothing.
    const after = await post(running.admin, id, linkToken, "approve");
    expect(after.status).toBe(409);
    expect(await after.text()).toContain("already approved");
    const again = await cli(["approvals", "approve", id, "-c", s.file]);
    expect(again.exitCode).toBe(1);
    expect(again.stdout).toContain("not sent: it is sent");
    await expectCopies(token, 1);
    expect((await auditRowsWhen(s, id, 5)).map((r) => [r.command, r.decision, r.rule, r.protocol])).toEqual([
      ["DATA", "ask", "outside needs a manager", "smtp"],
      ["APPROVAL VIEWED", "ask", "outside needs a manager", "smtp"],
      ["APPROVAL VIEWED", "ask", "outside needs a manager", "smtp"],
      ["APPROVE", "allow", "outside needs a manager", "cli"],
      ["APPROVAL SENT", "allow", "outside needs a manager", "cli"],
    ]);
  });

  test("a denied message never arrives and is wiped", async () => {
    const { id, token } = await hold(s, running.smtpPort, auth);
    const denied = await cli(["approvals", "deny", id, "--reason", "not to them", "-c", s.file]);
    expect(denied.exitCode).toBe(0);
    expect(denied.stdout).toContain("denied");
    expect(await listed(s, id)).toMatchObject({ state: "denied" });
    expect(withStore(s, (store) => store.details(id))).toBeNull();
    expectNothingInClear(s, [`body-${token}`, `out-${token}@outside.example`, s.sender.password]);
    const late = await cli(["approvals", "approve", id, "-c", s.file]);
    expect(late.exitCode).toBe(1);
    expect(late.stdout).toContain("not sent: it is denied");
    await expectCopies(token, 0);
  });

  test("two approvers at once, the command line and the page: one upstream copy per message", async () => {
    // The page's POST is fired around the moment the command reaches its claim (the command's start-up time,
    // measured first), earlier or later each round, so that either may win.
    const started = Date.now();
    expect((await cli(["approvals", "approve", "0".repeat(32), "-c", s.file])).stdout).toContain("no held message");
    const startup = Date.now() - started;
    const rounds = [0.5, 0.75, 0.9, 1, 1.1, 1.25, 1.5].map((f) => Math.round(f * startup));
    const tokens: string[] = [];
    const winners: string[] = [];
    for (const delay of rounds) {
      const { id, token } = await hold(s, running.smtpPort, auth);
      tokens.push(token);
      const { token: t } = link(s, running.admin, id);
      const [byCli, byPage] = await Promise.all([
        cli(["approvals", "approve", id, "-c", s.file]),
        Bun.sleep(delay).then(async () => {
          const r = await post(running.admin, id, t, "approve");
          return { status: r.status, text: await r.text() };
        }),
      ]);
      const cliWon = byCli.exitCode === 0;
      const pageWon = byPage.status === 200;
      expect([cliWon, pageWon].filter(Boolean)).toHaveLength(1);
      if (cliWon) {
        expect(byCli.stdout).toContain(`${id}: sent: upstream replied 250`);
        expect(byPage.status).toBe(409);
        expect(byPage.text).toMatch(/is being sent|already approved/);
      } else {
        expect(byPage.text).toContain("The message was sent.");
        expect(byCli.stdout).toMatch(/not sent: it is (sending|sent)/);
      }
      winners.push(`${cliWon ? "command" : "page"} (page after ${delay} ms)`);
      expect((await listed(s, id))?.state).toBe("sent");
    }
    const deadline = Date.now() + 20_000;
    while (tokens.some((t) => sinkMessages(t).length < 1) && Date.now() < deadline) await Bun.sleep(100);
    await Bun.sleep(SETTLE_MS);
    expect(tokens.map((t) => sinkMessages(t).length)).toEqual(tokens.map(() => 1));
    console.log(`two approvers, command start-up ${startup} ms; the winners: ${winners.join(", ")}`);
  });

  test("serve expires a message nobody decided: it never arrives", async () => {
    await stop(running);
    const short = await setup("expiry", {
      upstream: { addr: `${up.host}:${up.ports.smtp}`, tls: "starttls" },
      timeout: "2s",
    });
    const r = await start(short);
    try {
      const { id, token } = await hold(short, r.smtpPort, { user: short.sender.user, pass: short.sender.password });
      // Nobody calls approve or deny: the running serve expires it (its check runs every timeout, here 2 s).
      const deadline = Date.now() + 15_000;
      let state: string | undefined;
      while (Date.now() < deadline) {
        state = (await listed(short, id))?.state;
        if (state !== "held") break;
        await Bun.sleep(300);
      }
      expect(state).toBe("expired");
      expect((await auditRowsWhen(short, id, 2)).map((x) => [x.command, x.protocol])).toEqual([
        ["DATA", "smtp"],
        ["APPROVAL EXPIRED", "smtp"],
      ]);
      expect(withStore(short, (store) => store.details(id))).toBeNull();
      const { url } = link(short, r.admin, id);
      const page = await fetch(url);
      expect(page.status).toBe(410);
      expect(await page.text()).toContain("expired before anyone decided");
      const late = await cli(["approvals", "approve", id, "-c", short.file]);
      expect(late.stdout).toContain("not sent: it is expired");
      await expectCopies(token, 0);
    } finally {
      await stop(r);
    }
  });
});

describe("serve stopped during the replay (SIGKILL, SIGTERM)", () => {
  let relay: Relay;
  let s: Setup;
  let auth: Auth;
  beforeAll(async () => {
    const up = upstreams();
    relay = await Relay.start({ host: up.host, port: up.ports.smtp });
    s = await setup("sigkill", { upstream: { addr: `127.0.0.1:${relay.port}`, tls: "none" }, timeout: "1h" });
    auth = { user: s.sender.user, pass: s.sender.password };
  });
  afterAll(() => relay.close());
  const stoppedLine = new RegExp(
    `approvals: 1 decision\\(s\\) still under way after ${SHUTDOWN_GRACE_MS / 1000} s were stopped`,
  );

  /** After the kill, serve starts again: the message needs a check, is never sent again, and deny discards it. */
  async function afterRestart(id: string, token: string, expected: number): Promise<void> {
    const dotsBefore = relay.dotsForwarded;
    // On a new admin port: the killed process's may not be free again yet.
    const restartPort = await freePort();
    writeFileSync(
      s.file,
      configToml(s.dir, {
        upstream: { addr: `127.0.0.1:${relay.port}`, tls: "none" },
        adminPort: restartPort,
        timeout: "1h",
      }),
    );
    const again = await start(s);
    try {
      await again.served.waitForLog(new RegExp(`approval ${id} was being sent when the process stopped`));
      expect(await listed(s, id)).toMatchObject({ state: "needs-check" });
      expect((await auditRowsWhen(s, id, 3)).at(-1)).toMatchObject({
        command: "APPROVAL NEEDS CHECK",
        decision: "error",
      });
      // Neither approver can send it again.
      const byCli = await cli(["approvals", "approve", id, "-c", s.file]);
      expect(byCli.exitCode).toBe(1);
      expect(byCli.stdout).toContain("not sent: it is needs-check");
      const { url, token: t } = link(s, again.admin, id);
      expect((await fetch(url)).status).toBe(409);
      expect((await post(again.admin, id, t, "approve")).status).toBe(409);
      // What reached Postfix is what the relay passed on, and nothing more, however long one waits.
      await expectCopies(token, expected);
      expect(relay.dotsForwarded).toBe(dotsBefore);
      const denied = await cli(["approvals", "deny", id, "-c", s.file]);
      expect(denied.exitCode).toBe(0);
      expect(await listed(s, id)).toMatchObject({ state: "denied" });
      expect(withStore(s, (store) => store.details(id))).toBeNull();
      expectNothingInClear(s, [`body-${token}`, `out-${token}@outside.example`, s.sender.password]);
      await expectCopies(token, expected);
    } finally {
      await stop(again);
    }
  }

  test("serve killed while the final dot is held back (page approval): no copy, needs-check, deny clears", async () => {
    const running = await start(s);
    const { id, token } = await hold(s, running.smtpPort, auth);
    const { token: t } = link(s, running.admin, id);
    const dots = relay.dotsForwarded;
    const held = relay.holdNext("dot");
    const pressed = post(running.admin, id, t, "approve").catch((e: Error) => e);
    await held;
    running.served.proc.kill("SIGKILL");
    await running.served.proc.exited;
    expect(await pressed).toBeInstanceOf(Error); // the page never answered
    expect(relay.dotsForwarded).toBe(dots);
    expect(await listed(s, id)).toMatchObject({ state: "sending" });
    expect(auditRows(s, id).map((r) => r.command)).toEqual(["DATA", "APPROVE"]);
    await afterRestart(id, token, 0);
  });

  test("a page approval whose replay outlasts the listener's idle time gets its answer, sent once", async () => {
    const running = await start(s);
    try {
      const { id, token, raw } = await hold(s, running.smtpPort, auth);
      const { token: t } = link(s, running.admin, id);
      const dots = relay.dotsForwarded;
      const held = relay.holdNext("dot");
      const pressed = post(running.admin, id, t, "approve");
      await held;
      // Postfix answers the final dot only after the admin listener's idle time (ADMIN_IDLE_SECONDS) has passed with
      // nothing sent on the approver's connection.
      await Bun.sleep(ADMIN_IDLE_SECONDS * 1000 + 2000);
      relay.release();
      const answer = await pressed;
      expect(answer.status).toBe(200);
      expect(await answer.text()).toContain("The message was sent.");
      expect(relay.dotsForwarded).toBe(dots + 1);
      expectSameBytes((await expectCopies(token, 1))[0]!, raw);
      expect(await listed(s, id)).toMatchObject({ state: "sent" });
    } finally {
      await stop(running);
    }
  });

  test("SIGTERM while the page's approval is sent: it ends once, answered; a new one refused, link kept", async () => {
    const running = await start(s);
    const first = await hold(s, running.smtpPort, auth);
    const second = await hold(s, running.smtpPort, auth);
    const { token: t1 } = link(s, running.admin, first.id);
    const { token: t2 } = link(s, running.admin, second.id);
    const dots = relay.dotsForwarded;
    const held = relay.holdNext("dot");
    const pressed = post(running.admin, first.id, t1, "approve");
    await held;
    running.served.proc.kill("SIGTERM");
    await running.served.waitForLog(/SIGTERM: shutting down/);
    // A decision asked for once the stop began is refused before its link is used.
    const late = await post(running.admin, second.id, t2, "approve");
    expect(late.status).toBe(503);
    expect(await late.text()).toContain("this link can be used again once the server is back");
    relay.release();
    const answer = await pressed;
    expect(answer.status).toBe(200);
    expect(await answer.text()).toContain("The message was sent.");
    expect(await running.served.proc.exited).toBe(0);
    expect(relay.dotsForwarded).toBe(dots + 1);
    expect(await listed(s, first.id)).toMatchObject({ state: "sent" });
    expect(auditRows(s, first.id).map((r) => r.command)).toEqual(["DATA", "APPROVE", "APPROVAL SENT"]);
    expectSameBytes((await expectCopies(first.token, 1))[0]!, first.raw);
    expect(await listed(s, second.id)).toMatchObject({ state: "held" });
    expect(withStore(s, (store) => store.tokenUsed(second.id))).toBe(false);
    expect(auditRows(s, second.id).map((r) => r.command)).toEqual(["DATA"]);
    await expectCopies(second.token, 0);
    expect((await cli(["approvals", "deny", second.id, "-c", s.file])).exitCode).toBe(0);
  });

  test("SIGTERM with the replay held past the grace: cut off, answered, serve exits, needs-check", async () => {
    const running = await start(s);
    const { id, token } = await hold(s, running.smtpPort, auth);
    const { token: t } = link(s, running.admin, id);
    const dots = relay.dotsForwarded;
    const held = relay.holdNext("dot");
    const pressed = post(running.admin, id, t, "approve");
    await held;
    running.served.proc.kill("SIGTERM");
    const answer = await pressed;
    expect(answer.status).toBe(503);
    expect(await answer.text()).toContain("an administrator must check whether it arrived");
    // Bounded by the grace and the wind-up, not by the 10 minutes an upstream may take to answer a final dot.
    const limit = SHUTDOWN_GRACE_MS + DECISION_WIND_UP_MS + ADMIN_CLOSE_MS + 5000;
    const code = await Promise.race([running.served.proc.exited, Bun.sleep(limit).then(() => null)]);
    expect(code).toBe(0);
    await running.served.waitForLog(new RegExp(`approval ${id}: the replay was cut off at shutdown`));
    await running.served.waitForLog(stoppedLine);
    expect(relay.dotsForwarded).toBe(dots);
    expect(await listed(s, id)).toMatchObject({ state: "sending" });
    expect(auditRows(s, id).map((r) => r.command)).toEqual(["DATA", "APPROVE"]);
    await afterRestart(id, token, 0);
  });

  /** SIGTERM once the relay holds the replay as `mode` says; the page's answer, once serve exited (bounded). */
  async function stoppedWhileHeld(mode: "data" | "greeting"): Promise<{ id: string; token: string; raw: Buffer }> {
    const running = await start(s);
    const message = await hold(s, running.smtpPort, auth);
    const { token: t } = link(s, running.admin, message.id);
    const held = relay.holdNext(mode);
    const pressed = post(running.admin, message.id, t, "approve");
    await held;
    running.served.proc.kill("SIGTERM");
    const answer = await pressed;
    expect(answer.status).toBe(503);
    expect(await answer.text()).toContain(
      "The message was not sent and is still held: the server is shutting down</p><p>This link can be used again",
    );
    const limit = SHUTDOWN_GRACE_MS + DECISION_WIND_UP_MS + ADMIN_CLOSE_MS + 5000;
    const code = await Promise.race([running.served.proc.exited, Bun.sleep(limit).then(() => null)]);
    expect(code).toBe(0);
    await running.served.waitForLog(stoppedLine);
    return message;
  }

  /** Still held with its link unused, and sent once, byte for byte, when approved again. */
  async function stillSendable(message: { id: string; token: string; raw: Buffer }): Promise<void> {
    expect(await listed(s, message.id)).toMatchObject({ state: "held" });
    expect(withStore(s, (store) => store.tokenUsed(message.id))).toBe(false);
    await expectCopies(message.token, 0);
    const again = await cli(["approvals", "approve", message.id, "-c", s.file]);
    expect(again.exitCode).toBe(0);
    expect(await listed(s, message.id)).toMatchObject({ state: "sent" });
    expectSameBytes((await expectCopies(message.token, 1))[0]!, message.raw);
  }

  test("SIGTERM with Postfix's answer to DATA held past the grace: cut before the dot, held, sendable", async () => {
    const dots = relay.dotsForwarded;
    const message = await stoppedWhileHeld("data");
    expect(relay.dotsForwarded).toBe(dots);
    expect(auditRows(s, message.id).map((r) => [r.command, r.decision])).toEqual([
      ["DATA", "ask"],
      ["APPROVE", "allow"],
      ["APPROVE", "error"],
    ]);
    await stillSendable(message);
  });

  test("SIGTERM with Postfix's greeting held past the grace: the login is cut, still held, sendable", async () => {
    const message = await stoppedWhileHeld("greeting");
    expect(auditRows(s, message.id).map((r) => [r.command, r.decision])).toEqual([
      ["DATA", "ask"],
      ["APPROVE", "error"],
    ]);
    await stillSendable(message);
  });

  test("the command killed after Postfix took the dot: exactly one copy, needs-check, deny clears", async () => {
    const running = await start(s);
    const { id, token } = await hold(s, running.smtpPort, auth);
    const dots = relay.dotsForwarded;
    relay.heldReply = "";
    const held = relay.holdNext("reply");
    const approving = spawnCli(["approvals", "approve", id, "-c", s.file]);
    await held;
    expect(relay.heldReply).toMatch(/^250 /);
    approving.kill("SIGKILL");
    expect(await approving.exited).not.toBe(0);
    expect(relay.dotsForwarded).toBe(dots + 1);
    // serve was running all along: the row stays "sending" until serve starts again.
    expect(await listed(s, id)).toMatchObject({ state: "sending" });
    await stop(running);
    await afterRestart(id, token, 1);
  });
});

describe("an OAuth2 vault account", () => {
  const agentToken = `mg_${uniqueToken("approver")}`;
  const auth = { user: "bot", pass: agentToken };
  let up: ReturnType<typeof upstreams>;
  let s: Setup;
  beforeAll(async () => {
    up = upstreams();
    s = await setup("oauth", { upstream: { addr: `${up.host}:${up.ports.smtp}`, tls: "starttls" }, timeout: "1h" });
    // The account is the sender's mailbox, with tokens from the local authorization server.
    const vault = `\n${agentToml("bot", agentToken, "mail")}\n${oauthAccountToml("mail", s.sender.user)}`;
    const upstream = { addr: `${up.host}:${up.ports.smtp}`, tls: "starttls" } as const;
    writeFileSync(s.file, configToml(s.dir, { upstream, adminPort: s.adminPort, timeout: "1h", vault }));
  });

  /** What `mailgator account login` stores: the tokens of an authorization-code flow, and the account marked ok. */
  async function login(): Promise<void> {
    const tokens = await authorizationCodeFlow({ user: s.sender.user });
    expect(tokens.status).toBe(200);
    const state = SealedStore.open(s.statePath, { secretsFile: s.secretsFile, env: {}, create: true })!;
    try {
      storeIssuedTokens(state, "mail", tokens);
    } finally {
      state.close();
    }
  }

  async function issued(kind: "access" | "refresh"): Promise<string[]> {
    const { body } = await control("tokens", { user: s.sender.user }, "GET");
    return (body["tokens"] as { value: string; kind: string }[]).filter((t) => t.kind === kind).map((t) => t.value);
  }

  function stored(): { accessToken: string | null; refreshToken: string | null } {
    const state = SealedStore.open(s.statePath, { secretsFile: s.secretsFile, env: {}, create: false })!;
    try {
      return readTokens(state, "mail")!;
    } finally {
      state.close();
    }
  }

  function postfixLogins(): string[] {
    const log = up.logs["postfix"];
    return (log && existsSync(log) ? readFileSync(log, "utf8") : "")
      .split("\n")
      .filter((l) => l.includes(`sasl_username=${s.sender.user}`));
  }

  test("approve logs in with a fresh token when the cached one is refused; rotation keeps serve working", async () => {
    await login();
    expect((await control("rotation", { user: s.sender.user, on: "true" })).status).toBe(200);
    const running = await start(s);
    try {
      const { id, token, raw } = await hold(s, running.smtpPort, auth);
      // The approver's notice goes out as this account, with the cached token: done before that token stops.
      await waitFor("notices", () => noticesIn(up.sink, id), 1);
      // The cached access token stops working: the command's login is refused once, then it refreshes.
      expect((await control("expire", { user: s.sender.user })).status).toBe(200);
      const accessBefore = await issued("access");
      const refreshBefore = stored().refreshToken;
      const loginsBefore = postfixLogins().length;

      const approved = await cli(["approvals", "approve", id, "-c", s.file]);
      expect(approved.stdout).toMatch(new RegExp(`^${id}: sent: upstream replied 250 `));
      expect(approved.exitCode).toBe(0);
      expectSameBytes((await expectCopies(token, 1))[0]!, raw);
      // One token request, whose rotated refresh token and access token are the ones now stored.
      const accessAfter = await issued("access");
      expect(accessAfter.length).toBe(accessBefore.length + 1);
      const now = stored();
      expect(now.accessToken).toBe(accessAfter.at(-1)!);
      expect(now.refreshToken).not.toBe(refreshBefore);
      expect(
        postfixLogins()
          .slice(loginsBefore)
          .some((l) => /sasl_method=(XOAUTH2|OAUTHBEARER)/.test(l)),
      ).toBe(true);
      expectNothingInClear(s, [now.accessToken!, now.refreshToken!, `body-${token}`]);

      // serve, whose cached token expired too, follows the rotation: the agent still sends.
      const colleague = uniqueToken("oauth-colleague");
      const to = `pat-${colleague}@corp.test`;
      expect(
        await send(running.smtpPort, auth, s.sender.address, to, agentMessage(s.sender.address, to, colleague)),
      ).toMatch(/^250 /);
      await expectCopies(colleague, 1);
    } finally {
      await stop(running);
    }
  });

  test("a notice sent as the OAuth2 account whose cached token the upstream refuses: with a fresh one", async () => {
    await login();
    const running = await start(s);
    try {
      const c = await lineClient(connect({ host: "127.0.0.1", port: running.smtpPort }));
      const say = (line: string) => smtpSay(c, line);
      await c.waitFor(/^220 /m);
      expect(await say("EHLO agent.test")).toMatch(/^250 /);
      // The session logs in upstream with the cached token here; then that token stops working, so the notice,
      // sent as this account once the message is held, has it refused.
      expect(await say(`AUTH PLAIN ${Buffer.from(`\0${auth.user}\0${auth.pass}`).toString("base64")}`)).toMatch(
        /^235 /,
      );
      expect((await control("expire", { user: s.sender.user })).status).toBe(200);
      const accessBefore = await issued("access");
      const token = uniqueToken("notice");
      expect(await say(`MAIL FROM:<${s.sender.address}>`)).toMatch(/^250 /);
      expect(await say(`RCPT TO:<out-${token}@outside.example>`)).toMatch(/^250 /);
      expect(await say("DATA")).toMatch(/^354 /);
      const held = await say(`Subject: notice ${token}\r\n\r\nHello ${token}\r\n.`);
      const id = heldId(held);
      c.close();
      const [notice] = await waitFor("notices", () => noticesIn(up.sink, id), 1);
      expect(notice!.recipient).toBe("boss@corp.test");
      expect((await issued("access")).length).toBe(accessBefore.length + 1);
    } finally {
      await stop(running);
    }
  });

  test("an account that needs re-authorization: not sent, still held, and sent once it is fixed", async () => {
    const running = await start(s);
    try {
      const { id, token } = await hold(s, running.smtpPort, auth);
      expect((await control("revoke", { user: s.sender.user })).status).toBe(200);

      const refused = await cli(["approvals", "approve", id, "-c", s.file]);
      expect(refused.exitCode).toBe(1);
      expect(refused.stdout).toContain(`${id}: not sent, still held: account mail needs re-authorization`);
      expect(refused.stdout).toContain("mailgator account login mail");
      expect(await listed(s, id)).toMatchObject({ state: "held" });
      const status = await cli(["account", "status", "mail", "-c", s.file, "--json"]);
      expect(status.stdout).toContain("needs-reauthorization");

      // The page says so too, and gives the link back.
      const { token: t } = link(s, running.admin, id);
      const page = await post(running.admin, id, t, "approve");
      expect(page.status).toBe(503);
      expect(await page.text()).toContain("needs re-authorization");
      expect(await listed(s, id)).toMatchObject({ state: "held" });
      await expectCopies(token, 0);
      expect(
        (await auditRowsWhen(s, id, 3)).filter((r) => r.command === "APPROVE").map((r) => [r.decision, r.protocol]),
      ).toEqual([
        ["error", "cli"],
        ["error", "smtp"],
      ]);

      // The owner logs in again; the same link now sends it, once.
      await login();
      const ok = await post(running.admin, id, t, "approve");
      expect(ok.status).toBe(200);
      expect(await ok.text()).toContain("The message was sent.");
      await expectCopies(token, 1);
      expect(await listed(s, id)).toMatchObject({ state: "sent" });
    } finally {
      await stop(running);
    }
  });

  test("SIGTERM while a page approval waits past the grace for a fresh token: its row written, held", async () => {
    await login();
    const running = await start(s);
    const user = s.sender.user;
    const refreshes = async (): Promise<number> => {
      const { body } = await control("counters", {}, "GET");
      return (
        (body as { tokenByUser: Record<string, Record<string, number>> }).tokenByUser[user]?.["refresh_token"] ?? 0
      );
    };
    try {
      const { id, token } = await hold(s, running.smtpPort, auth);
      // The approver's notice goes out with the cached token, before that token stops working.
      await waitFor("notices", () => noticesIn(up.sink, id), 1);
      // The approval's login has the cached token refused, then asks for a fresh one, whose answer comes after the
      // grace and the wind-up (within the token request's own timeout).
      expect((await control("expire", { user })).status).toBe(200);
      const delay = SHUTDOWN_GRACE_MS + DECISION_WIND_UP_MS + 1000;
      expect((await control("delay", { ms: String(delay), user })).status).toBe(200);
      const before = await refreshes();
      const { token: t } = link(s, running.admin, id);
      // The admin listener closes before this decision ends: no answer.
      const pressed = post(running.admin, id, t, "approve").catch(() => null);
      for (let i = 0; i < 200 && (await refreshes()) === before; i++) await Bun.sleep(50);
      expect(await refreshes()).toBe(before + 1);
      await stopServed(running.served);
      await pressed;
      // The decision's row is in the log, and the message is held, its link unused.
      const approve = auditRows(s, id).filter((r) => r.command === "APPROVE");
      expect(approve.map((r) => r.decision)).toEqual(["error"]);
      expect(await listed(s, id)).toMatchObject({ state: "held" });
      await expectCopies(token, 0);
    } finally {
      expect((await control("delay", { ms: "0", user })).status).toBe(200);
      if (running.served.proc.exitCode === null) await stop(running);
    }
  }, 60_000);
});
