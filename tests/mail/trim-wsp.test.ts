/** trimWsp (src/mail/headers.ts): SP and HTAB only, at both ends, nothing inside; the other characters kept. */
import { expect, test } from "bun:test";
import { trimWsp } from "../../src/mail/headers.ts";

test("SP and HTAB at either end go; inner runs, CR, LF and other spaces stay", () => {
  expect(trimWsp(" \t a  b \t ")).toBe("a  b");
  expect(trimWsp("a")).toBe("a");
  expect(trimWsp("")).toBe("");
  expect(trimWsp(" \t ")).toBe("");
  expect(trimWsp("\r\na\r\n")).toBe("\r\na\r\n");
  expect(trimWsp("\u00a0a\u00a0")).toBe("\u00a0a\u00a0");
  expect(trimWsp(`a,${" ".repeat(60_000)} b `)).toBe(`a,${" ".repeat(60_000)} b`);
});
