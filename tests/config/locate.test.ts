/**
 * Where each problem of a config is (src/config/locate.ts, docs/config.md "Errors"): the text is read once for all
 * of them. It was read again for each problem, which took the square of the file's size: a 1 MiB config with a problem
 * in each of its 10,000 rules took some 40 s, on `serve`'s event loop when a SIGHUP brought it (every session waiting).
 */
import { expect, test } from "bun:test";
import { ConfigError, MAX_CONFIG_BYTES, parseConfig } from "../../src/config/index.ts";

/** A config near MAX_CONFIG_BYTES whose every rule has a misspelled action. */
function misspelled(): { text: string; rules: number } {
  const head = `[imap]\nlisten_addr = "127.0.0.1:0"\nupstream_addr = "127.0.0.1:993"\n`;
  const parts = [head];
  let size = head.length;
  for (let i = 0; ; i++) {
    const rule = `[[rules]]\nname = "r${i}"\naction = "dney"\nfolders = "F${i}/**"\noperations = "read"\n`;
    if (size + rule.length > MAX_CONFIG_BYTES) return { text: parts.join(""), rules: i };
    parts.push(rule);
    size += rule.length;
  }
}

test("a config with a problem in each of 10,000 rules is reported at once, each problem at its place", () => {
  const { text, rules } = misspelled();
  expect(rules).toBeGreaterThan(10_000);
  const started = performance.now();
  let error: unknown = null;
  try {
    parseConfig(text, "/cfg/mailgator.toml");
  } catch (e) {
    error = e;
  }
  const ms = performance.now() - started;
  expect(error).toBeInstanceOf(ConfigError);
  const problems = (error as ConfigError).problems;
  expect(problems).toHaveLength(rules);
  // Rule i's header is on line 4 + 5 i, its action two lines below, after `action = ` (column 10).
  for (const i of [0, 1, rules >> 1, rules - 1]) {
    expect(problems[i]).toMatchObject({ path: `rules[${i}].action`, line: 4 + 5 * i + 2, column: 10 });
  }
  // Some 40 s before, read once per problem; well under a second now, given room for a loaded machine.
  expect(ms).toBeLessThan(10_000);
}, 120_000);
