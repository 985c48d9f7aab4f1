/**
 * Notices about held messages (docs/approvals.md "Notices"): each approver of each group an `ask` rule names gets an
 * email with the preview and the signed link, and with `[approvals] notify_sender = true` the agent's own sender
 * address gets a short result once the message is sent, refused upstream, denied or expired.
 *
 * Notices go through the upstream SMTP server of `[smtp]` with the same client the replay uses
 * (src/smtp/upstream.ts), logged in as `[approvals] notify_account`, or else as the sending agent's account (vault
 * mode). Pass-through mode never uses the agent's own login for a notice: without notify_account none is sent (the
 * config warns). Notices are sent in the background, after the agent has its reply, and never change a held
 * message's state: a notice that cannot be sent is an audit row and a log line, and the message stays held until
 * someone decides or it expires. Each approver's notice the upstream accepts is recorded in the state database
 * (src/approvals/store.ts); `serve` sends, at start, the notices still owed by messages that are still held.
 *
 * The notice is plain text, base64 in the body; the subject is always RFC 2047 encoded, every control character
 * replaced first, so a subject with CR or LF in it cannot add a header.
 */

import { isAscii } from "node:buffer";
import { randomBytes } from "node:crypto";
import type { AccountCredentials } from "../accounts/index.ts";
import { agentReading, agentSending, ownEntry } from "../config/index.ts";
import type { AccountConfig, Config } from "../config/types.ts";
import { errorMessage, moduleLogger } from "../log.ts";
import { clean } from "../mail/index.ts";
import { settledWithin } from "../runtime/settle.ts";
import { smtpUpstreamTarget } from "../smtp/index.ts";
import { SPOOL_BLOCK } from "../smtp/spool.ts";
import {
  CommitGate,
  EightBitRefused,
  type MessageSource,
  OAuthUnavailable,
  openAccountUpstream,
  SendStopped,
  UpstreamAuthError,
  type UpstreamSession,
} from "../smtp/upstream.ts";
import {
  attachmentsShown,
  headerFieldLines,
  MORE_TEXT,
  otherFieldLines,
  quotedTextLines,
  subjectShown,
  UNREADABLE_SUBJECT,
} from "./preview.ts";
import { type ApprovalContext, approvalEvent } from "./service.ts";
import type { ApprovalRow, HeldDetails, Preview } from "./store.ts";

/** Waits between the attempts of one notice: a notice is tried at most 1 + this many times (about 13 minutes). */
export const NOTICE_RETRY_DELAYS_MS: readonly number[] = [5_000, 30_000, 120_000, 600_000];
/** Notices being sent at once; the others wait their turn. */
export const NOTICE_CONCURRENCY = 4;
/** Notices waiting or being sent; one past this is not sent (an audit row says so). */
export const NOTICE_QUEUE_MAX = 1000;
/** Octets of UTF-8 per RFC 2047 encoded word: 39 make 52 base64 characters, a 64-character word (§2: at most 75). */
const ENCODED_WORD_OCTETS = 39;

/** What the notice text builders need: no secrets, nothing but what the docs say the notices show. */
export interface ApproverNoticeInput {
  readonly id: string;
  readonly rule: string;
  readonly expires: number;
  readonly preview: Preview;
  /** `<base_url>/approvals/<id>?t=<token>`, null when `[approvals] base_url` is not set. */
  readonly link: string | null;
  /** Why there is no link, when it is not the missing base_url (an approver whose mailbox an agent reads). */
  readonly noLink?: string;
}

export type NoticeResult = "sent" | "failed" | "denied" | "expired";

export interface NoticeText {
  readonly subject: string;
  readonly text: string;
}

