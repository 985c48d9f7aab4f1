/**
 * Held messages (docs/approvals.md): a send an `ask` rule stopped, kept until a person approves or denies it, or
 * it expires. Kept in the state database (src/state/store.ts):
 *
 * - a sealed record of kind "held" (AES-256-GCM): the envelope, the preview shown to approvers and, in pass-through
 *   mode, the agent's upstream credentials; and the message bytes as sealed records of kind "held-part", at most
 *   HELD_PART_BYTES each, written one per turn of the event loop (docs/approvals.md "Limits"). Nothing of it is in
 *   clear on disk.
 * - a plain row in `approvals`: id, state, times, the message's SHA-256, the rule that asked, who decided, whether
 *   every approver's notice was accepted upstream (`notified`). No address, subject or body.
 * - `approval_notices`: one row per approver whose notice the upstream accepted, named by an HMAC of the message id
 *   and the address (docs/approvals.md "Notices"), so that a restart sends only the notices still owed.
 *
 * State changes run in BEGIN IMMEDIATE transactions that re-read the state first, so that two deciders (two
 * approvers, the web page and the command line, two processes) cannot both move a message out of "held".
 */

import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { readFileSync, statfsSync } from "node:fs";
import { dirname } from "node:path";
import { loginKey } from "../net/sessions.ts";
import { SealedRecordError, type SealedStore } from "../state/store.ts";

export const HELD_KIND = "held";
/** The sealed records of a held message's bytes: `<id>.<n>`, n from 0 (docs/approvals.md "Limits"). */
export const HELD_PART_KIND = "held-part";
/**
 * Bytes of a held message per sealed part. Each part is sealed and committed (synchronous=FULL) in a turn of the
 * event loop of its own, so storing a 50 MiB message holds other sessions up for one part's work at a time, not
 * for the whole message (about 1.4 s at 48 MB when it was one record).
 */
export const HELD_PART_BYTES = 1024 * 1024;

/**
 * Parts are taken for a stopped process's leftovers (`removeOrphanParts`) only once the newest of a message's parts
 * is this old: a store under way writes all of its parts within seconds, in this process or in another `serve`
 * started by mistake on the same database.
 */
export const ORPHAN_PART_AGE_MS = 10 * 60 * 1000;

/**
 * How long the `approvals` table keeps a decided message's row (sent, failed, denied, expired) after its decision: a
 * month, counted back from the older of the expiry check's clock and the newest change in the table (a message
 * held or decided), so that a clock far ahead for a moment takes nothing the right clock would keep and the table
 * only sheds rows while new ones come (docs/approvals.md "Limits"). Each held message leaves a row, and `approvals
 * list` and the expiry check read them all; the audit log keeps every decision for as long as its `retention_days`.
 * Rows held, being sent, or needing a check are never taken.
 */
export const DECIDED_APPROVALS_KEPT_MS = 30 * 24 * 3600_000;

/**
 * Free space a hold leaves on the state database's file system, beyond twice the message (a copy in the database
 * file and one in its write-ahead log until a checkpoint). A message that would leave less is not held (`452 4.3.1`,
 * docs/approvals.md "Limits"): on a full disk SQLite can write nothing, not even the deletion that denies or expires
 * a held message (WAL needs room to record it, and a checkpoint room to grow the database file), nor a quota charge,
 * and `serve` cannot start; this keeps room for those, whatever the agents hold.
 */
export const HELD_DISK_RESERVE_BYTES = 64 * 1024 * 1024;

/** Octets an unprivileged writer may still write on the file system of `path`'s folder (statfs(2) f_bavail). */
export function freeSpace(path: string): number {
  const fs = statfsSync(dirname(path));
  return fs.bavail * fs.bsize;
}

/** The id of part `n` of held message `id`. Ids are hex (ID_PATTERN), so `<id>.` and `<id>/` bound its parts. */
function partId(id: string, n: number): string {
  return `${id}.${n}`;
}

/** `hold` stopped by its caller between parts (the session ended): nothing of the message is left. */
export class HoldStopped extends Error {
  override name = "HoldStopped";
}

/** Lets the event loop run other work (sessions' I/O, timers) before the next part is stored. */
function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

export type ApprovalState = "held" | "sending" | "sent" | "failed" | "denied" | "expired" | "needs-check";

/** Why a held message's Subject cannot be read, and its Subject fields as written (src/approvals/preview.ts). */
export interface UnreadSubject {
  readonly reason: string;
  /** The first PREVIEW_SUBJECT_FIELDS, each cut at PREVIEW_LINE_CHARS characters (then saying `… (field cut)`). */
  readonly fields: readonly string[];
  /** How many there are. */
  readonly count: number;
}

