/**
 * The approval page (docs/approvals.md "Links"): `GET /approvals/<id>?t=<token>` shows the preview and two forms,
 * Deny then Approve, and changes nothing (mail scanners open links before people do); `POST /approvals/<id>` with the
 * token, `action=approve|deny` and its confirmation acts, once. The token is the link's HMAC (store.ts), bound to
 * the id, the message's SHA-256 and its expiry; it is used up by the first POST. A POST must come from the page's
 * own origin (its Origin header, or failing that its Referer, names `[approvals] base_url`'s origin): a form on
 * another site cannot act. And it must carry the approver's confirmation (CONFIRM_FIELD naming its action): a mail
 * scanner that opens the link and submits a form of the page as it comes passes the origin check, but sends no
 * confirmation, so it decides nothing (docs/approvals.md "Links").
 */

import { createHash } from "node:crypto";
import { errorMessage, moduleLogger } from "../log.ts";
import { clean } from "../mail/index.ts";
import { settledWithin } from "../runtime/settle.ts";
import { attachmentsShown, headerFieldLines, MORE_TEXT, otherFieldLines, subjectShown } from "./preview.ts";
import {
  type ApprovalContext,
  AUDIT_UNAVAILABLE,
  approvalEvent,
  approve,
  deny,
  SHUTTING_DOWN,
  withdrawExposedLinks,
} from "./service.ts";
import { type ApprovalRow, ID_PATTERN } from "./store.ts";

const log = moduleLogger("approvals");

/** Marks a recipient outside the sender's domain in the preview. */
const OUTSIDE_MARK = " <strong>(outside the sender's domain)</strong>";

/** The largest POST body read (the form has three short fields). */
export const MAX_FORM_BYTES = 4096;

/**
 * The form field that confirms a decision: a POST decides only when it holds the word of its action, `approve` or
 * `deny` (white space around it and the letters' case aside). The page's Deny form is first and carries it in a
 * checkbox, unticked; its Approve form asks the approver to type the word (`required`, so a browser does not send the
 * form without it). A mail scanner that fetches the link and submits the page's first form, as it comes, sends no
 * confirmation and decides nothing: not an approval, which a word must be typed for, nor even a denial.
 */
export const CONFIRM_FIELD = "confirm";

function html(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);
}

/** Text from a message or an agent, made safe to show on one line, then escaped. */
function shown(text: string): string {
  return html(clean(text));
}

/**
 * The pages' one style sheet: a long word (a recipient's domain that runs on, a subject or a body line without
 * spaces) wraps at the window's edge. Without it the rest of an address, and the outside-domain mark after it, lay
 * beyond the right edge, out of the approver's sight (docs/approvals.md "What approvers see").
 */
const STYLE = "dd,pre{overflow-wrap:anywhere}pre{white-space:pre-wrap}";

/** The CSP source that lets exactly STYLE apply (CSP Level 3 hash source): no other style, inline or fetched. */
const STYLE_SOURCE = `'sha256-${createHash("sha256").update(STYLE).digest("base64")}'`;

function page(status: number, title: string, body: string): Response {
  const text =
    `<!doctype html><html><head><meta charset="utf-8"><title>${html(title)}</title>` +
    `<meta name="referrer" content="same-origin"><style>${STYLE}</style></head>` +
    `<body><h1>${html(title)}</h1>${body}</body></html>`;
  return new Response(text, {
    status,
    headers: {
      "content-type": "text/html; charset=utf-8",
      "cache-control": "no-store",
      "x-frame-options": "DENY",
      // base-uri: no <base> element can redirect the form's relative action (it is the page's own text, escaped,
      // but the page must not depend on that alone).
      "content-security-policy":
        `default-src 'none'; style-src ${STYLE_SOURCE}; base-uri 'none'; form-action 'self'; ` +
        "frame-ancestors 'none'",
      "referrer-policy": "same-origin",
    },
  });
}

function stateSentence(row: ApprovalRow): string {
  switch (row.state) {
    case "sent":
      return `This message was already approved${row.decidedBy ? ` by ${row.decidedBy}` : ""} and sent.`;
    case "sending":
      return "This message was approved and is being sent.";
    case "failed":
      return `This message was approved, but the upstream server refused it: ${clean(row.upstreamReply ?? "")}`;
    case "denied":
      return `This message was already denied${row.decidedBy ? ` by ${row.decidedBy}` : ""}; it was discarded.`;
    case "expired":
      return "This message expired before anyone decided; it was discarded.";
    case "needs-check":
      return "This message was being sent when the server stopped; an administrator must check whether it arrived.";
    default:
      return "This message is waiting for a decision.";
  }
}

