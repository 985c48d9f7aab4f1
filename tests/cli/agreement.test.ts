/**
 * `mailgator check` and `mailgator serve` agree on every config the project shows or uses: check exits 0 exactly
 * when serve gets past validation and logs "listening" for each listener check lists, and check exits 2 exactly
 * when serve exits 2 before any "listening" line, with the same messages (file:line:col). `mailgator explain` runs
 * the same validation: it exits as check does, with the same messages. All are the real CLI in child processes,
 * reading the same file.
 *
 * The configs, and how each becomes a file:
 * - every ```toml block of README.md and docs/*.md. A block with an [imap] or [smtp] table is a whole config. Any
 *   other block is a fragment (rules, accounts, agents) and gets the minimal listener pair below appended after it,
 *   so that its own lines keep their numbers.
 * - examples/*.toml, as they are.
 * - every template literal in tests/ without `${}` that holds a config table ([imap], [smtp], [[rules]], [audit],
 *   [[agents]], [accounts.NAME]): whole when it has a listener; otherwise, under tests/imap/ or tests/smtp/, the
 *   `rules` given to that folder's helper config (its startTestProxy); elsewhere, followed by the listener pair.
 * - the configs built at run time from a template: the two helpers' (with their default rules), the MCP test's and
 *   the demo's (scripts/demo.ts), read from their source and filled in with the values they get when they run
 *   (the real servers of MAILGATOR_UPSTREAMS, a temporary folder, port 0). Other templates with `${}` are left out:
 *   their values exist only inside their test (a token's hash); their rules still load through the helpers.
 * - the known-bad configs below, each with the place its error must name.
 * In every file, a listen_addr that is a host:port becomes "127.0.0.1:0" (a free port) on its own line, so no
 * position moves; serve never connects upstream before it listens, so upstream addresses stay as written.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import ts from "typescript";
import { imapListener, smtpListener, upstreams } from "../fixtures/index.ts";
import { ALLOW_ALL } from "../imap/helpers.ts";

const ROOT = join(import.meta.dir, "../..");
const MAIN = join(ROOT, "src/cli/main.ts");
/** Configs run at once (check, explain and serve each): the machine is shared. */
const CONCURRENCY = 2;
/** How long serve may take to log "listening" for every listener (a loaded machine, a re-executed process). */
const LISTEN_TIMEOUT_MS = 40_000;
/** For the docs' vault examples (`password_env = "MAIL_PASSWORD"`): the variable their reader is told to set. */
const ENV = { PATH: process.env["PATH"] ?? "", HOME: process.env["HOME"] ?? "/tmp", MAIL_PASSWORD: "doc-password" };

const up = upstreams();
const scratch = mkdtempSync(join(tmpdir(), "mg-agreement-"));
let made = 0;
/** A new folder for one case. */
function fresh(): string {
  const dir = join(scratch, String(made++));
  mkdirSync(dir);
  return dir;
}

/** Appended to a fragment: one listener of each kind, in front of the real servers. */
const LISTENER_PAIR = `
${imapListener()}
${smtpListener()}`;

