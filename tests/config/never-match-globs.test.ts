/**
 * Address and folder globs that could never match what the rules are asked about (docs/config.md "Globs"). A deny
 * rule written with one would never match, and everything it was meant to stop would pass: `*@evil.test.` (the
 * addresses compared never end with a dot), `*@.evil.test` (meant as "its subdomains"), a folder name with a
 * decomposed accent or a zero-width space (folder names are read in NFC without invisible characters). Each is
 * refused when the config loads; the valid globs next to them still load.
 */

import { describe, expect, test } from "bun:test";
import { ConfigError, parseConfig } from "../../src/config/index.ts";

function problems(key: "to" | "from" | "folders", glob: string): string | null {
  const text =
    `[[rules]]\nname = "stop"\naction = "deny"\n${key} = [${JSON.stringify(glob)}]\n` +
    `[[rules]]\nname = "rest"\naction = "allow"\n`;
  try {
    parseConfig(text, "/cfg/mailgator.toml", { env: {} });
    return null;
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as ConfigError).message;
  }
}

describe("address globs that can never match", () => {
  const refused: [string, string][] = [
    ["*@evil.test.", "ends with a dot"],
    ["a@*.", "ends with a dot"],
    ["*@.evil.test", "begins with a dot"],
    ["*@evil..test", "two dots"],
    ["a..b@evil.test", "two dots"],
    ["a.@evil.test", "local part ends with a dot"],
    ["@evil.test", "empty local part"],
    ["a@", "empty domain"],
    ["spam@@evil.test", "more than one @"],
    ["boss@corp.test@evil.test", "more than one @"],
    ["*@*@evil.test", "more than one @"],
  ];
  for (const [glob, why] of refused) {
    test(`${JSON.stringify(glob)} is refused (${why})`, () => {
      for (const key of ["to", "from"] as const) {
        const message = problems(key, glob);
        expect(message).toContain(`rules[0].${key}`);
        expect(message).toContain(why);
        expect(message).toContain("could never match");
      }
    });
  }

  test("their valid neighbours load", () => {
    for (const glob of ["*@evil.test", "*@*.evil.test", "*.*@evil.test", "a.b@evil.test", "*@*", "*", "a@*", "*.x@*"])
      expect({ glob, problems: problems("to", glob) }).toEqual({ glob, problems: null });
  });
});

describe("folder globs that can never match a folder name as the rules read it", () => {
  test("a glob not in NFC is refused, naming the composed form", () => {
    const message = problems("folders", "Gescha\u0308ft/**");
    expect(message).toContain("rules[0].folders");
    expect(message).toContain("NFC");
    expect(message).toContain(JSON.stringify("Gesch\u00e4ft/**"));
  });

  test("a glob with a default-ignorable character is refused", () => {
    for (const c of ["\u200b", "\u00ad", "\u2060", "\ufeff"]) {
      const message = problems("folders", `Se${c}cret`);
      expect(message).toContain("rules[0].folders");
      expect(message).toContain("invisible character folder names are read without");
    }
  });

  test("a glob with a control, a line separator, a bidirectional override or U+FFFD is refused", () => {
    for (const c of ["\u0001", "\u2028", "\u202e", "\u2066", "\ufffd"])
      expect(problems("folders", `a${c}b`)).toContain("folder not exist for an agent");
  });

  test("composed, plain and wildcard globs still load", () => {
    for (const glob of ["Gesch\u00e4ft/**", "Secret", "**", "Archive/*", "Éte"])
      expect({ glob, problems: problems("folders", glob) }).toEqual({ glob, problems: null });
  });
});
