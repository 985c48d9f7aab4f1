/**
 * Fails when a line of the project's code or docs is longer than MAX_LINE characters. The formatter wraps code to
 * the same width but leaves long strings and comments alone; this catches those. Part of `npm run lint`.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative, resolve } from "node:path";

/** The project's line width: biome.json's formatter.lineWidth. */
export const MAX_LINE = 120;
const ROOT = resolve(import.meta.dir, "..");
const CHECKED = ["src", "tests", "scripts", "docs", "README.md"];
const EXTENSIONS = [".ts", ".md", ".toml"];

function* files(path: string): Generator<string> {
  if (statSync(path).isDirectory()) {
    for (const name of readdirSync(path)) yield* files(join(path, name));
  } else if (EXTENSIONS.some((ext) => path.endsWith(ext))) {
    yield path;
  }
}

let found = 0;
for (const top of CHECKED) {
  for (const file of files(join(ROOT, top))) {
    const lines = readFileSync(file, "utf8").split("\n");
    lines.forEach((line, i) => {
      // Characters, not UTF-16 units: "§" and "→" count once.
      const length = [...line].length;
      // A Markdown table row cannot be wrapped; everything else can.
      if (length > MAX_LINE && !(file.endsWith(".md") && line.startsWith("|"))) {
        found++;
        console.error(`${relative(ROOT, file)}:${i + 1}: ${length} characters (at most ${MAX_LINE})`);
      }
    });
  }
}
if (found > 0) {
  console.error(`line-length: ${found} line(s) over ${MAX_LINE} characters`);
  process.exit(1);
}
