/**
 * mailgator.toml → validated, frozen Config. All problems are collected and
 * reported together, each with its place in the file.
 */

import { createHash } from "node:crypto";
import { accessSync, constants } from "node:fs";
import { dirname, resolve } from "node:path";
import { createSecureContext } from "node:tls";
import { parse as parseToml, TomlError } from "smol-toml";
import * as v from "valibot";
import { GOOGLE, MICROSOFT_DEFAULT_TENANT, MICROSOFT_TENANT_ALIASES, microsoft } from "../accounts/providers.ts";
import { mailboxProblem, subaddressMailbox } from "../mail/address.ts";
import { unreadableGlobText } from "../mail/encoded-words.ts";
import { MAX_LOGIN_NAME_BYTES } from "../net/credentials.ts";
import { isLoopbackHost, isLoopbackUrlHost, readIpEntry } from "../net/ip.ts";
import { KeyFileReadable, loadIdentity, TlsIdentityUnreadable } from "../net/listener.ts";
import { loginKey } from "../net/sessions.ts";
import { readTlsFile, TlsFileError } from "../net/tls-file.ts";
import { compileGlob, expandOperation, GlobError, type GlobKind, type Operation } from "../policy/index.ts";
import { readSecretFile } from "../runtime/secret-file.ts";
import { ConfigError, type ConfigProblem } from "./errors.ts";
import type { ConfigLocation } from "./find.ts";
import { DEFAULT_IMAP_LIMITS, DEFAULT_SMTP_LIMITS } from "./limits.ts";
import { reachesListener, sameListenPort } from "./listen.ts";
import { locator } from "./locate.ts";
import { isReservedName, ownEntry, RESERVED_NAMES } from "./names.ts";
import { readConfigFile } from "./read.ts";
import { type RuleContext, ruleProblems } from "./rules.ts";
import {
  configSchema,
  type RawAdmin,
  type RawConfig,
  type RawLimits,
  type RawListener,
  type RawQuota,
  type RawRule,
} from "./schema.ts";
import { isEnvName, isSecretKey, namesSecret } from "./secret-keys.ts";
import {
  type AccountConfig,
  type AdminConfig,
  type AgentConfig,
  type ApprovalsConfig,
  type Config,
  type HostPort,
  type LimitsConfig,
  type ListenerConfig,
  type OAuth2Settings,
  type ProtocolLimits,
  type QuotaConfig,
  type QuotaLimits,
  type RuleConfig,
  Secret,
  type SmtpConfig,
  type TlsMode,
} from "./types.ts";

export interface LoadOptions {
  /** Where `password_env` is looked up; defaults to process.env. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /**
   * Leave account secrets unread (`mailgator mcp`, which logs in to the proxy as an agent and never upstream,
   * docs/mcp.md): a secret given by any of its three keys becomes an empty Secret; no variable or file is read,
   * nor a listener's `tls_key_file`.
   */
  readonly skipSecrets?: boolean;
  /**
   * Read only these of the host's files and environment variables (`mailgator mcp --admin`'s validate_config of a
   * text: only what the config file on disk names, docs/mcp.md "Admin tools"). A file the config names that is not
   * in `files` (a resolved path) is neither opened nor checked for access, and a variable not in `variables` is not
   * looked up: each is taken as fine, and a warning says that it was not checked.
   */
  readonly only?: { readonly files: ReadonlySet<string>; readonly variables: ReadonlySet<string> };
  /** The config file's mode bits (loadConfig): an inline account secret in a file others may read is warned of. */
  readonly fileMode?: number;
}

/** The `env` that stands for "do not read secrets" (LoadOptions.skipSecrets). */
const SKIP_SECRETS: Readonly<Record<string, string | undefined>> = Object.freeze({});

/** Default upstream TLS by well-known port (RFC 8314 implicit TLS; RFC 3207/2595 STARTTLS). */
const TLS_BY_PORT: Readonly<Record<number, TlsMode>> = {
  993: "tls",
  465: "tls",
  143: "starttls",
  587: "starttls",
  25: "starttls",
};

const TOKEN_HASH = /^sha256:[0-9a-f]{64}$/;
/** `[state] path` by default: beside the audit log. */
const STATE_FILE = "mailgator-state.db";
/** `[state] secrets_file` by default: beside the config. */
const SECRETS_FILE = "mailgator-secrets.key";

type PathItem = string | number;

function pathString(path: readonly PathItem[]): string {
  let out = "";
  for (const p of path) out += typeof p === "number" ? `[${p}]` : out === "" ? p : `.${p}`;
  return out;
}

class Problems {
  readonly list: ConfigProblem[] = [];
  /** What LoadOptions.only kept this load from reading: warnings, once the config is built. */
  readonly unchecked: string[] = [];
  /** Where a key path is in the text, which it reads once (src/config/locate.ts). */
  readonly #locate: ReturnType<typeof locator>;
  constructor(
    source: string,
    private readonly only?: LoadOptions["only"],
  ) {
    this.#locate = locator(source);
  }
  add(path: readonly PathItem[], message: string): void {
    const at = this.#locate(path);
    this.list.push({ path: pathString(path), message, line: at?.line, column: at?.column });
  }
  /** Whether the file `full` (named at `path`) may be opened or checked; when not, a warning says so. */
  mayOpen(full: string, path: readonly PathItem[]): boolean {
    if (this.only === undefined || this.only.files.has(full)) return true;
    this.#unopened.add(full);
    this.unchecked.push(`${pathString(path)}: file ${JSON.stringify(full)} not checked (not named by the config file)`);
    return false;
  }
  /** Files `mayOpen` kept closed: not read to check their contents either (`opened`). */
  readonly #unopened = new Set<string>();

  /** Whether the files at these full paths may be read (none of them was kept closed by LoadOptions.only). */
  opened(...files: string[]): boolean {
    return files.every((f) => !this.#unopened.has(f));
  }

  /** Whether the environment variable `name` (named at `path`) may be looked up; when not, a warning says so. */
  mayLookUp(name: string, path: readonly PathItem[]): boolean {
    if (this.only === undefined || this.only.variables.has(name)) return true;
    this.unchecked.push(`${pathString(path)}: environment variable ${name} not checked (not named by the config file)`);
    return false;
  }
}

function describeValue(value: unknown): string {
  if (value === undefined) return "nothing";
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object" && value !== null) return "a table";
  return String(value);
}

/** Turns valibot's issues into sentences: `expected "allow" | "deny" | "ask", got "alow"`. */
function schemaProblems(issues: readonly v.BaseIssue<unknown>[], problems: Problems): void {
  for (const issue of issues) {
    const path = (issue.path ?? []).map((p) => p.key as PathItem);
    // A secret's value is never quoted, whatever its type (`password = 1234567` would be, as a number).
    const secret = path.some((k) => typeof k === "string" && isSecretKey(k));
    const got = (value: unknown): string =>
      secret ? "a value not shown (the key names a secret)" : describeValue(value);
    if (issue.type === "strict_object" && issue.expected === "never") {
      problems.add(path, `unknown key ${JSON.stringify(path.at(-1))}`);
    } else if (issue.type === "strict_object") {
      problems.add(path, `missing required key ${JSON.stringify(path.at(-1))}`);
    } else if (
      issue.type === "integer" ||
      issue.type === "min_value" ||
      issue.type === "max_value" ||
      issue.type === "min_length"
    ) {
      const what =
        issue.type === "integer"
          ? "a whole number"
          : issue.type === "min_value"
            ? `a number ≥ ${String(issue.requirement)}`
            : issue.type === "max_value"
              ? `a number ≤ ${String(issue.requirement)}`
              : "a non-empty string";
      problems.add(path, `expected ${what}, got ${got(issue.input)}`);
    } else {
      let expected = (issue.expected ?? "a different value").replace(/^\((.*)\)$/, "$1");
      expected = expected.replace("Array", "a list").replace("Object", "a table");
      problems.add(path, `expected ${expected}, got ${got(issue.input)}`);
    }
  }
}

/** `host:port`, or null; a listen address may use port 0 (any free port; serve logs the one it got). */
function readHostPort(text: string, allowZero: boolean): HostPort | null {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port < (allowZero ? 0 : 1) || port > 65535) return null;
  return { host: m[1] ?? m[2]!, port };
}

