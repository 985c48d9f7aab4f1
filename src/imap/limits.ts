/**
 * Every limit of the IMAP side, in one place, with the reason next to it (docs/imap.md "Structure"). The wire
 * layer's own sizes and counts stay in src/imap/wire/limits.ts (the wire layer depends on nothing above it) and are
 * re-exported here; the configurable ones are `[limits]` (docs/config.md, src/config/limits.ts).
 */

import type { UpstreamTimeouts } from "./upstream.ts";
import { MAX_RESPONSE_LINE } from "./wire/limits.ts";

export * from "./wire/limits.ts";

// ---- session -------------------------------------------------------------------------------------------------

/** Pauses reading from the agent when this much is buffered ahead of the running command. */
export const READ_AHEAD_LIMIT = 256 * 1024;

/** Upstream connect, TLS handshake and per-command deadlines. */
export const DEFAULT_TIMEOUTS: UpstreamTimeouts = { connectMs: 10_000, handshakeMs: 15_000, commandMs: 5 * 60_000 };

/**
 * Failed logins from one address: +500 ms per failure within 15 minutes, up to 10 s (docs/config.md "Who connects").
 */
export const LOGIN_THROTTLE = { stepMs: 500, maxMs: 10_000, windowMs: 15 * 60_000, maxTracked: 10_000 };

/**
 * The rules' answers a session remembers per folder name (`FolderRights`, src/imap/folders.ts): a LIST of a large
 * mailbox asks each folder once. Keyed by the names the agent asks about, which it chooses (STATUS or SELECT of any
 * name, up to MAX_LINE long), so a session that lasts for months would otherwise keep every name it ever asked
 * about (120 MB for 2,000 STATUS of 60,000-character names). Cleared when either bound is passed; forgetting costs
 * only evaluating the rules again (docs/reliability.md "Long runs").
 */
export const FOLDER_RIGHTS_ENTRIES = 4096;

/** Characters of folder names `FolderRights` remembers at most (cleared past it, as at FOLDER_RIGHTS_ENTRIES). */
export const FOLDER_RIGHTS_CHARS = 256 * 1024;

/** Renew upstream IDLE this often (RFC 2177 §3: servers may end an IDLE after 30 minutes). */
export const IDLE_RENEW_MS = 25 * 60 * 1000;

// ---- upstream sessions kept for the next login (src/imap/upstream-pool.ts, docs/imap.md) -------------------

/**
 * Logged-in upstream sessions kept per account (and upstream server and credentials) after their agents logged
 * out. A login takes one instead of connecting and logging in again: no new server process, no password check
 * upstream. Kept sessions are the account's sessions of a moment before (each was an agent's), at most this many:
 * under Dovecot's default per-user limit (`mail_max_userip_connections`, 10), with room for the agents' own.
 */
export const UPSTREAM_POOL_PER_ACCOUNT = 8;

/** Kept sessions in all, whatever their accounts. */
export const UPSTREAM_POOL_MAX = 64;

/** A kept session not taken within this is logged out: well under the 30 minutes a server may idle (RFC 9051 §5.4). */
export const UPSTREAM_POOL_IDLE_MS = 30_000;

/**
 * The UNSELECT that leaves a session's mailbox before it is kept must be answered within this, or it is closed; so
 * must the end of its IDLE (DONE answered) when its agent hung up in IDLE.
 */
export const UPSTREAM_POOL_UNSELECT_MS = 5_000;

// ---- commands ------------------------------------------------------------------------------------------------

/**
 * Commands refused as malformed (a line that does not parse, a framing error) after which the session ends with
 * `* BYE`: every one counts before login, and after it those within BAD_COMMAND_WINDOW_MS of the first one counted
 * (a well-formed command between them does not start the count again: alternating the two would otherwise write
 * refusal rows at line speed). Before login any refused command counts (a cancelled AUTHENTICATE, a second
 * STARTTLS), as nothing else paces them. Each such line costs an audit row (`(refused)`), so a client that sends
 * garbage cannot fill the audit log or its queue from one connection. Dovecot ends a session after 20 bad commands
 * too.
 */
