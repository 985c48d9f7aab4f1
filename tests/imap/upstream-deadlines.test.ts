/**
 * Deadlines of upstream commands (src/imap/upstream.ts): one watchdog timer per upstream session fails the session
 * when the command in flight has not had its tagged reply by its deadline (`commandMs`, and for an IDLE its `+`;
 * `handshakeMs` for the end of an IDLE), and only then. A stand-in server, because a real one does not stall on
 * purpose.
 */
import { afterEach, expect, test } from "bun:test";
import { createServer, type Server, type Socket } from "node:net";
import { UpstreamSession } from "../../src/imap/upstream.ts";

/**
 * Per command received, in order: answer OK after this many ms, or never (null). IDLE gets `+` at once and its
 * answer that long after DONE.
 */
type Script = (number | null)[];

const servers: Server[] = [];
const sessions: UpstreamSession[] = [];

afterEach(() => {
  for (const s of sessions.splice(0)) s.close();
  for (const s of servers.splice(0)) s.close();
});

/** `idlePlus: false`: a server that never starts IDLE (no `+`), as one stalled right after reading it. */
async function scripted(script: Script, { idlePlus = true } = {}): Promise<number> {
  const server = createServer((socket: Socket) => {
    socket.on("error", () => {});
    socket.write("* OK [CAPABILITY IMAP4rev1 UIDPLUS UNSELECT IDLE] ready\r\n");
    let buffered = "";
    let next = 0;
    let idle: { tag: string; delay: number | null } | null = null;
    const answer = (tag: string, delay: number | null) => {
      if (delay !== null) setTimeout(() => socket.write(`${tag} OK done\r\n`), delay);
    };
    socket.on("data", (chunk) => {
      buffered += chunk.toString("latin1");
      for (let end = buffered.indexOf("\r\n"); end !== -1; end = buffered.indexOf("\r\n")) {
        const line = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        if (line === "DONE") {
          // IDLE's reply, if any, is due once DONE came.
          if (idle !== null) answer(idle.tag, idle.delay);
          idle = null;
          continue;
        }
        const tag = line.split(" ")[0]!;
        const delay = script[next++] ?? null;
        if (line.endsWith(" IDLE")) {
          if (idlePlus) socket.write("+ idling\r\n");
          idle = { tag, delay };
        } else answer(tag, delay);
      }
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return (server.address() as { port: number }).port;
}

async function open(port: number, commandMs: number, handshakeMs = 2000): Promise<UpstreamSession> {
  const target = {
    host: "127.0.0.1",
    port,
    tls: "none" as const,
    skipVerify: false,
    extraCa: null,
    connectTimeoutMs: 2000,
  };
  const up = await UpstreamSession.open(target, { connectMs: 2000, handshakeMs, commandMs });
  sessions.push(up);
  return up;
}

/**
 * Starts `start` and says how its promise settled: "ok" or the rejection's message, and after how many ms. The clock
 * starts before the call (or at `from`), before the command's deadline is set: a pause of the process in between
 * (a garbage collection late in a long run) would otherwise make the wait look shorter than the deadline.
 */
async function outcome(
  start: () => Promise<unknown>,
  from = performance.now(),
): Promise<{ result: string; ms: number }> {
  const result = await start().then(
    () => "ok",
    (e: Error) => e.message,
  );
  return { result, ms: performance.now() - from };
}

test("a command without its tagged reply fails the session at its deadline, not before", async () => {
  const up = await open(await scripted([null]), 1000);
  const { result, ms } = await outcome(() => up.run({ name: "NOOP" }));
  expect(result).toBe("the upstream server did not answer in time");
  expect(ms).toBeGreaterThanOrEqual(1000);
  expect(ms).toBeLessThan(3000);
  expect(up.closed).toBe(true);
});

test("a command answered before its deadline succeeds", async () => {
  const up = await open(await scripted([500]), 1000);
  expect((await outcome(() => up.run({ name: "NOOP" }))).result).toBe("ok");
  expect(up.closed).toBe(false);
});

test("a deadline is its command's own: one answered in time leaves nothing to fail a later, slower one", async () => {
  // The first command's deadline (3,000 ms) passes while the second, started 1,500 ms later and answered after
  // 2,250 ms, is still in flight; each side of that has 750 ms to spare on a loaded machine.
  const up = await open(await scripted([0, 2250, 0]), 3000);
  expect((await outcome(() => up.run({ name: "NOOP" }))).result).toBe("ok");
  await Bun.sleep(1500);
  expect((await outcome(() => up.run({ name: "NOOP" }))).result).toBe("ok");
  expect(up.closed).toBe(false);
  expect((await outcome(() => up.run({ name: "NOOP" }))).result).toBe("ok");
});

test("a command pipelined behind another has a deadline of its own", async () => {
  const up = await open(await scripted([0, null]), 1000);
  const first = up.run({ name: "NOOP" });
  const sent = performance.now();
  const second = up.pipeline({ name: "NOOP" });
  expect(second).not.toBeNull();
  expect((await outcome(() => first)).result).toBe("ok");
  const { result, ms } = await outcome(() => second!, sent);
  expect(result).toBe("the upstream server did not answer in time");
  expect(ms).toBeGreaterThanOrEqual(1000);
  expect(ms).toBeLessThan(3000);
});

test("IDLE has no deadline until DONE; then the reply must come within the handshake timeout", async () => {
  // A NOOP first: the watchdog is armed for its deadline (1,000 ms) and fires during the IDLE.
  const up = await open(await scripted([0, null]), 1000, 500);
  expect((await outcome(() => up.run({ name: "NOOP" }))).result).toBe("ok");
  const idle = await up.idle(() => {});
  // Past commandMs: an IDLE in progress is not a command waiting for its reply.
  await Bun.sleep(1300);
  expect(up.closed).toBe(false);
  const { result, ms } = await outcome(() => idle.done());
  expect(result).toBe("the upstream server did not end IDLE");
  expect(ms).toBeGreaterThanOrEqual(500);
  expect(ms).toBeLessThan(2500);
});

test("IDLE never started (no `+`): the session fails at commandMs, not before", async () => {
  // Before, an IDLE had no deadline until its `+`: the session, and the agent's DONE, waited for good.
  const up = await open(await scripted([null], { idlePlus: false }), 1000);
  const { result, ms } = await outcome(() => up.idle(() => {}));
  expect(result).toBe("the upstream server did not start IDLE");
  expect(ms).toBeGreaterThanOrEqual(1000);
  expect(ms).toBeLessThan(3000);
  expect(up.closed).toBe(true);
});

test("an IDLE started in time has no deadline from its `+` until DONE, past commandMs", async () => {
  const up = await open(await scripted([0, 0]), 1000);
  const idle = await up.idle(() => {});
  await Bun.sleep(1500);
  expect(up.closed).toBe(false);
  expect((await outcome(() => idle.done())).result).toBe("ok");
  expect((await outcome(() => up.run({ name: "NOOP" }))).result).toBe("ok");
});

test("DONE's deadline, earlier than the one the watchdog was armed for, is kept", async () => {
  // The NOOP's deadline is 60 s away when IDLE begins; DONE's 500 ms must not wait for it.
  const up = await open(await scripted([0, null]), 60_000, 500);
  expect((await outcome(() => up.run({ name: "NOOP" }))).result).toBe("ok");
  const idle = await up.idle(() => {});
  const { result, ms } = await outcome(() => idle.done());
  expect(result).toBe("the upstream server did not end IDLE");
  expect(ms).toBeGreaterThanOrEqual(500);
  expect(ms).toBeLessThan(2500);
});

test("IDLE ended in time: the session goes on", async () => {
  const up = await open(await scripted([200, 0]), 1000, 1000);
  const idle = await up.idle(() => {});
  await Bun.sleep(1300);
  expect((await outcome(() => idle.done())).result).toBe("ok");
  expect((await outcome(() => up.run({ name: "NOOP" }))).result).toBe("ok");
});
