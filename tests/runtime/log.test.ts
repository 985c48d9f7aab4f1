/**
 * Module loggers (src/log.ts): one instance per tag, made again after configureLogger so that it follows the
 * format chosen at start-up (docs/operations.md "Logs").
 */
import { afterAll, expect, spyOn, test } from "bun:test";
import {
  configureLogger,
  logCutMark,
  logger,
  MAX_LOG_TEXT_CHARS,
  moduleLogger,
  UNTAGGED_MODULE,
} from "../../src/log.ts";

afterAll(() => {
  configureLogger("pretty", 3);
});

test("moduleLogger gives one instance per tag instead of a new logger per call (per session)", () => {
  configureLogger("pretty", 3);
  const imap = moduleLogger("imap");
  expect(moduleLogger("imap")).toBe(imap);
  expect(moduleLogger("smtp")).not.toBe(imap);
});

test("after configureLogger a module logger is made again, in the new format", () => {
  configureLogger("pretty", 3);
  const before = moduleLogger("imap");
  configureLogger("json", 3);
  const after = moduleLogger("imap");
  expect(after).not.toBe(before);
  const lines: string[] = [];
  const write = spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => {
    lines.push(String(chunk));
    return true;
  });
  try {
    after.info("session abc: connected");
  } finally {
    write.mockRestore();
  }
  expect(lines).toHaveLength(1);
  expect(JSON.parse(lines[0]!)).toMatchObject({ level: "info", module: "imap", msg: "session abc: connected" });
});

test("identical lines are each written: no throttling folds them (one logger per module now shares its state)", () => {
  configureLogger("json", 3);
  const lines: string[] = [];
  const write = spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => {
    lines.push(String(chunk));
    return true;
  });
  try {
    for (let i = 0; i < 10; i++) moduleLogger("smtp").error("audit log unavailable, send refused: /x/audit.db");
  } finally {
    write.mockRestore();
  }
  expect(lines).toHaveLength(10);
});

test("a JSON line of the untagged logger (the command line's config errors) names a module too", () => {
  configureLogger("json", 3);
  const lines: string[] = [];
  const write = spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => {
    lines.push(String(chunk));
    return true;
  });
  try {
    logger.error("config error: x.toml:1:1: broken", { event: "config_error" });
  } finally {
    write.mockRestore();
  }
  expect(lines).toHaveLength(1);
  expect(JSON.parse(lines[0]!)).toMatchObject({ level: "error", module: UNTAGGED_MODULE, event: "config_error" });
});

test("a message's controls are escaped in both formats: a CR hides no line start, a LF starts a marked line", () => {
  const message = "upstream: 451 \rall fine\u202e\u2028\x9b2K\nsecond line\x1b[1A";
  const written: Record<string, string[]> = {};
  for (const format of ["pretty", "json"] as const) {
    configureLogger(format, 3);
    const lines: string[] = (written[format] = []);
    const write = spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => {
      lines.push(String(chunk));
      return true;
    });
    try {
      moduleLogger("smtp").warn(message);
    } finally {
      write.mockRestore();
    }
  }
  const text = written["pretty"]!.join("");
  // The text line's further lines begin as the first does, then `| `; nothing else is written as it is.
  const [first, second] = text.split("\n");
  expect(first).toMatch(/^\S+Z warn \[smtp\] upstream: 451 \\u000dall fine\\u202e\\u2028\\u009b2K$/);
  expect(second).toBe(`${first!.split(" ")[0]} warn [smtp] | second line\\u001b[1A`);
  expect(text.endsWith("\\u001b[1A\n")).toBe(true);
  const json = written["json"]!.join("");
  expect(json).not.toMatch(/[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\p{Cf}]/u);
  expect(json.split("\n")).toHaveLength(2);
  expect((JSON.parse(json) as { msg: string }).msg).toBe(message);
});

/** What the logger writes in `format` for the calls of `run`, as one string. */
function capture(format: "pretty" | "json", run: () => void): string {
  configureLogger(format, 3);
  const chunks: string[] = [];
  const write = spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => {
    chunks.push(String(chunk));
    return true;
  });
  try {
    run();
  } finally {
    write.mockRestore();
  }
  return chunks.join("");
}

test("a message and a JSON field are logged whole up to MAX_LOG_TEXT_CHARS; one more and the rest is counted", () => {
  const at = `q${"x".repeat(MAX_LOG_TEXT_CHARS - 1)}`;
  const past = `${at}y`;
  // A cut never leaves half of a surrogate pair: the pair that would be split is left out whole.
  const pair = `${"x".repeat(MAX_LOG_TEXT_CHARS - 1)}\u{1F600}z`;
  const text = capture("pretty", () => {
    for (const m of [at, past, pair]) moduleLogger("imap").warn(m);
  }).split("\n");
  expect(text[0]).toEndWith(` warn [imap] ${at}`);
  expect(text[1]).toEndWith(` warn [imap] ${at}${logCutMark(1)}`);
  expect(text[2]).toEndWith(` warn [imap] ${"x".repeat(MAX_LOG_TEXT_CHARS - 1)}${logCutMark(3)}`);
  const json = capture("json", () => {
    moduleLogger("imap").warn(at, { event: "x", reason: at });
    moduleLogger("imap").warn(past, { event: "x", reason: past }, new Error(past));
  })
    .trimEnd()
    .split("\n")
    .map((l) => JSON.parse(l) as Record<string, string>);
  expect(json[0]).toMatchObject({ msg: at, reason: at });
  expect(json[1]).toMatchObject({ msg: `${at}${logCutMark(1)}`, reason: `${at}${logCutMark(1)}` });
  expect(json[1]!["error"]).toBe(`Error: ${past.slice(0, MAX_LOG_TEXT_CHARS - 7)}${logCutMark(8)}`);
});

test("a message of megabytes is one line under 25,000 octets, even when every character is written escaped", () => {
  const line = capture("pretty", () => moduleLogger("imap").warn(`upstream said: ${"\x1b".repeat(4_000_000)}`));
  expect(line.split("\n")).toHaveLength(2);
  expect(Buffer.byteLength(line)).toBeLessThan(25_000);
  expect(line).toEndWith(`${"\\u001b".repeat(10)}${logCutMark(4_000_015 - MAX_LOG_TEXT_CHARS)}\n`);
});
