/**
 * Upstream sessions kept after an agent's LOGOUT for the next login of the same vault account (docs/imap.md
 * "Upstream sessions kept for the next login"), against the real Dovecot: what is kept (unselected, unchanged
 * sessions of password accounts, up to the pool's limits and for its idle time, CONDSTORE on or not), what is not
 * (pass-through logins, another account's), and what ends a kept session (a reload, the listener
 * closing, the server's BYE).
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import type { Socket } from "node:net";
import { layout } from "../../scripts/upstreams/layout.ts";
import { renderMetrics } from "../../src/admin/metrics.ts";
import type { AuditEvent, AuditLog } from "../../src/audit/index.ts";
import { UpstreamSession } from "../../src/imap/upstream.ts";
import { UpstreamPool } from "../../src/imap/upstream-pool.ts";
import { generateToken, hashToken } from "../../src/vault/token.ts";
import { connectImap, createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { dovecotSessions, settlesAt } from "../fixtures/upstream-connections.ts";
import {
  directUpstream,
  RawImap,
  startScriptedUpstream,
  startTestProxy,
  statusOf,
  type TestProxy,
  upstreamState,
} from "./helpers.ts";

let main: TestMailbox;
let second: TestMailbox;
const token = generateToken();
const sameAccountToken = generateToken();
const otherToken = generateToken();
const env = `MAILGATOR_TEST_POOL_${process.pid}`;

beforeAll(async () => {
  main = await createMailbox({ name: "pool-main", seed: { folders: { INBOX: 3 }, seed: 41 } });
  second = await createMailbox({ name: "pool-second", seed: { folders: { INBOX: 2 }, seed: 42 } });
  process.env[env] = main.password;
});

afterAll(() => {
  delete process.env[env];
});

function vaultConfig(): string {
  return `
[accounts.main]
username = "${main.user}"
password_env = "${env}"

[accounts.second]
username = "${second.user}"
password = "${second.password}"

[[agents]]
name = "assistant"
token_hash = "${hashToken(token)}"
account = "main"

[[agents]]
name = "helper"
token_hash = "${hashToken(sameAccountToken)}"
account = "main"

[[agents]]
name = "filer"
token_hash = "${hashToken(otherToken)}"
account = "second"
`;
}

/**
 * Logs in as `agent`, runs `commands` (each must answer OK), and logs out; then waits until the proxy keeps
 * `kept` upstream sessions (the UNSELECT before a session is kept runs after the agent's LOGOUT is answered).
 */
async function visit(
  proxy: TestProxy,
  agent: string,
  secret: string,
  commands: string[] = [],
  kept = 1,
): Promise<void> {
  const raw = await RawImap.open(proxy.port);
  try {
    expect(statusOf(await raw.command("l", `LOGIN ${agent} "${secret}"`), "l")).toStartWith("l OK");
    let n = 0;
    for (const command of commands) {
      const tag = `c${++n}`;
      expect(statusOf(await raw.command(tag, command), tag)).toStartWith(`${tag} OK`);
    }
    expect(statusOf(await raw.command("z", "LOGOUT"), "z")).toStartWith("z OK");
  } finally {
    raw.close();
  }
  expect(await settlesAt(() => proxy.proxy.keptUpstreamSessions, kept, 10_000)).toBe(kept);
}

/** A raw client on `port`, logged in as the agent `name` with `secret`; the login must succeed. */
async function agentLogin(port: number, name: string, secret: string): Promise<RawImap> {
  const raw = await RawImap.open(port);
  expect(statusOf(await raw.command("l", `LOGIN ${name} "${secret}"`), "l")).toStartWith("l OK");
  return raw;
}

/** The `detail.upstream` of each successful login row of `agent`, oldest first. */
async function loginKinds(proxy: TestProxy, agent: string): Promise<(string | null)[]> {
  const rows = (await proxy.rows()).filter((r) => r.agent === agent && r.reason === "logged in");
  return rows.map((r) => ((r.detail as { upstream?: string } | null)?.upstream ?? null) as string | null);
}

/** Starts a vault-mode proxy before the tests of the describe block it is called in, and closes it after them. */
function withVaultProxy(): { proxy: TestProxy } {
  const v = {} as { proxy: TestProxy };
  beforeAll(async () => {
    v.proxy = await startTestProxy({ extra: vaultConfig() });
  });
  afterAll(async () => {
    await v.proxy?.close();
  });
  return v;
}