export const MAX_BAD_COMMANDS = 20;

/**
 * Pass-through logins whose upstream check goes on after their agents hung up (docs/audit.md "What a row records":
 * the row waits for upstream's verdict), at once on one listener. Those agents hold no connection any more, so
 * max_connections does not bound these upstream connections; each lasts until upstream answers (Dovecot refuses
 * after 2 s), at most DEFAULT_TIMEOUTS.handshakeMs. One more is cut at once: its verdict not known, it is a refused
 * login, counted toward the lock-out. Legitimate clients rarely hang up in the middle of a login.
 */
export const MAX_ABANDONED_LOGIN_CHECKS = 32;

/** After login, MAX_BAD_COMMANDS malformed commands within this end the session; a client's slip now and then not. */
export const BAD_COMMAND_WINDOW_MS = 60_000;

/** Rows queued in the audit log past which a session waits before its next command (src/audit/log.ts). */
export { AUDIT_BACKLOG_PAUSE_ROWS } from "../audit/index.ts";

/**
 * `UID SEARCH ALL` runs at SELECT until one comes back without upstream reporting an EXPUNGE during it (another
 * session's; commands/select.ts): the pipelined one and two more. A folder that changes during
 * each of them fails the SELECT with `NO [UNAVAILABLE]` rather than open a view whose numbers may be off.
 */
export const SELECT_SEARCHES = 3;

/**
 * Ranges per upstream command: Dovecot refuses command lines over 64 KB (`imap_max_line_length`), and a filtered
 * folder's visible UIDs are scattered (30,000 of 100,000 make some 20,000 ranges). 1,000 ranges stay under 22 KB.
 */
export const UPSTREAM_SET_RANGES = 1000;

/**
 * Octets of a FETCH, STORE, COPY or MOVE command in a filtered folder besides its message set, as it would go
 * upstream: past it the command is refused (`NO [LIMIT]`) before anything goes upstream. The set a filtered
 * folder's command carries upstream is longer where hidden messages lie between the agent's than where they were
 * expunged (its ranges stop at each hidden one); with the rest of the command kept below this, the longest set
 * (UPSTREAM_SET_RANGES ranges of 22 octets at most) still fits Dovecot's 64 KiB command line, so whether the
 * command fits never depends on hidden messages (docs/protocol.md §3 "UID sets sent upstream").
 */
export const UPSTREAM_REST_OCTETS = 40 * 1024;

/**
 * Sequence and UID sets in one SEARCH, SORT or THREAD, at any depth (commands/search.ts `upstreamCriteria`). The
 * sets among the keys that must all match are intersected range by range, whatever their number; each set inside
 * NOT or OR costs a walk of the messages it names, up to the whole view, so this bounds a command's work at a few
 * dozen walks of the view. Clients send one or two. Past it: `NO [LIMIT]` and nothing goes upstream.
 */
export const MAX_SEARCH_SETS = 64;

/**
 * UID ranges that the sets inside NOT or OR of one SEARCH, SORT or THREAD may put into its upstream command. Unlike
 * a long set among the keys that must all match, which is applied locally, they must go upstream, in one command
 * line: the ranges one upstream command carries elsewhere (UPSTREAM_SET_RANGES, under Dovecot's 64 KB). Counted in
 * runs of the agent's view (one upstream range each, hidden messages between included), never in upstream runs,
 * which would make the answer depend on hidden messages (docs/protocol.md §3). Past it: `NO [LIMIT]`.
 */
export const MAX_SEARCH_NESTED_RANGES = UPSTREAM_SET_RANGES;

/**
 * THREAD (commands/thread.ts) reads at most this many octets of each message's Date, Subject, Message-ID,
 * In-Reply-To and References fields (`BODY.PEEK[HEADER.FIELDS (...)]<0.n>`), as it holds them for every match at
 * once: a sender cannot make one THREAD hold megabytes per message. Real References fields stay far below it; a
 * longer block is cut, and the ids past the cut are not read (docs/protocol.md §2).
 */
export const THREAD_HEADER_OCTETS = 16 * 1024;

