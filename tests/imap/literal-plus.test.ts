/**
 * LITERAL+ (RFC 7888) towards agents, against the real Dovecot (docs/protocol.md §2 and §4, docs/imap-wire.md
 * "Limits"): `{n+}` of any size within the command's limits is taken as it comes; one over a limit is already on
 * its way, so it is read to its end and dropped without being buffered, then refused with `BAD [TOOBIG]`; one that
 * would take the command past `MAX_NONSYNC_DRAIN` closes the connection with `* BYE [TOOBIG]` (RFC 7888 §4).
 * Every limit at the limit and one past it; memory measured while the proxy drains; Dovecot read directly after.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Socket } from "node:net";
import type { DeflateRaw } from "node:zlib";
import { ImapFlow } from "imapflow";
import { authCapabilities, PRE_AUTH_CAPABILITIES } from "../../src/imap/capabilities.ts";
import { MAX_APPEND_MESSAGE, MAX_ARGUMENT_LITERAL, MAX_NONSYNC_DRAIN } from "../../src/imap/limits.ts";
import { connectImap, createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { TcpRelay } from "../fixtures/tcp-relay.ts";
import { DeflateClient } from "./deflate-client.ts";
import { RawImap, startTestProxy, statusOf, type TestProxy, upstreamState } from "./helpers.ts";

/** LITERAL-'s cap (RFC 7888 §5): the largest literal imapflow sends as {n+}. */
const LITERAL_MINUS_MAX = 4096;

const RULES = `
[[rules]]
name = "own"
folders = ["Own", "Own/*"]
action = "allow"

[[rules]]
name = "nothing else"
action = "deny"
`;

/**
 * How much the test process (proxy and client together) may grow while the proxy drains a refused `{n+}` of
 * about 50 MiB or is sent a 100 MiB one. Draining measures 25–37 MiB here (received chunks the collector has not
 * yet returned); buffering the literal instead measures 90–110 MiB, so the margin sits between the two.
 */
const DRAIN_RSS_MARGIN = 48 * 1024 * 1024;

/** One MiB of 78-octet lines (a whole number of them), so chunks written back to back stay lines. */
const LINE = Buffer.from(`${"x".repeat(76)}\r\n`);
const CHUNK = Buffer.concat(Array.from({ length: Math.floor((1024 * 1024) / LINE.length) }, () => LINE));

let mailbox: TestMailbox;
let proxy: TestProxy;

beforeAll(async () => {
  mailbox = await createMailbox({ seed: { folders: { INBOX: 3 }, seed: 14 } });
  const human = await connectImap(mailbox);
  await human.mailboxCreate("Own");
  await human.mailboxCreate("Secret");
  await human.logout();
  proxy = await startTestProxy({ rules: RULES });
});

afterAll(async () => {
  await proxy?.close();
});

async function agent(): Promise<RawImap> {
  return RawImap.login(proxy.port, mailbox);
}

/** Writes `total` octets of message lines (after `head`), with back-pressure; stops early if the peer closes. */
async function stream(socket: Socket | DeflateRaw, head: Buffer, total: number, tail = ""): Promise<void> {
  const write = async (b: Buffer): Promise<boolean> => {
    if (socket.destroyed) return false;
    if (!socket.write(b)) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          socket.off("drain", done);
          socket.off("close", done);
          resolve();
        };
        socket.on("drain", done);
        socket.on("close", done);
      });
    }
    return !socket.destroyed;
  };
  if (!(await write(head))) return;
  let left = total;
  for (let chunks = 1; left > 0; chunks++) {
    const n = Math.min(left, CHUNK.length);
    if (!(await write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n)))) return;
    left -= n;
    // The proxy reads in this process: what it has dropped is garbage, collected here by the octets sent rather than
    // only by rssGrowth's timer, which a loaded host runs late while the octets pile up as garbage.
    if (chunks % 4 === 0) Bun.gc(false);
  }
  await write(Buffer.from(tail));
}

