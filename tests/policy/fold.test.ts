/** foldCase (src/policy/glob.ts), the case-insensitive comparison of globs (docs/config.md "Globs"). */
import { describe, expect, test } from "bun:test";
import { compileGlob, foldCase } from "../../src/policy/glob.ts";

describe("foldCase agrees with regular expressions' case-insensitive matching", () => {
  test("characters a case-insensitive Unicode expression finds equal fold to the same text", () => {
    const cased = /[\p{Cased}\p{Changes_When_Casemapped}\p{Changes_When_Casefolded}]/u;
    const chars: string[] = [];
    for (let cp = 0; cp < 0x110000; cp++) {
      if (cp >= 0xd800 && cp < 0xe000) continue;
      const c = String.fromCodePoint(cp);
      if (cased.test(c)) chars.push(c);
    }
    const all = chars.join("");
    const mismatches: string[] = [];
    for (const c of chars) {
      for (const m of all.matchAll(new RegExp(c.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"), "giu"))) {
        if (foldCase(m[0]) !== foldCase(c)) mismatches.push(`${c} ${m[0]}`);
      }
    }
    expect(mismatches).toEqual([]);
  });
  test("every glob path gives the same answer for a fold-equal value", () => {
    const star = compileGlob("subject", "*ſ*");
    const q = compileGlob("subject", "?ſ?");
    expect(star.test("aSb")).toBe(true);
    expect(q.test("aSb")).toBe(true);
  });
});
