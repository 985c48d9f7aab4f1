/**
 * The admin listener of a real `mailgator serve` process (docs/operations.md "Health and metrics"): /healthz and
 * /metrics scraped over HTTP while IMAP and SMTP traffic passes to the test Dovecot and Postfix; refusals at the
 * `[limits]` counted; 503 while the proxies close and while the audit log cannot be written (a full tmpfs, as in
 * tests/e2e/audit-full-disk.test.ts; mounting needs root, as `npm test` runs here and in CI).
 */
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import nodemailer from "nodemailer";
import { ADMIN_CLOSE_MS } from "../../src/admin/server.ts";
import { cleanExit } from "../e2e/serve-child.ts";
import { createMailbox, sinkRecipients, smtpListener, uniqueToken, upstreams } from "../fixtures/index.ts";
import { tempRoot } from "../fixtures/temp.ts";
import { RawImap, statusOf } from "../imap/helpers.ts";

/** Every folder this file makes is in here, removed after its tests. */
const TMP = tempRoot("mg-admin-");

setDefaultTimeout(60_000);
const MAIN = join(import.meta.dir, "../../src/cli/main.ts");

interface Served {
  readonly proc: ReturnType<typeof Bun.spawn>;
  readonly logs: () => string;
  readonly imap: number;
  readonly smtp: number;
  readonly admin: string;
}

const running: Served[] = [];
afterAll(async () => {
  for (const s of running) if (s.proc.exitCode === null) s.proc.kill("SIGKILL");
});

function configFile(extra: string, auditPath?: string): string {
  const up = upstreams();
  const dir = mkdtempSync(join(TMP, "mg-admin-"));
  const file = join(dir, "mailgator.toml");
  writeFileSync(
    file,
    `[imap]
listen_addr = "127.0.0.1:0"
upstream_addr = "${up.host}:${up.ports.imap}"
upstream_tls = "starttls"
upstream_ca_file = "${up.caFile}"

${smtpListener()}identities = ["me@corp.test"]

[audit]
path = "${auditPath ?? join(dir, "audit.db")}"

[admin]
listen_addr = "127.0.0.1:0"

[[rules]]
name = "Inbox"
folders = "INBOX"
operations = ["read"]
action = "allow"

[[rules]]
name = "Colleagues"
to = "*@corp.test"
operations = ["send"]
action = "allow"

[[rules]]
name = "Deny everything else"
action = "deny"
${extra}`,
  );
  return file;
}

async function serve(config: string): Promise<Served> {
  const proc = Bun.spawn([process.execPath, MAIN, "serve", "-c", config], { stderr: "pipe", stdout: "pipe" });
  let text = "";
  void (async () => {
    const reader = (proc.stderr as ReadableStream<Uint8Array>).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      text += new TextDecoder().decode(value);
    }
  })();
  for (let i = 0; i < 400 && proc.exitCode === null && !text.includes("admin listening on"); i++) await Bun.sleep(50);
  const port = (re: RegExp): number => {
    const m = re.exec(text);
    if (m === null) throw new Error(`serve did not report ${re}:\n${text}`);
    return Number(m[1]);
  };
  const served: Served = {
    proc,
    logs: () => text,
    imap: port(/IMAP proxy listening on 127\.0\.0\.1:(\d+)/),
    smtp: port(/SMTP proxy listening on 127\.0\.0\.1:(\d+)/),
    admin: `http://127.0.0.1:${port(/admin listening on http:\/\/127\.0\.0\.1:(\d+)/)}`,
  };
  running.push(served);
  return served;
}

