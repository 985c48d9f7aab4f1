/**
 * `[limits]` of the SMTP proxy end to end against Postfix (docs/config.md, docs/reliability.md "Connections and
 * timeouts"): floods of half-closed, silent and logged-in idle connections from one address do not keep an agent
 * from another address from sending, and are dropped at their timeouts; the per-address and per-agent limits at
 * the limit and one past it, with their audit rows; the login timeout. Loopback clients take their own addresses
 * from 127.0.0.0/8 to stand for different hosts.
 */

import { describe, expect, test } from "bun:test";
import { AUDIT_BACKLOG_PAUSE_ROWS } from "../../src/audit/index.ts";
import { LOGIN_TIMEOUT_MS, MAX_SESSIONS_PER_AGENT, SMTP_MAX_CONNECTIONS_PER_IP } from "../../src/config/limits.ts";
import { END_GRACE_MS } from "../../src/net/index.ts";
import { generateToken, hashToken } from "../../src/vault/token.ts";
import { backlogAudit } from "../fixtures/audit-backlog.ts";
import {
  CORP_ONLY_RULES,
  dataPayload,
  loggedIn,
  marker,
  message,
  RawClient,
  startTestProxy,
  type TestProxy,
  upstreams,
  waitForSink,
} from "./helpers.ts";

const FLOOD = 300;

const EVERYTHING = `
[[rules]]
name = "everything"
action = "allow"
`;
/** Each agent's own token (two agents may not share one: a config error). */
const tokens = new Map<string, string>();
function tokenOf(agent: string): string {
  let token = tokens.get(agent);
  if (token === undefined) tokens.set(agent, (token = generateToken()));
  return token;
}

/** Vault agents `a0`…`a{n-1}` and `sender` on the first test user, and `[limits]` keys. */
function config(agents: number, limits = ""): string {
  const user = upstreams().users[0]!;
  let out = CORP_ONLY_RULES;
  for (const name of [...Array.from({ length: agents }, (_, i) => `a${i}`), "sender"])
    out += `\n[[agents]]\nname = "${name}"\ntoken_hash = "${hashToken(tokenOf(name))}"\naccount = "main"\n`;
  out += `\n[accounts.main]\nusername = "${user.user}"\npassword = "${user.password}"\n`;
  return `${out}\n[limits]\n${limits}\n`;
}

function auth(agent: string): string {
  return `AUTH PLAIN ${Buffer.from(`\0${agent}\0${tokenOf(agent)}`).toString("base64")}`;
}

/** `count` connections from `from`, one after another: the accepted ones, and the replies of the refused. */
async function flood(
  port: number,
  from: string,
  count: number,
): Promise<{ accepted: RawClient[]; refused: string[]; connectedAt: Map<RawClient, number> }> {
  const accepted: RawClient[] = [];
  const refused: string[] = [];
  const connectedAt = new Map<RawClient, number>();
  for (let i = 0; i < count; i++) {
    const c = await RawClient.connect(port, "127.0.0.1", from);
    connectedAt.set(c, performance.now());
    const r = await c.reply();
    if (r.code === 220) accepted.push(c);
    else {
      refused.push(r.raw.trimEnd());
      c.close();
    }
  }
  return { accepted, refused, connectedAt };
}

/** The agent `sender` connects from `from` and sends one message through Postfix: the time it took. */
async function sendAtOnce(p: TestProxy, from: string): Promise<number> {
  const started = performance.now();
  const c = await RawClient.connect(p.port, "127.0.0.1", from);
  try {
    expect((await c.reply()).code).toBe(220);
    expect((await c.command("EHLO agent.test")).code).toBe(250);
    expect((await c.command(auth("sender"))).code).toBe(235);
    const id = marker();
    expect((await c.command(`MAIL FROM:<${upstreams().users[0]!.user}>`)).code).toBe(250);
    expect((await c.command(`RCPT TO:<to-${id}@corp.test>`)).code).toBe(250);
    expect((await c.command("DATA")).code).toBe(354);
    c.write(dataPayload(message({ To: `to-${id}@corp.test`, Subject: `limits ${id}` }, "hello\n")));
    expect((await c.reply(30_000)).code).toBe(250);
    const took = performance.now() - started;
    await waitForSink(id, 1);
    return took;
  } finally {
    c.close();
  }
}

/**
 * Every client whose timeout (`ms` from `since`) has not come yet is still open: the flood held its places while
 * the other address was served. Returns how many were checked (a slow machine may have let some time out).
 */
