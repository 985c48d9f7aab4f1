/** `mailgator config init`: a commented starter config on stdout (or into a new file). */

import { writeFileSync } from "node:fs";
import { type CommandContext, EXIT_OK, parse, UsageError } from "../args.ts";

export const usage = `Usage: mailgator config init [--output FILE]

Prints a commented starter config, or writes it to FILE (never overwriting).`;

export const STARTER_CONFIG = `# Mailgator configuration. Agents connect to Mailgator instead of the mail
# server; every IMAP and SMTP operation is checked against [[rules]] below.
# Check it with:   mailgator check -c mailgator.toml
# Try a request:   mailgator explain -c mailgator.toml --op read --folder INBOX --from a@b.test

[imap]
listen_addr = "127.0.0.1:1993"           # where agents connect (plain: keep it on loopback)
upstream_addr = "imap.example.com:993"   # 993 = implicit TLS, 143 = STARTTLS
# upstream_ca_file = "ca.pem"            # extra CA for a self-hosted server
# listen_tls = "tls"                     # "tls" | "starttls" | "none" (default)
# tls_cert_file = "cert.pem"
# tls_key_file = "key.pem"

[smtp]
listen_addr = "127.0.0.1:1587"
upstream_addr = "smtp.example.com:587"   # 465 = implicit TLS, 587 = STARTTLS
# MAIL FROM must be the login or one of these (pass-through mode; in vault
# mode, give identities in [accounts.NAME]):
# identities = ["sales@example.com"]

[audit]
# path = "mailgator-audit.db"            # default: beside this file
retention_days = 90

# Connection limits and timeouts per listener ([limits.imap] and
# [limits.smtp] override [limits]); the defaults are:
# [limits]
# max_sessions_per_agent = 10            # per agent, or per login
# login_timeout = 180                    # seconds to log in
# [limits.imap]                          # [limits.smtp]: 100, 50, 300
# max_connections = 256
# max_connections_per_ip = 128           # half: one address never takes all
# idle_timeout = 1800
# idle_command_timeout = 3600            # longest IDLE

# Vault mode: agents log in with their own name and a token from
# \`mailgator token new NAME\`; Mailgator logs in upstream with the account's
# credentials, which the agent never sees. Without [[agents]], clients log in
# with the upstream credentials themselves (pass-through).
#
# [accounts.main]
# username = "me@example.com"
# password_env = "MAIL_PASSWORD"         # or password_file = "secret.txt"
# identities = ["sales@example.com"]     # MAIL FROM besides username
#
# [[agents]]
# name = "assistant"
# token_hash = "sha256:..."
# account = "main"
# allowed_ips = ["127.0.0.1"]

# Rules: the first matching rule decides; no match denies.
# Operations: folder:read folder:write mail:read mail:flag mail:delete
# mail:move mail:append mail:send, or read / write / send / all.

[[rules]]
name = "Read notifications in the inbox"
folders = ["INBOX"]
from = "notifications@*"
operations = ["read"]
action = "allow"

[[rules]]
name = "Send to colleagues"
to = "*@example.com"
operations = ["send"]
action = "allow"

[[rules]]
name = "Deny everything else"
action = "deny"

# Quotas (docs/quotas.md): sliding windows kept in the state database, so a
# restart does not reset them. Well under the providers' own ceilings (Gmail:
# 500 recipients a day, 2,000 on Workspace, and a sender blocked for up to a
# day past them, the human included; Microsoft 365: 10,000 recipients a day,
# 30 messages a minute). Over a limit: SMTP 452 4.7.1, IMAP NO [LIMIT].
[[quotas]]
name = "Default"
sends_per_hour = 50
sends_per_day = 200
recipients_per_day = 200
recipients_per_message = 20
bytes_per_day = 100_000_000
reads_per_minute = 120
`;

export function init(ctx: CommandContext): number {
  const { values, positionals } = parse(ctx.argv, { output: { type: "string", short: "o" } }, usage, true);
  if (values.help) return (ctx.out(usage), EXIT_OK);
  if (positionals[0] !== "init" || positionals.length > 1)
    throw new UsageError("expected: config init [--output FILE]", usage);
  if (values.output === undefined) {
    ctx.out(STARTER_CONFIG.trimEnd());
    return EXIT_OK;
  }
  // "wx": created here or not at all (O_CREAT|O_EXCL), so neither an existing file nor a symbolic link, dangling or
  // not, is written through.
  try {
    writeFileSync(values.output, STARTER_CONFIG, { mode: 0o600, flag: "wx" });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "EEXIST") throw new UsageError(`${values.output} exists; not overwriting it`, usage);
    throw new UsageError(`cannot write ${values.output} (${code ?? (e as Error).message})`, usage);
  }
  ctx.out(`wrote ${values.output}`);
  return EXIT_OK;
}