/**
 * THREAD REFERENCES (src/imap/ext/thread.ts) links at most this many msg-ids of each message's References field,
 * the last ones (the nearest ancestors, which decide the message's parent; RFC 5256 §4 step 1.C). Each id is a
 * node held for the whole command: 16 KiB of References can name some 640 ids, and a folder of such messages, which
 * anyone can mail, made one THREAD hold gigabytes. Real threads name far fewer (mail clients keep about a dozen).
 */
export const MAX_THREAD_REFERENCES = 32;

/**
 * Characters of a Subject (after RFC 5256 §2.1 step 1: encoded words decoded, white space collapsed) from which
 * THREAD extracts the base subject (src/imap/ext/keys.ts); the rest is not compared. Extraction removes one blob
 * `[...]` at a time, so its work grows with the square of the length, and anyone who mails the account writes the
 * Subject: 200 messages whose Subject was 16 KiB of blobs held the proxy's one thread for 12.5 s per THREAD. Real
 * subjects are far shorter; two that differ only after this many characters are grouped as one subject.
 */
export const THREAD_SUBJECT_CHARS = 1024;

/**
 * Steps one THREAD REFERENCES may take walking up the containers it links (loop checks, RFC 5256 §4 steps 1.B and
 * 1.C) and unlinking children: crafted References chains make these walks grow with the square of the number of
 * messages (3,000 messages held the proxy's one thread for 4.8 s). Past it the THREAD is refused with `NO [LIMIT]`,
 * after some 0.3 s. A thread of 2,000 replies each naming its 32 nearest ancestors, or 50,000 messages in threads
 * of ten, stay far below it (tests/imap/sort-thread-unit.test.ts).
 */
export const MAX_THREAD_LINK_STEPS = 100_000_000;

/**
 * The longest list of hidden UIDs a probe row's `target` holds (docs/filtering.md "Probes"): UIDs past it are
 * counted in `hiddenCount`, not listed, and the list ends in `…`.
 */
export const PROBE_TARGET_CHARS = 512;

/**
 * Keywords a filtered folder's `* FLAGS` may list to the agent in one selection (docs/protocol.md §3, "Keywords of
 * a filtered folder"): each is a keyword of a message the agent was shown. Past it no further `* FLAGS` is sent
 * (the FETCH still shows the keyword): what a session keeps and each update's length stay bounded when upstream
 * holds keywords without end. Dovecot accepts a thousand keywords on one message.
 */
export const MAX_KEYWORDS_TOLD = 1000;

// ---- classification of filtered folders ----------------------------------------------------------------------

/** UIDs per upstream FETCH: bounds one response batch; measured in scripts/bench/classify.ts. */
export const CLASSIFY_CHUNK = 2000;

/**
 * Unclassified UIDs from which a helper session is worth its upstream login and EXAMINE. Measured on a folder
 * Dovecot had never opened (docs/filtering.md, Figures): one session reads 100,000 messages in about 2.8 s, two
 * in about 1.7 s; below some ten chunks the helper's own EXAMINE would take most of the time it could save.
 */
export const CLASSIFY_PARALLEL_MIN = 10 * CLASSIFY_CHUNK;

/**
 * Decisions remembered per distinct header section (a pure function of its bytes): mailboxes repeat the same
 * From line many times over. Cleared when full.
 */
export const MEMO_ENTRIES = 4096;

/**
 * Header sections longer than this are decided each time, not remembered: the memo is keyed by the section's
 * bytes, and a sender of long headers would otherwise make each session's memo hold megabytes per entry.
 */
export const MEMO_KEY_OCTETS = 4096;

/** Octets of keys one memo holds at most (cleared past it, as at MEMO_ENTRIES). */
export const MEMO_BYTES = 1024 * 1024;

/**
 * Octets of a message's From, To, Cc, Bcc and Subject fields that classification reads
 * (`BODY.PEEK[HEADER.FIELDS (...)]<0.n>`, one more to tell a longer section): anyone who can mail the account
 * chooses them, and parsing address lists costs some 0.2 s of the proxy's one thread per MiB, per session that
 * classifies the message. A longer section is unreadable: its fields are unknown, which denies (the message stays
 * hidden where the rules read those fields). Real ones are far below it (a To of 1,000 addresses is some 30 KB).
 */
