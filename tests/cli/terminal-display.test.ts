/**
 * What reaches a terminal from `mailgator audit` and `mailgator account` (docs/audit.md "Reading the log",
 * docs/accounts.md): agents choose folder names, LOGIN names and commands, audit reasons quote them and upstream
 * replies, and an OAuth provider chooses its error descriptions and device codes. No control or format character in
 * any of them may reach the terminal as it is: each is shown as its `\uXXXX` escape, and `--json` stays valid JSON
 * with the same values.
 */
import { Database } from "bun:sqlite";
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loginDevice } from "../../src/accounts/login.ts";
import { ensureSchema, saveTokens, writeStatus } from "../../src/accounts/records.ts";
import { type AuditEvent, AuditLog } from "../../src/audit/index.ts";
import { loadConfig, type OAuth2AccountConfig } from "../../src/config/index.ts";
import { MAX_COMBINING_MARKS } from "../../src/mail/display.ts";
import { SealedStore } from "../../src/state/store.ts";

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");
const dir = mkdtempSync(join(tmpdir(), "mg-terminal-"));
const file = join(dir, "m.toml");
setDefaultTimeout(60_000);

/**
 * RIGHT-TO-LEFT OVERRIDE, ESC (a CSI sequence that erases the line), CSI as one C1 character, ZERO WIDTH JOINER, a
 * tag character (beyond U+FFFF), BEL and TAB. (A lone surrogate cannot be stored: SQLite keeps UTF-8, where it
 * becomes U+FFFD; the device login test has one.)
 */
const HOSTILE = "\u202e\x1b[2K\x9b1A\u200d\u{e0041}\x07\t";
const ESCAPED = "\\u202e\\u001b[2K\\u009b1A\\u200d\\udb40\\udc41\\u0007\\u0009";
/** C0 and DEL and C1, general category Cf, the line separators, and surrogates. */
const RAW = /[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\p{Cf}\p{Cs}]/u;

function run(...args: string[]): { code: number; stdout: string; stderr: string } {
  const p = Bun.spawnSync([process.execPath, MAIN, ...args], { env: { PATH: process.env["PATH"] ?? "" } });
  return { code: p.exitCode ?? -1, stdout: p.stdout.toString(), stderr: p.stderr.toString() };
}