function stillHeld(clients: RawClient[], since: Map<RawClient, number>, ms: number): number {
  const now = performance.now();
  const due = clients.filter((c) => now - since.get(c)! < ms - 200);
  for (const c of due) expect(c.closed).toBe(false);
  return due.length;
}

async function allClosed(clients: RawClient[], ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (clients.some((c) => !c.closed)) {
    if (Date.now() > deadline) throw new Error(`${clients.filter((c) => !c.closed).length} still open`);
    await Bun.sleep(50);
  }
}

async function accepted(port: number, from: string): Promise<boolean> {
  const c = await RawClient.connect(port, "127.0.0.1", from);
  try {
    return (await c.reply()).code === 220;
  } finally {
    c.close();
  }
}

test("the defaults are what docs/config.md says", () => {
  expect(SMTP_MAX_CONNECTIONS_PER_IP).toBe(50);
  expect(MAX_SESSIONS_PER_AGENT).toBe(10);
  expect(LOGIN_TIMEOUT_MS).toBe(180_000);
});

describe("floods from one address", () => {
  test(`${FLOOD} silent connections: another address sends at once; silent ones get 421 at login_timeout`, async () => {
    const p = await startTestProxy({ rules: config(0, "login_timeout = 12") });
    try {
      const { accepted: held, refused, connectedAt } = await flood(p.port, "127.0.0.1", FLOOD);
      const closedAt = new Map<RawClient, number>();
      for (const c of held) c.socket.once("close", () => closedAt.set(c, performance.now()));
      expect(held).toHaveLength(SMTP_MAX_CONNECTIONS_PER_IP);
      expect(refused).toHaveLength(FLOOD - SMTP_MAX_CONNECTIONS_PER_IP);
      for (const r of refused)
        expect(r).toBe(
          `421 4.7.0 Too many connections from your address (limit ${SMTP_MAX_CONNECTIONS_PER_IP}); try again later`,
        );
      expect(await sendAtOnce(p, "127.0.0.2")).toBeLessThan(6000);
      expect(stillHeld(held, connectedAt, 12_000)).toBeGreaterThan(0);
      await allClosed(held, 30_000);
      for (const c of held) {
        expect(closedAt.get(c)! - connectedAt.get(c)!).toBeGreaterThanOrEqual(11_900);
        expect((await c.reply()).raw).toBe("421 4.4.2 No login within 12 s; closing\r\n");
      }
      expect(await accepted(p.port, "127.0.0.1")).toBe(true);
      const rows = (await p.rows()).filter((r) => r.command === "(connect)");
      expect(rows).toHaveLength(FLOOD - SMTP_MAX_CONNECTIONS_PER_IP);
      expect(rows[0]).toMatchObject({
        decision: "deny",
        clientAddr: "127.0.0.1",
        protocol: "smtp",
        reason: `connection refused: max_connections_per_ip (${SMTP_MAX_CONNECTIONS_PER_IP}) reached`,
      });
    } finally {
      await p.close();
    }
  }, 90_000);

  test(`${FLOOD} half-closed connections (QUIT, socket open): another sends; each destroyed after grace`, async () => {
    const p = await startTestProxy({ rules: config(0) });
    try {
      const held: RawClient[] = [];
      for (let i = 0; i < FLOOD; i++) {
        const c = await RawClient.connect(p.port, "127.0.0.1", "127.0.0.1");
        // The peer keeps its side open after the server's FIN.
        c.socket.allowHalfOpen = true;
        if ((await c.reply()).code === 220) held.push(c);
        else c.close();
      }
      expect(held).toHaveLength(SMTP_MAX_CONNECTIONS_PER_IP);
      const ended = performance.now();
      for (const c of held) c.write("QUIT\r\n");
      for (const c of held) expect((await c.reply()).code).toBe(221);
      expect(await sendAtOnce(p, "127.0.0.2")).toBeLessThan(6000);
      // Checked only well inside the grace (normally 0.1 s after the QUITs), so a stalled machine cannot let the
      // grace end between this check and the connection it makes.
      if (performance.now() - ended < END_GRACE_MS - 2500) expect(await accepted(p.port, "127.0.0.1")).toBe(false);
      await Bun.sleep(Math.max(0, END_GRACE_MS + 500 - (performance.now() - ended)));
      const again = await flood(p.port, "127.0.0.1", SMTP_MAX_CONNECTIONS_PER_IP);
      expect(again.accepted).toHaveLength(SMTP_MAX_CONNECTIONS_PER_IP);
      for (const c of [...held, ...again.accepted]) c.close();
    } finally {
      await p.close();
    }
  }, 60_000);

  test(`${FLOOD} logged-in idle connections: another sends at once; idle ones get 421 at idle_timeout`, async () => {
    const p = await startTestProxy({ rules: config(5, "idle_timeout = 12") });
    try {
      const { accepted: held } = await flood(p.port, "127.0.0.1", FLOOD);
      expect(held).toHaveLength(SMTP_MAX_CONNECTIONS_PER_IP);
      const active = new Map<RawClient, number>();
      const closedAt = new Map<RawClient, number>();
      for (const c of held) c.socket.once("close", () => closedAt.set(c, performance.now()));
      for (const [i, c] of held.entries()) {
        expect((await c.command("EHLO idle.test")).code).toBe(250);
        expect((await c.command(auth(`a${i % 5}`))).code).toBe(235);
        active.set(c, performance.now());
      }
      expect(await sendAtOnce(p, "127.0.0.2")).toBeLessThan(6000);
      expect(stillHeld(held, active, 12_000)).toBeGreaterThan(0);
      await allClosed(held, 30_000);
      for (const c of held) {
        expect(closedAt.get(c)! - active.get(c)!).toBeGreaterThanOrEqual(11_900);
        expect((await c.reply()).raw).toBe("421 4.4.2 Idle for 12 s; closing\r\n");
      }
    } finally {
      await p.close();
    }
  }, 90_000);
});

