/**
 * `[limits]` of the IMAP proxy end to end against Dovecot (docs/config.md, docs/reliability.md "Connections and
 * timeouts"): floods of half-closed, silent and logged-in idle connections from one address do not keep an agent
 * from another address out, and are dropped at their timeouts; each connection and session limit at the limit and
 * one past it, with its audit row; the login, inactivity and IDLE timeouts; a client that never reads its answers,
 * and one that sends malformed lines (MAX_BAD_COMMANDS). Loopback clients take their own
 * addresses from 127.0.0.0/8 to stand for different hosts.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connect, type Socket } from "node:net";
import {
  IMAP_IDLE_COMMAND_TIMEOUT_MS,
  IMAP_IDLE_TIMEOUT_MS,
  IMAP_MAX_CONNECTIONS,
  IMAP_MAX_CONNECTIONS_PER_IP,
  LOGIN_TIMEOUT_MS,
  MAX_SESSIONS_PER_AGENT,
} from "../../src/config/limits.ts";
import { AUDIT_BACKLOG_PAUSE_ROWS, BAD_COMMAND_WINDOW_MS, MAX_BAD_COMMANDS } from "../../src/imap/limits.ts";
import { MAX_LINE } from "../../src/imap/wire/limits.ts";
import { END_GRACE_MS, MAX_LOGIN_NAME_BYTES, MAX_LOGIN_PASSWORD_BYTES } from "../../src/net/index.ts";
import { generateToken, hashToken } from "../../src/vault/token.ts";
import { backlogAudit } from "../fixtures/audit-backlog.ts";
import { createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { auditCursor, RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

const FLOOD = 300;

let mailbox: TestMailbox;
/** Each agent's own token (two agents may not share one: a config error). */
const tokens = new Map<string, string>();
function tokenOf(agent: string): string {
  let token = tokens.get(agent);
  if (token === undefined) tokens.set(agent, (token = generateToken()));
  return token;
}

beforeAll(async () => {
  mailbox = await createMailbox({ seed: { folders: { INBOX: 3 }, seed: 11 } });
});

/** Vault agents `a0`…`a{n-1}` and `reader`, all on the test mailbox, each with its own token. */
function vault(agents: number): string {
  let out = "";
  for (const name of [...Array.from({ length: agents }, (_, i) => `a${i}`), "reader"])
    out += `[[agents]]\nname = "${name}"\ntoken_hash = "${hashToken(tokenOf(name))}"\naccount = "main"\n\n`;
  return `${out}[accounts.main]\nusername = "${mailbox.user}"\npassword = "${mailbox.password}"\n`;
}

/** A raw client whose own address is `from`; the greeting is left unread. */
async function rawFrom(port: number, from: string, options: { halfOpen?: boolean } = {}): Promise<RawImap> {
  const socket = await new Promise<Socket>((resolve, reject) => {
    const s = connect({ host: "127.0.0.1", port, localAddress: from, allowHalfOpen: options.halfOpen ?? false }, () =>
      resolve(s),
    );
    s.once("error", reject);
  });
  return RawImap.fromSocket(socket);
}

/** The first line the server sent. */
async function firstLine(c: RawImap): Promise<string> {
  const b = await c.readUntil((buffer) => buffer.includes("\r\n"));
  return c.take(b.includes("\r\n") ? b.indexOf("\r\n") + 2 : b.length).trimEnd();
}

/** `count` connections from `from`, one after another; returns the accepted ones and the greetings of the rest. */
async function flood(
  port: number,
  from: string,
  count: number,
  options: { halfOpen?: boolean } = {},
): Promise<{ accepted: RawImap[]; refused: string[]; connectedAt: Map<RawImap, number> }> {
  const accepted: RawImap[] = [];
  const refused: string[] = [];
  const connectedAt = new Map<RawImap, number>();
  for (let i = 0; i < count; i++) {
    const c = await rawFrom(port, from, options);
    connectedAt.set(c, performance.now());
    const line = await firstLine(c);
    if (line.startsWith("* OK")) accepted.push(c);
    else {
      refused.push(line);
      c.close();
    }
  }
  return { accepted, refused, connectedAt };
}

/** Logs in as the vault agent `reader` from `from`, selects INBOX and reads its first message: the time it took. */
async function readAtOnce(port: number, from: string): Promise<number> {
  const started = performance.now();
  const c = await rawFrom(port, from);
  try {
    expect(await firstLine(c)).toStartWith("* OK");
    expect(statusOf(await c.command("a", `LOGIN reader ${tokenOf("reader")}`), "a")).toStartWith("a OK");
    expect(statusOf(await c.command("b", "SELECT INBOX"), "b")).toStartWith("b OK");
    const fetched = await c.command("c", "FETCH 1 (BODY.PEEK[])");
    expect(statusOf(fetched, "c")).toStartWith("c OK");
    expect(fetched).toContain("Message-ID:");
    return performance.now() - started;
  } finally {
    c.close();
  }
}