/** The page for a message no longer held: 410 "Expired" for one that expired, 409 "Already decided" otherwise. */
function decided(row: ApprovalRow): Response {
  if (row.state === "expired") return page(410, "Expired", `<p>${html(stateSentence(row))}</p>`);
  return page(409, "Already decided", `<p>${html(stateSentence(row))}</p>`);
}

/**
 * The page for a held message whose sealed record does not open or is missing (altered or deleted on disk, or sealed
 * under another secrets key: docs/approvals.md "Holding"): nothing can be shown or sent, and the way out is a denial
 * on the server.
 */
function unreadablePage(row: ApprovalRow): Response {
  return page(
    500,
    "Cannot be read",
    "<p>This held message cannot be read: its stored record does not open, or is missing (it was altered, deleted, " +
      "or sealed under another secrets key). It cannot be shown or sent.</p>" +
      `<p>Discard it on the server with <code>mailgator approvals deny ${html(row.id)} -c FILE</code>. Left ` +
      `alone, it is discarded when it expires, ${new Date(row.expires).toISOString()}.</p>`,
  );
}

/**
 * How long a decision cut off at shutdown may take to wind up (its upstream connection dropped, its page answered)
 * before the process closes its databases anyway.
 */
export const DECISION_WIND_UP_MS = 2000;

/** The approval page, and its part in stopping the process (docs/approvals.md "What is guaranteed"). */
export interface ApprovalPage {
  handle(req: Request): Promise<Response>;
  /**
   * From now on refuses decisions (503; the message stays held, the link usable) and waits up to `graceMs` for those
   * under way; then cuts the upstream connections of the approvals still running (approve(): held again, or left
   * "sending" once the final dot went out) and waits up to DECISION_WIND_UP_MS more. Resolves to the number of
   * decisions still under way when the grace ended.
   */
  drain(graceMs: number): Promise<number>;
  /**
   * After drain(), once the OAuth2 token requests in flight have settled: waits up to DECISION_WIND_UP_MS more for
   * the decisions that were waiting for one (their login goes no further once cut off, but its row is written
   * then), so that the audit log is not closed under them. False when some are still under way.
   */
  windUp(): Promise<boolean>;
  /**
   * A check of the links against the agents in force failed (a reload while the state database or the audit log
   * could not take it, withdrawExposedLinks): until one succeeds, a link an agent may now read could still open its
   * message. Each request first tries the check again and is refused (503, nothing shown or decided) while it fails
   * (docs/approvals.md "Links").
   */
  oweLinkCheck(): void;
}

