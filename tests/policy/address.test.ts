import { describe, expect, test } from "bun:test";
import { compileGlob, GlobError } from "../../src/policy/index.ts";

describe("compileGlob validation", () => {
  const bad: [Parameters<typeof compileGlob>[0], string][] = [
    ["folder", ""],
    ["folder", "Archive/"],
    ["folder", "/Archive"],
    ["folder", "a//b"],
    ["folder", "Arch**"],
    ["folder", "a/[bc]"],
    ["folder", "a/%"],
    ["address", "boss"],
    ["address", "Boss <boss@corp.test>"],
    ["address", "**@x"],
  ];
  for (const [kind, pattern] of bad) {
    test(`${kind} glob ${JSON.stringify(pattern)} is refused`, () => {
      expect(() => compileGlob(kind, pattern)).toThrow(GlobError);
    });
  }
  test("subject glob keeps brackets literal", () => {
    expect(compileGlob("subject", "[x] *").test("[X] hello")).toBe(true);
    expect(compileGlob("subject", "[x] *").test("x hello")).toBe(false);
  });
});
