/**
 * Login through the IMAP proxy (docs/config.md "Who connects").
 *
 * Pass-through: every failure (wrong password, unknown user, malformed AUTHENTICATE PLAIN, another authorization
 * identity) is the same `NO [AUTHENTICATIONFAILED] Authentication failed`. Vault: an agent logs in with its name
 * and token and works on the account's mailbox (password_env and password_file); a wrong token, an unknown agent,
 * an address outside allowed_ips and the account's real password fail exactly the same way; every failure is
 * audited and the failure replies to one client address come slower and slower. Before login only the
 * allowlisted commands run, and nothing reaches the upstream server.
 */

import { afterAll, beforeAll, describe, expect, spyOn, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateToken, hashToken } from "../../src/vault/token.ts";
import { createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { proxyClient, RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

const FAILED = "NO [AUTHENTICATIONFAILED] Authentication failed";
const b64 = (s: string): string => Buffer.from(s).toString("base64");

let mailbox: TestMailbox;
let other: TestMailbox;
let tmp: string;

beforeAll(async () => {
  mailbox = await createMailbox({ seed: { folders: { INBOX: 4 }, seed: 5 } });
  other = await createMailbox({ name: "vault-other", seed: { folders: { INBOX: 2 }, seed: 6 } });
  tmp = mkdtempSync(join(tmpdir(), "mailgator-vault-"));
});

afterAll(() => {
  rmSync(tmp, { recursive: true, force: true });
});

/** Sends one login command and returns its tagged status line and how long the reply took. */
async function attempt(port: number, command: string): Promise<{ status: string; ms: number }> {
  const raw = await RawImap.open(port);
  try {
    const start = performance.now();
    const reply = await raw.command("a", command);
    return { status: statusOf(reply, "a").slice(2), ms: performance.now() - start };
  } finally {
    raw.close();
  }
}

describe("pass-through", () => {
  let proxy: TestProxy;
  beforeAll(async () => {
    proxy = await startTestProxy();
  });
  afterAll(async () => {
    await proxy.close();
  });

  test("every kind of failure gets the same reply, and each is audited", async () => {
    const failures = [
      `LOGIN "${mailbox.user}" "wrong-password"`,
      `LOGIN "nobody-${mailbox.token}@mailgator.test" "${mailbox.password}"`,
      `AUTHENTICATE PLAIN ${b64(`\0${mailbox.user}\0wrong`)}`,
      `AUTHENTICATE PLAIN ${b64(`${other.user}\0${mailbox.user}\0${mailbox.password}`)}`,
      `AUTHENTICATE PLAIN ${b64("no-nul-at-all")}`,
    ];
    for (const command of failures) {
      const { status } = await attempt(proxy.port, command);
      expect(status).toBe(FAILED);
    }
    const rows = (await proxy.rows()).filter((r) => r.reason?.startsWith("login failed"));
    expect(rows.length).toBe(failures.length);
    for (const r of rows) {
      expect(r.decision).toBe("deny");
      expect(JSON.stringify(r)).not.toContain(mailbox.password);
    }
    // The right password still works after all that.
    const ok = await attempt(proxy.port, `LOGIN "${mailbox.user}" "${mailbox.password}"`);
    expect(ok.status).toStartWith("OK");
  }, 60_000);

  test("an AUTHENTICATE PLAIN response that is not UTF-8 fails as malformed, no guess goes upstream", async () => {
    // LOGIN refuses such a name (the decoder's UTF-8 check); AUTHENTICATE must not read it as "\uFFFD" instead.
    const plain = Buffer.concat([
      Buffer.from(`\0${mailbox.user}`),
      Buffer.from([0xff]),
      Buffer.from(`\0${mailbox.password}`),
    ]).toString("base64");
    const before = (await proxy.rows()).length;
    const { status } = await attempt(proxy.port, `AUTHENTICATE PLAIN ${plain}`);
    expect(status).toBe(FAILED);
    const rows = (await proxy.rows()).slice(before);
    expect(rows.map((r) => r.reason)).toEqual(["login failed: malformed PLAIN response: not valid UTF-8"]);
    expect(JSON.stringify(rows)).not.toContain("\uFFFD");
  }, 30_000);

  test("a PLAIN response without its three fields records no name: its second field may be the password", async () => {
    // `name NUL password` (the leading NUL left out): the second field is the upstream password, which must reach
    // neither the failed login's row nor its log line; with four fields no field is known to be the name either.
    const logged: string[] = [];
    const original = process.stderr.write.bind(process.stderr);
    const spy = spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array, ...rest: unknown[]) => {
      logged.push(typeof chunk === "string" ? chunk : Buffer.from(chunk).toString("utf8"));
      return (original as (c: string | Uint8Array, ...r: unknown[]) => boolean)(chunk, ...rest);
    });
    const before = (await proxy.rows()).length;
    try {
      for (const plain of [`${mailbox.user}\0${mailbox.password}`, `\0${mailbox.password}\0${mailbox.user}\0x`]) {
        const { status } = await attempt(proxy.port, `AUTHENTICATE PLAIN ${b64(plain)}`);
        expect(status).toBe(FAILED);
      }
    } finally {
      spy.mockRestore();
    }
    const rows = (await proxy.rows()).slice(before);
    expect(rows.map((r) => [r.command, r.target, r.reason])).toEqual([
      ["AUTHENTICATE", null, "login failed: malformed PLAIN response or a different authorization identity"],
      ["AUTHENTICATE", null, "login failed: malformed PLAIN response or a different authorization identity"],
    ]);
    const failures = logged
      .join("")
      .split("\n")
      .filter((l) => l.includes("login failed:"));
    expect(failures).toHaveLength(2);
    for (const line of failures) expect(line).toContain(" user=- ");
    expect(logged.join("")).not.toContain(mailbox.password);
  }, 30_000);
});

