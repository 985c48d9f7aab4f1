/**
 * Subject globs that could never match. The reader removes default-ignorable characters from a Subject and
 * puts it in NFC, and a Subject holding a control, line separator, bidirectional reordering or U+FFFD is unknown
 * (docs/filtering.md "Deciding a message"). A glob written with such characters (a decomposed `U` + U+0308, a
 * zero-width space) could never match any subject, so a deny rule written with it would let every subject through.
 * Such a glob is refused, as an address glob that could never match is (docs/config.md "Globs").
 */

import { describe, expect, test } from "bun:test";
import { ConfigError, parseConfig } from "../../src/config/index.ts";
import { readUnstructured } from "../../src/mail/index.ts";
import { compilePolicy } from "../../src/policy/index.ts";

function problems(subject: string): string | null {
  const text =
    `[[rules]]\nname = "no wires"\naction = "deny"\noperations = "send"\n` + `subject = ${JSON.stringify(subject)}\n`;
  try {
    parseConfig(text, "/cfg/mailgator.toml", { env: {} });
    return null;
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as ConfigError).message;
  }
}

describe("subject globs the reader's subjects can never match", () => {
  test("as loaded today, a decomposed glob matches no subject, composed or decomposed on the wire", () => {
    const nfd = "*U\u0308berweisung*";
    const policy = compilePolicy([
      { name: "no wires", action: "deny", subject: [nfd], operations: ["send"] },
      { name: "rest", action: "allow", operations: ["send"] },
    ]);
    for (const raw of [" \u00dcberweisung 1M", " =?utf-8?q?U=CC=88berweisung?= 1M"]) {
      const subject = readUnstructured(raw) ?? undefined;
      const d = policy.evaluate({ operation: "mail:send", folder: null, agent: null, to: ["x@y.test"], subject });
      // The engine alone cannot know; the config must not let such a glob in (below).
      expect(d.rule).toBe("rest");
    }
  });

  test("a glob not in NFC is refused, naming the composed form", () => {
    const message = problems("*U\u0308berweisung*");
    expect(message).toContain("rules[0].subject");
    expect(message).toContain("NFC");
  });

  test("a glob with a default-ignorable character (zero-width space, soft hyphen) is refused", () => {
    expect(problems("*sec\u200bret*")).toContain("rules[0].subject");
    expect(problems("*sec\u00adret*")).toContain("rules[0].subject");
  });

  test("a glob with a character that makes a subject unknown (control, U+2028, bidi, U+FFFD) is refused", () => {
    for (const c of ["\u0001", "\u2028", "\u202e", "\ufffd", "\n"]) expect(problems(`*a${c}b*`)).toContain("subject");
  });

  test("composed text, a TAB and plain ASCII still load", () => {
    expect(problems("*\u00dcberweisung*")).toBeNull();
    expect(problems("[JIRA]\t*")).toBeNull();
    expect(problems("*secret*")).toBeNull();
  });
});
