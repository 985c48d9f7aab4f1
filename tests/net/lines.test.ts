/** CRLF line framing: views without copies, lines across chunks, bare CR/LF, the length limit at and past it. */

import { describe, expect, test } from "bun:test";
import { type LineEvent, LineFramer } from "../../src/net/lines.ts";

function lines(framer: LineFramer, ...chunks: string[]): LineEvent[] {
  const out: LineEvent[] = [];
  for (const text of chunks) {
    const chunk = Buffer.from(text, "latin1");
    let at = 0;
    for (;;) {
      const step = framer.next(chunk, at);
      if (step === null) break;
      out.push(step.event);
      at = step.end;
      if (at >= chunk.length) break;
    }
  }
  return out;
}

const text = (e: LineEvent) => (e.kind === "line" ? e.line.toString("latin1") : e.kind);

describe("LineFramer", () => {
  test("lines within one chunk are views of it", () => {
    const chunk = Buffer.from("EHLO a\r\nNOOP\r\n");
    const step = new LineFramer(100).next(chunk, 0)!;
    expect(step.event.kind).toBe("line");
    if (step.event.kind === "line") expect(step.event.line.buffer).toBe(chunk.buffer);
    expect(step.end).toBe(8);
  });

  test("a line split across chunks, including between CR and LF", () => {
    expect(lines(new LineFramer(100), "EH", "LO a\r", "\nNO", "OP\r\n").map(text)).toEqual(["EHLO a", "NOOP"]);
  });

  test("an empty line", () => {
    expect(lines(new LineFramer(100), "\r\n").map(text)).toEqual([""]);
  });

  test("bare LF and bare CR are reported, never taken as line ends", () => {
    expect(lines(new LineFramer(100), "NOOP\n").map(text)).toEqual(["bare-newline"]);
    expect(lines(new LineFramer(100), "NO\rOP\r\n").map(text)).toEqual(["bare-newline"]);
    expect(lines(new LineFramer(100), "NOOP\r", "X\r\n").map(text)[0]).toBe("bare-newline");
    expect(lines(new LineFramer(100), "NOOP", "\n").map(text)).toEqual(["bare-newline"]);
  });

  test("the limit: exactly maxLine octets pass, one more is too long (in one chunk and across chunks)", () => {
    const max = 50;
    expect(lines(new LineFramer(max), `${"a".repeat(max)}\r\n`).map(text)).toEqual(["a".repeat(max)]);
    expect(lines(new LineFramer(max), `${"a".repeat(max + 1)}\r\nNOOP\r\n`).map(text)).toEqual(["too-long", "NOOP"]);
    expect(lines(new LineFramer(max), "a".repeat(30), `${"a".repeat(20)}\r\n`).map(text)).toEqual(["a".repeat(max)]);
    expect(lines(new LineFramer(max), "a".repeat(30), "a".repeat(21), "aaaa\r\nNOOP\r\n").map(text)).toEqual([
      "too-long",
      "NOOP",
    ]);
  });

  test("a held partial line is copied, so the caller may reuse its chunk", () => {
    const framer = new LineFramer(100);
    const chunk = Buffer.from("EHLO ");
    framer.next(chunk, 0);
    chunk.fill(0x58);
    expect(lines(framer, "a\r\n").map(text)).toEqual(["EHLO a"]);
  });
});
