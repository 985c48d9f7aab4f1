/** `mailgator mcp --admin [-c FILE] [--allow-config-writes]`: an MCP server on stdio (docs/mcp.md). */

import { findConfig } from "../../config/index.ts";
import { type CommandContext, EXIT_OK, parse, UsageError } from "../args.ts";

export const usage = `Usage: mailgator mcp --admin [-c FILE] [--allow-config-writes]

Runs an MCP server on stdin/stdout. --admin: the owner's tools (config,
rules, simulate, audit, approvals); with --allow-config-writes also the
tools that edit the rules, then reload the running mailgator. See
docs/mcp.md.

Options:
  -c, --config FILE          the config file (default: $MAILGATOR_CONFIG, else
                             ./mailgator.toml, else /etc/mailgator/mailgator.toml)
      --admin                the owner's tools
      --allow-config-writes  also list the tools that edit the rules
  -h, --help                 this help`;

export async function mcp(ctx: CommandContext): Promise<number> {
  const { values } = parse(
    ctx.argv,
    {
      config: { type: "string", short: "c" },
      admin: { type: "boolean" },
      agent: { type: "string" },
      "allow-config-writes": { type: "boolean" },
    },
    usage,
  );
  if (values.help) return (ctx.out(usage), EXIT_OK);
  if (values.agent !== undefined) throw new UsageError("--agent: not built", usage);
  if (!values.admin) throw new UsageError("give --admin", usage);
  const configPath = findConfig(values.config, ctx.env);
  const { runAdminMcp } = await import("../../mcp/admin.ts");
  return runAdminMcp({ configPath, allowConfigWrites: values["allow-config-writes"] === true });
}
