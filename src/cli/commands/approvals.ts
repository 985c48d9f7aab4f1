/** `mailgator approvals list|show ID|approve ID|deny ID` (docs/approvals.md "Deciding"). */

import { existsSync } from "node:fs";
import { AccountCredentials } from "../../accounts/index.ts";
import { Notifier } from "../../approvals/notify.ts";
import {
  attachmentsShown,
  headerFieldLines,
  MORE_TEXT,
  otherFieldLines,
  quotedTextLines,
  subjectShown,
} from "../../approvals/preview.ts";
import { type ApprovalContext, approve, deny } from "../../approvals/service.ts";
import { type ApprovalRow, ApprovalStore, ID_PATTERN } from "../../approvals/store.ts";
import { AuditLog } from "../../audit/index.ts";
import { loadConfig } from "../../config/index.ts";
import { moduleLogger } from "../../log.ts";
import { clean, escapes, terminalJson } from "../../mail/index.ts";
import { SealedStore } from "../../state/store.ts";
import { type CommandContext, configOf, EXIT_FAILURE, EXIT_OK, parse, UsageError } from "../args.ts";
import { currentUser } from "../user.ts";

export const usage = `Usage: mailgator approvals list [-c FILE] [--json]
       mailgator approvals show ID [-c FILE] [--json]
       mailgator approvals approve ID [-c FILE] [--json]
       mailgator approvals deny ID [--reason TEXT] [-c FILE] [--json]

Messages an "ask" rule held for approval. Works while serve runs (same state
database). approve sends the stored message upstream exactly as the agent
sent it, once; deny discards it. When the upstream login fails (an OAuth2
account that needs re-authorization, an upstream that cannot be reached),
nothing is sent and the message stays held. A message in state "needs-check"
was being sent when a process stopped: it may have been delivered, so it is
never sent again; look at the recipient's mailbox, then deny it to discard it.
While the audit log cannot be written, nothing is approved or denied: the
message stays as it was, and the command says so.

Options:
  -c, --config FILE   the config file (default: $MAILGATOR_CONFIG, else
                      ./mailgator.toml, else /etc/mailgator/mailgator.toml)
      --reason TEXT   why it was denied (recorded in the audit log)
      --json          JSON output
  -h, --help          this help`;

function rowJson(row: ApprovalRow): Record<string, unknown> {
  return {
    id: row.id,
    state: row.state,
    rule: row.rule,
    groups: row.groups,
    agent: row.agent,
    created: new Date(row.created).toISOString(),
    expires: new Date(row.expires).toISOString(),
    sha256: row.sha256,
    decidedBy: row.decidedBy,
    reason: row.reason,
    upstreamReply: row.upstreamReply,
    /** Every approver's notice was accepted upstream (docs/approvals.md "Notices"). */
    notified: row.notified,
  };
}

/** `show` of a held message whose sealed record does not open or is gone. */
const UNREADABLE =
  "(its sealed record does not open, or is missing: altered, deleted, or sealed with another key; approve will not " +
  "send it, deny discards it)";

