/**
 * No upstream connection outlives its agent (docs/imap.md "Upstream connections"): agents that hang up in the
 * middle of LOGIN leave no session at Dovecot, counted there (`doveadm who`) and at the proxy's own sockets; a
 * SIGTERM, even with logins under way, ends every upstream connection and the process within the grace period.
 * The proxy runs as `mailgator serve` in a child process, as in production.
 */
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { END_GRACE_MS, SHUTDOWN_GRACE_MS } from "../../src/net/index.ts";
import { connectImap, createMailbox, proxyListeners, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { dovecotSessions, establishedTo, settlesAt } from "../fixtures/upstream-connections.ts";

setDefaultTimeout(60_000);
const MAIN = join(import.meta.dir, "../../src/cli/main.ts");
const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

interface Served {
  readonly proc: ReturnType<typeof Bun.spawn>;
  readonly port: number;
  readonly smtpPort: number;
  logs(): string;
}

/** `mailgator serve` with allow-all IMAP and SMTP proxies in pass-through mode before the test Dovecot and Postfix. */
async function serveImap(): Promise<Served> {
  const dir = mkdtempSync(join(tmpdir(), "mg-orphans-"));
  dirs.push(dir);
  const config = join(dir, "mailgator.toml");
  writeFileSync(
    config,
    `${proxyListeners()}
[audit]
path = "${join(dir, "audit.db")}"

[[rules]]
name = "everything"
action = "allow"
`,
  );
  const proc = Bun.spawn([process.execPath, MAIN, "serve", "-c", config, "--log-format", "json"], {
    stdout: "pipe",
    stderr: "pipe",
  });
  let text = "";
  void (async () => {
    const reader = (proc.stderr as ReadableStream<Uint8Array>).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      text += new TextDecoder().decode(value);
    }
  })();
  for (let i = 0; i < 200; i++) {
    const m = /IMAP proxy listening on 127\.0\.0\.1:(\d+)/.exec(text);
    const n = /SMTP proxy listening on 127\.0\.0\.1:(\d+)/.exec(text);
    if (m && n) return { proc, port: Number(m[1]), smtpPort: Number(n[1]), logs: () => text };
    if (proc.exitCode !== null) break;
    await Bun.sleep(50);
  }
  proc.kill("SIGKILL");
  throw new Error(`serve did not start:\n${text}`);
}

/** An agent that connects, waits for the greeting and sends LOGIN; it closes when the proxy does. */
async function startLogin(port: number, mailbox: TestMailbox): Promise<Socket> {
  const socket = connect({ host: "127.0.0.1", port });
  socket.on("error", () => {});
  socket.on("end", () => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    socket.once("data", () => resolve());
    socket.once("close", () => reject(new Error("closed before the greeting")));
  });
  socket.write(`a1 LOGIN "${mailbox.user}" "${mailbox.password}"\r\n`);
  return socket;
}

/** Sends SIGTERM and resolves with the exit code and how long the exit took. */
async function terminate(served: Served): Promise<{ code: number | null; ms: number }> {
  const started = performance.now();
  served.proc.kill("SIGTERM");
  const code = await Promise.race([served.proc.exited, Bun.sleep(SHUTDOWN_GRACE_MS + 5000).then(() => null)]);
  const ms = performance.now() - started;
  if (code === null) served.proc.kill("SIGKILL");
  return { code, ms };
}

const AGENTS = 50;

test(`${AGENTS} agents hanging up mid-LOGIN leave no upstream conn. after 5-9 s; SIGTERM exits in grace`, async () => {
  const mailbox = await createMailbox();
  const up = upstreams();
  const served = await serveImap();
  try {
    // Each hangs up 0 to 24 ms after its LOGIN: while the proxy connects, logs in upstream, asks for the
    // delimiter or writes the login's row.
    await Promise.all(
      Array.from({ length: AGENTS }, async (_, i) => {
        const socket = await startLogin(served.port, mailbox);
        await Bun.sleep(i % 25);
        socket.destroy();
      }),
    );
    // Right after the hang-ups the proxy's upstream connections are still being made (TLS, login): counted, then
    // counted again 5 s later at both ends, and if any is left, polled for 4 s more (a loaded machine): an orphan
    // would live on (a logged-in upstream session has only the 5 min command deadline).
    const ports = [up.ports.imap, up.ports.imaps];
    console.log(`just after the hang-ups: ${establishedTo(served.proc.pid, ports)} upstream connections open`);
    await Bun.sleep(5000);
    await settlesAt(() => dovecotSessions(mailbox.user) + establishedTo(served.proc.pid, ports), 0, 4000);
    const atDovecot = dovecotSessions(mailbox.user);
    const fromProxy = establishedTo(served.proc.pid, ports);
    expect({ atDovecot, fromProxy }).toEqual({ atDovecot: 0, fromProxy: 0 });

    // The user is not locked out: a new agent logs in and reads.
    const client = await connectImap(mailbox, { security: "plain", port: served.port });
    expect((await client.mailboxOpen("INBOX")).exists).toBe(0);
    await client.logout();
    expect(await settlesAt(() => dovecotSessions(mailbox.user), 0, 5000)).toBe(0);

    const { code, ms } = await terminate(served);
    console.log(`SIGTERM after ${AGENTS} hang-ups: exited ${code} in ${Math.round(ms)} ms`);
    expect(code).toBe(0);
    expect(ms).toBeLessThan(SHUTDOWN_GRACE_MS);
  } finally {
    served.proc.kill("SIGKILL");
  }
});