/** What approvers see, taken from the message when it was held. */
export interface Preview {
  readonly sender: string;
  /** Every envelope recipient, with whether it is outside the sender's domain. */
  readonly recipients: readonly { readonly address: string; readonly external: boolean }[];
  /**
   * The Subject as the policy read it (src/mail/fields.ts), cut at PREVIEW_LINE_CHARS characters (then saying
   * `… (subject cut)`); null when there is none, or it cannot be read.
   */
  readonly subject: string | null;
  /** Set when the message has a Subject the policy cannot read; absent in records sealed before it was kept. */
  readonly subjectUnread?: UnreadSubject;
  readonly size: number;
  /**
   * File names of the attachments: those the SMTP inspector found in the message's structure, or in records sealed
   * before it kept them (no `attachmentsComplete`), a scan of the raw text for `filename=`.
   */
  readonly attachments: readonly string[];
  /** The SMTP inspector's has_attachment (null: unknown); absent in records sealed before it was kept. */
  readonly hasAttachment?: boolean | null;
  /**
   * How many attachments the inspector found, with and without a name; `attachments` names at most
   * PREVIEW_ATTACHMENTS of them. Absent in records sealed before the inspector's list was kept.
   */
  readonly attachmentParts?: number;
  /**
   * Whether the inspector read the whole structure, so that `attachmentParts` counts all of them; absent in records
   * sealed before it was kept.
   */
  readonly attachmentsComplete?: boolean;
  /**
   * The first lines of the text: of each text part (at most PREVIEW_TEXT_PARTS), its first PREVIEW_LINES decoded,
   * after a line labelling it (src/approvals/preview.ts). In records sealed before 2026-12-06 (evening), the raw
   * lines of the body.
   */
  readonly text: string;
  /** More text follows than `text` shows (absent in records sealed before it was kept). */
  readonly textCut?: boolean;
  /**
   * The header's author and recipient fields as the recipient's mail client shows them (display names included),
   * in the order written: at most PREVIEW_HEADER_FIELDS, each cut at PREVIEW_LINE_CHARS characters (src/approvals/
   * preview.ts). Absent in records sealed before they were kept.
   */
  readonly headerFields?: readonly { readonly name: string; readonly value: string }[];
  /** How many such fields the message has (more than `headerFields` shows when it holds more than the limit). */
  readonly headerFieldCount?: number;
  /**
   * Every other header field but Subject (Date, Message-ID, Content-Type, any `X-` field...), in the order written:
   * they go out too, whether or not a client shows them. At most PREVIEW_OTHER_FIELDS, each cut at
   * PREVIEW_LINE_CHARS characters. Absent in records sealed before they were kept.
   */
  readonly otherHeaderFields?: readonly { readonly name: string; readonly value: string }[];
  /** How many such fields the message has. */
  readonly otherHeaderFieldCount?: number;
}

/** A held message without its bytes: what approvers, notices and the upstream login need. */
export interface HeldDetails {
  readonly envelope: { readonly from: string; readonly recipients: readonly string[]; readonly eightBit: boolean };
  /** Vault mode: the account whose login sends it when approved. */
  readonly account: string | null;
  /** Pass-through mode: the agent's upstream login, wiped when the message is decided or expires. */
  readonly credentials: { readonly username: string; readonly password: string } | null;
  readonly agent: string | null;
  /**
   * Vault mode: the hash of the token the agent logged in with. Approving refuses the message once the agent's
   * token is another (a revoked token's held messages are not sent); absent in records sealed before it was kept,
   * which are refused the same way.
   */
  readonly tokenHash?: string | null;
  readonly preview: Preview;
}

export interface HeldMessage extends HeldDetails {
  /** The exact bytes the agent sent, before dot-stuffing. */
  readonly message: Buffer;
}

export interface ApprovalRow {
  readonly id: string;
  readonly state: ApprovalState;
  readonly created: number;
  readonly expires: number;
  readonly sha256: string;
  readonly rule: string;
  readonly ruleIndex: number | null;
  /**
   * The revision of the config whose rules held it: the rows about it name `rule` at `ruleIndex` of that config
   * (docs/audit.md "What a row records"); null for a message held before it was recorded.
   */
  readonly configRevision: string | null;
  readonly groups: readonly string[];
  readonly agent: string | null;
  readonly decidedBy: string | null;
  readonly reason: string | null;
  readonly upstreamReply: string | null;
  /** Every approver's notice was accepted upstream (docs/approvals.md "Notices"). */
  readonly notified: boolean;
  readonly updated: number;
  /** How many times its link was withdrawn (docs/approvals.md "Links"): a link of an earlier one no longer works. */
  readonly linkGeneration: number;
}

const SCHEMA = `CREATE TABLE IF NOT EXISTS approvals (
  id             TEXT PRIMARY KEY,
  state          TEXT NOT NULL,
  created        INTEGER NOT NULL,
  expires        INTEGER NOT NULL,
  sha256         TEXT NOT NULL,
  rule           TEXT NOT NULL,
  rule_index     INTEGER,
  groups         TEXT NOT NULL,
  agent          TEXT,
  decided_by     TEXT,
  reason         TEXT,
  upstream_reply TEXT,
  token_used     INTEGER NOT NULL DEFAULT 0,
  updated        INTEGER NOT NULL,
  notified       INTEGER NOT NULL DEFAULT 0,
  claimed_by     TEXT,
  link_generation INTEGER NOT NULL DEFAULT 0,
  config_revision TEXT
)`;

/**
 * The mailboxes agents could read when the approval links were last checked (`withdrawLinksForNewReaders`): each
 * HMAC-SHA256 of the mailbox (mailboxOf in src/config/load.ts) under a key derived from the secrets key, so no address
 * is in clear; and the empty string, which says that a set was recorded at all.
 */
const READERS_SCHEMA = `CREATE TABLE IF NOT EXISTS approval_link_readers (
  reader TEXT PRIMARY KEY
)`;