describe("limits at the limit and one past it", () => {
  test(`max_connections_per_ip ${SMTP_MAX_CONNECTIONS_PER_IP}: next from it gets 421; another is served`, async () => {
    const p = await startTestProxy({ rules: config(0) });
    try {
      const one = await flood(p.port, "127.0.0.1", SMTP_MAX_CONNECTIONS_PER_IP + 1);
      expect(one.accepted).toHaveLength(SMTP_MAX_CONNECTIONS_PER_IP);
      expect(one.refused).toEqual([
        `421 4.7.0 Too many connections from your address (limit ${SMTP_MAX_CONNECTIONS_PER_IP}); try again later`,
      ]);
      expect(await accepted(p.port, "127.0.0.2")).toBe(true);
      const rows = (await p.rows()).filter((r) => r.command === "(connect)");
      expect(rows.map((r) => [r.clientAddr, r.decision, r.detail])).toEqual([
        ["127.0.0.1", "deny", { limit: "max_connections_per_ip", value: SMTP_MAX_CONNECTIONS_PER_IP }],
      ]);
      for (const c of one.accepted) c.close();
    } finally {
      await p.close();
    }
  });

  test(`max_sessions_per_agent ${MAX_SESSIONS_PER_AGENT} (vault): next AUTH 421, deny row; QUIT frees 1`, async () => {
    const p = await startTestProxy({ rules: config(1) });
    const clients: RawClient[] = [];
    try {
      const open = async (agent: string): Promise<{ c: RawClient; code: number; raw: string }> => {
        const c = await RawClient.connect(p.port);
        clients.push(c);
        await c.reply();
        await c.command("EHLO agent.test");
        const r = await c.command(auth(agent));
        return { c, code: r.code, raw: r.raw };
      };
      for (let i = 0; i < MAX_SESSIONS_PER_AGENT; i++) expect((await open("a0")).code).toBe(235);
      const extra = await open("a0");
      expect(extra.raw).toBe(
        `421 4.7.0 Too many sessions for this agent (limit ${MAX_SESSIONS_PER_AGENT}); closing\r\n`,
      );
      await extra.c.waitClosed();
      expect((await open("sender")).code).toBe(235);
      expect((await clients[0]!.command("QUIT")).code).toBe(221);
      await clients[0]!.waitClosed();
      expect((await open("a0")).code).toBe(235);
      const denied = (await p.rows()).filter((r) => r.decision === "deny");
      expect(denied).toHaveLength(1);
      expect(denied[0]).toMatchObject({
        command: "AUTH",
        target: "a0",
        reason: `login refused: max_sessions_per_agent (${MAX_SESSIONS_PER_AGENT}) reached`,
      });
    } finally {
      for (const c of clients) c.close();
      await p.close();
    }
  });

  test("max_sessions_per_agent (pass-through): per upstream login, any case, once Postfix accepted it", async () => {
    const p = await startTestProxy({ rules: `${CORP_ONLY_RULES}\n[limits]\nmax_sessions_per_agent = 2\n` });
    const clients: RawClient[] = [];
    const user = upstreams().users[0]!;
    try {
      const login = async (name: string, password: string): Promise<string> => {
        const c = await RawClient.connect(p.port);
        clients.push(c);
        await c.reply();
        await c.command("EHLO agent.test");
        return (await c.command(`AUTH PLAIN ${Buffer.from(`\0${name}\0${password}`).toString("base64")}`)).raw;
      };
      expect(await login(user.user, user.password)).toStartWith("235");
      expect(await login(user.user, user.password)).toStartWith("235");
      expect(await login(user.user, "wrong")).toStartWith("535");
      expect(await login(user.user.toUpperCase(), user.password)).toBe(
        "421 4.7.0 Too many sessions for this login (limit 2); closing\r\n",
      );
    } finally {
      for (const c of clients) c.close();
      await p.close();
    }
  });

  test("login_timeout counts from connect: commands before AUTH don't extend it; after AUTH it's over", async () => {
    const p = await startTestProxy({ rules: config(0, "login_timeout = 2") });
    try {
      const c = await RawClient.connect(p.port);
      const started = performance.now();
      await c.reply();
      await Bun.sleep(1000);
      expect((await c.command("EHLO agent.test")).code).toBe(250);
      expect((await c.reply(5000)).raw).toBe("421 4.4.2 No login within 2 s; closing\r\n");
      expect(performance.now() - started).toBeGreaterThanOrEqual(1900);
      await c.waitClosed();
      const d = await RawClient.connect(p.port);
      await d.reply();
      await d.command("EHLO agent.test");
      expect((await d.command(auth("sender"))).code).toBe(235);
      await Bun.sleep(2500);
      expect((await d.command("NOOP")).code).toBe(250);
      d.close();
    } finally {
      await p.close();
    }
  });
});