/** Runs `f` while sampling RSS every 5 ms; returns the peak growth. */
async function rssGrowth(f: () => Promise<void>): Promise<number> {
  Bun.gc(true);
  const before = process.memoryUsage().rss;
  let peak = before;
  // Received chunks are garbage as soon as they are dropped; a young collection now and then keeps RSS about
  // what is alive (what is buffered), not about when the collector last ran.
  let ticks = 0;
  const sample = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss);
    if (++ticks % 10 === 0) Bun.gc(false);
  }, 5);
  try {
    await f();
  } finally {
    clearInterval(sample);
  }
  return Math.max(peak, process.memoryUsage().rss) - before;
}

/** The tagged reply to `tag`, waiting up to a minute (a 50 MiB APPEND on a loaded machine). */
async function tagged(raw: RawImap, tag: string): Promise<string> {
  const re = new RegExp(`(^|\\r\\n)${tag} (OK|NO|BAD)[^\\r\\n]*\\r\\n`);
  await raw.readUntil((b) => re.test(b), 60_000);
  return raw.waitTagged(tag);
}

/** Message count of a folder, read from Dovecot directly. */
async function count(folder: string): Promise<number> {
  return (await upstreamState(mailbox)).messages[folder]!.uids.length;
}

describe("LITERAL+ offered", () => {
  test("LITERAL+ before and after login, LITERAL- no longer", async () => {
    expect(PRE_AUTH_CAPABILITIES).toContain("LITERAL+");
    expect(PRE_AUTH_CAPABILITIES).not.toContain("LITERAL-");
    const raw = await RawImap.open(proxy.port);
    const pre = await raw.command("c", "CAPABILITY");
    expect(pre).toMatch(/^\* CAPABILITY [^\r\n]* LITERAL\+ /m);
    expect(pre).not.toContain("LITERAL-");
    expect(statusOf(await raw.command("L", `LOGIN "${mailbox.user}" "${mailbox.password}"`), "L")).toStartWith("L OK");
    const post = await raw.command("d", "CAPABILITY");
    expect(post).toMatch(/^\* CAPABILITY [^\r\n]* LITERAL\+ /m);
    expect(authCapabilities(new Set(["MULTIAPPEND"]))).toContain("LITERAL+");
    raw.close();
  });

  test("imapflow APPENDs through a tap: {n+} when it chooses, a sync literal beyond; both intact", async () => {
    // imapflow 2.10 sends {n+} only up to 4096 octets even when LITERAL+ is offered (its compiler is given
    // literalMinus only), so the large message goes as {n} and waits for "+": both forms must work.
    let sent = "";
    const tap = await TcpRelay.start({ host: "127.0.0.1", port: proxy.port }, () => ({
      fromClient: (d, link) => {
        sent += d.subarray(0, 200).toString("latin1");
        link.target.write(d);
      },
    }));
    const port = tap.port;
    const small = Buffer.concat([Buffer.from("Subject: small\r\n\r\n"), Buffer.alloc(LITERAL_MINUS_MAX - 18, "s")]);
    const large = Buffer.concat([Buffer.from("Subject: large\r\n\r\n"), CHUNK, CHUNK, CHUNK]);
    // Uncompressed, so the tap can read the literal markers.
    const client = new ImapFlow({
      host: "127.0.0.1",
      port,
      secure: false,
      doSTARTTLS: false,
      disableCompression: true,
      auth: { user: mailbox.user, pass: mailbox.password },
      logger: false,
    } as ConstructorParameters<typeof ImapFlow>[0]);
    await client.connect();
    try {
      const a = await client.append("Own", small);
      const b = await client.append("Own", large);
      expect(a && b).toBeTruthy();
      expect(sent).toContain(`{${small.length}+}\r\n`);
      expect(sent).toContain(`{${large.length}}\r\n`);
      const human = await connectImap(mailbox);
      try {
        await human.mailboxOpen("Own");
        for (const [res, body] of [
          [a, small],
          [b, large],
        ] as const) {
          const got = await human.fetchOne(String(res && res.uid), { source: true }, { uid: true });
          expect(got && Buffer.compare(got.source!, body)).toBe(0);
        }
      } finally {
        await human.logout();
      }
    } finally {
      await client.logout();
      await tap.close();
    }
  });
});

