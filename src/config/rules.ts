/**
 * What a rule may say, beyond its shape and its globs: the checks that look at a whole rule (its action, its
 * conditions and its operations together) against what this version of Mailgator can enforce. load.ts runs them
 * with every other config check, so `check`, `explain` and `serve` refuse the same configs, each problem with its
 * place in the file (docs/config.md "Errors"). The proxies' start functions assert the same function (assertRules),
 * for a Config that was built without loadConfig.
 */

import { FILTERED_OPERATIONS, MESSAGE_FIELDS, type MessageField, OPERATIONS } from "../policy/index.ts";
import type { Config, RuleConfig } from "./types.ts";

export interface RuleProblem {
  /** The rule's key the problem is about, to find its place in the file (`operations` stands for its alias too). */
  readonly key: string;
  readonly message: string;
}

/** Which sections the config has: some rules are refused only where a proxy would have to enforce them. */
export interface RuleContext {
  readonly imap: boolean;
}

const KEY_OF: Readonly<Record<MessageField, string>> = {
  from: "from",
  to: "to",
  cc: "cc",
  bcc: "bcc",
  subject: "subject",
  hasAttachment: "has_attachment",
};

/**
 * The problems of one rule (already checked for shape, globs and operation names); `written` is its `operations` as
 * the file gives them, before shorthands are expanded (a Config built without loadConfig has only the expansion).
 * Message conditions are honoured for reading (the IMAP proxy filters a folder message by message,
 * docs/filtering.md) and for sending (the SMTP proxy decides each recipient); on any other IMAP operation the proxy
 * could only ignore them, so a config with an `[imap]` section must not put them there.
 */
export function ruleProblems(rule: RuleConfig, context: RuleContext, written?: readonly string[]): RuleProblem[] {
  const out: RuleProblem[] = [];
  // `ask` holds a send for a person's decision (docs/approvals.md): only a send can be held, and someone must be
  // asked. Whether the groups exist is checked with the whole config (load.ts).
  if (rule.action === "ask") {
    const ops = rule.operations;
    if (ops === undefined || ops.some((op) => op !== "mail:send"))
      out.push({
        key: ops === undefined ? "action" : "operations",
        message:
          'action "ask" holds sends only: give this rule operations = "send" (it covers ' +
          `${ops === undefined ? "every operation (operations is omitted)" : ops.join(", ")})`,
      });
    if (rule.askGroups === undefined || rule.askGroups.length === 0)
      out.push({
        key: rule.askGroups === undefined ? "action" : "ask_groups",
        message: 'action "ask" needs ask_groups = ["NAME", ...] naming [approvals.groups.NAME] to notify',
      });
  } else if (rule.askGroups !== undefined) {
    out.push({ key: "ask_groups", message: `only for action = "ask" (this rule's action is "${rule.action}")` });
  }
  // A message being sent is in no folder (the SMTP proxy asks with `folder: null`, docs/smtp.md "Send semantics"), so
  // `folders` never holds for mail:send: a rule that names a send and has folders would never match it, and a deny
  // rule written so would let every send through (docs/config.md "[[rules]]"). With operations omitted or "all" (every
  // operation), the rule is about everything done in those folders, and a send is not done in one. Whether send is
  // named is read from the names as written when there are some: `["read", "write", "send"]` covers every operation
  // as "all" does, yet names a send as plainly as `["read", "send"]`.
  const named = rule.operations;
  const namesSend =
    written !== undefined
      ? written.some((name) => name === "send" || name === "mail:send")
      : named?.includes("mail:send") === true && named.length < OPERATIONS.length;
  if (rule.folders !== undefined && namesSend)
    out.push({
      key: "operations",
      message:
        "folders never hold for a send (a message being sent is in no folder), but this rule's operations include " +
        "mail:send, so it would never match a send. Give sending a rule of its own without folders, or remove " +
        "send from this rule's operations",
    });
  const fields = MESSAGE_FIELDS.filter((f) => rule[f] !== undefined);
  if (context.imap && fields.length > 0) {
    const ops = rule.operations;
    const unsupported =
      ops === undefined ? null : ops.filter((op) => op !== "mail:send" && !FILTERED_OPERATIONS.has(op));
    if (unsupported === null || unsupported.length > 0) {
      const names = fields.map((f) => KEY_OF[f]).join(", ");
      const covers = unsupported === null ? "every operation (operations is omitted)" : unsupported.join(", ");
      out.push({
        key: ops === undefined ? KEY_OF[fields[0]!] : "operations",
        message:
          `message conditions (${names}) apply only to reading ("read", "folder:read", "mail:read") and sending ` +
          `("send"), but this rule also covers ${covers}, where the IMAP proxy could not enforce them. ` +
          "Limit the rule's operations to read and/or send, or remove those conditions",
      });
    } else if (ops?.includes("folder:read") && !ops.includes("mail:read")) {
      // LIST, STATUS, SELECT and EXAMINE act on a whole folder, and which messages exist is mail:read's decision
      // (docs/filtering.md): on folder:read alone a message condition hides nothing, so `deny folder:read` with
      // `from = "boss@corp.test"` would pass the boss's mail while reading as if it hid it.
      const names = fields.map((f) => KEY_OF[f]).join(", ");
      out.push({
        key: "operations",
        message:
          `message conditions (${names}) decide which messages can be read, which is mail:read, but this rule ` +
          "covers folder:read without it, where the IMAP proxy could not enforce them (LIST, STATUS, SELECT are " +
          'about the whole folder). Give the rule operations = ["read"] or add "mail:read", or remove those conditions',
      });
    }
  }
  return out;
}

/** Every rule problem of a config, as `rules[i].key: message` lines. */
export function configRuleProblems(config: Pick<Config, "imap" | "rules">): string[] {
  const context: RuleContext = { imap: config.imap !== null };
  return config.rules.flatMap((rule, i) =>
    ruleProblems(rule, context).map((p) => `rules[${i}].${p.key} (rule ${JSON.stringify(rule.name)}): ${p.message}`),
  );
}

/**
 * For the proxies' start functions: the same checks loadConfig ran, as an assertion. A loaded config always passes;
 * this stops a Config built some other way from starting a proxy that would ignore part of a rule.
 */
export function assertRules(config: Pick<Config, "imap" | "rules">): void {
  const problems = configRuleProblems(config);
  if (problems.length > 0) throw new Error(`config: ${problems.join("; ")}`);
}
