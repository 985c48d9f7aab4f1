/**
 * `mailgator mcp --agent NAME` / `mailgator mcp --admin`: an MCP server on stdio (docs/mcp.md). Stdout is the
 * protocol channel: nothing else may be written to it once the server runs.
 */

import { findConfig, loadConfig } from "../../config/index.ts";
import { escapes } from "../../mail/index.ts";
import { runAgentMcp } from "../../mcp/agent.ts";
import { readSecretFile } from "../../runtime/secret-file.ts";
import { type CommandContext, EXIT_OK, parse, UsageError } from "../args.ts";

export const usage = `Usage: mailgator mcp --agent NAME [-c FILE]
       mailgator mcp --admin [-c FILE] [--allow-config-writes]

An MCP server on stdio (docs/mcp.md).

--agent NAME: mail tools for one agent. They reach mail only through the
running Mailgator's IMAP and SMTP listeners, logged in as the agent, so the
rules and the audit log apply to every call; tools the rules never allow this
agent are not listed. Vault mode: NAME is the [[agents]] name, its token comes
from $MAILGATOR_TOKEN or --token-file. Pass-through mode: NAME is the upstream
login name, its password comes from $MAILGATOR_PASSWORD or --password-file.
The config is read for the listeners and the rules only; account secrets are
never read.

--admin: the owner's tools for the config, rules, audit log and approvals.

Options:
  -c, --config FILE          the config file (default: $MAILGATOR_CONFIG, else
                             ./mailgator.toml, else /etc/mailgator/mailgator.toml)
      --agent NAME           serve the agent tools for NAME
      --token-file FILE      vault mode: the agent's token (first line)
      --password-file FILE   pass-through mode: the login's password (first line)
      --ca-file FILE         CA certificates (PEM) to trust for TLS listeners,
                             besides the system's and the listener's own
      --admin                serve the admin tools
      --allow-config-writes  admin: also the tools that edit the rules
  -h, --help                 this help`;

/** The environment variable holding the agent's token (vault mode). */
export const TOKEN_ENV = "MAILGATOR_TOKEN";
/** The environment variable holding the upstream password (pass-through mode). */
export const PASSWORD_ENV = "MAILGATOR_PASSWORD";

/**
 * The first line of a token or password file, read as the config's secret files are (readSecretFile: regular, at
 * most SECRET_FILE_MAX_BYTES, readable by its owner alone; docs/mcp.md "Client configuration").
 */
function firstLine(file: string, flag: string): string {
  const text = readSecretFile(file);
  if (typeof text !== "string") throw new UsageError(`${flag}: ${text.problem}`);
  return text.split(/\r?\n/)[0] ?? "";
}

export async function mcp(ctx: CommandContext): Promise<number> {
  const { values } = parse(
    ctx.argv,
    {
      config: { type: "string", short: "c" },
      agent: { type: "string" },
      admin: { type: "boolean" },
      "allow-config-writes": { type: "boolean" },
      "token-file": { type: "string" },
      "password-file": { type: "string" },
      "ca-file": { type: "string" },
    },
    usage,
  );
  if (values.help) return (ctx.out(usage), EXIT_OK);
  const agent = values.agent;
  if ((agent !== undefined) === (values.admin === true))
    throw new UsageError("give exactly one of --agent NAME and --admin", usage);
  if (values.admin === true) {
    if (values["token-file"] !== undefined || values["password-file"] !== undefined || values["ca-file"] !== undefined)
      throw new UsageError("--token-file, --password-file and --ca-file go with --agent", usage);
    // Imported on demand: the admin tools pull in the explain, audit and approvals commands.
    const { runAdminMcp } = await import("../../mcp/admin.ts");
    return runAdminMcp({
      config: findConfig(values.config, ctx.env),
      allowConfigWrites: values["allow-config-writes"] === true,
    });
  }
  if (values["allow-config-writes"] === true) throw new UsageError("--allow-config-writes goes with --admin", usage);
  if (agent === undefined || agent === "") throw new UsageError("--agent needs a NAME", usage);
  // The MCP process logs in to the proxy as the agent; the upstream credentials stay with `serve`.
  const config = loadConfig(findConfig(values.config, ctx.env), { skipSecrets: true });
  const vault = config.agents.length > 0;
  let secret: string | undefined;
  if (vault) {
    if (!config.agents.some((a) => a.name === agent))
      throw new UsageError(
        `--agent ${JSON.stringify(agent)}: no such [[agents]] entry in ${escapes(config.file)}`,
        usage,
      );
    if (values["password-file"] !== undefined)
      throw new UsageError("vault mode: the agent logs in with its token (--token-file or $MAILGATOR_TOKEN)", usage);
    secret = values["token-file"] !== undefined ? firstLine(values["token-file"], "--token-file") : ctx.env[TOKEN_ENV];
    if (!secret) throw new UsageError(`vault mode: give the agent's token in $${TOKEN_ENV} or --token-file`, usage);
  } else {
    if (values["token-file"] !== undefined)
      throw new UsageError(
        "pass-through mode: there are no tokens; give --password-file or $MAILGATOR_PASSWORD",
        usage,
      );
    secret =
      values["password-file"] !== undefined
        ? firstLine(values["password-file"], "--password-file")
        : ctx.env[PASSWORD_ENV];
    if (!secret)
      throw new UsageError(
        `pass-through mode: give the login's password in $${PASSWORD_ENV} or --password-file`,
        usage,
      );
  }
  return runAgentMcp({ config, agent, login: { user: agent, secret, caFile: values["ca-file"] ?? null } });
}