/**
 * The approvers whose notice the upstream accepted: `approver` is HMAC-SHA256(id NUL lower-case address) under a key
 * derived from the secrets key, so no address is in clear and a guessed one cannot be checked without the key.
 * Deleted with the sealed record when the message is decided or expires.
 */
const NOTICES_SCHEMA = `CREATE TABLE IF NOT EXISTS approval_notices (
  id       TEXT NOT NULL,
  approver TEXT NOT NULL,
  sent     INTEGER NOT NULL,
  PRIMARY KEY (id, approver)
)`;

interface RawRow {
  id: string;
  state: ApprovalState;
  created: number;
  expires: number;
  sha256: string;
  rule: string;
  rule_index: number | null;
  config_revision: string | null;
  groups: string;
  agent: string | null;
  decided_by: string | null;
  reason: string | null;
  upstream_reply: string | null;
  token_used: number;
  updated: number;
  notified: number;
  link_generation: number;
}

function toRow(r: RawRow): ApprovalRow {
  return {
    id: r.id,
    state: r.state,
    created: r.created,
    expires: r.expires,
    sha256: r.sha256,
    rule: r.rule,
    ruleIndex: r.rule_index,
    configRevision: r.config_revision,
    groups: JSON.parse(r.groups) as string[],
    agent: r.agent,
    decidedBy: r.decided_by,
    reason: r.reason,
    upstreamReply: r.upstream_reply,
    notified: r.notified !== 0,
    updated: r.updated,
    linkGeneration: r.link_generation,
  };
}

/**
 * The columns later versions added to `approvals`, each with its definition; a row made before a column was added
 * reads as its DEFAULT (NULL without one):
 * - notified: held messages of a database made before notices were recorded count as not notified, so the next
 *   start sends their notices (at least once, docs/approvals.md "Notices");
 * - claimed_by: a "sending" row made before claims named their process is taken for a dead process's at the next
 *   start, as before (`recover`);
 * - link_generation: every link made before links could be withdrawn is of the first generation;
 * - config_revision: the rows of a message held before held messages recorded the config that held them carry the
 *   revision in force when they are written, as before.
 */
const ADDED_COLUMNS: readonly { readonly name: string; readonly definition: string }[] = [
  { name: "notified", definition: "INTEGER NOT NULL DEFAULT 0" },
  { name: "claimed_by", definition: "TEXT" },
  { name: "link_generation", definition: "INTEGER NOT NULL DEFAULT 0" },
  { name: "config_revision", definition: "TEXT" },
];

/**
 * Makes the tables of approvals and gives `approvals` the columns later versions added (ADDED_COLUMNS), inside BEGIN
 * IMMEDIATE, so that two processes opening the same old database add each column once. A state database opened
 * read-only (`approvals list` and `show`) is not written: a missing table reads as an empty one
 * (`SealedStore.ensureTable`), and an `approvals` table made before a column was added reads through a temporary view
 * that gives the column's value for old rows (temp names come first in SQLite's search, so the queries below read it
 * unchanged).
 */
function setUpSchema(state: SealedStore): void {
  const db = state.db;
  const madeEmpty = state.ensureTable("approvals", SCHEMA);
  const columns = new Set(
    (db.query("PRAGMA main.table_info(approvals)").all() as { name: string }[]).map((c) => c.name),
  );
  const missing = madeEmpty ? [] : ADDED_COLUMNS.filter((c) => !columns.has(c.name));
  if (!state.readOnly) for (const c of missing) db.run(`ALTER TABLE approvals ADD COLUMN ${c.name} ${c.definition}`);
  else if (missing.length > 0) {
    const values = missing.map((c) => `${/ DEFAULT (\S+)$/.exec(c.definition)?.[1] ?? "NULL"} AS ${c.name}`);
    db.run(`CREATE TEMP VIEW approvals AS SELECT *, ${values.join(", ")} FROM main.approvals`);
  }
  state.ensureTable("approval_notices", NOTICES_SCHEMA);
  state.ensureTable("approval_link_readers", READERS_SCHEMA);
}

/** Ids are 16 random bytes in hex: not guessable, and safe in a path, a reply text and a command line. */
export const ID_PATTERN = /^[0-9a-f]{32}$/;

/** A new held message's id (ID_PATTERN). */
export function newApprovalId(): string {
  return randomBytes(16).toString("hex");
}

export type Claim =
  | { readonly ok: true; readonly row: ApprovalRow; readonly held: HeldDetails }
  | {
      readonly ok: false;
      readonly state: ApprovalState | "unknown";
      readonly row: ApprovalRow | null;
      /** This claim found it past its expiry and expired it (its APPROVAL EXPIRED row is the caller's to write). */
      readonly expiredNow?: true;
    };

export class ApprovalStore {
  readonly state: SealedStore;
  readonly #tokenKey: Buffer;
  readonly #noticeKey: Buffer;
  readonly #readerKey: Buffer;
  /**
   * Free octets on the state database's file system (`freeSpace`); replaced by tests, which cannot fill a real
   * disk.
   */
  diskFree: () => number;

  constructor(state: SealedStore) {
    this.diskFree = () => freeSpace(state.path);
    this.state = state;
    if (state.readOnly) setUpSchema(state);
    else state.transaction(() => setUpSchema(state));
    this.#tokenKey = state.deriveKey("mailgator approval links v1");
    this.#noticeKey = state.deriveKey("mailgator approval notices v1");
    this.#readerKey = state.deriveKey("mailgator approval link readers v1");
  }