export async function approvals(ctx: CommandContext): Promise<number> {
  const { values, positionals } = parse(
    ctx.argv,
    { config: { type: "string", short: "c" }, reason: { type: "string" }, json: { type: "boolean" } },
    usage,
    true,
  );
  if (values.help) return (ctx.out(usage), EXIT_OK);
  const [verb, id, ...rest] = positionals;
  if (verb === undefined || !["list", "show", "approve", "deny"].includes(verb))
    throw new UsageError("expected list, show ID, approve ID or deny ID", usage);
  if (rest.length > 0) throw new UsageError(`unexpected ${JSON.stringify(rest[0])}`, usage);
  if (verb === "list" ? id !== undefined : id === undefined || !ID_PATTERN.test(id))
    throw new UsageError(verb === "list" ? "list takes no ID" : `${verb} needs an ID (32 hex digits)`, usage);
  if (values.reason !== undefined && verb !== "deny") throw new UsageError("--reason is for deny", usage);
  const config = loadConfig(configOf(ctx, values.config), { env: ctx.env });
  // list and show only read: the database is opened read-only, and one with nothing sealed in it reads as empty.
  const state = SealedStore.open(config.state.path, {
    secretsFile: config.state.secretsFile,
    env: ctx.env,
    create: false,
    readOnly: verb === "list" || verb === "show",
  });
  // With --json, stdout holds JSON only (a script reads it): a note that there is nothing to act on goes to stderr.
  const err = ctx.err ?? ((text: string) => process.stderr.write(`${text}\n`));
  const fail = (text: string) => (values.json ? err(text) : ctx.out(text), EXIT_FAILURE);
  if (state === null) {
    // None at all, or one that other features made before any record was sealed (the quota counters open it
    // without a key, docs/quotas.md): a held message is always a sealed record, so either way none was ever held.
    const where = escapes(config.state.path);
    const none = existsSync(config.state.path)
      ? `nothing was ever held: the state database at ${where} holds no sealed record`
      : `no state database at ${where}: nothing was ever held`;
    if (verb !== "list") return fail(none);
    ctx.out(values.json ? "[]" : none);
    return EXIT_OK;
  }
  try {
    const store = new ApprovalStore(state);
    if (verb === "list") {
      const rows = store.list();
      if (values.json) ctx.out(terminalJson(rows.map(rowJson), 2));
      else if (rows.length === 0) ctx.out("no held messages");
      else
        for (const r of rows)
          ctx.out(`${r.id}  ${r.state.padEnd(11)}  ${clean(r.rule)}  expires ${new Date(r.expires).toISOString()}`);
      return EXIT_OK;
    }
    const row = store.row(id!);
    if (row === null) return fail(`no held message ${id}`);
    if (verb === "show") {
      // A record that does not open (altered, or sealed with another key) still has its row to show; what it held
      // cannot be shown, and the command says so and fails (docs/approvals.md "Deciding").
      const { held, unreadable } = store.readDetails(id!);
      const failed = unreadable !== null;
      if (values.json)
        ctx.out(
          terminalJson({ ...rowJson(row), preview: held?.preview ?? null, ...(failed ? { unreadable: true } : {}) }, 2),
        );
      else {
        ctx.out(`${row.id}: ${row.state} (rule ${clean(row.rule)}; asks ${row.groups.map(clean).join(", ")})`);
        if (failed) return (ctx.out(UNREADABLE), EXIT_FAILURE);
        // The preview is the agent's text: shown through clean(), so that no control sequence in it reaches the
        // approver's terminal (docs/approvals.md "What approvers see").
        ctx.out(`approvers notified: ${row.notified ? "all" : "not all yet"}`);
        if (held !== null) {
          const p = held.preview;
          ctx.out(`from: ${clean(p.sender)}`);
          for (const r of p.recipients)
            ctx.out(`to: ${clean(r.address)}${r.external ? "  (outside the sender's domain)" : ""}`);
          // The header's names too: the recipient reads `"CEO" <bot@corp.test>`, not only the envelope.
          for (const line of headerFieldLines(p, clean)) ctx.out(`header ${line}`);
          // And every other field, which goes out too, whether or not a client shows it.
          for (const line of otherFieldLines(p, clean)) ctx.out(`also header ${line}`);
          ctx.out(`subject: ${subjectShown(p, clean)}`);
          ctx.out(`size: ${p.size} octets; attachments: ${attachmentsShown(p, clean)}`);
          // The agent's text, each line after `| `, so that none passes for a line of this summary.
          for (const line of quotedTextLines(p, clean)) ctx.out(line);
          if (p.textCut === true) ctx.out(MORE_TEXT);
        } else ctx.out("(the message was discarded or sent: nothing is kept)");
      }
      return failed ? EXIT_FAILURE : EXIT_OK;
    }
    const audit = AuditLog.open(config.audit.path);
    // An OAuth2 account's token comes from the same sealed store and follows the same refresh and rotation rules
    // as in serve (docs/accounts.md "Staying logged in"); a refresh still running is waited for before the process
    // ends, so that a rotated refresh token is stored.
    const credentials = new AccountCredentials({
      config,
      store: state,
      audit: (event) => audit.record(event),
      log: moduleLogger("accounts"),
    });
    const base: ApprovalContext = { config, store, audit, protocol: "cli", credentials };
    // The sender's result notice (notify_sender): one attempt, before the command ends (docs/approvals.md).
    const notices = new Notifier(base, { retryDelaysMs: [], credentials });
    try {
      const actx: ApprovalContext = { ...base, onDecided: (row, held) => notices.decided(row, held) };
      const by = `cli:${currentUser()}`;
      if (verb === "approve") {
        const result = await approve(actx, id!, by);
        // The reply and the reason carry the upstream server's text: shown through clean() as the preview is.
        if (values.json) ctx.out(terminalJson({ id, ...result }));
        else if (result.outcome === "refused")
          ctx.out(`${id}: not sent: it is ${result.state}${result.state === "needs-check" ? " (see --help)" : ""}`);
        else if (result.outcome === "not-sent") ctx.out(`${id}: not sent, still held: ${clean(result.reason)}`);
        else if (result.outcome === "needs-check")
          ctx.out(
            `${id}: needs a check, not sent again: ${clean(result.reason)}` +
              (result.recorded ? "" : "; its audit row could not be written, so it stays sending until serve starts"),
          );
        else if (!result.recorded)
          ctx.out(
            `${id}: ${result.outcome}: upstream replied ${clean(result.reply)}; its audit row could not be written, ` +
              "so it stays sending (needs-check at the next start of serve)",
          );
        else ctx.out(`${id}: ${result.outcome}: upstream replied ${clean(result.reply)}`);
        return result.outcome === "sent" && result.recorded ? EXIT_OK : EXIT_FAILURE;
      }
      const result = await deny(actx, id!, by, values.reason ?? null);
      if (values.json) ctx.out(terminalJson({ id, ...result }));
      else if (result.outcome === "denied") ctx.out(`${id}: denied; the message is discarded`);
      else if (result.outcome === "not-denied") ctx.out(`${id}: not denied, nothing changed: ${result.reason}`);
      else ctx.out(`${id}: not denied: it is ${result.state}`);
      return result.outcome === "denied" ? EXIT_OK : EXIT_FAILURE;
    } finally {
      await notices.idle();
      await credentials.settled();
      await audit.close();
    }
  } finally {
    state.close();
  }
}
