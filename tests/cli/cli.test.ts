import { describe, expect, test } from "bun:test";
import { copyFileSync, existsSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { AuditLog } from "../../src/audit/index.ts";
import { runsProxies } from "../../src/cli/main.ts";
import { loadConfig, parseConfig } from "../../src/config/index.ts";
import { verifyToken } from "../../src/vault/token.ts";
import { ALONE_ENV, buildAlone } from "../fixtures/compiled.ts";
import { tempRoot } from "../fixtures/temp.ts";

/** Every folder this file makes is in here, removed after its tests. */
const TMP = tempRoot("mg-cli-");

const ROOT = join(import.meta.dir, "../..");
const MAIN = join(ROOT, "src/cli/main.ts");
const SEED = join(ROOT, "examples/seed.toml");

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(args: string[], env: Record<string, string> = {}, cwd = ROOT): Run {
  const p = Bun.spawnSync([process.execPath, MAIN, ...args], { cwd, env: { PATH: process.env["PATH"] ?? "", ...env } });
  return { code: p.exitCode ?? -1, stdout: p.stdout.toString(), stderr: p.stderr.toString() };
}

function tempDir(): string {
  return mkdtempSync(join(TMP, "mg-cli-"));
}

describe("check", () => {
  test("the seed config is valid and both rules are listed in order", () => {
    const r = run(["check", "-c", SEED]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('1. ALLOW "Transactional emails from known senders"');
    expect(r.stdout).toContain('2. DENY  "Deny everything else"');
  });

  test("a shadowed rule is warned about", () => {
    const dir = tempDir();
    const file = join(dir, "m.toml");
    writeFileSync(
      file,
      `[[rules]]
name = "deny all"
action = "deny"
[[rules]]
name = "late"
action = "allow"
folders = ["INBOX"]
`,
    );
    const r = run(["check", "-c", file]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`warning: rule 2 "late" can never match: rule 1 "deny all"`);
  });

  test("accounts are listed with how they log in upstream, never with a secret", () => {
    const file = join(tempDir(), "m.toml");
    writeFileSync(
      file,
      [
        `[accounts.work]`,
        `username = "agent@contoso.com"`,
        `auth = "oauth2"`,
        `provider = "microsoft"`,
        `client_id = "abc"`,
        `client_secret = "client-secret-value"`,
        `[accounts.pw]`,
        `username = "u@x.test"`,
        `password = "password-value"`,
      ].join("\n"),
    );
    const r = run(["check", "-c", file]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(
      "account work: agent@contoso.com, oauth2 (microsoft, authorization_code, tenant common)",
    );
    expect(r.stdout).toContain("account pw: u@x.test, password");
    expect(r.stdout + r.stderr).not.toContain("-value");
  });

  test("a config error exits 2 with the located message", () => {
    const dir = tempDir();
    const file = join(dir, "m.toml");
    writeFileSync(file, `[[rules]]\nname = "a"\naction = "alow"\n`);
    const r = run(["check", "-c", file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${file}:3:10: rules[0].action: expected "allow" | "deny" | "ask", got "alow"`);
  });

  test("a missing environment variable exits 2 and prints no secret", () => {
    const dir = tempDir();
    const file = join(dir, "m.toml");
    writeFileSync(
      file,
      `[accounts.main]
username = "u"
password_env = "MG_PW"
[[agents]]
name = "b"
token_hash = "sha256:${"0".repeat(64)}"
account = "main"
`,
    );
    const missing = run(["check", "-c", file]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("environment variable MG_PW is not set");
    const ok = run(["check", "-c", file], { MG_PW: "s3cr3t-value" });
    expect(ok.code).toBe(0);
    expect(ok.stdout + ok.stderr).not.toContain("s3cr3t-value");
  });

  test("usage errors exit 2", () => {
    expect(run(["check"]).code).toBe(2);
    expect(run(["check", "-c", SEED, "--bogus"]).code).toBe(2);
    expect(run(["frobnicate"]).code).toBe(2);
    expect(run([]).code).toBe(2);
  });

  test("only the commands that run the proxies re-execute with a tuned allocator", () => {
    for (const argv of [
      ["serve", "-c", "f"],
      ["--config", "f"],
      ["-c", "f"],
      ["--log-format", "json", "serve", "-c", "f"],
      ["--log-format=json", "--config", "f"],
    ]) {
      expect([argv, runsProxies(argv)]).toEqual([argv, true]);
    }
    for (const argv of [
      [],
      ["serve", "--help"],
      ["--help"],
      ["-V"],
      ["--config", "f", "--help"],
      ["-c", "f", "-V"],
      ["check", "-c", "f"],
      ["audit", "-c", "f"],
      ["--log-format", "json", "version"],
    ]) {
      expect([argv, runsProxies(argv)]).toEqual([argv, false]);
    }
  });

  test("--help everywhere exits 0", () => {
    for (const cmd of [
      ["--help"],
      ["check", "--help"],
      ["explain", "-h"],
      ["audit", "--help"],
      ["token", "--help"],
      ["config", "--help"],
      ["serve", "--help"],
      ["help"],
      ["help", "check"],
    ]) {
      const r = run(cmd);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain("Usage:");
    }
  });

  test("help COMMAND is COMMAND --help; an unknown command or a second one is a usage error", () => {
    for (const name of ["check", "explain", "audit", "approvals", "reload", "serve"]) {
      const r = run(["help", name]);
      expect([name, r.code]).toEqual([name, 0]);
      expect(r.stdout).toBe(run([name, "--help"]).stdout);
      expect(r.stdout).toContain(`mailgator ${name}`);
    }
    expect(run(["help", "nope"]).code).toBe(2);
    expect(run(["help", "nope"]).stderr).toContain('help: unknown command "nope"');
    expect(run(["help", "check", "audit"]).code).toBe(2);
  });
});

describe("explain on the seed config", () => {
  const cases: [string[], string][] = [
    [
      ["--op", "mail:read", "--folder", "INBOX", "--from", "notifications@shop.test"],
      `mail:read in "INBOX": ALLOW by rule 1 "Transactional emails from known senders"`,
    ],
    [
      ["--op", "mail:read", "--folder", "INBOX", "--from", "Boss <boss@corp.test>"],
      `mail:read in "INBOX": DENY by rule 2 "Deny everything else"`,
    ],
    [["--op", "read", "--folder", "Archive"], `mail:read in "Archive": DENY by rule 2 "Deny everything else"`],
    [["--op", "mail:send", "--to", "a@corp.test"], `mail:send: DENY by rule 2 "Deny everything else"`],
    [
      ["--op", "mail:delete", "--folder", "INBOX", "--from", "notifications@shop.test"],
      `mail:delete in "INBOX": DENY by rule 2 "Deny everything else"`,
    ],
    [["--op", "mail:read", "--folder", "INBOX"], `mail:read in "INBOX": depends on from (possible: allow, deny)`],
    [
      ["--op", "mail:read", "--folder", "INBOX", "--from", '"notifications@shop.test" <spam@evil.test>'],
      `DENY by rule 2`,
    ],
  ];
  for (const [args, expected] of cases) {
    test(args.join(" "), () => {
      const r = run(["explain", "-c", SEED, ...args]);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(expected);
    });
  }

  test("--json", () => {
    const r = run([
      "explain",
      "-c",
      SEED,
      "--op",
      "mail:read",
      "--folder",
      "INBOX",
      "--from",
      "notifications@x.test",
      "--json",
    ]);
    expect(JSON.parse(r.stdout)).toMatchObject({
      operation: "mail:read",
      action: "allow",
      rule: "Transactional emails from known senders",
      ruleIndex: 0,
    });
  });

  test("an unknown operation or agent is a usage error", () => {
    expect(run(["explain", "-c", SEED, "--op", "mail:raed"]).code).toBe(2);
    expect(run(["explain", "-c", SEED, "--op", "read", "--agent", "ghost"]).code).toBe(2);
  });
});

describe("token and config init", () => {
  test("token new prints a token once and a hash that verifies it", () => {
    const r = run(["token", "new", "assistant"]);
    expect(r.code).toBe(0);
    const token = /\n {2}(mgt_[A-Za-z0-9_-]{43})\n/.exec(r.stdout)?.[1];
    const hash = /token_hash = "(sha256:[0-9a-f]{64})"/.exec(r.stdout)?.[1];
    expect(token).toBeDefined();
    expect(verifyToken(token!, hash!)).toBe(true);
    expect(verifyToken(`${token!}x`, hash!)).toBe(false);
    expect(run(["token", "new", "assistant"]).stdout).not.toContain(token!);
  });

  test("config init writes a starter config that loads, and never overwrites", () => {
    const dir = tempDir();
    const file = join(dir, "mailgator.toml");
    expect(run(["config", "init", "--output", file]).code).toBe(0);
    const c = loadConfig(file);
    expect(c.rules.at(-1)!.name).toBe("Deny everything else");
    expect(run(["config", "init", "--output", file]).code).toBe(2);
    const printed = run(["config", "init"]);
    expect(() => parseConfig(printed.stdout, "stdout.toml")).not.toThrow();
  });

  test("config init does not write through a symbolic link, dangling or not", () => {
    const dir = tempDir();
    const target = join(dir, "elsewhere.toml");
    const link = join(dir, "mailgator.toml");
    symlinkSync(target, link);
    const r = run(["config", "init", "--output", link]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("exists; not overwriting it");
    expect(existsSync(target)).toBe(false);
    writeFileSync(target, "kept\n");
    expect(run(["config", "init", "--output", link]).code).toBe(2);
    expect(readFileSync(target, "utf8")).toBe("kept\n");
  });
});

describe("audit", () => {
  test("reads rows with filters, as text and JSON", async () => {
    const dir = tempDir();
    const file = join(dir, "m.toml");
    writeFileSync(file, readFileSync(SEED));
    const log = AuditLog.open(join(dir, "mailgator-audit.db"));
    const base = {
      session: "s1",
      clientAddr: "127.0.0.1",
      protocol: "imap" as const,
      folder: "INBOX",
      target: null,
      configRevision: "r",
    };
    log.record({
      ...base,
      agent: "bot",
      command: "UID FETCH",
      operation: "mail:read",
      decision: "allow",
      rule: "Transactional emails from known senders",
      ruleIndex: 0,
      reason: "ok",
      count: 3,
      hiddenCount: 7,
    });
    log.record({
      ...base,
      agent: "bot",
      command: "STORE",
      operation: "mail:delete",
      decision: "deny",
      rule: "Deny everything else",
      ruleIndex: 1,
      reason: "no",
    });
    log.record({
      ...base,
      agent: "other",
      command: "SELECT",
      operation: "folder:read",
      decision: "allow",
      rule: "Transactional emails from known senders",
      ruleIndex: 0,
      reason: "ok",
    });
    await log.close();

    const all = run(["audit", "-c", file]);
    expect(all.code).toBe(0);
    expect(all.stdout.trim().split("\n")).toHaveLength(3);
    expect(all.stdout).toContain("count=3 hidden=7");

    const denied = run(["audit", "-c", file, "--decision", "deny", "--json"]);
    const rows = denied.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ command: "STORE", decision: "deny", rule: "Deny everything else" });

    expect(run(["audit", "-c", file, "--agent", "other", "--json"]).stdout.trim().split("\n")).toHaveLength(1);
    expect(
      run(["audit", "-c", file, "--rule", "Deny everything else", "--json"]).stdout.trim().split("\n"),
    ).toHaveLength(1);
    expect(run(["audit", "-c", file, "--limit", "2", "--json"]).stdout.trim().split("\n")).toHaveLength(2);
    expect(run(["audit", "-c", file, "--since", "1h", "--json"]).stdout.trim().split("\n")).toHaveLength(3);
    expect(run(["audit", "-c", file, "--since", "2999-01-01", "--json"]).stdout.trim()).toBe("");
    expect(run(["audit", "-c", file, "--since", "yesterday"]).code).toBe(2);
    expect(run(["audit", "-c", file, "--decision", "maybe"]).code).toBe(2);
  });

  test("--follow prints rows written after it started", async () => {
    const { file, log, ev } = followFixture();
    await log.durable({ ...ev, target: "before@x.test" });
    const follow = followAudit(file, []);
    await follow.until("before@x.test");
    await log.durable({ ...ev, target: "after@x.test" });
    await follow.until("after@x.test");
    follow.stop();
    await log.close();
    expect(follow.seen().trim().split("\n")).toHaveLength(2);
  });

  test("--follow with a filter prints only matching rows written after it started, none from before", async () => {
    const { file, log, ev } = followFixture();
    await log.durable({ ...ev, agent: "rare", target: "old-rare@x.test" });
    for (let i = 0; i < 50; i++) log.record({ ...ev, agent: "common", target: `c${i}@x.test` });
    await log.flush();
    const follow = followAudit(file, ["--agent", "rare", "--limit", "1"]);
    await follow.until("old-rare@x.test"); // --limit 1: the newest matching row from before
    for (let i = 0; i < 50; i++) log.record({ ...ev, agent: "common", target: `d${i}@x.test` });
    await log.flush();
    await Bun.sleep(600); // a poll with only non-matching new rows
    await log.durable({ ...ev, agent: "rare", target: "new-rare@x.test" });
    await follow.until("new-rare@x.test");
    follow.stop();
    await log.close();
    expect(
      follow
        .seen()
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l).target),
    ).toEqual(["old-rare@x.test", "new-rare@x.test"]);
  });
});

/** A config file (the seed's), its audit log opened for writing, and a row to write variants of. */
function followFixture() {
  const dir = tempDir();
  const file = join(dir, "m.toml");
  writeFileSync(file, readFileSync(SEED));
  const log = AuditLog.open(join(dir, "mailgator-audit.db"));
  const ev = {
    session: "s",
    agent: null,
    clientAddr: null,
    protocol: "smtp" as const,
    command: "RCPT TO",
    operation: "mail:send",
    folder: null,
    decision: "deny" as const,
    rule: null,
    ruleIndex: null,
    reason: "r",
    configRevision: "x",
  };
  return { file, log, ev };
}

/** `mailgator audit -c FILE --follow --json ...args` in a child process; `until` waits for text in its output. */
function followAudit(
  file: string,
  args: string[],
): { until(needle: string): Promise<void>; seen(): string; stop(): void } {
  const child = Bun.spawn([process.execPath, MAIN, "audit", "-c", file, "--follow", "--json", ...args], {
    stdout: "pipe",
  });
  const reader = child.stdout.getReader();
  let seen = "";
  return {
    async until(needle) {
      while (!seen.includes(needle)) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`follow ended before ${needle}`);
        seen += new TextDecoder().decode(value);
      }
    },
    seen: () => seen,
    stop: () => child.kill(),
  };
}

describe("compiled executable", () => {
  test("dist/mailgator runs alone in an empty directory with no Bun on PATH", () => {
    const alone = buildAlone(tempDir());
    copyFileSync(SEED, join(alone, "seed.toml"));
    const p = Bun.spawnSync(["./mailgator", "check", "-c", "seed.toml"], {
      cwd: alone,
      env: ALONE_ENV,
    });
    expect(p.exitCode).toBe(0);
    const text = p.stdout.toString();
    expect(text).toContain("1. ALLOW");
    expect(text).toContain("2. DENY");
  }, 60_000);
});
