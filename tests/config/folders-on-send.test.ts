/**
 * A folder condition on a send (docs/config.md "[[rules]]"): a message being sent is in no folder (the SMTP proxy
 * asks with `folder: null`, docs/smtp.md "Send semantics"), so `folders` never holds for `mail:send`. A rule whose
 * `operations` name a send and that has `folders` would never match that send: `deny` with `folders = ["**"]`,
 * `to = "*@competitor.test"` and `operations = "send"` before `allow send` loaded, `check` listed it as
 * `when folders "**"; to "*@competitor.test"`, and `explain` (as the proxy) allowed the send to the competitor. It is
 * now a config error at the rule's operations, whenever they name `send` or `mail:send` (also among all eight);
 * `folders` with `operations` omitted or `"all"` (everything done in those folders, and a send is done in none) still
 * loads, and so does a send rule without `folders`.
 */

import { describe, expect, test } from "bun:test";
import { parseConfig } from "../../src/config/index.ts";
import { compilePolicy } from "../../src/policy/index.ts";

const SMTP = `[smtp]\nlisten_addr = "127.0.0.1:1587"\nupstream_addr = "127.0.0.1:587"\n`;

function problems(toml: string): string {
  try {
    parseConfig(toml, "/x/mailgator.toml");
    return "";
  } catch (error) {
    return (error as Error).message;
  }
}

const deny = (operations: string, folders = 'folders = ["**"]') =>
  `[[rules]]\nname = "competitors"\naction = "deny"\n${folders}\nto = "*@competitor.test"\n` +
  `operations = ${operations}\n` +
  `[[rules]]\nname = "send"\naction = "allow"\noperations = "send"\n`;

describe("folders on a rule that covers sending", () => {
  test("as the engine reads it, such a rule never matches a send", () => {
    const policy = compilePolicy([
      { name: "competitors", action: "deny", folders: ["**"], to: ["*@competitor.test"], operations: ["send"] },
      { name: "send", action: "allow", operations: ["send"] },
    ]);
    const d = policy.evaluate({
      operation: "mail:send",
      folder: null,
      from: ["me@corp.test"],
      to: ["x@competitor.test"],
    });
    expect(d.rule).toBe("send");
  });

  test("is refused at the rule's operations, however send is named", () => {
    for (const ops of ['"send"', '"mail:send"', '["read", "send"]', '["write", "mail:send"]']) {
      const text = problems(`${SMTP}${deny(ops)}`);
      expect(text).toContain("mailgator.toml:9:14: rules[0].operations: folders never hold for a send");
      expect(text).toContain("mail:send");
    }
    // The alias keys too, at the key as written.
    expect(problems(`${SMTP}${deny('"send"', 'folder = "INBOX"').replace("operations =", "operation =")}`)).toContain(
      "mailgator.toml:9:13: rules[0].operation: folders never hold for a send",
    );
  });

  test("is refused when send is named among every operation, as when among fewer", () => {
    // Each of these covers all eight operations, as "all" does, yet names a send: it loaded, `check` listed the rule
    // as `mail:send; when folders "**"; to "*@competitor.test"`, and the send to the competitor was allowed.
    const every = [
      '["read", "write", "send"]',
      '["all", "send"]',
      '["mail:send", "all"]',
      '["folder:read", "folder:write", "mail:read", "mail:flag", "mail:delete", "mail:move", "mail:append", ' +
        '"mail:send"]',
    ];
    for (const ops of every)
      expect(problems(`${SMTP}${deny(ops)}`)).toContain(
        "mailgator.toml:9:14: rules[0].operations: folders never hold for a send",
      );
  });

  test("folders with operations omitted or all (everything done in a folder), and sends without folders, load", () => {
    expect(problems(`${SMTP}[[rules]]\nname = "secret"\naction = "deny"\nfolders = ["Secret/**"]\n`)).toBe("");
    expect(problems(`${SMTP}${deny('"send"', "")}`)).toBe("");
    expect(problems(`${SMTP}${deny('["read", "write"]')}`)).toBe("");
    expect(
      problems(`${SMTP}[[rules]]\nname = "mine"\naction = "allow"\nfolders = ["Agent/**"]\noperations = "all"\n`),
    ).toBe("");
  });

  test("without [imap], a rule with folders draws a warning: only sends are decided, and it never matches one", () => {
    // `deny` with `folders = ["**"]` and `to`, operations omitted (everything done in those folders): it loaded
    // without a word in a config whose only listener is [smtp], and every send to the competitor was allowed.
    const rule = `[[rules]]\nname = "competitors"\naction = "deny"\nfolders = ["**"]\nto = "*@competitor.test"\n`;
    const warning = 'rule 1 "competitors" can never match: it has folders, and without [imap] only sends are decided';
    const warnings = (toml: string) => parseConfig(toml, "/x/mailgator.toml").warnings.join("\n");
    expect(warnings(`${SMTP}${rule}`)).toContain(warning);
    const IMAP = `[imap]\nlisten_addr = "127.0.0.1:1143"\nupstream_addr = "127.0.0.1:993"\n`;
    const inFolders = `[[rules]]\nname = "competitors"\naction = "deny"\nfolders = ["**"]\n`;
    expect(warnings(`${IMAP}${SMTP}${inFolders}`)).not.toContain("can never match");
    // A rules-only config is for check and explain, which answer for IMAP operations too.
    expect(warnings(rule)).not.toContain("can never match");
    expect(warnings(`${SMTP}${deny('"send"', "")}`)).not.toContain("can never match");
  });
});
