/**
 * The SMTP proxy stopped while it relays a message (docs/reliability.md "Shutdown"): the agent's send is answered
 * with the upstream's own answer before the 421 that ends the session, so that an agent never sends again a message
 * that was delivered; past the grace the upstream connection is dropped and the row says what that means. A relay
 * in front of the test Postfix holds Postfix's answer to the final dot. A reload that ends the session in the middle
 * of a send waits for its answer the same way (docs/operations.md "Reload"), and a message not yet gone upstream is
 * not sent.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { AuditLog } from "../../src/audit/index.ts";
import { SHUTDOWN_GRACE_MS } from "../../src/net/index.ts";
import { SmtpRelay } from "../fixtures/smtp-relay.ts";
import {
  dataPayload,
  loggedIn,
  marker,
  message,
  RawClient,
  sinkCopies,
  startTestProxy,
  type TestProxy,
  upstreams,
  vaultClient,
  vaultConfig,
  waitForSink,
} from "./helpers.ts";

setDefaultTimeout(60_000);

const RULES = `
[[rules]]
name = "everything"
action = "allow"
`;

let relay: SmtpRelay;
beforeAll(async () => {
  const up = upstreams();
  relay = await SmtpRelay.start({ host: up.host, port: up.ports.smtp });
});
afterAll(() => relay.close());

/** Sends one message through `p` and leaves its final dot unanswered (the relay holds Postfix's answer). */
async function sendHeldBack(p: TestProxy, m: string) {
  const c = await loggedIn(p.port);
  expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
  expect((await c.command(`RCPT TO:<shutdown-${m}@outside.example>`)).code).toBe(250);
  expect((await c.command("DATA")).code).toBe(354);
  relay.heldReply = "";
  const held = relay.holdNext("reply");
  c.write(dataPayload(message({ From: "alice@mailgator.test", Subject: `shutdown ${m}` }, `Hello ${m}\n`)));
  await held;
  expect(relay.heldReply).toMatch(/^250 /);
  return c;
}

/**
 * A vault session through the relay whose message is in and whose send waits for the upstream connection it opens
 * (Postfix's greeting held): its decision row is committed. `what` marks the recipient and the subject.
 */
async function sendWhileConnecting(what: string) {
  const token = `mg_${marker()}`;
  const p = await startTestProxy({
    rules: vaultConfig(RULES, token),
    upstreamAddr: `127.0.0.1:${relay.port}`,
    upstreamTls: "none",
  });
  const m = marker();
  const c = await vaultClient(p.port, token);
  expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
  expect((await c.command(`RCPT TO:<${what}-${m}@outside.example>`)).code).toBe(250);
  // The upstream connection for this send is opened while the message comes in: Postfix's greeting is held.
  const held = relay.holdNext("greeting");
  expect((await c.command("DATA")).code).toBe(354);
  await held;
  c.write(dataPayload(message({ From: "alice@mailgator.test", Subject: `${what} ${m}` }, `Hello ${m}\n`)));
  // The send's decision row is committed once the final dot is in: the send now waits for the upstream.
  for (let i = 0; i < 200 && !(await p.rows()).some((r) => r.command === "DATA"); i++) await Bun.sleep(25);
  return { p, c, m };
}

/**
 * The DATA rows of `p`'s one send, read after the audit log was closed (as serve closes it). The tests that call it
 * closed the proxy and its log themselves (not with `p.close()`): its folder is removed here, once read.
 */
async function sendRows(p: TestProxy): Promise<string[][]> {
  const log = AuditLog.open(join(p.dir, "audit.db"), { readonly: true });
  try {
    return log
      .query({ order: "asc" })
      .filter((r) => r.command === "DATA")
      .map((r) => [r.decision, r.reason]);
  } finally {
    await log.close();
    rmSync(p.dir, { recursive: true, force: true });
  }
}

