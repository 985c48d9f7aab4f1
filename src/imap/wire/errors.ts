/**
 * Typed errors of the IMAP wire layer. Expected failures are returned as values
 * (`Parsed<T>`, framer `error` events); nothing in this layer throws on bad input.
 */

/** What went wrong; stable identifiers that tests and the audit log can match on. */
export type WireErrorCode =
  | "syntax" // the bytes do not match the grammar
  | "unknown-command" // well-formed but not on the allowlist (docs/protocol.md §0.2)
  | "unsupported" // a known extension we refuse (CONDSTORE modifiers, SAVE, X-GM-*...)
  | "line-too-long"
  | "literal-too-big"
  | "literal-size-invalid" // unparsable or overflowing `{n}`
  | "literal8-refused" // `~{n}` without BINARY
  | "too-many-literals"
  | "command-too-big"
  | "response-too-big"
  | "nesting-too-deep"
  | "too-many-items"
  | "input-overflow" // fed too far ahead of what the owner pulled
  | "mailbox-name" // invalid or non-canonical mailbox name
  | "bad-charset";

/**
 * One error with enough context to answer it: `fatal` errors get `BYE` and a closed
 * connection, the others a tagged `BAD` (with `responseCode`, e.g. `TOOBIG`, if set).
 */
export class WireError extends Error {
  override readonly name = "WireError";
  readonly code: WireErrorCode;
  readonly fatal: boolean;
  /** Tag of the command the error belongs to, when one could be read. */
  readonly tag: string | null;
  /** Response code to put in the reply, e.g. `TOOBIG`, `BADCHARSET`, `CLIENTBUG`. */
  readonly responseCode: string | null;
  /** Byte offset in the line segment where parsing stopped (-1 if not applicable). */
  readonly offset: number;
  /** The command's name (after `UID`, if any), when the error belongs to a command whose name could be read. */
  readonly command: string | null;
  /** The message without the module's prefix: what a peer is told (`BAD`, `BYE`) and an audit row records. */
  readonly detail: string;

  constructor(
    code: WireErrorCode,
    message: string,
    opts: {
      fatal?: boolean;
      tag?: string | null;
      responseCode?: string | null;
      offset?: number;
      command?: string | null;
    } = {},
  ) {
    super(`imap-wire: ${message}`);
    this.detail = message;
    this.code = code;
    this.fatal = opts.fatal ?? false;
    this.tag = opts.tag ?? null;
    this.responseCode = opts.responseCode ?? null;
    this.offset = opts.offset ?? -1;
    this.command = opts.command ?? null;
  }

  /** The same error, attributed to a command tag (and the command's name, when known). */
  withTag(tag: string | null, command: string | null = this.command): WireError {
    return new WireError(this.code, this.detail, {
      fatal: this.fatal,
      tag,
      responseCode: this.responseCode,
      offset: this.offset,
      command,
    });
  }
}

/** Result of a parse that can fail on input: no exceptions on the expected path. */
export type Parsed<T> = { ok: true; value: T } | { ok: false; error: WireError };
