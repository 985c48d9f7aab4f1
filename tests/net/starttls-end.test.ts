/**
 * STARTTLS on the agent side (docs/protocol.md §4, docs/operations.md "Logs"): a session whose TLS handshake does
 * not complete has an access line that says so (a handshake that timed out, or one that failed), not `client closed
 * the connection`. An agent that pipelines more than the read-ahead (IMAP READ_AHEAD_LIMIT) of commands with
 * STARTTLS last, waiting for its answer (RFC 9051 §6.2.1), gets its handshake; one that sends a burst of junk with
 * STARTTLS only loses its own session.
 */
import { afterEach, expect, spyOn, test } from "bun:test";
import { readFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { READ_AHEAD_LIMIT } from "../../src/imap/limits.ts";
import { upstreams } from "../fixtures/index.ts";
import { startTestProxy as startImap } from "../imap/helpers.ts";
import { startTestProxy as startSmtp } from "../smtp/helpers.ts";

function certKeys(): string {
  const dir = upstreams().dir;
  return `tls_cert_file = "${join(dir, "tls", "server.pem")}"\ntls_key_file = "${join(dir, "tls", "server.key")}"`;
}

/** The access lines logged meanwhile (the log goes to stderr). */
function accessLines(): { lines: string[]; restore(): void } {
  const lines: string[] = [];
  const original = process.stderr.write.bind(process.stderr);
  const spy = spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array, ...rest: unknown[]) => {
    const text = typeof chunk === "string" ? chunk : Buffer.from(chunk).toString("utf8");
    for (const l of text.split("\n")) if (l.includes("access: session=")) lines.push(l);
    return (original as (c: string | Uint8Array, ...r: unknown[]) => boolean)(chunk, ...rest);
  });
  return { lines, restore: () => spy.mockRestore() };
}

let restore: (() => void) | null = null;
afterEach(() => {
  restore?.();
  restore = null;
});

/** A plain client that collects what it reads as text. */
async function client(port: number) {
  const socket = await new Promise<Socket>((resolve, reject) => {
    const s = connect({ host: "127.0.0.1", port }, () => resolve(s));
    s.once("error", reject);
  });
  socket.on("error", () => {});
  const state = { text: "", closed: false };
  const onData = (b: Buffer) => {
    state.text += b.toString("latin1");
  };
  socket.on("data", onData);
  socket.on("close", () => {
    state.closed = true;
  });
  const until = async (done: () => boolean, ms = 30_000) => {
    const deadline = Date.now() + ms;
    while (!done() && Date.now() < deadline) await Bun.sleep(10);
    return done();
  };
  return { socket, state, until, stopReading: () => socket.off("data", onData) };
}

async function waitFor(lines: string[], pattern: RegExp): Promise<string | undefined> {
  const deadline = Date.now() + 30_000;
  while (!lines.some((l) => pattern.test(l)) && Date.now() < deadline) await Bun.sleep(20);
  return lines.find((l) => pattern.test(l));
}

test("IMAP: a STARTTLS handshake that never starts ends with an access line saying it timed out", async () => {
  const proxy = await startImap({ imap: `listen_tls = "starttls"\n${certKeys()}`, timeouts: { handshakeMs: 300 } });
  const log = accessLines();
  restore = log.restore;
  try {
    const c = await client(proxy.port);
    expect(await c.until(() => c.state.text.includes("\r\n"))).toBe(true);
    c.socket.write("s STARTTLS\r\n");
    expect(await c.until(() => c.state.text.includes("s OK"))).toBe(true);
    // No ClientHello: the proxy gives up after handshakeMs.
    expect(await c.until(() => c.state.closed)).toBe(true);
    const line = await waitFor(log.lines, /\[imap\].*access: .*end=/);
    expect(line).toContain('end="TLS handshake failed: TLS handshake timed out"');
  } finally {
    await proxy.close();
  }
});

test("SMTP: a STARTTLS handshake that fails ends with an access line saying so", async () => {
  const proxy = await startSmtp({ rules: "", smtp: `listen_tls = "starttls"\n${certKeys()}` });
  const log = accessLines();
  restore = log.restore;
  try {
    const c = await client(proxy.port);
    expect(await c.until(() => c.state.text.includes("220 "))).toBe(true);
    c.socket.write("EHLO me\r\n");
    expect(await c.until(() => c.state.text.includes("250 "))).toBe(true);
    // A misbehaving agent: STARTTLS and, in the same burst, more than the read-ahead of junk (not a ClientHello).
    c.socket.write(`STARTTLS\r\n${"x".repeat(2 * 1024 * 1024)}`);
    expect(await c.until(() => c.state.closed)).toBe(true);
    const line = await waitFor(log.lines, /\[smtp\].*access: .*end=/);
    expect(line).toMatch(/end="TLS handshake failed: [^"]+"/);
  } finally {
    await proxy.close();
  }
});

test("IMAP: STARTTLS after more than READ_AHEAD_LIMIT of pipelined commands gets its handshake", async () => {
  const proxy = await startImap({ imap: `listen_tls = "starttls"\n${certKeys()}` });
  try {
    // A misbehaving agent alongside: STARTTLS with a burst of junk in the same write loses its own session only.
    const bad = await client(proxy.port);
    expect(await bad.until(() => bad.state.text.includes("\r\n"))).toBe(true);
    bad.socket.write(`b STARTTLS\r\n${"y".repeat(READ_AHEAD_LIMIT * 3)}`);
    const c = await client(proxy.port);
    expect(await c.until(() => c.state.text.includes("\r\n"))).toBe(true);
    const count = Math.ceil((READ_AHEAD_LIMIT * 1.5) / "n NOOP\r\n".length);
    c.socket.write(`${"n NOOP\r\n".repeat(count)}s STARTTLS\r\n`);
    expect(await c.until(() => c.state.text.includes("s OK"))).toBe(true);
    c.stopReading();
    const secured = await new Promise<string>((resolve) => {
      const tls = tlsConnect({ socket: c.socket, ca: readFileSync(upstreams().caFile), servername: "localhost" }, () =>
        tls.write("c CAPABILITY\r\n"),
      );
      let got = "";
      tls.on("data", (b: Buffer) => {
        got += b.toString("latin1");
        if (got.includes("c OK")) {
          tls.destroy();
          resolve("capability after TLS");
        }
      });
      tls.on("error", (e) => resolve(`error: ${e.message}`));
      tls.on("close", () => resolve(`closed: ${got}`));
    });
    expect(secured).toBe("capability after TLS");
    expect(await bad.until(() => bad.state.closed)).toBe(true);
  } finally {
    await proxy.close();
  }
});
