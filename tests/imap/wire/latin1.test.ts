import { describe, expect, test } from "bun:test";
import { LATIN1_LOOP_MAX, latin1 } from "../../../src/imap/wire/text.ts";

/** Every octet value, each its own code point (ISO 8859-1: 0x80-0x9F included). */
const ALL = Uint8Array.from({ length: 256 }, (_, i) => i);
const expected = (from: number, to: number): string =>
  Array.from({ length: to - from }, (_, i) => String.fromCharCode(from + i)).join("");

describe("latin1", () => {
  test("a long run (the runtime's decoding) maps every octet to its own code point", () => {
    expect(latin1(ALL, 0, 256)).toBe(expected(0, 256));
    // 0x80-0x9F are not windows-1252's characters.
    expect(latin1(ALL, 0x80, 0xa0)).toBe(expected(0x80, 0xa0));
    expect(latin1(ALL, 0x80, 0xa0).charCodeAt(0)).toBe(0x80);
  });

  test("a short run (a character at a time) does the same", () => {
    const n = LATIN1_LOOP_MAX;
    for (let i = 0; i < 256; i += n)
      expect(latin1(ALL, i, Math.min(256, i + n))).toBe(expected(i, Math.min(256, i + n)));
  });

  test("at the loop's limit and one past it, on a view that starts inside its buffer", () => {
    const backing = new Uint8Array(64).fill(0x41);
    backing.set(ALL.subarray(0x90, 0xa0), 8);
    const view = backing.subarray(5, 40);
    // LATIN1_LOOP_MAX octets: built a character at a time; one more: by the runtime. Both from offset 3 of the view
    // (8 of the buffer).
    const n = LATIN1_LOOP_MAX;
    expect(latin1(view, 3, 3 + n)).toBe(expected(0x90, 0x90 + n));
    expect(latin1(view, 3, 4 + n)).toBe(expected(0x90, 0x91 + n));
    expect(latin1(view, 0, 3)).toBe("AAA");
    expect(latin1(view, 3, 3)).toBe("");
  });

  test("a Buffer and a plain Uint8Array read alike", () => {
    const text = "M12 OK Fetch completed (0.001 + 0.000 secs).";
    const u8 = new Uint8Array(Buffer.from(text, "latin1"));
    expect(latin1(u8, 4, u8.length)).toBe(text.slice(4));
    expect(latin1(Buffer.from(u8), 4, u8.length)).toBe(text.slice(4));
  });
});