const TABLE = /^\s*\[\[?\s*(imap|smtp|rules|audit|agents|accounts\.[^\]]+)\s*\]\]?\s*(#.*)?$/m;
const LISTENER = /^\s*\[\s*(imap|smtp)\s*\]\s*(#.*)?$/m;

interface Case {
  /** Where the config comes from (file:line), for the test's name. */
  readonly name: string;
  /** The case's own folder: the config file, and its audit log, cache and spool, apart from other serves. */
  readonly dir: string;
  readonly text: string;
  /** Known-bad cases: what check (and so serve) must print, file:line:col included (FILE stands for the path). */
  readonly refusedWith?: readonly string[];
}

function sourceFile(file: string): ts.SourceFile {
  return ts.createSourceFile(file, readFileSync(file, "utf8"), ts.ScriptTarget.Latest, true);
}

function templates(sf: ts.SourceFile): ts.Node[] {
  const out: ts.Node[] = [];
  const visit = (node: ts.Node): void => {
    if (ts.isNoSubstitutionTemplateLiteral(node) || ts.isTemplateExpression(node)) out.push(node);
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return out;
}

function lineOf(sf: ts.SourceFile, node: ts.Node): number {
  return sf.getLineAndCharacterOfPosition(node.getStart(sf)).line + 1;
}

/**
 * The text of the template in `file` that starts with `marker`, evaluated with `bindings` for the names it uses:
 * the config exactly as that code builds it, from its own source.
 */
function runTimeTemplate(file: string, marker: string, bindings: Record<string, unknown>): string {
  const sf = sourceFile(join(ROOT, file));
  const found = templates(sf).find((t) => ts.isTemplateExpression(t) && t.getText(sf).startsWith(`\`${marker}`));
  if (found === undefined) throw new Error(`${file}: no template starting with ${JSON.stringify(marker)}`);
  const names = Object.keys(bindings);
  return new Function(...names, `return ${found.getText(sf)};`)(...names.map((n) => bindings[n])) as string;
}

function helperConfig(kind: "imap" | "smtp", rules: string | undefined, dir: string): string {
  const imap = kind === "imap";
  return runTimeTemplate(`tests/${kind}/helpers.ts`, `[${kind}]`, {
    upstreamAddr: `${up.host}:${imap ? up.ports.imaps : up.ports.smtp}`,
    mode: imap ? "tls" : "starttls",
    options: { rules },
    up,
    join,
    dir,
    ALLOW_ALL,
  });
}

function docsCases(): Case[] {
  const out: Case[] = [];
  const files = ["README.md", ...readdirSync(join(ROOT, "docs")).map((f) => `docs/${f}`)].filter((f) =>
    f.endsWith(".md"),
  );
  for (const file of files) {
    const text = readFileSync(join(ROOT, file), "utf8");
    for (const m of text.matchAll(/^```toml\n([\s\S]*?)^```/gm)) {
      const block = m[1]!;
      const line = text.slice(0, m.index).split("\n").length;
      const name = `${file}:${line}`;
      out.push({ name, dir: fresh(), text: LISTENER.test(block) ? block : `${block}${LISTENER_PAIR}` });
    }
  }
  return out;
}

function exampleCases(): Case[] {
  return readdirSync(join(ROOT, "examples"))
    .filter((f) => f.endsWith(".toml"))
    .map((f) => ({ name: `examples/${f}`, dir: fresh(), text: readFileSync(join(ROOT, "examples", f), "utf8") }));
}

function testLiteralCases(): Case[] {
  const out: Case[] = [];
  const files = [...new Bun.Glob("tests/**/*.ts").scanSync(ROOT)].filter((f) => f !== "tests/cli/agreement.test.ts");
  for (const file of files.sort()) {
    const sf = sourceFile(join(ROOT, file));
    for (const node of templates(sf)) {
      if (!ts.isNoSubstitutionTemplateLiteral(node) || !TABLE.test(node.text)) continue;
      const text = node.text;
      const name = `${file}:${lineOf(sf, node)}`;
      const dir = fresh();
      if (LISTENER.test(text)) out.push({ name, dir, text });
      else if (file.startsWith("tests/imap/")) out.push({ name, dir, text: helperConfig("imap", text, dir) });
      else if (file.startsWith("tests/smtp/")) out.push({ name, dir, text: helperConfig("smtp", text, dir) });
      else out.push({ name, dir, text: `${text}${LISTENER_PAIR}` });
    }
  }
  return out;
}

function runTimeCases(): Case[] {
  const [imap, smtp, mcp, demo] = [fresh(), fresh(), fresh(), fresh()];
  const corp = `[[rules]]\nname = "corp"\naction = "allow"\nto = "*@corp.test"\n`;
  return [
    { name: "tests/imap/helpers.ts (default rules)", dir: imap, text: helperConfig("imap", undefined, imap) },
    { name: "tests/smtp/helpers.ts (a corp rule)", dir: smtp, text: helperConfig("smtp", corp, smtp) },
    {
      name: "tests/imap/mcp.test.ts",
      dir: mcp,
      text: runTimeTemplate("tests/imap/mcp.test.ts", "${imapListener(", {
        imapListener,
        smtpListener,
        join,
        dir: mcp,
      }),
    },
    {
      name: "scripts/demo.ts",
      dir: demo,
      text: runTimeTemplate("scripts/demo.ts", "# Written by scripts/demo.ts", {
        servers: up,
        ports: { imap: 0, smtp: 0 },
        join,
        DEMO_DIR: demo,
      }),
    },
  ];
}

/** The disagreements this test was written for, and the commonest mistakes: each must name its place. */
function knownBadCases(): Case[] {
  const dir = fresh();
  const imap = (rules: string) => helperConfig("imap", rules, dir);
  const smtp = (rules: string) => helperConfig("smtp", rules, dir);
  const at = (text: string, needle: string) => text.split("\n").findIndex((l) => l.includes(needle)) + 1;
  const flag = imap(
    `[[rules]]\nname = "Flag the boss"\nfrom = "boss@*"\naction = "allow"\noperations = ["read", "mail:flag"]\n`,
  );
  const ask = smtp(`[[rules]]\nname = "Hold"\naction = "ask"\noperations = ["send"]\n`);
  const unknownKey = imap(`[[rules]]\nname = "Typo"\naction = "allow"\nfolderz = ["INBOX"]\n`);
  const glob = imap(`[[rules]]\nname = "Bad glob"\naction = "allow"\nfolders = ["Archive//2025"]\n`);
  return [
    {
      name: "known bad: a read rule with from that also allows mail:flag",
      dir: fresh(),
      text: flag,
      refusedWith: [`FILE:${at(flag, "operations = [")}:14: rules[0].operations: message conditions (from)`],
    },
    {
      name: "known bad: an ask rule without ask_groups",
      dir: fresh(),
      text: ask,
      refusedWith: [`FILE:${at(ask, `action = "ask"`)}:10: rules[0].action: action "ask" needs ask_groups`],
    },
    {
      name: "known bad: an unknown key",
      dir: fresh(),
      text: unknownKey,
      refusedWith: [`FILE:${at(unknownKey, "folderz")}:11: rules[0].folderz: unknown key "folderz"`],
    },
    {
      name: "known bad: a malformed folder glob",
      dir: fresh(),
      text: glob,
      refusedWith: [`FILE:${at(glob, "folders = [")}:11: rules[0].folders[0]: folder glob "Archive//2025"`],
    },
  ];
}

/** A listen address that is a host:port becomes a free port; anything else stays, to fail as it would. */
function freePorts(text: string): string {
  return text.replace(
    /^(\s*listen_addr\s*=\s*)"(?:\[[0-9a-fA-F:.]+\]|[^:[\]\s"]+):\d{1,5}"/gm,
    (_, key: string) => `${key}"127.0.0.1:0"`,
  );
}

interface Result {
  readonly file: string;
  readonly check: { code: number; stdout: string; stderr: string };
  readonly explain: { code: number; stdout: string; stderr: string };
  readonly serve: { code: number; stderr: string; listening: string[] };
}

async function text(stream: ReadableStream<Uint8Array>): Promise<string> {
  return new Response(stream).text();
}

async function run(args: string[]): Promise<Result["check"]> {
  const p = Bun.spawn([process.execPath, MAIN, ...args], { env: ENV, stdout: "pipe", stderr: "pipe" });
  const [code, stdout, stderr] = await Promise.all([p.exited, text(p.stdout), text(p.stderr)]);
  return { code, stdout, stderr };
}

/** Serve until it has logged "listening" `expected` times (then SIGTERM) or exits on its own. */
async function runServe(file: string, expected: number): Promise<Result["serve"]> {
  // Text logs: config errors then read exactly as check prints them (JSON logs carry them as events).
  const p = Bun.spawn([process.execPath, MAIN, "serve", "-c", file], {
    env: ENV,
    stdout: "pipe",
    stderr: "pipe",
  });
  let stderr = "";
  const pump = (async () => {
    for await (const chunk of p.stderr) stderr += new TextDecoder().decode(chunk);
  })();
  const listening = () => stderr.match(/(IMAP|SMTP) proxy listening/g) ?? [];
  const deadline = Date.now() + LISTEN_TIMEOUT_MS;
  while (p.exitCode === null && listening().length < Math.max(expected, 1) && Date.now() < deadline) {
    await Bun.sleep(50);
  }
  if (p.exitCode === null) p.kill("SIGTERM");
  const code = await p.exited;
  await pump;
  return { code, stderr, listening: listening() };
}

async function agreement(c: Case): Promise<Result> {
  const file = join(c.dir, "mailgator.toml");
  writeFileSync(file, freePorts(c.text));
  const [check, explain] = await Promise.all([
    run(["check", "-c", file]),
    run(["explain", "-c", file, "--op", "read", "--folder", "INBOX"]),
  ]);
  const listeners = (check.stdout.match(/^\[(imap|smtp)\] listen /gm) ?? []).length;
  const serve = await runServe(file, check.code === 0 ? listeners : 1);
  return { file, check, explain, serve };
}

const groups: Record<string, Case[]> = {
  docs: docsCases(),
  examples: exampleCases(),
  "test literals": testLiteralCases(),
  "run-time templates": runTimeCases(),
  "known bad": knownBadCases(),
};
const all = Object.values(groups).flat();
const results = new Map<Case, Result>();

beforeAll(async () => {
  const queue = [...all];
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      for (let c = queue.shift(); c !== undefined; c = queue.shift()) results.set(c, await agreement(c));
    }),
  );
}, 900_000);