/** The approver's notice: the preview of docs/approvals.md "What approvers see", the rule, and the link. */
export function approverNotice(input: ApproverNoticeInput): NoticeText {
  const p = input.preview;
  const subject =
    p.subjectUnread !== undefined ? `(subject ${UNREADABLE_SUBJECT})` : clean(p.subject ?? "(no subject)");
  const lines = [
    "A message an agent sent is held for your approval. Nothing was sent yet.",
    "",
    `From:        ${clean(p.sender)}`,
    ...p.recipients.map(
      (r) => `To:          ${clean(r.address)}${r.external ? "  (OUTSIDE the sender's domain)" : ""}`,
    ),
    // What the recipient's mail client shows as sender and recipients, display names included.
    ...headerFieldLines(p, clean).map((l) => `In header:   ${l}`),
    // The other fields go out too, though a client hides most of them.
    ...otherFieldLines(p, clean).map((l) => `Also header: ${l}`),
    `Subject:     ${subjectShown(p, clean)}`,
    `Size:        ${p.size} octets`,
    `Attachments: ${attachmentsShown(p, clean)}`,
    `Rule:        ${clean(input.rule)}`,
    `Held as:     ${input.id}`,
    `Expires:     ${new Date(input.expires).toISOString()}`,
    "",
    // Decoded as on the page, each part under its label (docs/approvals.md "What approvers see").
    "The first lines of the text:",
    "",
    ...quotedTextLines(p, clean),
    ...(p.textCut === true ? [MORE_TEXT] : []),
    "",
  ];
  if (input.link !== null) {
    lines.push(
      "To see it and decide, open this link. Opening it changes nothing; only the Approve and Deny buttons on the",
      "page act, once, for every approver:",
      "",
      input.link,
    );
  } else {
    lines.push(`No link: ${input.noLink ?? "[approvals] base_url is not set."}`);
  }
  lines.push(
    "",
    `Or on the server: mailgator approvals show|approve|deny ${input.id} -c FILE`,
    "",
    "If you did not expect this, do not approve it.",
  );
  return { subject: `Approval needed: ${subject}`, text: lines.join("\n") };
}

/**
 * The notice for approver `to`, sent as account `sentAs`: without the link when `to` is the mailbox of an account a
 * vault agent uses, or when `sentAs` is an account an agent uses, whose Sent folder may file a copy of the notice
 * (many providers file submitted mail there): the link is all it takes to approve, and that agent reads the mailbox
 * (docs/approvals.md "Notices").
 */
export function noticeFor(
  config: Pick<Config, "agents" | "accounts">,
  input: ApproverNoticeInput,
  to: string,
  sentAs: string | null,
): NoticeText {
  if (input.link === null) return approverNotice(input);
  const reader = agentReading(config, to);
  if (reader !== null)
    return approverNotice({
      ...input,
      link: null,
      noLink: `this address is the mailbox of agent ${reader.name}'s account, which that agent can read.`,
    });
  const sender = sentAs === null ? null : agentSending(config, sentAs);
  if (sender === null) return approverNotice(input);
  return approverNotice({
    ...input,
    link: null,
    noLink:
      `this notice is sent as agent ${sender.name}'s account, whose Sent folder may keep a copy that agent can ` +
      "read; [approvals] notify_account should name an account no agent uses.",
  });
}

/** The sender's result notice: the id, the result and the subject, nothing more (docs/approvals.md "Notices"). */
export function senderNotice(id: string, result: NoticeResult, subject: string | null, unread = false): NoticeText {
  const what = {
    sent: "was approved and sent",
    failed: "was approved, but the upstream server refused it: it was not sent",
    denied: "was denied: it was not sent",
    expired: "expired without a decision: it was not sent",
  }[result];
  const s = unread ? UNREADABLE_SUBJECT : subject === null ? "(no subject)" : clean(subject);
  return {
    subject: `Held message ${id} ${result === "sent" ? "sent" : "not sent"}`,
    text: [`Your message ${id} (subject: ${s}), held for approval, ${what}.`, ""].join("\n"),
  };
}

/**
 * A header field body for unstructured text (RFC 5322 §3.2.5), always as RFC 2047 "B" encoded words of UTF-8
 * (§5(1): a Subject may be made of them), folded between words (§2: each at most 75 characters). No CR or LF can
 * come through: `clean` replaced them and base64 has none. Always, not only when the text needs it: one rule with
 * no case to get wrong, and the message's words never appear as they are in the notice's bytes.
 */
export function encodeHeaderText(text: string): string {
  const safe = clean(text);
  if (safe === "") return ""; // an encoded word holds at least one character (§2)
  const words: string[] = [];
  let chunk = "";
  for (const ch of safe) {
    if (Buffer.byteLength(chunk + ch, "utf8") > ENCODED_WORD_OCTETS) {
      words.push(chunk);
      chunk = "";
    }
    chunk += ch;
  }
  if (chunk !== "") words.push(chunk);
  return words.map((w) => `=?UTF-8?B?${Buffer.from(w, "utf8").toString("base64")}?=`).join("\r\n ");
}