  /**
   * Stores a held message durably as `id` (newApprovalId(): the caller may write its audit rows first) and returns
   * its row. The bytes go first, HELD_PART_BYTES per sealed part, each committed (synchronous=FULL) in a turn of its
   * own; then one transaction checks that every part is there and adds the record of its details and its row, which
   * is when the message exists. Until then nothing names the parts: if the process stops between, they are
   * removed later (`removeOrphanParts`); if storing fails, or `stop` says to stop (checked before each
   * part after the first and before the last step; HoldStopped), they are removed here.
   */
  async hold(
    held: HeldMessage,
    rule: { name: string; index: number | null; groups: readonly string[]; revision?: string },
    expires: number,
    now = Date.now(),
    id = newApprovalId(),
    stop: () => boolean = () => false,
  ): Promise<ApprovalRow> {
    // The parts' ids are found by range (`<id>.` to `<id>/`) and by their first 32 characters: only ids of this form.
    if (!ID_PATTERN.test(id)) throw new Error(`held message id ${JSON.stringify(id)} is not 32 hex digits`);
    const { message, ...details } = held;
    const parts = Math.ceil(message.length / HELD_PART_BYTES);
    const hash = createHash("sha256");
    this.#storing.add(id);
    try {
      for (let n = 0; n < parts; n++) {
        if (n > 0) {
          await nextTurn();
          if (stop()) throw new HoldStopped(`held message ${id}: stopped after ${n} of ${parts} parts`);
        }
        const part = message.subarray(n * HELD_PART_BYTES, (n + 1) * HELD_PART_BYTES);
        hash.update(part);
        this.state.put(HELD_PART_KIND, partId(id, n), part);
      }
      if (stop()) throw new HoldStopped(`held message ${id}: stopped before it was recorded`);
      const sha256 = hash.digest("hex");
      return this.state.transaction(() => {
        if (this.#partCount(id) !== parts)
          throw new Error(`held message ${id}: a part was removed while it was stored`);
        this.state.put(HELD_KIND, id, JSON.stringify({ ...details, parts, bytes: message.length }));
        this.state.db
          .query(
            "INSERT INTO approvals (id, state, created, expires, sha256, rule, rule_index, config_revision, groups, " +
              "agent, updated) VALUES (?, 'held', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
          )
          .run(
            id,
            now,
            expires,
            sha256,
            rule.name,
            rule.index,
            rule.revision ?? null,
            JSON.stringify(rule.groups),
            held.agent,
            now,
          );
        return this.row(id)!;
      });
    } catch (e) {
      try {
        this.#deleteParts(id);
      } catch {
        // The database itself failed: `removeOrphanParts` removes them later.
      }
      throw e;
    } finally {
      this.#storing.delete(id);
    }
  }

  /** Messages this store is storing now (`hold`): their parts are never orphans. */
  readonly #storing = new Set<string>();

  /**
   * Removes the parts that no held message names (a process stopped between storing a message's parts and its last
   * step, `hold`, or could not remove them after a failure) and returns the ids they were stored for, so that each
   * can get a row saying it was not held. Only a message whose newest part was written before `olderThan` (by default
   * ORPHAN_PART_AGE_MS ago) and that this store is not storing now.
   */
  removeOrphanParts(olderThan = Date.now() - ORPHAN_PART_AGE_MS): string[] {
    return this.state.transaction(() => {
      const ids = (
        this.state.db
          .query(
            "SELECT substr(id, 1, 32) AS id FROM sealed WHERE kind = ? " +
              "AND substr(id, 1, 32) NOT IN (SELECT id FROM sealed WHERE kind = ?) " +
              // A message with a row was recorded: its parts are its own even when its `held` record is gone (deleted
              // by hand, a partial restore; `details`), and they go when it is decided or expires (#finish).
              "AND substr(id, 1, 32) NOT IN (SELECT id FROM approvals) " +
              "GROUP BY substr(id, 1, 32) HAVING max(updated) < ? ORDER BY 1",
          )
          .all(HELD_PART_KIND, HELD_KIND, olderThan) as { id: string }[]
      )
        .map((r) => r.id)
        .filter((id) => !this.#storing.has(id));
      for (const id of ids) this.#deleteParts(id);
      return ids;
    });
  }

  /**
   * Removes a message that was held but whose agent never got the reply saying so (its session ended while it was
   * stored): the agent would send it again. Only while it is still "held"; returns whether it was removed.
   */
  withdraw(id: string): boolean {
    return this.state.transaction(() => {
      if (this.row(id)?.state !== "held") return false;
      this.state.delete(HELD_KIND, id);
      this.#deleteParts(id);
      this.state.db.query("DELETE FROM approval_notices WHERE id = ?").run(id);
      this.state.db.query("DELETE FROM approvals WHERE id = ?").run(id);
      return true;
    });
  }

  #partCount(id: string): number {
    const r = this.state.db
      .query("SELECT COUNT(*) AS n FROM sealed WHERE kind = ? AND id > ? AND id < ?")
      .get(HELD_PART_KIND, `${id}.`, `${id}/`) as { n: number };
    return r.n;
  }

  #deleteParts(id: string): void {
    this.state.db
      .query("DELETE FROM sealed WHERE kind = ? AND id > ? AND id < ?")
      .run(HELD_PART_KIND, `${id}.`, `${id}/`);
  }

