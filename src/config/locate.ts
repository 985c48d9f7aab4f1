/**
 * Best-effort mapping from a key path (`rules[1].action`) back to a line and
 * column of the TOML text, so that schema errors point into the file like
 * syntax errors do. It understands the layouts a config is written in
 * (`[table]`, `[[array]]`, `[accounts.NAME]`, `[limits.imap]`, `key = value`); for anything
 * else it returns undefined and the key path alone identifies the place.
 */

export interface Location {
  readonly line: number;
  readonly column: number;
}

const HEADER = /^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$/;
const KEY = /^\s*("?)([A-Za-z0-9_-]+)\1\s*=\s*/;

/** A table header of the text and the first place of each key below it, before the next header. */
interface Section {
  readonly name: string;
  /** Which `[[name]]` this is, from 0; null for a `[name]` header. */
  readonly element: number | null;
  readonly header: Location;
  readonly keys: Map<string, Location>;
}

/** The sections of a text by table name: its `[name]` headers, and its `[[name]]` ones by number, in file order. */
type SectionIndex = ReadonlyMap<string, { readonly tables: Section[]; readonly elements: Section[] }>;

function sections(text: string): SectionIndex {
  const index = new Map<string, { tables: Section[]; elements: Section[] }>();
  let current: Section | null = null;
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const h = HEADER.exec(line);
    if (h) {
      const name = h[2]!.replaceAll('"', "");
      let entry = index.get(name);
      if (entry === undefined) index.set(name, (entry = { tables: [], elements: [] }));
      const array = h[1] === "[[";
      current = {
        name,
        element: array ? entry.elements.length : null,
        header: { line: i + 1, column: line.indexOf("[") + 1 },
        keys: new Map(),
      };
      (array ? entry.elements : entry.tables).push(current);
      continue;
    }
    const k = current === null ? null : KEY.exec(line);
    if (k && !current!.keys.has(k[2]!)) current!.keys.set(k[2]!, { line: i + 1, column: k[0].length + 1 });
  }
  return index;
}

/** Where `path` is in `text` (`locator`, for one path). */
export function locate(text: string, path: readonly (string | number)[]): Location | undefined {
  return locator(text)(path);
}

/**
 * A function that finds key paths in `text`, which it reads once: a config with a problem in each of thousands of
 * rules is located once per problem, and reading the whole text each time took the square of its size (tens of
 * seconds for a 1 MiB file, on `serve`'s event loop at a reload).
 */
export function locator(text: string): (path: readonly (string | number)[]) => Location | undefined {
  let index: SectionIndex | null = null;
  return (path) => find((index ??= sections(text)), path);
}

function find(index: SectionIndex, path: readonly (string | number)[]): Location | undefined {
  // Which table header the path lives under, and which key inside it.
  let table: string;
  let element = 0;
  let rest: readonly (string | number)[];
  if (typeof path[1] === "number") {
    table = String(path[0]);
    element = path[1];
    rest = path.slice(2);
  } else if (path[0] === "limits" && (path[1] === "imap" || path[1] === "smtp") && path.length >= 3) {
    table = `limits.${path[1]}`;
    rest = path.slice(2);
  } else if (path[0] === "approvals" && path[1] === "groups" && path.length >= 3) {
    table = `approvals.groups.${String(path[2])}`;
    rest = path.slice(3);
  } else if (path[0] === "accounts" && path.length >= 2) {
    table = `accounts.${String(path[1])}`;
    rest = path.slice(2);
  } else {
    table = String(path[0]);
    rest = path.slice(1);
  }
  const key = rest[0];
  // Under every `[table]` of that name, and under its `[[table]]` number `element`; the key's first place there, else
  // the last of those headers.
  const entry = index.get(table);
  const numbered = entry?.elements[element];
  const under = [...(entry?.tables ?? []), ...(numbered === undefined ? [] : [numbered])];
  under.sort((a, b) => a.header.line - b.header.line);
  let headerLine: Location | undefined;
  for (const section of under) {
    headerLine = section.header;
    const at = typeof key === "string" ? section.keys.get(key) : undefined;
    if (at !== undefined) return at;
  }
  return headerLine;
}
