/**
 * `mailgator serve` as it ships: the executable `npm run build` makes, copied alone into an empty folder and run
 * there with neither Bun nor node_modules, in front of the real Dovecot and Postfix. Everything the source tests
 * check of serve runs here once more inside the binary, with real clients: the IMAP proxy behind an implicit-TLS
 * listener (node:tls) with COMPRESS=DEFLATE (zlib), the SMTP proxy behind STARTTLS, the audit log (bun:sqlite), the
 * state database and an approval notice, the admin listener (Bun.serve: /healthz, /metrics, the approval page), a
 * reload on SIGHUP, and `mailgator audit` reading back the decisions.
 */

import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { ImapFlow } from "imapflow";
import nodemailer from "nodemailer";
import { freePort } from "../../scripts/upstreams/ports.ts";
import { folderPath } from "../../scripts/upstreams/users.ts";
import { ALONE_ENV, buildAlone } from "../fixtures/compiled.ts";
import {
  createMailbox,
  heldId,
  imapListener,
  mailboxMessages,
  sinkMessages,
  smtpListener,
  type TestMailbox,
  uniqueToken,
  upstreams,
  waitForDelivery,
} from "../fixtures/index.ts";
import { tempRoot } from "../fixtures/temp.ts";
import { proxyClient, RawImap, statusOf } from "../imap/helpers.ts";
import { noticesIn, waitFor } from "../smtp/notice-reader.ts";
import { accountToml, agentToml, serveConfig } from "./config.ts";
import { runCli, type Served, serveChild, stopServed } from "./serve-child.ts";

setDefaultTimeout(60_000);

const TMP = tempRoot("mg-compiled-serve-");
const AGENT = "assistant";
const TOKEN = "mgt_compiled_0123456789abcdef0123456789abcdef";
/** Long enough for a copy that should not arrive to have arrived. */
const SETTLE_MS = 1500;

/** The test CA's server certificate (CN localhost, IP 127.0.0.1), which the agents' clients trust. */
function listenTls(mode: "tls" | "starttls"): string {
  const tls = join(upstreams().dir, "tls");
  const files = `tls_cert_file = "${join(tls, "server.pem")}"\ntls_key_file = "${join(tls, "server.key")}"\n`;
  return `listen_tls = "${mode}"\n${files}`;
}

/** Read INBOX and `folders`; send to `friend` at once and to corp.test after a manager's approval; deny the rest. */
function rules(folders: readonly string[], friend: string): string {
  return `
[[rules]]
name = "read"
folders = ${JSON.stringify(folders)}
action = "allow"
operations = ["read"]

[[rules]]
name = "friend"
to = "${friend}"
action = "allow"
operations = ["send"]

[[rules]]
name = "corp asks"
to = "*@corp.test"
action = "ask"
operations = ["send"]
ask_groups = ["managers"]

[[rules]]
name = "rest"
action = "deny"
`;
}

let alone: string;
let file: string;
let owner: TestMailbox;
let friend: TestMailbox;
let approver: TestMailbox;
let served: Served;
let admin: string;
let imapPort: number;
let smtpPort: number;
/** Writes the config with `folders` readable besides INBOX. */
let writeConfig: (folders: readonly string[]) => void;

beforeAll(async () => {
  alone = buildAlone(TMP);
  [owner, friend, approver] = await Promise.all([
    createMailbox({ name: "compiled-owner", seed: { folders: { INBOX: 3, Archive: 2, Junk: 1 }, seed: 7 } }),
    createMailbox({ name: "compiled-friend" }),
    createMailbox({ name: "compiled-approver" }),
  ]);
  const adminPort = await freePort();
  file = join(TMP, "mailgator.toml");
  const listeners = `${imapListener()}${listenTls("tls")}\n${smtpListener()}${listenTls("starttls")}`;
  const base = serveConfig({
    listeners,
    dir: TMP,
    adminPort,
    approvals: { notifyAccount: "approvals", managers: [approver.address] },
  });
  const vault = `${accountToml("main", owner)}${accountToml("approvals", approver)}${agentToml(AGENT, TOKEN, "main")}`;
  // 0600, as a config holding the accounts' passwords should be: one others may read draws a warning at each load.
  writeConfig = (folders) =>
    writeFileSync(file, `${base}\n${vault}${rules(["INBOX", ...folders], friend.address)}`, { mode: 0o600 });
  writeConfig(["Archive"]);
  served = serveChild(file, "pretty", ALONE_ENV, { command: ["./mailgator"], cwd: alone });
  imapPort = await served.port("IMAP");
  smtpPort = await served.port("SMTP");
  const line = await served.waitForLog(/admin listening on http:\/\/127\.0\.0\.1:\d+/);
  admin = `http://127.0.0.1:${/127\.0\.0\.1:(\d+)/.exec(line)![1]}`;
});