/** readHostPort, with a problem at `path` when `text` is not one. */
function parseHostPort(text: string, path: PathItem[], problems: Problems, allowZero = false): HostPort | null {
  const read = readHostPort(text, allowZero);
  if (read === null) problems.add(path, `expected "host:port" (or "[ipv6]:port"), got ${JSON.stringify(text)}`);
  return read;
}

/**
 * Listeners that would take the same port (src/config/listen.ts): the later one is refused, naming the earlier, in
 * the order serve binds them; and an `upstream_addr` that reaches one of them (`reachesListener`). Read from the
 * written addresses, so that a listener with another problem is still compared.
 */
function listenConflicts(raw: RawConfig, problems: Problems): void {
  const seen: { section: string; text: string; addr: HostPort }[] = [];
  const sections = [
    ["imap", raw.imap?.listen_addr, ""],
    ["smtp", raw.smtp?.listen_addr, ""],
    [
      "admin",
      raw.admin && (raw.admin.listen_addr ?? DEFAULT_ADMIN_ADDR),
      raw.admin?.listen_addr ? "" : " (the default)",
    ],
  ] as const;
  for (const [section, text, note] of sections) {
    const addr = text === undefined ? null : readHostPort(text, true);
    if (text === undefined || addr === null) continue;
    const other = seen.find((s) => sameListenPort(s.addr, addr));
    if (other !== undefined)
      problems.add(
        [section, "listen_addr"],
        `${JSON.stringify(text)}${note} takes the port that [${other.section}] listen_addr ` +
          `${JSON.stringify(other.text)} listens on: serve could bind only one of them (0.0.0.0 takes the port on ` +
          "every IPv4 address, :: on every address; localhost may be 127.0.0.1 or ::1). Give each listener a port " +
          "of its own",
      );
    seen.push({ section, text, addr });
  }
  // An upstream that is one of these listeners: the proxy would connect to itself, each connection opening another.
  for (const section of ["imap", "smtp"] as const) {
    const text = raw[section]?.upstream_addr;
    const addr = text === undefined ? null : readHostPort(text, false);
    if (text === undefined || addr === null) continue;
    const own = seen.find((s) => reachesListener(s.addr, addr));
    if (own !== undefined)
      problems.add(
        [section, "upstream_addr"],
        `${JSON.stringify(text)} is Mailgator's own [${own.section}] listen_addr ${JSON.stringify(own.text)}: the ` +
          "proxy would connect to itself, each connection opening another. Name the mail server's address",
      );
  }
}

/**
 * The file's full path when it is readable (else null, with a problem); also when LoadOptions.only leaves it unopened
 * (`Problems.opened` then says so, and nothing else may read it either).
 */
function resolveFile(base: string, file: string, path: PathItem[], problems: Problems): string | null {
  const full = resolve(base, file);
  if (!problems.mayOpen(full, path)) return full;
  try {
    accessSync(full, constants.R_OK);
  } catch {
    problems.add(path, `file ${JSON.stringify(full)} does not exist or is not readable`);
    return null;
  }
  return full;
}

/**
 * The listener's certificate and key as TLS will use them: a file that is not PEM, or a key that is not the
 * certificate's, is a config error here rather than a proxy that fails to start (implicit TLS) or fails every
 * STARTTLS. OpenSSL's reason never includes the key.
 */
function tlsIdentityProblem(
  certFile: string,
  keyFile: string,
): { readonly key: "tls_cert_file" | "tls_key_file"; readonly problem: string } | null {
  try {
    const { cert, key } = loadIdentity(certFile, keyFile);
    createSecureContext({ cert, key });
    return null;
  } catch (e) {
    if (e instanceof KeyFileReadable) return { key: "tls_key_file", problem: e.message.replace(/^net: /, "") };
    if (e instanceof TlsIdentityUnreadable)
      return { key: e.what === "key" ? "tls_key_file" : "tls_cert_file", problem: e.message.replace(/^net: /, "") };
    const files = `${JSON.stringify(certFile)} and ${JSON.stringify(keyFile)}`;
    return {
      key: "tls_cert_file",
      problem: `${files} are not a PEM certificate and its private key (${(e as Error).message})`,
    };
  }
}

/** The upstream CA file as each upstream connection will use it (src/net/upstream.ts): otherwise every one fails. */
function caProblem(file: string): string | null {
  let ca: string;
  try {
    ca = readTlsFile(file).toString("utf8");
  } catch (e) {
    if (e instanceof TlsFileError) return `${JSON.stringify(file)} ${e.message}`;
    throw e;
  }
  try {
    createSecureContext({ ca });
    return null;
  } catch (e) {
    return `${JSON.stringify(file)} holds no PEM certificate TLS can use as a CA (${(e as Error).message})`;
  }
}

