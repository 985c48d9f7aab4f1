/**
 * `mailgator mcp --admin` (docs/mcp.md "Admin tools") driven by the MCP SDK's own client over stdio, as a coding
 * agent runs it, beside a real `mailgator serve` child in vault mode against the test Dovecot and Postfix: simulate
 * agrees with `mailgator explain`, a rule added through add_rule takes effect in the running proxy after the
 * automatic reload (and a removed one stops), an invalid edit leaves the file byte for byte, no tool result carries a
 * secret, the write tools exist only with --allow-config-writes, and an agent token in the environment stops it.
 */

import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse as parseToml } from "smol-toml";
import { PROTOCOLS } from "../../src/audit/index.ts";
import { MAX_CONFIG_BYTES } from "../../src/config/index.ts";
import { AUDIT_MAX_ROWS, AUDIT_UNTRUSTED } from "../../src/mcp/admin-commands.ts";
import { REDACTED, redact } from "../../src/mcp/admin-redact.ts";
import { MAX_MCP_REQUEST_BYTES } from "../../src/mcp/stdio.ts";
import { hashToken } from "../../src/vault/token.ts";
import { lineClient, runCli, type Served, serveChild } from "../e2e/serve-child.ts";
import {
  createMailbox,
  imapListener,
  smtpListener,
  type TestMailbox,
  uniqueToken,
  upstreams,
} from "../fixtures/index.ts";
import { type AdminClient as Admin, startAdminClient } from "./admin-client.ts";

setDefaultTimeout(90_000);

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");
const TOKEN = `mgt_admin_${uniqueToken("")}_0123456789abcdef0123456789`;
const PASSWORD_ENV = `MG_ADMIN_TEST_PW_${uniqueToken("")
  .toUpperCase()
  .replace(/[^A-Z0-9]/g, "")}`;
const INLINE_SECRET = `inline-secret-${uniqueToken("")}`;
/** Shorter than SCRUB_MIN_LENGTH: no scrubbing of free text finds it. */
const SHORT_SECRET = "k9#";
const FILE_SECRET = `file-secret-${uniqueToken("")}`;

let mailbox: TestMailbox;
let dir: string;
let file: string;
let served: Served;
let imapPort: number;
/** The environment of every mailgator child: the account's password comes from it (password_env). */
let env: Record<string, string | undefined>;

function configText(): string {
  const up = upstreams();
  return `# Mailgator config for the admin MCP test.
# This comment, like the layout below, must survive every rule edit.

${imapListener()}
${smtpListener()}
[audit]
path = "${join(dir, "audit.db")}"

[accounts.main]
username = "${mailbox.user}"
password_env = "${PASSWORD_ENV}"

[accounts.spare]
username = "spare@${up.userDomain}"
password = "${INLINE_SECRET}"

[accounts.filed]
username = "filed@${up.userDomain}"
password_file = "filed.secret"

# A secret too short for the scrubber of free text: only the rule by key name hides it.
[accounts.short]
username = "short@${up.userDomain}"
password = "${SHORT_SECRET}"

[[agents]]
name = "alice"
token_hash = "${hashToken(TOKEN)}"
account = "main"

# Rules: the first match decides.
[[rules]]
name = "hide junk"
action = "deny"
folders = ["Junk"]

# Archive: only mail from the boss.
[[rules]]
name = "archive from boss"
action = "allow"
operations = ["folder:read", "mail:read"]
folders = ["Archive"]
from = ["boss@example.test"]

[[rules]]
name = "send internal"
action = "allow"
operations = "send"
to = ["*@${up.userDomain}"] # trailing comment
`;
}

/** `mailgator mcp --admin` on the test's config, with this test's environment and `extra` beside it. */
function startAdmin(args: readonly string[] = [], extra: Record<string, string> = {}): Promise<Admin> {
  return startAdminClient(file, args, { ...(env as Record<string, string>), ...extra });
}

