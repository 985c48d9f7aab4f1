/**
 * Every size and count the IMAP wire layer enforces, with the reason next to it.
 *
 * Limits are checked before memory is allocated for the thing they bound. Breaking one
 * yields a typed `WireError` (see errors.ts) that the session maps to `BAD` or `BYE`.
 */

/**
 * Longest command or response line (one segment between literals), CRLF excluded.
 * RFC 7162 §4 asks servers to accept lines of at least 8192 octets; Dovecot's default
 * `imap_max_line_length` is 64 KiB. A longer agent line is fatal (`BYE`): without
 * reading the whole line we cannot know whether it ends in a `{n+}` literal, so
 * resynchronising on the next CRLF could execute literal bytes as a command.
 */
export const MAX_LINE = 64 * 1024;

/** The RFC 7162 §4 floor that MAX_LINE must never go below (tests pin it). */
export const MIN_ACCEPTED_LINE = 8192;

/**
 * Largest message an agent may APPEND, i.e. the largest literal in an APPEND command.
 * 50 MiB matches common submission limits (Gmail 25 MB attachments, base64-inflated).
 */
export const MAX_APPEND_MESSAGE = 50 * 1024 * 1024;

/**
 * Largest literal in any other agent command (passwords, search strings, mailbox names).
 * Nothing legitimate needs more; it bounds what a pipelined SEARCH can make us hold.
 */
export const MAX_ARGUMENT_LITERAL = 64 * 1024;

/**
 * Literals in one command. APPEND needs one (three if the mailbox and date are literals);
 * a SEARCH with many string keys may need more. Bounds per-command bookkeeping.
 */
export const MAX_LITERALS_PER_COMMAND = 32;

/**
 * URL parts in one APPEND with CATENATE (RFC 4469), over all its messages: each is fetched from upstream before the
 * APPEND (src/imap/commands/catenate.ts). As many as a command may have literals, so URL and TEXT parts are bounded
 * alike.
 */
export const MAX_CATENATE_URLS = MAX_LITERALS_PER_COMMAND;

/**
 * Total octets of one agent command (all lines and literals, including bytes discarded
 * for a refused `{n+}`): one APPEND message plus generous room for its arguments.
 */
export const MAX_COMMAND_BYTES = MAX_APPEND_MESSAGE + 1024 * 1024;

/**
 * LITERAL+ (RFC 7888 §3) lets an agent send `{n+}` of any size, so a literal over the command's
 * limit (`MAX_APPEND_MESSAGE`, `MAX_ARGUMENT_LITERAL`, `MAX_COMMAND_BYTES`) is already on its way
 * when it is refused. Up to this many octets of one command (lines, literals and drained octets)
 * are read and dropped, never buffered, then refused with a tagged `BAD [TOOBIG]`; a `{n+}` that
 * would pass it closes the connection with `* BYE [TOOBIG]` before its octets are read
 * (RFC 7888 §4). Draining costs bandwidth, not memory (docs/imap-wire.md "Limits").
 */
export const MAX_NONSYNC_DRAIN = MAX_COMMAND_BYTES;

/**
 * Longest upstream response line. `UID SEARCH ALL` on a large mailbox returns every UID
 * on one line (~8 octets each), so 32 MiB covers about four million messages.
 */
export const MAX_RESPONSE_LINE = 32 * 1024 * 1024;

/** Largest literal in an upstream response (a message body someone else may have sent). */
export const MAX_RESPONSE_LITERAL = 128 * 1024 * 1024;

/** Total octets of one upstream response (lines plus literals), like imapflow's cap. */
export const MAX_RESPONSE_BYTES = 160 * 1024 * 1024;

/** Literals in one upstream response: a FETCH with BODY[n] for many parts has one each. */
export const MAX_LITERALS_PER_RESPONSE = 4096;

/**
 * Octets fed to a framer but not yet framed, when its owner has stopped pulling events
 * (e.g. while a literal decision is pending). A well-behaved client sends nothing while
 * waiting for `+`; this bounds a misbehaving one. Fatal when exceeded.
 */
export const MAX_BUFFERED_INPUT = 4 * 1024 * 1024;

/**
 * Nesting depth of parenthesized lists. BODYSTRUCTURE nests two levels per MIME level;
 * 64 allows 30 MIME levels (Dovecot caps MIME nesting at 100 parts, not depth) and stops
 * recursion before it can exhaust the stack.
 */
export const MAX_LIST_DEPTH = 64;

/** Nesting depth of SEARCH keys (NOT, OR, parentheses) in agent commands. */
export const MAX_SEARCH_DEPTH = 32;

/** Elements in one list or sequence set in an agent command (flags, FETCH items, ranges). */
export const MAX_LIST_ITEMS = 1024;

/**
 * Patterns in one LIST-EXTENDED command (`LIST "" (p1 p2 ...)`, RFC 5258 §3). Clients send a handful (the
 * special-use names, a folder and its children); each pattern is matched against every visible folder.
 */
export const MAX_LIST_PATTERNS = 32;

/** Largest number the grammar accepts: `number` is an unsigned 32-bit integer (RFC 9051 §9). */
export const MAX_NUMBER = 0xffff_ffff;

/** Largest `number64` (RFC 9051 §9: 63-bit), kept within exact JS integers. */
export const MAX_NUMBER64 = Number.MAX_SAFE_INTEGER;