export const CLASSIFY_HEADER_OCTETS = 64 * 1024;

/** BODYSTRUCTURE nesting deeper than this leaves has_attachment unknown (the SMTP side's MAX_MIME_DEPTH spirit). */
export const MAX_STRUCTURE_DEPTH = 32;

/** How long the classification cache waits for a lock held by another process (SQLite busy_timeout). */
export const BUSY_TIMEOUT_MS = 2000;

/**
 * A classification cache row not read nor written for this long is removed (docs/filtering.md "The cache"): rows of
 * folders deleted or renamed by another client, or of a rules fingerprint a reload replaced, would otherwise stay
 * for good. Removed at start and every CACHE_PRUNE_INTERVAL_MS after.
 */
export const CACHE_ROW_IDLE_MS = 30 * 24 * 3600 * 1000;

/** How often a running proxy removes idle classification cache rows. */
export const CACHE_PRUNE_INTERVAL_MS = 24 * 3600 * 1000;

/**
 * A row read at SELECT is marked used again (its `updated_at` set) only when its mark is older than this: the
 * update rewrites the whole row, UID blobs included, so at most once a day per row.
 */
export const CACHE_TOUCH_MS = 24 * 3600 * 1000;

// ---- memory ----------------------------------------------------------------------------------------------------

/**
 * Octets of upstream responses on their way to agents that all sessions together may hold (src/imap/memory.ts,
 * docs/reliability.md "Response memory"): four of the largest message the proxy relays (MAX_RESPONSE_LITERAL), so
 * that four agents can fetch such a message at once and the fifth waits instead of the proxy's memory growing by
 * another 128 MiB.
 */
export const RESPONSE_MEMORY_BUDGET = 512 * 1024 * 1024;

/**
 * Octets of one response's literals that are not counted against RESPONSE_MEMORY_BUDGET: a response of ordinary
 * messages never waits for the budget; from the literal that takes it past this, every literal is counted.
 */
export const RESPONSE_MEMORY_FREE = 1024 * 1024;

/**
 * Octets reserved at once when a response's lines pass RESPONSE_MEMORY_FREE (a SEARCH, SORT or THREAD result of a
 * large folder): the longest response line the proxy reads, with its line end, or the whole budget if smaller.
 * A line's length is not announced, so this is what lets its octets be counted before they are read without the
 * line waiting for more half-way (docs/reliability.md "Response memory"); the rest is given back once the
 * response is framed.
 */
export const RESPONSE_LINE_RESERVATION = MAX_RESPONSE_LINE + 2;

/**
 * The share of RESPONSE_MEMORY_BUDGET that counted responses may leave to the garbage collector before the proxy
 * asks it to collect (src/imap/memory.ts `discarded`): an eighth, 64 MiB. A counted response leaves its read
 * chunks once copied into its literal, and itself once delivered; the runtime collected them late, and 9 agents
 * not reading a 100 MiB message each took the proxy to twice the budget (docs/reliability.md "Response memory").
 * A collection costs some 5 to 20 ms of the proxy's one thread, about two per 64 MiB of large messages relayed.
 */
export const RESPONSE_GARBAGE_SHARE = 8;

/**
 * Octets of agents' command literals (an APPEND's message above all) that all sessions together may hold while their
 * commands are read and run (docs/reliability.md "Command memory"): a command is framed whole before it is parsed
 * and decided, so each session may hold up to MAX_COMMAND_BYTES, and one agent's MAX_SESSIONS_PER_AGENT sessions
 * ten times that (some 760 MiB of RSS measured; under COMPRESS it cost the agent 50 KiB of deflated input per
 * session). Five of the largest APPEND at once; a sixth waits for room.
 */
export const COMMAND_MEMORY_BUDGET = 256 * 1024 * 1024;

/**
 * Octets of one command's literals that are not counted against COMMAND_MEMORY_BUDGET: commands with ordinary
 * arguments (a password, a search string, a small message) never wait for the budget.
 */
export const COMMAND_MEMORY_FREE = 1024 * 1024;