describe("vault", () => {
  const token = generateToken();
  const filerToken = generateToken();
  const pinnedToken = generateToken();
  let proxy: TestProxy;
  const env = `MAILGATOR_TEST_VAULT_${process.pid}`;

  beforeAll(async () => {
    process.env[env] = mailbox.password;
    const passwordFile = join(tmp, "other.secret");
    writeFileSync(passwordFile, `${other.password}\n`, { mode: 0o600 });
    proxy = await startTestProxy({
      extra: `
[accounts.main]
username = "${mailbox.user}"
password_env = "${env}"

[accounts.second]
username = "${other.user}"
password_file = "${passwordFile}"

[[agents]]
name = "assistant"
token_hash = "${hashToken(token)}"
account = "main"

[[agents]]
name = "filer"
token_hash = "${hashToken(filerToken)}"
account = "second"
allowed_ips = ["127.0.0.1/32"]

[[agents]]
name = "pinned"
token_hash = "${hashToken(pinnedToken)}"
account = "main"
allowed_ips = ["10.0.0.0/8"]
`,
    });
  });
  afterAll(async () => {
    await proxy.close();
    delete process.env[env];
  });

  test("an agent's token logs in upstream with the account's credentials (password_env)", async () => {
    const client = await proxyClient(proxy.port, "assistant", token);
    try {
      const box = await client.mailboxOpen("INBOX");
      expect(box.exists).toBe(4);
      const first = await client.fetchOne("1", { envelope: true });
      expect(first && first.envelope?.subject).toBe(mailbox.manifest.folders["INBOX"]![0]!.subject);
    } finally {
      await client.logout();
    }
    const row = (await proxy.rows()).find((r) => r.decision === "allow" && r.reason === "logged in");
    expect(row?.agent).toBe("assistant");
  });

  test("password_file account, and AUTHENTICATE PLAIN (imapflow's default) with an allowed address", async () => {
    const client = await proxyClient(proxy.port, "filer", filerToken);
    try {
      const box = await client.mailboxOpen("INBOX");
      expect(box.exists).toBe(2);
    } finally {
      await client.logout();
    }
  });

  test("wrong token, unknown agent, disallowed address, real password: one reply, audited, slower each", async () => {
    // A fresh proxy: the failure delay counts per client address within one proxy.
    const fresh = await startTestProxy({
      extra: `
[accounts.main]
username = "${mailbox.user}"
password_env = "${env}"

[[agents]]
name = "assistant"
token_hash = "${hashToken(token)}"
account = "main"

[[agents]]
name = "pinned"
token_hash = "${hashToken(pinnedToken)}"
account = "main"
allowed_ips = ["10.0.0.0/8"]
`,
    });
    try {
      const attempts = [
        `LOGIN "assistant" "${generateToken()}"`,
        `LOGIN "nobody" "${token}"`,
        `LOGIN "pinned" "${pinnedToken}"`,
        `LOGIN "assistant" "${mailbox.password}"`,
        `LOGIN "${mailbox.user}" "${mailbox.password}"`,
        `AUTHENTICATE PLAIN ${b64(`\0assistant\0wrong`)}`,
      ];
      const delays: number[] = [];
      for (const command of attempts) {
        const { status, ms } = await attempt(fresh.port, command);
        expect(status).toBe(FAILED);
        delays.push(ms);
      }
      // docs/config.md "Who connects": +500 ms per failure from the same address (0.5, 1.0, 1.5 ... s), never shorter.
      for (let i = 0; i < delays.length; i++) {
        expect(delays[i]!).toBeGreaterThanOrEqual(500 * (i + 1) - 50);
        expect(delays[i]!).toBeLessThan(500 * (i + 1) + 1500);
      }
      // Each one longer than the last (by less than the 500 ms step: a loaded machine delays one reply, not the clock).
      for (let i = 1; i < delays.length; i++) expect(delays[i]!).toBeGreaterThan(delays[i - 1]! + 100);
      const rows = (await fresh.rows()).filter((r) => r.reason?.startsWith("login failed"));
      expect(rows.map((r) => r.decision)).toEqual(attempts.map(() => "deny"));
      expect(rows.map((r) => r.target)).toEqual([
        "assistant",
        "nobody",
        "pinned",
        "assistant",
        mailbox.user,
        "assistant",
      ]);
      // The agent hears the same for each; the row tells the owner which it was, as SMTP's does (src/vault/login.ts).
      expect(rows.map((r) => r.reason)).toEqual([
        "login failed: wrong token",
        "login failed: unknown agent name",
        "login failed: client address 127.0.0.1 is not in the agent's allowed_ips",
        "login failed: wrong token",
        "login failed: unknown agent name",
        "login failed: wrong token",
      ]);
      for (const r of rows) {
        expect(JSON.stringify(r)).not.toContain(token);
        expect(JSON.stringify(r)).not.toContain(mailbox.password);
      }
      // A correct login is not slowed by earlier failures (the next failure would wait 3.5 s).
      const ok = await attempt(fresh.port, `LOGIN "assistant" "${token}"`);
      expect(ok.status).toStartWith("OK");
      expect(ok.ms).toBeLessThan(2500);
    } finally {
      await fresh.close();
    }
  }, 60_000);
});

