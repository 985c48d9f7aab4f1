import { describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import {
  Framer,
  findLiteralMarker,
  MAX_ARGUMENT_LITERAL,
  MAX_BUFFERED_INPUT,
  MAX_LINE,
  MAX_NONSYNC_DRAIN,
  MIN_ACCEPTED_LINE,
  parseCommand,
  parseResponse,
} from "../../../src/imap/wire/index.ts";
import { bytes, run, splitAt, summarize, td } from "./helpers.ts";

/**
 * This process's peak resident memory in MiB (VmHWM); `reset`: the peak is set to what is resident now first
 * (Linux's /proc/self/clear_refs).
 */
function peakMiB(reset = false): number {
  if (reset) writeFileSync("/proc/self/clear_refs", "5");
  return Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"))![1]) / 1024;
}

/** Server-side inputs and the events they must produce whatever the chunking (all literals accepted). */
const SERVER_CORPUS: Array<[string, string[]]> = [
  ["a NOOP\r\n", ["frame a NOOP"]],
  ["a NOOP\n", ["frame a NOOP"]], // bare LF accepted
  ["a NOOP\r\nb CAPABILITY\r\nc LOGOUT\r\n", ["frame a NOOP", "frame b CAPABILITY", "frame c LOGOUT"]],
  [
    "a LOGIN {3}\r\nbob {4}\r\npass\r\n",
    ["literal a LOGIN 3", "literal a LOGIN 4", "frame a LOGIN {3}<bob> {4}<pass>"],
  ],
  ["a LOGIN {3+}\r\nbob pw\r\n", ["literal a LOGIN 3+", "frame a LOGIN {3+}<bob> pw"]],
  ["a LOGIN {0}\r\n x\r\n", ["literal a LOGIN 0", "frame a LOGIN {0}<> x"]],
  ["a uid search SUBJECT {2}\r\n\r\n\r\n", ["literal a UID SEARCH 2", "frame a uid search SUBJECT {2}<\r\n>"]],
  // An unterminated quoted string never announces a literal (docs/protocol.md §4).
  ['a LOGIN "abc {5}\r\nb NOOP\r\n', ['frame a LOGIN "abc {5}', "frame b NOOP"]],
  ['a LOGIN "a\\"b {5}\r\n', ['frame a LOGIN "a\\"b {5}']],
  ['a LOGIN "a\\\\" {1}\r\nx\r\n', ["literal a LOGIN 1", 'frame a LOGIN "a\\\\" {1}<x>']],
  ["a X {}\r\n", ["frame a X {}"]],
  ["a X {5 }\r\n", ["frame a X {5 }"]],
];

describe("framer: split at every byte position", () => {
  for (const [input, expected] of SERVER_CORPUS) {
    test(JSON.stringify(input), () => {
      const data = bytes(input);
      expect(summarize(run(new Framer({ role: "server" }), [data], "accept"))).toEqual(expected);
      for (let i = 0; i <= data.length; i++) {
        expect(summarize(run(new Framer({ role: "server" }), splitAt(data, i), "accept"))).toEqual(expected);
        for (let j = i; j <= data.length; j += 3) {
          expect(summarize(run(new Framer({ role: "server" }), splitAt(data, i, j), "accept"))).toEqual(expected);
        }
      }
      // One byte at a time.
      const single = Array.from(data, (b) => Uint8Array.of(b));
      expect(summarize(run(new Framer({ role: "server" }), single, "accept"))).toEqual(expected);
    });
  }

  test("client side: literals never wait, at every split", () => {
    const input = bytes("* 1 FETCH (BODY[] {5}\r\nab\r\nc UID 7)\r\na1 OK done\r\n");
    const expected = ["frame * 1 FETCH (BODY[] {5}<ab\r\nc> UID 7)", "frame a1 OK done"];
    for (let i = 0; i <= input.length; i++) {
      expect(summarize(run(new Framer({ role: "client" }), splitAt(input, i), "accept"))).toEqual(expected);
    }
  });
});

describe("framer: literal marker detection scans bytes", () => {
  const cases: Array<[string, ReturnType<typeof findLiteralMarker>]> = [
    ["a {5}", { start: 2, size: 5, nonSync: false, binary: false }],
    ["a {5+}", { start: 2, size: 5, nonSync: true, binary: false }],
    ["a ~{5}", { start: 2, size: 5, nonSync: false, binary: true }],
    ["a ~{5+}", { start: 2, size: 5, nonSync: true, binary: true }],
    ["a {0000000005}", { start: 2, size: 5, nonSync: false, binary: false }],
    ["a {4294967295}", { start: 2, size: 4294967295, nonSync: false, binary: false }],
    ["a {4294967296}", { start: 2, size: -1, nonSync: false, binary: false }],
    ["a {99999999999999999999}", { start: 2, size: -1, nonSync: false, binary: false }],
    ['a "x {5}', null],
    ["a {+}", null],
    ["a 5}", null],
    ["}", null],
  ];
  for (const [line, marker] of cases) {
    test(line, () => expect(findLiteralMarker(bytes(line))).toEqual(marker));
  }
});

describe("framer: server-side literal decisions", () => {
  test("refusing a synchronizing literal ends the command; the next line is a new command", () => {
    const events = run(new Framer({ role: "server" }), [bytes("a APPEND x {5}\r\nb NOOP\r\n")], "refuse");
    expect(summarize(events)).toEqual(["literal a APPEND 5", "frame b NOOP"]);
  });

  test("refusing {n+} consumes exactly n bytes and the rest of the command", () => {
    const input = "a APPEND x {5+}\r\nb NOO {3+}\r\nP\r\n\r\nc NOOP\r\n";
    for (let i = 0; i <= input.length; i++) {
      const events = run(new Framer({ role: "server" }), splitAt(bytes(input), i), "refuse");
      expect(summarize(events)).toEqual(["literal a APPEND 5+", "frame c NOOP"]);
    }
  });

  test("framer does not move past a literal until the owner decides", () => {
    const f = new Framer({ role: "server" });
    f.feed(bytes("a LOGIN {3}\r\nbob x\r\n"));
    const e = f.next();
    expect(e?.kind).toBe("literal");
    expect(f.awaitingDecision).toBe(true);
    expect(f.next()).toBeNull();
    f.acceptLiteral();
    expect(summarize([f.next()!])).toEqual(["frame a LOGIN {3}<bob> x"]);
  });

  test("accept/refuse without a pending literal is a programming error", () => {
    const f = new Framer({ role: "server" });
    expect(() => f.acceptLiteral()).toThrow();
    expect(() => f.refuseLiteral()).toThrow();
  });

  test("docs/protocol.md §7.18: literal bytes that look like a command are data", () => {
    const payload = "\r\nb UID FETCH 1:* BODY[]\r\n";
    const input = `a SEARCH SUBJECT {${payload.length}+}\r\n${payload}\r\nc NOOP\r\n`;
    for (let i = 0; i <= input.length; i++) {
      const events = run(new Framer({ role: "server" }), splitAt(bytes(input), i), "accept");
      expect(events.map((e) => e.kind)).toEqual(["literal", "frame", "frame"]);
      const first = events[1]!;
      if (first.kind !== "frame") throw new Error("unreachable");
      const cmd = parseCommand(first.frame);
      expect(cmd.ok).toBe(true);
      if (cmd.ok && cmd.value.name === "SEARCH")
        expect(cmd.value.criteria).toEqual([{ key: "SUBJECT", value: payload }]);
    }
  });

  test("docs/protocol.md §7.19: {99999999999999999999} fails closed without allocating", () => {
    const events = run(
      new Framer({ role: "server" }),
      [bytes("a LOGIN {99999999999999999999}\r\nb NOOP\r\n")],
      "accept",
    );
    expect(summarize(events)).toEqual(["error literal-size-invalid", "frame b NOOP"]);
    const nonSync = run(new Framer({ role: "server" }), [bytes("a LOGIN {99999999999999999999+}\r\nxx")], "accept");
    expect(summarize(nonSync)).toEqual(["error literal-size-invalid fatal"]);
  });

  test("a literal error carries the tag only when it is a tag (RFC 9051 §9: no `+`, no atom-specials)", () => {
    const tags = ["+", "a+b", "a(b", "x{1}", "a*", '"a"', "a\\b", "\u00e9"].map((tag) => {
      const [event] = run(new Framer({ role: "server" }), [bytes(`${tag} APPEND x {999999999}\r\n`)], "accept");
      return event?.kind === "error" ? event.error.tag : "no error";
    });
    expect(tags).toEqual([null, null, null, null, null, null, null, null]);
    const [valid] = run(new Framer({ role: "server" }), [bytes("a]1 APPEND x {999999999}\r\n")], "accept");
    expect(valid?.kind === "error" ? valid.error.tag : "no error").toBe("a]1");
  });

  test("a literal's command name is upper-cased in ASCII only; other octets stay as they are (RFC 9051 §9)", () => {
    // 0xDF (ß) would become `SS` and 0xE9 (é) `É` under Unicode case mapping: a different name, and a longer one.
    const names = ["fetch\xdf\xe9", "uid fetch\xdf\xe9", "FETCH\xdf\xe9", "Appen\xe4", "x\xff\xb5"].map((name) => {
      const line = Uint8Array.from(`t1 ${name} {3}\r\n`, (c) => c.charCodeAt(0));
      const [event] = run(new Framer({ role: "server" }), [line], "accept");
      return event?.kind === "literal" ? event.request.command : "no literal";
    });
    expect(names).toEqual(["FETCH\xdf\xe9", "UID FETCH\xdf\xe9", "FETCH\xdf\xe9", "APPEN\xe4", "X\xff\xb5"]);
  });

  test("docs/protocol.md §7.19: ~{4} with NUL is refused (BINARY not enabled); ~{4+} is consumed", () => {
    const events = run(new Framer({ role: "server" }), [bytes("a APPEND x ~{4}\r\nb NOOP\r\n")], "accept");
    expect(summarize(events)).toEqual(["error literal8-refused", "frame b NOOP"]);
    const ns = run(new Framer({ role: "server" }), [bytes("a APPEND x ~{4+}\r\n\0\0\0\0\r\nb NOOP\r\n")], "accept");
    expect(summarize(ns)).toEqual(["error literal8-refused", "frame b NOOP"]);
  });

  test("docs/protocol.md §7.19: a 10 MB line fails closed and is never buffered whole", () => {
    const f = new Framer({ role: "server" });
    const chunk = new Uint8Array(64 * 1024).fill(0x61);
    const events = [];
    for (let i = 0; i < 160; i++) {
      f.feed(chunk);
      for (let e = f.next(); e !== null; e = f.next()) events.push(e);
    }
    expect(summarize(events)).toEqual(["error line-too-long fatal"]);
    expect(f.buffered).toBe(0);
    // Closed: further input is ignored.
    f.feed(bytes("b NOOP\r\n"));
    expect(f.next()).toBeNull();
  });

  test("a 10 MB line in one chunk also fails closed", () => {
    const big = new Uint8Array(10 * 1024 * 1024).fill(0x61);
    const events = run(new Framer({ role: "server" }), [big, bytes("\r\n")], "accept");
    expect(summarize(events)).toEqual(["error line-too-long fatal"]);
  });
});

describe("framer: limits at the limit and one past it", () => {
  test(`MAX_LINE (${MAX_LINE}) >= ${MIN_ACCEPTED_LINE} (RFC 7162 §4)`, () => {
    expect(MAX_LINE).toBeGreaterThanOrEqual(MIN_ACCEPTED_LINE);
  });

  const lineOf = (n: number): Uint8Array => {
    const b = new Uint8Array(n + 2).fill(0x61);
    b[n] = 0x0d;
    b[n + 1] = 0x0a;
    return b;
  };
  for (const n of [MIN_ACCEPTED_LINE, MAX_LINE]) {
    test(`a ${n}-octet line is accepted, whole or split`, () => {
      const data = lineOf(n);
      for (const chunks of [[data], splitAt(data, 1000), splitAt(data, n), splitAt(data, n + 1)]) {
        const events = run(new Framer({ role: "server" }), chunks, "accept");
        expect(events.map((e) => e.kind)).toEqual(["frame"]);
      }
    });
  }
  test(`a ${MAX_LINE + 1}-octet line is fatal, whole or split`, () => {
    const data = lineOf(MAX_LINE + 1);
    for (const chunks of [[data], splitAt(data, 1000), splitAt(data, MAX_LINE + 1), splitAt(data, MAX_LINE + 2)]) {
      expect(summarize(run(new Framer({ role: "server" }), chunks, "accept"))).toEqual(["error line-too-long fatal"]);
    }
  });

  test(`LITERAL+: a {n+} of ${MAX_ARGUMENT_LITERAL} is offered; one more is BAD [TOOBIG] and consumed`, () => {
    // No LITERAL- 4096 cap any more (RFC 7888 §3): the per-command limit is the only one.
    const atSize = 4096 + 1; // one past LITERAL-'s cap (RFC 7888 §5)
    const append = run(new Framer({ role: "server" }), [bytes(`a APPEND x {${atSize}+}\r\n`)], "accept");
    expect(summarize(append)).toEqual([`literal a APPEND ${atSize}+`]);
    const ok = `a LOGIN x {${MAX_ARGUMENT_LITERAL}+}\r\n${"p".repeat(MAX_ARGUMENT_LITERAL)}\r\n`;
    expect(summarize(run(new Framer({ role: "server" }), [bytes(ok)], "accept"))).toEqual([
      `literal a LOGIN ${MAX_ARGUMENT_LITERAL}+`,
      `frame a LOGIN x {${MAX_ARGUMENT_LITERAL}+}<${"p".repeat(MAX_ARGUMENT_LITERAL)}>`,
    ]);
    const big = MAX_ARGUMENT_LITERAL + 1;
    const over = `a LOGIN x {${big}+}\r\n${"p".repeat(big)}\r\nb NOOP\r\n`;
    const events = run(new Framer({ role: "server" }), [bytes(over)], "accept");
    expect(summarize(events)).toEqual(["error literal-too-big", "frame b NOOP"]);
    const e = events[0]!;
    if (e.kind === "error") {
      expect(e.error.responseCode).toBe("TOOBIG");
      expect(e.error.tag).toBe("a");
    }
  });

  test("a refused {n+} is drained up to maxNonSyncDrain, never buffered; past it the stream is fatal [TOOBIG]", () => {
    const limits = { maxArgumentLiteral: 10, maxLiteral: 100, maxFrameBytes: 200, maxNonSyncDrain: 1000 };
    // "a APPEND x {n+}" CRLF, n octets, the command's closing CRLF: 1000 octets, the drain cap exactly.
    const head = (n: number): string => `a APPEND x {${n}+}\r\n`;
    const n = 979;
    expect(head(n).length + n + 2).toBe(1000);
    const framer = new Framer({ role: "server", limits });
    const events = run(
      framer,
      [bytes(head(n)), ...splitAt(bytes("y".repeat(n)), 100, 500), bytes("\r\nb NOOP\r\n")],
      "accept",
    );
    expect(summarize(events)).toEqual(["error literal-too-big", "frame b NOOP"]);
    expect(events[0]!.kind === "error" && events[0]!.error.responseCode).toBe("TOOBIG");
    expect(framer.buffered).toBe(0);
    // One octet more: BYE [TOOBIG] before any literal octet is read.
    const past = run(new Framer({ role: "server", limits }), [bytes(`${head(n + 1)}yyyy`)], "accept");
    expect(summarize(past)).toEqual(["error literal-too-big fatal"]);
    expect(past[0]!.kind === "error" && past[0]!.error.responseCode).toBe("TOOBIG");
    // With the default limits: a {n+} past MAX_NONSYNC_DRAIN is fatal at once.
    const huge = run(new Framer({ role: "server" }), [bytes(`a APPEND x {${MAX_NONSYNC_DRAIN + 1}+}\r\n`)], "accept");
    expect(summarize(huge)).toEqual(["error literal-too-big fatal"]);
  });

  test(`argument literal of ${MAX_ARGUMENT_LITERAL} is offered; one more is BAD`, () => {
    const at = run(new Framer({ role: "server" }), [bytes(`a LOGIN {${MAX_ARGUMENT_LITERAL}}\r\n`)], "refuse");
    expect(summarize(at)).toEqual([`literal a LOGIN ${MAX_ARGUMENT_LITERAL}`]);
    const over = run(
      new Framer({ role: "server" }),
      [bytes(`a LOGIN {${MAX_ARGUMENT_LITERAL + 1}}\r\nb NOOP\r\n`)],
      "accept",
    );
    expect(summarize(over)).toEqual(["error literal-too-big", "frame b NOOP"]);
  });

  test("APPEND literal at the limit is offered, one past it is BAD (limits overridable)", () => {
    const limits = { maxLiteral: 1000 };
    const at = run(new Framer({ role: "server", limits }), [bytes("a APPEND x {1000}\r\n")], "refuse");
    expect(summarize(at)).toEqual(["literal a APPEND 1000"]);
    const over = run(new Framer({ role: "server", limits }), [bytes("a APPEND x {1001}\r\n")], "accept");
    expect(summarize(over)).toEqual(["error literal-too-big"]);
  });

  test("too many literals in one command", () => {
    const limits = { maxLiterals: 2 };
    const input = "a LOGIN {1}\r\na {1}\r\nb {1}\r\n";
    const events = run(new Framer({ role: "server", limits }), [bytes(input)], "accept");
    expect(summarize(events)).toEqual(["literal a LOGIN 1", "literal a LOGIN 1", "error too-many-literals"]);
  });

  test("client side: a response with literals past the limit is read to its end and comes truncated", () => {
    const limits = { maxLiterals: 2 };
    const input = "* 1 FETCH (BODY[1] {1}\r\na BODY[2] {1}\r\nb BODY[3] {2}\r\ncd BODY[4] {1}\r\ne)\r\n* 2 EXISTS\r\n";
    for (let split = 0; split <= input.length; split++) {
      const events = run(new Framer({ role: "client", limits }), splitAt(bytes(input), split), "accept");
      expect(events.map((e) => e.kind)).toEqual(["frame", "frame"]);
      const [first, second] = events.map((e) => (e.kind === "frame" ? e.frame : null));
      // Kept: the lines up to the one that announced the third literal, and the two literals before it.
      expect(first!.truncated).toBe(true);
      expect(first!.lines.map((l) => td.decode(l))).toEqual(["* 1 FETCH (BODY[1] {1}", " BODY[2] {1}", " BODY[3] {2}"]);
      expect(first!.literals.map((l) => td.decode(l.data))).toEqual(["a", "b"]);
      expect(first!.size).toBe(input.indexOf("* 2"));
      expect(second!.truncated).toBeUndefined();
      expect(second!.lines.map((l) => td.decode(l))).toEqual(["* 2 EXISTS"]);
    }
  });

  test("client side: a response line past maxLine is read to its end and its response comes truncated", () => {
    const limits = { maxLine: 40 };
    const long = `"${"x".repeat(60)}\\"}{3}"`;
    const cases: Array<[string, string[]]> = [
      // A literal after the long line is read and dropped; the next response is whole.
      [
        `* 1 FETCH (BODYSTRUCTURE (${long} {3}\r\nabc "y"))\r\n* 2 EXISTS\r\n`,
        ["truncated * 1 FETCH (BODYSTRUC", "* 2 EXISTS"],
      ],
      // `{3}` inside a quoted string is no literal: the line ends the response.
      [`* 1 FETCH (BODYSTRUCTURE (${long}))\r\n* 2 EXISTS\r\n`, ["truncated * 1 FETCH (BODYSTRUC", "* 2 EXISTS"]],
      // A long line after the first: the frame keeps what came before it.
      [
        `* 1 FETCH (UID 5 BODY[] {2}\r\nab ${long} ~{1+}\r\nc)\r\n* 2 EXISTS\r\n`,
        ["truncated * 1 FETCH (UID 5 BOD", "* 2 EXISTS"],
      ],
    ];
    for (const [input, want] of cases) {
      for (let split = 0; split <= input.length; split++) {
        const events = run(new Framer({ role: "client", limits }), splitAt(bytes(input), split), "accept");
        const got = events.map((e) => {
          if (e.kind !== "frame") return e.kind;
          const first = td.decode(e.frame.lines[0]!);
          return e.frame.truncated ? `truncated ${first.slice(0, 20)}` : first;
        });
        expect(got).toEqual(want);
        const first = events[0];
        if (first?.kind === "frame") {
          expect(first.frame.size).toBe(input.indexOf("* 2"));
          expect(parseResponse(first.frame)).toEqual({
            ok: true,
            value: { type: "FETCH", seq: 1, attrs: [], unreadable: true },
          });
        }
      }
    }
  });

  test("client side: response literal past the limit is fatal", () => {
    const limits = { maxLiteral: 10 };
    expect(
      run(new Framer({ role: "client", limits }), [bytes("* 1 FETCH (BODY[] {10}\r\n0123456789)\r\n")], "accept").map(
        (e) => e.kind,
      ),
    ).toEqual(["frame"]);
    expect(
      summarize(run(new Framer({ role: "client", limits }), [bytes("* 1 FETCH (BODY[] {11}\r\n")], "accept")),
    ).toEqual(["error literal-too-big fatal"]);
  });

  test("client side, holdLiteralsFrom: literals that take a response past it wait for acceptLiteral", () => {
    // With each literal the response reaches 29, 49 and 67 octets (its lines' CRLFs counted).
    const input = "* 1 FETCH (BODY[1] {5}\r\nabcde BODY[2] {6}\r\nfghijk BODY[3] {4}\r\nlmno)\r\n";
    for (const [from, expected] of [
      [29, ["literal null null 6", "literal null null 4"]],
      [28, ["literal null null 5", "literal null null 6", "literal null null 4"]],
      [67, []],
      [66, ["literal null null 4"]],
    ] as const) {
      const events = run(new Framer({ role: "client", holdLiteralsFrom: from }), [bytes(input)], "accept");
      expect(summarize(events)).toEqual([
        ...expected,
        "frame * 1 FETCH (BODY[1] {5}<abcde> BODY[2] {6}<fghijk> BODY[3] {4}<lmno>)",
      ]);
    }
    // Nothing of the literal is read before the decision: the framer waits with its input buffered.
    const f = new Framer({ role: "client", holdLiteralsFrom: 0 });
    f.feed(bytes("* 1 FETCH (BODY[] {3}\r\nxyz)\r\n"));
    expect(f.next()?.kind).toBe("literal");
    expect(f.next()).toBeNull();
    expect(f.awaitingDecision).toBe(true);
    expect(f.buffered).toBe(6);
    f.acceptLiteral();
    expect(f.next()?.kind).toBe("frame");
    // The server side never holds a literal for memory (its literals wait for the owner's decision anyway).
    expect(new Framer({ role: "server", holdLiteralsFrom: 0 }).awaitingDecision).toBe(false);
  });

  test("client side, acceptLiteral(true): a reserved literal's buffer is allocated at its size once, not grown", () => {
    // A literal of 64 MiB in reads of 64 KiB, as a large message comes from upstream. Grown by doubling, its buffer
    // held 32 MiB and 64 MiB at once when it last grew, with the smaller ones the collector had not freed yet: the
    // peak RSS grew by 124 MiB here. Allocated once: 60 to 64 MiB; 16 MiB of margin for the rest of the process.
    const MiB = 1024 * 1024;
    const size = 64 * MiB;
    const body = new Uint8Array(size);
    for (let i = 0; i < size; i += 4096) body[i] = (i / 4096) & 0xff;
    const f = new Framer({ role: "client", holdLiteralsFrom: 0 });
    f.feed(bytes(`* 1 FETCH (BODY[] {${size}}\r\n`));
    expect(f.next()?.kind).toBe("literal");
    f.acceptLiteral(true);
    Bun.gc(true);
    const before = peakMiB(true);
    for (let at = 0; at < size; at += 64 * 1024) {
      f.feed(body.subarray(at, at + 64 * 1024));
      expect(f.next()).toBeNull();
    }
    f.feed(bytes(")\r\n"));
    const ev = f.next();
    expect(peakMiB() - before).toBeLessThan(64 + 16);
    if (ev?.kind !== "frame") throw new Error(`expected a frame, got ${ev?.kind}`);
    expect(ev.frame.literals).toHaveLength(1);
    expect(Buffer.from(ev.frame.literals[0]!.data).equals(body)).toBe(true);
  });

  test("client side, holdLinesFrom: lines past it wait for grantLineMemory, counted as their octets arrive", () => {
    // Lines of 12 (`* SEARCH 1 2` + CRLF) and then 8 octets: a response of 20 octets of lines.
    const search = "* SEARCH 1 2\r\n";
    const grants = (from: number, chunks: string[]): [number[], string[]] => {
      const f = new Framer({ role: "client", holdLinesFrom: from });
      const asked: number[] = [];
      const out: string[] = [];
      for (const c of chunks) {
        f.feed(bytes(c));
        for (let ev = f.next(); ev !== null; ev = f.next()) {
          if (ev.kind === "line-memory") {
            asked.push(ev.size);
            f.grantLineMemory(ev.size);
          } else out.push(...summarize([ev]));
        }
      }
      return [asked, out];
    };
    // At the limit nothing is asked; one octet below it, the missing octet is.
    expect(grants(14, [search])).toEqual([[], ["frame * SEARCH 1 2"]]);
    expect(grants(13, [search])).toEqual([[1], ["frame * SEARCH 1 2"]]);
    // A line split over reads is asked for piece by piece, before each piece is read.
    expect(grants(4, ["* SEA", "RCH 1", " 2\r\n"])).toEqual([[1, 5, 4], ["frame * SEARCH 1 2"]]);
    // The lines of one response (23 and 3 octets) add up across its literals; each response starts from nothing.
    const fetch = "* 1 FETCH (BODY[] {3}\r\nabc)\r\n";
    expect(grants(25, [fetch])).toEqual([[1], ["frame * 1 FETCH (BODY[] {3}<abc>)"]]);
    expect(grants(26, [fetch, fetch])).toEqual([
      [],
      ["frame * 1 FETCH (BODY[] {3}<abc>)", "frame * 1 FETCH (BODY[] {3}<abc>)"],
    ]);
    // Nothing of the piece is read before the grant: the framer waits with its input buffered.
    const f = new Framer({ role: "client", holdLinesFrom: 2 });
    f.feed(bytes(search));
    expect(f.next()).toEqual({ kind: "line-memory", size: 12 });
    expect(f.next()).toBeNull();
    expect(f.buffered).toBe(14);
    expect(() => f.acceptLiteral()).toThrow();
    f.grantLineMemory(11);
    expect(f.next()).toEqual({ kind: "line-memory", size: 1 });
    f.grantLineMemory(1);
    expect(f.next()?.kind).toBe("frame");
    // Too long a line is read and dropped without asking for memory first: its response comes truncated, and a
    // truncated response other than a FETCH does not parse (src/imap/wire/response.ts).
    const short = new Framer({ role: "client", holdLinesFrom: 0, limits: { maxLine: 5 } });
    short.feed(bytes(search));
    const cut = short.next()!;
    if (cut.kind !== "frame") throw new Error(`expected a truncated frame, got ${cut.kind}`);
    expect(cut.frame.truncated).toBe(true);
    expect(parseResponse(cut.frame).ok).toBe(false);
    // The server side never holds a line for memory.
    const server = new Framer({ role: "server", holdLinesFrom: 0 });
    server.feed(bytes("a NOOP\r\n"));
    expect(server.next()?.kind).toBe("frame");
  });

  test("client side: total response size is bounded", () => {
    const limits = { maxFrameBytes: 30 };
    const events = run(new Framer({ role: "client", limits }), [bytes("* 1 FETCH (BODY[] {20}\r\n")], "accept");
    expect(summarize(events)).toEqual(["error response-too-big fatal"]);
  });

  test("input buffered ahead of the reader is bounded", () => {
    const f = new Framer({ role: "server", limits: { maxBuffered: 100 } });
    f.feed(bytes("a LOGIN {3}\r\n"));
    expect(f.next()?.kind).toBe("literal");
    f.feed(new Uint8Array(200));
    f.feed(new Uint8Array(1));
    expect(summarize([f.next()!])).toEqual(["error input-overflow fatal"]);
  });

  test("MAX_BUFFERED_INPUT octets ahead of the reader take more input; one octet more is fatal", () => {
    const f = new Framer({ role: "server" });
    f.feed(bytes("a LOGIN {3}\r\n"));
    expect(f.next()?.kind).toBe("literal");
    expect(f.buffered).toBe(0);
    // The reader has stopped pulling (the literal waits for its decision): input piles up.
    f.feed(new Uint8Array(MAX_BUFFERED_INPUT));
    f.feed(new Uint8Array(1));
    expect(f.next()).toBeNull();
    expect(f.buffered).toBe(MAX_BUFFERED_INPUT + 1);
    f.feed(new Uint8Array(1));
    expect(summarize([f.next()!])).toEqual(["error input-overflow fatal"]);
  });
});

describe("framer: modes and views", () => {
  test("raw line mode for AUTHENTICATE/IDLE: no literal detection", () => {
    const f = new Framer({ role: "server" });
    const events = run(f, [bytes("a IDLE\r\n")], "accept");
    expect(summarize(events)).toEqual(["frame a IDLE"]);
    f.expectRawLine();
    expect(summarize(run(f, [bytes("DONE {5}\r\nb NOOP\r\n")], "accept"))).toEqual(["line DONE {5}", "frame b NOOP"]);
  });

  test("discardBuffered drops pipelined plaintext after STARTTLS (§7.20)", () => {
    const f = new Framer({ role: "server" });
    f.feed(bytes("a STARTTLS\r\nb LOGIN user pass\r\n"));
    expect(summarize([f.next()!])).toEqual(["frame a STARTTLS"]);
    expect(f.discardBuffered()).toBe("b LOGIN user pass\r\n".length);
    expect(f.next()).toBeNull();
  });

  test("lines and literals within one chunk are views, not copies", () => {
    const chunk = bytes("* 1 FETCH (BODY[] {5}\r\nhello)\r\n");
    const events = run(new Framer({ role: "client" }), [chunk], "accept");
    const e = events[0]!;
    if (e.kind !== "frame") throw new Error("expected frame");
    expect(e.frame.literals[0]!.data.buffer).toBe(chunk.buffer);
    expect(e.frame.lines[0]!.buffer).toBe(chunk.buffer);
    // A literal spanning chunks is assembled once.
    const split = run(new Framer({ role: "client" }), splitAt(chunk, 25), "accept");
    const s = split[0]!;
    if (s.kind !== "frame") throw new Error("expected frame");
    expect(s.frame.literals[0]!.data.buffer).not.toBe(chunk.buffer);
    expect(new TextDecoder().decode(s.frame.literals[0]!.data)).toBe("hello");
  });
});
