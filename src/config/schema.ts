/**
 * The shape of mailgator.toml as valibot schemas, before defaults and
 * cross-checks (those live in load.ts). Every table is strict: an unknown key
 * is an error, since a typo in a security policy must not widen access.
 */

import * as v from "valibot";

const stringOrList = v.union([v.string(), v.array(v.string())]);
const tlsMode = v.picklist(["tls", "starttls", "none"]);

export const listenerSchema = v.strictObject({
  listen_addr: v.string(),
  upstream_addr: v.string(),
  upstream_tls: v.optional(tlsMode),
  upstream_tls_skip_verify: v.optional(v.boolean()),
  upstream_ca_file: v.optional(v.string()),
  listen_tls: v.optional(tlsMode),
  tls_cert_file: v.optional(v.string()),
  tls_key_file: v.optional(v.string()),
});

/** Addresses a session may use as its reverse path besides its login (checked in load.ts). */
const identities = v.optional(v.array(v.string()));

/** `[smtp]`: a listener, plus the identities of pass-through mode (where there are no accounts). */
export const smtpSchema = v.strictObject({
  ...listenerSchema.entries,
  identities,
});

export const ruleSchema = v.strictObject({
  name: v.pipe(v.string(), v.minLength(1)),
  action: v.picklist(["allow", "deny", "ask"]),
  folders: v.optional(stringOrList),
  folder: v.optional(stringOrList),
  from: v.optional(stringOrList),
  to: v.optional(stringOrList),
  cc: v.optional(stringOrList),
  bcc: v.optional(stringOrList),
  subject: v.optional(stringOrList),
  has_attachment: v.optional(v.boolean()),
  agents: v.optional(stringOrList),
  operations: v.optional(stringOrList),
  operation: v.optional(stringOrList),
  ask_groups: v.optional(v.array(v.string())),
});

/** A file name: an empty one would name the config's folder (docs/config.md). */
const filePath = v.pipe(v.string(), v.minLength(1));

export const auditSchema = v.strictObject({
  path: v.optional(filePath),
  retention_days: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1))),
});

export const agentSchema = v.strictObject({
  name: v.pipe(v.string(), v.minLength(1)),
  token_hash: v.string(),
  account: v.string(),
  allowed_ips: v.optional(v.array(v.string())),
});

/** `[accounts.NAME]`: how the proxy logs in upstream; the oauth2 keys are checked against `auth` in load.ts. */
export const accountSchema = v.strictObject({
  username: v.pipe(v.string(), v.minLength(1)),
  auth: v.optional(v.picklist(["password", "oauth2"])),
  password: v.optional(v.string()),
  password_env: v.optional(v.string()),
  password_file: v.optional(v.string()),
  identities,
  provider: v.optional(v.picklist(["google", "microsoft", "custom"])),
  grant: v.optional(v.picklist(["authorization_code", "client_credentials"])),
  client_id: v.optional(v.pipe(v.string(), v.minLength(1))),
  client_secret: v.optional(v.string()),
  client_secret_env: v.optional(v.string()),
  client_secret_file: v.optional(v.string()),
  tenant: v.optional(v.pipe(v.string(), v.minLength(1))),
  authorize_url: v.optional(v.string()),
  token_url: v.optional(v.string()),
  device_url: v.optional(v.string()),
  scopes: v.optional(v.array(v.string())),
  sasl_mechanism: v.optional(v.picklist(["auto", "xoauth2", "oauthbearer"])),
});

/** `[state]`: where the proxy keeps sealed records (OAuth2 tokens) and the key that seals them. */
export const stateSchema = v.strictObject({
  path: v.optional(filePath),
  secrets_file: v.optional(filePath),
});

const count = v.optional(v.pipe(v.number(), v.integer(), v.minValue(1)));
/** Seconds, whole; at most a day (longer timers would overflow setTimeout's 2^31 ms). */
const seconds = v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(86_400)));

/** Keys of `[limits]` that apply to each listener; `[limits.imap]` and `[limits.smtp]` override them per protocol. */
const protocolLimits = {
  max_connections: count,
  max_connections_per_ip: count,
  max_sessions_per_agent: count,
  login_timeout: seconds,
  idle_timeout: seconds,
};

export const limitsSchema = v.strictObject({
  ...protocolLimits,
  imap: v.optional(v.strictObject({ ...protocolLimits, idle_command_timeout: seconds })),
  smtp: v.optional(v.strictObject(protocolLimits)),
});

/** `[approvals]` (docs/approvals.md "Configuration"). */
export const approvalsSchema = v.strictObject({
  timeout: v.optional(v.string()),
  base_url: v.optional(v.string()),
  notify_account: v.optional(v.string()),
  notify_sender: v.optional(v.boolean()),
  groups: v.optional(v.record(v.string(), v.strictObject({ recipients: v.array(v.string()) }))),
});

/** `[admin]`: the HTTP listener for health, metrics and actions (src/admin/server.ts); absent = off. */
export const adminSchema = v.strictObject({
  listen_addr: v.optional(v.string()),
  allow_remote: v.optional(v.boolean()),
  token_hash: v.optional(v.string()),
});

/** `[[quotas]]`: sliding-window limits on sends and reads (docs/quotas.md); checked further in load.ts. */
export const quotaSchema = v.strictObject({
  name: v.pipe(v.string(), v.minLength(1)),
  agents: v.optional(v.array(v.pipe(v.string(), v.minLength(1)))),
  sends_per_hour: count,
  sends_per_day: count,
  recipients_per_day: count,
  recipients_per_message: count,
  reads_per_minute: count,
  bytes_per_day: count,
});

export const configSchema = v.strictObject({
  imap: v.optional(listenerSchema),
  smtp: v.optional(smtpSchema),
  rules: v.optional(v.array(ruleSchema)),
  audit: v.optional(auditSchema),
  agents: v.optional(v.array(agentSchema)),
  accounts: v.optional(v.record(v.string(), accountSchema)),
  limits: v.optional(limitsSchema),
  state: v.optional(stateSchema),
  approvals: v.optional(approvalsSchema),
  admin: v.optional(adminSchema),
  quotas: v.optional(v.array(quotaSchema)),
});

export type RawConfig = v.InferOutput<typeof configSchema>;
export type RawRule = v.InferOutput<typeof ruleSchema>;
export type RawListener = v.InferOutput<typeof listenerSchema>;
export type RawSmtp = v.InferOutput<typeof smtpSchema>;
export type RawLimits = v.InferOutput<typeof limitsSchema>;
export type RawApprovals = v.InferOutput<typeof approvalsSchema>;
export type RawAdmin = v.InferOutput<typeof adminSchema>;
export type RawQuota = v.InferOutput<typeof quotaSchema>;
