/**
 * The validated, frozen configuration (docs/config.md) that the rest of
 * Mailgator reads. Paths are absolute; defaults are filled in; secrets are
 * wrapped so they never print.
 */

import type { Operation, RuleSpec } from "../policy/index.ts";

export type TlsMode = "tls" | "starttls" | "none";

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

export interface ListenerConfig {
  readonly listenAddr: HostPort;
  /** How agents connect: plain (default, for loopback), implicit TLS, or STARTTLS. */
  readonly listenTls: TlsMode;
  readonly tlsCertFile: string | null;
  readonly tlsKeyFile: string | null;
  readonly upstreamAddr: HostPort;
  readonly upstreamTls: TlsMode;
  readonly upstreamTlsSkipVerify: boolean;
  readonly upstreamCaFile: string | null;
}

/**
 * `[smtp]`. `identities`: the addresses a pass-through session may use as MAIL FROM besides its login (as written
 * in the file; compared case-insensitively). Vault mode uses each account's `identities` instead.
 */
export interface SmtpConfig extends ListenerConfig {
  readonly identities: readonly string[];
}

export interface RuleConfig extends RuleSpec {
  readonly name: string;
  readonly action: "allow" | "deny" | "ask";
  /** `ask_groups`: the `[approvals.groups]` notified when this rule holds a send (ask rules only). */
  readonly askGroups?: readonly string[] | undefined;
  /** Expanded operation names (shorthands resolved); undefined means all. */
  readonly operations?: readonly Operation[] | undefined;
}

export interface AuditConfig {
  readonly path: string;
  /** Rows older than this are pruned; null keeps everything. */
  readonly retentionDays: number | null;
}

/** One listener's `[limits]` (docs/config.md), defaults filled in; times in milliseconds. */
export interface ProtocolLimits {
  readonly maxConnections: number;
  readonly maxConnectionsPerIp: number;
  /** Logged-in sessions per agent (vault mode) or per upstream login name (pass-through mode). */
  readonly maxSessionsPerAgent: number;
  /** From connecting to a successful login. */
  readonly loginTimeoutMs: number;
  /** Inactivity (no command from the agent). */
  readonly idleTimeoutMs: number;
}

export interface ImapLimits extends ProtocolLimits {
  /** Longest IDLE command; the inactivity timeout does not run during IDLE. */
  readonly idleCommandTimeoutMs: number;
}

export interface LimitsConfig {
  readonly imap: ImapLimits;
  readonly smtp: ProtocolLimits;
}

export interface AgentConfig {
  readonly name: string;
  /** `sha256:<64 hex>` of the agent's token. */
  readonly tokenHash: string;
  readonly account: string;
  /** Client addresses or CIDR ranges the agent may connect from; null = any. */
  readonly allowedIps: readonly string[] | null;
}

/**
 * A secret from the config. It prints as "[redacted]" through every string
 * conversion, so logging a config object cannot leak it.
 */
export class Secret {
  readonly #value: string;
  constructor(value: string) {
    this.#value = value;
  }
  reveal(): string {
    return this.#value;
  }
  toString(): string {
    return "[redacted]";
  }
  toJSON(): string {
    return "[redacted]";
  }
  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return "[redacted]";
  }
}

interface AccountBase {
  readonly name: string;
  /** The mailbox's login name upstream (for OAuth2, the address the token is for). */
  readonly username: string;
  /** Addresses the account may use as MAIL FROM besides `username` (as written; compared case-insensitively). */
  readonly identities: readonly string[];
}

export interface PasswordAccountConfig extends AccountBase {
  readonly auth: "password";
  readonly password: Secret;
}

