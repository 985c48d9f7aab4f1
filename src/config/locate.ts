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

export function locate(text: string, path: readonly (string | number)[]): Location | undefined {
  const lines = text.split("\n");
  // Which table header the path lives under, and which key inside it.
  let table: string;
  let index = 0;
  let rest: readonly (string | number)[];
  if (typeof path[1] === "number") {
    table = String(path[0]);
    index = path[1];
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
  let seen = -1;
  let inTable = false;
  let headerLine: Location | undefined;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const h = HEADER.exec(line);
    if (h) {
      const name = h[2]!.replaceAll('"', "");
      inTable = name === table && (h[1] === "[[" ? ++seen === index : true);
      if (inTable) headerLine = { line: i + 1, column: line.indexOf("[") + 1 };
      continue;
    }
    if (!inTable || typeof key !== "string") continue;
    const k = KEY.exec(line);
    if (k && k[2] === key) return { line: i + 1, column: k[0].length + 1 };
  }
  return headerLine;
}