  /** Holds of this process under way (their audit rows on their way to disk), per agent without case. */
  readonly #holding = new Map<string, number>();

  /**
   * A place for one more held message of `agent`: null when `max` of its messages are held, being sent, or on their
   * way in through other sessions of this process; otherwise the function that gives the place back, to call once
   * the message is stored or given up. A session checks before it writes its audit rows and stores the message
   * after they are on disk, so without the places taken meanwhile two sessions of one agent could both pass the
   * check (docs/approvals.md "Limits"). Only the proxy holds messages: other processes need no places.
   */
  reservePlace(agent: string | null, max: number): (() => void) | null {
    const key = agent === null ? "" : loginKey(agent);
    const holding = this.#holding.get(key) ?? 0;
    if (this.heldCount(agent) + holding >= max) return null;
    this.#holding.set(key, holding + 1);
    let given = false;
    return () => {
      if (given) return;
      given = true;
      const left = (this.#holding.get(key) ?? 1) - 1;
      if (left > 0) this.#holding.set(key, left);
      else this.#holding.delete(key);
    };
  }

  /** Octets of the messages this process is about to store or storing (`reserveSpace`), each counted twice. */
  #spaceTaken = 0;

  /**
   * Room on the state database's file system for a message of `bytes` octets: twice its size (database file and
   * write-ahead log) beyond HELD_DISK_RESERVE_BYTES, counting the messages other sessions of this process are storing
   * meanwhile. Returns the function that gives the room back (once the message is stored or given up), or what was
   * free and what was needed. statfs failing counts as no room: the hold is refused (fail closed).
   */
  reserveSpace(bytes: number): (() => void) | { readonly free: number; readonly needed: number } {
    const needed = 2 * bytes + HELD_DISK_RESERVE_BYTES;
    let free: number;
    try {
      free = this.diskFree() - this.#spaceTaken;
    } catch {
      free = 0;
    }
    if (free < needed) return { free: Math.max(0, free), needed };
    this.#spaceTaken += 2 * bytes;
    let given = false;
    return () => {
      if (given) return;
      given = true;
      this.#spaceTaken -= 2 * bytes;
    };
  }

  /**
   * Messages of `agent` (the login in pass-through mode) held or being sent: MAX_HELD_PER_AGENT counts these. Without
   * case, by the one function quotas and max_sessions_per_agent count a login with (`loginKey`, docs/quotas.md "Who
   * is counted"): a login's other spellings share its count, in any letter's case (SQLite's lower() would fold ASCII
   * letters only). The rows held or being sent are grouped by their agent and the groups folded here.
   */
  heldCount(agent: string | null): number {
    const key = agent === null ? null : loginKey(agent);
    const groups = this.state.db
      .query("SELECT agent, COUNT(*) AS n FROM approvals WHERE state IN ('held', 'sending') GROUP BY agent")
      .all() as { agent: string | null; n: number }[];
    let n = 0;
    for (const g of groups) if ((g.agent === null ? null : loginKey(g.agent)) === key) n += g.n;
    return n;
  }

  /** Messages held now, waiting for a decision (the `mailgator_approvals_held` gauge, docs/operations.md). */
  heldNow(): number {
    return (this.state.db.query("SELECT COUNT(*) AS n FROM approvals WHERE state = 'held'").get() as { n: number }).n;
  }

  row(id: string): ApprovalRow | null {
    const r = this.state.db.query("SELECT * FROM approvals WHERE id = ?").get(id) as RawRow | null;
    return r === null ? null : toRow(r);
  }

  list(): ApprovalRow[] {
    return (this.state.db.query("SELECT * FROM approvals ORDER BY created, id").all() as RawRow[]).map(toRow);
  }

  /**
   * The held message without its bytes (one small record), null once it was wiped (decided, expired). A record
   * written before the bytes were stored in parts holds them too: they are read and dropped. SealedRecordError when it
   * does not open, or is missing while its row says it is kept (`#wiped`).
   */
  details(id: string): HeldDetails | null {
    const box = this.state.get(HELD_KIND, id);
    if (box === null) return this.#wiped(id);
    const { message: _, parts: _p, bytes: _b, ...details } = JSON.parse(box.toString("utf8")) as StoredHeld;
    return details;
  }

  /**
   * A `held` record not found: null when its message was decided, expired or withdrawn, which wipe the record and
   * change the row in one transaction. SealedRecordError when the row says it is still kept (held, being sent, or
   * needing a check): the record was deleted by hand or lost to a partial restore, and the message is unreadable,
   * not gone. The record was looked for before the row is read, so a decision between the two reads shows as one.
   */
  #wiped(id: string): null {
    const state = this.row(id)?.state;
    if (state === "held" || state === "sending" || state === "needs-check")
      throw new SealedRecordError(`held message ${id}: its sealed record is missing, though its row says ${state}`);
    return null;
  }

  /**
   * `details`, with a record that does not open (altered, or sealed with another key: docs/approvals.md "Holding")
   * given as its error rather than thrown: the page, `approvals show` and the notices each say so in their own way.
   */
  readDetails(id: string): { held: HeldDetails | null; unreadable: SealedRecordError | null } {
    try {
      return { held: this.details(id), unreadable: null };
    } catch (e) {
      if (!(e instanceof SealedRecordError)) throw e;
      return { held: null, unreadable: e };
    }
  }

