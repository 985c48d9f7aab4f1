/**
 * Quotas and max_sessions_per_agent under concurrency, through the real `mailgator serve` against Postfix and
 * Dovecot (docs/quotas.md, docs/config.md "[limits]"): many sessions of one login sending or fetching at once when
 * one unit is left get exactly one through; many logins at once get exactly the limit's places, and those refused,
 * or ended in the middle of their login, leak none.
 */
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runCli, type Served, serveChild } from "../e2e/serve-child.ts";
import { createMailbox, proxyListeners, sinkMessages, type TestMailbox, uniqueToken } from "../fixtures/index.ts";
import { RawImap, statusOf } from "../imap/helpers.ts";
import { loggedIn, marker, RawClient, upstreams as smtpUpstreams, startTestProxy } from "../smtp/helpers.ts";

setDefaultTimeout(120_000);

const SESSIONS = 8;
const SENDS_PER_HOUR = 3;
const READS_PER_MINUTE = 4;

let dir: string;
let config: string;
let sender: TestMailbox;
let reader: TestMailbox;
let sessions: TestMailbox;
let served: Served;

beforeAll(async () => {
  sender = await createMailbox();
  reader = await createMailbox({ seed: { folders: { INBOX: 12 } } });
  sessions = await createMailbox();
  dir = mkdtempSync(join(tmpdir(), "mg-quota-race-"));
  config = join(dir, "mailgator.toml");
  writeFileSync(
    config,
    `${proxyListeners()}
[audit]
path = "${join(dir, "audit.db")}"

[limits]
max_sessions_per_agent = ${SESSIONS}

[[rules]]
name = "everything"
action = "allow"

[[quotas]]
name = "sends"
agents = ["${sender.user}"]
sends_per_hour = ${SENDS_PER_HOUR}

[[quotas]]
name = "reads"
agents = ["${reader.user}"]
reads_per_minute = ${READS_PER_MINUTE}
`,
  );
  served = serveChild(config);
});

afterAll(async () => {
  if (served.proc.exitCode === null) {
    served.proc.kill("SIGTERM");
    await served.proc.exited;
  }
  rmSync(dir, { recursive: true, force: true });
});

function plain(user: string, password: string): string {
  return Buffer.from(`\0${user}\0${password}`).toString("base64");
}

async function smtpLogin(port: number, m: TestMailbox): Promise<RawClient> {
  const c = await RawClient.connect(port);
  await c.reply();
  await c.command("EHLO race.test");
  const r = await c.command(`AUTH PLAIN ${plain(m.user, m.password)}`);
  expect(r.code).toBe(235);
  return c;
}

test("SMTP: sessions of one login ending DATA at once with one send left: exactly one is sent", async () => {
  const port = await served.port("SMTP");
  // All but one of the hour's sends used, one after the other.
  const first = await smtpLogin(port, sender);
  for (let i = 1; i < SENDS_PER_HOUR; i++) {
    expect((await first.command(`MAIL FROM:<${sender.user}>`)).code).toBe(250);
    expect((await first.command(`RCPT TO:<${uniqueToken("pre")}@corp.test>`)).code).toBe(250);
    expect((await first.command("DATA")).code).toBe(354);
    first.write(`From: <${sender.user}>\r\nSubject: pre ${i}\r\n\r\nbefore the race\r\n.\r\n`);
    expect((await first.reply()).code).toBe(250);
  }
  await first.command("QUIT");
  // Each session is ready to end its DATA; every final dot then goes out in the same tick.
  const token = uniqueToken("race");
  const clients = await Promise.all(Array.from({ length: SESSIONS }, () => smtpLogin(port, sender)));
  for (const [i, c] of clients.entries()) {
    expect((await c.command(`MAIL FROM:<${sender.user}>`)).code).toBe(250);
    expect((await c.command(`RCPT TO:<${token}-${i}@corp.test>`)).code).toBe(250);
    expect((await c.command("DATA")).code).toBe(354);
    c.write(`From: <${sender.user}>\r\nSubject: ${token} ${i}\r\n\r\nraced\r\n`);
  }
  for (const c of clients) c.write(".\r\n");
  const replies = await Promise.all(clients.map((c) => c.reply(30_000)));
  const codes = replies.map((r) => r.code).sort();
  expect(codes).toEqual([250, ...Array(SESSIONS - 1).fill(452)]);
  for (const c of clients) await c.command("QUIT");
  await Bun.sleep(2000);
  expect(sinkMessages(token).length).toBe(1);
});

test("IMAP: sessions of one login fetching at once with one read left: exactly one FETCH is answered", async () => {
  const port = await served.port("IMAP");
  const clients = await Promise.all(Array.from({ length: SESSIONS }, () => RawImap.login(port, reader)));
  for (const c of clients) expect(await c.command("s", "SELECT INBOX")).toContain("s OK");
  // A listing (not counted), a FETCH of no message (not counted), then all but one read of the minute.
  expect(await clients[0]!.command("l", "FETCH 1:* (FLAGS ENVELOPE)")).toContain("l OK");
  expect(await clients[0]!.command("z", "UID FETCH 999999 (BODY.PEEK[])")).toContain("z OK");
  expect(await clients[0]!.command("p", `FETCH 1:${READS_PER_MINUTE - 1} (BODY.PEEK[HEADER])`)).toContain("p OK");
  for (const [i, c] of clients.entries()) c.write(`r FETCH ${i + 1} (BODY.PEEK[])\r\n`);
  const replies = await Promise.all(clients.map((c) => c.waitTagged("r")));
  const statuses = replies.map((r) => statusOf(r, "r").slice(0, 4)).sort();
  expect(statuses).toEqual(["r NO", "r NO", "r NO", "r NO", "r NO", "r NO", "r NO", "r OK"]);
  for (const r of replies) if (statusOf(r, "r").startsWith("r NO")) expect(r).not.toContain("FETCH (");
  for (const c of clients) await c.command("o", "LOGOUT");
});

