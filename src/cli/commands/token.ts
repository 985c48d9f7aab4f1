/** `mailgator token new NAME`: a fresh agent token, printed once, and the config lines that go with it. */

import { generateToken, hashToken } from "../../vault/token.ts";
import { type CommandContext, EXIT_OK, parse, UsageError } from "../args.ts";

export const usage = `Usage: mailgator token new NAME

Prints a new random token for the agent NAME, once, and the [[agents]] entry
to paste into the config. Only the hash is kept in the config: store the token
where the agent reads its IMAP/SMTP password, and nowhere else.`;

export function token(ctx: CommandContext): number {
  const { values, positionals } = parse(ctx.argv, {}, usage, true);
  if (values.help) return (ctx.out(usage), EXIT_OK);
  const [verb, name, ...rest] = positionals;
  if (verb !== "new" || !name || rest.length) throw new UsageError("expected: token new NAME", usage);
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(name))
    throw new UsageError(`agent name ${JSON.stringify(name)}: use 1-64 letters, digits, ".", "_" or "-"`, usage);
  const secret = generateToken();
  ctx.out(
    [
      `token for agent ${JSON.stringify(name)} (shown once; the agent logs in as "${name}" with it as the password):`,
      ``,
      `  ${secret}`,
      ``,
      `config entry:`,
      ``,
      `[[agents]]`,
      `name = ${JSON.stringify(name)}`,
      `token_hash = "${hashToken(secret)}"`,
      `account = "main"   # the [accounts.main] whose credentials Mailgator uses upstream`,
    ].join("\n"),
  );
  return EXIT_OK;
}
