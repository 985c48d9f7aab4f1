/**
 * The docs stand alone: every link between README.md and docs/ reaches an existing page and heading, every
 * `docs/<page>.md "<Heading>"` and `docs/protocol.md §N` cited from code, tests and scripts exists, and nothing
 * cites a document that is not in the repository. A renamed heading or a removed checklist item fails here.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

const ROOT = resolve(import.meta.dir, "../..");
const DOCS = join(ROOT, "docs");

function walk(path: string, ext: readonly string[]): string[] {
  if (statSync(path).isDirectory()) return readdirSync(path).flatMap((name) => walk(join(path, name), ext));
  return ext.some((e) => path.endsWith(e)) ? [path] : [];
}

const markdown = [join(ROOT, "README.md"), ...walk(DOCS, [".md"])];
const sources = ["src", "tests", "scripts"].flatMap((dir) => walk(join(ROOT, dir), [".ts"]));

/** Lines outside fenced code blocks. */
function prose(text: string): string[] {
  let fence = false;
  return text.split("\n").map((line) => {
    if (line.trimStart().startsWith("```")) fence = !fence;
    return fence ? "" : line;
  });
}

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens. */
function slug(heading: string): string {
  return heading
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, "")
    .replace(/\s/g, "-");
}

interface Page {
  readonly anchors: Set<string>;
  /** Heading texts and bold labels (`**Label.**`), for quoted citations. */
  readonly titles: string[];
  readonly text: string;
}

const pages = new Map<string, Page>();
function page(file: string): Page {
  let p = pages.get(file);
  if (p === undefined) {
    const text = readFileSync(file, "utf8");
    const anchors = new Set<string>();
    const titles: string[] = [];
    for (const line of prose(text)) {
      const h = /^#{1,6}\s+(.*)$/.exec(line);
      if (h !== null) {
        const base = slug(h[1]!);
        let anchor = base;
        for (let n = 1; anchors.has(anchor); n++) anchor = `${base}-${n}`;
        anchors.add(anchor);
        titles.push(h[1]!.replace(/`/g, ""));
      }
      for (const b of line.matchAll(/\*\*([^*]+)\*\*/g)) titles.push(b[1]!);
    }
    p = { anchors, titles, text };
    pages.set(file, p);
  }
  return p;
}

/** The items of a numbered list in a section of docs/protocol.md (`## N. Title`). */
function protocolItems(section: number): Set<number> {
  const lines = prose(page(join(DOCS, "protocol.md")).text);
  const start = lines.findIndex((l) => l.startsWith(`## ${section}. `));
  const items = new Set<number>();
  if (start === -1) return items;
  for (const line of lines.slice(start + 1)) {
    if (line.startsWith("## ")) break;
    const m = /^(\d+)\. /.exec(line);
    if (m !== null) items.add(Number(m[1]));
  }
  return items;
}

describe("links in README.md and docs/", () => {
  for (const file of markdown) {
    test(relative(ROOT, file), () => {
      const broken: string[] = [];
      for (const line of prose(readFileSync(file, "utf8"))) {
        for (const m of line.matchAll(/\]\(([^)\s]+)\)/g)) {
          const target = m[1]!;
          if (/^[a-z]+:/.test(target)) continue;
          const [path, anchor] = target.split("#") as [string, string | undefined];
          const resolved = path === "" ? file : resolve(dirname(file), path);
          if (!existsSync(resolved)) broken.push(`${target}: no such file`);
          else if (anchor !== undefined && resolved.endsWith(".md") && !page(resolved).anchors.has(anchor))
            broken.push(`${target}: no such heading`);
        }
      }
      expect(broken).toEqual([]);
    });
  }
});

describe("docs/ cited from src/, tests/ and scripts/", () => {
  test('docs/<page>.md and docs/<page>.md "<Heading>" name an existing page and heading', () => {
    const broken: string[] = [];
    for (const file of [...sources, ...markdown]) {
      const text = readFileSync(file, "utf8");
      for (const m of text.matchAll(/docs\/([\w-]+\.md)(?:,? \(?"([^"\n]+)")?/g)) {
        const target = join(DOCS, m[1]!);
        if (!existsSync(target)) {
          broken.push(`${relative(ROOT, file)}: docs/${m[1]} does not exist`);
          continue;
        }
        const heading = m[2];
        if (heading !== undefined && !page(target).titles.some((t) => t.startsWith(heading)))
          broken.push(`${relative(ROOT, file)}: docs/${m[1]} has no heading "${heading}"`);
      }
    }
    expect(broken).toEqual([]);
  });

  test("docs/protocol.md §N, §0.N and §7.N (case N) exist", () => {
    const sections = new Set(
      prose(page(join(DOCS, "protocol.md")).text).flatMap((l) => /^## (\d+)\. /.exec(l)?.[1] ?? []),
    );
    const principles = protocolItems(0);
    const attacks = protocolItems(7);
    expect(attacks.size).toBe(39);
    const broken: string[] = [];
    for (const file of [...sources, ...markdown]) {
      const text = readFileSync(file, "utf8");
      const where = relative(ROOT, file);
      for (const m of text.matchAll(/docs\/protocol\.md §(\d+)(?:\.(\d+))?/g)) {
        if (!sections.has(m[1]!)) broken.push(`${where}: §${m[1]}`);
        const item = m[2] === undefined ? null : Number(m[2]);
        if (item !== null && m[1] === "0" && !principles.has(item)) broken.push(`${where}: §0.${item}`);
        if (item !== null && m[1] === "7" && !attacks.has(item)) broken.push(`${where}: §7.${item}`);
      }
      // Test names say "§7 case N" or "§7.N" for an item of the attack checklist.
      for (const m of text.matchAll(/§7(?: cases? |\.)(\d+)/g)) {
        if (!attacks.has(Number(m[1]))) broken.push(`${where}: §7 item ${m[1]}`);
      }
    }
    expect(broken).toEqual([]);
  });
});

test("nothing cites a document that is not in the repository", () => {
  // Built from parts so that this file does not match itself.
  const outside = new RegExp(
    [...["DESIGN", "PROTOCOL", "STYLE", "UPSTREAMS", "BUN-NOTES"].map((n) => `\\b${n}\\.md`), "\\.\\./shared"].join(
      "|",
    ),
  );
  const found = [...sources, ...markdown].flatMap((file) =>
    readFileSync(file, "utf8")
      .split("\n")
      .flatMap((line, i) => (outside.test(line) ? [`${relative(ROOT, file)}:${i + 1}: ${line.trim()}`] : [])),
  );
  expect(found).toEqual([]);
});