afterAll(async () => {
  if (served === undefined) return;
  if (served.proc.exitCode === null) served.proc.kill("SIGTERM");
  await served.proc.exited;
});

/** imapflow as the agent over the implicit-TLS listener; it turns COMPRESS=DEFLATE on when offered. */
function agentImap(): Promise<ImapFlow> {
  return proxyClient(imapPort, AGENT, TOKEN, "tls");
}

async function folders(client: ImapFlow): Promise<string[]> {
  return (await client.list()).map((f) => f.path).sort();
}

/** nodemailer as the agent, STARTTLS required, trusting the test CA. */
function agentSmtp() {
  return nodemailer.createTransport({
    host: "127.0.0.1",
    port: smtpPort,
    secure: false,
    requireTLS: true,
    tls: { ca: readFileSync(upstreams().caFile), servername: "localhost" },
    auth: { user: AGENT, pass: TOKEN },
  });
}

/** The fields of an audit row (docs/audit.md "Schema") the test reads. */
interface Row {
  readonly agent: string | null;
  readonly protocol: string;
  readonly command: string;
  readonly folder: string | null;
  readonly target: string | null;
  readonly decision: string;
  readonly rule: string | null;
  readonly configRevision: string;
}

/** The value of the metric line `name` (with its labels) in the Prometheus text `metrics`; NaN when there is none. */
function counter(metrics: string, name: string): number {
  const line = metrics.split("\n").find((l) => l.startsWith(`${name} `));
  return Number(line?.slice(name.length + 1));
}

/** `./mailgator audit -c FILE --json` run alone, as an operator reads the log. */
function auditRows(): Row[] {
  const r = runCli(["audit", "-c", file, "--json", "--limit", "1000"], ALONE_ENV, {
    command: ["./mailgator"],
    cwd: alone,
  });
  expect(r.stderr).toBe("");
  expect(r.exitCode).toBe(0);
  return r.stdout
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as Row);
}

