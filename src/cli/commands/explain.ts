/**
 * `mailgator explain`: the config simulator. It answers as the proxies would, because it runs their decision
 * functions: `simulateSend` (src/smtp/decide.ts) for a send, `decideImap` (src/imap/decide.ts) for the rest.
 * Output format: README.md "Command line" and docs/config.md "Trying rules: mailgator explain".
 */

import type { Config } from "../../config/index.ts";
import { loadConfig, ownEntry } from "../../config/index.ts";
import type { MessageFacts } from "../../imap/classify.ts";
import { decideImap, type ImapVerdict } from "../../imap/decide.ts";
import { FolderNames } from "../../imap/folders.ts";
import { escapes, parseAddressList, readEnvelopeAddress, readSubject, terminalJson } from "../../mail/index.ts";
import {
  compilePolicy,
  type Decision,
  expandOperation,
  type Operation,
  type Outcome,
  type Policy,
} from "../../policy/index.ts";
import { type QuotaSubject, type QuotaUse, quotaSubject, quotaUse } from "../../quotas/index.ts";
import { type SimulatedSend, senderNotIdentity, sessionIdentities, simulateSend } from "../../smtp/decide.ts";
import { openStateDatabaseReadOnly } from "../../state/database.ts";
import { type CommandContext, configOf, EXIT_OK, parse, required, strings, UsageError } from "../args.ts";

export const usage = `Usage: mailgator explain [-c FILE] --op OP [--folder F] [--from A] [--to A] [--cc A]
                        [--bcc A] [--subject S] [--[no-]attachment] [--agent NAME] [--json]

Answers as the proxies would, naming the rule that decides. OP is an operation
(folder:read, folder:write, mail:read, mail:flag, mail:delete, mail:move,
mail:append, mail:send) or a shorthand (read, write, send, all), which is
explained per operation. --from/--to/--cc/--bcc take addresses or whole header
values ('"Shop" <a@b.test>, c@d.test') and may repeat.

A send (mail:send): --from is the envelope sender ("<>" for none); the
recipients are every --to, --cc and --bcc address, --to ones named in the To
header, --cc ones in Cc, --bcc ones in neither. Each recipient is decided on its
own; one refused recipient refuses the whole message.

Anything else needs --folder; the message fields describe one message in it.

A field left out is unknown: when the answer depends on it, explain says so and
lists the outcomes still possible (the proxies deny what stays undecided).

Options:
  -c, --config FILE   the config file (default: $MAILGATOR_CONFIG, else
                      ./mailgator.toml, else /etc/mailgator/mailgator.toml)
      --op OP         operation or shorthand (required)
      --folder F      folder, "/"-separated (IMAP operations)
      --agent NAME    agent name (vault mode: configs with [[agents]]); in
                      pass-through mode, the upstream login whose quota
                      use to show (docs/quotas.md)
      --json          one JSON object per operation
  -h, --help          this help`;

/** The addresses of every value of a repeated flag, each parsed as an RFC 5322 address list. */
function addresses(values: string[] | undefined, flag: string): string[] | undefined {
  if (values === undefined) return undefined;
  const out: string[] = [];
  for (const v of values) {
    const parsed = parseAddressList(v);
    if (!parsed.ok || parsed.addresses.length === 0)
      throw new UsageError(`${flag}: not an address: ${JSON.stringify(v)}`, usage);
    out.push(...parsed.addresses);
  }
  return out;
}

/**
 * Envelope mailboxes of a send. Each value may be a header value (`"Name" <a@b>`, as for reads); each address in it
 * must also be one the SMTP proxy accepts in MAIL FROM / RCPT TO (`readEnvelopeAddress`): one it refuses as a syntax
 * error is a usage error here, never a guess.
 */
function envelopeAddresses(values: string[] | undefined, flag: string): string[] | undefined {
  return addresses(values, flag)?.map((address) => {
    const read = readEnvelopeAddress(address);
    if (!read.ok)
      throw new UsageError(`${flag}: the SMTP proxy refuses ${JSON.stringify(address)}: ${read.problem}`, usage);
    return read.key;
  });
}

/** The envelope sender of a send: one address, `<>` for the null sender, undefined when not given. */
function envelopeSender(values: string[] | undefined): string | undefined {
  if (values === undefined) return undefined;
  if (values.length === 1 && values[0]!.trim() === "<>") return "";
  const list = envelopeAddresses(values, "--from")!;
  if (list.length !== 1) throw new UsageError("--from: a send has one envelope sender", usage);
  return list[0]!;
}