/**
 * Every client whose timeout (`ms` from `since`) has not come yet is still open: the flood held its places while
 * the other address was served. Returns how many were checked (a slow machine may have let some time out).
 */
function stillHeld(clients: RawImap[], since: Map<RawImap, number>, ms: number): number {
  const now = performance.now();
  const due = clients.filter((c) => now - since.get(c)! < ms - 200);
  for (const c of due) expect(c.closed).toBe(false);
  return due.length;
}

/** Waits until every client is closed by the server, or throws after `ms`. */
async function allClosed(clients: RawImap[], ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (clients.some((c) => !c.closed)) {
    if (Date.now() > deadline) throw new Error(`${clients.filter((c) => !c.closed).length} still open`);
    await Bun.sleep(50);
  }
}

/** True when a new connection from `from` is accepted (its greeting is OK). */
async function accepted(port: number, from: string): Promise<boolean> {
  const c = await rawFrom(port, from);
  try {
    return (await firstLine(c)).startsWith("* OK");
  } finally {
    c.close();
  }
}

test("the defaults are what docs/config.md says", () => {
  expect(IMAP_MAX_CONNECTIONS).toBe(256);
  expect(IMAP_MAX_CONNECTIONS_PER_IP).toBe(128);
  expect(MAX_SESSIONS_PER_AGENT).toBe(10);
  expect(LOGIN_TIMEOUT_MS).toBe(180_000);
  expect(IMAP_IDLE_TIMEOUT_MS).toBe(30 * 60_000);
  expect(IMAP_IDLE_COMMAND_TIMEOUT_MS).toBe(60 * 60_000);
});

