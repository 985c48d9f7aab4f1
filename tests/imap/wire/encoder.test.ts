/** Encoder output without copies (`takeViews` / `recycle`, the session's batch path) and `finish`'s copies. */
import { describe, expect, test } from "bun:test";
import { Encoder } from "../../../src/imap/wire/index.ts";

const text = (parts: Uint8Array[]): string => parts.map((p) => Buffer.from(p).toString("latin1")).join("");

describe("Encoder.takeViews", () => {
  test("views keep their bytes until recycle, also when later output grows the buffer", () => {
    const enc = new Encoder({ side: "server" });
    enc.raw("* 1 EXISTS").crlf();
    const first = enc.takeViews();
    expect(text(first)).toBe("* 1 EXISTS\r\n");
    enc.raw("x".repeat(10000)).crlf(); // grows past the first buffer
    const second = enc.takeViews();
    expect(text(first)).toBe("* 1 EXISTS\r\n");
    expect(text(second)).toBe("x".repeat(10000) + "\r\n");
    enc.recycle();
    enc.raw("* 2 EXISTS").crlf();
    const third = enc.takeViews();
    expect(text(third)).toBe("* 2 EXISTS\r\n");
    // Recycled: the same memory is reused, so the second batch's bytes are overwritten.
    expect(third[0]!.buffer).toBe(second[0]!.buffer);
    expect(third[0]!.byteOffset).toBe(0);
  });

  test("detach: a queued batch keeps its buffer, given back once written, and reused for a later batch", () => {
    const enc = new Encoder({ side: "server" });
    enc.raw("x".repeat(10000)).crlf();
    const queued = enc.takeViews();
    const held = enc.detach();
    expect(queued[0]!.buffer).toBe(held.buffer);
    // Output while the socket still holds the queued views goes elsewhere: they keep their bytes.
    enc.raw("y".repeat(10000)).crlf();
    const next = enc.takeViews();
    expect(next[0]!.buffer).not.toBe(held.buffer);
    expect(text(queued)).toBe("x".repeat(10000) + "\r\n");
    // Written: given back, and the next buffer the encoder needs is that one, not a new allocation.
    enc.giveBack(held);
    enc.detach();
    enc.raw("z".repeat(10000)).crlf();
    expect(enc.takeViews()[0]!.buffer).toBe(held.buffer);
  });

  test("at most SPARE_BUFFERS (2) are kept; smaller ones are not", () => {
    const enc = new Encoder({ side: "server" });
    enc.raw("x".repeat(10000));
    enc.takeViews();
    const a = enc.detach();
    const b = enc.detach();
    const c = enc.detach();
    enc.giveBack(new Uint8Array(16)); // smaller than the current buffer: dropped
    enc.giveBack(a);
    enc.giveBack(b);
    enc.giveBack(c); // a third one: dropped
    enc.detach(); // the buffer in use since c was detached; b takes its place
    expect(enc.detach().buffer).toBe(b.buffer);
    expect(enc.detach().buffer).toBe(a.buffer);
    const fresh = enc.detach();
    expect([a.buffer, b.buffer, c.buffer]).not.toContain(fresh.buffer);
  });

  test("without recycle, later output never overwrites earlier views", () => {
    const enc = new Encoder({ side: "server" });
    enc.raw("A").crlf();
    const a = enc.takeViews();
    enc.raw("B").crlf();
    const b = enc.takeViews();
    expect(text(a) + text(b)).toBe("A\r\nB\r\n");
  });

  test("large literals are passed by reference between views of the buffer", () => {
    const enc = new Encoder({ side: "server" });
    const body = new Uint8Array(64 * 1024).fill(0x61);
    enc.raw("* 1 FETCH (BODY[] ").literal(body).raw(")").crlf();
    const parts = enc.takeViews();
    expect(parts.length).toBe(3);
    expect(parts[1]).toBe(body);
    expect(text(parts)).toBe(`* 1 FETCH (BODY[] {65536}\r\n${"a".repeat(65536)})\r\n`);
  });

  test("finish returns copies, so the buffer can be reused at once", () => {
    const enc = new Encoder({ side: "client" });
    enc.raw("a1 NOOP").crlf();
    const [round] = enc.finish();
    enc.raw("a2 NOOP").crlf();
    enc.finish();
    expect(text(round!)).toBe("a1 NOOP\r\n");
  });
});

describe("Encoder.number and literal headers", () => {
  const text = (write: (e: Encoder) => void) => {
    const e = new Encoder({ side: "server" });
    write(e);
    return new TextDecoder().decode(e.finishBytes());
  };

  test("decimal digits written into the buffer, at every length and at the edges", () => {
    for (const n of [0, 7, 9, 10, 99, 100, 4096, 65535, 1_000_000, 4_294_967_295, Number.MAX_SAFE_INTEGER]) {
      expect(text((e) => e.number(n))).toBe(String(n));
    }
    // not a non-negative safe integer: written as JavaScript prints it (no caller passes one)
    for (const n of [-1, 1.5]) expect(text((e) => e.number(n))).toBe(String(n));
  });

  test("the buffer grows for a number that does not fit", () => {
    expect(text((e) => e.raw("x".repeat(4094)).number(123456))).toBe("x".repeat(4094) + "123456");
  });

  test("literal headers: {n} and ~{n}; a client literal is never {n+} and always waits for + (a new round)", () => {
    expect(text((e) => e.literal(new Uint8Array(12)))).toStartWith("{12}\r\n");
    expect(text((e) => e.literal(new Uint8Array(3), true))).toStartWith("~{3}\r\n");
    const c = new Encoder({ side: "client" });
    c.raw("a APPEND INBOX ").literal(new Uint8Array(5)).crlf();
    const rounds = c.finish().map((r) => new TextDecoder().decode(Buffer.concat(r)));
    expect(rounds).toEqual(["a APPEND INBOX {5}\r\n", "\0\0\0\0\0\r\n"]);
  });
});

describe("Encoder dates", () => {
  // A year below 1000 read from its four digits (`0020`) must go out as four digits: `20` is no date-year
  // (RFC 3501 §9), and a server reading it as 2020 would search a different range. Found by scripts/soak/fuzz.ts.
  test("years are written with four digits", () => {
    const enc = new Encoder({ side: "client" });
    enc.date({ year: 20, month: 1, day: 1 }).raw(" ");
    enc.dateTime({ year: 7, month: 2, day: 3, hour: 4, minute: 5, second: 6, zone: -90 });
    expect(Buffer.from(enc.finishBytes()).toString("latin1")).toBe('1-Jan-0020 "03-Feb-0007 04:05:06 -0130"');
  });
});

describe("Encoder.line", () => {
  const text = (enc: Encoder) => Buffer.concat(enc.takeViews()).toString("utf8");

  test("an ASCII line, then CRLF, after what was there", () => {
    const enc = new Encoder({ side: "server" });
    enc.raw("* 1 EXISTS\r\n").line("a OK Fetch completed");
    expect(text(enc)).toBe("* 1 EXISTS\r\na OK Fetch completed\r\n");
  });

  test("non-ASCII text is written as UTF-8, also when the buffer has to grow", () => {
    const enc = new Encoder({ side: "server" });
    const long = `${"x".repeat(5000)} Entwürfe ✓`;
    enc.line("* OK café").line(long);
    expect(text(enc)).toBe(`* OK café\r\n${long}\r\n`);
  });
});