function listener(
  raw: RawListener,
  section: "imap" | "smtp",
  base: string,
  problems: Problems,
  warnings: string[],
  skipSecrets: boolean,
): ListenerConfig | null {
  const listenAddr = parseHostPort(raw.listen_addr, [section, "listen_addr"], problems, true);
  const upstreamAddr = parseHostPort(raw.upstream_addr, [section, "upstream_addr"], problems);
  if (!listenAddr || !upstreamAddr) return null;
  let upstreamTls = raw.upstream_tls;
  if (upstreamTls === undefined) {
    upstreamTls = TLS_BY_PORT[upstreamAddr.port];
    if (upstreamTls === undefined) {
      problems.add(
        [section, "upstream_addr"],
        `port ${upstreamAddr.port} is not a standard ${section.toUpperCase()} port; state upstream_tls = "tls" ` +
          `| "starttls" | "none"`,
      );
      return null;
    }
  }
  if (upstreamTls === "none") {
    warnings.push(`[${section}] upstream_tls = "none": credentials and mail cross to ${raw.upstream_addr} unencrypted`);
  }
  if (raw.upstream_tls_skip_verify) {
    warnings.push(
      `[${section}] upstream_tls_skip_verify = true: the upstream certificate is NOT verified; anyone on the ` +
        `path can impersonate ${raw.upstream_addr}`,
    );
  }
  const listenTls = raw.listen_tls ?? "none";
  let cert: string | null = null;
  let key: string | null = null;
  if (listenTls !== "none") {
    if (raw.tls_cert_file === undefined)
      problems.add([section, "tls_cert_file"], `required when listen_tls = "${listenTls}"`);
    if (raw.tls_key_file === undefined)
      problems.add([section, "tls_key_file"], `required when listen_tls = "${listenTls}"`);
  } else if (raw.tls_cert_file !== undefined || raw.tls_key_file !== undefined) {
    problems.add(
      [section, "listen_tls"],
      `tls_cert_file/tls_key_file are set but listen_tls is "none"; set listen_tls = "tls" or "starttls", or ` +
        `remove them`,
    );
  } else if (!isLoopbackHost(listenAddr.host)) {
    warnings.push(
      `[${section}] listens on ${raw.listen_addr} without TLS: agents' logins cross the network in clear text`,
    );
  }
  if (raw.tls_cert_file !== undefined)
    cert = resolveFile(base, raw.tls_cert_file, [section, "tls_cert_file"], problems);
  // The private key is a secret: without secrets (LoadOptions.skipSecrets) its path is kept but the file not opened.
  if (raw.tls_key_file !== undefined)
    key = skipSecrets
      ? resolve(base, raw.tls_key_file)
      : resolveFile(base, raw.tls_key_file, [section, "tls_key_file"], problems);
  // A file that LoadOptions.only leaves unopened is not read to check its contents either.
  if (cert !== null && key !== null && !skipSecrets && problems.opened(cert, key)) {
    const found = tlsIdentityProblem(cert, key);
    if (found !== null) problems.add([section, found.key], found.problem);
  }
  const ca =
    raw.upstream_ca_file === undefined
      ? null
      : resolveFile(base, raw.upstream_ca_file, [section, "upstream_ca_file"], problems);
  if (ca !== null && problems.opened(ca)) {
    const problem = caProblem(ca);
    if (problem !== null) problems.add([section, "upstream_ca_file"], problem);
  }
  return {
    listenAddr,
    listenTls,
    tlsCertFile: cert,
    tlsKeyFile: key,
    upstreamAddr,
    upstreamTls,
    upstreamTlsSkipVerify: raw.upstream_tls_skip_verify ?? false,
    upstreamCaFile: ca,
  };
}

/**
 * `identities`: exact addresses, each one MAIL FROM would accept (docs/smtp.md "Addresses"), so that none is
 * unusable. No globs: an identity is an address the account owns, and `*@corp.test` would hand an agent every
 * mailbox of the domain as a reverse path (bounces included).
 */
function identities(values: readonly string[] | undefined, path: PathItem[], problems: Problems): string[] {
  const out: string[] = [];
  values?.forEach((address, j) => {
    const problem = /[*?]/.test(address) ? "identities are exact addresses, not globs" : mailboxProblem(address);
    if (problem !== null)
      problems.add(
        [...path, j],
        `expected an email address (local@domain), got ${JSON.stringify(address)}: ${problem}`,
      );
    else out.push(address);
  });
  return out;
}

function list(value: string | string[] | undefined): string[] | undefined {
  if (value === undefined) return undefined;
  return typeof value === "string" ? [value] : value;
}

function rule(
  raw: RawRule,
  i: number,
  agentNames: ReadonlySet<string> | null,
  context: RuleContext,
  problems: Problems,
): RuleConfig | null {
  const at = (key: string, ...rest: PathItem[]): PathItem[] => ["rules", i, key, ...rest];
  const before = problems.list.length;
  const pick = (a: "folders" | "operations", b: "folder" | "operation"): string[] | undefined => {
    if (raw[a] !== undefined && raw[b] !== undefined)
      problems.add(at(b), `"${b}" is an alias of "${a}"; give only one of them`);
    return list(raw[a] ?? raw[b]);
  };
  const fields: Record<string, string[] | undefined> = {
    folders: pick("folders", "folder"),
    from: list(raw.from),
    to: list(raw.to),
    cc: list(raw.cc),
    bcc: list(raw.bcc),
    subject: list(raw.subject),
    agents: list(raw.agents),
    operations: pick("operations", "operation"),
  };
  for (const [key, values] of Object.entries(fields)) {
    if (values !== undefined && values.length === 0) {
      problems.add(at(key), "an empty list matches nothing; omit the key to match everything");
    }
  }
  const kinds: [string, GlobKind][] = [
    ["folders", "folder"],
    ["from", "address"],
    ["to", "address"],
    ["cc", "address"],
    ["bcc", "address"],
    ["subject", "subject"],
  ];
  for (const [key, kind] of kinds) {
    fields[key]?.forEach((pattern, j) => {
      try {
        compileGlob(kind, pattern);
      } catch (e) {
        if (!(e instanceof GlobError)) throw e;
        problems.add(at(key, j), e.message);
        return;
      }
      // Every address a rule is asked about is ASCII (a header's addr-spec with any other character is unknown, the
      // envelope refuses it: docs/filtering.md "Deciding a message"), so such a glob could never match: a deny rule
      // on `*@bücher.test` would pass mail from the same domain's A-label, `*@xn--bcher-kva.test`.
      // Subjects and folder names are read without invisible characters and in NFC (docs/filtering.md "Deciding a
      // message", docs/config.md "Globs"): a glob with a decomposed accent or a zero-width space could never match,
      // and a deny rule written so would pass all.
      const what = kind === "subject" ? "subject" : kind === "folder" ? "folder name" : null;
      const unreadable = what === null ? null : unreadableGlobText(pattern, what);
      if (unreadable !== null) {
        problems.add(at(key, j), `${kind} glob ${JSON.stringify(pattern)} ${unreadable}, so it could never match`);
      }
      if (kind === "address" && /[^\x00-\x7f]/.test(pattern)) {
        problems.add(
          at(key, j),
          `address glob "${pattern}": addresses are matched in ASCII only, so it could never match; write an ` +
            `international domain as its A-label ("xn--...")`,
        );
      }
    });
  }
  let operations: Operation[] | undefined;
  if (fields["operations"] !== undefined) {
    const ops = new Set<Operation>();
    fields["operations"].forEach((name, j) => {
      const expanded = expandOperation(name);
      if (!expanded) {
        problems.add(
          at("operations", j),
          `expected an operation (folder:read, folder:write, mail:read, mail:flag, mail:delete, mail:move, ` +
            `mail:append, mail:send) or a shorthand (read, write, send, all), got ${JSON.stringify(name)}`,
        );
      } else for (const op of expanded) ops.add(op);
    });
    operations = [...ops];
  }
  fields["agents"]?.forEach((name, j) => {
    if (agentNames === null)
      problems.add(
        at("agents", j),
        `rules name agents, but no [[agents]] are defined (pass-through mode has no agents)`,
      );
    else if (!agentNames.has(name))
      problems.add(at("agents", j), `no agent named ${JSON.stringify(name)} in [[agents]]`);
  });
  if (problems.list.length > before) return null;
  const compiled: RuleConfig = {
    name: raw.name,
    action: raw.action,
    folders: fields["folders"],
    from: fields["from"],
    to: fields["to"],
    cc: fields["cc"],
    bcc: fields["bcc"],
    subject: fields["subject"],
    hasAttachment: raw.has_attachment,
    agents: fields["agents"],
    operations,
    askGroups: raw.ask_groups,
  };
  for (const p of ruleProblems(compiled, context, fields["operations"])) {
    problems.add(at(p.key === "operations" && raw.operations === undefined ? "operation" : p.key), p.message);
  }
  return problems.list.length > before ? null : compiled;
}