describe("floods from one address", () => {
  test(`${FLOOD} silent connections: another address reads at once; silent ones get BYE at login_timeout`, async () => {
    const p = await startTestProxy({ extra: `${vault(0)}\n[limits]\nlogin_timeout = 12\n` });
    try {
      const { accepted: held, refused, connectedAt } = await flood(p.port, "127.0.0.1", FLOOD);
      const closedAt = new Map<RawImap, number>();
      for (const c of held) c.socket.once("close", () => closedAt.set(c, performance.now()));
      expect(held).toHaveLength(IMAP_MAX_CONNECTIONS_PER_IP);
      expect(refused).toHaveLength(FLOOD - IMAP_MAX_CONNECTIONS_PER_IP);
      for (const line of refused)
        expect(line).toBe(
          `* BYE [LIMIT] Too many connections from your address (limit ${IMAP_MAX_CONNECTIONS_PER_IP}); ` +
            `try again later`,
        );
      expect(await readAtOnce(p.port, "127.0.0.2")).toBeLessThan(6000);
      // The flood still holds its places: the read did not wait for them to go.
      const checked = stillHeld(held, connectedAt, 12_000);
      expect(checked).toBeGreaterThan(0);
      let refusedAgain = 0;
      if (checked === held.length) {
        expect(await accepted(p.port, "127.0.0.1")).toBe(false);
        refusedAgain = 1;
      }
      await allClosed(held, 30_000);
      for (const c of held) {
        expect(closedAt.get(c)! - connectedAt.get(c)!).toBeGreaterThanOrEqual(11_900);
        expect(await c.readUntil(() => false, 1)).toBe("* BYE Autologout; no login within 12 s\r\n");
      }
      expect(await accepted(p.port, "127.0.0.1")).toBe(true);
      const rows = (await p.rows()).filter((r) => r.command === "(connect)");
      expect(rows).toHaveLength(FLOOD - IMAP_MAX_CONNECTIONS_PER_IP + refusedAgain);
      expect(rows[0]).toMatchObject({
        decision: "deny",
        clientAddr: "127.0.0.1",
        protocol: "imap",
        reason: `connection refused: max_connections_per_ip (${IMAP_MAX_CONNECTIONS_PER_IP}) reached`,
      });
    } finally {
      await p.close();
    }
  }, 90_000);

  test(`${FLOOD} half-closed connections (LOGOUT, open): another reads; each ends ${END_GRACE_MS} ms on`, async () => {
    const p = await startTestProxy({ extra: vault(0) });
    try {
      const { accepted: held } = await flood(p.port, "127.0.0.1", FLOOD, { halfOpen: true });
      expect(held).toHaveLength(IMAP_MAX_CONNECTIONS_PER_IP);
      const ended = performance.now();
      for (const c of held) c.write("z LOGOUT\r\n");
      for (const c of held) expect(statusOf(await c.waitTagged("z"), "z")).toStartWith("z OK");
      // Each peer keeps its side open; the proxy's side is half-closed and still holds its place.
      expect(await readAtOnce(p.port, "127.0.0.2")).toBeLessThan(6000);
      // Checked only well inside the grace (normally 0.1 s after the LOGOUTs), so a stalled machine cannot let the
      // grace end between this check and the connection it makes.
      if (performance.now() - ended < END_GRACE_MS - 2500) expect(await accepted(p.port, "127.0.0.1")).toBe(false);
      // After the grace every place is free again: a full set from the same address is accepted.
      await Bun.sleep(Math.max(0, END_GRACE_MS + 500 - (performance.now() - ended)));
      const again = await flood(p.port, "127.0.0.1", IMAP_MAX_CONNECTIONS_PER_IP);
      expect(again.accepted).toHaveLength(IMAP_MAX_CONNECTIONS_PER_IP);
      for (const c of [...held, ...again.accepted]) c.close();
    } finally {
      await p.close();
    }
  }, 60_000);

  test(`${FLOOD} logged-in idle connections: another reads at once; idle ones get BYE at idle_timeout`, async () => {
    // Four agents of ten sessions fill the 40 places this address gets (a short version of 128 logins).
    const perIp = 40;
    const p = await startTestProxy({
      extra: `${vault(4)}\n[limits]\nmax_connections_per_ip = ${perIp}\nidle_timeout = 12\n`,
    });
    try {
      const { accepted: held, refused } = await flood(p.port, "127.0.0.1", FLOOD);
      expect(held).toHaveLength(perIp);
      expect(refused).toHaveLength(FLOOD - perIp);
      const loggedInAt = new Map<RawImap, number>();
      const closedAt = new Map<RawImap, number>();
      for (const c of held) c.socket.once("close", () => closedAt.set(c, performance.now()));
      await Promise.all(
        held.map(async (c, i) => {
          // Taken when the LOGIN is sent: the proxy's idle timer starts later (after its OK), so the time from here
          // to the close is at least the idle timeout whatever the delays of a loaded machine.
          const sentAt = performance.now();
          expect(statusOf(await c.command("l", `LOGIN a${i % 4} ${tokenOf(`a${i % 4}`)}`), "l")).toStartWith("l OK");
          loggedInAt.set(c, sentAt);
        }),
      );
      expect(await readAtOnce(p.port, "127.0.0.2")).toBeLessThan(6000);
      expect(stillHeld(held, loggedInAt, 12_000)).toBeGreaterThan(0);
      await allClosed(held, 30_000);
      for (const c of held) {
        expect(closedAt.get(c)! - loggedInAt.get(c)!).toBeGreaterThanOrEqual(12_000);
        expect(await c.readUntil(() => false, 1)).toBe("* BYE Autologout; idle for 12 s\r\n");
      }
      expect(await accepted(p.port, "127.0.0.1")).toBe(true);
    } finally {
      await p.close();
    }
  }, 90_000);
});

describe("connection limits at the limit and one past it", () => {
  test(`max_connections_per_ip ${IMAP_MAX_CONNECTIONS_PER_IP}, max_connections ${IMAP_MAX_CONNECTIONS}`, async () => {
    const p = await startTestProxy();
    try {
      const one = await flood(p.port, "127.0.0.1", IMAP_MAX_CONNECTIONS_PER_IP + 1);
      expect(one.accepted).toHaveLength(IMAP_MAX_CONNECTIONS_PER_IP);
      expect(one.refused).toEqual([
        `* BYE [LIMIT] Too many connections from your address (limit ${IMAP_MAX_CONNECTIONS_PER_IP}); try again later`,
      ]);
      const two = await flood(p.port, "127.0.0.2", IMAP_MAX_CONNECTIONS - IMAP_MAX_CONNECTIONS_PER_IP);
      expect(two.accepted).toHaveLength(IMAP_MAX_CONNECTIONS - IMAP_MAX_CONNECTIONS_PER_IP);
      const three = await flood(p.port, "127.0.0.3", 1);
      expect(three.refused).toEqual([
        `* BYE [LIMIT] Too many connections (limit ${IMAP_MAX_CONNECTIONS}); try again later`,
      ]);
      // A freed place is taken again (the proxy sees the close asynchronously).
      one.accepted.pop()!.close();
      let ok = false;
      for (let i = 0; i < 50 && !ok; i++) {
        await Bun.sleep(50);
        ok = await accepted(p.port, "127.0.0.3");
      }
      expect(ok).toBe(true);
      const rows = (await p.rows()).filter((r) => r.command === "(connect)");
      expect(rows.map((r) => [r.clientAddr, r.decision, r.detail])).toEqual([
        ["127.0.0.1", "deny", { limit: "max_connections_per_ip", value: IMAP_MAX_CONNECTIONS_PER_IP }],
        ["127.0.0.3", "deny", { limit: "max_connections", value: IMAP_MAX_CONNECTIONS }],
      ]);
      for (const c of [...one.accepted, ...two.accepted]) c.close();
    } finally {
      await p.close();
    }
  }, 60_000);
});

