/**
 * `mailgator explain`'s text and JSON output (docs/config.md "Trying rules: mailgator explain"), run in process on
 * a config with send, read and agent-scoped rules. That its answers are the proxies' is
 * tests/cli/explain-agreement.test.ts.
 */

import { describe, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { UsageError } from "../../src/cli/args.ts";
import { explain } from "../../src/cli/commands/explain.ts";
import { tempRoot } from "../fixtures/temp.ts";

/** Every folder this file makes is in here, removed after its tests. */
const TMP = tempRoot("mg-explain-unit-");

const RULES = `
[[rules]]
name = "Notifications"
folders = ["INBOX"]
from = "notifications@*"
action = "allow"
operations = ["read"]

[[rules]]
name = "No invoices out"
subject = "*invoice*"
operations = ["send"]
action = "deny"

[[rules]]
name = "Colleagues"
to = "*@corp.test"
operations = ["send"]
action = "allow"

[[rules]]
name = "Bot archive"
agents = ["bot"]
folders = ["Archive"]
operations = ["read"]
action = "allow"

[[rules]]
name = "Deny everything else"
action = "deny"
`;

const VAULT = `
[accounts.main]
username = "bot@corp.test"
password = "x"

[[agents]]
name = "bot"
token_hash = "sha256:${"0".repeat(64)}"
account = "main"

[[agents]]
name = "helper"
token_hash = "sha256:${"1".repeat(64)}"
account = "main"
`;

const dir = mkdtempSync(join(TMP, "mg-explain-unit-"));
const PASS = join(dir, "pass.toml");
const VAULTED = join(dir, "vault.toml");
const SMTP = `[smtp]\nlisten_addr = "127.0.0.1:1587"\nupstream_addr = "smtp.example.test:587"\n`;
// Pass-through mode has no agents: the same rules, rule 4 for everyone.
writeFileSync(PASS, `${SMTP}identities = ["me@corp.test"]\n${RULES.replace('agents = ["bot"]\n', "")}`);
writeFileSync(VAULTED, `${SMTP}${RULES}${VAULT}`);

function run(file: string, args: string[]): string[] {
  let text = "";
  const code = explain({ argv: ["-c", file, ...args], out: (t) => (text += t), env: {} });
  expect(code).toBe(0);
  return text.split("\n");
}

const NOTE =
  'note: this config has agents (bot, helper) and no --agent was given: the answer is for "no agent", which rules ' +
  "limited to agents never match; every connection to the proxies is an agent, so give --agent NAME";

describe("sends: each recipient on its own, the message all or nothing", () => {
  const DENIED = [
    `mail:send: DENY by rule 2 "No invoices out" for <x@evil.test> (at RCPT TO): the whole message is refused`,
    "  sender <me@corp.test>: accepted at MAIL FROM: decided with each recipient (depends on subject, to)",
  ];
  const X = [
    `  to <x@evil.test>: DENY by rule 2 "No invoices out"; refused at RCPT TO (550)`,
    `    mail:send matched rule 2 "No invoices out" (subject "*invoice*"); the same whatever subject turn out to be`,
  ];
  const OK = [
    `  to <ok@corp.test>: ALLOW by rule 3 "Colleagues"`,
    `    mail:send matched rule 3 "Colleagues" (to "*@corp.test")`,
  ];

  test("one denied recipient denies the message, whatever the order, and each recipient names its rule", () => {
    const base = ["--op", "send", "--from", "me@corp.test", "--subject", "hi"];
    expect(run(PASS, [...base, "--to", "x@evil.test", "--to", "ok@corp.test"])).toEqual([...DENIED, ...X, ...OK]);
    expect(run(PASS, [...base, "--to", "ok@corp.test", "--to", "x@evil.test"])).toEqual([...DENIED, ...OK, ...X]);
  });

  test("a whole header value is parsed: the address is what counts, not the display name", () => {
    const lines = run(PASS, ["--op", "send", "--from", "me@corp.test", "--to", '"ok@corp.test" <x@evil.test>']);
    expect(lines[0]).toStartWith(`mail:send: DENY by rule 2 "No invoices out" for <x@evil.test>`);
    expect(lines).toContain(X[0]!);
  });

  test("every recipient allowed: the message is; cc and bcc recipients are labelled", () => {
    const lines = run(PASS, [
      "--op",
      "send",
      "--from",
      "me@corp.test",
      "--to",
      "a@corp.test",
      "--cc",
      "Bee <b@corp.test>, c@corp.test",
      "--bcc",
      "d@corp.test",
      "--subject",
      "Lunch",
      "--no-attachment",
    ]);
    expect(lines[0]).toBe("mail:send: ALLOW: every recipient is allowed");
    expect(lines.filter((l) => /^ {2}(to|cc|bcc) /.test(l))).toEqual([
      `  to <a@corp.test>: ALLOW by rule 3 "Colleagues"`,
      `  cc <b@corp.test>: ALLOW by rule 3 "Colleagues"`,
      `  cc <c@corp.test>: ALLOW by rule 3 "Colleagues"`,
      `  bcc <d@corp.test>: ALLOW by rule 3 "Colleagues"`,
    ]);
  });

  test("a content rule refuses after DATA", () => {
    const lines = run(PASS, [
      "--op",
      "send",
      "--from",
      "me@corp.test",
      "--to",
      "a@corp.test",
      "--subject",
      "Invoice 7",
    ]);
    expect(lines[0]).toBe(
      `mail:send: DENY by rule 2 "No invoices out" for <a@corp.test> (after DATA): the whole message is refused`,
    );
    expect(lines[2]).toBe(
      `  to <a@corp.test>: DENY by rule 2 "No invoices out"; accepted at RCPT TO, refused after DATA`,
    );
  });

  test("the subject is read as the proxies read it: a zero-width space is removed, encoded words decoded", () => {
    for (const subject of ["In\u200Bvoice 7", "=?utf-8?q?Invoice_7?="]) {
      const lines = run(PASS, ["--op", "send", "--from", "me@corp.test", "--to", "a@corp.test", "--subject", subject]);
      expect(lines[0]).toStartWith(`mail:send: DENY by rule 2 "No invoices out" for <a@corp.test> (after DATA)`);
    }
    // One the proxies cannot read (a bidirectional override) is unknown, as if not given.
    const lines = run(PASS, ["--op", "send", "--from", "me@corp.test", "--to", "a@corp.test", "--subject", "x\u202Ey"]);
    expect(lines[0]).toStartWith("mail:send: depends on subject");
  });

  test("a field the answer depends on, left out, is named", () => {
    const lines = run(PASS, ["--op", "send", "--from", "me@corp.test", "--to", "a@corp.test"]);
    expect(lines[0]).toBe(
      "mail:send: depends on subject (possible: deny, allow) for <a@corp.test>; give them to decide, otherwise denied",
    );
  });

  test("vault mode with --agent: a sender that is not the account's is refused at MAIL FROM", () => {
    const lines = run(VAULTED, ["--op", "send", "--agent", "bot", "--from", "me@corp.test", "--to", "a@corp.test"]);
    expect(lines).toEqual([
      `mail:send: DENY: the sender <me@corp.test> is not one of the identities of account "main" (bot@corp.test); ` +
        "refused at MAIL FROM, nothing is sent",
      "  sender <me@corp.test>: not one of the account's identities: refused at MAIL FROM (553)",
      "  to <a@corp.test>: depends on subject (possible: deny, allow); not reached (MAIL FROM refused)",
      "    give the fields it depends on to decide; the proxy denies what stays undecided",
    ]);
  });

  test("--json: per-recipient decisions, the overall one, the agent note", () => {
    let text = "";
    explain({
      argv: ["-c", VAULTED, "--json", "--op", "send", "--from", "<>", "--to", "x@evil.test", "--to", "ok@corp.test"],
      out: (t) => (text += t),
      env: {},
    });
    const answer = JSON.parse(text);
    expect(answer).toMatchObject({
      operation: "mail:send",
      action: "deny",
      stage: "rcpt",
      rule: "No invoices out",
      agent: null,
      agents: ["bot", "helper"],
      sender: { address: "", refused: false },
      recipients: [
        { address: "x@evil.test", class: "to", rcpt: "refused", action: "deny", rule: "No invoices out" },
        { address: "ok@corp.test", class: "to", rcpt: "accepted", action: "undecided", needs: ["subject"] },
      ],
    });
    expect(answer.note).toBe(NOTE.slice("note: ".length));
  });
});

const ABSENT = "(it does not exist for the agent)";
const HIDDEN_FOLDER = `the folder is hidden ${ABSENT}`;

describe("reads", () => {
  test("vault config without --agent: the answer is for no agent, and the agents are listed", () => {
    expect(run(VAULTED, ["--op", "read", "--folder", "Archive"])).toEqual([
      NOTE,
      `folder:read in "Archive": DENY by rule 5 "Deny everything else": ${HIDDEN_FOLDER}`,
      `  hidden folder; folder:read matched rule 5 "Deny everything else" (no conditions)`,
      `mail:read in "Archive": DENY by rule 5 "Deny everything else": ${HIDDEN_FOLDER}`,
      `  hidden folder; mail:read matched rule 5 "Deny everything else" (no conditions)`,
    ]);
    expect(run(VAULTED, ["--op", "folder:read", "--folder", "Archive", "--agent", "bot"])).toEqual([
      `folder:read in "Archive": ALLOW by rule 4 "Bot archive"`,
      `  folder:read matched rule 4 "Bot archive" (folder "Archive", agent "bot")`,
    ]);
  });

  test("the folder is read as the IMAP proxy reads it: NFC, without invisible characters", () => {
    // `Archive` written with a zero-width space, and with a decomposed `A` + U+0300 read as `À`, not as `A`.
    expect(run(VAULTED, ["--op", "folder:read", "--folder", "Arc\u200bhive", "--agent", "bot"])[0]).toBe(
      `folder:read in "Archive": ALLOW by rule 4 "Bot archive"`,
    );
    expect(run(VAULTED, ["--op", "folder:read", "--folder", "A\u0300rchive", "--agent", "bot"])[0]).toStartWith(
      `folder:read in "\u00c0rchive": DENY by rule 5`,
    );
  });

  test("a filtered folder: a message is visible or hidden, or depends on the fields left out", () => {
    const args = ["--op", "mail:read", "--folder", "INBOX"];
    expect(run(PASS, [...args, "--from", "notifications@shop.test"])[0]).toBe(
      `mail:read in "INBOX": ALLOW by rule 1 "Notifications": the message is visible in this filtered folder`,
    );
    expect(run(PASS, [...args, "--from", '"notifications@shop.test" <spam@evil.test>']).slice(0, 2)).toEqual([
      `mail:read in "INBOX": DENY by rule 5 "Deny everything else": the message is hidden ${ABSENT}`,
      `  message hidden: mail:read matched rule 5 "Deny everything else" (no conditions)`,
    ]);
    expect(run(PASS, args)[0]).toBe(
      `mail:read in "INBOX": depends on from (possible: allow, deny); give them to decide, ` +
        "otherwise the message is hidden",
    );
  });

  test("mail:move needs mail:read in the folder too, as the proxy's MOVE does", () => {
    const file = join(dir, "move.toml");
    writeFileSync(
      file,
      `${SMTP.replace("smtp", "imap").replace("587", "993").replace("1587", "1993")}` +
        `[[rules]]\nname = "junk: open and move"\nfolders = ["Junk"]\naction = "allow"\n` +
        `operations = ["folder:read", "mail:move"]\n\n` +
        `[[rules]]\nname = "trash: read and move"\nfolders = ["Trash"]\naction = "allow"\n` +
        `operations = ["read", "mail:move"]\n\n[[rules]]\nname = "nothing else"\naction = "deny"\n`,
    );
    const junk = run(file, ["--op", "mail:move", "--folder", "Junk"]);
    expect(junk[0]).toStartWith(`mail:move in "Junk": DENY by rule 3 "nothing else"`);
    expect(junk.join("\n")).toContain("mail:read matched rule 3");
    expect(run(file, ["--op", "mail:move", "--folder", "Trash"])[0]).toStartWith(
      `mail:move in "Trash": ALLOW by rule 2 "trash: read and move"`,
    );
  });

  test("folder:write names what DELETE and RENAME also need", () => {
    expect(run(VAULTED, ["--op", "folder:write", "--folder", "Archive", "--agent", "bot"])).toEqual([
      `folder:write in "Archive": DENY by rule 5 "Deny everything else"`,
      `  folder:write matched rule 5 "Deny everything else" (no conditions)`,
    ]);
    const file = join(dir, "write.toml");
    writeFileSync(file, `[[rules]]\nname = "Agent"\nfolders = ["Agent", "Agent/**"]\naction = "allow"\n`);
    expect(run(file, ["--op", "folder:write", "--folder", "Agent"])).toEqual([
      `folder:write in "Agent": ALLOW by rule 1 "Agent"`,
      `  folder:write matched rule 1 "Agent" (folder "Agent"|"Agent/**")`,
      `  DELETE also needs mail:delete (ALLOW by rule 1 "Agent"); DELETE and RENAME also need every folder below ` +
        "to be visible: every folder below is visible",
      `  RENAME moves the messages: it also needs mail:read (ALLOW by rule 1 "Agent") and mail:move (ALLOW by ` +
        `rule 1 "Agent") here, and mail:append at the new name`,
    ]);
    // Without "Agent/**", a folder below Agent may be hidden: DELETE and RENAME of Agent are refused.
    writeFileSync(file, `[[rules]]\nname = "Agent"\nfolders = ["Agent"]\naction = "allow"\n`);
    expect(run(file, ["--op", "folder:write", "--folder", "Agent"]).at(-2)).toEndWith(
      "to be visible: the rules may hide folders below it",
    );
    // A filtered folder: DELETE and RENAME would take the messages it hides along, so the proxy refuses them.
    writeFileSync(
      file,
      `[[rules]]\nname = "shop"\nfolders = ["Agent"]\nfrom = "shop@*"\naction = "allow"\noperations = ["read"]\n` +
        `[[rules]]\nname = "Agent"\nfolders = ["Agent", "Agent/**"]\naction = "allow"\n` +
        `operations = ["folder:write", "mail:delete"]\n`,
    );
    expect(run(file, ["--op", "folder:write", "--folder", "Agent"]).at(-1)).toBe(
      "  the folder is filtered: DELETE and RENAME are refused (they would take its hidden messages along)",
    );
    expect(JSON.parse(run(file, ["--op", "folder:write", "--folder", "Agent", "--json"]).join("\n"))).toMatchObject({
      subtree: { visible: true, filtered: true },
    });
  });

  test("an operation on the selected mailbox is refused when SELECT is", () => {
    expect(run(PASS, ["--op", "mail:delete", "--folder", "INBOX"])[0]).toBe(
      `mail:delete in "INBOX": DENY by rule 5 "Deny everything else"`,
    );
  });
});

describe("usage errors", () => {
  const usage = (file: string, args: string[]) => () =>
    explain({ argv: ["-c", file, ...args], out: () => {}, env: {} });

  test("a send needs a recipient and one envelope sender; reads need a folder", () => {
    expect(usage(PASS, ["--op", "send", "--from", "me@corp.test"])).toThrow(UsageError);
    expect(usage(PASS, ["--op", "send", "--from", "a@corp.test, b@corp.test", "--to", "c@corp.test"])).toThrow(
      "one envelope sender",
    );
    expect(usage(PASS, ["--op", "read"])).toThrow("--folder is required");
    // A name the proxy refuses outright does not exist for any agent, whatever the rules.
    for (const folder of ["a\u202eb", "a//b", "a/", "#shared/x"])
      expect(usage(PASS, ["--op", "read", "--folder", folder])).toThrow("no agent can see a folder so named");
    expect(usage(PASS, ["--op", "send", "--to", "not an address"])).toThrow("--to: not an address");
  });

  test("`all` without recipients explains the rest and says what a send needs", () => {
    const lines = run(PASS, ["--op", "all", "--folder", "INBOX", "--from", "notifications@shop.test"]);
    expect(lines.at(-1)).toBe("mail:send: a send needs at least one recipient (--to, --cc or --bcc)");
    expect(lines[0]).toStartWith(`folder:read in "INBOX": ALLOW by rule 1 "Notifications"`);
  });
});