type RawAccount = NonNullable<RawConfig["accounts"]>[string];

/** The keys of an `auth = "oauth2"` account, refused on a password account. */
const OAUTH2_KEYS = [
  "provider",
  "grant",
  "client_id",
  "client_secret",
  "client_secret_env",
  "client_secret_file",
  "tenant",
  "authorize_url",
  "token_url",
  "device_url",
  "scopes",
  "sasl_mechanism",
] as const;
const PASSWORD_KEYS = ["password", "password_env", "password_file"] as const;
const CLIENT_SECRET_KEYS = ["client_secret", "client_secret_env", "client_secret_file"] as const;
/** A Microsoft tenant: its directory id (a GUID) or one of its domain names. */
const TENANT = /^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/;

/**
 * A secret given inline, by environment variable or by file (one of `keys`, all optional here). Null with a problem
 * added when the source cannot be read; undefined when none is given.
 */
function secretFrom(
  raw: RawAccount,
  keys: readonly [
    "password" | "client_secret",
    "password_env" | "client_secret_env",
    "password_file" | "client_secret_file",
  ],
  at: PathItem[],
  base: string,
  env: LoadOptions["env"] & object,
  problems: Problems,
): Secret | null | undefined {
  const [inline, fromEnv, fromFile] = keys;
  // A value that is no variable's name is most likely the secret itself: refused, never quoted (not even as a name).
  if (raw[fromEnv] !== undefined && !isEnvName(raw[fromEnv])) {
    problems.add(
      [...at, fromEnv],
      "must be the name of an environment variable (letters, digits and _, not starting with a digit); what it " +
        "holds is not shown",
    );
    return null;
  }
  if (env === SKIP_SECRETS) return keys.some((key) => raw[key] !== undefined) ? new Secret("") : undefined;
  // A blank secret is a mistake (an unfilled template, an empty file), not a credential: refused from every source.
  const blank = (value: string): boolean => value.trim() === "";
  if (raw[inline] !== undefined) {
    if (blank(raw[inline])) {
      problems.add([...at, inline], "is empty (or only white space)");
      return null;
    }
    return new Secret(raw[inline]);
  }
  if (raw[fromEnv] !== undefined) {
    if (!problems.mayLookUp(raw[fromEnv], [...at, fromEnv])) return new Secret("");
    const value = env[raw[fromEnv]];
    if (value === undefined || value === "") {
      problems.add([...at, fromEnv], `environment variable ${raw[fromEnv]} is not set`);
      return null;
    }
    if (blank(value)) {
      problems.add([...at, fromEnv], `environment variable ${raw[fromEnv]} holds only white space`);
      return null;
    }
    return new Secret(value);
  }
  if (raw[fromFile] !== undefined) {
    const file = resolve(base, raw[fromFile]);
    if (!problems.mayOpen(file, [...at, fromFile])) return new Secret("");
    const read = readSecretFile(file);
    if (typeof read !== "string") {
      problems.add([...at, fromFile], read.problem);
      return null;
    }
    // One line ending at the end of the file is not part of the secret (docs/config.md "Vault mode").
    const value = read.replace(/\r?\n$/, "");
    if (blank(value)) {
      problems.add([...at, fromFile], `${JSON.stringify(file)} is empty (or only white space)`);
      return null;
    }
    return new Secret(value);
  }
  return undefined;
}

/** An endpoint URL: https, or plain http to a loopback address (a local test server). */
function endpoint(text: string, at: PathItem[], problems: Problems): string | null {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    problems.add(at, `expected a URL, got ${JSON.stringify(text)}`);
    return null;
  }
  if (url.protocol === "https:" || (url.protocol === "http:" && isLoopbackUrlHost(url))) return url.href;
  problems.add(at, `expected an https:// URL (http:// only on a loopback address), got ${JSON.stringify(text)}`);
  return null;
}

function oauth2Settings(
  name: string,
  raw: RawAccount,
  base: string,
  env: LoadOptions["env"] & object,
  problems: Problems,
): OAuth2Settings | null {
  const at = (key?: string): PathItem[] => (key ? ["accounts", name, key] : ["accounts", name]);
  const before = problems.list.length;
  for (const key of PASSWORD_KEYS) {
    if (raw[key] !== undefined) problems.add(at(key), `not used with auth = "oauth2" (the proxy logs in with a token)`);
  }
  if (raw.provider === undefined)
    problems.add(at(), `auth = "oauth2" needs provider = "google" | "microsoft" | "custom"`);
  if (raw.client_id === undefined) problems.add(at(), `auth = "oauth2" needs client_id (from the app registration)`);
  const secretSources = CLIENT_SECRET_KEYS.filter((k) => raw[k] !== undefined);
  if (secretSources.length > 1)
    problems.add(at(secretSources[1]), `give at most one of ${CLIENT_SECRET_KEYS.join(", ")}`);
  const provider = raw.provider ?? "custom";
  const grant = raw.grant ?? "authorization_code";
  if (grant === "client_credentials" && provider === "google")
    problems.add(
      at("grant"),
      `"client_credentials" is for provider "microsoft" or "custom"; Google has no app-only IMAP`,
    );
  if (grant === "client_credentials" && secretSources.length === 0)
    problems.add(at(), `grant = "client_credentials" needs the app's secret: client_secret, _env or _file`);
  if (raw.tenant !== undefined && provider !== "microsoft")
    problems.add(at("tenant"), `only for provider = "microsoft"`);
  if (raw.tenant !== undefined && !TENANT.test(raw.tenant))
    problems.add(at("tenant"), `expected a tenant id or domain, got ${JSON.stringify(raw.tenant)}`);
  let urls: {
    authorizeUrl: string | null;
    tokenUrl: string | null;
    deviceUrl: string | null;
    scopes: string[];
  } | null = null;
  if (provider === "custom") {
    if (raw.token_url === undefined) problems.add(at(), `provider = "custom" needs token_url`);
    if (raw.authorize_url === undefined && grant === "authorization_code")
      problems.add(at(), `provider = "custom" with grant = "authorization_code" needs authorize_url`);
    if (raw.scopes === undefined || raw.scopes.length === 0)
      problems.add(at("scopes"), `provider = "custom" needs scopes (the ones that grant IMAP and SMTP)`);
    raw.scopes?.forEach((scope, j) => {
      if (!/^[\x21\x23-\x5b\x5d-\x7e]+$/.test(scope))
        problems.add(
          [...at("scopes"), j],
          `expected a scope token (RFC 6749 section 3.3), got ${JSON.stringify(scope)}`,
        );
    });
    const url = (key: "authorize_url" | "token_url" | "device_url") =>
      raw[key] === undefined ? null : endpoint(raw[key], at(key), problems);
    urls = {
      authorizeUrl: url("authorize_url"),
      tokenUrl: url("token_url"),
      deviceUrl: url("device_url"),
      scopes: raw.scopes ?? [],
    };
  } else {
    for (const key of ["authorize_url", "token_url", "device_url", "scopes"] as const) {
      if (raw[key] !== undefined)
        problems.add(at(key), `only for provider = "custom"; provider = "${provider}" has its own`);
    }
  }
  let tenant: string | null = null;
  if (provider === "microsoft") {
    tenant = raw.tenant ?? (grant === "client_credentials" ? null : MICROSOFT_DEFAULT_TENANT);
    if (grant === "client_credentials" && (tenant === null || MICROSOFT_TENANT_ALIASES.includes(tenant)))
      problems.add(
        at(raw.tenant === undefined ? undefined : "tenant"),
        `grant = "client_credentials" needs tenant = your directory's id or domain ` +
          `(app-only tokens are issued by one tenant, not "${tenant ?? MICROSOFT_DEFAULT_TENANT}")`,
      );
  }
  const secret = secretFrom(raw, CLIENT_SECRET_KEYS, at(), base, env, problems);
  if (problems.list.length > before) return null;
  const resolved = provider === "google" ? GOOGLE : provider === "microsoft" ? microsoft(tenant!, grant) : urls!;
  return {
    provider,
    grant,
    clientId: raw.client_id!,
    clientSecret: secret ?? null,
    tenant,
    authorizeUrl: resolved.authorizeUrl,
    tokenUrl: resolved.tokenUrl!,
    deviceUrl: resolved.deviceUrl,
    scopes: [...resolved.scopes],
    saslMechanism: raw.sasl_mechanism ?? "auto",
  };
}