  /**
   * The sealed message with its bytes, null once it was wiped (decided, expired, also between two of its parts).
   * SealedRecordError when the record of a message still held is missing, a part is missing, does not open, or the
   * bytes are not the ones held (their SHA-256 in the row). One part per turn of the event loop: other sessions run
   * meanwhile (approving, docs/approvals.md).
   */
  async readMessage(id: string): Promise<HeldMessage | null> {
    const box = this.state.get(HELD_KIND, id);
    if (box === null) return this.#wiped(id);
    const { message, parts, bytes, ...details } = JSON.parse(box.toString("utf8")) as StoredHeld;
    // Written before the bytes were stored in parts: they are in this record, base64.
    if (message !== undefined) return { ...details, message: Buffer.from(message, "base64") };
    if (parts === undefined || bytes === undefined) throw new SealedRecordError(`held message ${id} has no bytes`);
    const out = Buffer.allocUnsafe(bytes);
    const hash = createHash("sha256");
    let filled = 0;
    for (let n = 0; n < parts; n++) {
      if (n > 0) await nextTurn();
      const part = this.state.get(HELD_PART_KIND, partId(id, n));
      // Decided meanwhile (between two turns): wiped, not damaged.
      if (part === null && this.state.get(HELD_KIND, id) === null) return null;
      if (part === null || filled + part.length > bytes)
        throw new SealedRecordError(`held message ${id}: part ${n} is missing or too long`);
      out.set(part, filled);
      hash.update(part);
      filled += part.length;
    }
    if (filled !== bytes || hash.digest("hex") !== this.row(id)?.sha256)
      throw new SealedRecordError(`held message ${id}: its parts are not the message that was held`);
    return { ...details, message: out };
  }

  /**
   * Approve, step one: in one BEGIN IMMEDIATE transaction, re-reads the state, requires "held" and not expired,
   * and marks "sending". Only the caller that gets `ok` sends; everyone else learns the state it found. It reads
   * the details only: the caller read the bytes before (`readMessage`), and a held message's bytes never change.
   * The claim names its process (`owner`, thisProcess()), so that a start of serve meanwhile leaves it alone
   * (`recover`).
   */
  claim(id: string, by: string, now = Date.now(), owner = thisProcess()): Claim {
    return this.state.transaction((): Claim => {
      const row = this.row(id);
      if (row === null) return { ok: false, state: "unknown", row: null };
      if (row.state !== "held") return { ok: false, state: row.state, row };
      if (row.expires <= now) {
        this.#finish(id, "expired", null, "expired before the decision", null, now);
        return { ok: false, state: "expired", row: this.row(id), expiredNow: true };
      }
      const held = this.details(id);
      if (held === null) return { ok: false, state: "unknown", row };
      this.#update(id, "sending", by, null, null, now);
      this.state.db.query("UPDATE approvals SET claimed_by = ? WHERE id = ?").run(owner, id);
      return { ok: true, row: this.row(id)!, held };
    });
  }

  /**
   * Approve, undone before anything reached the upstream (its audit row could not be written, so the replay stopped
   * before the end of data): "sending" goes back to "held", the sealed record kept, so it can be approved again.
   */
  unclaim(id: string, now = Date.now()): void {
    this.state.transaction(() => {
      if (this.row(id)?.state !== "sending") return;
      this.#update(id, "held", null, null, null, now);
    });
  }

  /** Approve, step three: the upstream's reply; the message and any credentials are wiped. */
  sent(id: string, ok: boolean, upstreamReply: string, now = Date.now()): void {
    this.state.transaction(() => {
      const row = this.row(id);
      if (row?.state !== "sending") return;
      this.#finish(id, ok ? "sent" : "failed", row.decidedBy, row.reason, upstreamReply, now);
    });
  }

  /** Denies a held message (or discards one that needs a check): wiped at once. Returns the state found. */
  deny(id: string, by: string, reason: string | null, now = Date.now()): ApprovalState | "unknown" {
    return this.state.transaction(() => {
      const row = this.row(id);
      if (row === null) return "unknown";
      if (row.state !== "held" && row.state !== "needs-check") return row.state;
      // Past its time it is expired, not denied, even before the expiry check has swept it (as claim() does).
      if (row.state === "held" && row.expires <= now) return "expired";
      this.#finish(id, "denied", by, reason, null, now);
      return row.state;
    });
  }

  /** Expires every held message past its time: returns their rows (for the audit). */
  expireDue(now = Date.now()): ApprovalRow[] {
    return this.state.transaction(() => {
      const due = (
        this.state.db.query("SELECT * FROM approvals WHERE state = 'held' AND expires <= ?").all(now) as RawRow[]
      ).map(toRow);
      for (const r of due) this.#finish(r.id, "expired", null, "no decision before it expired", null, now);
      return due;
    });
  }

  /**
   * Deletes the rows of messages decided DECIDED_APPROVALS_KEPT_MS or longer before the older of `now` and the newest
   * change in the table (a message held or decided), and returns how many: sent, failed, denied and expired ones,
   * whose records and notices went at the decision. Held, sending and needs-check rows stay whatever their age.
   */
  pruneDecided(now = Date.now()): number {
    return this.state.db
      .query(
        `DELETE FROM approvals WHERE state IN ('sent', 'failed', 'denied', 'expired')
           AND updated <= MIN(?1, (SELECT MAX(updated) FROM approvals)) - ?2`,
      )
      .run(now, DECIDED_APPROVALS_KEPT_MS).changes;
  }

