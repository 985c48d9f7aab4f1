/**
 * The JSON description of running upstream servers: what `start.ts` prints and writes to
 * `<dir>/upstreams.json`, and what tests read through `MAILGATOR_UPSTREAMS`.
 */
import { readFileSync } from "node:fs";
import type { TrackedProcess } from "./processes.ts";

/** A mailbox user known to Dovecot (login name = e-mail address). */
export interface UpstreamUser {
  readonly user: string;
  readonly password: string;
  /** The address Postfix delivers into this user's INBOX (same as `user`). */
  readonly address: string;
  /** The user's Maildir (INBOX at the root, other folders as Maildir++ `.Name` directories). */
  readonly maildir: string;
}

/**
 * The local OAuth2 authorization server (scripts/upstreams/oauth-server.ts), for tests and the
 * demo only: auto-consent, opaque tokens, control endpoints. docs/upstreams.md "OAuth2".
 */
export interface UpstreamOAuth {
  /** Base URL of the server (`http://127.0.0.1:PORT`). */
  readonly issuer: string;
  /** RFC 6749 §4.1.1 authorization endpoint; answers at once with a 302 to `redirect_uri` (auto-consent). */
  readonly authorizeUrl: string;
  /** RFC 6749 §3.2 token endpoint: authorization_code, refresh_token, client_credentials, device_code. */
  readonly tokenUrl: string;
  /** RFC 8628 §3.1 device authorization endpoint. */
  readonly deviceUrl: string;
  /** RFC 7662 introspection endpoint Dovecot's oauth2 passdb calls (HTTP Basic client auth). */
  readonly introspectUrl: string;
  /** Base of the test control endpoints (`POST <controlUrl>/lifetime?seconds=N`, ...). */
  readonly controlUrl: string;
  readonly clientId: string;
  /** Secret of the confidential client; without it the same client is public and must use PKCE. */
  readonly clientSecret: string;
  /** A Dovecot user that logs in with tokens only; tokens are for it unless `login_hint` names another user. */
  readonly user: { readonly user: string; readonly address: string; readonly maildir: string };
  readonly log: string;
}

export interface Upstreams {
  /** Format version of this description. */
  readonly version: 1;
  /** Address every server listens on. */
  readonly host: "127.0.0.1";
  /** Name the certificate is valid for (besides the IP address). */
  readonly tlsName: "localhost";
  readonly ports: {
    /** Dovecot IMAP, plain; offers STARTTLS; LOGIN/AUTHENTICATE PLAIN allowed without TLS. */
    readonly imap: number;
    /** Dovecot IMAP over implicit TLS. */
    readonly imaps: number;
    /** Postfix, plain; offers STARTTLS and AUTH PLAIN/LOGIN; relays without AUTH from 127.0.0.0/8. */
    readonly smtp: number;
    /** Postfix over implicit TLS (like 465); same rules as `smtp`. */
    readonly smtps: number;
    /**
     * Postfix, plain, whose EHLO does not offer 8BITMIME (RFC 6152; `smtpd_discard_ehlo_keywords`); otherwise the
     * same as `smtp`. Postfix itself still accepts 8-bit data there: what a client sends is the client's choice.
     */
    readonly smtp7bit: number;
    /** The local OAuth2 authorization server (HTTP); its URLs are under `oauth`. */
    readonly oauth: number;
    /** nginx mail proxy relaying IMAP to Dovecot's plain port (only with --nginx). */
    readonly nginxImap?: number;
  };
  /** PEM of the private CA that signed the servers' certificate: trust this file. */
  readonly caFile: string;
  /**
   * Domain of the test users: any address `local@<userDomain>` is delivered to Maildir
   * `<maildirRoot>/<userDomain>/<local>/Maildir/`.
   */
  readonly userDomain: string;
  /** Users made at start; tests add their own with tests/fixtures (no restart needed). */
  readonly users: readonly UpstreamUser[];
  /** Folders every new user has (special-use folders marked in LIST). */
  readonly folders: readonly string[];
  readonly maildirRoot: string;
  /** Maildir that receives mail for every address outside `userDomain`, one file per envelope recipient. */
  readonly sink: string;
  /** Dovecot passwd-files, one per user named after the login; a new file is a new user at the next login. */
  readonly usersDir: string;
  /** Uid and gid that own every Maildir file. */
  readonly mailUid: number;
  /** Local parts that trigger Postfix's test hooks at RCPT TO. */
  readonly hooks: { readonly reject: string; readonly tempfail: string };
  /** The runtime folder holding configs, logs, queues and mail. */
  readonly dir: string;
  readonly logs: Readonly<Record<string, string>>;
  /** The local OAuth2 authorization server that Dovecot and Postfix (through Dovecot's SASL) check tokens with. */
  readonly oauth: UpstreamOAuth;
  /** Processes started (daemon masters and helpers); stop.ts ends exactly these. */
  readonly processes: readonly TrackedProcess[];
}

/** Reads a description file written by start.ts. */
export function readUpstreams(path: string): Upstreams {
  const parsed = JSON.parse(readFileSync(path, "utf8")) as Upstreams;
  if (parsed.version !== 1 || typeof parsed.ports?.imap !== "number") {
    throw new Error(`upstreams: ${path} is not an upstreams description written by scripts/upstreams/start.ts`);
  }
  return parsed;
}