describe("shutdown while the upstream has not answered a final dot", () => {
  test("within the grace: the agent gets the upstream's 250, then the 421; delivered; its row", async () => {
    const p = await startTestProxy({ rules: RULES, upstreamAddr: `127.0.0.1:${relay.port}`, upstreamTls: "none" });
    const m = marker();
    const c = await sendHeldBack(p, m);
    const closing = p.proxy.close();
    // Nothing is said to the agent while its send waits for the upstream's answer.
    await Bun.sleep(300);
    relay.releaseReply();
    const answer = await c.reply();
    expect(answer.code).toBe(250);
    const ended = await c.reply();
    expect([ended.code, ended.lines.join(" ")]).toEqual([421, "4.3.2 Mailgator is shutting down"]);
    await c.waitClosed();
    await closing;
    await p.audit.close();
    await waitForSink(`Hello ${m}`, 1);
    const rows = await sendRows(p);
    expect(rows.at(-1)?.[0]).toBe("allow");
    expect(rows.at(-1)?.[1]).toContain("upstream replied 250");
  });

  test("past the grace, still connecting upstream (vault mode): cut; nothing sent; a row", async () => {
    const { p, m } = await sendWhileConnecting("shutdown");
    const closed = await Promise.race([p.proxy.close().then(() => true), Bun.sleep(SHUTDOWN_GRACE_MS + 5000)]);
    expect(closed).toBe(true);
    await p.audit.close();
    const rows = await sendRows(p);
    expect(rows[0]?.[0]).toBe("allow");
    expect(rows.at(-1)).toEqual(["error", expect.stringContaining("upstream failed: ")]);
    await Bun.sleep(2000);
    expect(sinkCopies(`Hello ${m}`)).toHaveLength(0);
  });

  test("past the grace: the upstream connection is dropped; the row says the upstream may have it", async () => {
    const p = await startTestProxy({ rules: RULES, upstreamAddr: `127.0.0.1:${relay.port}`, upstreamTls: "none" });
    const m = marker();
    await sendHeldBack(p, m);
    // Bounded by the grace and the wind-up, not by the 10 minutes an upstream may take to answer a final dot.
    const closed = await Promise.race([p.proxy.close().then(() => true), Bun.sleep(SHUTDOWN_GRACE_MS + 5000)]);
    expect(closed).toBe(true);
    await p.audit.close();
    // Postfix had the dot: it delivers; only the answer was lost.
    await waitForSink(`Hello ${m}`, 1);
    expect((await sendRows(p)).at(-1)).toEqual([
      "error",
      expect.stringContaining(
        "upstream failed: the proxy stopped after the end of data went out: the upstream may have the message",
      ),
    ]);
  });
});

/** Reloads `p` with another upstream address: every session is ended (docs/operations.md "Reload"). */
function reloadElsewhere(p: TestProxy): void {
  const config = p.config;
  p.proxy
    .prepareReload({ ...config, smtp: { ...config.smtp!, upstreamAddr: { host: "127.0.0.1", port: 1 } } })
    .commit();
}

