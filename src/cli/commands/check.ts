/** `mailgator check -c FILE`: validate a config, list its rules in order, warn about shadowed rules. */

import { findConfig, loadConfig, type RuleConfig } from "../../config/index.ts";
import { escapes, terminalJson } from "../../mail/index.ts";
import { compilePolicy } from "../../policy/index.ts";
import { type CommandContext, EXIT_FAILURE, EXIT_OK, parse } from "../args.ts";
import { checkConnections } from "./connect.ts";

export const usage = `Usage: mailgator check [-c FILE]

Validates the config and lists the rules in the order they are evaluated.
Exits 0 when the config is valid, 2 when it is not. With --connect, also
tries each upstream (TCP, TLS as configured, and a login per vault account)
and exits 1 when any step fails.

Options:
  -c, --config FILE   the config file (default: $MAILGATOR_CONFIG, else
                      ./mailgator.toml, else /etc/mailgator/mailgator.toml)
      --connect       also try each upstream server
  -h, --help          this help`;

function conditions(rule: RuleConfig): string {
  const parts: string[] = [];
  const add = (label: string, v: readonly string[] | undefined) =>
    v && parts.push(`${label} ${v.map((x) => terminalJson(x)).join(" | ")}`);
  add("folders", rule.folders);
  add("from", rule.from);
  add("to", rule.to);
  add("cc", rule.cc);
  add("bcc", rule.bcc);
  add("subject", rule.subject);
  if (rule.hasAttachment !== undefined) parts.push(`has_attachment ${rule.hasAttachment}`);
  add("agents", rule.agents);
  return parts.length ? parts.join("; ") : "every request";
}

export async function check(ctx: CommandContext): Promise<number> {
  const { values } = parse(ctx.argv, { config: { type: "string", short: "c" }, connect: { type: "boolean" } }, usage);
  if (values.help) return (ctx.out(usage), EXIT_OK);
  const config = loadConfig(findConfig(values.config, ctx.env), { env: ctx.env });
  const policy = compilePolicy(config.rules);
  const lines: string[] = [`${escapes(config.file)}: valid (revision ${config.revision})`];
  const listener = (name: string, l: typeof config.imap) => {
    if (!l) return;
    lines.push(
      `[${name}] listen ${l.listenAddr.host}:${l.listenAddr.port} ` +
        `(${l.listenTls === "none" ? "plain" : l.listenTls}) → ` +
        `upstream ${l.upstreamAddr.host}:${l.upstreamAddr.port} ` +
        `(${l.upstreamTls}${l.upstreamTlsSkipVerify ? ", NOT verified" : ""})`,
    );
  };
  listener("imap", config.imap);
  listener("smtp", config.smtp);
  lines.push(
    config.agents.length
      ? `mode: vault, ${config.agents.length} agent(s): ${config.agents.map((a) => escapes(a.name)).join(", ")}`
      : "mode: pass-through (agents log in with the upstream credentials)",
  );
  for (const account of Object.values(config.accounts)) {
    // What the proxy logs in upstream with; never a secret (docs/accounts.md).
    const o = account.auth === "oauth2" ? account.oauth2 : null;
    const how = o ? `oauth2 (${o.provider}, ${o.grant}${o.tenant ? `, tenant ${o.tenant}` : ""})` : "password";
    lines.push(`account ${escapes(account.name)}: ${escapes(account.username)}, ${how}`);
  }
  const kept = config.audit.retentionDays ? ` (kept ${config.audit.retentionDays} days)` : "";
  lines.push(`audit log: ${escapes(config.audit.path)}${kept}`);
  lines.push(`rules (first match decides; no match denies):`);
  config.rules.forEach((rule, i) => {
    const ops = rule.operations ? rule.operations.join(", ") : "all operations";
    lines.push(
      `  ${i + 1}. ${rule.action.toUpperCase().padEnd(5)} ${terminalJson(rule.name)}: ` +
        `${ops}; when ${conditions(rule)}`,
    );
  });
  if (config.rules.length === 0) lines.push("  (none: everything is denied)");
  for (const s of policy.shadowed()) {
    lines.push(
      `warning: rule ${s.index + 1} ${terminalJson(s.name)} can never match: ` +
        `rule ${s.byIndex + 1} ${terminalJson(s.by)} has no conditions and already decides all its operations`,
    );
  }
  for (const w of config.warnings) lines.push(`warning: ${escapes(w)}`);
  ctx.out(lines.join("\n"));
  if (!values.connect) return EXIT_OK;
  const report = await checkConnections(config);
  // The lines quote what the upstream wrote (its greeting, a refusal), which with upstream_tls = "starttls" anyone
  // on the path can write before the handshake: its controls are escaped as the audit log's are (docs/install.md
  // "Checking the upstreams").
  ctx.out(report.lines.map(escapes).join("\n"));
  return report.ok ? EXIT_OK : EXIT_FAILURE;
}