/** Logs in as alice at the IMAP proxy and answers whether EXAMINE INBOX is allowed. */
async function canExamineInbox(): Promise<boolean> {
  const c = await lineClient(tcpConnect({ host: "127.0.0.1", port: imapPort }));
  try {
    await c.waitFor(/^\* OK/m);
    c.send(`a0 LOGIN alice ${TOKEN}`);
    await c.waitFor(/^a0 OK/m);
    c.send("a1 EXAMINE INBOX");
    const reply = await c.waitFor(/^a1 (OK|NO|BAD)/m);
    c.send("a2 LOGOUT");
    return reply.startsWith("a1 OK");
  } finally {
    c.close();
  }
}

beforeAll(async () => {
  mailbox = await createMailbox({ name: "mcp-admin", seed: { folders: { INBOX: 3, Archive: 2, Junk: 1 }, seed: 7 } });
  dir = mkdtempSync(join(tmpdir(), "mg-mcp-admin-"));
  file = join(dir, "mailgator.toml");
  writeFileSync(join(dir, "filed.secret"), `${FILE_SECRET}\n`, { mode: 0o600 });
  writeFileSync(file, configText(), { mode: 0o600 });
  env = { ...process.env, [PASSWORD_ENV]: mailbox.password };
  served = serveChild(file, "pretty", env);
  imapPort = await served.port("IMAP");
});

afterAll(async () => {
  served?.proc.kill("SIGTERM");
  await served?.proc.exited;
  rmSync(dir, { recursive: true, force: true });
});

const READ_TOOLS = ["get_config", "list_approvals", "list_rules", "query_audit", "simulate", "validate_config"];
const WRITE_TOOLS = ["add_rule", "move_rule", "remove_rule", "update_rule"];

test("without --allow-config-writes only the read tools are listed, and a write tool cannot be called", async () => {
  const admin = await startAdmin();
  try {
    const names = (await admin.client.listTools()).tools.map((t) => t.name).sort();
    expect(names).toEqual(READ_TOOLS);
    const before = readFileSync(file);
    const r = await admin.call("add_rule", { rule: { name: "x", action: "allow" } });
    expect(r.isError).toBe(true);
    expect(readFileSync(file)).toEqual(before);
  } finally {
    await admin.close();
  }
  const writer = await startAdmin(["--allow-config-writes"]);
  try {
    const names = (await writer.client.listTools()).tools.map((t) => t.name).sort();
    expect(names).toEqual([...READ_TOOLS, ...WRITE_TOOLS].sort());
  } finally {
    await writer.close();
  }
});

test("query_audit's description names every protocol its filter takes (PROTOCOLS, oauth2 too)", async () => {
  const admin = await startAdmin();
  try {
    const tool = (await admin.client.listTools()).tools.find((t) => t.name === "query_audit");
    const listed = /protocol \(([^)]*)\)/.exec(tool?.description ?? "")?.[1];
    expect(listed?.split(", ")).toEqual([...PROTOCOLS]);
  } finally {
    await admin.close();
  }
});

test("an agent credential in the environment (MAILGATOR_TOKEN*, MAILGATOR_PASSWORD*) stops it before any tool", () => {
  for (const name of ["MAILGATOR_TOKEN", "MAILGATOR_TOKEN_FILE", "MAILGATOR_PASSWORD"]) {
    const r = Bun.spawnSync([process.execPath, MAIN, "mcp", "--admin", "-c", file], {
      env: { ...env, [name]: TOKEN },
      stdin: "pipe",
      stdout: "pipe",
      stderr: "pipe",
    });
    expect(r.exitCode).toBe(2);
    expect(r.stdout.toString()).toBe("");
    expect(r.stderr.toString()).toContain(`${name} is set`);
  }
});

