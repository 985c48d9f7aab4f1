/**
 * Message conditions on `folder:read` without `mail:read` (docs/config.md "What the message fields mean"): which
 * messages exist for the agent is decided by mail:read alone (docs/filtering.md), so such a rule could only be
 * ignored. Against the real Dovecot, `deny folder:read` with `from = "boss@corp.test"` before `allow read` loaded,
 * `check` called it valid, and the boss's message was shown by SELECT, FETCH and STATUS. With `[imap]` it is now a
 * config error, as message conditions on writes are; `read` and `mail:read` still load, and so does any rule
 * without `[imap]`.
 */

import { describe, expect, test } from "bun:test";
import { parseConfig } from "../../src/config/index.ts";

const IMAP = `[imap]\nlisten_addr = "127.0.0.1:1143"\nupstream_addr = "127.0.0.1:993"\n`;

function rule(operations: string, condition = 'from = "boss@corp.test"'): string {
  return `[[rules]]\nname = "boss"\naction = "deny"\nfolders = ["INBOX"]\noperations = ${operations}\n${condition}\n`;
}

function problems(toml: string): string {
  try {
    parseConfig(toml, "/x/mailgator.toml");
    return "";
  } catch (error) {
    return (error as Error).message;
  }
}

describe("message conditions on folder:read", () => {
  test("without mail:read they are refused at the rule's operations", () => {
    const text = problems(`${IMAP}${rule('["folder:read"]')}`);
    expect(text).toContain("rules[0].operations: message conditions (from) decide which messages can be read");
    expect(text).toContain("covers folder:read without it");
    expect(problems(`${IMAP}${rule('["folder:read", "send"]', 'subject = "*secret*"')}`)).toContain(
      "message conditions (subject) decide which messages can be read",
    );
  });

  test("with mail:read, or without [imap], they load", () => {
    expect(problems(`${IMAP}${rule('["read"]')}`)).toBe("");
    expect(problems(`${IMAP}${rule('["mail:read"]')}`)).toBe("");
    // Without folders: a folder condition never holds for a send (tests/config/folders-on-send.test.ts).
    const send = `[[rules]]\nname = "boss"\naction = "deny"\noperations = ["folder:read", "mail:read", "send"]\n`;
    expect(problems(`${IMAP}${send}from = "boss@corp.test"\n`)).toBe("");
    expect(problems(rule('["folder:read"]'))).toBe("");
  });
});