function account(
  name: string,
  raw: RawAccount,
  base: string,
  env: LoadOptions["env"] & object,
  problems: Problems,
): AccountConfig | null {
  const ids = identities(raw.identities, ["accounts", name, "identities"], problems);
  if (raw.auth === "oauth2") {
    const oauth2 = oauth2Settings(name, raw, base, env, problems);
    return oauth2 && { name, auth: "oauth2", username: raw.username, identities: ids, oauth2 };
  }
  const before = problems.list.length;
  for (const key of OAUTH2_KEYS) {
    if (raw[key] !== undefined) problems.add(["accounts", name, key], `only for auth = "oauth2"`);
  }
  const sources = PASSWORD_KEYS.filter((k) => raw[k] !== undefined);
  if (sources.length !== 1) {
    problems.add(
      ["accounts", name],
      `give exactly one of password, password_env, password_file (got ${sources.length ? sources.join(", ") : "none"})`,
    );
    return null;
  }
  const secret = secretFrom(raw, PASSWORD_KEYS, ["accounts", name], base, env, problems);
  if (!secret || problems.list.length > before) return null;
  return { name, auth: "password", username: raw.username, password: secret, identities: ids };
}

/**
 * `[limits]`: each key of `[limits.imap]` / `[limits.smtp]` overrides the same key of `[limits]`, which applies to
 * both listeners; what neither gives takes its default (src/config/limits.ts). Times are seconds in the file.
 */
function limits(raw: RawLimits | undefined, warnings: string[]): LimitsConfig {
  const resolve = (
    section: "imap" | "smtp",
    defaults: ProtocolLimits,
    own: NonNullable<RawLimits["smtp"]> | undefined,
  ): ProtocolLimits => {
    const pick = (key: keyof NonNullable<RawLimits["smtp"]>): number | undefined => own?.[key] ?? raw?.[key];
    const seconds = (key: "login_timeout" | "idle_timeout", fallback: number): number => {
      const value = pick(key);
      return value === undefined ? fallback : value * 1000;
    };
    const out: ProtocolLimits = {
      maxConnections: pick("max_connections") ?? defaults.maxConnections,
      maxConnectionsPerIp: pick("max_connections_per_ip") ?? defaults.maxConnectionsPerIp,
      maxSessionsPerAgent: pick("max_sessions_per_agent") ?? defaults.maxSessionsPerAgent,
      loginTimeoutMs: seconds("login_timeout", defaults.loginTimeoutMs),
      idleTimeoutMs: seconds("idle_timeout", defaults.idleTimeoutMs),
    };
    if (out.maxConnectionsPerIp >= out.maxConnections) {
      warnings.push(
        `[limits] ${section}: max_connections_per_ip (${out.maxConnectionsPerIp}) is not below max_connections ` +
          `(${out.maxConnections}): one client address can take every ${section.toUpperCase()} connection`,
      );
    }
    return out;
  };
  const imapCommand = raw?.imap?.idle_command_timeout;
  return {
    imap: {
      ...resolve("imap", DEFAULT_IMAP_LIMITS, raw?.imap),
      idleCommandTimeoutMs: imapCommand === undefined ? DEFAULT_IMAP_LIMITS.idleCommandTimeoutMs : imapCommand * 1000,
    },
    smtp: resolve("smtp", DEFAULT_SMTP_LIMITS, raw?.smtp),
  };
}

/** Where `[admin]` listens when it gives no listen_addr (docs/config.md `[admin]`). */
export const DEFAULT_ADMIN_ADDR = "127.0.0.1:9925";

/**
 * `[admin]`: loopback unless `allow_remote = true`, since health and metrics need no token and tell who uses the
 * proxy and how much; token_hash as for agents (src/vault/token.ts).
 */
function admin(raw: RawAdmin, problems: Problems, warnings: string[]): AdminConfig | null {
  const listenAddr = parseHostPort(raw.listen_addr ?? DEFAULT_ADMIN_ADDR, ["admin", "listen_addr"], problems, true);
  const allowRemote = raw.allow_remote ?? false;
  if (raw.token_hash !== undefined && !TOKEN_HASH.test(raw.token_hash)) {
    problems.add(
      ["admin", "token_hash"],
      'expected "sha256:" and 64 lowercase hex digits (from `mailgator token new admin`)',
    );
  }
  if (listenAddr === null) return null;
  if (!isLoopbackHost(listenAddr.host)) {
    if (!allowRemote) {
      problems.add(
        ["admin", "listen_addr"],
        `${listenAddr.host} is not a loopback address: health and metrics need no token, ` +
          "so listening there needs allow_remote = true",
      );
      return null;
    }
    warnings.push(
      `[admin] listens on ${listenAddr.host}:${listenAddr.port}: ` +
        "/healthz and /metrics are open to anyone who can reach it",
    );
  }
  return { listenAddr, allowRemote, tokenHash: raw.token_hash ?? null };
}

const QUOTA_LIMIT_KEYS = [
  "sends_per_hour",
  "sends_per_day",
  "recipients_per_day",
  "recipients_per_message",
  "reads_per_minute",
  "bytes_per_day",
] as const satisfies readonly (keyof QuotaLimits & keyof RawQuota)[];

/** `[[quotas]]` (docs/quotas.md): unique names, at least one limit, and in vault mode only agents that exist. */
function quotas(
  raw: readonly RawQuota[] | undefined,
  agentNames: Set<string> | null,
  problems: Problems,
): QuotaConfig[] {
  const out: QuotaConfig[] = [];
  const names = new Map<string, number>();
  (raw ?? []).forEach((q, i) => {
    const first = names.get(q.name);
    if (first !== undefined)
      problems.add(["quotas", i, "name"], `duplicate quota name ${JSON.stringify(q.name)} (also quotas[${first}])`);
    else names.set(q.name, i);
    const limits = Object.fromEntries(QUOTA_LIMIT_KEYS.map((k) => [k, q[k] ?? null])) as unknown as QuotaLimits;
    if (QUOTA_LIMIT_KEYS.every((k) => limits[k] === null))
      problems.add(
        ["quotas", i, "name"],
        `quota ${JSON.stringify(q.name)} sets no limit (${QUOTA_LIMIT_KEYS.join(", ")})`,
      );
    if (q.agents !== undefined && q.agents.length === 0)
      problems.add(["quotas", i, "agents"], "an empty list matches no client: omit `agents` to apply to every client");
    q.agents?.forEach((a, j) => {
      if (agentNames !== null && !agentNames.has(a))
        problems.add(["quotas", i, "agents", j], `no agent named ${JSON.stringify(a)} in [[agents]]`);
    });
    out.push({ name: q.name, agents: q.agents ?? null, limits });
  });
  return out;
}