/** Builds the page; a form is accepted from `[approvals] base_url`'s origin, as configured at the request. */
export function approvalPage(ctx: ApprovalContext): ApprovalPage {
  /** The decisions under way (a POST past its token check). */
  const running = new Set<Promise<Response>>();
  /** The ids of the messages those decisions are about. */
  const deciding = new Set<string>();
  /**
   * Links a decision that changed nothing could not give back (the state database refused that write too: read-only,
   * full, locked): given back at the next request for them, once the database takes writes again, so that the
   * approvers' link does not stay used until the next start of serve (docs/approvals.md "Links").
   */
  const owedBack = new Set<string>();
  let stopping = false;
  /** A link check failed and none has succeeded since (oweLinkCheck). */
  let linkCheckOwed = false;
  /** Aborted once the grace is over: the replays still running are cut off. */
  const cut = new AbortController();
  return {
    handle,
    drain,
    windUp: () => settledWithin(running, DECISION_WIND_UP_MS),
    oweLinkCheck: () => {
      linkCheckOwed = true;
    },
  };

  /** Whether the links have been checked against the agents in force: the check owed, if any, is tried again. */
  function linksChecked(): boolean {
    if (!linkCheckOwed) return true;
    try {
      withdrawExposedLinks(ctx);
      linkCheckOwed = false;
      return true;
    } catch (e) {
      log.error(`approval links still not checked against the agents in force: ${errorMessage(e)}`);
      return false;
    }
  }

  async function drain(graceMs: number): Promise<number> {
    stopping = true;
    if (await settledWithin(running, graceMs)) return 0;
    const left = running.size;
    cut.abort();
    await settledWithin(running, DECISION_WIND_UP_MS);
    return left;
  }

  async function handle(req: Request): Promise<Response> {
    const base = ctx.config.approvals.baseUrl;
    const origin = base === null ? null : new URL(base).origin;
    // The admin listener has checked that the target reads as a URL (src/admin/server.ts).
    const url = new URL(req.url, "http://admin.invalid");
    const m = /^\/approvals\/([^/]+)$/.exec(url.pathname);
    if (m === null || !ID_PATTERN.test(m[1]!)) return page(404, "Not found", "<p>No such page.</p>");
    const id = m[1]!;
    // In the turn of the request's own checks: no link a reload may have exposed opens a message unchecked.
    if (!linksChecked())
      return page(
        503,
        "Unavailable",
        "<p>Nothing was shown or decided: the approval links could not be checked against the agents now " +
          "configured. The message is still held; try again later, or decide on the server with " +
          "<code>mailgator approvals</code>.</p>",
      );
    // GET only: serve registers GET and POST, and a HEAD (a link checker) gets the listener's 405. It shows nothing,
    // so it must not write the APPROVAL VIEWED row a GET writes.
    if (req.method === "GET") return show(id, url.searchParams.get("t") ?? "");
    if (req.method !== "POST") return page(405, "Method not allowed", "<p>Use the buttons on the page.</p>");
    if (!sameOrigin(req, origin)) return page(403, "Refused", "<p>This form must be sent from its own page.</p>");
    // The admin listener has read the body and declares its length (chunked bodies included): a POST without one
    // sent no form. Said so (411, RFC 9110 §15.5.12), not taken for one too large; nothing is decided either way.
    const declared = req.headers.get("content-length");
    if (declared === null) return page(411, "Refused", "<p>No form was sent.</p>");
    const length = Number(declared);
    if (!(length <= MAX_FORM_BYTES)) return page(413, "Refused", "<p>Request too large.</p>");
    const body = await req.text();
    if (body.length > MAX_FORM_BYTES) return page(413, "Refused", "<p>Request too large.</p>");
    const form = new URLSearchParams(body);
    return act(id, form.get("t") ?? "", form.get("action") ?? "", form.getAll(CONFIRM_FIELD));
  }

  /** Gives the link of `id` back after a decision that changed nothing; owed (owedBack) when that write fails. */
  function giveBack(id: string): void {
    try {
      ctx.store.releaseToken(id);
      owedBack.delete(id);
    } catch (e) {
      owedBack.add(id);
      log.error(`approval ${id}: its link could not be given back yet: ${errorMessage(e)}`);
    }
  }

  function check(id: string, token: string): ApprovalRow | Response {
    // A link owed back, with no decision of it under way (whatever the state: the state is checked before the link).
    if (owedBack.has(id) && !deciding.has(id)) giveBack(id);
    const row = ctx.store.row(id);
    if (row !== null && ctx.store.tokenValid(row, token)) return row;
    if (row !== null && ctx.store.tokenWithdrawn(row, token))
      return page(
        403,
        "Link withdrawn",
        "<p>This link was withdrawn: since it was sent, an agent can read a mailbox it may lie in. Decide on the " +
          "server with <code>mailgator approvals</code>.</p>",
      );
    return page(403, "Link not valid", "<p>This link is not valid (altered, or not for this message).</p>");
  }

  function show(id: string, token: string): Response {
    const row = check(id, token);
    if (row instanceof Response) return row;
    if (row.state === "held" && row.expires <= Date.now())
      return page(410, "Expired", "<p>This message expired before anyone decided; it was discarded.</p>");
    if (row.state !== "held") return decided(row);
    if (ctx.store.tokenUsed(id)) return page(409, "Link used", "<p>This link was already used.</p>");
    // Its record read first (nothing is shown yet), so that the row says whether the page could show it.
    const { held, unreadable } = ctx.store.readDetails(id);
    // The preview is shown only once its row is queued; a log that cannot take it refuses the view (fail closed).
    try {
      ctx.audit.record(
        unreadable === null
          ? approvalEvent(ctx, row, "APPROVAL VIEWED", "ask", "the approval page was opened")
          : approvalEvent(
              ctx,
              row,
              "APPROVAL VIEWED",
              "error",
              `the approval page was opened; the held message cannot be read: ${errorMessage(unreadable)}`,
            ),
      );
    } catch {
      const why = html(AUDIT_UNAVAILABLE);
      return page(503, "Unavailable", `<p>The message is still held, but cannot be shown now: ${why}.</p>`);
    }
    if (unreadable !== null) return unreadablePage(row);
    const p = held?.preview;
    // What the sender or the agent chose is cleaned as in the notices and on the terminal (src/mail/display.ts):
    // a bidirectional override in a subject or a file name would otherwise reorder what the approver reads.
    const preview =
      p === undefined
        ? ""
        : `<dl><dt>From</dt><dd>${shown(p.sender)}</dd>` +
          p.recipients.map((r) => `<dt>To</dt><dd>${shown(r.address)}${r.external ? OUTSIDE_MARK : ""}</dd>`).join("") +
          headerFieldLines(p, clean)
            .map((l) => `<dt>In the header</dt><dd>${html(l)}</dd>`)
            .join("") +
          otherFieldLines(p, clean)
            .map((l) => `<dt>Also in the header</dt><dd>${html(l)}</dd>`)
            .join("") +
          `<dt>Subject</dt><dd>${html(subjectShown(p, clean))}</dd><dt>Size</dt><dd>${p.size} octets</dd>` +
          `<dt>Attachments</dt><dd>${html(attachmentsShown(p, clean))}</dd>` +
          `<dt>Rule</dt><dd>${shown(row.rule)}</dd></dl><pre>${html(p.text.split("\n").map(clean).join("\n"))}</pre>` +
          (p.textCut === true ? `<p>${html(MORE_TEXT)}</p>` : "");
    // Relative, so that a base_url with a path (a reverse proxy that strips it) gets the POST at the same prefix.
    const open = `<form method="post" action="./${id}"><input type="hidden" name="t" value="${html(token)}">`;
    // Deny first, and each form holds its confirmation (CONFIRM_FIELD): what a scanner submits as it comes decides
    // nothing. The Approve form's word is typed: nothing on the page fills it in.
    const forms =
      `${open}<p><label><input type="checkbox" name="${CONFIRM_FIELD}" value="deny" required> ` +
      `Yes, discard this message</label> <button type="submit" name="action" value="deny">Deny</button></p></form>` +
      `${open}<p><label>To send it, type <strong>approve</strong>: <input type="text" name="${CONFIRM_FIELD}" ` +
      `required autocomplete="off" autocapitalize="none" spellcheck="false" size="10" ` +
      `pattern="\\s*[Aa][Pp][Pp][Rr][Oo][Vv][Ee]\\s*" title="the word approve"></label> ` +
      `<button type="submit" name="action" value="approve">Approve</button></p></form>`;
    return page(
      200,
      "Approve this message?",
      `${preview}<p>Expires ${new Date(row.expires).toISOString()}</p>${forms}`,
    );
  }

  async function act(id: string, token: string, action: string, confirm: readonly string[]): Promise<Response> {
    const row = check(id, token);
    if (row instanceof Response) return row;
    if (action !== "approve" && action !== "deny") return page(400, "Refused", "<p>Unknown action.</p>");
    if (row.state !== "held") return decided(row);
    // Before the token is used: a POST without its confirmation (a scanner's) leaves the link as it was.
    if (!confirmed(action, confirm)) return unconfirmed(action);
    // Checked before the token is used, in the same turn: a decision refused here leaves the link as it was.
    if (stopping)
      return page(
        503,
        "Shutting down",
        `<p>Nothing was decided: ${html(SHUTTING_DOWN)}. The message is still held; this link can be used again ` +
          "once the server is back.</p>",
      );
    if (!ctx.store.useToken(id)) return page(409, "Link used", "<p>This link was already used.</p>");
    const decision = decide(id, action, `link:${row.groups.join(",")}`);
    running.add(decision);
    deciding.add(id);
    try {
      return await decision;
    } catch (e) {
      // A decision that failed on its way (the state database, say) and left the message held gives the link back:
      // it is the approvers' only way to decide. When its state cannot be read either, it is given back all the same
      // (or owed, giveBack): the page checks the state before the link, so it opens only a message that is held.
      let held = true;
      try {
        held = ctx.store.row(id)?.state === "held";
      } catch {}
      if (held) giveBack(id);
      throw e;
    } finally {
      running.delete(decision);
      deciding.delete(id);
    }
  }

  async function decide(id: string, action: "approve" | "deny", by: string): Promise<Response> {
    if (action === "deny") {
      const result = await deny(ctx, id, by, null);
      if (result.outcome === "not-denied") {
        giveBack(id);
        return page(
          503,
          "Not denied",
          `<p>The message is still held: ${html(result.reason)}</p><p>This link can be used again.</p>`,
        );
      }
      if (result.outcome !== "denied") {
        // Another decider had it: this POST decided nothing, and the link is given back (it may be held again).
        giveBack(id);
        return decided(ctx.store.row(id)!);
      }
      return page(200, "Denied", "<p>The message was discarded; nothing was sent.</p>");
    }
    const result = await approve(ctx, id, by, cut.signal);
    // The upstream's answer stands, and the page says so; without its APPROVAL SENT row the message stays "sending",
    // which the next start of serve makes "needs-check" (docs/approvals.md "When the audit log fails").
    const unrecorded =
      (result.outcome === "sent" || result.outcome === "failed") && !result.recorded
        ? "<p>Its audit row could not be written: it stays marked as being sent until serve next starts, which " +
          "marks it for a check.</p>"
        : "";
    if (result.outcome === "sent") return page(200, "Approved", `<p>The message was sent.</p>${unrecorded}`);
    if (result.outcome === "not-sent") {
      giveBack(id);
      return page(
        503,
        "Not sent",
        `<p>The message was not sent and is still held: ${html(result.reason)}</p>` +
          "<p>This link can be used again once that is fixed.</p>",
      );
    }
    if (result.outcome === "needs-check")
      return page(
        502,
        "Sent, outcome unknown",
        "<p>The connection to the upstream server was lost after the message went out, before its answer: it may " +
          "or may not have the message. It is not sent again; an administrator must check whether it arrived.</p>",
      );
    if (result.outcome === "interrupted")
      return page(
        503,
        "Interrupted",
        "<p>The server stopped while sending it: the upstream server may or may not have it. It is not sent " +
          "again; an administrator must check whether it arrived.</p>",
      );
    if (result.outcome === "failed")
      return page(
        502,
        "Approved, not sent",
        `<p>The upstream server refused it: ${shown(result.reply)}</p>${unrecorded}`,
      );
    // Refused: another decider had it (`mailgator approvals approve` sending it, say), or it expired. This POST
    // decided nothing, so the link is given back: should that replay end with the message held again (a 4xx from
    // the upstream), the link is the approvers' way to decide it.
    giveBack(id);
    if (result.outcome === "refused" && result.state === "expired")
      return page(410, "Expired", "<p>This message expired before anyone decided; it was discarded.</p>");
    return decided(ctx.store.row(id)!);
  }
}

