/**
 * The compiled executable (package.json's own build line) runs `mcp --admin` (docs/mcp.md "Admin tools"): the MCP
 * SDK is compiled in, the SDK's client lists the tools over stdio, simulate answers as the executable's own
 * `explain --json`, and add_rule writes the file (no serve runs for it: the reload is reported as not taken).
 */

import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

setDefaultTimeout(120_000);

const ROOT = join(import.meta.dir, "../..");
let dir: string;
let exe: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "mg-mcp-exe-"));
  exe = join(dir, "mailgator");
  const build = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { scripts: { build: string } }).scripts
    .build;
  const argv = build.split(" ");
  expect(argv.slice(0, 2)).toEqual(["bun", "build"]);
  expect(argv.at(-2)).toBe("--outfile");
  const run = Bun.spawnSync([process.execPath, ...argv.slice(1, -1), exe], { cwd: ROOT, stderr: "pipe" });
  if (run.exitCode !== 0) throw new Error(`build failed: ${run.stderr.toString()}`);
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

test("the compiled executable serves the admin tools over stdio", async () => {
  const file = join(dir, "mailgator.toml");
  writeFileSync(
    file,
    `[audit]\npath = "${join(dir, "audit.db")}"\n\n# inbox only\n[[rules]]\nname = "inbox"\naction = "allow"\n` +
      `folders = ["INBOX"]\n`,
    { mode: 0o600 },
  );
  const transport = new StdioClientTransport({
    command: exe,
    args: ["mcp", "--admin", "-c", file, "--allow-config-writes"],
    cwd: "/",
    stderr: "pipe",
  });
  const client = new Client({ name: "mailgator-exe-test", version: "1.0.0" });
  await client.connect(transport);
  try {
    const names = (await client.listTools()).tools.map((t) => t.name).sort();
    expect(names).toEqual([
      "add_rule",
      "get_config",
      "list_approvals",
      "list_rules",
      "move_rule",
      "query_audit",
      "remove_rule",
      "simulate",
      "update_rule",
      "validate_config",
    ]);
    const text = async (name: string, args: Record<string, unknown>) => {
      const r = (await client.callTool({ name, arguments: args })) as { content: { text: string }[] };
      return JSON.parse(r.content[0]!.text);
    };

    const added = await text("add_rule", { rule: { name: "junk", action: "deny", folders: "Junk" }, index: 0 });
    expect(added.reload.taken).toBe(false);
    expect(added.rules.map((r: { name: string }) => r.name)).toEqual(["junk", "inbox"]);
    expect(readFileSync(file, "utf8")).toContain('# inbox only\n[[rules]]\nname = "inbox"');

    for (const folder of ["INBOX", "Junk", "Other"]) {
      const cli = Bun.spawnSync([exe, "explain", "-c", file, "--op", "all", "--folder", folder, "--json"]);
      expect(cli.exitCode).toBe(0);
      const expected = cli.stdout
        .toString()
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l));
      expect((await text("simulate", { operation: "all", folder })).answers).toEqual(expected);
    }
  } finally {
    await client.close();
  }
});