function build(
  raw: RawConfig,
  file: string,
  text: string,
  env: NonNullable<LoadOptions["env"]>,
  problems: Problems,
): Config {
  const base = dirname(file);
  const warnings: string[] = [];
  const imap = raw.imap ? listener(raw.imap, "imap", base, problems, warnings, env === SKIP_SECRETS) : null;
  const smtpListener = raw.smtp ? listener(raw.smtp, "smtp", base, problems, warnings, env === SKIP_SECRETS) : null;
  const smtpIdentities = identities(raw.smtp?.identities, ["smtp", "identities"], problems);
  const smtp: SmtpConfig | null = smtpListener && { ...smtpListener, identities: smtpIdentities };
  if (!raw.imap && !raw.smtp) warnings.push("neither [imap] nor [smtp] is configured: serve has nothing to listen on");
  listenConflicts(raw, problems);

  const accounts: Record<string, AccountConfig> = {};
  for (const [name, acc] of Object.entries(raw.accounts ?? {})) {
    const a = account(name, acc, base, env, problems);
    if (a) accounts[name] = a;
  }

  const agents: AgentConfig[] = [];
  const agentNames = new Set<string>();
  // Folded name (`loginKey`) → the name as first written: names compare without case, by the one fold the audit
  // log's agent filter uses, so that filter never merges two agents (docs/audit.md "Reading the log").
  const agentKeys = new Map<string, string>();
  // token_hash → the first agent with it. A login is an agent's name and token, and names are no secret: two agents
  // sharing a hash would let either's token log in as the other, with its account and rules (docs/config.md).
  const tokenOwners = new Map<string, { name: string; index: number }>();
  (raw.agents ?? []).forEach((a, i) => {
    const taken = agentKeys.get(loginKey(a.name));
    if (taken === a.name) problems.add(["agents", i, "name"], `duplicate agent name ${JSON.stringify(a.name)}`);
    else if (taken !== undefined)
      problems.add(
        ["agents", i, "name"],
        `duplicate agent name ${JSON.stringify(a.name)} (agent names compare without case; ${JSON.stringify(taken)} ` +
          "is taken)",
      );
    else agentKeys.set(loginKey(a.name), a.name);
    if (Buffer.byteLength(a.name) > MAX_LOGIN_NAME_BYTES)
      problems.add(
        ["agents", i, "name"],
        `agent name over ${MAX_LOGIN_NAME_BYTES} octets: the listeners refuse longer login names (docs/config.md)`,
      );
    agentNames.add(a.name);
    if (!TOKEN_HASH.test(a.token_hash)) {
      problems.add(
        ["agents", i, "token_hash"],
        `expected "sha256:" and 64 lowercase hex digits (from \`mailgator token new ${a.name}\`)`,
      );
    } else {
      const owner = tokenOwners.get(a.token_hash);
      if (owner !== undefined)
        problems.add(
          ["agents", i, "token_hash"],
          `agents ${JSON.stringify(owner.name)} (agents[${owner.index}]) and ${JSON.stringify(a.name)} have the same ` +
            "token_hash: either's token would log in as the other. Was the [[agents]] block copied? Give each agent " +
            `its own token: \`mailgator token new ${a.name}\``,
        );
      else tokenOwners.set(a.token_hash, { name: a.name, index: i });
    }
    if (ownEntry(raw.accounts, a.account) === undefined) {
      problems.add(["agents", i, "account"], `no account named ${JSON.stringify(a.account)} in [accounts]`);
    }
    // Omitted, allowed_ips admits every address; empty, it would admit none (docs/config.md "Errors").
    if (a.allowed_ips?.length === 0)
      problems.add(
        ["agents", i, "allowed_ips"],
        "an empty list admits no address, so the agent could never log in; omit the key to admit every address",
      );
    a.allowed_ips?.forEach((ip, j) => {
      const entry = readIpEntry(ip);
      if (typeof entry === "string") problems.add(["agents", i, "allowed_ips", j], entry);
    });
    agents.push({ name: a.name, tokenHash: a.token_hash, account: a.account, allowedIps: a.allowed_ips ?? null });
  });
  // Pass-through mode uses one account only: the one approvers' notices are sent as (docs/approvals.md "Notices").
  if (agents.length === 0 && Object.keys(raw.accounts ?? {}).some((name) => name !== raw.approvals?.notify_account)) {
    warnings.push("[accounts] are defined but no [[agents]]: pass-through mode ignores them");
  }
  if (agents.length > 0 && raw.smtp?.identities !== undefined) {
    warnings.push(
      "[smtp] identities apply in pass-through mode only; vault mode ignores them and uses each [accounts] " +
        "entry's identities",
    );
  }

  const approvals = approvalsConfig(raw, problems);
  const rules: RuleConfig[] = [];
  const ruleNames = new Map<string, number>();
  (raw.rules ?? []).forEach((r, i) => {
    const first = ruleNames.get(r.name);
    if (first !== undefined)
      problems.add(["rules", i, "name"], `duplicate rule name ${JSON.stringify(r.name)} (also rules[${first}])`);
    else ruleNames.set(r.name, i);
    const compiled = rule(r, i, raw.agents ? agentNames : null, { imap: raw.imap !== undefined }, problems);
    r.ask_groups?.forEach((group, j) => {
      if (ownEntry(approvals.groups, group) === undefined)
        problems.add(["rules", i, "ask_groups", j], `no group named ${JSON.stringify(group)} in [approvals.groups]`);
    });
    if (compiled) rules.push(compiled);
  });
  // Pass-through mode has no account of its own to send approvers' notices as, and the agent's login is never
  // used for them: the agent knows that password and can read the mailbox's Sent folder, link included, without
  // the proxy. Without notify_account no notice is sent (docs/approvals.md "Notices").
  const firstAsk = (raw.rules ?? []).findIndex((r) => r.action === "ask" && (r.ask_groups?.length ?? 0) > 0);
  if (firstAsk !== -1 && agents.length === 0 && raw.approvals?.notify_account === undefined)
    warnings.push(
      "[approvals] notify_account is not set: in pass-through mode no notice is sent to approvers (the agent's own " +
        "login is never used for them); they learn of held messages from `mailgator approvals list`",
    );
  else if (firstAsk !== -1 && raw.approvals?.notify_account === undefined)
    warnings.push(
      "[approvals] notify_account is not set: approvers' notices are sent as the agent's own account, whose Sent " +
        "folder the agent may be able to read, so they go without the approval link (approve with `mailgator " +
        'approvals`); set an account no agent uses (docs/approvals.md "Notices")',
    );
  // An agent's account, or another entry for the same mailbox (agentSending).
  const notifyName = raw.approvals?.notify_account;
  const notifyAgent = notifyName === undefined ? null : agentSending({ agents, accounts }, notifyName);
  if (firstAsk !== -1 && notifyAgent !== null)
    warnings.push(
      `[approvals] notify_account ${JSON.stringify(notifyName)} is agent ` +
        `${JSON.stringify(notifyAgent.name)}'s account, whose Sent folder that agent may read: approvers' notices ` +
        'go without the approval link; set an account no agent uses (docs/approvals.md "Notices")',
    );
  // An approver address that is an agent's own mailbox: the notice lands where that agent reads, so it goes without
  // the approval link, which is all it takes to approve (src/approvals/notify.ts, docs/approvals.md "Notices").
  if (firstAsk !== -1) {
    for (const [group, recipients] of Object.entries(approvals.groups)) {
      for (const recipient of recipients) {
        const agent = agentReading({ agents, accounts }, recipient);
        if (agent !== null)
          warnings.push(
            `[approvals.groups.${group}] ${recipient} is the mailbox of agent ${JSON.stringify(agent.name)}'s ` +
              `account ${JSON.stringify(agent.account)}, which that agent can read: its notices carry no approval ` +
              "link (the link is all it takes to approve), so that approver decides with `mailgator approvals`; " +
              'notices with the link need an address no agent reads (docs/approvals.md "Notices")',
          );
      }
    }
  }
  if (rules.length === 0 && problems.list.length === 0) warnings.push("no [[rules]]: everything is denied");
  // With [smtp] and no [imap], only sends are decided, and `folders` never holds for a send (docs/config.md
  // "[[rules]]"): a rule with folders matches nothing, and `deny` with `folders = ["**"]` and `to` would read as if it
  // held sends back. As a shadowed rule, it draws a warning.
  if (raw.smtp !== undefined && raw.imap === undefined)
    rules.forEach((r, i) => {
      if (r.folders !== undefined)
        warnings.push(
          `rule ${i + 1} ${JSON.stringify(r.name)} can never match: it has folders, and without [imap] only sends ` +
            "are decided, which are in no folder",
        );
    });

  const auditPath = resolve(base, raw.audit?.path ?? "mailgator-audit.db");
  const state = {
    path: resolve(raw.state?.path === undefined ? dirname(auditPath) : base, raw.state?.path ?? STATE_FILE),
    secretsFile: resolve(base, raw.state?.secrets_file ?? SECRETS_FILE),
  };
  return {
    file,
    revision: createHash("sha256").update(text).digest("hex").slice(0, 16),
    imap,
    smtp,
    rules,
    audit: { path: auditPath, retentionDays: raw.audit?.retention_days ?? null },
    agents,
    accounts,
    limits: limits(raw.limits, warnings),
    state,
    approvals,
    admin: raw.admin ? admin(raw.admin, problems, warnings) : null,
    quotas: quotas(raw.quotas, raw.agents ? agentNames : null, problems),
    // Last, after the ones the fields above added: what LoadOptions.only left unread.
    warnings: [...warnings, ...problems.unchecked],
  };
}

