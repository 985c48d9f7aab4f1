/** DATA framing on bytes (RFC 5321 §4.1.1.4, §4.5.2): the end of the message, dot-unstuffing, bare CR/LF. */

import { describe, expect, test } from "bun:test";
import { prngBelow } from "../../scripts/upstreams/seed.ts";
import { DataReader, type DataResult } from "../../src/smtp/data.ts";

/** Feeds `input` split at the given offsets; returns the content and how the stream ended. */
function run(input: string, splits: number[] = []): { content: string; result: DataResult; rest: string } {
  const parts: Buffer[] = [];
  const reader = new DataReader((b) => parts.push(Buffer.from(b)));
  const bytes = Buffer.from(input, "latin1");
  const edges = [0, ...splits, bytes.length];
  let result: DataResult = { kind: "more" };
  let rest = "";
  for (let i = 0; i < edges.length - 1; i++) {
    const chunk = bytes.subarray(edges[i], edges[i + 1]);
    result = reader.feed(chunk, 0);
    if (result.kind === "end") {
      rest = Buffer.concat([chunk.subarray(result.next), bytes.subarray(edges[i + 1])]).toString("latin1");
      break;
    }
    if (result.kind === "bare-newline") break;
  }
  return { content: Buffer.concat(parts).toString("latin1"), result, rest };
}

describe("end of data", () => {
  test("CRLF . CRLF ends the message; the content keeps its last CRLF; what follows is the next command", () => {
    const r = run("Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n");
    expect(r.result.kind).toBe("end");
    expect(r.content).toBe("Subject: x\r\n\r\nhello\r\n");
    expect(r.rest).toBe("QUIT\r\n");
  });

  test("an empty message is just the dot line", () => {
    const r = run(".\r\n");
    expect(r.result.kind).toBe("end");
    expect(r.content).toBe("");
  });

  test("dots at line starts are unstuffed; other dots are kept", () => {
    const r = run("..\r\n...x\r\na.b\r\n. \r\n.\r\n");
    expect(r.content).toBe(".\r\n..x\r\na.b\r\n \r\n");
  });

  test("every split point of the input gives the same result", () => {
    const input = "A: b\r\n\r\n..one\r\n.\r\nNOOP\r\n";
    const whole = run(input);
    for (let i = 1; i < input.length; i++) {
      for (let j = i + 1; j < input.length; j += 3) {
        const r = run(input, [i, j]);
        expect(r.content).toBe(whole.content);
        expect(r.result.kind).toBe("end");
        expect(r.rest).toBe("NOOP\r\n");
      }
    }
  });
});

describe("bare CR and LF are refused (smuggling, docs/protocol.md §7 case 31)", () => {
  for (const [name, input] of [
    ["<LF>.<LF>", "hi\n.\nRCPT TO:<evil@x>\r\n.\r\n"],
    ["<CR><LF>.<LF>", "hi\r\n.\nRCPT TO:<evil@x>\r\n.\r\n"],
    ["<LF>.<CR><LF>", "hi\n.\r\nRCPT TO:<evil@x>\r\n.\r\n"],
    ["<CR>.<CR>", "hi\r.\rRCPT TO:<evil@x>\r\n.\r\n"],
    ["bare LF at the start", "\nhi\r\n.\r\n"],
    ["bare CR mid-line", "a\rb\r\n.\r\n"],
    ["dot then bare LF", "hi\r\n.\n"],
    ["dot, CR, then something other than LF", "hi\r\n.\rX\r\n.\r\n"],
  ] as const) {
    test(name, () => {
      expect(run(input).result.kind).toBe("bare-newline");
      for (let i = 1; i < input.length; i++) expect(run(input, [i]).result.kind).toBe("bare-newline");
    });
  }
});

test("content is passed as views of the input, not copies (Bun owns nothing after feed returns)", () => {
  const views: Buffer[] = [];
  const reader = new DataReader((b) => views.push(b));
  const chunk = Buffer.from("abc\r\ndef\r\n");
  reader.feed(chunk, 0);
  expect(views[0]!.buffer).toBe(chunk.buffer);
});

describe("unstuffing in place", () => {
  test("the sink is called once per chunk, however many lines begin with a dot", () => {
    const calls: Buffer[] = [];
    const reader = new DataReader((b) => calls.push(Buffer.from(b)));
    const chunk = Buffer.from("..\r\n".repeat(1000) + "x\r\n" + ".y\r\n".repeat(1000));
    expect(reader.feed(chunk, 0).kind).toBe("more");
    expect(calls).toHaveLength(1);
    expect(calls[0]!.toString("latin1")).toBe(".\r\n".repeat(1000) + "x\r\n" + "y\r\n".repeat(1000));
    const end = Buffer.from("..a\r\n.\r\nQUIT\r\n");
    const result = reader.feed(end, 0);
    expect(result).toEqual({ kind: "end", next: 8 });
    expect(calls).toHaveLength(2);
    expect(calls[1]!.toString("latin1")).toBe(".a\r\n");
    // What follows the end is where it arrived: the session reads its next commands from there.
    expect(end.subarray(8).toString("latin1")).toBe("QUIT\r\n");
  });

  /** The reading of RFC 5321 §4.5.2 and §2.3.8 line by line on strings, to compare the byte reader with. */
  function reference(input: string): { kind: DataResult["kind"]; content: string; rest: string } {
    let content = "";
    let pos = 0;
    for (;;) {
      const eol = input.indexOf("\r\n", pos);
      const line = eol === -1 ? input.slice(pos) : input.slice(pos, eol);
      if (eol === -1) {
        // The unfinished last line: a CR may still be followed by its LF.
        if (line.includes("\n") || line.slice(0, -1).includes("\r")) return { kind: "bare-newline", content, rest: "" };
        const body = line.startsWith(".") ? line.slice(1) : line;
        if (!(line.startsWith(".") && (body === "" || body === "\r"))) content += body;
        return { kind: "more", content, rest: "" };
      }
      if (line.includes("\n") || line.includes("\r")) return { kind: "bare-newline", content, rest: "" };
      if (line === ".") return { kind: "end", content, rest: input.slice(eol + 2) };
      content += (line.startsWith(".") ? line.slice(1) : line) + "\r\n";
      pos = eol + 2;
    }
  }

  test("random input split at random points reads as the line-by-line reference does", () => {
    const random = prngBelow(12345);
    const pieces = [".", ".", "\r\n", "\r\n", "a", "bc", "\r", "\n", "..\r\n", ".\r\n"];
    for (let round = 0; round < 3000; round++) {
      let input = "";
      const length = 1 + random(14);
      for (let k = 0; k < length; k++) input += pieces[random(pieces.length)];
      const expected = reference(input);
      const splits = [...new Set([random(input.length + 1), random(input.length + 1)])]
        .filter((x) => x > 0 && x < input.length)
        .sort((a, b) => a - b);
      const got = run(input, splits);
      const where = `${JSON.stringify(input)} split at ${splits}`;
      expect(`${where}: ${got.result.kind}`).toBe(`${where}: ${expected.kind}`);
      if (expected.kind === "bare-newline") continue;
      expect(`${where}: ${JSON.stringify(got.content)}`).toBe(`${where}: ${JSON.stringify(expected.content)}`);
      if (expected.kind === "end") expect(got.rest).toBe(expected.rest);
    }
  });
});