describe("max_sessions_per_agent", () => {
  test(`vault: ${MAX_SESSIONS_PER_AGENT} sessions of an agent log in; next gets BYE; freed place reused`, async () => {
    const p = await startTestProxy({ extra: vault(1) });
    const clients: RawImap[] = [];
    try {
      for (let i = 0; i < MAX_SESSIONS_PER_AGENT; i++) {
        const c = await RawImap.open(p.port);
        clients.push(c);
        expect(statusOf(await c.command("a", `LOGIN a0 ${tokenOf("a0")}`), "a")).toStartWith("a OK");
      }
      const extra = await RawImap.open(p.port);
      extra.write(`a LOGIN a0 ${tokenOf("a0")}\r\n`);
      await extra.readUntil(() => false, 5000).catch(() => {});
      expect(extra.closed).toBe(true);
      expect(extra.take()).toBe(`* BYE [LIMIT] Too many sessions for this agent (limit ${MAX_SESSIONS_PER_AGENT})\r\n`);
      // Another agent of the same account has places of its own.
      const other = await RawImap.open(p.port);
      clients.push(other);
      expect(statusOf(await other.command("a", `LOGIN reader ${tokenOf("reader")}`), "a")).toStartWith("a OK");
      // LOGOUT gives the place back.
      expect(statusOf(await clients[0]!.command("z", "LOGOUT"), "z")).toStartWith("z OK");
      const again = await RawImap.open(p.port);
      clients.push(again);
      expect(statusOf(await again.command("a", `LOGIN a0 ${tokenOf("a0")}`), "a")).toStartWith("a OK");
      const denied = (await p.rows()).filter((r) => r.decision === "deny");
      expect(denied).toHaveLength(1);
      expect(denied[0]).toMatchObject({
        command: "LOGIN",
        target: "a0",
        reason: `login refused: max_sessions_per_agent (${MAX_SESSIONS_PER_AGENT}) reached`,
      });
    } finally {
      for (const c of clients) c.close();
      await p.close();
    }
  });

  test("pass-through: counted per upstream login name, whatever its case, once the upstream accepted it", async () => {
    const p = await startTestProxy({ extra: "[limits]\nmax_sessions_per_agent = 2\n" });
    const clients: RawImap[] = [];
    try {
      const login = async (user: string, password: string): Promise<RawImap> => {
        const c = await RawImap.open(p.port);
        clients.push(c);
        c.write(`a LOGIN "${user}" "${password}"\r\n`);
        await c.readUntil((b) => b.includes("\r\n"), 10_000);
        return c;
      };
      for (let i = 0; i < 2; i++)
        expect(statusOf(await (await login(mailbox.user, mailbox.password)).waitTagged("a"), "a")).toStartWith("a OK");
      // A wrong password is an ordinary failure, not a place.
      expect(statusOf(await (await login(mailbox.user, "wrong")).waitTagged("a"), "a")).toBe(
        "a NO [AUTHENTICATIONFAILED] Authentication failed",
      );
      const third = await login(mailbox.user.toUpperCase(), mailbox.password);
      await third.readUntil(() => false, 5000).catch(() => {});
      expect(third.take()).toBe("* BYE [LIMIT] Too many sessions for this login (limit 2)\r\n");
      expect(third.closed).toBe(true);
    } finally {
      for (const c of clients) c.close();
      await p.close();
    }
  });
});