describe("a reload that ends the session while its message is being sent", () => {
  test("the upstream has not answered the final dot: its 250, then the reload's 421; delivered once", async () => {
    const p = await startTestProxy({ rules: RULES, upstreamAddr: `127.0.0.1:${relay.port}`, upstreamTls: "none" });
    const m = marker();
    const c = await sendHeldBack(p, m);
    reloadElsewhere(p);
    // Nothing is said to the agent while its send waits for the upstream's answer.
    await Bun.sleep(300);
    relay.releaseReply();
    const answer = await c.reply();
    expect(answer.code).toBe(250);
    const ended = await c.reply();
    expect([ended.code, ended.lines.join(" ")]).toEqual([
      421,
      "4.3.2 Configuration changed; this session ends, log in again",
    ]);
    await c.waitClosed();
    await waitForSink(`Hello ${m}`, 1);
    const rows = (await p.rows()).filter((r) => r.command === "DATA").map((r) => [r.decision, r.reason]);
    await p.close();
    expect(rows.at(-1)?.[0]).toBe("allow");
    expect(rows.at(-1)?.[1]).toContain("upstream replied 250");
  });

  test("MAIL, RCPT and DATA upstream, the dot not yet: withdrawn, nothing delivered, a deny row, the 421", async () => {
    const p = await startTestProxy({ rules: RULES, upstreamAddr: `127.0.0.1:${relay.port}`, upstreamTls: "none" });
    const m = marker();
    const c = await loggedIn(p.port);
    expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
    expect((await c.command(`RCPT TO:<withdrawn-${m}@outside.example>`)).code).toBe(250);
    expect((await c.command("DATA")).code).toBe(354);
    // The replay's MAIL, RCPT and DATA reach Postfix; its answers from DATA on (the 354) are held.
    const held = relay.holdNext("data");
    const dots = relay.dotsForwarded;
    c.write(dataPayload(message({ From: "alice@mailgator.test", Subject: `withdrawn ${m}` }, `Hello ${m}\n`)));
    await held;
    reloadElsewhere(p);
    const ended = await c.reply();
    expect([ended.code, ended.lines.join(" ")]).toEqual([
      421,
      "4.3.2 Configuration changed; this session ends, log in again",
    ]);
    await c.waitClosed();
    // Postfix's 354 now finds the connection dropped: neither the content nor the dot follows it.
    relay.releaseReply();
    const rows = (await p.rows()).filter((r) => r.command === "DATA").map((r) => [r.decision, r.reason]);
    await p.close();
    expect(rows[0]).toEqual(["allow", "every recipient allowed"]);
    expect(rows.at(-1)).toEqual([
      "deny",
      expect.stringContaining("not sent: the session was ended by a reload (the upstream server changed"),
    ]);
    await Bun.sleep(2000);
    expect(relay.dotsForwarded).toBe(dots);
    expect(sinkCopies(`Hello ${m}`)).toHaveLength(0);
  });

  test("still connecting upstream (vault mode): nothing is sent, a deny row, and the 421 answers the dot", async () => {
    const { p, c, m } = await sendWhileConnecting("reload");
    // The reload names another upstream: the connection being opened to the old one carries nothing.
    reloadElsewhere(p);
    relay.releaseReply();
    const ended = await c.reply();
    expect([ended.code, ended.lines.join(" ")]).toEqual([
      421,
      "4.3.2 Configuration changed; this session ends, log in again",
    ]);
    await c.waitClosed();
    const rows = (await p.rows()).filter((r) => r.command === "DATA").map((r) => [r.decision, r.reason]);
    await p.close();
    expect(rows[0]).toEqual(["allow", "every recipient allowed"]);
    expect(rows.at(-1)).toEqual([
      "deny",
      expect.stringContaining("not sent: the session was ended by a reload (the upstream server changed"),
    ]);
    await Bun.sleep(2000);
    expect(sinkCopies(`Hello ${m}`)).toHaveLength(0);
  });
});

describe("shutdown while a command waits on neither the upstream nor the agent's next line", () => {
  /** What `p` resolves to, or "still waiting" after half the grace. */
  const beforeHalfGrace = <T>(p: Promise<T>) =>
    Promise.race([p, Bun.sleep(SHUTDOWN_GRACE_MS / 2).then(() => "still waiting" as const)]);

  test("a failed AUTH's delay ends: the 535, then the 421, before the grace", async () => {
    const token = "mgt_shutdown_0123456789abcdef0123456789abcdef";
    // A delay of AUTH_FAILURE_MAX_DELAY_MS (the grace): only the stop can end it in time.
    const p = await startTestProxy({ rules: vaultConfig(RULES, token), limits: { authFailureStepMs: 60_000 } });
    try {
      const c = await RawClient.connect(p.port);
      await c.reply();
      await c.command("EHLO client.test");
      c.write(`AUTH PLAIN ${Buffer.from("\0bot\0wrong-token").toString("base64")}\r\n`);
      // The deny row is written before the delay starts.
      for (let i = 0; i < 200 && !(await p.rows()).some((r) => r.command === "AUTH"); i++) await Bun.sleep(25);
      const closing = p.proxy.close();
      const answer = await beforeHalfGrace(c.reply().then((r) => r.raw));
      expect(answer).toStartWith("535 5.7.8");
      expect((await c.reply()).raw).toStartWith("421 4.3.2");
      await closing;
      await c.waitClosed();
    } finally {
      await p.close();
    }
  });

  test("a STARTTLS handshake the agent never makes is cut at once", async () => {
    const tls = upstreams().caFile.replace(/ca\.pem$/, "");
    const p = await startTestProxy({
      rules: RULES,
      smtp: `listen_tls = "starttls"\ntls_cert_file = "${tls}server.pem"\ntls_key_file = "${tls}server.key"`,
    });
    try {
      const c = await RawClient.connect(p.port);
      await c.reply();
      await c.command("EHLO client.test");
      expect((await c.command("STARTTLS")).code).toBe(220);
      // No handshake: the proxy would wait for one up to its handshake timeout, longer than the grace.
      expect(await beforeHalfGrace(p.proxy.close().then(() => "closed"))).toBe("closed");
      await c.waitClosed();
    } finally {
      await p.close();
    }
  });
});