interface Answer {
  readonly text: string[];
  readonly json: Record<string, unknown>;
}

export function explain(ctx: CommandContext): number {
  const { values } = parse(
    ctx.argv,
    {
      config: { type: "string", short: "c" },
      op: { type: "string" },
      folder: { type: "string" },
      from: { type: "string", multiple: true },
      to: { type: "string", multiple: true },
      cc: { type: "string", multiple: true },
      bcc: { type: "string", multiple: true },
      subject: { type: "string" },
      attachment: { type: "boolean" },
      agent: { type: "string" },
      json: { type: "boolean" },
    },
    usage,
  );
  if (values.help) return (ctx.out(usage), EXIT_OK);
  const file = configOf(ctx, values.config);
  const opName = required(values.op, "--op", usage);
  const ops = expandOperation(opName);
  if (!ops) throw new UsageError(`--op: unknown operation ${JSON.stringify(opName)}`, usage);
  if (ops.some((op) => op !== "mail:send") && values.folder === undefined)
    throw new UsageError(`--folder is required for ${ops.filter((op) => op !== "mail:send").join(", ")}`, usage);
  const config = loadConfig(file, { env: ctx.env });
  // Pass-through mode has no agents: --agent names an upstream login, which only quotas count by (docs/quotas.md).
  const agent = config.agents.length === 0 ? null : (values.agent ?? null);
  const whoIsCounted = quotaSubject(agent, agent === null ? (values.agent ?? null) : null);
  if (agent !== null && !config.agents.some((a) => a.name === agent)) {
    throw new UsageError(`--agent: no agent named ${JSON.stringify(agent)} in the config`, usage);
  }
  const policy = compilePolicy(config.rules);
  // Read as the IMAP proxy reads a folder name whose levels are `/`-separated (docs/config.md "Globs"); one it
  // refuses outright does not exist for any agent, whatever the rules say.
  const folders = new FolderNames("/");
  if (values.folder !== undefined && folders.invalid(values.folder)) {
    throw new UsageError(
      `--folder ${JSON.stringify(values.folder)}: no agent can see a folder so named (an empty, "." or ".." level, ` +
        `a leading # or ~, or a control, line-separator, bidirectional-override or U+FFFD character)`,
      usage,
    );
  }
  const to = addresses(strings(values.to), "--to");
  const cc = addresses(strings(values.cc), "--cc");
  const bcc = addresses(strings(values.bcc), "--bcc");
  // Read as the proxies read a Subject (docs/filtering.md "Deciding a message"): white space at its ends dropped,
  // encoded words decoded, invisible characters removed, NFC; one they could not read is unknown, as if not given.
  const subject = values.subject === undefined ? undefined : readSubject(values.subject);
  const hasAttachment = values.attachment;
  const agents = config.agents.map((a) => a.name);
  const note =
    agent === null && agents.length > 0
      ? `this config has agents (${agents.join(", ")}) and no --agent was given: the answer is for "no agent", ` +
        `which rules limited to agents never match; every connection to the proxies is an agent, so give --agent NAME`
      : null;

  const out: string[] = [];
  // Names come from the config (a rule edit through `mcp --admin`, docs/mcp.md): no control reaches the terminal.
  if (note !== null && !values.json) out.push(escapes(`note: ${note}`));
  const quotas = quotasNow(config, whoIsCounted);
  for (const operation of ops as readonly Operation[]) {
    let answer: Answer;
    if (operation === "mail:send") {
      const recipients = [
        ...(envelopeAddresses(strings(values.to), "--to") ?? []),
        ...(envelopeAddresses(strings(values.cc), "--cc") ?? []),
        ...(envelopeAddresses(strings(values.bcc), "--bcc") ?? []),
      ];
      if (recipients.length === 0) {
        const why = "a send needs at least one recipient (--to, --cc or --bcc)";
        if (ops.length === 1) throw new UsageError(why, usage);
        out.push(
          values.json ? terminalJson({ operation, action: "not-explained", reason: why }) : `${operation}: ${why}`,
        );
        continue;
      }
      const sender = envelopeSender(strings(values.from));
      const facts = { to: to ?? [], cc: cc ?? [], subject, hasAttachment };
      answer = explainSend(config, policy, agent, sender, recipients, facts);
    } else {
      const facts: MessageFacts = {
        from: addresses(strings(values.from), "--from"),
        to,
        cc,
        bcc,
        subject,
        hasAttachment,
      };
      answer = explainImap(decideImap(policy, operation, folders.toPolicy(values.folder!), agent, facts));
    }
    // Sends and reads are what quotas count (docs/quotas.md "Seeing the use").
    const counted = operation === "mail:send" || operation === "mail:read" ? quotas : null;
    if (values.json) out.push(terminalJson({ ...answer.json, agent, agents, note, ...(counted ? { quotas } : {}) }));
    else out.push(...[...answer.text, ...(counted ? quotaLines(counted) : [])].map(escapes));
  }
  ctx.out(out.join("\n"));
  return EXIT_OK;
}