  /**
   * At start: a message left in "sending" by a process that died during its replay may or may not have reached
   * the upstream (nothing can ask it). It is never sent again automatically (at most once): it becomes
   * "needs-check" for a person to look at the recipient's mailbox or the upstream's log (docs/approvals.md). Only
   * when the process that claimed it is gone (`alive`, ownerAlive): a replay still running in another process
   * (`mailgator approvals approve` while serve starts) is left to finish, and records its own outcome.
   */
  recover(now = Date.now(), alive: (owner: string | null) => boolean = ownerAlive): ApprovalRow[] {
    return this.state.transaction(() => {
      const stuck = (
        this.state.db.query("SELECT * FROM approvals WHERE state = 'sending'").all() as (RawRow & {
          claimed_by: string | null;
        })[]
      )
        .filter((r) => !alive(r.claimed_by))
        .map(toRow);
      for (const r of stuck) this.#toCheck(r, "the process stopped during the replay", now);
      return stuck;
    });
  }

  /**
   * Approve, step three when the upstream's answer never came after the final dot went out (the connection was
   * lost): only the upstream knows whether it took the message, so "sending" becomes "needs-check", as at start
   * (`recover`), and it is never sent again. False when it was not "sending".
   */
  needsCheck(id: string, reason: string, now = Date.now()): boolean {
    return this.state.transaction(() => {
      const row = this.row(id);
      if (row?.state !== "sending") return false;
      this.#toCheck(row, reason, now);
      return true;
    });
  }