describe("{n+} at each limit and one past it", () => {
  test(`an argument literal of ${MAX_ARGUMENT_LITERAL} as {n+} is taken; one more: drained, BAD [TOOBIG]`, async () => {
    const raw = await RawImap.open(proxy.port);
    // Before login: a LOGIN password literal. At the limit it is read (and the login fails, the password is wrong).
    raw.write(`a LOGIN "${mailbox.user}" {${MAX_ARGUMENT_LITERAL}+}\r\n${"p".repeat(MAX_ARGUMENT_LITERAL)}\r\n`);
    expect(statusOf(await raw.waitTagged("a"), "a")).toStartWith("a NO");
    // One past: drained to its end. Commands inside the dropped octets are never executed.
    const evil = `\r\nx LOGIN "${mailbox.user}" "${mailbox.password}"\r\n`;
    const filler = "p".repeat(MAX_ARGUMENT_LITERAL + 1 - evil.length);
    raw.write(`b LOGIN "${mailbox.user}" {${MAX_ARGUMENT_LITERAL + 1}+}\r\n${evil}${filler}\r\n`);
    expect(statusOf(await raw.waitTagged("b"), "b")).toStartWith("b BAD [TOOBIG]");
    const state = await raw.command("c", "SELECT Own");
    expect(statusOf(state, "c")).toStartWith("c BAD"); // still not logged in: x LOGIN was dropped
    expect(state).not.toContain("x OK");
    expect(statusOf(await raw.command("L", `LOGIN "${mailbox.user}" "${mailbox.password}"`), "L")).toStartWith("L OK");
    raw.close();
  });

  test("a {n+} APPEND into a hidden folder answers as a nonexistent one, and its octets are consumed", async () => {
    const raw = await agent();
    const message = "Subject: probe\r\n\r\nprobe\r\n";
    const hidden = await raw.command("a", `APPEND Secret {${message.length}+}\r\n${message}`);
    const absent = await raw.command("a", `APPEND Own/Nowhere {${message.length}+}\r\n${message}`);
    expect(hidden).toBe(absent);
    expect(statusOf(hidden, "a")).toStartWith("a NO [TRYCREATE]");
    expect(statusOf(await raw.command("n", "NOOP"), "n")).toStartWith("n OK");
    expect(await count("Secret")).toBe(0);
    raw.close();
  });

  test(`APPEND {${MAX_APPEND_MESSAGE}+} is appended; {${MAX_APPEND_MESSAGE + 1}+}: drained, BAD [TOOBIG]`, async () => {
    const raw = await agent();
    const before = await count("Own");
    const head = "Subject: limit\r\n\r\n";
    const over = MAX_APPEND_MESSAGE + 1;
    const growth = await rssGrowth(async () => {
      await stream(raw.socket, Buffer.from(`b APPEND Own {${over}+}\r\n${head}`), over - head.length, "\r\n");
      expect(statusOf(await raw.waitTagged("b"), "b")).toStartWith("b BAD [TOOBIG]");
    });
    expect(growth).toBeLessThan(DRAIN_RSS_MARGIN);
    expect(statusOf(await raw.command("n", "NOOP"), "n")).toStartWith("n OK");
    expect(await count("Own")).toBe(before);
    await stream(
      raw.socket,
      Buffer.from(`a APPEND Own {${MAX_APPEND_MESSAGE}+}\r\n${head}`),
      MAX_APPEND_MESSAGE - head.length,
      "\r\n",
    );
    expect(statusOf(await tagged(raw, "a"), "a")).toStartWith("a OK [APPENDUID");
    expect(await count("Own")).toBe(before + 1);
    raw.close();
  }, 120_000);

  test(`a refused {n+} is drained up to MAX_NONSYNC_DRAIN (${MAX_NONSYNC_DRAIN}); one more: BYE [TOOBIG]`, async () => {
    const raw = await agent();
    const line = (n: number): string => `a APPEND Own {${n}+}\r\n`;
    // The command's octets: its line, the literal and the closing CRLF, exactly the drain cap.
    let n = MAX_NONSYNC_DRAIN - 2 - line(MAX_NONSYNC_DRAIN).length;
    n += MAX_NONSYNC_DRAIN - (line(n).length + n + 2);
    expect(line(n).length + n + 2).toBe(MAX_NONSYNC_DRAIN);
    const growth = await rssGrowth(async () => {
      await stream(raw.socket, Buffer.from(line(n)), n, "\r\n");
      expect(statusOf(await tagged(raw, "a"), "a")).toStartWith("a BAD [TOOBIG]");
    });
    expect(growth).toBeLessThan(DRAIN_RSS_MARGIN);
    expect(statusOf(await raw.command("n", "NOOP"), "n")).toStartWith("n OK");
    raw.write(line(n + 1));
    const bye = await raw.readUntil(() => raw.closed);
    expect(bye).toContain("* BYE [TOOBIG]");
    expect(bye).not.toContain("a BAD");
  }, 120_000);

  test("a 100 MiB {n+}: BYE [TOOBIG] before its octets are read; memory stays flat", async () => {
    const raw = await agent();
    const before = await count("Own");
    const size = 100 * 1024 * 1024;
    const growth = await rssGrowth(async () => {
      const sending = stream(raw.socket, Buffer.from(`a APPEND Own {${size}+}\r\n`), size, "\r\n");
      const t = await raw.readUntil(() => raw.closed, 60_000);
      expect(t).toContain("* BYE [TOOBIG]");
      await sending;
    });
    expect(growth).toBeLessThan(DRAIN_RSS_MARGIN);
    expect(await count("Own")).toBe(before);
  }, 120_000);
});