/** RFC 5322 §3.3 date-time, in UTC. */
function rfc5322Date(at: number): string {
  return new Date(at).toUTCString().replace(/GMT$/, "+0000");
}

/**
 * The notice as it goes upstream: RFC 5322 header, MIME text/plain in UTF-8 (RFC 2045), base64 in lines of 76
 * characters, CRLF line ends. `from` and `to` are addresses the config validated; `subject` is encoded here.
 */
export function composeNotice(opts: {
  readonly from: string;
  readonly to: string;
  readonly subject: string;
  readonly text: string;
  readonly date?: number;
}): Buffer {
  const domain = opts.from.slice(opts.from.lastIndexOf("@") + 1) || "mailgator.invalid";
  const body = Buffer.from(opts.text.replace(/\r?\n/g, "\r\n"), "utf8").toString("base64");
  const header = [
    `From: Mailgator <${clean(opts.from)}>`,
    `To: <${clean(opts.to)}>`,
    `Subject: ${encodeHeaderText(opts.subject)}`,
    `Date: ${rfc5322Date(opts.date ?? Date.now())}`,
    `Message-ID: <${randomBytes(12).toString("hex")}@${clean(domain)}>`,
    // RFC 3834 §5: sent by a program, so auto-responders do not answer it.
    "Auto-Submitted: auto-generated",
    "MIME-Version: 1.0",
    "Content-Type: text/plain; charset=utf-8",
    "Content-Transfer-Encoding: base64",
  ];
  return Buffer.from(`${header.join("\r\n")}\r\n\r\n${body.replace(/.{1,76}/g, "$&\r\n")}`, "ascii");
}

function source(message: Buffer): MessageSource {
  return {
    length: message.length,
    *blocks() {
      for (let at = 0; at < message.length; at += SPOOL_BLOCK) yield message.subarray(at, at + SPOOL_BLOCK);
    },
  };
}

/** The account notices are sent as: `[approvals] notify_account`, else the held message's own account (vault). */
function noticeAccount(config: Config, held: HeldDetails): AccountConfig {
  const name = config.approvals.notifyAccount ?? held.account;
  if (name === null) throw new PermanentError("no account to send notices as: [approvals] notify_account is not set");
  const account = ownEntry(config.accounts, name);
  if (account === undefined) throw new PermanentError(`account ${JSON.stringify(name)} is no longer configured`);
  return account;
}

/** The address a notice comes from: the account's login when it is an address, else its first identity. */
function fromAddress(account: AccountConfig): string {
  const address = [account.username, ...account.identities].find((a) => a.includes("@"));
  if (address === undefined) throw new PermanentError(`account ${account.name} has no address to send notices from`);
  return address;
}

/** What became of a decided message, for the log line of its sender's notice that was not sent. */
const DECIDED: Partial<Record<ApprovalRow["state"], string>> = {
  sent: "the message was sent",
  failed: "the upstream refused the message after approval",
  denied: "the message was denied",
  expired: "the message expired",
};

class PermanentError extends Error {
  override name = "PermanentError";
}

interface Job {
  readonly row: ApprovalRow;
  readonly command: string;
  readonly to: string;
  readonly what: string;
  readonly account: AccountConfig;
  readonly message: Buffer;
}

export interface NotifierOptions {
  /** The accounts' upstream logins (OAuth2 among them); without it, password accounts only. */
  readonly credentials?: AccountCredentials | undefined;
  /** Waits between attempts; NOTICE_RETRY_DELAYS_MS unless given (the command line tries once). */
  readonly retryDelaysMs?: readonly number[];
  /** Notices pending at most; NOTICE_QUEUE_MAX unless given. */
  readonly queueMax?: number;
}

/**
 * Sends the notices in the background. `held` and `decided` return at once; `idle` waits for what is under way;
 * `close` stops waiting retries (each becomes a failure row) and waits for the attempts in flight, for a while.
 */
export class Notifier {
  readonly #ctx: ApprovalContext;
  readonly #options: NotifierOptions;
  readonly #delays: readonly number[];
  readonly #log = moduleLogger("approvals");
  readonly #running = new Set<Promise<void>>();
  readonly #waiting: (() => void)[] = [];
  readonly #sleeping = new Set<() => void>();
  #active = 0;
  #queued = 0;
  #closed = false;
  /** Aborted when close()'s grace is over: the attempts still in flight lose their upstream connection. */
  readonly #cut = new AbortController();

