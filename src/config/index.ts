/** Configuration: mailgator.toml → validated, frozen Config. */

export type { ConfigProblem } from "./errors.ts";
export { ConfigError, formatProblem, formatProblems } from "./errors.ts";
export { CONFIG_ENV, type ConfigLocation, findConfig, LOCAL_CONFIG, SYSTEM_CONFIG } from "./find.ts";
export type { LoadOptions } from "./load.ts";
export { agentMailboxes, agentReading, agentSending, loadConfig, parseConfig } from "./load.ts";
export { ownEntry } from "./names.ts";
export { MAX_CONFIG_BYTES, readConfigText, TOO_LARGE } from "./read.ts";
export type { RuleContext, RuleProblem } from "./rules.ts";
export { assertRules, configRuleProblems, ruleProblems } from "./rules.ts";
export type {
  AccountConfig,
  AgentConfig,
  AuditConfig,
  Config,
  HostPort,
  ListenerConfig,
  OAuth2AccountConfig,
  OAuth2Settings,
  PasswordAccountConfig,
  QuotaConfig,
  QuotaLimits,
  RuleConfig,
  SmtpConfig,
  StateConfig,
  TlsMode,
} from "./types.ts";
export { Secret } from "./types.ts";