/**
 * Whether a POST confirms its action (CONFIRM_FIELD): exactly one such field, holding the action's word. Two (one
 * ticked, one typed, from a form put together by hand) confirm nothing.
 */
function confirmed(action: "approve" | "deny", confirm: readonly string[]): boolean {
  return confirm.length === 1 && confirm[0]!.trim().toLowerCase() === action;
}

/** The answer to a POST without its confirmation: nothing decided, the message still held, the link unused. */
function unconfirmed(action: "approve" | "deny"): Response {
  const how =
    action === "approve"
      ? "type <strong>approve</strong> in the box beside the Approve button"
      : "tick the box beside the Deny button";
  return page(
    400,
    action === "approve" ? "Not approved" : "Not denied",
    `<p>Nothing was decided: the form did not carry its confirmation. To ${action} the message, ${how}. A mail ` +
      "scanner that opens the link and sends the page's form as it comes sends none, so it cannot decide.</p>" +
      "<p>The message is still held; this link can be used again.</p>",
  );
}

/** A POST is accepted only from the page's origin (Origin, or Referer when a browser sends no Origin). */
function sameOrigin(req: Request, origin: string | null): boolean {
  if (origin === null) return false;
  const o = req.headers.get("origin");
  if (o !== null) return o === origin;
  const referer = req.headers.get("referer");
  if (referer === null) return false;
  try {
    return new URL(referer).origin === origin;
  } catch {
    return false;
  }
}
