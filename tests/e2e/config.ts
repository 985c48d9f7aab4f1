/**
 * The `mailgator serve` configs the end-to-end tests write: the sections they share (listeners, `[audit]`, `[state]`,
 * `[admin]`, `[approvals]` with its group), built from a few options, with each test's own rules, accounts and agents
 * appended as TOML text.
 */
import { join } from "node:path";
import { hashToken } from "../../src/vault/token.ts";
import { smtpListener, upstreams } from "../fixtures/index.ts";

export interface ApprovalsOptions {
  /** `timeout`; none: the line is left out (the default). */
  readonly timeout?: string;
  /** `base_url`; default the `[admin]` listener's URL when there is one; false: the line is left out. */
  readonly baseUrl?: string | false;
  /** `notify_account`; none: the line is left out. */
  readonly notifyAccount?: string;
  /** `notify_sender = true`; default: the line is left out. */
  readonly notifySender?: boolean;
  /** The recipients of the one group, `managers`; default boss@corp.test. */
  readonly managers?: readonly string[];
}

export interface ServeConfigOptions {
  /** The listener sections; default smtpListener(): the SMTP proxy in front of the test Postfix. */
  readonly listeners?: string;
  /** The folder of the audit log (audit.db) and of the state database (state.db, secrets.key); none: neither. */
  readonly dir?: string;
  /** `[audit] path` instead of `<dir>/audit.db` (also without `dir`: then `[audit]` only). */
  readonly auditPath?: string;
  /** `[admin]` listening on this port of 127.0.0.1; none: no `[admin]`. */
  readonly adminPort?: number;
  /** `[approvals]` and its group `managers`; none: neither. */
  readonly approvals?: ApprovalsOptions;
}

/** A `mailgator serve` config: the sections `o` asks for, in the order of its fields, then `rest`. */
export function serveConfig(o: ServeConfigOptions, rest = ""): string {
  const sections = [o.listeners ?? smtpListener()];
  const auditPath = o.auditPath ?? (o.dir === undefined ? undefined : join(o.dir, "audit.db"));
  if (auditPath !== undefined) sections.push(`[audit]\npath = "${auditPath}"\n`);
  if (o.dir !== undefined) {
    sections.push(`[state]\npath = "${join(o.dir, "state.db")}"\nsecrets_file = "${join(o.dir, "secrets.key")}"\n`);
  }
  if (o.adminPort !== undefined) sections.push(`[admin]\nlisten_addr = "127.0.0.1:${o.adminPort}"\n`);
  if (o.approvals !== undefined) sections.push(approvalsToml(o.approvals, o.adminPort));
  return `${sections.join("\n")}${rest}`;
}

function approvalsToml(a: ApprovalsOptions, adminPort: number | undefined): string {
  const baseUrl = a.baseUrl ?? (adminPort === undefined ? false : `http://127.0.0.1:${adminPort}`);
  const lines = [
    a.timeout === undefined ? "" : `timeout = "${a.timeout}"\n`,
    baseUrl === false ? "" : `base_url = "${baseUrl}"\n`,
    a.notifyAccount === undefined ? "" : `notify_account = "${a.notifyAccount}"\n`,
    a.notifySender ? "notify_sender = true\n" : "",
  ].join("");
  const managers = (a.managers ?? ["boss@corp.test"]).map((m) => JSON.stringify(m)).join(", ");
  return `[approvals]\n${lines}\n[approvals.groups.managers]\nrecipients = [${managers}]\n`;
}

/**
 * The `[smtp]` section of a proxy on a port the system picks, in front of `addr` over `tls`, trusting the test CA
 * unless `ca` is false; more lines of the section may follow it.
 */
export function smtpTo(addr: string, tls: "starttls" | "none" = "starttls", ca = true): string {
  const caLine = ca ? `upstream_ca_file = "${upstreams().caFile}"\n` : "";
  return `[smtp]\nlisten_addr = "127.0.0.1:0"\nupstream_addr = "${addr}"\nupstream_tls = "${tls}"\n${caLine}`;
}

/** `[accounts.<name>]` logging in with `login`'s user name and password. */
export function accountToml(name: string, login: { readonly user: string; readonly password: string }): string {
  return `[accounts.${name}]\nusername = "${login.user}"\npassword = "${login.password}"\n`;
}

/** An `[[agents]]` entry: `name`, the hash of `token`, on `account`. */
export function agentToml(name: string, token: string, account: string): string {
  return `[[agents]]\nname = "${name}"\ntoken_hash = "${hashToken(token)}"\naccount = "${account}"\n`;
}