/** Every sample of a scrape, by its series (`name{labels}`). */
async function scrape(served: Served): Promise<Map<string, number>> {
  const res = await fetch(`${served.admin}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toStartWith("text/plain; version=0.0.4");
  const out = new Map<string, number>();
  for (const line of (await res.text()).split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

/** Scrapes until no audit row is queued (rows reach the disk within the log's batch time). */
async function settled(served: Served): Promise<Map<string, number>> {
  for (let i = 0; i < 100; i++) {
    const m = await scrape(served);
    if (m.get("mailgator_audit_rows_queued") === 0 && (m.get('mailgator_sessions_open{protocol="imap"}') ?? 0) === 0)
      if ((m.get('mailgator_sessions_open{protocol="smtp"}') ?? 0) === 0) return m;
    await Bun.sleep(50);
  }
  throw new Error("rows stay queued or sessions open");
}

/** Series whose value changed between two scrapes, with the change (histogram buckets left out). */
function deltas(before: Map<string, number>, after: Map<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of after) {
    if (k.includes("_bucket{") || k.includes("_sum")) continue;
    const d = v - (before.get(k) ?? 0);
    if (d !== 0) out[k] = d;
  }
  return out;
}

async function health(served: Served): Promise<{ status: number; body: { status: string; problems: string[] } }> {
  const res = await fetch(`${served.admin}/healthz`);
  return { status: res.status, body: (await res.json()) as { status: string; problems: string[] } };
}

test("/healthz is 200 with both proxies up; /metrics counts a known IMAP and SMTP sequence exactly", async () => {
  const served = await serve(configFile(""));
  try {
    const h = await health(served);
    expect(h.status).toBe(200);
    expect(h.body).toEqual({
      status: "ok",
      checks: { imap_listening: true, smtp_listening: true, audit_writable: true },
      problems: [],
    } as never);

    const mailbox = await createMailbox({ seed: { folders: { INBOX: 2 } } });
    const before = await settled(served);
    // IMAP: a login, a SELECT the rules allow, one they deny, LOGOUT.
    const imap = await RawImap.open(served.imap);
    expect(statusOf(await imap.command("a1", `LOGIN "${mailbox.user}" "${mailbox.password}"`), "a1")).toStartWith(
      "a1 OK",
    );
    expect(statusOf(await imap.command("a2", "SELECT INBOX"), "a2")).toStartWith("a2 OK");
    expect(statusOf(await imap.command("a3", "SELECT Junk"), "a3")).toStartWith("a3 NO");
    await imap.command("a4", "LOGOUT");
    imap.close();
    // SMTP: one message to an allowed recipient, one to a denied one, in one session.
    const token = uniqueToken("admin");
    const transport = nodemailer.createTransport({
      host: "127.0.0.1",
      port: served.smtp,
      secure: false,
      ignoreTLS: true,
      auth: { user: mailbox.user, pass: mailbox.password },
    });
    await transport.sendMail({ from: "me@corp.test", to: `${token}@corp.test`, subject: token, text: "hi" });
    const refused = await transport
      .sendMail({ from: "me@corp.test", to: `${token}@evil.test`, subject: token, text: "no" })
      .catch((e: Error) => e);
    expect(String(refused)).toContain("5.7.1");
    transport.close();
    expect(await sinkRecipients(token)).toEqual([`${token}@corp.test`]);

    const after = await settled(served);
    const d = deltas(before, after);
    const up = upstreams();
    // The audit rows of this sequence: IMAP LOGIN (no operation), SELECT INBOX allowed, SELECT Junk denied; SMTP
    // (nodemailer opens a connection per message) AUTH twice; the first message's MAIL FROM, RCPT TO, DATA and
    // Postfix's 250 for it allowed; the second message's RCPT TO denied and its DATA refused.
    expect(d).toEqual({
      'mailgator_connections_total{protocol="imap"}': 1,
      'mailgator_connections_total{protocol="smtp"}': 2,
      'mailgator_decisions_total{protocol="imap",operation="none",decision="allow"}': 1,
      'mailgator_decisions_total{protocol="imap",operation="folder:read",decision="allow"}': 1,
      'mailgator_decisions_total{protocol="imap",operation="folder:read",decision="deny"}': 1,
      'mailgator_decisions_total{protocol="smtp",operation="none",decision="allow"}': 2,
      'mailgator_decisions_total{protocol="smtp",operation="mail:send",decision="allow"}': 4,
      'mailgator_decisions_total{protocol="smtp",operation="mail:send",decision="deny"}': 2,
      [`mailgator_upstream_connect_seconds_count{upstream="127.0.0.1:${up.ports.imap}"}`]: 1,
      [`mailgator_upstream_connect_seconds_count{upstream="127.0.0.1:${up.ports.smtp}"}`]: 2,
      mailgator_audit_rows_written_total: 11,
    });
    // Both sessions are over: the gauges are back where they were.
    expect(after.get('mailgator_sessions_open{protocol="imap"}')).toBe(0);
    expect(after.get('mailgator_sessions_open{protocol="smtp"}')).toBe(0);
  } finally {
    served.proc.kill("SIGTERM");
  }
  await cleanExit(served);
});

test("a connection over max_connections_per_ip and a login over max_sessions_per_agent: counted by limit", async () => {
  const served = await serve(configFile("\n[limits.imap]\nmax_connections_per_ip = 2\nmax_sessions_per_agent = 1\n"));
  try {
    const mailbox = await createMailbox();
    const before = await settled(served);
    const first = await RawImap.open(served.imap);
    expect(statusOf(await first.command("a1", `LOGIN "${mailbox.user}" "${mailbox.password}"`), "a1")).toStartWith(
      "a1 OK",
    );
    // The second session of the same login: over max_sessions_per_agent (1).
    const second = await RawImap.open(served.imap);
    second.write(`b1 LOGIN "${mailbox.user}" "${mailbox.password}"\r\n`);
    expect(await second.readUntil((b) => b.includes("\r\n"))).toContain("* BYE [LIMIT]");
    // The first is still open, the second may still be closing: a third connection is one past the limit (2) or
    // at it; wait for the second to be gone so the fourth is exactly one past.
    second.close();
    const third = await RawImap.open(served.imap);
    for (let i = 0; i < 500; i++) {
      const m = await scrape(served);
      if (m.get('mailgator_sessions_open{protocol="imap"}') === 2) break;
      await Bun.sleep(20);
    }
    // The listener answers the connection over the limit with BYE instead of a greeting.
    const fourth = RawImap.fromSocket(
      await new Promise<Socket>((resolve) => {
        const s = connect({ host: "127.0.0.1", port: served.imap }, () => resolve(s));
      }),
    );
    expect(await fourth.readUntil((b) => b.includes("\r\n"))).toStartWith("* BYE [LIMIT]");
    third.close();
    first.close();
    fourth.close();
    const d = deltas(before, await settled(served));
    expect(d['mailgator_limit_refusals_total{protocol="imap",limit="max_sessions_per_agent"}']).toBe(1);
    expect(d['mailgator_limit_refusals_total{protocol="imap",limit="max_connections_per_ip"}']).toBe(1);
    expect(d['mailgator_limit_refusals_total{protocol="imap",limit="max_connections"}']).toBeUndefined();
    expect(d['mailgator_connections_total{protocol="imap"}']).toBe(3);
  } finally {
    served.proc.kill("SIGTERM");
  }
  await cleanExit(served);
});

test("/healthz is 503 while the proxies close (an agent that never hangs up holds them open)", async () => {
  const served = await serve(configFile(""));
  // Reads the greeting (so its session exists before the SIGTERM), then nothing more; never closes its side, not
  // even when the proxy closes its own (allowHalfOpen).
  const idle = connect({ host: "127.0.0.1", port: served.imap, allowHalfOpen: true });
  idle.on("error", () => {});
  await new Promise<void>((resolve) => idle.once("data", () => resolve()));
  idle.pause();
  try {
    expect((await health(served)).status).toBe(200);
    served.proc.kill("SIGTERM");
    let h = await health(served);
    for (let i = 0; i < 100 && h.status === 200; i++) {
      await Bun.sleep(20);
      h = await health(served);
    }
    expect(h.status).toBe(503);
    expect(h.body.status).toBe("unavailable");
    expect(h.body.problems).toEqual(["the IMAP proxy is not listening", "the SMTP proxy is not listening"]);
  } finally {
    idle.destroy();
  }
  expect(await served.proc.exited).toBe(0);
});

test("a request that never ends on the admin listener holds serve's exit ADMIN_CLOSE_MS at most", async () => {
  const served = await serve(configFile(""));
  const url = new URL(served.admin);
  // A request line and one header, never the blank line that ends the request; never closes its side.
  const slow = connect({ host: url.hostname, port: Number(url.port), allowHalfOpen: true });
  slow.on("error", () => {});
  await new Promise<void>((resolve) => slow.once("connect", () => resolve()));
  slow.write("GET /healthz HTTP/1.1\r\nHost: a\r\n");
  try {
    expect((await health(served)).status).toBe(200);
    served.proc.kill("SIGTERM");
    const code = await Promise.race([served.proc.exited, Bun.sleep(ADMIN_CLOSE_MS + 5000).then(() => null)]);
    expect(code).toBe(0);
  } finally {
    slow.destroy();
  }
});

test("/healthz is 503 while the audit log cannot be written (full disk), 200 again once it can", async () => {
  const mount = mkdtempSync(join(TMP, "mg-admin-full-"));
  const run = (command: string, args: string[]) => {
    const r = spawnSync(command, args, { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`${command} ${args.join(" ")} failed: ${r.stderr}`);
  };
  run("mount", ["-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", mount]);
  const fill = join(mount, "fill");
  try {
    const served = await serve(configFile("", join(mount, "audit.db")));
    try {
      const mailbox = await createMailbox();
      expect((await health(served)).status).toBe(200);
      const fd = openSync(fill, "w");
      const block = Buffer.alloc(64 * 1024);
      try {
        for (;;) writeSync(fd, block);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "ENOSPC") throw e;
      }
      try {
        for (;;) if (writeSync(fd, block, 0, 512) === 0) break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "ENOSPC") throw e;
      }
      closeSync(fd);
      // A login is an audit row; its commit fails on the full disk.
      const imap = await RawImap.open(served.imap);
      await imap.command("a1", `LOGIN "${mailbox.user}" "${mailbox.password}"`);
      imap.close();
      let h = await health(served);
      for (let i = 0; i < 200 && h.status === 200; i++) {
        await Bun.sleep(20);
        h = await health(served);
      }
      expect(h.status).toBe(503);
      expect(h.body.problems).toEqual([`the audit log ${join(mount, "audit.db")} cannot be written`]);
      expect((await scrape(served)).get("mailgator_audit_healthy")).toBe(0);
      rmSync(fill);
      for (let i = 0; i < 300 && h.status !== 200; i++) {
        await Bun.sleep(50);
        h = await health(served);
      }
      expect(h.status).toBe(200);
    } finally {
      served.proc.kill("SIGTERM");
      await served.proc.exited;
    }
  } finally {
    rmSync(fill, { force: true });
    run("umount", [mount]);
    rmSync(mount, { recursive: true, force: true });
  }
});