// ---- IMAP ----------------------------------------------------------------------------------------------------

/**
 * The quotas that apply to `subject` and their use now (null without [[quotas]]), read-only from the state
 * database.
 */
function quotasNow(config: Config, subject: QuotaSubject): QuotaUse[] | null {
  if (config.quotas.length === 0) return null; // nothing said when the config has no [[quotas]]
  const db = openStateDatabaseReadOnly(config.state.path);
  try {
    return quotaUse(db, config.quotas, subject);
  } finally {
    db?.close();
  }
}

function quotaLines(quotas: readonly QuotaUse[]): string[] {
  if (quotas.length === 0) return ["  quotas: none applies"];
  return quotas.map((q) => {
    const who = q.agents === null ? "every client" : q.agents.join(", ");
    const limits = q.limits.map((l) =>
      l.used === null ? `${l.limit} ${l.max}` : `${l.limit} ${l.used}/${l.max} used`,
    );
    return `  quota "${q.quota}" (${who}): ${limits.join(", ")}`;
  });
}

function explainImap(v: ImapVerdict): Answer {
  const head = `${v.operation} in ${terminalJson(v.folder)}`;
  const json: Record<string, unknown> = {
    operation: v.operation,
    folder: v.folder,
    visible: v.visible,
    filtered: v.filtered,
    steps: v.steps.map((s) => ({ operation: s.operation, ...decisionJson(s.decision) })),
    message: v.message === null ? null : outcomeJson(v.message),
    subtree:
      v.subtree === null
        ? null
        : {
            visible: v.subtree.visible,
            mailDelete: decisionJson(v.subtree.mailDelete),
            mailRead: decisionJson(v.subtree.mailRead),
            mailMove: decisionJson(v.subtree.mailMove),
            filtered: v.subtree.filtered,
          },
  };
  if (v.action === "undecided") {
    const m = v.message as Extract<Outcome, { decided: false }>;
    const needs = [...m.needs];
    return {
      text: [
        `${head}: depends on ${needs.join(", ")} (possible: ${[...m.possible].join(", ")}); ` +
          `give them to decide, otherwise the message is hidden`,
        "  the folder is filtered: the agent sees only the messages the rules let it read",
      ],
      json: { ...json, action: "undecided", needs, possible: [...m.possible] },
    };
  }
  const d = v.decision!;
  let why = "";
  if (!v.visible) why = ": the folder is hidden (it does not exist for the agent)";
  else if (v.message !== null && d.action !== "allow")
    why = ": the message is hidden (it does not exist for the agent)";
  else if (v.message !== null) why = ": the message is visible in this filtered folder";
  else if (v.steps.length === 2 && v.steps[0]!.decision.action !== "allow") why = ": SELECT of the folder is refused";
  const text = [`${head}: ${d.action.toUpperCase()} by ${by(d)}${why}`, `  ${d.reason}`];
  if (v.steps.length === 2 && v.steps[0]!.decision.action === "allow" && v.operation !== "folder:read")
    text.push(`  (SELECT first: ${v.steps[0]!.decision.action.toUpperCase()} by ${by(v.steps[0]!.decision)})`);
  if (v.subtree !== null && d.action === "allow") {
    const below = v.subtree.visible ? "every folder below is visible" : "the rules may hide folders below it";
    const del = v.subtree.mailDelete;
    text.push(
      `  DELETE also needs mail:delete (${del.action.toUpperCase()} by ${by(del)}); DELETE and RENAME also need ` +
        `every folder below to be visible: ${below}`,
    );
    const read = v.subtree.mailRead;
    const move = v.subtree.mailMove;
    text.push(
      `  RENAME moves the messages: it also needs mail:read (${read.action.toUpperCase()} by ${by(read)}) and ` +
        `mail:move (${move.action.toUpperCase()} by ${by(move)}) here, and mail:append at the new name`,
    );
    if (v.subtree.filtered) {
      text.push("  the folder is filtered: DELETE and RENAME are refused (they would take its hidden messages along)");
    }
  }
  return { text, json: { ...json, ...decisionJson(d) } };
}