/** An OAuth2 client registration and its endpoints, presets resolved (docs/accounts.md). */
export interface OAuth2Settings {
  readonly provider: "google" | "microsoft" | "custom";
  readonly grant: "authorization_code" | "client_credentials";
  readonly clientId: string;
  /** null for a public client (PKCE only). */
  readonly clientSecret: Secret | null;
  /** Microsoft only; null elsewhere. */
  readonly tenant: string | null;
  /** null for client_credentials accounts of a custom provider that gives none. */
  readonly authorizeUrl: string | null;
  readonly tokenUrl: string;
  /** The RFC 8628 device authorization endpoint, where the provider has one. */
  readonly deviceUrl: string | null;
  readonly scopes: readonly string[];
  /**
   * The SASL mechanism for the upstream login (docs/imap.md, docs/smtp.md "OAuth2 accounts"): "auto" takes
   * OAUTHBEARER (RFC 7628) when the server offers it, else XOAUTH2; the other two force one.
   */
  readonly saslMechanism: "auto" | "xoauth2" | "oauthbearer";
}

export interface OAuth2AccountConfig extends AccountBase {
  readonly auth: "oauth2";
  readonly oauth2: OAuth2Settings;
}

/** `[accounts.NAME]`: the credentials the proxy uses upstream in vault mode. */
export type AccountConfig = PasswordAccountConfig | OAuth2AccountConfig;

/** `[state]` (docs/accounts.md "What is stored where"). */
export interface StateConfig {
  /** The state database: sealed records such as OAuth2 tokens, and account status. */
  readonly path: string;
  /** The file holding the key that seals records (created 0600 on first use) unless MAILGATOR_SECRETS_KEY is set. */
  readonly secretsFile: string;
}

/** `[approvals]` (docs/approvals.md "Configuration"). */
export interface ApprovalsConfig {
  /** How long a held message waits for a decision before it expires (discarded). */
  readonly timeoutMs: number;
  /** The address approvers' links point at (`<base_url>/approvals/<id>?t=<token>`); null: no links. */
  readonly baseUrl: string | null;
  /** The account whose upstream login sends the notices; null: the sending agent's account (or login). */
  readonly notifyAccount: string | null;
  /** Send the agent's own address a short notice of the decision. */
  readonly notifySender: boolean;
  /** Approver groups: name to the addresses notified. */
  readonly groups: Readonly<Record<string, readonly string[]>>;
}

/** `[admin]` (docs/config.md): where the admin HTTP listener listens, and the token hash its actions need. */
export interface AdminConfig {
  readonly listenAddr: HostPort;
  /** True when `allow_remote = true` let listen_addr be other than loopback. */
  readonly allowRemote: boolean;
  /** `sha256:<hex>` of the token that routes which act require; null: such routes refuse every request. */
  readonly tokenHash: string | null;
}

/** The limits of `[[quotas]]` (docs/quotas.md), by their config key; null where the entry sets none. */
export interface QuotaLimits {
  readonly sends_per_hour: number | null;
  readonly sends_per_day: number | null;
  readonly recipients_per_day: number | null;
  readonly recipients_per_message: number | null;
  readonly reads_per_minute: number | null;
  readonly bytes_per_day: number | null;
}

/** One `[[quotas]]` entry (docs/quotas.md). */
export interface QuotaConfig {
  readonly name: string;
  /** Agent names (vault mode) or upstream logins (pass-through mode); null: every client. */
  readonly agents: readonly string[] | null;
  readonly limits: QuotaLimits;
}

export interface Config {
  /** Absolute path of the file this was read from. */
  readonly file: string;
  /** First 16 hex digits of the file's SHA-256: recorded with every audit row. */
  readonly revision: string;
  readonly imap: ListenerConfig | null;
  readonly smtp: SmtpConfig | null;
  readonly rules: readonly RuleConfig[];
  readonly audit: AuditConfig;
  /** Empty in pass-through mode; vault mode when non-empty (docs/config.md "Who connects"). */
  readonly agents: readonly AgentConfig[];
  readonly accounts: Readonly<Record<string, AccountConfig>>;
  /** Connection and session limits and timeouts, per listener. */
  readonly limits: LimitsConfig;
  readonly state: StateConfig;
  readonly approvals: ApprovalsConfig;
  /** The admin HTTP listener; null when the file has no `[admin]` table (nothing listens). */
  readonly admin: AdminConfig | null;
  /** Every entry whose `agents` match a client applies to it (docs/quotas.md). */
  readonly quotas: readonly QuotaConfig[];
  /** Things that load but deserve attention (TLS verification off, plaintext on a public address...). */
  readonly warnings: readonly string[];
}
