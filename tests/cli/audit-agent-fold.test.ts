/**
 * `mailgator audit --agent` folds an agent's name as quotas and session limits fold a login (docs/audit.md "Reading
 * the log", docs/quotas.md "Who is counted"), in any letter's case: `--agent élodie@x.test` finds the rows of
 * `Élodie@x.test`, which SQLite's NOCASE (ASCII letters only) left out. The same holds for `--follow`, for a spelling
 * first written after it started, and for the admin MCP server's query_audit, which runs this command.
 */
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type AuditEvent, AuditLog } from "../../src/audit/index.ts";
import { queryAudit } from "../../src/mcp/admin-commands.ts";

setDefaultTimeout(60_000); // each test runs the command line, on a loaded machine
const ROOT = join(import.meta.dir, "../..");
const MAIN = join(ROOT, "src/cli/main.ts");
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const ev: AuditEvent = {
  session: "s",
  agent: null,
  clientAddr: "127.0.0.1",
  protocol: "imap",
  command: "LOGIN",
  operation: null,
  folder: null,
  target: null,
  decision: "allow",
  rule: null,
  ruleIndex: null,
  reason: "logged in",
  configRevision: "x",
};

/** The rows of pass-through logins as their clients typed them, and of other names. */
const ROWS: readonly [agent: string, target: string][] = [
  ["Élodie@x.test", "one"],
  ["elodie@x.test", "no-accent"],
  ["ÉLODIE@X.TEST", "two"],
  ["élodie@y.test", "other-domain"],
  ["élodie@x.test", "three"],
];

function fixture() {
  const dir = mkdtempSync(join(tmpdir(), "mg-audit-agent-"));
  dirs.push(dir);
  const file = join(dir, "m.toml");
  writeFileSync(file, readFileSync(join(ROOT, "examples/seed.toml")));
  return { file, db: join(dir, "mailgator-audit.db") };
}

function run(file: string, ...args: string[]): { code: number; stdout: string; stderr: string } {
  const p = Bun.spawnSync([process.execPath, MAIN, "audit", "-c", file, ...args], {
    env: { PATH: process.env["PATH"] ?? "" },
  });
  return { code: p.exitCode ?? -1, stdout: p.stdout.toString(), stderr: p.stderr.toString() };
}

const targets = (stdout: string) =>
  stdout
    .trim()
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => (JSON.parse(l) as { target: string }).target);

test("--agent finds the rows of the same name in any letter's case, and not those of another name", async () => {
  const { file, db } = fixture();
  const log = AuditLog.open(db);
  for (const [agent, target] of ROWS) await log.durable({ ...ev, agent, target });
  await log.close();
  for (const agent of ["élodie@x.test", "Élodie@X.Test", "ÉLODIE@X.TEST"]) {
    const r = run(file, "--agent", agent, "--json");
    expect(r.code).toBe(0);
    expect(targets(r.stdout)).toEqual(["one", "two", "three"]);
  }
  expect(targets(run(file, "--agent", "elodie@x.test", "--json").stdout)).toEqual(["no-accent"]);
  expect(targets(run(file, "--agent", "élodie@y.test", "--json").stdout)).toEqual(["other-domain"]);
  expect(run(file, "--agent", "élodie@z.test").stdout).toBe("no matching rows\n");
  // The text line shows the name as stored; the rows --limit left out are counted with the same fold.
  const limited = run(file, "--agent", "ÉLODIE@x.test", "--limit", "1");
  expect(limited.stdout).toContain(' élodie@x.test@127.0.0.1 imap LOGIN target="three" ');
  expect(limited.stdout.trim().split("\n")).toHaveLength(2);
  expect(limited.stdout).toContain("2 more rows not shown; raise --limit (now 1)");
});

test("the admin MCP server's query_audit filters by agent the same way", async () => {
  const { file, db } = fixture();
  const log = AuditLog.open(db);
  for (const [agent, target] of ROWS) await log.durable({ ...ev, agent, target });
  await log.close();
  const where = { path: file, ownedOnly: false };
  const found = await queryAudit(where, { agent: "élodie@x.test" }, {});
  expect(found.rows.map((r) => (r as { target: string }).target)).toEqual(["one", "two", "three"]);
  const other = await queryAudit(where, { agent: "elodie@x.test" }, {});
  expect(other.rows.map((r) => (r as { target: string }).target)).toEqual(["no-accent"]);
});

test("--follow --agent prints a spelling whose first row comes after it started, and no other name's", async () => {
  const { file, db } = fixture();
  const log = AuditLog.open(db);
  await log.durable({ ...ev, agent: "bob@x.test", target: "before" });
  const child = Bun.spawn(
    [process.execPath, MAIN, "audit", "-c", file, "--follow", "--json", "--agent", "élodie@x.test"],
    {
      stdout: "pipe",
      stderr: "pipe",
      env: { PATH: process.env["PATH"] ?? "" },
    },
  );
  let out = "";
  let err = "";
  const pump = async (s: ReadableStream<Uint8Array>, add: (t: string) => void) => {
    const d = new TextDecoder();
    for await (const chunk of s) add(d.decode(chunk));
  };
  void pump(child.stdout, (t) => (out += t));
  void pump(child.stderr, (t) => (err += t));
  const until = async (needle: string, where: () => string) => {
    const deadline = Date.now() + 20_000;
    while (!where().includes(needle)) {
      if (Date.now() > deadline) throw new Error(`no ${needle}: ${out} / ${err}`);
      await Bun.sleep(50);
    }
  };
  try {
    await until("no matching rows yet; waiting for new ones", () => err);
    for (const [agent, target] of ROWS) await log.durable({ ...ev, agent, target });
    // Written last: once it is printed, every row before it has been polled.
    await log.durable({ ...ev, agent: "Élodie@X.test", target: "last" });
    await until('"last"', () => out);
    expect(targets(out)).toEqual(["one", "two", "three", "last"]);
  } finally {
    child.kill();
    await child.exited;
    await log.close();
  }
});