test("SIGTERM with logins under way ends every upstream connection and exits within the grace", async () => {
  const mailbox = await createMailbox();
  const served = await serveImap();
  try {
    // Agents that stay: each closes only when the proxy closes its side.
    const agents = await Promise.all(Array.from({ length: 20 }, () => startLogin(served.port, mailbox)));
    await Bun.sleep(5);
    const { code, ms } = await terminate(served);
    console.log(`SIGTERM with 20 logins under way: exited ${code} in ${Math.round(ms)} ms`);
    expect(code).toBe(0);
    expect(ms).toBeLessThan(SHUTDOWN_GRACE_MS);
    expect(await settlesAt(() => dovecotSessions(mailbox.user), 0, 5000)).toBe(0);
    for (const socket of agents) socket.destroy();
  } finally {
    served.proc.kill("SIGKILL");
  }
});

test("SMTP: agents hanging up during a pass-through AUTH leave no upstream connection after 5-9 s", async () => {
  const mailbox = await createMailbox();
  const up = upstreams();
  const served = await serveImap();
  try {
    const plain = Buffer.from(`\0${mailbox.user}\0${mailbox.password}`).toString("base64");
    await Promise.all(
      Array.from({ length: 20 }, async (_, i) => {
        const socket = connect({ host: "127.0.0.1", port: served.smtpPort });
        socket.on("error", () => {});
        await new Promise<void>((resolve, reject) => {
          socket.once("data", () => resolve());
          socket.once("close", () => reject(new Error("closed before the greeting")));
        });
        socket.write(`EHLO agent.test\r\nAUTH PLAIN ${plain}\r\n`);
        // The proxy connects to Postfix, STARTTLS, EHLO, AUTH (checked by Dovecot): hang up somewhere in there.
        await Bun.sleep(i * 3);
        socket.destroy();
      }),
    );
    // 5 s, then polled for 4 s more if any is left (a loaded machine): an orphan would live on.
    await Bun.sleep(5000);
    expect(await settlesAt(() => establishedTo(served.proc.pid, [up.ports.smtp, up.ports.smtps]), 0, 4000)).toBe(0);
    const { code, ms } = await terminate(served);
    expect(code).toBe(0);
    expect(ms).toBeLessThan(SHUTDOWN_GRACE_MS);
  } finally {
    served.proc.kill("SIGKILL");
  }
});

test("SMTP: at SIGTERM a logged-in session's upstream connection ends at once, not at the agent's", async () => {
  const mailbox = await createMailbox();
  const up = upstreams();
  const served = await serveImap();
  // An agent that keeps its side open after the proxy's 421 (half-open), so its socket lives until the grace ends.
  const socket = connect({ host: "127.0.0.1", port: served.smtpPort, allowHalfOpen: true });
  socket.on("error", () => {});
  let received = "";
  socket.on("data", (chunk) => {
    received += chunk.toString("latin1");
  });
  try {
    const plain = Buffer.from(`\0${mailbox.user}\0${mailbox.password}`).toString("base64");
    socket.write(`EHLO agent.test\r\nAUTH PLAIN ${plain}\r\n`);
    for (let i = 0; i < 100 && !received.includes("235 "); i++) await Bun.sleep(50);
    expect(received).toContain("235 ");
    const ports = [up.ports.smtp, up.ports.smtps];
    expect(establishedTo(served.proc.pid, ports)).toBe(1);
    served.proc.kill("SIGTERM");
    // Well inside the agent's end grace (END_GRACE_MS), so that an upstream closed only with the agent fails.
    expect(await settlesAt(() => establishedTo(served.proc.pid, ports), 0, END_GRACE_MS - 2000)).toBe(0);
    expect(served.proc.exitCode).toBeNull(); // still waiting for the agent: the upstream did not wait with it
    // The 421 and the upstream's close race each other: the one seen first is not the one sent first.
    for (let i = 0; i < 40 && !received.includes("421 "); i++) await Bun.sleep(50);
    expect(received).toContain("421 ");
  } finally {
    socket.destroy();
    served.proc.kill("SIGKILL");
  }
});
