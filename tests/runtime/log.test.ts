/**
 * Module loggers (src/log.ts): one instance per tag, made again after configureLogger so that it follows the
 * format chosen at start-up (docs/operations.md "Logs").
 */
import { afterAll, expect, spyOn, test } from "bun:test";
import { configureLogger, logger, moduleLogger, UNTAGGED_MODULE } from "../../src/log.ts";

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
