/**
 * Every command the docs give is one the command line takes: each `mailgator ...` (also `./dist/mailgator`,
 * `/usr/local/bin/mailgator`, `bun src/cli/main.ts`) in a code span or a shell block of README.md and docs/ names
 * an existing command, a verb that command has (`approvals deny`, `account status`), and only options its parser
 * accepts, checked by running src/cli/main.ts's own parser on them. A renamed flag fails here, not on a
 * newcomer's terminal. The paths the docs tell to run (`npx bun scripts/...`) and the `npm run` scripts exist too.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import pkg from "../../package.json" with { type: "json" };
import { main } from "../../src/cli/main.ts";

const ROOT = resolve(import.meta.dir, "../..");
const DOCS = join(ROOT, "docs");
const markdown = [
  join(ROOT, "README.md"),
  ...readdirSync(DOCS)
    .filter((f) => f.endsWith(".md"))
    .map((f) => join(DOCS, f)),
];

/** Fences whose lines are commands (not TOML, JSON or code). */
const SHELL_FENCE = /^```(sh|shell|bash|console)?\s*$/;

/**
 * Code a reader may paste: the lines of shell and untyped fences, and every inline code span elsewhere (one may wrap
 * onto the next line, as `claude mcp add ... -c` in docs/mcp.md does).
 */
function codeOf(text: string): { line: number; code: string; fenced: boolean }[] {
  const out: { line: number; code: string; fenced: boolean }[] = [];
  let fence: "shell" | "other" | null = null;
  const prose = text.split("\n").map((line, i) => {
    if (line.trimStart().startsWith("```")) {
      fence = fence !== null ? null : SHELL_FENCE.test(line.trim()) ? "shell" : "other";
      return "";
    }
    if (fence === "shell") out.push({ line: i + 1, code: line, fenced: true });
    return fence === null ? line : "";
  });
  const joined = prose.join("\n");
  for (const m of joined.matchAll(/`([^`]+)`/g)) {
    const line = joined.slice(0, m.index).split("\n").length;
    out.push({ line, code: m[1]!.replace(/\n/g, " "), fenced: false });
  }
  return out;
}

/** A mailgator command where a shell would run one: the start, after a prompt, `--`, `&&`, `;`, `|` or `(`. */
const INVOCATION = new RegExp(
  String.raw`(?<=(?:^|\$ |-- |&& |; |\| |\( )\s*)` +
    String.raw`(?:(?:\./dist/|/usr/local/bin/)?mailgator|(?:npx )?bun src/cli/main\.ts)(?= )`,
  "g",
);

interface Invocation {
  readonly where: string;
  readonly words: string[];
}

/** The words of each invocation, up to a comment, redirection or the next command; wrapped usage lines joined. */
function invocations(file: string): Invocation[] {
  const found: Invocation[] = [];
  let open: Invocation | null = null;
  let last = 0;
  for (const { line, code, fenced } of codeOf(readFileSync(file, "utf8"))) {
    const where = `${relative(ROOT, file)}:${line}`;
    const next = line === last + 1;
    last = line;
    // A usage line wrapped onto the next, indented and starting with an option: `                  [--subject S]`.
    if (fenced && next && open !== null && /^\s+\[?-/.test(code)) {
      open.words.push(...words(code));
      continue;
    }
    open = null;
    for (const m of code.matchAll(INVOCATION)) {
      open = { where, words: words(code.slice(m.index! + m[0].length)) };
      found.push(open);
    }
  }
  return found;
}

function words(text: string): string[] {
  const out: string[] = [];
  let depth = 0;
  for (const word of text.trim().split(/\s+/)) {
    if (word === "") continue;
    if (depth === 0 && (/^(#|&&|;|\||>|2>|&)/.test(word) || word.startsWith("2>"))) break;
    depth += (word.match(/\[/g) ?? []).length - (word.match(/\]/g) ?? []).length;
    out.push(word);
  }
  return out;
}

/** The options a word names: `--since`, `[--[no-]attachment]` (attachment), `-c`, `--decision=deny`. */
function optionsIn(word: string): string[] {
  const bare = word.replace(/^[[(]+/, "");
  const long = /^--(?:\[no-\])?([a-z][a-z0-9-]*)/.exec(bare);
  if (long !== null) return [`--${long[1]}`];
  if (/^-[a-zA-Z]\]*$/.test(bare)) return [bare.slice(0, 2)];
  return [];
}

/** Runs the real parser quietly; the exit code is all that is kept. */
async function exitCode(argv: string[]): Promise<number> {
  const write = process.stderr.write;
  process.stderr.write = (() => true) as typeof process.stderr.write;
  try {
    return await main(argv, {}, () => {});
  } finally {
    process.stderr.write = write;
  }
}

/** Whether COMMAND's parser takes OPTION: with --help after it, a known option (with or without a value) exits 0. */
async function accepts(command: string[], option: string): Promise<boolean> {
  for (const form of [[`${option}=json`], [option], [option, "json"]])
    if ((await exitCode([...command, ...form, "--help"])) === 0) return true;
  return false;
}

const COMMANDS = ["serve", "reload", "check", "explain", "audit", "token", "account", "approvals", "mcp", "config"];
const OTHERS = ["version", "help"];
/** Options main() reads itself, for every command. */
const GLOBAL = new Set(["--log-format", "--help", "-h"]);

/** The verbs of a command with verbs, from its own usage text (`mailgator approvals deny ID ...`). */
async function verbsOf(command: string): Promise<Set<string>> {
  let usage = "";
  await main([command, "--help"], {}, (t) => {
    usage += t;
  });
  return new Set([...usage.matchAll(new RegExp(`mailgator ${command} ([a-z]+)`, "g"))].map((m) => m[1]!));
}

const all = markdown.flatMap(invocations);

describe("mailgator commands in README.md and docs/", () => {
  test("are found (the extraction itself works)", () => {
    // README's command-line section alone names every command; a regex that stopped matching would pass all below.
    const named = new Set(all.map((i) => i.words[0]));
    for (const c of [...COMMANDS, "version"]) expect(named).toContain(c);
    const explain = all.filter((i) => i.where.startsWith("README.md") && i.words[0] === "explain");
    expect(explain.flatMap((i) => i.words.flatMap(optionsIn))).toContain("--attachment");
  });

  test("name an existing command and one of its verbs", async () => {
    const broken: string[] = [];
    for (const { where, words } of all) {
      const [first, second] = words;
      if (first === undefined || first.startsWith("-")) continue; // options alone: serve
      if (!COMMANDS.includes(first) && !OTHERS.includes(first)) {
        broken.push(`${where}: unknown command ${JSON.stringify(first)}`);
        continue;
      }
      if (!["account", "approvals", "token", "config"].includes(first) || second === undefined) continue;
      if (!/^[a-z]+([|/][a-z]+)*$/.test(second)) continue; // NAME, ID, an option
      const verbs = await verbsOf(first);
      for (const verb of second.split(/[|/]/))
        if (!verbs.has(verb)) broken.push(`${where}: mailgator ${first} has no verb ${JSON.stringify(verb)}`);
    }
    expect(broken).toEqual([]);
  });

  test("give only options the command's parser accepts", async () => {
    const checked = new Map<string, boolean>();
    const broken: string[] = [];
    for (const { where, words } of all) {
      const first = words[0];
      if (first === undefined) continue;
      const command = first.startsWith("-") ? ["serve"] : COMMANDS.includes(first) ? [first] : null;
      if (command === null) continue;
      // A command with verbs parses its options after the verb; any verb does (`--help` returns before it is used).
      if (first === "config") command.push("init");
      for (const option of words.slice(first.startsWith("-") ? 0 : 1).flatMap(optionsIn)) {
        if (GLOBAL.has(option)) continue;
        const key = `${command.join(" ")} ${option}`;
        if (!checked.has(key)) checked.set(key, await accepts(command, option));
        if (!checked.get(key)) broken.push(`${where}: mailgator ${command.join(" ")} does not take ${option}`);
      }
    }
    expect(broken).toEqual([]);
    expect(checked.size).toBeGreaterThan(30);
  });

  test("the parser check itself refuses an option that does not exist", async () => {
    expect(await accepts(["audit"], "--since")).toBe(true);
    expect(await accepts(["audit"], "--json")).toBe(true);
    expect(await accepts(["check"], "-c")).toBe(true);
    expect(await accepts(["audit"], "--sincee")).toBe(false);
    expect(await accepts(["approvals"], "--output")).toBe(false);
  });
});

describe("other commands the docs give", () => {
  const text = markdown.map((file) => ({ file, text: readFileSync(file, "utf8") }));

  test("`npm run NAME` names a script in package.json", () => {
    const scripts = Object.keys(pkg.scripts);
    const broken = text.flatMap(({ file, text }) =>
      [...text.matchAll(/npm run ([a-z][\w:-]*)/g)]
        .filter((m) => !scripts.includes(m[1]!))
        .map((m) => `${relative(ROOT, file)}: npm run ${m[1]}`),
    );
    expect(broken).toEqual([]);
  });

  test("`bun scripts/...` and `bun src/...` name a file that exists", () => {
    const broken = text.flatMap(({ file, text }) =>
      [...text.matchAll(/\bbun ((?:scripts|src)\/[\w./-]+\.ts)/g)]
        .filter((m) => !existsSync(join(ROOT, m[1]!)))
        .map((m) => `${relative(ROOT, file)}: ${m[1]}`),
    );
    expect(broken).toEqual([]);
  });
});