/** `[approvals] timeout` by default: a day (docs/approvals.md "Configuration"). */
export const APPROVAL_TIMEOUT_DEFAULT_MS = 24 * 3600_000;
/** The longest `[approvals] timeout`: 30 days; a held message keeps an agent's send and its credentials sealed. */
export const APPROVAL_TIMEOUT_MAX_MS = 30 * 24 * 3600_000;
const DURATION_UNITS: Readonly<Record<string, number>> = { s: 1000, m: 60_000, h: 3600_000, d: 86_400_000 };

function approvalsConfig(raw: RawConfig, problems: Problems): ApprovalsConfig {
  const a = raw.approvals ?? {};
  let timeoutMs = APPROVAL_TIMEOUT_DEFAULT_MS;
  if (a.timeout !== undefined) {
    const m = /^([1-9][0-9]{0,6})([smhd])$/.exec(a.timeout);
    const ms = m === null ? null : Number(m[1]) * DURATION_UNITS[m[2]!]!;
    if (ms === null || ms > APPROVAL_TIMEOUT_MAX_MS)
      problems.add(
        ["approvals", "timeout"],
        `expected a duration such as "30m", "24h" or "7d" (at most 30d), got ${JSON.stringify(a.timeout)}`,
      );
    else timeoutMs = ms;
  }
  let baseUrl: string | null = null;
  if (a.base_url !== undefined) {
    let url: URL | null = null;
    try {
      url = new URL(a.base_url);
    } catch {}
    // A bare `?` or `#` leaves `search` and `hash` empty, yet every link built on it would lead nowhere; a user name
    // or password would be in every notice.
    if (
      url === null ||
      (url.protocol !== "https:" && url.protocol !== "http:") ||
      /[?#]/.test(a.base_url) ||
      url.username !== "" ||
      url.password !== ""
    )
      problems.add(
        ["approvals", "base_url"],
        `expected an http:// or https:// URL without query, fragment or credentials, got ${JSON.stringify(a.base_url)}`,
      );
    else baseUrl = a.base_url.replace(/\/+$/, "");
  }
  if (a.notify_account !== undefined && ownEntry(raw.accounts, a.notify_account) === undefined)
    problems.add(["approvals", "notify_account"], `no account named ${JSON.stringify(a.notify_account)} in [accounts]`);
  const groups: Record<string, string[]> = {};
  for (const [name, g] of Object.entries(a.groups ?? {})) {
    if (g.recipients.length === 0)
      problems.add(
        ["approvals", "groups", name, "recipients"],
        "an empty group notifies no one: name at least one address",
      );
    g.recipients.forEach((address, j) => {
      const problem = mailboxProblem(address);
      if (problem !== null)
        problems.add(
          ["approvals", "groups", name, "recipients", j],
          `expected an email address (local@domain), got ${JSON.stringify(address)}: ${problem}`,
        );
    });
    groups[name] = [...g.recipients];
  }
  return {
    timeoutMs,
    baseUrl,
    notifyAccount: a.notify_account ?? null,
    notifySender: a.notify_sender ?? false,
    groups,
  };
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === "object" && !(value instanceof Secret) && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

/**
 * Account, agent and group names that are also names every object has (src/config/names.ts), read from the parsed
 * TOML: the schema would drop such a table without a word.
 */
function reservedNames(data: unknown, problems: Problems): void {
  const reserved = `reserved (${RESERVED_NAMES.join(", ")} cannot be names)`;
  const table = (value: unknown): value is Record<string, unknown> =>
    typeof value === "object" && value !== null && !Array.isArray(value);
  if (!table(data)) return;
  if (table(data["accounts"]))
    for (const name of Object.keys(data["accounts"]))
      if (isReservedName(name)) problems.add(["accounts", name], `account name ${JSON.stringify(name)} is ${reserved}`);
  const approvals = data["approvals"];
  if (table(approvals) && table(approvals["groups"]))
    for (const name of Object.keys(approvals["groups"]))
      if (isReservedName(name))
        problems.add(["approvals", "groups", name], `group name ${JSON.stringify(name)} is ${reserved}`);
  if (Array.isArray(data["agents"]))
    data["agents"].forEach((agent: unknown, i) => {
      const name = table(agent) ? agent["name"] : undefined;
      if (typeof name === "string" && isReservedName(name))
        problems.add(["agents", i, "name"], `agent name ${JSON.stringify(name)} is ${reserved}`);
    });
}

/** Parses and validates config text; throws ConfigError listing every problem. */
export function parseConfig(text: string, file: string, options: LoadOptions = {}): Config {
  const env = options.skipSecrets === true ? SKIP_SECRETS : (options.env ?? process.env);
  let data: unknown;
  try {
    data = parseToml(text);
  } catch (e) {
    if (e instanceof TomlError) {
      const message = e.message.split("\n")[0]!.replace(/^Invalid TOML document: /, "TOML syntax error: ");
      // The parser quotes the lines around the error; not from a file that names a secret (docs/config.md "Errors").
      const quiet = namesSecret(text);
      throw new ConfigError(file, [
        {
          line: e.line,
          column: e.column,
          message: quiet ? `${message} (lines not quoted: the file names secrets)` : message,
          excerpt: quiet ? undefined : e.codeblock.trimEnd(),
        },
      ]);
    }
    throw e;
  }
  const problems = new Problems(text, options.only);
  reservedNames(data, problems);
  const result = v.safeParse(configSchema, data);
  if (!result.success) schemaProblems(result.issues, problems);
  if (!result.success || problems.list.length > 0) throw new ConfigError(file, problems.list);
  const built = build(result.output, file, text, env, problems);
  if (problems.list.length > 0) throw new ConfigError(file, problems.list);
  const exposed = exposedSecrets(result.output, options.fileMode);
  return deepFreeze(exposed === null ? built : { ...built, warnings: [...built.warnings, exposed] });
}

/**
 * An account secret written in a config file that its group or others may read (docs/config.md "Vault mode"): a
 * `password_file` or `client_secret_file` that open would be refused; the config itself is not (it holds no secret
 * unless one is written in it), so a warning names the first such account and the fix. Null when none is exposed.
 */
function exposedSecrets(raw: RawConfig, mode: number | undefined): string | null {
  if (mode === undefined || (mode & 0o044) === 0) return null;
  for (const [name, account] of Object.entries(raw.accounts ?? {})) {
    const key =
      account.password !== undefined ? "password" : account.client_secret !== undefined ? "client_secret" : null;
    if (key !== null)
      return (
        `[accounts.${name}] ${key} is written in the config, which users other than its owner may read (mode ` +
        `${(mode & 0o777).toString(8)}): chmod 600 it, or give the secret by ${key}_file or ${key}_env`
      );
  }
  return null;
}

/**
 * Reads, parses and validates a config file: a path as given, or where `findConfig` found it (a file the search path
 * found is read only if it passes the owner check, read.ts).
 */
export function loadConfig(location: string | ConfigLocation, options: LoadOptions = {}): Config {
  const { path, ownedOnly } = typeof location === "string" ? { path: location, ownedOnly: false } : location;
  const file = resolve(path);
  const { text, mode } = readConfigFile(file, ownedOnly);
  return parseConfig(text, file, { fileMode: mode, ...options });
}

/**
 * The vault agent whose account's mailbox `address` may be (its `username` or one of its `identities`, as
 * `sameMailbox` compares them), or null: mail to that address is mail the agent can read through the proxy
 * (docs/approvals.md "Notices").
 */
export function agentReading(
  config: Pick<Config, "agents" | "accounts">,
  address: string,
): Config["agents"][number] | null {
  for (const agent of config.agents) {
    const account = ownEntry(config.accounts, agent.account);
    if (account === undefined) continue;
    if ([account.username, ...account.identities].some((mine) => sameMailbox(mine, address))) return agent;
  }
  return null;
}

/**
 * Whether two logins or addresses may name one mailbox, as far as the config can tell: the same address without case
 * and without a subaddress (mailboxOf), with Gmail's spellings of one address taken for it (providerMailbox); and a
 * login without `@` (`boss`, or `CORP\boss` as Exchange takes it) is the mailbox the server finds for that name, most
 * often in its own domain (Dovecot's `auth_default_realm`, a directory's account name), so it is taken for any
 * address whose local part is that name (`boss@corp.test`, `Boss+x@corp.test`). That errs towards a notice without
 * the link, never towards a link where an agent reads.
 */
function sameMailbox(a: string, b: string): boolean {
  const x = providerMailbox(mailboxOf(a));
  const y = providerMailbox(mailboxOf(b));
  if (x === y) return true;
  if (x.includes("@") && y.includes("@")) return false;
  return loginName(x) === loginName(y);
}

/** The domains of Gmail, which takes them for one another and ignores dots in local parts. */
const GMAIL_DOMAINS: ReadonlySet<string> = new Set(["gmail.com", "googlemail.com"]);

/**
 * A mailbox (mailboxOf) in the one spelling its provider delivers every spelling of to, where the provider says how:
 * Gmail ignores the dots of a local part and takes `googlemail.com` for `gmail.com` (`j.doe@googlemail.com` is
 * `jdoe@gmail.com`). Other addresses as they are.
 */
function providerMailbox(mailbox: string): string {
  const at = mailbox.lastIndexOf("@");
  if (at === -1 || !GMAIL_DOMAINS.has(mailbox.slice(at + 1))) return mailbox;
  return `${mailbox.slice(0, at).replaceAll(".", "")}@gmail.com`;
}

/** The name a login or address (mailboxOf) stands for: its local part, or a login without `@` after any `DOMAIN\`. */
function loginName(mailbox: string): string {
  const at = mailbox.lastIndexOf("@");
  return at === -1 ? mailbox.slice(mailbox.lastIndexOf("\\") + 1) : mailbox.slice(0, at);
}

/**
 * Every mailbox a vault agent can read through the proxy: its account's `username` and `identities`, as mailboxOf
 * reads them. An address is agentReading's when it is one of these mailboxes as sameMailbox compares them, and an
 * account is agentSending's when one of its own is (docs/approvals.md "Links"): the set gains a member whenever
 * either may answer yes where it did not.
 */
export function agentMailboxes(config: Pick<Config, "agents" | "accounts">): Set<string> {
  const out = new Set<string>();
  for (const agent of config.agents) {
    const account = ownEntry(config.accounts, agent.account);
    if (account === undefined) continue;
    for (const mine of [account.username, ...account.identities]) out.add(mailboxOf(mine));
  }
  return out;
}

/**
 * The agent that reads the mailbox account `name` sends from: one that uses the account, or whose account's login or
 * identities are the same mailbox as its login or identities (another `[accounts]` entry for that mailbox). A notice
 * sent as such an account may leave a copy, approval link and all, in a Sent folder that agent reads
 * (docs/approvals.md "Notices").
 */
export function agentSending(
  config: Pick<Config, "agents" | "accounts">,
  name: string,
): Config["agents"][number] | null {
  const user = config.agents.find((a) => a.account === name);
  if (user !== undefined) return user;
  const account = ownEntry(config.accounts, name);
  if (account === undefined) return null;
  for (const address of [account.username, ...account.identities]) {
    const reader = agentReading(config, address);
    if (reader !== null) return reader;
  }
  return null;
}

/**
 * The mailbox an address delivers to, as far as the config can tell: lower-cased, and `user+detail@domain` read as
 * `user@domain`, since servers that support subaddresses (RFC 5233 §1; Dovecot's and Postfix's `+` delimiter) deliver
 * both to the same mailbox. Aliases and other delimiters cannot be known here (docs/approvals.md "Notices").
 */
function mailboxOf(address: string): string {
  const lower = address.toLowerCase();
  return subaddressMailbox(lower) ?? lower;
}
