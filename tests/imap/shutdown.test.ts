/**
 * The IMAP proxy stopping (docs/reliability.md "Shutdown"): a session waiting for its agent ends with `* BYE`
 * (RFC 9051 §7.1.5); a command under way first gets its own reply, then the `* BYE`; past the grace the
 * connection is cut. A relay in front of the test Dovecot holds Dovecot's reply to a STORE.
 */
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import { type Socket, connect as tcpConnect } from "node:net";
import { END_GRACE_MS } from "../../src/net/connection.ts";
import { SHUTDOWN_GRACE_MS } from "../../src/net/index.ts";
import { createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { TcpRelay } from "../fixtures/tcp-relay.ts";
import { RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

setDefaultTimeout(60_000);

/**
 * A relay to Dovecot's plain IMAP port that, once `holdReply(re)` is called, keeps back Dovecot's output from the
 * chunk in which a line matches `re` on, until `release()`.
 */
class ReplyHoldingRelay {
  readonly #relay: TcpRelay;
  #hold: { re: RegExp; held: () => void; kept: Buffer[]; client: Socket } | null = null;

  private constructor(relay: TcpRelay) {
    this.#relay = relay;
  }

  static async start(upstreamPort: number): Promise<ReplyHoldingRelay> {
    let holding: ReplyHoldingRelay | null = null;
    const relay = await TcpRelay.start({ host: "127.0.0.1", port: upstreamPort }, () => ({
      fromTarget: (chunk, link) => holding!.#fromUpstream(link.client, chunk),
    }));
    holding = new ReplyHoldingRelay(relay);
    return holding;
  }

  get port(): number {
    return this.#relay.port;
  }

  /** Resolves `held` once a reply matching `re` is kept back; `release()` (once) sends it and what came after. */
  holdReply(re: RegExp): { held: Promise<void>; release: () => void } {
    let held!: () => void;
    const promise = new Promise<void>((resolve) => (held = resolve));
    const hold = { re, held, kept: [] as Buffer[], client: null as unknown as Socket };
    this.#hold = hold;
    return {
      held: promise,
      release: () => {
        if (this.#hold !== hold) return; // released already
        this.#hold = null;
        for (const chunk of hold.kept) hold.client.write(chunk);
      },
    };
  }

  #fromUpstream(client: Socket, chunk: Buffer): void {
    const hold = this.#hold;
    if (hold !== null && (hold.kept.length > 0 || hold.re.test(chunk.toString("latin1")))) {
      if (hold.kept.length === 0) {
        hold.client = client;
        hold.held();
      }
      hold.kept.push(chunk);
      return;
    }
    client.write(chunk);
  }

  close(): Promise<void> {
    return this.#relay.close();
  }
}

let mailbox: TestMailbox;
let relay: ReplyHoldingRelay;

beforeAll(async () => {
  mailbox = await createMailbox({ seed: { folders: { INBOX: 3 }, seed: 7 } });
  relay = await ReplyHoldingRelay.start(upstreams().ports.imap);
});

afterAll(async () => {
  await relay?.close();
});

function proxyViaRelay(): Promise<TestProxy> {
  return startTestProxy({ upstreamTls: "none", upstreamAddr: `127.0.0.1:${relay.port}` });
}

/** Reads until the server closes the connection; returns what came. */
async function untilClosed(c: RawImap): Promise<string> {
  await c.readUntil(() => false, 30_000, "the proxy did not close the connection");
  return c.take();
}

test("sessions waiting for their agent (between commands, before login, IDLE) get * BYE and are closed", async () => {
  const p = await proxyViaRelay();
  let closing: Promise<void> | null = null;
  try {
    const loggedIn = await RawImap.login(p.port, mailbox);
    const greeted = await RawImap.open(p.port);
    const idling = await RawImap.login(p.port, mailbox);
    expect(statusOf(await idling.command("s", "SELECT INBOX"), "s")).toStartWith("s OK");
    idling.write("i IDLE\r\n");
    await idling.readUntil((b) => b.includes("+ "));
    idling.take();
    closing = p.close();
    for (const c of [loggedIn, greeted, idling]) {
      const rest = await untilClosed(c);
      expect(rest).toMatch(/^\* BYE Server shutting down\r\n$/);
      expect(c.closed).toBe(true);
    }
  } finally {
    await (closing ?? p.close());
  }
});

/**
 * Runs `body` while Dovecot's reply to the agent's `TAG UID STORE 1:* FLAGS` is held by the relay (Dovecot has
 * carried it out); `stop()` closes the proxy (once), its audit log staying open for `p.rows()`. The reply is released
 * and the proxy and its audit log closed afterwards.
 */
async function duringHeldStore(
  tag: string,
  flags: string,
  body: (t: { c: RawImap; p: TestProxy; release(): void; stop(): Promise<void> }) => Promise<void>,
): Promise<void> {
  const p = await proxyViaRelay();
  let closing: Promise<void> | null = null;
  const stop = () => (closing ??= p.proxy.close());
  let gate: ReturnType<ReplyHoldingRelay["holdReply"]> | null = null;
  try {
    const c = await RawImap.login(p.port, mailbox);
    expect(statusOf(await c.command("s", "SELECT INBOX"), "s")).toStartWith("s OK");
    gate = relay.holdReply(/ OK .*Store completed/);
    c.write(`${tag} UID STORE 1:* ${flags}\r\n`);
    await gate.held;
    await body({ c, p, release: gate.release, stop });
  } finally {
    gate?.release();
    await stop();
    await p.close();
  }
}

test("a command under way gets its own reply, then * BYE; then the proxy has closed", async () => {
  await duringHeldStore("f", "+FLAGS (\\Flagged)", async ({ c, release, stop }) => {
    const closing = stop();
    let closed = false;
    void closing.then(() => (closed = true));
    // The agent is still waiting for its reply, and the proxy for the agent.
    await Bun.sleep(200);
    expect(closed).toBe(false);
    expect(c.closed).toBe(false);
    release();
    const rest = await untilClosed(c);
    expect(rest).toMatch(/\r\nf OK [^\r\n]*\r\n\* BYE Server shutting down\r\n$/);
    expect(rest).toContain("\\Flagged");
    await closing;
  });
});

test("past the grace a command still under way is cut: the connection closes without its reply", async () => {
  await duringHeldStore("g", "-FLAGS (\\Flagged)", async ({ c, p, stop }) => {
    const started = performance.now();
    const closing = stop();
    const rest = await untilClosed(c);
    expect(performance.now() - started).toBeGreaterThanOrEqual(SHUTDOWN_GRACE_MS - 100);
    expect(rest).not.toContain("g OK");
    expect(rest).not.toContain("* BYE");
    await closing;
    // The shutdown cut it, not the agent: the STORE's allow row is followed by one saying so (docs/audit.md).
    const store = (await p.rows()).filter((r) => r.command === "UID STORE");
    expect(store.map((r) => r.decision)).toEqual(["allow", "error"]);
    expect(store[1]!.reason).toContain(
      "no answer: the session ended before upstream answered (proxy shutting down); whether upstream did it",
    );
  });
}, 40_000);

test("a failed login's delay ends when the proxy stops: the NO, then * BYE, before the grace", async () => {
  // A delay far past the grace: only the stop can end it in time.
  const p = await startTestProxy({ loginThrottle: { stepMs: 60_000, maxMs: 60_000 } });
  let closing: Promise<void> | null = null;
  try {
    const c = await RawImap.open(p.port);
    c.write(`l LOGIN "${mailbox.user}" "wrong-password"\r\n`);
    // The login's deny row is written before the delay starts.
    for (let i = 0; i < 200 && !(await p.rows()).some((r) => r.decision === "deny"); i++) await Bun.sleep(25);
    closing = p.close();
    const rest = await untilClosed(c);
    expect(rest).toMatch(/^l NO \[AUTHENTICATIONFAILED\] [^\r\n]*\r\n\* BYE Server shutting down\r\n$/);
    await closing;
  } finally {
    await (closing ?? p.close());
  }
});

test("a STARTTLS handshake the agent never makes is cut at once when the proxy stops", async () => {
  const dir = upstreams().dir;
  const p = await startTestProxy({
    imap: `listen_tls = "starttls"\ntls_cert_file = "${dir}/tls/server.pem"\ntls_key_file = "${dir}/tls/server.key"`,
  });
  let closing: Promise<void> | null = null;
  try {
    // A client that keeps its side open when the proxy's side closes: only a cut ends the connection at once.
    const socket = tcpConnect({ host: "127.0.0.1", port: p.port, allowHalfOpen: true });
    await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
    const c = RawImap.fromSocket(socket);
    await c.readUntil((b) => b.includes("\r\n"));
    c.take();
    expect(await c.command("t", "STARTTLS")).toMatch(/^t OK /);
    // No handshake: the proxy waits for one (up to its handshake timeout, longer than the grace).
    closing = p.close();
    // Before, the session counted as a command under way and held the close until the grace cut it; then a close
    // that only ended its side waited END_GRACE_MS for this client.
    const first = await Promise.race([
      closing.then(() => "closed"),
      Bun.sleep(END_GRACE_MS / 2).then(() => "still waiting"),
    ]);
    expect(first).toBe("closed");
    // The proxy's side is gone; this client's own side is its own business.
    if (!socket.readableEnded) await new Promise<void>((resolve) => socket.once("end", () => resolve()));
    c.close();
  } finally {
    await (closing ?? p.close());
  }
});