test("a request line of MAX_MCP_REQUEST_BYTES is read; one octet more ends the server with status 1", async () => {
  const proc = Bun.spawn([process.execPath, MAIN, "mcp", "--admin", "-c", file], {
    env,
    stdin: "pipe",
    stdout: "pipe",
    stderr: "pipe",
  });
  const ping = (id: number, length: number): string => {
    const head = `{"jsonrpc":"2.0","id":${id},"method":"ping","params":{"_meta":{"pad":"`;
    const tail = `"}}}\n`;
    return head + "x".repeat(length - head.length - tail.length) + tail;
  };
  const atLimit = ping(1, MAX_MCP_REQUEST_BYTES);
  expect(atLimit.length).toBe(MAX_MCP_REQUEST_BYTES);
  proc.stdin.write(atLimit);
  await proc.stdin.flush();
  const reader = (proc.stdout as ReadableStream<Uint8Array>).getReader();
  let out = "";
  while (!out.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    out += new TextDecoder().decode(value);
  }
  expect(JSON.parse(out.split("\n")[0]!)).toEqual({ jsonrpc: "2.0", id: 1, result: {} });
  proc.stdin.write(ping(2, MAX_MCP_REQUEST_BYTES + 1));
  await proc.stdin.flush();
  expect(await proc.exited).toBe(1);
  const stderr = await new Response(proc.stderr).text();
  expect(stderr).toContain(`exceeded maximum size of ${MAX_MCP_REQUEST_BYTES} bytes`);
  expect(stderr).toContain("the connection to the client failed; exiting");
});

test("a config file others may write stops it", () => {
  const other = join(dir, "loose.toml");
  writeFileSync(other, readFileSync(file));
  chmodSync(other, 0o664);
  const r = Bun.spawnSync([process.execPath, MAIN, "mcp", "--admin", "-c", other], {
    env,
    stdin: "pipe",
    stdout: "pipe",
    stderr: "pipe",
  });
  expect(r.exitCode).toBe(2);
  expect(r.stderr.toString()).toContain("writable by group or others");
});

