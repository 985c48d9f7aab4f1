/** `mailgator explain`: the config simulator — which rule decides a request, and why. */

import { loadConfig } from "../../config/index.ts";
import { compilePolicy, expandOperation, type Operation, parseAddressList, type Request } from "../../policy/index.ts";
import { type CommandContext, EXIT_OK, parse, required, strings, UsageError } from "../args.ts";

export const usage = `Usage: mailgator explain -c FILE --op OP [--folder F] [--from A] [--to A] [--cc A]
                        [--bcc A] [--subject S] [--[no-]attachment] [--agent NAME] [--json]

Shows which rule decides an operation and why. OP is an operation (folder:read,
folder:write, mail:read, mail:flag, mail:delete, mail:move, mail:append,
mail:send) or a shorthand (read, write, send, all), which is explained per
operation. --from/--to/--cc/--bcc take addresses ("Name <a@b>" is fine) and may
repeat. A field left out is unknown: when the decision depends on it, explain
says so and lists the outcomes still possible (the proxies then look at each
message; a request that stays undecided is denied).

Options:
  -c, --config FILE   the config file
      --op OP         operation or shorthand (required)
      --folder F      folder, "/"-separated (IMAP operations)
      --agent NAME    agent name (vault mode)
      --json          one JSON object per operation
  -h, --help          this help`;

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
  const file = required(values.config, "--config", usage);
  const opName = required(values.op, "--op", usage);
  const ops = expandOperation(opName);
  if (!ops) throw new UsageError(`--op: unknown operation ${JSON.stringify(opName)}`, usage);
  const config = loadConfig(file, { env: ctx.env });
  const agent = values.agent ?? null;
  if (agent !== null && !config.agents.some((a) => a.name === agent)) {
    throw new UsageError(`--agent: no agent named ${JSON.stringify(agent)} in the config`, usage);
  }
  const policy = compilePolicy(config.rules);
  const base = {
    agent,
    from: addresses(strings(values.from), "--from"),
    to: addresses(strings(values.to), "--to"),
    cc: addresses(strings(values.cc), "--cc"),
    bcc: addresses(strings(values.bcc), "--bcc"),
    subject: values.subject,
    hasAttachment: values.attachment,
  };
  const lines: string[] = [];
  for (const operation of ops as readonly Operation[]) {
    const folder = operation === "mail:send" ? null : (values.folder ?? undefined);
    const req: Request = { operation, folder, ...base };
    const outcome = policy.evaluatePartial(req);
    if (values.json) {
      lines.push(
        JSON.stringify(
          outcome.decided
            ? { operation, folder: folder ?? null, ...outcome.decision }
            : {
                operation,
                folder: folder ?? null,
                action: "undecided",
                needs: [...outcome.needs],
                possible: [...outcome.possible],
              },
        ),
      );
      continue;
    }
    const where = folder ? ` in ${JSON.stringify(folder)}` : "";
    if (outcome.decided) {
      const d = outcome.decision;
      const by =
        d.ruleIndex === null ? "no rule matched: default deny" : `rule ${d.ruleIndex + 1} ${JSON.stringify(d.rule)}`;
      lines.push(`${operation}${where}: ${d.action.toUpperCase()} by ${by}`, `  ${d.reason}`);
    } else if (operation === "folder:read" && (outcome.possible.has("allow") || outcome.possible.has("ask"))) {
      // A folder is listed and selectable when some message in it may be read (docs/config.md "Operations").
      lines.push(
        `${operation}${where}: ALLOW: the folder is visible; which messages are depends on ${[...outcome.needs].join(", ")}`,
      );
    } else {
      lines.push(
        `${operation}${where}: depends on ${[...outcome.needs].join(", ")} (possible: ${[...outcome.possible].join(", ")}); give them to decide, otherwise denied`,
      );
    }
  }
  ctx.out(lines.join("\n"));
  return EXIT_OK;
}