beforeAll(async () => {
  writeFileSync(
    file,
    [
      "[accounts.g]",
      'username = "a@gmail.com"',
      'auth = "oauth2"',
      'provider = "google"',
      'client_id = "x.apps.googleusercontent.com"',
      'client_secret = "GOCSPX-x"',
      "[audit]",
      'path = "audit.db"',
      "",
    ].join("\n"),
  );
  const config = loadConfig(file, { env: {} });
  const log = AuditLog.open(config.audit.path);
  const row: AuditEvent = {
    session: "s1",
    clientAddr: "127.0.0.1",
    agent: `bot${HOSTILE}`,
    protocol: "imap",
    command: `X${HOSTILE}`,
    operation: "folder:write",
    folder: `Archive/a${HOSTILE}gnp.exe/child`,
    target: `user${HOSTILE}@corp.test`,
    decision: "deny",
    rule: `rule${HOSTILE}`,
    ruleIndex: 0,
    reason: `parent folder Archive/a${HOSTILE}gnp.exe is hidden; upstream: NO ${HOSTILE}`,
    configRevision: "r",
  };
  log.record(row);
  await log.close();
  const store = SealedStore.open(config.state.path, {
    secretsFile: config.state.secretsFile,
    env: {},
    create: true,
  })!;
  ensureSchema(store);
  const now = Date.now();
  const account = config.accounts["g"] as OAuth2AccountConfig;
  saveTokens(
    store,
    "g",
    {
      refreshToken: "1//rt",
      accessToken: "ya29.x",
      expiresAt: now + 3_600_000,
      obtainedAt: now,
      clientId: account.oauth2.clientId,
      tokenUrl: account.oauth2.tokenUrl,
    },
    now,
  );
  writeStatus(store, {
    account: "g",
    state: "retrying",
    since: now,
    lastError: `invalid_client: ${HOSTILE} (HTTP 401)`,
    lastErrorAt: now,
    expiresAt: now + 3_600_000,
    refreshedAt: now,
  });
  store.close();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("mailgator audit", () => {
  test("text: an agent name with a space, `=` or a filler is quoted: it cannot pass for other fields", async () => {
    // In pass-through mode the agent is the login the upstream accepted, which some servers allow spaces in.
    const own = mkdtempSync(join(tmpdir(), "mg-terminal-agent-"));
    try {
      const config = join(own, "m.toml");
      writeFileSync(config, `[audit]\npath = "${join(own, "audit.db")}"\n`);
      const log = AuditLog.open(join(own, "audit.db"));
      // A Hangul filler is a letter (Lo) drawn as nothing: a login that a server ignoring the domain accepted.
      for (const agent of ["bob ALLOW x", 'a"b=c', "plain.agent+tag@corp-1.test", "bob@corp\u3164.test"])
        log.record({
          session: "s2",
          clientAddr: "127.0.0.1",
          agent,
          protocol: "smtp",
          command: "RCPT TO",
          operation: "send",
          folder: null,
          target: null,
          decision: "deny",
          rule: null,
          ruleIndex: null,
          reason: "no rule matched",
          configRevision: "r",
        });
      await log.close();
      const r = run("audit", "-c", config);
      expect(r.code).toBe(0);
      const lines = r.stdout.trim().split("\n");
      expect(lines).toHaveLength(4);
      expect(lines.some((l) => l.includes(' DENY  "bob ALLOW x"@127.0.0.1 smtp RCPT TO send — '))).toBe(true);
      expect(lines.some((l) => l.includes(' DENY  "a\\"b=c"@127.0.0.1 smtp '))).toBe(true);
      expect(lines.some((l) => l.includes(" DENY  plain.agent+tag@corp-1.test@127.0.0.1 smtp "))).toBe(true);
      expect(lines.some((l) => l.includes(' DENY  "bob@corp\\u3164.test"@127.0.0.1 smtp '))).toBe(true);
      expect(r.stdout).not.toContain("\u3164");
    } finally {
      rmSync(own, { recursive: true, force: true });
    }
  });

  test("text: every field an agent or upstream wrote shows its controls and format characters escaped", () => {
    const r = run("audit", "-c", file);
    expect(r.code).toBe(0);
    const line = r.stdout.trim();
    expect(line.split("\n")).toHaveLength(1);
    expect(line).not.toMatch(RAW);
    // The agent is quoted too once it holds more than letters, digits and `._+@-` (ESCAPED's TAB as \t).
    expect(line).toContain(` "bot${ESCAPED.replace("\\u0009", "\\t")}"@127.0.0.1 `);
    expect(line).toContain(` imap X${ESCAPED} folder:write `);
    // folder, target and rule are quoted as JSON strings, whose own escapes spell TAB as \t.
    const quoted = ESCAPED.replace("\\u0009", "\\t");
    expect(line).toContain(`folder="Archive/a${quoted}gnp.exe/child"`);
    expect(line).toContain(`target="user${quoted}@corp.test"`);
    expect(line).toContain(`rule="rule${quoted}"`);
    expect(line).toContain(`— parent folder Archive/a${ESCAPED}gnp.exe is hidden; upstream: NO ${ESCAPED}`);
  });

  test("text: protocol and decision are escaped too, though only another program writes them so", async () => {
    // The writer checks protocol and decision against their lists, but the file is SQLite's: anything that can write
    // it (a tool, another build) can put any text there, and reading it must not hand the terminal a sequence.
    const own = mkdtempSync(join(tmpdir(), "mg-terminal-foreign-"));
    try {
      const config = join(own, "m.toml");
      writeFileSync(config, `[audit]\npath = "${join(own, "audit.db")}"\n`);
      const log = AuditLog.open(join(own, "audit.db"));
      await log.close();
      const db = new Database(join(own, "audit.db"));
      db.run(
        "INSERT INTO audit (time, session, protocol, command, decision, reason, config_revision) " +
          "VALUES (?, 's', ?, 'NOOP', ?, 'r', 'x')",
        [Date.now(), `imap${HOSTILE}`, `deny${HOSTILE}`],
      );
      db.close();
      const r = run("audit", "-c", config);
      expect(r.code).toBe(0);
      expect(r.stdout).not.toMatch(RAW);
      expect(r.stdout).toContain(` imap${ESCAPED} NOOP — r`);
      expect(r.stdout).toContain(` DENY${ESCAPED} `);
    } finally {
      rmSync(own, { recursive: true, force: true });
    }
  });

  test("--json: valid JSON holding the exact values, with none of those characters raw", () => {
    const r = run("audit", "-c", file, "--json");
    expect(r.code).toBe(0);
    const text = r.stdout.trim();
    expect(text).not.toMatch(RAW);
    const row = JSON.parse(text) as Record<string, unknown>;
    expect(row["folder"]).toBe(`Archive/a${HOSTILE}gnp.exe/child`);
    expect(row["target"]).toBe(`user${HOSTILE}@corp.test`);
    expect(row["agent"]).toBe(`bot${HOSTILE}`);
    expect(row["command"]).toBe(`X${HOSTILE}`);
    expect(row["reason"]).toBe(`parent folder Archive/a${HOSTILE}gnp.exe is hidden; upstream: NO ${HOSTILE}`);
  });
});

/**
 * Text drawn as nothing, or as what it is not: a variation selector (U+FE0F; U+E0100 beyond U+FFFF), the Hangul
 * fillers, the combining grapheme joiner, an unassigned tag (U+E0000) and U+2065, a private-use character, a
 * combining mark after a space (no base), MAX_COMBINING_MARKS + 1 marks on one letter, and blanks other than the
 * space (no-break spaces, the ideographic and figure spaces, the blank Braille pattern). Each is escaped.
 */
const INVISIBLE =
  "x\ufe0f \u115f\u1160\u3164\uffa0 c\u034fd \u{e0100}\u{e0000}\u2065 \ue000 \u0301 b\u0301\u0302\u0303\u0304\u0305" +
  " My\u00a0Folder\u202f\u3000\u2007\u2800";
const INVISIBLE_ESCAPED =
  "x\\ufe0f \\u115f\\u1160\\u3164\\uffa0 c\\u034fd \\udb40\\udd00\\udb40\\udc00\\u2065 \\ue000 \\u0301 " +
  "b\\u0301\\u0302\\u0303\\u0304\\u0305 My\\u00a0Folder\\u202f\\u3000\\u2007\\u2800";
/**
 * Text in use, shown as it is: decomposed é (e, U+0301), Vietnamese with two marks on a vowel, Hindi with its vowel
 * signs and virama, and MAX_COMBINING_MARKS marks on one letter.
 */
const READABLE =
  "re\u0301sume\u0301 Vie\u0323\u0302t Nam \u0928\u092e\u0938\u094d\u0924\u0947 a\u0301\u0302\u0303\u0304";
/** What a terminal draws as nothing or a font as anything, or as a space: INVISIBLE's characters, found raw. */
const RAW_INVISIBLE =
  /[\p{Default_Ignorable_Code_Point}\p{Cn}\p{Co}\u00a0\u202f\u3000\u2007\u2800]|(?<![\p{L}\p{M}])\p{M}|\p{M}{5}/u;

describe("mailgator audit: characters drawn as nothing, or piled up", () => {
  test("are escaped in text, kept in --json; accented, Vietnamese and Hindi text is shown as it is", async () => {
    expect(MAX_COMBINING_MARKS).toBe(4);
    const own = mkdtempSync(join(tmpdir(), "mg-terminal-invisible-"));
    try {
      const config = join(own, "m.toml");
      writeFileSync(config, `[audit]\npath = "${join(own, "audit.db")}"\n`);
      const log = AuditLog.open(join(own, "audit.db"));
      log.record({
        session: "s3",
        clientAddr: "127.0.0.1",
        agent: "bot",
        protocol: "imap",
        command: "SELECT",
        operation: "folder:read",
        folder: `${READABLE}/${INVISIBLE}`,
        target: null,
        decision: "deny",
        rule: "r",
        ruleIndex: 0,
        reason: `folder ${READABLE} ${INVISIBLE} is hidden`,
        configRevision: "r",
      });
      await log.close();
      const r = run("audit", "-c", config);
      expect(r.code).toBe(0);
      const line = r.stdout.trim();
      expect(line).not.toMatch(RAW_INVISIBLE);
      expect(line).toContain(`folder="${READABLE}/${INVISIBLE_ESCAPED}"`);
      expect(line).toContain(`— folder ${READABLE} ${INVISIBLE_ESCAPED} is hidden`);

      const json = run("audit", "-c", config, "--json");
      expect(json.code).toBe(0);
      expect(json.stdout).not.toMatch(RAW_INVISIBLE);
      expect(json.stdout).toContain(READABLE);
      const row = JSON.parse(json.stdout) as Record<string, unknown>;
      expect(row["folder"]).toBe(`${READABLE}/${INVISIBLE}`);
      expect(row["reason"]).toBe(`folder ${READABLE} ${INVISIBLE} is hidden`);
    } finally {
      rmSync(own, { recursive: true, force: true });
    }
  });
});

describe("mailgator account", () => {
  test("status: the provider's error is shown escaped; --json keeps it exact", () => {
    const r = run("account", "status", "-c", file);
    expect(r.code).toBe(0);
    expect(r.stdout).not.toMatch(RAW);
    expect(r.stdout).toContain(`last error: invalid_client: ${ESCAPED} (HTTP 401)`);
    const json = run("account", "status", "-c", file, "--json");
    expect(json.stdout).not.toMatch(RAW);
    const views = JSON.parse(json.stdout) as { lastError: string }[];
    expect(views[0]!.lastError).toBe(`invalid_client: ${HOSTILE} (HTTP 401)`);
  });

  test("device login: the page, the code and the provider's refusal are printed escaped", async () => {
    const config = loadConfig(file, { env: {} });
    const said: string[] = [];
    const hostile = `${HOSTILE}\ud800`;
    const escaped = `${ESCAPED}\\ud800`;
    const fetchImpl = (async (input: string | URL | Request, init?: RequestInit) => {
      const request = new Request(input as string, init);
      if (request.url === "https://oauth2.googleapis.com/device/code")
        return Response.json({
          device_code: "AH-1Ng",
          user_code: `GQVQ${hostile}`,
          verification_url: `https://www.google.com/device${hostile}`,
          verification_uri_complete: `https://evil.test/${hostile}`,
          expires_in: 1800,
          interval: 1,
        });
      return Response.json({ error: "access_denied", error_description: `no ${hostile}` }, { status: 400 });
    }) as typeof fetch;
    const login = loginDevice(config.accounts["g"] as OAuth2AccountConfig, {
      say: (t) => said.push(t),
      fetch: fetchImpl,
    });
    const error = await login.then(
      () => null,
      (e: Error) => e,
    );
    const shown = said.join("\n");
    expect(shown).not.toMatch(RAW);
    expect(shown).toContain(`open https://www.google.com/device${escaped} and enter the code GQVQ${escaped}`);
    expect(shown).toContain(`(or open https://evil.test/${escaped})`);
    expect(error?.message).toContain(`access_denied: no ${escaped} (HTTP 400)`);
    expect(error?.message).not.toMatch(RAW);
  });
});

describe("error messages", () => {
  test("a config error quoting a rule's name, and a usage error quoting an argument, are shown escaped", () => {
    // A rule's name is the config's, which an `mcp --admin` edit can write (docs/mcp.md); the same name twice is an
    // error that quotes it.
    const own = mkdtempSync(join(tmpdir(), "mg-terminal-errors-"));
    try {
      const config = join(own, "m.toml");
      const rule = `[[rules]]\nname = ${JSON.stringify(`r${HOSTILE}`)}\noperations = ["send"]\naction = "allow"\n`;
      writeFileSync(config, `[audit]\npath = "${join(own, "audit.db")}"\n${rule}${rule}`);
      const r = run("check", "-c", config);
      expect(r.code).toBe(2);
      expect(r.stderr).not.toMatch(RAW);
      expect(r.stderr).toContain(`duplicate rule name "r${ESCAPED.replace("\\u0009", "\\t")}"`);
      const usage = run("explain", "--op", `x${HOSTILE}`, "-c", config);
      expect(usage.code).toBe(2);
      expect(usage.stderr).not.toMatch(RAW);
      expect(usage.stderr).toContain(`mailgator: --op: unknown operation "x${ESCAPED.replace("\\u0009", "\\t")}"`);
    } finally {
      rmSync(own, { recursive: true, force: true });
    }
  });
});