afterAll(() => rmSync(scratch, { recursive: true, force: true }));

test("the corpus holds what it claims: docs blocks, examples, test configs, run-time templates", () => {
  expect(groups["docs"]!.length).toBeGreaterThanOrEqual(4);
  expect(groups["docs"]!.some((c) => c.name.startsWith("README.md"))).toBe(true);
  expect(groups["examples"]!.map((c) => c.name)).toContain("examples/seed.toml");
  expect(groups["test literals"]!.length).toBeGreaterThanOrEqual(40);
  for (const file of ["tests/imap/filtered-fixture.ts", "tests/smtp/policy.test.ts", "tests/config/load.test.ts"]) {
    expect(groups["test literals"]!.some((c) => c.name.startsWith(file))).toBe(true);
  }
  expect(groups["run-time templates"]!.length).toBe(4);
  // Both outcomes are exercised: most configs are valid, the intentionally broken ones are not.
  const codes = all.map((c) => results.get(c)!.check.code);
  expect(codes.filter((code) => code === 0).length).toBeGreaterThanOrEqual(20);
  expect(codes.filter((code) => code === 2).length).toBeGreaterThanOrEqual(20);
});

for (const [group, cases] of Object.entries(groups)) {
  describe(group, () => {
    for (const c of cases) {
      test(c.name, () => {
        const r = results.get(c)!;
        const where =
          `${c.name} (${relative(ROOT, r.file)}):\ncheck ${r.check.code}: ${r.check.stderr}${r.check.stdout}\n` +
          `serve ${r.serve.code}: ${r.serve.stderr}`;
        expect([0, 2], where).toContain(r.check.code);
        expect(r.explain.code, `${where}\nexplain ${r.explain.code}: ${r.explain.stderr}`).toBe(r.check.code);
        if (r.check.code === 0) {
          // Valid: serve starts every listener check listed, then stops cleanly on SIGTERM.
          const listed = (r.check.stdout.match(/^\[(imap|smtp)\] listen /gm) ?? []).map((l) => l.slice(1, 5));
          expect(listed.length, where).toBeGreaterThan(0);
          expect(r.serve.listening.map((l) => l.slice(0, 4).toLowerCase()).sort(), where).toEqual(listed.sort());
          expect(r.serve.code, where).toBe(0);
          expect(c.refusedWith, where).toBeUndefined();
        } else {
          // Refused: serve refuses the same way, before anything listens.
          expect(r.serve.code, where).toBe(2);
          expect(r.serve.listening, where).toEqual([]);
          expect(r.serve.stderr, where).toBe(r.check.stderr);
          expect(r.explain.stderr, where).toBe(r.check.stderr);
          expect(r.check.stderr, where).toMatch(/^mailgator: config errors?/);
          for (const e of c.refusedWith ?? []) expect(r.check.stderr, where).toContain(e.replace("FILE", r.file));
        }
      });
    }
  });
}