describe("the compiled binary serves", () => {
  test("IMAP over TLS, COMPRESS=DEFLATE: token login, allowed folders, a message read, a STORE refused", async () => {
    const client = await agentImap();
    try {
      expect((client as unknown as { _deflate?: unknown })._deflate).toBeTruthy();
      expect(await folders(client)).toEqual(["Archive", "INBOX"]);
      await client.mailboxOpen("INBOX");
      const first = owner.manifest.folders["INBOX"]![0]!;
      const message = await client.fetchOne(String(first.uid), { envelope: true, source: true }, { uid: true });
      expect(message && message.envelope?.subject).toBe(first.subject);
      expect(message && message.source?.toString()).toContain(first.messageId);
      await expect(client.mailboxOpen("Junk")).rejects.toThrow();
    } finally {
      await client.logout();
    }
    const raw = await RawImap.open(imapPort, { tls: true });
    try {
      expect(statusOf(await raw.command("L", `LOGIN ${AGENT} ${TOKEN}`), "L")).toStartWith("L OK");
      expect(statusOf(await raw.command("S", "SELECT INBOX"), "S")).toStartWith("S OK");
      expect(statusOf(await raw.command("F", "UID STORE 1:* +FLAGS (\\Flagged)"), "F")).toStartWith("F NO");
    } finally {
      raw.socket.destroy();
    }
  });

  test("SMTP over STARTTLS: an allowed send is delivered, one with a denied recipient is refused whole", async () => {
    const transport = agentSmtp();
    const sent = uniqueToken("binsent");
    await transport.sendMail({ from: owner.address, to: friend.address, subject: sent, text: "allowed\n" });
    expect((await waitForDelivery(friend, sent)).length).toBe(1);
    const refused = uniqueToken("binrefused");
    await expect(
      transport.sendMail({
        from: owner.address,
        to: [friend.address, `${refused}@elsewhere.example`],
        subject: refused,
        text: "refused\n",
      }),
    ).rejects.toMatchObject({ responseCode: 554 });
    await Bun.sleep(SETTLE_MS);
    expect(mailboxMessages(friend, refused)).toEqual([]);
    expect(sinkMessages(refused)).toEqual([]);
    transport.close();
  });

  test("a send that asks is held, its approver told, its page served; /healthz and /metrics answer", async () => {
    const transport = agentSmtp();
    const subject = uniqueToken("binheld");
    const info = await transport.sendMail({
      from: owner.address,
      to: `${subject}@corp.test`,
      subject,
      text: "held\n",
    });
    transport.close();
    const id = heldId(info.response);
    const [notice] = await waitFor("notices", () => noticesIn(folderPath(approver.maildir, "INBOX"), id), 1);
    const link = new RegExp(`http://127\\.0\\.0\\.1:\\d+/approvals/${id}\\?t=\\S+`).exec(notice!.body)?.[0];
    expect(link).toBeDefined();
    const page = await fetch(link!);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain(subject);
    await Bun.sleep(SETTLE_MS);
    expect(sinkMessages(subject)).toEqual([]);

    const health = await fetch(`${admin}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: "ok" });
    const metrics = await (await fetch(`${admin}/metrics`)).text();
    expect(counter(metrics, "mailgator_approvals_held")).toBe(1);
    expect(counter(metrics, "mailgator_audit_healthy")).toBe(1);
    for (const [protocol, operation, decision] of [
      ["imap", "mail:read", "allow"],
      ["imap", "mail:flag", "deny"],
      ["smtp", "mail:send", "allow"],
      ["smtp", "mail:send", "deny"],
      ["smtp", "mail:send", "ask"],
    ]) {
      const name = `mailgator_decisions_total{protocol="${protocol}",operation="${operation}",decision="${decision}"}`;
      expect(counter(metrics, name)).toBeGreaterThan(0);
    }
  });

  test("SIGHUP with Archive taken out of the rules: it is gone from LIST", async () => {
    writeConfig([]);
    const mark = served.logs().length;
    process.kill(served.proc.pid, "SIGHUP");
    expect(await served.waitForLog(/reloaded |reload failed/, mark)).toContain("reloaded ");
    const client = await agentImap();
    try {
      expect(await folders(client)).toEqual(["INBOX"]);
    } finally {
      await client.logout();
    }
  });

  test("SIGTERM: serve closes and exits 0, having logged no warning or error", async () => {
    await stopServed(served);
    const lines = served
      .logs()
      .split("\n")
      .filter((l) => l !== "");
    expect(lines.filter((l) => !/^\S+ info \[/.test(l))).toEqual([]);
  });

  test("`mailgator audit` of the binary lists these decisions", () => {
    const rows = auditRows();
    const has = (p: Partial<Row>) => expect(rows).toContainEqual(expect.objectContaining(p));
    has({ protocol: "imap", command: "LOGIN", decision: "allow", agent: AGENT });
    has({ protocol: "imap", command: "SELECT", decision: "allow", rule: "read", folder: "INBOX" });
    has({ protocol: "imap", command: "UID FETCH", decision: "allow", rule: "read", folder: "INBOX" });
    has({ protocol: "imap", command: "SELECT", decision: "deny", rule: "rest", folder: "Junk" });
    has({ protocol: "imap", command: "UID STORE", decision: "deny", rule: "rest", folder: "INBOX" });
    has({ protocol: "smtp", command: "RCPT TO", decision: "allow", rule: "friend", target: friend.address });
    has({ protocol: "smtp", command: "RCPT TO", decision: "deny", rule: "rest" });
    has({ protocol: "smtp", command: "DATA", decision: "ask", rule: "corp asks" });
    has({ protocol: "smtp", command: "APPROVAL NOTIFIED", decision: "ask" });
    has({ protocol: "smtp", command: "APPROVAL VIEWED", decision: "ask" });
    // A reload writes no row of its own: the rows after it carry the new config revision.
    const lists = rows.filter((r) => r.command === "LIST" && r.target === "*");
    expect(new Set(lists.map((r) => r.configRevision)).size).toBe(2);
  });
});