  constructor(ctx: ApprovalContext, options: NotifierOptions = {}) {
    this.#ctx = ctx;
    this.#options = options;
    this.#delays = options.retryDelaysMs ?? NOTICE_RETRY_DELAYS_MS;
  }

  /**
   * A message was held (the agent has its 250), or `serve` started with it still owing notices: notifies each
   * approver of each group its rule asks whose notice the upstream has not accepted yet (docs/approvals.md
   * "Notices"). Once every approver's notice is accepted the message is marked notified.
   */
  held(row: ApprovalRow): void {
    this.#background(() => {
      const { held, unreadable } = this.#ctx.store.readDetails(row.id);
      const current = this.#ctx.store.row(row.id);
      // Decided or expired already: nothing to ask.
      if ((held === null && unreadable === null) || current?.state !== "held" || current.expires <= Date.now()) return;
      if (held === null) {
        // Its record does not open or is missing (docs/approvals.md "Holding"): no notice can be built. The approvers
        // are not told, so a row and a log line say so, and it stays owed (each start says so again) until someone
        // denies it (`mailgator approvals deny`) or it expires.
        const why = `the held message cannot be read (${errorMessage(unreadable)}); deny it with mailgator approvals`;
        this.#failed(row, "APPROVAL NOTIFIED", `the approvers (groups ${row.groups.join(", ")})`, why);
        return;
      }
      const config = this.#ctx.config;
      const link =
        config.approvals.baseUrl === null
          ? null
          : `${config.approvals.baseUrl}/approvals/${row.id}?t=${this.#ctx.store.token(row)}`;
      if (!this.#hasAccount(row, held)) return;
      const sentAs = config.approvals.notifyAccount ?? held.account;
      const notice = (to: string) =>
        noticeFor(
          config,
          { id: row.id, rule: row.rule, expires: row.expires, preview: held.preview, link },
          to,
          sentAs,
        );
      const { addresses, missing } = this.#approvers(row);
      for (const group of missing)
        this.#failed(row, "APPROVAL NOTIFIED", `group ${group}`, `group ${group} is no longer configured`);
      for (const { to, group } of addresses) {
        if (this.#ctx.store.noticeSent(row.id, to)) continue; // accepted upstream before a restart
        this.#enqueue(row, "APPROVAL NOTIFIED", to, `group ${group}`, held, notice(to));
      }
      this.#markIfComplete(row);
    });
  }

  /** At start: queues the notices still owed by every held message that has not expired (docs/approvals.md). */
  resume(now = Date.now()): ApprovalRow[] {
    const rows = this.#ctx.store.unnotified(now);
    for (const row of rows) this.held(row);
    return rows;
  }

  /**
   * Each address of each group the message's rule asks, once (compared in lower case), and the groups that are no
   * longer configured: a message with one of those is never marked notified, so the next start tries again.
   */
  #approvers(row: ApprovalRow): { addresses: { to: string; group: string }[]; missing: string[] } {
    const seen = new Set<string>();
    const addresses: { to: string; group: string }[] = [];
    const missing: string[] = [];
    for (const group of row.groups) {
      const members = ownEntry(this.#ctx.config.approvals.groups, group);
      if (members === undefined) {
        missing.push(group);
        continue;
      }
      for (const to of members) {
        if (seen.has(to.toLowerCase())) continue;
        seen.add(to.toLowerCase());
        addresses.push({ to, group });
      }
    }
    return { addresses, missing };
  }