describe("MULTIAPPEND with non-synchronizing literals", () => {
  test("three {n+} messages in one write are one atomic APPEND", async () => {
    const raw = await agent();
    const before = await count("Own");
    const bodies = ["one", "two", "three"].map((s) => `Subject: multi ${s}\r\n\r\n${s}\r\n`);
    let cmd = "a APPEND Own";
    for (const b of bodies) cmd += ` (\\Seen) {${b.length}+}\r\n${b}`;
    raw.write(`${cmd}\r\n`);
    expect(statusOf(await raw.waitTagged("a"), "a")).toMatch(/^a OK \[APPENDUID \d+ \d+:\d+\]/);
    expect(await count("Own")).toBe(before + 3);
    raw.close();
  });

  test("one {n+} over MAX_APPEND_MESSAGE among them: drained, BAD [TOOBIG], none appended", async () => {
    const raw = await agent();
    const before = await count("Own");
    const first = "Subject: atomic\r\n\r\nfirst\r\n";
    const over = MAX_APPEND_MESSAGE + 1;
    await stream(raw.socket, Buffer.from(`a APPEND Own {${first.length}+}\r\n${first} {${over}+}\r\n`), over, "\r\n");
    expect(statusOf(await tagged(raw, "a"), "a")).toStartWith("a BAD [TOOBIG]");
    expect(statusOf(await raw.command("n", "NOOP"), "n")).toStartWith("n OK");
    expect(await count("Own")).toBe(before);
    raw.close();
  }, 120_000);
});

describe("under COMPRESS=DEFLATE the same limits hold on inflated octets", () => {
  test(`{${MAX_APPEND_MESSAGE + 1}+} of zeros compressed: drained, BAD [TOOBIG]; past the drain cap: BYE`, async () => {
    const z = await DeflateClient.open(proxy.port);
    expect(await z.command("L", `LOGIN "${mailbox.user}" "${mailbox.password}"`)).toMatch(/^L OK/m);
    expect(await z.compress("z")).toMatch(/^z OK/m);
    const before = await count("Own");
    const over = MAX_APPEND_MESSAGE + 1;
    const growth = await rssGrowth(async () => {
      await stream(z.deflateStream, Buffer.from(`a APPEND Own {${over}+}\r\n`), over, "\r\nn NOOP\r\n");
      await z.flush();
      const t = await z.until((s) => /n OK/.test(s), 60_000);
      expect(t).toMatch(/^a BAD \[TOOBIG\]/m);
    });
    expect(growth).toBeLessThan(DRAIN_RSS_MARGIN);
    expect(await count("Own")).toBe(before);
    z.deflateStream.write(`b APPEND Own {${MAX_NONSYNC_DRAIN}+}\r\n`);
    await z.flush();
    const t = await z.until(() => z.closed, 60_000);
    expect(t).toContain("* BYE [TOOBIG]");
  }, 120_000);
});