describe("reading", () => {
  let admin: Admin;
  beforeAll(async () => {
    admin = await startAdmin();
  });
  afterAll(async () => {
    await admin?.close();
  });

  test("no tool result holds a secret: inline, from the environment, from a file, token hash, token", async () => {
    const markers = [INLINE_SECRET, FILE_SECRET, mailbox.password, hashToken(TOKEN).slice(7), TOKEN];
    const results = [
      await admin.call("get_config"),
      await admin.call("validate_config"),
      await admin.call("validate_config", { text: `${configText()}\n[bogus]\n` }),
      await admin.call("validate_config", { text: configText().replace(`"${INLINE_SECRET}"`, "12345") }),
      await admin.call("list_rules"),
      await admin.call("simulate", { operation: "all", folder: "INBOX", agent: "alice" }),
      await admin.call("query_audit", { limit: AUDIT_MAX_ROWS }),
      await admin.call("list_approvals"),
    ];
    for (const r of results) for (const m of markers) expect(r.text).not.toContain(m);

    const config = results[0]!.json;
    expect(config.valid).toBe(true);
    expect(config.config.accounts.spare.password).toBe(REDACTED);
    expect(config.config.accounts.short.password).toBe(REDACTED);
    expect(results[0]!.text).not.toContain(`"${SHORT_SECRET}"`);
    expect(config.config.agents[0].token_hash).toBe(REDACTED);
    // References are shown as written: the variable's name, the file's path.
    expect(config.config.accounts.main.password_env).toBe(PASSWORD_ENV);
    expect(config.config.accounts.filed.password_file).toBe("filed.secret");
    expect(config.config.rules.map((r: { name: string }) => r.name)).toEqual([
      "hide junk",
      "archive from boss",
      "send internal",
    ]);
    // A problem in a secret's value never quotes it.
    expect(results[3]!.json.valid).toBe(false);
    expect(results[3]!.text).not.toContain("12345");
    expect(results[2]!.json.problems[0].message).toContain("unknown key");
  });

  test("the redaction rule walks the TOML parser's tables (they have no prototype)", () => {
    const parsed = parseToml(
      '[accounts.o]\npassword = "pw7"\ntoken_url = "https://u:p@idp.test/t"\n' +
        '[[rules]]\nname = "r"\nsecret_note = 1\nsubject = 1979-05-27T07:32:00Z\n',
    );
    const shown = redact(parsed) as { accounts: { o: Record<string, unknown> }; rules: Record<string, unknown>[] };
    expect(shown.accounts.o).toEqual({ password: REDACTED, token_url: `https://${REDACTED}@idp.test/t` });
    expect(shown.rules[0]!["secret_note"]).toBe(REDACTED);
    expect(shown.rules[0]!["subject"]).toBeInstanceOf(Date);
    // An object of a kind no TOML parser gives is not shown unread.
    expect(redact({ a: new Map([["password", "x"]]) })).toEqual({ a: REDACTED });
  });

  test("the redaction rule, by key name", () => {
    const data = {
      accounts: {
        o: {
          client_secret: "s1",
          client_secret_env: "VAR",
          client_secret_file: "/f",
          token_url: "https://u:p@idp.test/token",
          future_api_token: 7,
        },
      },
      admin: { token_hash: "sha256:00" },
      state: { secrets_file: "k.key" },
      rules: [{ name: "r", action: "allow" }],
    };
    expect(redact(data)).toEqual({
      accounts: {
        o: {
          client_secret: REDACTED,
          client_secret_env: "VAR",
          client_secret_file: "/f",
          token_url: `https://${REDACTED}@idp.test/token`,
          future_api_token: REDACTED,
        },
      },
      admin: { token_hash: REDACTED },
      state: { secrets_file: "k.key" },
      rules: [{ name: "r", action: "allow" }],
    });
  });

  test("simulate answers exactly as `mailgator explain --json` on a table of cases", async () => {
    const d = upstreams().userDomain;
    const cases: Record<string, unknown>[] = [
      { operation: "read", folder: "INBOX", agent: "alice" },
      { operation: "all", folder: "Junk", agent: "alice" },
      { operation: "mail:read", folder: "Archive", agent: "alice" },
      { operation: "mail:read", folder: "Archive", agent: "alice", from: ["boss@example.test"] },
      { operation: "mail:read", folder: "Archive", agent: "alice", from: ['"Boss" <other@example.test>'] },
      { operation: "mail:send", agent: "alice", from: [mailbox.user], to: [`x@${d}`] },
      { operation: "mail:send", agent: "alice", from: [mailbox.user], to: [`x@${d}`], bcc: ["out@elsewhere.test"] },
      { operation: "send", agent: "alice", from: ["stranger@elsewhere.test"], to: [`x@${d}`] },
      { operation: "mail:send", to: [`x@${d}`], subject: "hi", has_attachment: true },
      { operation: "folder:write", folder: "Archive/2026" },
    ];
    for (const c of cases) {
      const argv = ["explain", "-c", file, "--json", `--op=${c["operation"]}`];
      for (const [k, v] of Object.entries(c)) {
        if (k === "operation") continue;
        if (k === "has_attachment") argv.push(v ? "--attachment" : "--no-attachment");
        else for (const one of Array.isArray(v) ? v : [v]) argv.push(`--${k}=${one}`);
      }
      const cli = runCli(argv, env);
      expect(cli.exitCode).toBe(0);
      const expected = cli.stdout
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l));
      const r = await admin.call("simulate", c);
      expect(r.isError).toBe(false);
      expect(r.json.answers).toEqual(expected);
    }
    // What explain refuses, simulate refuses too.
    const bad = await admin.call("simulate", { operation: "mail:teleport", folder: "INBOX" });
    expect(bad.isError).toBe(true);
    expect(bad.text).toContain("unknown operation");
  });

  test("list_rules, query_audit (bounded) and list_approvals", async () => {
    const rules = (await admin.call("list_rules")).json;
    expect(rules.rules.map((r: { index: number; name: string }) => [r.index, r.name])).toEqual([
      [0, "hide junk"],
      [1, "archive from boss"],
      [2, "send internal"],
    ]);
    expect(rules.rules[2].operations).toEqual(["mail:send"]);
    expect(rules.rules[1].matchers.from).toEqual(["boss@example.test"]);

    await canExamineInbox();
    await canExamineInbox();
    const one = (await admin.call("query_audit", { command: "EXAMINE", limit: 1 })).json;
    expect(one.rows).toHaveLength(1);
    expect(one.rows[0].command).toBe("EXAMINE");
    expect(one.truncated).toBe(true);
    // Agents' and senders' words are in the rows: every answer says they are data, not instructions.
    expect(one.untrusted).toBe(AUDIT_UNTRUSTED);
    const all = await admin.call("query_audit", { limit: AUDIT_MAX_ROWS });
    expect(all.isError).toBe(false);
    expect(all.json.rows.length).toBeGreaterThanOrEqual(2);
    const over = await admin.call("query_audit", { limit: AUDIT_MAX_ROWS + 1 });
    expect(over.isError).toBe(true);

    const approvals = await admin.call("list_approvals");
    expect(approvals.isError).toBe(false);
    expect(approvals.json.approvals).toEqual(
      JSON.parse(runCli(["approvals", "list", "-c", file, "--json"], env).stdout),
    );
  });
});