  /** Marks the message notified once every approver's notice was accepted upstream. */
  #markIfComplete(row: ApprovalRow): void {
    const { addresses, missing } = this.#approvers(row);
    if (missing.length === 0 && addresses.every(({ to }) => this.#ctx.store.noticeSent(row.id, to)))
      this.#ctx.store.markNotified(row.id);
  }

  /**
   * A held message was decided (`row.state` is sent, failed, denied or expired): with `[approvals] notify_sender`,
   * tells the envelope sender. `held` is the record read before it was wiped.
   */
  decided(row: ApprovalRow, held: HeldDetails): void {
    if (!this.#ctx.config.approvals.notifySender) return;
    const state = row.state;
    if (state !== "sent" && state !== "failed" && state !== "denied" && state !== "expired") return;
    this.#background(() => {
      if (held.envelope.from === "") {
        this.#failed(row, "APPROVAL SENDER NOTIFIED", "the sender", "the message had a null sender (<>)");
        return;
      }
      if (!this.#hasAccount(row, held)) return;
      const notice = senderNotice(row.id, state, held.preview.subject, held.preview.subjectUnread !== undefined);
      this.#enqueue(row, "APPROVAL SENDER NOTIFIED", held.envelope.from, `the sender, ${state}`, held, notice);
    });
  }

  /** Resolves once every notice under way has been sent or has failed. */
  async idle(): Promise<void> {
    while (this.#running.size > 0) await Promise.all([...this.#running]);
  }

  /**
   * Stops: retries still waiting give up now (a failure row each); attempts in flight get `graceMs` to end, then
   * their upstream connections are dropped (a failure row each; an approver's notice not accepted is sent again at
   * the next start, docs/approvals.md "Notices").
   */
  async close(graceMs = Number.POSITIVE_INFINITY): Promise<void> {
    this.#closed = true;
    for (const wake of this.#sleeping) wake();
    for (const go of this.#waiting.splice(0)) go();
    if (!Number.isFinite(graceMs)) return this.idle();
    if (await settledWithin([this.idle()], graceMs)) return;
    this.#log.warn(`approval notices: ${this.#running.size} still being sent after ${graceMs / 1000} s were stopped`);
    this.#cut.abort();
    await this.idle();
  }

  /** Runs `f` after the caller's turn (never in the agent's reply path) and keeps track of it. */
  #background(f: () => void | Promise<void>): void {
    const p: Promise<void> = new Promise<void>((resolve) => setImmediate(resolve))
      .then(f)
      .catch((e: unknown) => this.#log.error(`approval notice: ${(e as Error).message}`))
      .finally(() => this.#running.delete(p));
    this.#running.add(p);
  }

  #enqueue(row: ApprovalRow, command: string, to: string, what: string, held: HeldDetails, notice: NoticeText): void {
    const max = this.#options.queueMax ?? NOTICE_QUEUE_MAX;
    if (this.#queued >= max) {
      this.#failed(row, command, `${to} (${what})`, `more than ${max} notices pending`);
      return;
    }
    let account: AccountConfig;
    let message: Buffer;
    try {
      account = noticeAccount(this.#ctx.config, held);
      message = composeNotice({ from: fromAddress(account), to, subject: notice.subject, text: notice.text });
    } catch (e) {
      this.#failed(row, command, `${to} (${what})`, (e as Error).message);
      return;
    }
    this.#queued++;
    this.#background(() => this.#run({ row, command, to, what, account, message }));
  }

  async #run(job: Job): Promise<void> {
    try {
      for (let attempt = 0; ; attempt++) {
        if (this.#closed) return this.#failed(job.row, job.command, `${job.to} (${job.what})`, "the process stopped");
        let outcome: { ok: true; reply: string } | { ok: false; permanent: boolean; reason: string };
        await this.#slot();
        try {
          // Stopped while waiting for a turn: not started at all.
          if (this.#closed) return this.#failed(job.row, job.command, `${job.to} (${job.what})`, "the process stopped");
          outcome = await this.#attempt(job);
        } finally {
          this.#release();
        }
        if (outcome.ok) {
          if (job.command === "APPROVAL NOTIFIED") this.#accepted(job);
          const reason = `notice to ${job.to} (${job.what}) accepted upstream: ${outcome.reply}`;
          this.#ctx.audit.record(
            approvalEvent(
              this.#ctx,
              job.row,
              job.command,
              job.command === "APPROVAL NOTIFIED" ? "ask" : "allow",
              reason,
            ),
          );
          return;
        }
        const tries = `${attempt + 1} attempt${attempt === 0 ? "" : "s"}`;
        if (outcome.permanent || attempt >= this.#delays.length || this.#closed)
          return this.#failed(job.row, job.command, `${job.to} (${job.what})`, `${tries}: ${outcome.reason}`);
        this.#log.warn(
          `approval ${job.row.id}: notice to ${job.to} not sent (${outcome.reason}); ` +
            `trying again in ${this.#delays[attempt]! / 1000} s`,
        );
        await this.#sleep(this.#delays[attempt]!);
      }
    } finally {
      this.#queued--;
    }
  }

  /**
   * Records an approver's notice as accepted, so that a restart does not send it again. A process killed between the
   * upstream's 250 and this write sends it again at its next start: notices are at least once.
   */
  #accepted(job: Job): void {
    try {
      this.#ctx.store.markNoticeSent(job.row.id, job.to);
      this.#markIfComplete(job.row);
    } catch (e) {
      this.#log.error(`approval ${job.row.id}: cannot record the notice to ${job.to}: ${(e as Error).message}`);
    }
  }

  async #attempt(job: Job): Promise<{ ok: true; reply: string } | { ok: false; permanent: boolean; reason: string }> {
    const smtp = this.#ctx.config.smtp;
    if (smtp === null)
      return { ok: false, permanent: true, reason: "the config has no [smtp] section to send through" };
    let upstream: UpstreamSession | null = null;
    try {
      // As the proxy's sessions log in (openAccountUpstream): an OAuth2 access token the upstream refuses is reported
      // and a fresh one tried, so one refused token does not fail the notice for good.
      const cut = this.#cut.signal;
      upstream = await openAccountUpstream(smtpUpstreamTarget(smtp), job.account, this.#options.credentials, cut);
      const from = fromAddress(job.account);
      // Nothing to wait for before the final dot: the notice's audit row follows the upstream's reply.
      const result = await upstream.send(
        // A notice is 7-bit (base64, RFC 2047 words): should it ever not be, the replay refuses it (EightBitRefused).
        { from, recipients: [job.to], eightBit: false, eightBitContent: !isAscii(job.message) },
        source(job.message),
        new CommitGate(Promise.resolve()),
        cut,
      );
      const reply = `${result.reply.code} ${result.reply.lines.at(-1) ?? ""}`.slice(0, 200);
      if (result.stage === "data" && result.reply.code >= 200 && result.reply.code < 300) return { ok: true, reply };
      return { ok: false, permanent: result.reply.code >= 500, reason: `upstream replied ${reply}` };
    } catch (e) {
      if (this.#cut.signal.aborted) {
        const sent = e instanceof SendStopped && e.endOfDataSent;
        const reason = `the process stopped while it was being sent${sent ? " (it may have arrived)" : ""}`;
        return { ok: false, permanent: true, reason };
      }
      const permanent =
        e instanceof PermanentError ||
        e instanceof UpstreamAuthError ||
        e instanceof OAuthUnavailable ||
        e instanceof EightBitRefused;
      return { ok: false, permanent, reason: (e as Error).message.slice(0, 200) };
    } finally {
      await upstream?.quit().catch(() => {});
    }
  }

  /**
   * Pass-through mode without `notify_account` sends no notice (the agent's own login is never used for one):
   * `check` warned about it; a log line says so for each message.
   */
  #hasAccount(row: ApprovalRow, held: HeldDetails): boolean {
    if (this.#ctx.config.approvals.notifyAccount !== null || held.account !== null) return true;
    this.#log.warn(`approval ${row.id}: no notice sent: [approvals] notify_account is not set (pass-through mode)`);
    return false;
  }

  /**
   * A notice not sent: its row and an error log line. An approver's notice changes nothing (the message stays held);
   * the sender's is about a message already decided, and the line says what became of it (docs/approvals.md).
   */
  #failed(row: ApprovalRow, command: string, to: string, why: string): void {
    const reason = `notice to ${to} not sent: ${why}`;
    const after =
      command === "APPROVAL SENDER NOTIFIED" ? ` (${DECIDED[row.state] ?? row.state})` : "; the message stays held";
    this.#log.error(`approval ${row.id}: ${reason}${after}`);
    this.#ctx.audit.record(approvalEvent(this.#ctx, row, command, "error", reason));
  }

  #slot(): Promise<void> {
    if (this.#active < NOTICE_CONCURRENCY || this.#closed) {
      this.#active++;
      return Promise.resolve();
    }
    return new Promise((resolve) =>
      this.#waiting.push(() => {
        this.#active++;
        resolve();
      }),
    );
  }

  #release(): void {
    this.#active--;
    this.#waiting.shift()?.();
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.#sleeping.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      timer.unref?.();
      this.#sleeping.add(wake);
    });
  }
}
