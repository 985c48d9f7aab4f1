/**
 * `mailgator mcp --admin` with a config found by the search path (docs/config.md "Where the config is read from"):
 * the owner check is made at every read of the file, the tools that run a command (simulate, query_audit,
 * list_approvals, and the reload after an edit) included: the command is given the location itself, with its check,
 * and reads the file once. One swapped for another user's after the server started is refused by each of them, not
 * read as given. Run as root (as `npm test` does), so that a file
 * can be given to another user.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { chownSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { InMemoryTransport } from "@modelcontextprotocol/sdk/inMemory.js";
import { approvals } from "../../src/cli/commands/approvals.ts";
import { audit } from "../../src/cli/commands/audit.ts";
import { explain } from "../../src/cli/commands/explain.ts";
import { reload } from "../../src/cli/commands/reload.ts";
import { findConfig } from "../../src/config/index.ts";
import { createAdminServer } from "../../src/mcp/admin.ts";
import { runCommand, ToolError } from "../../src/mcp/admin-commands.ts";
import { EditRefused, writeConfig } from "../../src/mcp/admin-edit.ts";

const OTHER_UID = 65534;
const dir = mkdtempSync(join(tmpdir(), "mg-admin-owner-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const config = (rule: string) =>
  `[imap]\nlisten_addr = "127.0.0.1:0"\nupstream_addr = "127.0.0.1:1"\nupstream_tls = "none"\n\n` +
  `[audit]\npath = "${join(dir, "audit.db")}"\n\n[[rules]]\nname = "${rule}"\naction = "deny"\n`;

beforeAll(() => expect(process.geteuid?.()).toBe(0));

test("every admin tool refuses a file swapped for another user's", async () => {
  const file = join(dir, "mailgator.toml");
  writeFileSync(file, config("Mine"), { mode: 0o644 });
  const location = findConfig(undefined, {}, dir, join(dir, "none.toml"));
  expect(location.ownedOnly).toBe(true);
  const server = createAdminServer({ config: location, allowConfigWrites: false }, {});
  const [clientSide, serverSide] = InMemoryTransport.createLinkedPair();
  await server.connect(serverSide);
  const client = new Client({ name: "test", version: "0" });
  await client.connect(clientSide);
  const call = async (name: string, args: Record<string, unknown> = {}) => {
    const r = (await client.callTool({ name, arguments: args })) as { content: { text: string }[]; isError?: boolean };
    return { error: r.isError === true, text: r.content.map((c) => c.text).join("\n") };
  };
  const tools: [string, Record<string, unknown>][] = [
    ["list_rules", {}],
    ["simulate", { operation: "mail:send", from: ["a@corp.test"], to: ["b@corp.test"] }],
    ["query_audit", {}],
    ["list_approvals", {}],
  ];
  try {
    for (const [name, args] of tools) expect((await call(name, args)).error).toBe(false);
    const planted = join(dir, "planted.toml");
    writeFileSync(planted, config("Planted"), { mode: 0o644 });
    chownSync(planted, OTHER_UID, OTHER_UID);
    renameSync(planted, file);
    for (const [name, args] of tools) {
      const r = await call(name, args);
      expect([name, r.error]).toEqual([name, true]);
      expect(r.text).toContain(`belongs to user ${OTHER_UID}`);
      expect(r.text).not.toContain("Planted");
    }
  } finally {
    await client.close();
    await server.close();
  }
});

test("a rule edit refuses a file swapped for another user's copy of the same text since it was read", () => {
  const file = join(dir, "edited.toml");
  const before = config("Mine");
  writeFileSync(file, before, { mode: 0o644 });
  expect(() => writeConfig(file, before, config("Edited"), true)).not.toThrow();
  expect(readFileSync(file, "utf8")).toContain("Edited");
  // The same text as when it was read, in a file of another user's: not written, and its owner given to nothing.
  const planted = join(dir, "planted-copy.toml");
  writeFileSync(planted, config("Edited"), { mode: 0o644 });
  chownSync(planted, OTHER_UID, OTHER_UID);
  renameSync(planted, file);
  expect(() => writeConfig(file, config("Edited"), config("Again"), true)).toThrow(EditRefused);
  expect(() => writeConfig(file, config("Edited"), config("Again"), true)).toThrow(`belongs to user ${OTHER_UID}`);
  expect(readFileSync(file, "utf8")).toContain("Edited");
  expect(statSync(file).uid).toBe(OTHER_UID);
});

test("a command run in-process reads the location it is given, with its owner check, and no file by name", async () => {
  const file = join(dir, "theirs.toml");
  writeFileSync(file, config("Theirs"), { mode: 0o644 });
  chownSync(file, OTHER_UID, OTHER_UID);
  const commands = [
    [explain, ["--op=mail:send", "--from=a@corp.test", "--to=b@corp.test", "--json"]],
    [audit, ["--json"]],
    [approvals, ["list", "--json"]],
    [reload, []],
  ] as const;
  /** What the command said: its lines and exit code, or the config problems of the ToolError it threw. */
  const outcome = async (...args: Parameters<typeof runCommand>): Promise<{ code: number; text: string }> => {
    try {
      const { code, lines } = await runCommand(...args);
      return { code, text: lines.join("\n") };
    } catch (e) {
      if (!(e instanceof ToolError)) throw e;
      return { code: -1, text: `${e.message} ${JSON.stringify(e.details)}` };
    }
  };
  for (const [command, argv] of commands) {
    // As a search-path file: refused by the command's own read (reload says so and exits 2, the others throw).
    const refused = await outcome(command, argv, { path: file, ownedOnly: true }, {});
    expect([command.name, refused.code === 0]).toEqual([command.name, false]);
    expect(refused.text).toContain(`belongs to user ${OTHER_UID}`);
    expect(refused.text).not.toContain("Theirs");
    // Given a -c too: the location still wins, and is what is read.
    const given = await outcome(
      command,
      [...argv, `--config=${join(dir, "missing.toml")}`],
      { path: file, ownedOnly: true },
      {},
    );
    expect(given.text).toContain(`belongs to user ${OTHER_UID}`);
    expect(given.text).not.toContain("missing.toml");
  }
});