describe("before login", () => {
  let upstream: Server;
  let connections = 0;
  let proxy: TestProxy;
  beforeAll(async () => {
    // A stand-in upstream that only counts connections: nothing may reach it before a login.
    upstream = createServer((socket) => {
      connections++;
      socket.destroy();
    });
    await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve));
    const port = (upstream.address() as { port: number }).port;
    proxy = await startTestProxy({ upstreamTls: "none", upstreamAddr: `127.0.0.1:${port}`, caFile: null });
  });
  afterAll(async () => {
    await proxy.close();
    await new Promise<void>((resolve) => upstream.close(() => resolve()));
  });

  test("only CAPABILITY, NOOP, ID, STARTTLS, LOGIN, AUTHENTICATE, LOGOUT; the rest is refused locally", async () => {
    const raw = await RawImap.open(proxy.port);
    try {
      expect(statusOf(await raw.command("a1", "CAPABILITY"), "a1")).toStartWith("a1 OK");
      expect(statusOf(await raw.command("a2", "NOOP"), "a2")).toStartWith("a2 OK");
      expect(statusOf(await raw.command("a3", 'ID ("name" "test")'), "a3")).toStartWith("a3 OK");
      for (const [tag, command] of [
        ["b1", "SELECT INBOX"],
        ["b2", 'LIST "" "*"'],
        ["b3", "STATUS INBOX (MESSAGES)"],
        ["b4", "EXAMINE INBOX"],
        ["b5", "CREATE Secret"],
        ["b6", "FETCH 1 (BODY[])"],
        ["b7", "UID SEARCH ALL"],
        ["b8", "ENABLE CONDSTORE"],
        ["b9", "NAMESPACE"],
        ["c1", "IDLE"],
        ["c2", "GETQUOTAROOT INBOX"],
      ] as const) {
        expect(statusOf(await raw.command(tag, command), tag)).toMatch(new RegExp(`^${tag} (BAD|NO) `));
      }
      // A synchronizing literal before login is refused without a continuation (APPEND would carry a message).
      raw.write("c3 APPEND INBOX {10}\r\n");
      const reply = await raw.readUntil((b) => /c3 (BAD|NO)/.test(b) || b.includes("+ "), 3000);
      expect(reply).not.toContain("+ ");
      expect(reply).toMatch(/c3 (BAD|NO)/);
      expect(raw.closed).toBe(false);
      const bye = await raw.command("z", "LOGOUT");
      expect(bye).toContain("* BYE");
    } finally {
      raw.close();
    }
    expect(connections).toBe(0);
  });
});