// ---- send ----------------------------------------------------------------------------------------------------

function explainSend(
  config: Config,
  policy: Policy,
  agent: string | null,
  sender: string | undefined,
  recipients: readonly string[],
  facts: { to: string[]; cc: string[]; subject: string | undefined; hasAttachment: boolean | undefined },
): Answer {
  const identity = senderIdentity(config, agent, sender);
  // The header's From is taken to be the sender: no other author for the rules' `from` conditions.
  const sim = simulateSend(policy, agent, sender, recipients, { ...facts, authors: [] });
  const shown = sender === undefined ? "not given" : sender === "" ? "<>" : `<${sender}>`;
  const senderJson = {
    address: sender ?? null,
    identity: identity.known ? !identity.refused : null,
    refused: identity.refused || sim.senderRefused,
    ...outcomeJson(sim.senderOutcome),
  };
  const recipientsJson = sim.recipients.map((r) => ({
    address: r.recipient,
    class: r.final.class,
    rcpt: identity.refused ? "not-reached" : r.rcpt,
    ...outcomeJson(r.deciding),
    rcptOutcome: outcomeJson(r.rcptOutcome),
    final: outcomeJson(r.final.outcome),
  }));
  const base = { operation: "mail:send", folder: null, sender: senderJson, recipients: recipientsJson };

  let headline: string;
  let json: Record<string, unknown>;
  if (identity.refused) {
    const reason =
      `the sender ${shown} is not one of the identities of account ${terminalJson(identity.account)} ` +
      `(${identity.list}); refused at MAIL FROM, nothing is sent`;
    headline = `mail:send: DENY: ${reason}`;
    json = { ...base, action: "deny", stage: "mail", rule: null, ruleIndex: null, reason };
  } else if (sim.stoppedAt === "mail") {
    const d = (sim.senderOutcome as Extract<Outcome, { decided: true }>).decision;
    const who = sender === undefined ? "every sender is" : `the sender ${shown} is`;
    headline = `mail:send: DENY by ${by(d)}: ${who} refused at MAIL FROM; nothing is sent`;
    json = { ...base, action: "deny", stage: "mail", ...decisionJson(d) };
  } else if (sim.stoppedAt === "held") {
    const held = sim.recipients.filter((r) => r.deciding.decided && r.deciding.decision.action === "ask");
    const first = (held[0]!.deciding as Extract<Outcome, { decided: true }>).decision;
    const whom = held.map((r) => `<${r.recipient}>`).join(", ");
    const groups = [...new Set(held.flatMap((r) => askGroupsOf(config, r.deciding)))];
    headline =
      `mail:send: ASK (held) by ${by(first)} for ${whom}: the whole message is held for approval by ` +
      `${groups.join(", ")}; the agent gets 250 held, nothing is sent until approved (docs/approvals.md)`;
    json = {
      ...base,
      action: "ask",
      stage: "held",
      ...decisionJson(first),
      askGroups: groups,
      reason: `held for approval: asked for ${held.map((r) => r.recipient).join(", ")}`,
    };
  } else if (sim.stoppedAt !== null) {
    const refused = sim.recipients.filter(
      (r) => r.deciding.decided && r.deciding.decision.action !== "allow" && r.deciding.decision.action !== "ask",
    );
    const first = (refused[0]!.deciding as Extract<Outcome, { decided: true }>).decision;
    const whom = refused.map((r) => `<${r.recipient}>`).join(", ");
    const when = sim.stoppedAt === "rcpt" ? "at RCPT TO" : "after DATA";
    headline = `mail:send: DENY by ${by(first)} for ${whom} (${when}): the whole message is refused`;
    json = {
      ...base,
      action: "deny",
      stage: sim.stoppedAt,
      ...decisionJson(first),
      reason: `refused as a whole: not allowed for ${refused.map((r) => r.recipient).join(", ")}`,
    };
  } else if (sim.undecided) {
    const open = sim.recipients.filter((r) => !r.deciding.decided);
    const needs = new Set<string>();
    const possible = new Set<string>();
    for (const r of open) {
      const o = r.deciding as Extract<Outcome, { decided: false }>;
      for (const n of o.needs) needs.add(n);
      for (const p of o.possible) possible.add(p);
    }
    const whom = open.map((r) => `<${r.recipient}>`).join(", ");
    headline =
      `mail:send: depends on ${[...needs].join(", ")} (possible: ${[...possible].join(", ")}) for ${whom}; ` +
      "give them to decide, otherwise denied";
    json = { ...base, action: "undecided", stage: null, needs: [...needs], possible: [...possible] };
  } else {
    headline = "mail:send: ALLOW: every recipient is allowed";
    json = { ...base, action: "allow", stage: null, rule: null, ruleIndex: null, reason: "every recipient allowed" };
  }

  const text = [headline];
  text.push(`  sender ${shown}: ${senderLine(sim, identity.refused)}`);
  for (const r of sim.recipients) {
    const state = identity.refused || r.rcpt === "not-reached" ? "not reached (MAIL FROM refused)" : null;
    text.push(`  ${r.final.class} <${r.recipient}>: ${outcomeWords(r.deciding)}${rcptWords(r, state)}`);
    text.push(`    ${outcomeReason(r.deciding)}`);
  }
  if (!identity.known && sender !== undefined && sender !== "")
    text.push(`  note: the proxy also refuses a sender that is not one of the session's identities (${identity.list})`);
  return { text, json };
}