/**
 * The account's next login (agent `helper`) takes the kept session: still one Dovecot session, no mailbox selected
 * (FETCH gets BAD), INBOX with `exists` messages, and its login row says so; `more` runs on that login first.
 */
async function nextTakesKept(proxy: TestProxy, exists: number, more?: (next: RawImap) => Promise<void>): Promise<void> {
  const next = await agentLogin(proxy.port, "helper", sameAccountToken);
  try {
    expect(dovecotSessions(main.user)).toBe(1);
    expect(statusOf(await next.command("f", "FETCH 1 (FLAGS)"), "f")).toStartWith("f BAD");
    expect(await next.command("s", "EXAMINE INBOX")).toContain(`* ${exists} EXISTS`);
    await more?.(next);
  } finally {
    next.close();
  }
  expect((await loginKinds(proxy, "helper")).at(-1)).toBe("kept session");
}

describe("vault mode", () => {
  const v = withVaultProxy();

  test("the next login of the account takes over the session a LOGOUT left, unselected", async () => {
    await visit(v.proxy, "assistant", token, ["SELECT INBOX", "FETCH 1:* (FLAGS)"]);
    // Kept: Dovecot still holds the session the agent left.
    expect(await settlesAt(() => dovecotSessions(main.user), 1, 10_000)).toBe(1);
    const raw = await agentLogin(v.proxy.port, "assistant", token);
    try {
      // The same upstream session: no second one at Dovecot.
      expect(dovecotSessions(main.user)).toBe(1);
      const selected = await raw.command("s", "SELECT INBOX");
      expect(statusOf(selected, "s")).toStartWith("s OK [READ-WRITE]");
      expect(selected).toContain("* 3 EXISTS");
      const fetched = await raw.command("f", "UID FETCH 1:* (UID)");
      expect(fetched.match(/^\* \d+ FETCH/gm)?.length).toBe(3);
      expect(statusOf(await raw.command("z", "LOGOUT"), "z")).toStartWith("z OK");
    } finally {
      raw.close();
    }
    expect(await loginKinds(v.proxy, "assistant")).toEqual([null, "kept session"]);
    expect(await settlesAt(() => v.proxy.proxy.keptUpstreamSessions, 1, 10_000)).toBe(1);
    // What the admin listener's /metrics shows (docs/operations.md).
    expect(renderMetrics()).toContain("\nmailgator_imap_upstream_sessions_kept 1\n");
  }, 60_000);

  test("another agent of the same account takes it too; an agent of another account logs in afresh", async () => {
    await visit(v.proxy, "assistant", token, ["SELECT INBOX"]);
    await visit(v.proxy, "helper", sameAccountToken, ["EXAMINE INBOX"]);
    expect((await loginKinds(v.proxy, "helper")).at(-1)).toBe("kept session");
    await visit(v.proxy, "filer", otherToken, ["SELECT INBOX"], 2);
    expect((await loginKinds(v.proxy, "filer")).at(-1)).toBeNull();
    // Each account's own session stays kept.
    expect(await settlesAt(() => dovecotSessions(main.user), 1, 10_000)).toBe(1);
    expect(await settlesAt(() => dovecotSessions(second.user), 1, 10_000)).toBe(1);
  }, 60_000);

  test("with CONDSTORE on, kept; the next agent sees no mod-sequence until it enables CONDSTORE", async () => {
    // Empty the pool of the account first: a reload logs kept sessions out.
    v.proxy.reload({ extra: vaultConfig() });
    expect(await settlesAt(() => dovecotSessions(main.user), 0, 10_000)).toBe(0);
    await visit(v.proxy, "assistant", token, ["SELECT INBOX (CONDSTORE)", "FETCH 1 (FLAGS MODSEQ)"]);
    expect(await settlesAt(() => dovecotSessions(main.user), 1, 10_000)).toBe(1);
    const raw = await agentLogin(v.proxy.port, "assistant", token);
    try {
      // Upstream's CONDSTORE is on; this agent's is not: no HIGHESTMODSEQ, no MODSEQ, and a silent STORE is silent.
      const selected = await raw.command("s", "SELECT INBOX");
      expect(statusOf(selected, "s")).toStartWith("s OK");
      expect(selected).not.toContain("MODSEQ");
      const fetched = await raw.command("f", "FETCH 1:* (FLAGS)");
      expect(statusOf(fetched, "f")).toStartWith("f OK");
      expect(fetched).toContain("* 1 FETCH (FLAGS (");
      expect(fetched).not.toContain("MODSEQ");
      const stored = await raw.command("t", "UID STORE 1:* +FLAGS.SILENT (\\Flagged)");
      expect(statusOf(stored, "t")).toStartWith("t OK");
      expect(stored).not.toContain("FETCH");
      const loud = await raw.command("u", "STORE 1 -FLAGS (\\Flagged)");
      expect(loud).toContain("* 1 FETCH (FLAGS (");
      expect(loud).not.toContain("MODSEQ");
      // Once the agent enables it, mod-sequences are its too.
      expect(await raw.command("e", "ENABLE CONDSTORE")).toContain("* ENABLED CONDSTORE");
      expect(await raw.command("g", "STORE 1 +FLAGS (\\Flagged)")).toMatch(/^\* 1 FETCH \(.*MODSEQ \(\d+\)/m);
      expect(statusOf(await raw.command("z", "LOGOUT"), "z")).toStartWith("z OK");
    } finally {
      raw.close();
    }
    expect((await loginKinds(v.proxy, "assistant")).at(-1)).toBe("kept session");
  }, 60_000);

  test("with CONDSTORE on upstream, the next agent's first CONDSTORE-enabling command gets HIGHESTMODSEQ", async () => {
    // Upstream sends `* OK [HIGHESTMODSEQ n]` for its own first CONDSTORE-enabling command only (RFC 7162 §3.1).
    for (const enabling of ["ENABLE CONDSTORE", "FETCH 1 (MODSEQ)", "UID SEARCH MODSEQ 1"]) {
      v.proxy.reload({ extra: vaultConfig() });
      expect(await settlesAt(() => dovecotSessions(main.user), 0, 10_000)).toBe(0);
      await visit(v.proxy, "assistant", token, ["SELECT INBOX (CONDSTORE)"]);
      const raw = await agentLogin(v.proxy.port, "helper", sameAccountToken);
      try {
        expect(dovecotSessions(main.user)).toBe(1);
        expect(await raw.command("s", "SELECT INBOX")).not.toContain("MODSEQ");
        const enabled = await raw.command("e", enabling);
        expect(statusOf(enabled, "e")).toStartWith("e OK");
        expect(enabled).toMatch(/^\* OK \[HIGHESTMODSEQ [1-9]\d*\]/m);
        expect(statusOf(await raw.command("z", "LOGOUT"), "z")).toStartWith("z OK");
      } finally {
        raw.close();
      }
      expect((await loginKinds(v.proxy, "helper")).at(-1)).toBe("kept session");
      expect(await settlesAt(() => v.proxy.proxy.keptUpstreamSessions, 1, 10_000)).toBe(1);
    }
  }, 60_000);

  test("the server's BYE to a kept session ends it; the next login logs in afresh", async () => {
    await visit(v.proxy, "assistant", token, ["SELECT INBOX"]);
    expect(await settlesAt(() => dovecotSessions(main.user), 1, 10_000)).toBe(1);
    const conf = layout(upstreams().dir).dovecotConf;
    const kick = spawnSync("doveadm", ["-c", conf, "kick", main.user], { encoding: "utf8" });
    expect(kick.status).toBe(0);
    expect(await settlesAt(() => dovecotSessions(main.user), 0, 10_000)).toBe(0);
    expect(await settlesAt(() => v.proxy.proxy.keptUpstreamSessions, 0, 10_000)).toBe(0);
    expect(renderMetrics()).toContain("\nmailgator_imap_upstream_sessions_kept 0\n");
    await visit(v.proxy, "assistant", token, ["SELECT INBOX"]);
    expect((await loginKinds(v.proxy, "assistant")).at(-1)).toBeNull();
  }, 60_000);

  test("a reload, and the listener closing, log kept sessions out", async () => {
    await visit(v.proxy, "assistant", token, ["SELECT INBOX"]);
    expect(await settlesAt(() => dovecotSessions(main.user), 1, 10_000)).toBe(1);
    v.proxy.reload({ extra: vaultConfig() });
    expect(await settlesAt(() => dovecotSessions(main.user), 0, 10_000)).toBe(0);
    await visit(v.proxy, "assistant", token, ["SELECT INBOX"]);
    expect((await loginKinds(v.proxy, "assistant")).at(-1)).toBeNull();
    expect(await settlesAt(() => dovecotSessions(main.user), 1, 10_000)).toBe(1);
    await v.proxy.close();
    expect(await settlesAt(() => dovecotSessions(main.user), 0, 10_000)).toBe(0);
    v.proxy = await startTestProxy({ extra: vaultConfig() });
  }, 60_000);
});

describe("an agent that hangs up without LOGOUT", () => {
  const v = withVaultProxy();

  test("between two commands: kept as after a LOGOUT, and taken by the next login", async () => {
    const raw = await agentLogin(v.proxy.port, "assistant", token);
    expect(statusOf(await raw.command("s", "SELECT INBOX"), "s")).toStartWith("s OK [READ-WRITE]");
    raw.close();
    expect(await settlesAt(() => v.proxy.proxy.keptUpstreamSessions, 1, 10_000)).toBe(1);
    expect(await settlesAt(() => dovecotSessions(main.user), 1, 10_000)).toBe(1);
    // Unselected before it was kept: the next agent starts with no mailbox, on the same Dovecot session.
    await nextTakesKept(v.proxy, 3);
    // That agent hung up too, after EXAMINE: kept again.
    expect(await settlesAt(() => v.proxy.proxy.keptUpstreamSessions, 1, 10_000)).toBe(1);
  }, 60_000);

  test("in an APPEND's literal: the command never started; nothing appended, the session kept", async () => {
    v.proxy.reload({ extra: vaultConfig() });
    expect(await settlesAt(() => dovecotSessions(main.user), 0, 10_000)).toBe(0);
    const before = await upstreamState(main);
    const raw = await agentLogin(v.proxy.port, "assistant", token);
    expect(statusOf(await raw.command("s", "SELECT INBOX"), "s")).toStartWith("s OK");
    raw.write("a APPEND INBOX {100}\r\n");
    await raw.readUntil((b) => b.includes("+ "));
    raw.write("Subject: half\r\n\r\nonly part of the message");
    raw.close();
    expect(await settlesAt(() => v.proxy.proxy.keptUpstreamSessions, 1, 10_000)).toBe(1);
    expect(await upstreamState(main)).toEqual(before);
    expect((await v.proxy.rows()).some((r) => r.command === "APPEND")).toBe(false);
    await nextTakesKept(v.proxy, 3);
  }, 60_000);

  test("in IDLE: kept once its IDLE has ended upstream; the next agent takes it, unselected", async () => {
    v.proxy.reload({ extra: vaultConfig() });
    expect(await settlesAt(() => dovecotSessions(main.user), 0, 10_000)).toBe(0);
    const raw = await agentLogin(v.proxy.port, "assistant", token);
    const exists = Number(/^\* (\d+) EXISTS/m.exec(await raw.command("s", "SELECT INBOX"))?.[1]);
    expect(exists).toBeGreaterThan(0);
    raw.write("i IDLE\r\n");
    await raw.readUntil((b) => b.includes("+ "));
    // A message arrives while the agent idles: upstream tells the IDLE of it; the agent hangs up before the proxy does.
    const other = await connectImap(main);
    try {
      await other.append("INBOX", "From: a@mailgator.test\r\nSubject: during idle\r\n\r\nhi\r\n");
    } finally {
      await other.logout();
    }
    raw.close();
    expect(await settlesAt(() => v.proxy.proxy.keptUpstreamSessions, 1, 10_000)).toBe(1);
    expect(await settlesAt(() => dovecotSessions(main.user), 1, 10_000)).toBe(1);
    await nextTakesKept(v.proxy, exists + 1, async (next) => {
      expect((await next.command("u", "UID FETCH 1:* (UID)")).match(/^\* \d+ FETCH/gm)?.length).toBe(exists + 1);
    });
  }, 60_000);
});

test("while its write waits for its audit row: the command is under way; closed, never kept", async () => {
  // The STORE's row is held until the agent has gone: nothing is in flight upstream then, but the command is not over.
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let held = 0;
  const proxy = await startTestProxy({
    extra: vaultConfig(),
    wrapAudit: (log) =>
      new Proxy(log, {
        get(target, key) {
          if (key === "durable")
            return async (row: AuditEvent, options: Parameters<AuditLog["durable"]>[1]) => {
              if (row.command === "STORE") {
                held++;
                await gate;
              }
              return target.durable(row, options);
            };
          const value: unknown = Reflect.get(target, key, target);
          return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
        },
      }),
  });
  try {
    expect(await settlesAt(() => dovecotSessions(main.user), 0, 10_000)).toBe(0);
    const before = await upstreamState(main);
    const raw = await agentLogin(proxy.port, "assistant", token);
    expect(statusOf(await raw.command("s", "SELECT INBOX"), "s")).toStartWith("s OK");
    raw.write("t STORE 1 +FLAGS (\\Flagged)\r\n");
    expect(await settlesAt(() => held, 1, 10_000)).toBe(1);
    raw.close();
    expect(await settlesAt(() => dovecotSessions(main.user), 0, 10_000)).toBe(0);
    expect(proxy.proxy.keptUpstreamSessions).toBe(0);
    release();
    await Bun.sleep(200);
    // The STORE never reached Dovecot, and nothing was kept for a next login.
    expect(await upstreamState(main)).toEqual(before);
    expect(proxy.proxy.keptUpstreamSessions).toBe(0);
  } finally {
    release();
    await proxy.close();
  }
}, 60_000);

/**
 * A vault proxy in front of a scripted server, for what a real one cannot be timed into. LOGIN, `LIST "" ""` and
 * SELECT are answered as a server would; `answer` sees every line first and returns true when it has dealt with it
 * (answered, or left unanswered on purpose); anything else gets OK. Records what the server saw (a line without a
 * command, such as DONE, as itself) and the proxy's connections to it.
 */
async function scriptedVault(answer: (socket: Socket, c: { line: string; tag: string; command: string }) => boolean) {
  const CAPS = "IMAP4rev1 LOGIN UIDPLUS UNSELECT IDLE";
  const seen: string[] = [];
  const sockets = new Set<Socket>();
  const upstream = await startScriptedUpstream(CAPS, (socket, c) => {
    const { tag, command } = c;
    seen.push(command === "" ? c.line : command);
    sockets.add(socket);
    if (answer(socket, c)) return;
    if (command === "LOGIN") socket.write(`${tag} OK [CAPABILITY ${CAPS}] Logged in\r\n`);
    else if (command === "LIST") socket.write(`* LIST () "/" ""\r\n${tag} OK done\r\n`);
    else if (command === "SELECT")
      socket.write(`* 0 EXISTS\r\n* OK [UIDVALIDITY 7] v\r\n* OK [UIDNEXT 1] n\r\n${tag} OK [READ-WRITE] done\r\n`);
    else socket.write(`${tag} OK done\r\n`);
  });
  const proxy = await startTestProxy({
    upstreamAddr: `127.0.0.1:${upstream.port}`,
    upstreamTls: "none",
    caFile: null,
    extra: vaultConfig(),
  });
  return {
    proxy,
    upstream,
    seen,
    sockets,
    /** The proxy's connections to the server that have ended. */
    gone: () => [...sockets].filter((c) => c.destroyed).length,
    /** An agent logged in, INBOX selected, that has sent `line` and whose command the server has seen. */
    async agentSent(line: string, command: string): Promise<RawImap> {
      const raw = await agentLogin(proxy.port, "assistant", token);
      expect(statusOf(await raw.command("s", "SELECT INBOX"), "s")).toStartWith("s OK");
      raw.write(`${line}\r\n`);
      expect(await settlesAt(() => (seen.includes(command) ? 1 : 0), 1, 10_000)).toBe(1);
      return raw;
    },
    close: () => proxy.close().then(() => upstream.close()),
  };
}

/**
 * A hang-up while a command waits for the server (STATUS, never answered): the session is closed, not unselected
 * and kept: the command's next step must not reach another agent's session.
 */
test("an agent that hangs up while its command waits for the server: the upstream session is closed", async () => {
  const v = await scriptedVault((_, { command }) => command === "STATUS");
  try {
    (await v.agentSent("t STATUS INBOX (MESSAGES)", "STATUS")).close();
    // One upstream connection, and it is gone.
    expect(v.sockets.size).toBe(1);
    expect(await settlesAt(v.gone, 1, 10_000)).toBe(1);
    expect(v.proxy.proxy.keptUpstreamSessions).toBe(0);
    expect(v.seen).not.toContain("UNSELECT");
  } finally {
    await v.close();
  }
}, 60_000);

/**
 * A hang-up in IDLE against a scripted server (a real one cannot be made slow on cue): it answers IDLE with `+` and
 * DONE after `doneAfterMs`, or never answers IDLE at all (null). Returns what the server saw, whether the proxy's
 * one upstream connection ended, and how many sessions the pool kept.
 */
async function idleHangUp(doneAfterMs: number | null): Promise<{ seen: string[]; closed: boolean; kept: number }> {
  let idleTag = "";
  const v = await scriptedVault((socket, { line, tag, command }) => {
    if (command === "IDLE") {
      idleTag = tag;
      if (doneAfterMs !== null) socket.write("+ idling\r\n");
    } else if (line === "DONE") {
      if (doneAfterMs !== null) setTimeout(() => socket.write(`${idleTag} OK idle done\r\n`), doneAfterMs);
    } else return false;
    return true;
  });
  try {
    const raw = await v.agentSent("i IDLE", "IDLE");
    await raw.readUntil((b) => b.includes("+ "));
    raw.close();
    expect(v.sockets.size).toBe(1);
    // Settled: either kept (after the UNSELECT) or its connection gone, within the limit and a margin.
    await settlesAt(() => v.gone() + v.proxy.proxy.keptUpstreamSessions, 1, 15_000);
    return { seen: [...v.seen], closed: v.gone() === 1, kept: v.proxy.proxy.keptUpstreamSessions };
  } finally {
    await v.close();
  }
}

test("a hang-up in IDLE whose DONE the server answers late, within UPSTREAM_POOL_UNSELECT_MS: kept", async () => {
  const { seen, closed, kept } = await idleHangUp(3_000);
  expect(kept).toBe(1);
  expect(closed).toBe(false);
  expect(seen.slice(-2)).toEqual(["DONE", "UNSELECT"]);
}, 60_000);

test("a hang-up in IDLE the server never answered: closed after UPSTREAM_POOL_UNSELECT_MS, never kept", async () => {
  const { seen, closed, kept } = await idleHangUp(null);
  expect(kept).toBe(0);
  expect(closed).toBe(true);
  expect(seen).not.toContain("UNSELECT");
}, 60_000);

/**
 * The listener closes while the IDLE of an agent that hung up is still ending upstream (scripted: DONE answered late):
 * that upstream session is closed with the kept ones, not left to outlive the close and be logged out after it.
 */
test("the listener closing closes the session of a hang-up in IDLE whose IDLE is still ending", async () => {
  const afterClose: string[] = [];
  let closed = false;
  let idleTag = "";
  const v = await scriptedVault((socket, { line, tag, command }) => {
    if (closed) afterClose.push(line);
    if (command === "IDLE") {
      idleTag = tag;
      socket.write("+ idling\r\n");
    } else if (line === "DONE") {
      // Answered well after the listener has closed.
      setTimeout(() => socket.write(`${idleTag} OK Idle completed\r\n`), 4000);
    } else if (command === "LOGOUT") socket.write(`* BYE bye\r\n${tag} OK done\r\n`);
    else return false;
    return true;
  });
  try {
    const raw = await v.agentSent("i IDLE", "IDLE");
    await raw.readUntil((b) => b.includes("+ "));
    raw.close();
    expect(await settlesAt(() => (v.seen.includes("DONE") ? 1 : 0), 1, 10_000)).toBe(1);
    await v.proxy.close();
    closed = true;
    expect(v.sockets.size).toBe(1);
    // Closed by the close, well before the server answers DONE.
    expect(await settlesAt(v.gone, 1, 2_500)).toBe(1);
    // Nothing went upstream after the close (no LOGOUT once DONE was answered).
    await Bun.sleep(4_500);
    expect(afterClose).toEqual([]);
    expect(v.seen).not.toContain("UNSELECT");
  } finally {
    if (!closed) await v.proxy.close();
    await v.upstream.close();
  }
}, 60_000);

test("pass-through logins are never kept: Dovecot checks each one's password", async () => {
  const proxy = await startTestProxy();
  try {
    const raw = await RawImap.login(proxy.port, second);
    expect(statusOf(await raw.command("s", "SELECT INBOX"), "s")).toStartWith("s OK");
    expect(statusOf(await raw.command("z", "LOGOUT"), "z")).toStartWith("z OK");
    raw.close();
    expect(await settlesAt(() => dovecotSessions(second.user), 0, 10_000)).toBe(0);
    const wrong = await RawImap.open(proxy.port);
    expect(statusOf(await wrong.command("l", `LOGIN "${second.user}" "not-the-password"`), "l")).toStartWith(
      "l NO [AUTHENTICATIONFAILED]",
    );
    wrong.close();
  } finally {
    await proxy.close();
  }
}, 60_000);

describe("the pool itself, over real Dovecot sessions", () => {
  const opened: UpstreamSession[] = [];
  async function selected(): Promise<UpstreamSession> {
    const up = await directUpstream(second);
    opened.push(up);
    expect((await up.run({ name: "SELECT", mailbox: "INBOX" })).status).toBe("OK");
    expect(up.mailboxSelected).toBe(true);
    return up;
  }
  afterAll(() => {
    for (const up of opened) up.close();
  });
  const target = { host: "h", port: 1, tls: "tls" as const, skipVerify: false, extraCa: null, connectTimeoutMs: 1 };

  test("a kept session is unselected upstream: a FETCH before SELECT is refused by Dovecot", async () => {
    const pool = new UpstreamPool();
    const key = pool.keyOf(target, "k");
    pool.keep(key, await selected(), "/");
    expect(await settlesAt(() => pool.size, 1, 10_000)).toBe(1);
    const kept = pool.take(key);
    expect(kept?.delimiter).toBe("/");
    expect(kept?.up.mailboxSelected).toBe(false);
    const st = await kept!.up.run({
      name: "FETCH",
      uid: false,
      set: [{ start: 1, stop: 1 }],
      items: [],
      macro: "FAST",
    });
    expect(st.status).toBe("BAD");
    expect(pool.take(key)).toBeNull();
    await pool.clear(true);
  }, 60_000);

  test("at most perKey sessions per key and max in all: one past either is logged out", async () => {
    const pool = new UpstreamPool({ perKey: 2, max: 3 });
    const a = pool.keyOf(target, "a");
    const b = pool.keyOf(target, "b");
    const sessions = await Promise.all([1, 2, 3, 4].map(() => selected()));
    // Two under `a`, the limit; the third one past it.
    pool.keep(a, sessions[0]!, "/");
    pool.keep(a, sessions[1]!, "/");
    expect(await settlesAt(() => pool.size, 2, 10_000)).toBe(2);
    pool.keep(a, sessions[2]!, "/");
    expect(await settlesAt(() => (sessions[2]!.closed ? 1 : 0), 1, 10_000)).toBe(1);
    expect(pool.size).toBe(2);
    // Under `b`: the third in all is the max; a fourth is one past it.
    const more = await Promise.all([1, 2].map(() => selected()));
    pool.keep(b, more[0]!, "/");
    expect(await settlesAt(() => pool.size, 3, 10_000)).toBe(3);
    pool.keep(b, more[1]!, "/");
    expect(await settlesAt(() => (more[1]!.closed ? 1 : 0), 1, 10_000)).toBe(1);
    expect(pool.size).toBe(3);
    sessions[3]!.close();
    await pool.clear(true);
    expect(pool.size).toBe(0);
  }, 60_000);

  test("a session not taken within idleMs is logged out; keys made before a clear are kept no longer", async () => {
    const pool = new UpstreamPool({ idleMs: 300 });
    const key = pool.keyOf(target, "k");
    const up = await selected();
    pool.keep(key, up, "/");
    expect(await settlesAt(() => pool.size, 1, 10_000)).toBe(1);
    expect(await settlesAt(() => (up.closed ? 1 : 0), 1, 10_000)).toBe(1);
    expect(pool.size).toBe(0);
    const stale = pool.keyOf(target, "k");
    await pool.clear();
    const late = await selected();
    pool.keep(stale, late, "/");
    expect(await settlesAt(() => (late.closed ? 1 : 0), 1, 10_000)).toBe(1);
    expect(pool.size).toBe(0);
    await pool.clear(true);
  }, 60_000);

  test("a session that sent ID or ENABLE of another extension is logged out; mailbox commands keep it", async () => {
    const pool = new UpstreamPool();
    const key = pool.keyOf(target, "k");
    const plain = await selected();
    for (const name of ["NOOP", "CHECK", "NAMESPACE"] as const) expect((await plain.run({ name })).status).toBe("OK");
    expect(plain.reusable).toBe(true);
    pool.keep(key, plain, "/");
    expect(await settlesAt(() => pool.size, 1, 10_000)).toBe(1);
    const changed: UpstreamSession[] = [];
    const withId = await selected();
    expect((await withId.run({ name: "ID", params: null })).status).toBe("OK");
    changed.push(withId);
    const withEnable = await selected();
    expect((await withEnable.run({ name: "ENABLE", capabilities: ["QRESYNC"] })).status).toBe("OK");
    changed.push(withEnable);
    for (const up of changed) {
      expect(up.reusable).toBe(false);
      pool.keep(key, up, "/");
      expect(await settlesAt(() => (up.closed ? 1 : 0), 1, 10_000)).toBe(1);
    }
    expect(pool.size).toBe(1);
    await pool.clear(true);
  }, 60_000);

  test("awaitOffer: offered within unselectMs, kept; not offered by then, closed; clear closes one", async () => {
    const pool = new UpstreamPool({ unselectMs: 1_000 });
    const key = pool.keyOf(target, "k");
    const offered = await selected();
    const forgotten = await selected();
    expect(pool.awaitOffer(offered)).toBe(true);
    expect(pool.awaitOffer(forgotten)).toBe(true);
    await Bun.sleep(500);
    pool.keep(key, offered, "/");
    expect(await settlesAt(() => pool.size, 1, 10_000)).toBe(1);
    expect(await settlesAt(() => (forgotten.closed ? 1 : 0), 1, 10_000)).toBe(1);
    // Past the limit the one offered is still kept: its timer ended with the offer.
    await Bun.sleep(1_000);
    expect(offered.closed).toBe(false);
    expect(pool.take(key)?.up).toBe(offered);
    const awaited = await selected();
    expect(pool.awaitOffer(awaited)).toBe(true);
    await pool.clear(true);
    expect(await settlesAt(() => (awaited.closed ? 1 : 0), 1, 10_000)).toBe(1);
    // Once closed, the pool awaits nothing: the caller closes it.
    expect(pool.awaitOffer(offered)).toBe(false);
    offered.close();
  }, 60_000);

  test("a session with a command in flight is not kept", async () => {
    const pool = new UpstreamPool();
    const up = await selected();
    const noop = up.run({ name: "NOOP" });
    pool.keep(pool.keyOf(target, "k"), up, "/");
    expect(pool.size).toBe(0);
    await noop.catch(() => {});
    expect(await settlesAt(() => (up.closed ? 1 : 0), 1, 10_000)).toBe(1);
    await pool.clear(true);
  }, 60_000);
});

/**
 * A server that answers a SELECT it does not carry out with BAD, its mailbox still selected (RFC 9051 §7.1.3: BAD is
 * a command not executed): scripted, since Dovecot closes its mailbox before it checks a SELECT's parameters.
 */
test("a SELECT answered BAD may leave a mailbox selected: unselected before it is kept", async () => {
  const CAPS = "IMAP4rev1 LOGIN UIDPLUS UNSELECT";
  const seen: string[] = [];
  const upstream = await startScriptedUpstream(CAPS, (socket, { line, tag, command }) => {
    seen.push(command);
    if (command === "LOGIN") socket.write(`${tag} OK [CAPABILITY ${CAPS}] Logged in\r\n`);
    else if (command === "SELECT" && line.endsWith(" INBOX"))
      socket.write(`* 0 EXISTS\r\n* OK [UIDVALIDITY 7] v\r\n${tag} OK [READ-WRITE] done\r\n`);
    else if (command === "SELECT") socket.write(`${tag} BAD not carried out\r\n`);
    else socket.write(`${tag} OK done\r\n`);
  });
  const port = upstream.port;
  const pool = new UpstreamPool();
  try {
    const target = {
      host: "127.0.0.1",
      port,
      tls: "none" as const,
      skipVerify: false,
      extraCa: null,
      connectTimeoutMs: 5000,
    };
    const up = await UpstreamSession.open(target, { connectMs: 5000, handshakeMs: 5000, commandMs: 5000 });
    expect(await up.login("u", "p")).toBe(true);
    expect((await up.run({ name: "SELECT", mailbox: "INBOX" })).status).toBe("OK");
    expect((await up.run({ name: "SELECT", mailbox: "Other" })).status).toBe("BAD");
    expect(up.mailboxSelected).toBe(true);
    const key = pool.keyOf(target, "k");
    pool.keep(key, up, "/");
    expect(await settlesAt(() => pool.size, 1, 10_000)).toBe(1);
    expect(seen.at(-1)).toBe("UNSELECT");
    expect(pool.take(key)?.up.mailboxSelected).toBe(false);
    up.close();
  } finally {
    await pool.clear(true);
    await upstream.close();
  }
}, 60_000);