  #toCheck(row: ApprovalRow, reason: string, now: number): void {
    this.#update(row.id, "needs-check", row.decidedBy, reason, null, now);
    // The credentials are not needed any more: nothing replays a needs-check message.
    const box = this.state.get(HELD_KIND, row.id);
    if (box === null) return;
    const stored = JSON.parse(box.toString("utf8")) as StoredHeld;
    if (stored.credentials) this.state.put(HELD_KIND, row.id, JSON.stringify({ ...stored, credentials: null }));
  }

  // Approvers' notices (docs/approvals.md "Notices"): which were accepted upstream, and which messages still owe some.

  #approver(id: string, address: string): string {
    return createHmac("sha256", this.#noticeKey).update(`${id}\0${address.toLowerCase()}`).digest("hex");
  }

  /** Whether the upstream accepted the notice of message `id` to `address`. */
  noticeSent(id: string, address: string): boolean {
    return (
      this.state.db
        .query("SELECT 1 FROM approval_notices WHERE id = ? AND approver = ?")
        .get(id, this.#approver(id, address)) !== null
    );
  }

  /** Records that the upstream accepted the notice to `address`; only while the message is held. */
  markNoticeSent(id: string, address: string, now = Date.now()): void {
    this.state.db
      .query(
        "INSERT OR IGNORE INTO approval_notices (id, approver, sent) " +
          "SELECT ?, ?, ? WHERE EXISTS (SELECT 1 FROM approvals WHERE id = ? AND state = 'held')",
      )
      .run(id, this.#approver(id, address), now, id);
  }

  /** Every approver of the message has its notice: nothing more to send for it after a restart. */
  markNotified(id: string): void {
    this.state.db.query("UPDATE approvals SET notified = 1 WHERE id = ?").run(id);
  }

  /** Held messages, not expired at `now`, that still owe an approver a notice. */
  unnotified(now = Date.now()): ApprovalRow[] {
    return (
      this.state.db
        .query("SELECT * FROM approvals WHERE state = 'held' AND notified = 0 AND expires > ? ORDER BY created, id")
        .all(now) as RawRow[]
    ).map(toRow);
  }

  #update(
    id: string,
    state: ApprovalState,
    by: string | null,
    reason: string | null,
    upstreamReply: string | null,
    now: number,
  ): void {
    this.state.db
      .query("UPDATE approvals SET state = ?, decided_by = ?, reason = ?, upstream_reply = ?, updated = ? WHERE id = ?")
      .run(state, by, reason, upstreamReply, now, id);
  }

  #finish(
    id: string,
    state: ApprovalState,
    by: string | null,
    reason: string | null,
    upstreamReply: string | null,
    now: number,
  ): void {
    this.#update(id, state, by, reason, upstreamReply, now);
    this.state.delete(HELD_KIND, id);
    this.#deleteParts(id);
    this.state.db.query("DELETE FROM approval_notices WHERE id = ?").run(id);
  }

  // Approval links (docs/approvals.md "Links"): HMAC-SHA256 under a key derived from the secrets key, over the id,
  // the message's hash and its expiry; single use (token_used).

  token(row: ApprovalRow): string {
    // A withdrawn link's successor covers its generation too; the first generation's is as it always was.
    const generation = row.linkGeneration === 0 ? "" : `\0${row.linkGeneration}`;
    return createHmac("sha256", this.#tokenKey)
      .update(`${row.id}\0${row.sha256}\0${row.expires}${generation}`)
      .digest("base64url");
  }

  /**
   * Records `mailboxes`, the mailboxes agents can read under the config in force, and when one of them was not among
   * those recorded before, withdraws the link of every message still held, in the same transaction: a notice sent
   * earlier, link and all, may lie in that mailbox (an approver's address, or the Sent folder of the account it was
   * sent as), and the link is all it takes to approve (docs/approvals.md "Links"). The withdrawn links stop working;
   * a notice sent from now on carries the next one. Returns the messages whose links were withdrawn. The first set
   * recorded withdraws nothing: there is none to compare it with.
   */
  withdrawLinksForNewReaders(mailboxes: Iterable<string>): ApprovalRow[] {
    const readers = new Set<string>();
    for (const m of mailboxes) readers.add(createHmac("sha256", this.#readerKey).update(m).digest("base64url"));
    return this.state.transaction(() => {
      const known = new Set(
        (this.state.db.query("SELECT reader FROM approval_link_readers").all() as { reader: string }[]).map(
          (r) => r.reader,
        ),
      );
      const recorded = known.has("");
      const grew = [...readers].some((r) => !known.has(r));
      if (!grew && recorded && known.size === readers.size + 1) return [];
      this.state.db.run("DELETE FROM approval_link_readers");
      const insert = this.state.db.query("INSERT INTO approval_link_readers (reader) VALUES (?)");
      insert.run("");
      for (const r of readers) insert.run(r);
      if (!recorded || !grew) return [];
      const rows = this.state.db
        .query("UPDATE approvals SET link_generation = link_generation + 1 WHERE state = 'held' RETURNING *")
        .all() as RawRow[];
      return rows.map(toRow);
    });
  }

  tokenValid(row: ApprovalRow, token: string): boolean {
    const want = Buffer.from(this.token(row));
    const got = Buffer.from(token);
    return got.length === want.length && timingSafeEqual(got, want);
  }

  /** Whether `token` is the link of one of the row's earlier, withdrawn generations (withdrawLinksForNewReaders). */
  tokenWithdrawn(row: ApprovalRow, token: string): boolean {
    for (let generation = 0; generation < row.linkGeneration; generation++)
      if (this.tokenValid({ ...row, linkGeneration: generation }, token)) return true;
    return false;
  }

  tokenUsed(id: string): boolean {
    const r = this.state.db.query("SELECT token_used FROM approvals WHERE id = ?").get(id) as {
      token_used: number;
    } | null;
    return r === null || r.token_used !== 0;
  }

  /** Marks the link used; false when it already was (another click won). */
  useToken(id: string): boolean {
    return this.state.transaction(() => {
      if (this.tokenUsed(id)) return false;
      this.state.db.query("UPDATE approvals SET token_used = 1 WHERE id = ?").run(id);
      return true;
    });
  }

  /**
   * At start: gives back the link of every message still held whose link is marked used. A link is marked used when
   * a decision begins and given back when it fails; a message still held with its link used was being decided
   * when the process stopped (killed, out of memory, power lost) before the decision changed its state, so nothing
   * was sent and the approvers' link must work again. Returns how many were given back.
   */
  releaseUsedTokens(): number {
    return this.state.db.query("UPDATE approvals SET token_used = 0 WHERE state = 'held' AND token_used != 0").run()
      .changes;
  }

  /**
   * Gives the link back after a POST that decided nothing (it could not send, or another decider had the message):
   * it may be used again. Whatever the state: the page checks the state before the link, so a link given back opens
   * only a message that is held (again).
   */
  releaseToken(id: string): void {
    this.state.db.query("UPDATE approvals SET token_used = 0 WHERE id = ?").run(id);
  }
}

/**
 * This process, as a claim names it (ApprovalStore.claim): its pid and, where /proc tells it (Linux), its start time in
 * clock ticks since boot, so that a later process given the same pid is not taken for it.
 */
export function thisProcess(): string {
  ownProcess ??= `${process.pid}:${startTime(process.pid) ?? ""}`;
  return ownProcess;
}
let ownProcess: string | undefined;

/** Fields 3 (state) and 22 (starttime) of /proc/PID/stat (proc(5)), or null when it cannot be read. */
function procStat(pid: number): { state: string; start: string } | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "latin1");
    // Field 2, the command name in parentheses, may hold spaces and parentheses: the fields after it follow ")".
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return fields[19] === undefined ? null : { state: fields[0] ?? "", start: fields[19] };
  } catch {
    return null;
  }
}

function startTime(pid: number): string | null {
  return procStat(pid)?.start ?? null;
}

/**
 * Whether the process a claim names (thisProcess()) still runs. Null (a claim made before claims named their
 * process): gone. By /proc/PID/stat where it can be read: the same start time (a pid reused by another process is
 * gone) and not exited (a zombie, `Z` or `X`, is gone). Where it cannot (no /proc, or one that hides other users'
 * processes, as the systemd unit's ProtectProc=invisible does for a command run as root): by `kill(pid, 0)`, which
 * counts a pid reused by another process as alive, so that the message stays "sending" (never sent again) until that
 * one ends too: never a live replay taken for a dead one.
 */
export function ownerAlive(owner: string | null): boolean {
  const m = owner === null ? null : /^(\d+):(\d*)$/.exec(owner);
  if (m === null) return false;
  const pid = Number(m[1]);
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  if (pid === process.pid) return owner === thisProcess();
  const stat = procStat(pid);
  if (stat !== null) return (m[2] === "" || stat.start === m[2]) && stat.state !== "Z" && stat.state !== "X";
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * The record of kind "held": the details, and either how the bytes are stored in parts (`parts`, `bytes`) or, in a
 * record written before parts, the bytes themselves (`message`, base64).
 */
type StoredHeld = HeldDetails & { message?: string; parts?: number; bytes?: number };