async function imapLoginStatus(port: number, m: TestMailbox): Promise<{ ok: boolean; client: RawImap }> {
  const client = await RawImap.open(port);
  client.write(`L LOGIN "${m.user}" "${m.password}"\r\n`);
  const text = await client.readUntil((b) => /(^|\r\n)L (OK|NO|BAD)/.test(b) || b.includes("* BYE"), 30_000);
  return { ok: /(^|\r\n)L OK/.test(text), client };
}

async function smtpLoginStatus(port: number, m: TestMailbox): Promise<{ ok: boolean; client: RawClient }> {
  const client = await RawClient.connect(port);
  await client.reply();
  await client.command("EHLO race.test");
  const r = await client.command(`AUTH PLAIN ${plain(m.user, m.password)}`);
  return { ok: r.code === 235, client };
}

test("max_sessions_per_agent: logins at once get exactly the limit's places; the refused leak none", async () => {
  for (const [name, open] of [
    ["IMAP", imapLoginStatus],
    ["SMTP", smtpLoginStatus],
  ] as const) {
    const port = await served.port(name);
    const first = await Promise.all(Array.from({ length: SESSIONS * 3 }, () => open(port, sessions)));
    expect(first.filter((r) => r.ok).length).toBe(SESSIONS);
    for (const r of first) r.client.close();
    await Bun.sleep(500);
    // Every place is back: as many again log in, and not one more.
    const second = await Promise.all(Array.from({ length: SESSIONS + 2 }, () => open(port, sessions)));
    expect(second.filter((r) => r.ok).length).toBe(SESSIONS);
    for (const r of second) r.client.close();
    await Bun.sleep(500);
  }
});

test("max_sessions_per_agent: sessions cut in the middle of their login give their place back", async () => {
  for (const name of ["IMAP", "SMTP"] as const) {
    const port = await served.port(name);
    // Each connection sends its login and is cut at once, at a different moment of the upstream login.
    await Promise.all(
      Array.from(
        { length: SESSIONS * 4 },
        (_, i) =>
          new Promise<void>((resolve) => {
            const s = connect({ host: "127.0.0.1", port }, () => {
              if (name === "IMAP") s.write(`L LOGIN "${sessions.user}" "${sessions.password}"\r\n`);
              else s.write(`EHLO cut.test\r\nAUTH PLAIN ${plain(sessions.user, sessions.password)}\r\n`);
              setTimeout(() => s.destroy(), (i % 8) * 15);
            });
            s.on("error", () => {});
            s.on("close", () => resolve());
          }),
      ),
    );
    await Bun.sleep(2500);
    const open = name === "IMAP" ? imapLoginStatus : smtpLoginStatus;
    const after = await Promise.all(Array.from({ length: SESSIONS }, () => open(port, sessions)));
    expect(after.filter((r) => r.ok).length).toBe(SESSIONS);
    for (const r of after) r.client.close();
    await Bun.sleep(500);
  }
});

test("the charges are in the state database: explain shows them", () => {
  const r = runCli(["explain", "-c", config, "--op", "send", "--to", "x@corp.test", "--json", "--agent", sender.user]);
  expect(r.exitCode).toBe(0);
  const quotas = JSON.parse(r.stdout.trim()).quotas as { quota: string; limits: { limit: string; used: number }[] }[];
  expect(quotas.find((q) => q.quota === "sends")!.limits[0]!.used).toBe(SENDS_PER_HOUR);
});

test("held for approval: DATA ended at once with one send left holds one; the others' places come back", async () => {
  const proxy = await startTestProxy({
    approvals: true,
    upstreamTls: "none",
    rules: `
[approvals]
base_url = "http://127.0.0.1:1"

[approvals.groups.managers]
recipients = ["boss@corp.test"]

[[rules]]
name = "every send waits"
action = "ask"
operations = ["send"]
ask_groups = ["managers"]

[[quotas]]
name = "two"
sends_per_hour = 2
`,
  });
  try {
    const user = smtpUpstreams().users[0]!;
    const clients = await Promise.all(Array.from({ length: SESSIONS }, () => loggedIn(proxy.port, user)));
    const dataOf = (c: RawClient, m: string) => async () => {
      expect((await c.command(`MAIL FROM:<${user.user}>`)).code).toBe(250);
      expect((await c.command(`RCPT TO:<${m}@outside.example>`)).code).toBe(250);
      expect((await c.command("DATA")).code).toBe(354);
      c.write(`From: <${user.user}>\r\nSubject: ${m}\r\n\r\nheld\r\n`);
    };
    await dataOf(clients[0]!, marker())();
    clients[0]!.write(".\r\n");
    expect((await clients[0]!.reply()).code).toBe(250);
    for (const c of clients) await dataOf(c, marker())();
    for (const c of clients) c.write(".\r\n");
    const codes = (await Promise.all(clients.map((c) => c.reply(30_000)))).map((r) => r.code).sort();
    expect(codes).toEqual([250, ...Array(SESSIONS - 1).fill(452)]);
    expect(proxy.approvals!.heldCount(user.user)).toBe(2);
    // No place of the refused ones is still taken: a third place is there under a limit of three.
    const place = proxy.approvals!.reservePlace(user.user, 3);
    expect(place).not.toBeNull();
    place!();
    for (const c of clients) await c.command("QUIT");
  } finally {
    await proxy.close();
  }
});