describe("timeouts", () => {
  let p: TestProxy;
  beforeAll(async () => {
    p = await startTestProxy({
      extra: `${vault(1)}\n[limits]\nlogin_timeout = 2\nidle_timeout = 2\n\n[limits.imap]\nidle_command_timeout = 4\n`,
    });
  });
  afterAll(async () => {
    await p.close();
  });

  test("login_timeout counts from the connection: commands before login do not extend it", async () => {
    // Timed from before the connection: the proxy's clock starts when it accepts, which a loaded host's greeting
    // may follow by some hundreds of milliseconds.
    const started = performance.now();
    const c = await RawImap.open(p.port);
    await Bun.sleep(1000);
    expect(statusOf(await c.command("a", "NOOP"), "a")).toStartWith("a OK");
    await c.readUntil(() => c.closed, 5000);
    const after = performance.now() - started;
    expect(after).toBeGreaterThanOrEqual(1900);
    expect(after).toBeLessThan(END_GRACE_MS);
    expect(c.take()).toBe("* BYE Autologout; no login within 2 s\r\n");
  });

  test("idle_timeout: pauses under it keep the session; a longer one gets BYE", async () => {
    const c = await RawImap.open(p.port);
    expect(statusOf(await c.command("a", `LOGIN a0 ${tokenOf("a0")}`), "a")).toStartWith("a OK");
    // Three pauses of 1.2 s, together longer than the limit and the login timeout.
    for (const tag of ["b", "c", "d"]) {
      await Bun.sleep(1200);
      expect(statusOf(await c.command(tag, "NOOP"), tag)).toStartWith(`${tag} OK`);
    }
    const started = performance.now();
    await c.readUntil(() => c.closed, 5000);
    expect(performance.now() - started).toBeGreaterThanOrEqual(1900);
    expect(c.take()).toBe("* BYE Autologout; idle for 2 s\r\n");
  });

  test("IDLE is not inactivity: it outlasts idle_timeout; past idle_command_timeout it gets BYE", async () => {
    const c = await RawImap.open(p.port);
    expect(statusOf(await c.command("a", `LOGIN a0 ${tokenOf("a0")}`), "a")).toStartWith("a OK");
    expect(statusOf(await c.command("b", "SELECT INBOX"), "b")).toStartWith("b OK");
    c.write("i IDLE\r\n");
    await c.readUntil((b) => b.includes("+ idling\r\n"));
    c.take();
    await Bun.sleep(3000);
    expect(c.closed).toBe(false);
    c.write("DONE\r\n");
    expect(statusOf(await c.waitTagged("i"), "i")).toBe("i OK Idle completed");
    c.write("j IDLE\r\n");
    const started = performance.now();
    await c.readUntil(() => c.closed, 8000);
    expect(performance.now() - started).toBeGreaterThanOrEqual(3900);
    expect(c.take()).toBe("+ idling\r\n* BYE Autologout; IDLE for 4 s\r\n");
  });
});

describe("timeouts that become nearer during a session: IDLE beginning and ending", () => {
  test("idle_command_timeout shorter than idle_timeout: the IDLE gets BYE at its own limit", async () => {
    const p = await startTestProxy({
      extra: `${vault(1)}\n[limits]\nidle_timeout = 10\n\n[limits.imap]\nidle_command_timeout = 2\n`,
    });
    try {
      const c = await RawImap.open(p.port);
      expect(statusOf(await c.command("a", `LOGIN a0 ${tokenOf("a0")}`), "a")).toStartWith("a OK");
      expect(statusOf(await c.command("b", "SELECT INBOX"), "b")).toStartWith("b OK");
      const started = performance.now();
      c.write("i IDLE\r\n");
      await c.readUntil(() => c.closed, 15_000);
      const after = performance.now() - started;
      // At the limit, not before; and not at idle_timeout, where the timer set before the IDLE would fire.
      expect(after).toBeGreaterThanOrEqual(1900);
      expect(after).toBeLessThan(6000);
      expect(c.take()).toBe("+ idling\r\n* BYE Autologout; IDLE for 2 s\r\n");
    } finally {
      await p.close();
    }
  });

  test("after DONE idle_timeout counts from the DONE, not from the IDLE's limit", async () => {
    const p = await startTestProxy({
      extra: `${vault(1)}\n[limits]\nidle_timeout = 2\n\n[limits.imap]\nidle_command_timeout = 10\n`,
    });
    try {
      const c = await RawImap.open(p.port);
      expect(statusOf(await c.command("a", `LOGIN a0 ${tokenOf("a0")}`), "a")).toStartWith("a OK");
      expect(statusOf(await c.command("b", "SELECT INBOX"), "b")).toStartWith("b OK");
      c.write("i IDLE\r\n");
      await c.readUntil((b) => b.includes("+ idling\r\n"));
      c.take();
      // Past idle_timeout in IDLE: the timer fires there and is set for the IDLE's limit, 10 s.
      await Bun.sleep(3000);
      expect(c.closed).toBe(false);
      c.write("DONE\r\n");
      expect(statusOf(await c.waitTagged("i"), "i")).toBe("i OK Idle completed");
      const started = performance.now();
      await c.readUntil(() => c.closed, 15_000);
      const after = performance.now() - started;
      expect(after).toBeGreaterThanOrEqual(1900);
      expect(after).toBeLessThan(5000);
      expect(c.take()).toBe("* BYE Autologout; idle for 2 s\r\n");
    } finally {
      await p.close();
    }
  });
});