/** The `ask_groups` of the rule that decided `outcome` (ask rules always have them: load.ts checks). */
function askGroupsOf(config: Config, outcome: Outcome): readonly string[] {
  if (!outcome.decided || outcome.decision.ruleIndex === null) return [];
  return config.rules[outcome.decision.ruleIndex]?.askGroups ?? [];
}

function senderLine(sim: SimulatedSend, identityRefused: boolean): string {
  if (identityRefused) return "not one of the account's identities: refused at MAIL FROM (553)";
  const o = sim.senderOutcome;
  if (sim.senderRefused && o.decided) return `refused at MAIL FROM (553): ${o.decision.reason}`;
  if (o.decided) return `accepted at MAIL FROM: ${o.decision.reason}`;
  return `accepted at MAIL FROM: decided with each recipient (depends on ${[...o.needs].join(", ")})`;
}

function rcptWords(r: SimulatedSend["recipients"][number], notReached: string | null): string {
  if (notReached !== null) return `; ${notReached}`;
  if (r.rcpt === "refused") return "; refused at RCPT TO (550)";
  if (r.deciding.decided && r.deciding.decision.action === "ask") return "; accepted at RCPT TO, held after DATA";
  if (r.deciding.decided && r.deciding.decision.action !== "allow") return "; accepted at RCPT TO, refused after DATA";
  return "";
}

/**
 * Whether the sender passes the proxy's identity check (docs/smtp.md): known only in vault mode with --agent (the
 * account's login and identities); in pass-through mode it depends on the login, which a config does not name.
 */
function senderIdentity(
  config: Config,
  agent: string | null,
  sender: string | undefined,
): { known: boolean; refused: boolean; account: string | null; list: string } {
  const found = agent === null ? undefined : config.agents.find((a) => a.name === agent);
  const account = found === undefined ? undefined : ownEntry(config.accounts, found.account);
  if (account === undefined) {
    // Vault mode without --agent: the agent's account decides; pass-through: the login and [smtp] identities.
    const configured = config.agents.length > 0 ? [] : (config.smtp?.identities ?? []);
    const first =
      config.agents.length > 0 ? "the agent's account: its login address and identities" : "the login address";
    const listed = sender !== undefined && configured.some((a) => a.toLowerCase() === sender);
    return { known: listed, refused: false, account: null, list: [first, ...configured].join(", ") };
  }
  const identities = sessionIdentities(account.username, account.identities);
  const list = [...identities].join(", ") || "none";
  const refused = sender !== undefined && senderNotIdentity(identities, sender);
  return { known: sender !== undefined, refused, account: account.name, list };
}

// ---- shared --------------------------------------------------------------------------------------------------

function by(d: Decision): string {
  return d.ruleIndex === null ? "no rule (default deny)" : `rule ${d.ruleIndex + 1} ${terminalJson(d.rule)}`;
}

function outcomeWords(o: Outcome): string {
  if (o.decided) return `${o.decision.action.toUpperCase()} by ${by(o.decision)}`;
  return `depends on ${[...o.needs].join(", ")} (possible: ${[...o.possible].join(", ")})`;
}

function outcomeReason(o: Outcome): string {
  return o.decided
    ? o.decision.reason
    : "give the fields it depends on to decide; the proxy denies what stays undecided";
}

function decisionJson(d: Decision): Record<string, unknown> {
  return { action: d.action, rule: d.rule, ruleIndex: d.ruleIndex, reason: d.reason };
}

function outcomeJson(o: Outcome): Record<string, unknown> {
  if (o.decided) return decisionJson(o.decision);
  return { action: "undecided", rule: null, ruleIndex: null, needs: [...o.needs], possible: [...o.possible] };
}