describe("the audit log's backlog", () => {
  test(`past AUDIT_BACKLOG_PAUSE_ROWS (${AUDIT_BACKLOG_PAUSE_ROWS}) queued rows, a command waits`, async () => {
    // The log's queue is made to look that long; the next command waits until the log has committed it (flush).
    const backlog = backlogAudit();
    const p = await startTestProxy({
      rules: CORP_ONLY_RULES,
      wrapAudit: backlog.wrap,
    });
    const c = await RawClient.connect(p.port);
    try {
      await c.reply();
      // At the limit: no wait.
      backlog.setQueued(AUDIT_BACKLOG_PAUSE_ROWS);
      expect((await c.command("EHLO agent.test")).raw).toStartWith("250");
      expect(backlog.flushes).toBe(0);
      // One past it: the NOOP is not answered before the queue is committed.
      backlog.setQueued(AUDIT_BACKLOG_PAUSE_ROWS + 1);
      const noop = c.command("NOOP");
      await backlog.flushing;
      const early = await Promise.race([noop.then(() => "answered"), Bun.sleep(300).then(() => "waiting")]);
      expect(early).toBe("waiting");
      backlog.release();
      expect((await noop).raw).toStartWith("250");
      expect(backlog.flushes).toBe(1);
    } finally {
      c.close();
      await p.close();
    }
  });

  for (const end of ["reload", "shutdown"] as const) {
    test(`a command waiting for the backlog when a ${end} ends the session does not run: a 421`, async () => {
      const backlog = backlogAudit();
      const p = await startTestProxy({ rules: EVERYTHING, wrapAudit: backlog.wrap });
      let closing: Promise<void> | null = null;
      try {
        const c = await loggedIn(p.port);
        backlog.setQueued(AUDIT_BACKLOG_PAUSE_ROWS + 1);
        const mail = c.command("MAIL FROM:<alice@mailgator.test>");
        await backlog.flushing;
        if (end === "reload") {
          // Another upstream address: every session ends (docs/operations.md "Reload").
          const config = p.config;
          p.proxy
            .prepareReload({ ...config, smtp: { ...config.smtp!, upstreamAddr: { host: "127.0.0.1", port: 1 } } })
            .commit();
        } else closing = p.proxy.close();
        backlog.release();
        expect((await mail).raw).toStartWith(end === "reload" ? "421 4.3.2 Configuration changed" : "421 4.3.2");
        await c.waitClosed();
        await closing;
        // The MAIL FROM was never decided: no row of it.
        expect((await p.rows()).filter((r) => r.command === "MAIL FROM")).toEqual([]);
      } finally {
        await closing;
        await p.close();
      }
    });
  }
});