describe("a session that ends while reading is paused", () => {
  test("LOGOUT followed by 2 MiB of pipelined commands: its place is free at once, not at the grace", async () => {
    // One place per address: the next connection from it is accepted only once the proxy has closed this one.
    const p = await startTestProxy({ extra: "[limits]\nmax_connections_per_ip = 1\n" });
    try {
      const c = await rawFrom(p.port, "127.0.0.1");
      expect(await firstLine(c)).toStartWith("* OK");
      const started = performance.now();
      // Far more than the 256 KiB the session reads ahead: it pauses reading behind LOGOUT.
      c.write(`z LOGOUT\r\n${"x NOOP\r\n".repeat(256 * 1024)}`);
      expect(statusOf(await c.waitTagged("z"), "z")).toBe("z OK Logout completed");
      let free = false;
      while (!free && performance.now() - started < END_GRACE_MS * 2) {
        free = await accepted(p.port, "127.0.0.1");
        if (!free) await Bun.sleep(100);
      }
      expect(free).toBe(true);
      expect(performance.now() - started).toBeLessThan(END_GRACE_MS - 1000);
      c.close();
    } finally {
      await p.close();
    }
  });
});

describe("hostile input", () => {
  let p: TestProxy;
  beforeAll(async () => {
    p = await startTestProxy({});
  });
  afterAll(async () => {
    await p?.close();
  });

  test("a client that sends commands and never reads the answers: the proxy stops reading it", async () => {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect({ host: "127.0.0.1", port: p.port }, () => resolve(s));
      s.once("error", reject);
    });
    await new Promise<void>((resolve) => socket.once("data", () => resolve()));
    socket.pause();
    // CAPABILITY is answered by the proxy itself, before login: 40 MiB of them would queue some 700 MiB of
    // answers, and far more memory, if the session went on reading while its output waited.
    Bun.gc(true);
    const before = process.memoryUsage.rss();
    const chunk = Buffer.from("a CAPABILITY\r\n".repeat(64 * 1024));
    const total = 40 * 1024 * 1024;
    let sent = 0;
    let stalled = false;
    while (sent < total && !stalled) {
      sent += chunk.length;
      if (socket.write(chunk)) continue;
      stalled = !(await Promise.race([
        new Promise<boolean>((resolve) => socket.once("drain", () => resolve(true))),
        Bun.sleep(2000).then(() => false),
      ]));
    }
    // Stalled well before the end: the proxy took what fills its read-ahead and the sockets' buffers, answered what
    // the sockets could hold, then waited. Before, it went on reading and answering into memory: some 300 octets
    // of memory for each octet it read (about 3 GB by the time the sender stalled on its own).
    expect(stalled).toBe(true);
    expect(sent).toBeLessThan(total / 2);
    expect(process.memoryUsage.rss() - before).toBeLessThan(256 * 1024 * 1024);
    socket.destroy();
    const other = await RawImap.open(p.port);
    expect(statusOf(await other.command("c", "CAPABILITY"), "c")).toBe("c OK Capability completed");
    other.close();
  });

  test(`past AUDIT_BACKLOG_PAUSE_ROWS (${AUDIT_BACKLOG_PAUSE_ROWS}) queued audit rows, a command waits`, async () => {
    // The log's queue is made to look that long; the next command waits until the log has committed it (flush).
    const backlog = backlogAudit();
    const q = await startTestProxy({
      wrapAudit: backlog.wrap,
    });
    try {
      const c = await RawImap.login(q.port, mailbox);
      // At the limit: no wait.
      backlog.setQueued(AUDIT_BACKLOG_PAUSE_ROWS);
      expect(statusOf(await c.command("a", "NOOP"), "a")).toStartWith("a OK");
      expect(backlog.flushes).toBe(0);
      // One past it: the NOOP is not answered before the queue is committed.
      backlog.setQueued(AUDIT_BACKLOG_PAUSE_ROWS + 1);
      c.write("n NOOP\r\n");
      await backlog.flushing;
      expect(await c.readUntil(() => true)).not.toContain("n OK");
      backlog.release();
      expect(statusOf(await c.waitTagged("n"), "n")).toStartWith("n OK");
      expect(backlog.flushes).toBe(1);
      c.close();
    } finally {
      await q.close();
    }
  });

  for (const end of ["reload", "shutdown"] as const) {
    test(`a command waiting for the backlog when a ${end} ends the session does not run: * BYE`, async () => {
      const backlog = backlogAudit();
      const q = await startTestProxy({ wrapAudit: backlog.wrap });
      let closing: Promise<void> | null = null;
      try {
        const c = await RawImap.login(q.port, mailbox);
        backlog.setQueued(AUDIT_BACKLOG_PAUSE_ROWS + 1);
        c.write("n SELECT INBOX\r\n");
        await backlog.flushing;
        // Another upstream (plain instead of TLS) ends every session (docs/operations.md "Reload").
        if (end === "reload") expect(q.reload({ wrapAudit: backlog.wrap, upstreamTls: "none" })).toBe(1);
        else closing = q.proxy.close();
        backlog.release();
        const out = await c.readUntil(() => false, 5000);
        expect(c.closed).toBe(true);
        expect(out).toContain(end === "reload" ? "* BYE Configuration changed" : "* BYE Server shutting down");
        expect(out).not.toContain("n OK");
        expect(out).not.toContain("EXISTS");
        await closing;
        expect((await q.rows()).filter((r) => r.command === "SELECT")).toEqual([]);
      } finally {
        await closing;
        await q.close();
      }
    });
  }

  for (const [what, start] of [
    ["an AUTHENTICATE response", (c: RawImap) => c.write("a AUTHENTICATE PLAIN\r\n")],
    [
      "IDLE's DONE",
      async (c: RawImap) => {
        expect(statusOf(await c.command("L", `LOGIN "${mailbox.user}" "${mailbox.password}"`), "L")).toStartWith(
          "L OK",
        );
        c.write("i IDLE\r\n");
      },
    ],
  ] as const)
    test(`a line past MAX_LINE where ${what} is read ends the session with * BYE`, async () => {
      const c = await RawImap.open(p.port);
      await start(c);
      await c.readUntil((b) => b.includes("+ "));
      const rows = auditCursor(p);
      await rows();
      c.write(`${"A".repeat(MAX_LINE + 1)}\r\n`);
      expect(await c.readUntil((b) => b.includes("* BYE"))).toContain(
        `* BYE [TOOBIG] line longer than ${MAX_LINE} octets\r\n`,
      );
      await c.readUntil(() => false, 5000, "the session was not closed");
      expect(c.closed).toBe(true);
      expect((await rows()).filter((r) => r.command === "(refused)").map((r) => [r.decision, r.reason])).toEqual([
        ["deny", `line longer than ${MAX_LINE} octets; the session was ended`],
      ]);
    });

  test(`a command line of MAX_LINE (${MAX_LINE}) octets is run; one more: * BYE [TOOBIG] and a deny row`, async () => {
    const rows = auditCursor(p);
    const c = await RawImap.login(p.port, mailbox);
    try {
      // A LIST pattern that fills the line: answered as before (no folder matches it), and the session goes on.
      const list = (tag: string): string => `${tag} LIST "" "${"x".repeat(MAX_LINE - 13)}%"`;
      expect(list("a")).toHaveLength(MAX_LINE);
      c.write(`${list("a")}\r\n`);
      expect(await c.waitTagged("a")).toBe("a OK LIST completed\r\n");
      expect(statusOf(await c.command("n", "NOOP"), "n")).toStartWith("n OK");
      await rows();
      // One octet past the limit (a longer tag): the session ends, the agent told why first (RFC 9051 §7.1.5).
      expect(list("bb")).toHaveLength(MAX_LINE + 1);
      c.write(`${list("bb")}\r\n`);
      const bye = await c.readUntil(() => false, 5000, "the session was not closed");
      expect(bye).toBe(`* BYE [TOOBIG] line longer than ${MAX_LINE} octets\r\n`);
      expect(c.closed).toBe(true);
      const own = await rows();
      expect(own.map((r) => [r.command, r.decision, r.rule, r.reason])).toEqual([
        ["(refused)", "deny", null, `line longer than ${MAX_LINE} octets; the session was ended`],
      ]);
    } finally {
      c.close();
    }
  });

  test("login names and passwords at MAX_LOGIN_NAME_BYTES, MAX_LOGIN_PASSWORD_BYTES and one octet past", async () => {
    const audit = auditCursor(p);
    await audit();
    // Each from an address of its own: the login throttle's delay would add up otherwise.
    const attempt = async (from: string, line: string, literal: string | null): Promise<string> => {
      const c = await rawFrom(p.port, from);
      try {
        await firstLine(c);
        c.write(line);
        if (literal !== null) {
          await c.readUntil((b) => b.includes("+ "));
          c.take();
          c.write(`${literal}\r\n`);
        }
        return statusOf(await c.waitTagged("a"), "a");
      } finally {
        c.close();
      }
    };
    const name = "n".repeat(MAX_LOGIN_NAME_BYTES);
    const password = "p".repeat(MAX_LOGIN_PASSWORD_BYTES);
    const plain = (user: string, pass: string) => Buffer.from(`\0${user}\0${pass}`).toString("base64");
    const cases = [
      ["127.0.0.61", `a LOGIN ${name} ${password}\r\n`, null, "the upstream server refused the credentials"],
      ["127.0.0.62", `a LOGIN ${name}n ${password}\r\n`, null, `login name over ${MAX_LOGIN_NAME_BYTES} octets`],
      // Octets, not characters: 128 two-octet characters are 256 octets.
      ["127.0.0.63", `a LOGIN {256+}\r\n${"é".repeat(128)} x\r\n`, null, "login name over 255 octets"],
      ["127.0.0.64", `a AUTHENTICATE PLAIN ${plain(name, password)}\r\n`, null, "the upstream server refused"],
      [
        "127.0.0.65",
        `a AUTHENTICATE PLAIN ${plain("u", `${password}p`)}\r\n`,
        null,
        `password over ${MAX_LOGIN_PASSWORD_BYTES} octets`,
      ],
      [
        "127.0.0.66",
        `a LOGIN ${mailbox.user} {61440}\r\n`,
        "p".repeat(61440),
        `password over ${MAX_LOGIN_PASSWORD_BYTES} octets`,
      ],
    ] as const;
    for (const [from, line, literal, reason] of cases) {
      expect(await attempt(from, line, literal)).toBe("a NO [AUTHENTICATIONFAILED] Authentication failed");
      const rows = (await audit()).filter((r) => r.decision === "deny");
      expect(rows.map((r) => r.reason)).toEqual([expect.stringContaining(reason)]);
      expect(rows[0]!.target!.length).toBeLessThanOrEqual(200);
    }
  });

  test(`${MAX_BAD_COMMANDS} malformed lines before login end the session (MAX_BAD_COMMANDS)`, async () => {
    const c = await RawImap.open(p.port);
    const rows = auditCursor(p);
    await rows();
    for (let i = 1; i < MAX_BAD_COMMANDS; i++) expect(await c.command(`b${i}`, "(((")).toContain(`b${i} BAD`);
    expect(c.closed).toBe(false);
    // A command that parses does not start the count again before login.
    expect(statusOf(await c.command("n", "NOOP"), "n")).toStartWith("n OK");
    c.write("x\r\n");
    const bye = await c.readUntil((b) => b.includes("* BYE"));
    expect(bye).toContain("* BYE Too many invalid commands");
    await c.readUntil(() => false, 5000, "the session was not closed");
    expect(c.closed).toBe(true);
    expect((await rows()).filter((r) => r.command === "(refused)")).toHaveLength(MAX_BAD_COMMANDS);
  });

  test(`after login, within ${BAD_COMMAND_WINDOW_MS / 1000} s: well-formed commands between do not help`, async () => {
    // Those before login do not follow the session past it.
    const c = await RawImap.open(p.port);
    for (let i = 1; i < MAX_BAD_COMMANDS; i++) expect(await c.command(`p${i}`, "(((")).toContain(`p${i} BAD`);
    expect(statusOf(await c.command("L", `LOGIN "${mailbox.user}" "${mailbox.password}"`), "L")).toStartWith("L OK");
    const rows = auditCursor(p);
    await rows();
    // Alternating a malformed line with one that parses used to start the count again each time, so a session could
    // write refusal rows at line speed for as long as it liked.
    for (let i = 1; i < MAX_BAD_COMMANDS; i++) {
      expect(await c.command(`b${i}`, "FETCH (((")).toContain(`b${i} BAD`);
      expect(statusOf(await c.command(`n${i}`, "NOOP"), `n${i}`)).toStartWith(`n${i} OK`);
    }
    c.write("x\r\n");
    expect(await c.readUntil((b) => b.includes("* BYE"))).toContain("* BYE Too many invalid commands");
    await c.readUntil(() => false, 5000, "the session was not closed");
    expect(c.closed).toBe(true);
    expect((await rows()).filter((r) => r.command === "(refused)")).toHaveLength(MAX_BAD_COMMANDS);
  });
});