describe("writing", () => {
  let admin: Admin;
  beforeAll(async () => {
    admin = await startAdmin(["--allow-config-writes"]);
  });
  afterAll(async () => {
    await admin?.close();
  });

  test("an invalid edit is refused with the problems; the file stays byte for byte", async () => {
    const before = readFileSync(file);
    const mtime = statSync(file).mtimeMs;
    const attempts: [string, Record<string, unknown>][] = [
      ["add_rule", { rule: { name: "bad op", action: "allow", operations: ["mail:teleport"] } }],
      ["add_rule", { rule: { name: "hide junk", action: "allow" } }],
      ["update_rule", { name: "archive from boss", changes: { agents: ["nobody"] } }],
      ["update_rule", { index: 1, changes: { operations: ["write"] } }],
      ["update_rule", { index: 0, name: "send internal", changes: { action: "allow" } }],
      ["add_rule", { rule: { name: "far", action: "deny" }, index: 4 }],
      ["move_rule", { index: 0, to: 3 }],
      ["remove_rule", { name: "no such rule" }],
    ];
    for (const [tool, args] of attempts) {
      const r = await admin.call(tool, args);
      expect(r.isError).toBe(true);
      expect(readFileSync(file)).toEqual(before);
    }
    const r = await admin.call(attempts[0]![0], attempts[0]![1]);
    expect(r.json.error).toContain("the file is unchanged");
    expect(r.json.problems.length).toBeGreaterThan(0);
    expect(JSON.stringify(r.json.problems)).toContain("mail:teleport");
    expect(statSync(file).mtimeMs).toBe(mtime);
  });

  // Dropped, a misspelled `position` would put a deny rule last, behind the allow rules it was meant to precede, and
  // a misspelled `agnet` would answer simulate for no agent.
  test("an argument a tool does not take is refused, never dropped; the file stays byte for byte", async () => {
    const before = readFileSync(file);
    const attempts: [string, Record<string, unknown>][] = [
      ["add_rule", { rule: { name: "deny first", action: "deny" }, position: 0 }],
      ["update_rule", { index: 0, changes: { action: "deny" }, dry_run: true }],
      ["move_rule", { index: 0, to: 1, after: 2 }],
      ["remove_rule", { name: "send internal", confirm: true }],
      ["simulate", { operation: "mail:read", folder: "INBOX", agnet: "alice" }],
      ["query_audit", { agnet: "alice" }],
      ["validate_config", { path: "/etc/passwd" }],
      ["list_rules", { verbose: true }],
      ["get_config", { reveal: true }],
      ["list_approvals", { all: true }],
    ];
    for (const [tool, args] of attempts) {
      const r = await admin.call(tool, args);
      expect(`${tool}: ${r.isError} ${/unrecognized key/i.test(r.text)}`).toBe(`${tool}: true true`);
    }
    expect(readFileSync(file)).toEqual(before);
    for (const tool of (await admin.client.listTools()).tools)
      expect(`${tool.name}: ${tool.inputSchema["additionalProperties"]}`).toBe(`${tool.name}: false`);
  });

  test("an edit that would take the file past MAX_CONFIG_BYTES is refused; the file stays byte for byte", async () => {
    const original = readFileSync(file);
    // Padded with a comment to 40 bytes under the limit: readable, and any added rule takes it past.
    const padded = Buffer.concat([
      original,
      Buffer.from("\n# "),
      Buffer.alloc(MAX_CONFIG_BYTES - original.length - 44, "x"),
    ]);
    writeFileSync(file, Buffer.concat([padded, Buffer.from("\n")]));
    try {
      const before = readFileSync(file);
      expect(before.length).toBe(MAX_CONFIG_BYTES - 40);
      const r = await admin.call("add_rule", { rule: { name: "one more", action: "deny", folders: ["Junk"] } });
      expect(r.isError).toBe(true);
      expect(r.json.error).toContain(`larger than ${MAX_CONFIG_BYTES} bytes`);
      expect(readFileSync(file)).toEqual(before);
    } finally {
      writeFileSync(file, original);
    }
  });

  test("add_rule takes effect in the running proxy after the automatic reload; remove_rule undoes it", async () => {
    expect(await canExamineInbox()).toBe(false);
    const original = readFileSync(file, "utf8");

    const added = await admin.call("add_rule", {
      rule: { name: "inbox", action: "allow", folders: "INBOX", operations: ["read"] },
      index: 0,
    });
    expect(added.isError).toBe(false);
    expect(added.json.reload.taken).toBe(true);
    expect(added.json.reload.output.join("\n")).toMatch(/^reloaded: config revision/);
    expect(await canExamineInbox()).toBe(true);

    const text = readFileSync(file, "utf8");
    expect(readFileSync(added.json.backup, "utf8")).toBe(original);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(added.json.backup).mode & 0o777).toBe(0o600);
    // Everything but the new table is as it was, comments included.
    expect(
      text.replace('[[rules]]\nname = "inbox"\naction = "allow"\noperations = [ "read" ]\nfolders = "INBOX"\n\n', ""),
    ).toBe(original);

    // Moved last, changed, then removed: the other rules and the comments stay.
    const moved = await admin.call("move_rule", { name: "inbox", to: 3 });
    expect(moved.json.rules.map((r: { name: string }) => r.name)).toEqual([
      "hide junk",
      "archive from boss",
      "send internal",
      "inbox",
    ]);
    expect(moved.json.reload.taken).toBe(true);
    const updated = await admin.call("update_rule", { index: 3, name: "inbox", changes: { folders: ["Drafts"] } });
    expect(updated.isError).toBe(false);
    expect(updated.json.rules[3].matchers.folders).toEqual(["Drafts"]);
    expect(updated.json.reload.taken).toBe(true);
    expect(await canExamineInbox()).toBe(false);
    const removed = await admin.call("remove_rule", { name: "inbox" });
    expect(removed.json.reload.taken).toBe(true);
    expect(readFileSync(file, "utf8")).toBe(original);
    expect(await canExamineInbox()).toBe(false);

    // Each write has its audit row, with the revision it made; the refused edits above have none.
    const rows = (await admin.call("query_audit", { command: "CONFIG WRITE" })).json.rows;
    expect(rows.map((r: { reason: string }) => r.reason.split(" (")[0])).toEqual([
      'added rule "inbox"',
      'moved rule "inbox" to index 3',
      'updated rule "inbox"',
      'removed rule "inbox"',
    ]);
    expect(rows.map((r: { configRevision: string }) => r.configRevision)).toEqual(
      [added, moved, updated, removed].map((r) => r.json.revision),
    );
    expect(rows.every((r: { protocol: string; agent: null }) => r.protocol === "cli" && r.agent === null)).toBe(true);
    expect(rows[1].detail.previousRevision).toBe(added.json.revision);
  });
});
